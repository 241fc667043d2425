package e2ee

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/password"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// POST /keys/device_signing/upload
func (s *Service) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	var req struct {
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
		UserSigningKey json.RawMessage `json:"user_signing_key"`
		Auth           *authDict       `json:"auth"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxKeysBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var keys []storage.CrossSigningKey
	for _, k := range []struct {
		usage string
		raw   json.RawMessage
	}{{"master", req.MasterKey}, {"self_signing", req.SelfSigningKey}, {"user_signing", req.UserSigningKey}} {
		if isNull(k.raw) {
			continue
		}
		key, err := checkCrossSigningKey(k.raw, k.usage, rq.UserID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		keys = append(keys, key)
	}
	stored, err := s.db.CrossSigningKeysOf(ctx, []string{rq.UserID})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	current := map[string]storage.CrossSigningKey{}
	for _, k := range stored {
		current[k.Usage] = k
	}
	// Keys identical to those stored: a retry whose answer was lost. The
	// spec lets it through without authentication, and there is nothing
	// to write.
	if !slices.ContainsFunc(keys, func(k storage.CrossSigningKey) bool { return !bytes.Equal(current[k.Usage].JSON, k.JSON) }) {
		httpapi.Respond(w, http.StatusOK, struct{}{})
		return
	}

	master, haveMaster := current["master"]
	for _, k := range keys {
		if k.Usage == "master" {
			master, haveMaster = k, true
		}
	}
	for _, k := range keys {
		if k.Usage == "master" {
			continue
		}
		if !haveMaster {
			httpapi.Fail(w, r, httpapi.MissingParam("no master key: upload it with the %s key", k.Usage))
			return
		}
		pub, _ := ed25519Key(master.PublicKey)
		if err := signing.VerifyJSON(k.JSON, rq.UserID, "ed25519:"+master.PublicKey, pub); err != nil {
			httpapi.Fail(w, r, invalidSignature("the %s key must be signed by the master key: %v", k.Usage, err))
			return
		}
	}
	// Key IDs of devices and of cross-signing keys share one namespace
	// (ed25519:<ID>); a collision would let one pass for the other.
	devices, err := s.db.Devices(ctx, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	for _, k := range keys {
		if slices.ContainsFunc(devices, func(d storage.Device) bool { return d.DeviceID == k.PublicKey }) {
			httpapi.Fail(w, r, httpapi.Forbidden("the %s key's public key is the ID of one of your devices", k.Usage))
			return
		}
	}
	// The first upload needs no authentication (the spec's rule since
	// v1.11); replacing keys does, as it changes whom others trust.
	if _, replacing := current["master"]; replacing {
		check := func() error { return s.checkPassword(ctx, rq.UserID, req.Auth) }
		if s.uia != nil {
			// The client API's user-interactive auth: the password, or
			// single sign-on for accounts that have none.
			check = func() error {
				raw, err := json.Marshal(req.Auth)
				if err != nil {
					return err
				}
				return s.uia(r, rq.UserID, raw)
			}
		}
		if err := check(); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}

	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	if err := s.db.SetCrossSigningKeys(ctx, rq.UserID, keys, pos); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.announce(ctx, rq.UserID, pos)
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// checkCrossSigningKey validates one of a user's cross-signing keys and
// returns it canonical.
func checkCrossSigningKey(raw json.RawMessage, usage, userID string) (storage.CrossSigningKey, error) {
	what := usage + "_key"
	c, m, err := object(raw, what)
	if err != nil {
		return storage.CrossSigningKey{}, err
	}
	var (
		uid    string
		usages []string
		keys   map[string]string
		sigs   signatures
	)
	if err := fields(m, what, member{"user_id", &uid, true}, member{"usage", &usages, true},
		member{"keys", &keys, true}, member{"signatures", &sigs, false}); err != nil {
		return storage.CrossSigningKey{}, err
	}
	if uid != userID {
		return storage.CrossSigningKey{}, httpapi.Forbidden("%s.user_id must be your user ID, %s", what, userID)
	}
	if !slices.Contains(usages, usage) {
		return storage.CrossSigningKey{}, httpapi.InvalidParam("%s.usage must contain %q", what, usage)
	}
	if len(keys) != 1 {
		return storage.CrossSigningKey{}, httpapi.InvalidParam("%s.keys must hold exactly one key", what)
	}
	var pub string
	for kid, v := range keys {
		alg, kidPub, _ := strings.Cut(kid, ":")
		if _, ok := ed25519Key(v); alg != "ed25519" || kidPub != v || !ok {
			return storage.CrossSigningKey{}, httpapi.InvalidParam("%s.keys must be {\"ed25519:<public key>\": \"<public key>\"} with an unpadded base64 Ed25519 key", what)
		}
		pub = v
	}
	c, err = canonicaljson.Delete(c, "unsigned")
	if err != nil {
		return storage.CrossSigningKey{}, httpapi.BadJSON("%s: %v", what, err)
	}
	return storage.CrossSigningKey{UserID: userID, Usage: usage, PublicKey: pub, JSON: c}, nil
}

// POST /keys/signatures/upload
func (s *Service) uploadSignatures(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	me := httpapi.RequesterFrom(ctx).UserID
	var req map[string]map[string]json.RawMessage
	if err := httpapi.DecodeLimit(r, &req, maxKeysBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	users := []string{me}
	for u := range req {
		if u != me && s.isLocal(u) {
			users = append(users, u)
		}
	}
	known, err := s.loadSignable(ctx, users)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	failures := map[string]map[string]*httpapi.Error{}
	var sigs []storage.KeySignature
	changes := map[storage.DeviceListChange]bool{}
	for u, objs := range req {
		for keyID, raw := range objs {
			got, change, err := s.checkSigned(me, u, keyID, raw, known)
			if err != nil {
				if failures[u] == nil {
					failures[u] = map[string]*httpapi.Error{}
				}
				failures[u][keyID] = err
				continue
			}
			if len(got) > 0 {
				sigs = append(sigs, got...)
				changes[change] = true
			}
		}
	}
	if len(sigs) > 0 {
		pos := s.tracker.Reserve()
		defer s.tracker.Complete(pos)
		list := make([]storage.DeviceListChange, 0, len(changes))
		for c := range changes {
			list = append(list, c)
		}
		if err := s.db.AddKeySignatures(ctx, sigs, list, pos); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		for _, c := range list {
			if c.OnlyFor != "" {
				s.notifier.NotifyUser(c.OnlyFor, pos)
			} else {
				s.announce(ctx, c.UserID, pos)
			}
		}
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"failures": failures})
}

// signable is what signatures may be uploaded for: users' device keys and
// cross-signing keys.
type signable struct {
	devices map[string]map[string][]byte                  // user → device → keys
	xsign   map[string]map[string]storage.CrossSigningKey // user → usage → key
}

func (s *Service) loadSignable(ctx context.Context, users []string) (*signable, error) {
	devices, err := s.db.DeviceKeysOf(ctx, users)
	if err != nil {
		return nil, err
	}
	xs, err := s.db.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return nil, err
	}
	k := &signable{devices: map[string]map[string][]byte{}, xsign: map[string]map[string]storage.CrossSigningKey{}}
	for _, d := range devices {
		if k.devices[d.UserID] == nil {
			k.devices[d.UserID] = map[string][]byte{}
		}
		k.devices[d.UserID][d.DeviceID] = d.JSON
	}
	for _, x := range xs {
		if k.xsign[x.UserID] == nil {
			k.xsign[x.UserID] = map[string]storage.CrossSigningKey{}
		}
		k.xsign[x.UserID][x.Usage] = x
	}
	return k, nil
}

// checkSigned checks one entry of a signatures upload: the object must be
// the stored key keyID of user, and the signatures me adds to it must be
// valid and made with a key allowed to sign it — my self-signing key for my
// devices, one of my devices for my master key, my user-signing key for
// another user's master key. It returns the new signatures and the
// device-list change they make.
func (s *Service) checkSigned(me, user, keyID string, raw json.RawMessage, known *signable) ([]storage.KeySignature, storage.DeviceListChange, *httpapi.Error) {
	var none storage.DeviceListChange
	if _, err := id.ParseUserID(user); err != nil {
		return nil, none, httpapi.InvalidParam("%q is not a user ID", user)
	}
	c, m, err := object(raw, "signed key")
	if err != nil {
		return nil, none, asError(err)
	}
	var (
		target  []byte
		signers = map[string]ed25519.PublicKey{} // key ID → public key allowed to sign target
		change  = storage.DeviceListChange{UserID: user}
	)
	switch mine := known.xsign[me]; {
	case user == me:
		if dev, ok := known.devices[me][keyID]; ok {
			target = dev
			if ssk, ok := mine["self_signing"]; ok {
				signers["ed25519:"+ssk.PublicKey], _ = ed25519Key(ssk.PublicKey)
			}
		} else if msk, ok := mine["master"]; ok && msk.PublicKey == keyID {
			target = msk.JSON
			for dev, devKeys := range known.devices[me] {
				if pub, ok := deviceSigningKey(devKeys, dev); ok {
					signers["ed25519:"+dev] = pub
				}
			}
		} else {
			return nil, none, httpapi.NotFound("you have no device or master key %s", keyID)
		}
	case s.isLocal(user):
		msk, ok := known.xsign[user]["master"]
		if !ok || msk.PublicKey != keyID {
			return nil, none, httpapi.NotFound("%s has no master key %s", user, keyID)
		}
		target = msk.JSON
		if usk, ok := mine["user_signing"]; ok {
			signers["ed25519:"+usk.PublicKey], _ = ed25519Key(usk.PublicKey)
		}
		// Signatures by my user-signing key are for my eyes only.
		change.OnlyFor = me
	default:
		return nil, none, httpapi.NotFound("keys of users on other servers cannot be signed yet")
	}

	signedPart, err1 := canonicaljson.Delete(c, "signatures", "unsigned")
	storedPart, err2 := canonicaljson.Delete(target, "signatures", "unsigned")
	if err1 != nil || err2 != nil || !bytes.Equal(signedPart, storedPart) {
		return nil, none, httpapi.InvalidParam("the signed object is not the key %s as uploaded", keyID)
	}
	var sigs, storedSigs signatures
	if err := field(m, "signed key", "signatures", &sigs, true); err != nil {
		return nil, none, asError(err)
	}
	_, storedMembers, err := object(target, "stored key")
	if err != nil {
		return nil, none, asError(err)
	}
	_ = field(storedMembers, "stored key", "signatures", &storedSigs, false)

	// Only signatures in my name are mine to add; those already part of
	// the key (a device's signature of itself) are not new.
	var out []storage.KeySignature
	for kid, sig := range sigs[me] {
		if storedSigs[me][kid] == sig {
			continue
		}
		pub, ok := signers[kid]
		if !ok || pub == nil {
			return nil, none, invalidSignature("%s may not sign %s's key %s", kid, user, keyID)
		}
		if err := signing.VerifyJSON(c, me, kid, pub); err != nil {
			return nil, none, invalidSignature("signature by %s: %v", kid, err)
		}
		out = append(out, storage.KeySignature{TargetUser: user, TargetKey: keyID, SignerUser: me, SignerKey: kid, Signature: sig})
	}
	return out, change, nil
}

// deviceSigningKey is the Ed25519 key of stored device keys.
func deviceSigningKey(keys []byte, deviceID string) (ed25519.PublicKey, bool) {
	var dk struct {
		Keys map[string]string `json:"keys"`
	}
	if json.Unmarshal(keys, &dk) != nil {
		return nil, false
	}
	return ed25519Key(dk.Keys["ed25519:"+deviceID])
}

// asError returns err as the *httpapi.Error the validation helpers make.
func asError(err error) *httpapi.Error {
	var e *httpapi.Error
	if errors.As(err, &e) {
		return e
	}
	return httpapi.BadJSON("%v", err)
}

// UIA runs user-interactive authentication for userID's request r, whose
// "auth" member is auth (JSON, null when absent); nil lets the request go
// ahead. The client API provides it (SetUIA), with the password stage and
// the single sign-on stage for accounts without a password.
type UIA func(r *http.Request, userID string, auth json.RawMessage) error

// SetUIA makes replacing cross-signing keys use f instead of the password
// check below. Set it once, before serving.
func (s *Service) SetUIA(f UIA) { s.uia = f }

// authDict is the "auth" member of a request behind user-interactive
// authentication.
type authDict struct {
	Type       string `json:"type"`
	Session    string `json:"session"`
	Password   string `json:"password"`
	User       string `json:"user"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
}

