package e2ee

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// POST /keys/upload
func (s *Service) uploadKeys(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxKeysBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	up := storage.KeyUpload{UserID: rq.UserID, DeviceID: rq.DeviceID}
	if !isNull(req.DeviceKeys) {
		keys, err := checkDeviceKeys(req.DeviceKeys, rq.UserID, rq.DeviceID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		up.DeviceKeys = keys
	}
	if len(req.OneTimeKeys) > maxOneTimeKeysUpload {
		httpapi.Fail(w, r, httpapi.TooLarge("at most %d one-time keys per upload", maxOneTimeKeysUpload))
		return
	}
	var err error
	if up.OneTimeKeys, err = checkKeys(req.OneTimeKeys, "one_time_keys"); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if up.FallbackKeys, err = checkKeys(req.FallbackKeys, "fallback_keys"); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	for i, k := range up.FallbackKeys {
		if slices.ContainsFunc(up.FallbackKeys[:i], func(o storage.E2EEKey) bool { return o.Algorithm == k.Algorithm }) {
			httpapi.Fail(w, r, httpapi.InvalidParam("fallback_keys holds two %s keys: one per algorithm", k.Algorithm))
			return
		}
	}

	// Only new device keys are something other users must hear of.
	var pos int64
	if up.DeviceKeys != nil {
		pos = s.tracker.Reserve()
		defer s.tracker.Complete(pos)
	}
	counts, changed, err := s.db.UploadKeys(ctx, up, pos)
	s.forgetCounts(up.UserID, up.DeviceID)
	if errors.Is(err, storage.ErrKeyConflict) {
		httpapi.Fail(w, r, httpapi.InvalidParam("%v", err))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if changed {
		s.announce(ctx, rq.UserID, pos)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"one_time_key_counts": otkCountsJSON(counts)})
}

// checkDeviceKeys validates device_keys for the requester's device and
// returns them canonical, without unsigned (the server's to fill). They must
// name the requester's user and device. Their self-signature is not checked,
// as Synapse does not: every client verifies device keys itself before
// trusting them (and must, since a server could forge anything it serves),
// and clients and test suites exist that upload keys unsigned.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, error) {
	const what = "device_keys"
	c, m, err := object(raw, what)
	if err != nil {
		return nil, err
	}
	var (
		uid, did   string
		algorithms []string
		keys       map[string]string
		sigs       signatures
	)
	if err := fields(m, what, member{"user_id", &uid, true}, member{"device_id", &did, true},
		member{"algorithms", &algorithms, true}, member{"keys", &keys, true}, member{"signatures", &sigs, false}); err != nil {
		return nil, err
	}
	if uid != userID {
		return nil, httpapi.Forbidden("device_keys.user_id must be your user ID, %s", userID)
	}
	if did != deviceID {
		return nil, httpapi.Forbidden("device_keys.device_id must be the device of your access token, %s", deviceID)
	}
	for kid, v := range keys {
		_, dev, ok := splitKeyID(kid)
		if !ok || dev != deviceID || v == "" {
			return nil, httpapi.InvalidParam("device_keys.keys: %q is not <algorithm>:%s with a key", kid, deviceID)
		}
	}
	c, err = canonicaljson.Delete(c, "unsigned")
	if err != nil {
		return nil, httpapi.BadJSON("%s: %v", what, err)
	}
	return c, nil
}

// checkKeys validates one_time_keys or fallback_keys: "<algorithm>:<id>"
// names, each a key string or a key object with a "key".
func checkKeys(m map[string]json.RawMessage, what string) ([]storage.E2EEKey, error) {
	out := make([]storage.E2EEKey, 0, len(m))
	for name, raw := range m {
		alg, kid, ok := splitKeyID(name)
		if !ok {
			return nil, httpapi.InvalidParam("%s: %q is not <algorithm>:<key id>", what, name)
		}
		c, err := canonicaljson.Canonicalize(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%s.%s: %v", what, name, err)
		}
		switch c[0] {
		case '"':
			if string(c) == `""` {
				return nil, httpapi.InvalidParam("%s.%s is empty", what, name)
			}
		case '{':
			var key string
			var sigs signatures
			_, members, err := object(c, what+"."+name)
			if err != nil {
				return nil, err
			}
			if err := field(members, what+"."+name, "key", &key, true); err != nil {
				return nil, err
			}
			if err := field(members, what+"."+name, "signatures", &sigs, false); err != nil {
				return nil, err
			}
			if key == "" {
				return nil, httpapi.InvalidParam("%s.%s.key is empty", what, name)
			}
		default:
			return nil, httpapi.BadJSON("%s.%s must be a key string or a key object", what, name)
		}
		out = append(out, storage.E2EEKey{Algorithm: alg, KeyID: kid, JSON: c})
	}
	// Map order is random; a stable order keeps one-time keys of one
	// upload in the order of their IDs, which clients usually count up.
	slices.SortFunc(out, func(a, b storage.E2EEKey) int {
		return cmp.Or(strings.Compare(a.Algorithm, b.Algorithm), strings.Compare(a.KeyID, b.KeyID))
	})
	return out, nil
}

