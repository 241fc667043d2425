package e2ee

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// Keys and signatures are stored as the canonical JSON the client uploaded
// and checked on that form: encoding/json matches member names without
// regard to case and lets a later duplicate win, so a struct decoded from
// the raw body could say something other than the bytes that get signed and
// served. Canonical JSON rejects duplicates, and members are then looked up
// by their exact names.

// object canonicalizes a JSON object and returns it with its members. what
// names it in errors.
func object(raw json.RawMessage, what string) ([]byte, map[string]json.RawMessage, error) {
	c, err := canonicaljson.Canonicalize(raw)
	if err != nil {
		return nil, nil, httpapi.BadJSON("%s: %v", what, err)
	}
	if c[0] != '{' {
		return nil, nil, httpapi.BadJSON("%s must be a JSON object", what)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(c, &members); err != nil {
		return nil, nil, httpapi.BadJSON("%s: %v", what, err)
	}
	return c, members, nil
}

// field decodes the member name of an object into v. A missing member is an
// error if required, and leaves v alone otherwise.
func field(members map[string]json.RawMessage, what, name string, v any, required bool) error {
	raw, ok := members[name]
	if !ok || string(raw) == "null" {
		if required {
			return httpapi.BadJSON("%s.%s is required", what, name)
		}
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return httpapi.BadJSON("%s.%s has the wrong type", what, name)
	}
	return nil
}

// member names a member of an object for fields.
type member struct {
	name     string
	v        any
	required bool
}

// fields decodes members of an object, stopping at the first error.
func fields(members map[string]json.RawMessage, what string, ms ...member) error {
	for _, f := range ms {
		if err := field(members, what, f.name, f.v, f.required); err != nil {
			return err
		}
	}
	return nil
}

// isNull reports whether an optional member of a request is absent.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// splitKeyID splits "<algorithm>:<id>", both parts non-empty.
func splitKeyID(s string) (alg, id string, ok bool) {
	alg, id, ok = strings.Cut(s, ":")
	return alg, id, ok && alg != "" && id != "" && len(s) <= 255
}

// ed25519Key decodes an unpadded base64 Ed25519 public key.
func ed25519Key(b64 string) (ed25519.PublicKey, bool) {
	b, err := signing.DecodeBase64(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// signatures is the "signatures" member of signed JSON: user ID → key ID →
// signature.
type signatures map[string]map[string]string

func invalidSignature(format string, args ...any) *httpapi.Error {
	return httpapi.Custom(http.StatusBadRequest, "M_INVALID_SIGNATURE", format, args...)
}

// withSignatures returns stored key JSON as served: the signatures uploaded
// later merged into its own, and the device's display name in unsigned.
func withSignatures(keyJSON []byte, extra []storage.KeySignature, displayName string) (json.RawMessage, error) {
	if len(extra) == 0 && displayName == "" {
		return keyJSON, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(keyJSON, &obj); err != nil {
		return nil, fmt.Errorf("stored key: %w", err)
	}
	if len(extra) > 0 {
		sigs := signatures{}
		if raw, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(raw, &sigs); err != nil {
				return nil, fmt.Errorf("stored key signatures: %w", err)
			}
		}
		for _, e := range extra {
			if sigs[e.SignerUser] == nil {
				sigs[e.SignerUser] = map[string]string{}
			}
			sigs[e.SignerUser][e.SignerKey] = e.Signature
		}
		b, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if displayName != "" {
		b, err := json.Marshal(map[string]string{"device_display_name": displayName})
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = b
	}
	return json.Marshal(obj)
}

// parseSyncToken reads a position from a /sync token ("s<pos>", possibly
// followed by "_..." from other streams).
func parseSyncToken(tok string) (int64, error) {
	num, ok := strings.CutPrefix(tok, "s")
	if !ok {
		return 0, errors.New("not a sync token")
	}
	if i := strings.IndexByte(num, '_'); i >= 0 {
		num = num[:i]
	}
	pos, err := strconv.ParseInt(num, 10, 64)
	if err != nil || pos < 0 {
		return 0, errors.New("not a sync token")
	}
	return pos, nil
}