// checkPassword runs the m.login.password stage of user-interactive
// authentication for userID, as a password change in the client API does;
// nil means the request proved the password. Failures are the spec's 401
// with the flows, the first one without an errcode. Accounts without a
// password (SSO only) cannot replace their cross-signing keys until an SSO
// stage is offered here.
func (s *Service) checkPassword(ctx context.Context, userID string, auth *authDict) error {
	session := ""
	if auth != nil {
		session = auth.Session
	}
	if session == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		session = base64.RawURLEncoding.EncodeToString(b)
	}
	challenge := func(err *httpapi.Error) *httpapi.Error {
		e := &httpapi.Error{Status: http.StatusUnauthorized, Msg: "additional authentication is required",
			Extra: map[string]any{"session": session, "flows": []map[string][]string{{"stages": {"m.login.password"}}}, "params": map[string]any{}, "completed": []string{}}}
		if err != nil {
			e.Code, e.Msg = err.Code, err.Msg
		}
		return e
	}
	if auth == nil || auth.Type == "" {
		return challenge(nil)
	}
	if auth.Type != "m.login.password" {
		return challenge(httpapi.Forbidden("unsupported auth type %q", auth.Type))
	}
	user := auth.User
	if auth.Identifier != nil {
		if auth.Identifier.Type != "m.id.user" {
			return challenge(httpapi.Forbidden("unsupported identifier type %q", auth.Identifier.Type))
		}
		user = auth.Identifier.User
	}
	if !strings.HasPrefix(user, "@") {
		user = "@" + strings.ToLower(user) + ":" + s.cfg.ServerName
	}
	if user != userID {
		return challenge(httpapi.Forbidden("invalid password"))
	}
	acct, err := s.db.AccountByUserID(ctx, userID)
	if err != nil {
		return err
	}
	if !password.Check(acct.PasswordHash, auth.Password) {
		return challenge(httpapi.Forbidden("invalid password"))
	}
	return nil
}