// queryResponse is the answer of /keys/query.
type queryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// POST /keys/query
func (s *Service) queryKeys(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxKeysBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("device_keys is required"))
		return
	}
	if len(req.DeviceKeys) > maxQueriedUsers {
		httpapi.Fail(w, r, httpapi.TooLarge("at most %d users per query", maxQueriedUsers))
		return
	}
	var local []string
	remote := map[string]map[string][]string{}
	for u, devices := range req.DeviceKeys {
		uid, err := id.ParseUserID(u)
		if err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("device_keys: %q is not a user ID", u))
			return
		}
		if s.isLocal(u) {
			local = append(local, u)
			continue
		}
		if remote[uid.ServerName] == nil {
			remote[uid.ServerName] = map[string][]string{}
		}
		remote[uid.ServerName][u] = devices
	}
	resp := &queryResponse{
		Failures:        map[string]any{},
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	if err := s.localKeys(ctx, rq.UserID, local, req.DeviceKeys, resp); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.remoteKeys(ctx, remote, timeout(req.Timeout), resp)
	httpapi.Respond(w, http.StatusOK, resp)
}

// timeout is the time to give remote servers: the client's, within reason.
func timeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return 10 * time.Second
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// localKeys fills resp with the keys of local users as viewer may see them.
func (s *Service) localKeys(ctx context.Context, viewer string, users []string, wanted map[string][]string, resp *queryResponse) error {
	if len(users) == 0 {
		return nil
	}
	devices, err := s.db.DeviceKeysOf(ctx, users)
	if err != nil {
		return err
	}
	sigs, err := s.db.KeySignaturesOf(ctx, users, viewer)
	if err != nil {
		return err
	}
	xsigning, err := s.db.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return err
	}
	type target struct{ user, key string }
	bySigned := map[target][]storage.KeySignature{}
	for _, sg := range sigs {
		t := target{sg.TargetUser, sg.TargetKey}
		bySigned[t] = append(bySigned[t], sg)
	}
	sigsOf := func(user, key string) []storage.KeySignature { return bySigned[target{user, key}] }
	for _, u := range users {
		resp.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	for _, d := range devices {
		if want := wanted[d.UserID]; len(want) > 0 && !slices.Contains(want, d.DeviceID) {
			continue
		}
		k, err := withSignatures(d.JSON, sigsOf(d.UserID, d.DeviceID), d.DisplayName)
		if err != nil {
			return fmt.Errorf("device keys of %s %s: %w", d.UserID, d.DeviceID, err)
		}
		resp.DeviceKeys[d.UserID][d.DeviceID] = k
	}
	for _, x := range xsigning {
		k, err := withSignatures(x.JSON, sigsOf(x.UserID, x.PublicKey), "")
		if err != nil {
			return fmt.Errorf("%s key of %s: %w", x.Usage, x.UserID, err)
		}
		switch x.Usage {
		case "master":
			resp.MasterKeys[x.UserID] = k
		case "self_signing":
			resp.SelfSigningKeys[x.UserID] = k
		case "user_signing":
			// Only its owner may see a user-signing key.
			if x.UserID == viewer {
				resp.UserSigningKeys[x.UserID] = k
			}
		}
	}
	return nil
}

// remoteKeys asks other servers for their users' keys through the
// federation hook, all at once, recording the servers it cannot reach as
// failures: one slow server costs the wait for it, not its turn in a line.
func (s *Service) remoteKeys(ctx context.Context, remote map[string]map[string][]string, wait time.Duration, resp *queryResponse) {
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	for server, users := range remote {
		if s.cfg.Federation == nil {
			resp.Failures[server] = unreachable("federation is not available on this server")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, wait)
			keys, err := s.cfg.Federation.QueryKeys(qctx, server, users)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				resp.Failures[server] = unreachable(err.Error())
				return
			}
			for u, devs := range keys.DeviceKeys {
				if _, asked := users[u]; asked {
					resp.DeviceKeys[u] = devs
				}
			}
			for u, k := range keys.MasterKeys {
				if _, asked := users[u]; asked {
					resp.MasterKeys[u] = k
				}
			}
			for u, k := range keys.SelfSigningKeys {
				if _, asked := users[u]; asked {
					resp.SelfSigningKeys[u] = k
				}
			}
		}()
	}
	wg.Wait()
}

// unreachable is a failures entry, in the shape Synapse uses.
func unreachable(msg string) map[string]any {
	return map[string]any{"status": http.StatusServiceUnavailable, "message": msg}
}

// POST /keys/claim
func (s *Service) claimKeys(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxKeysBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("one_time_keys is required"))
		return
	}
	var claims []storage.KeyClaim
	remote := map[string]map[string]map[string]string{}
	n := 0
	for u, devices := range req.OneTimeKeys {
		uid, err := id.ParseUserID(u)
		if err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("one_time_keys: %q is not a user ID", u))
			return
		}
		if n += len(devices); n > maxClaims {
			httpapi.Fail(w, r, httpapi.TooLarge("at most %d keys per claim", maxClaims))
			return
		}
		for dev, alg := range devices {
			if alg == "" {
				httpapi.Fail(w, r, httpapi.InvalidParam("one_time_keys.%s.%s: the algorithm is empty", u, dev))
				return
			}
			if s.isLocal(u) {
				claims = append(claims, storage.KeyClaim{UserID: u, DeviceID: dev, Algorithm: alg})
				continue
			}
			if remote[uid.ServerName] == nil {
				remote[uid.ServerName] = map[string]map[string]string{}
			}
			if remote[uid.ServerName][u] == nil {
				remote[uid.ServerName][u] = map[string]string{}
			}
			remote[uid.ServerName][u][dev] = alg
		}
	}
	claimed, err := s.db.ClaimKeys(ctx, claims)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	for _, k := range claimed {
		s.forgetCounts(k.UserID, k.DeviceID)
	}
	keys := map[string]map[string]map[string]json.RawMessage{}
	for _, k := range claimed {
		if keys[k.UserID] == nil {
			keys[k.UserID] = map[string]map[string]json.RawMessage{}
		}
		keys[k.UserID][k.DeviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.JSON}
	}
	failures := map[string]any{}
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	for server, asked := range remote {
		if s.cfg.Federation == nil {
			failures[server] = unreachable("federation is not available on this server")
			continue
		}
		wg.Add(1)
		go func() { // all servers at once, as for /keys/query
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout(req.Timeout))
			got, err := s.cfg.Federation.ClaimKeys(cctx, server, asked)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = unreachable(err.Error())
				return
			}
			for u, devs := range got {
				if _, ok := asked[u]; ok {
					keys[u] = devs
				}
			}
		}()
	}
	wg.Wait()
	httpapi.Respond(w, http.StatusOK, map[string]any{"one_time_keys": keys, "failures": failures})
}

// GET /keys/changes?from=&to=
func (s *Service) keyChanges(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	q := r.URL.Query()
	if q.Get("from") == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("from is required"))
		return
	}
	from, err := parseSyncToken(q.Get("from"))
	if err != nil {
		httpapi.Fail(w, r, httpapi.InvalidParam("from is not a sync token"))
		return
	}
	// to is a hint; never read past what is persisted.
	to := s.tracker.UpTo()
	if t := q.Get("to"); t != "" {
		pos, err := parseSyncToken(t)
		if err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("to is not a sync token"))
			return
		}
		to = min(to, pos)
	}
	if err := s.announcePending(ctx); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	changed, left := []string{}, []string{}
	if from < to {
		joined, err := s.db.RoomsWithMembership(ctx, rq.UserID, "join")
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		c, l, err := s.db.DeviceListChanges(ctx, rq.UserID, joined, from, to)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		changed, left = append(changed, c...), append(left, l...)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}
