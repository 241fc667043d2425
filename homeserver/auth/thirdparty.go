package auth

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"

	"plaza/homeserver/signing"
)

// verifyThirdPartySigned is rule 5.4.1.7: does any ed25519 signature in the
// invite's signed object verify with any public key of the
// m.room.third_party_invite event? The keys are the event's own
// (public_key, public_keys[].public_key), so no key fetching is involved;
// whether a key was revoked (key_validity_url) is not an auth rule.
func verifyThirdPartySigned(signed json.RawMessage, inviteContent []byte) bool {
	keys := thirdPartyKeys(inviteContent)
	if len(keys) == 0 {
		return false
	}
	obj, err := object(signed)
	if err != nil {
		return false
	}
	sigsObj, err := object(obj["signatures"])
	if err != nil {
		return false
	}
	for _, server := range sortedKeys(sigsObj) {
		byKey, err := object(sigsObj[server])
		if err != nil {
			continue
		}
		for _, keyID := range sortedKeys(byKey) {
			if !strings.HasPrefix(keyID, signing.Algorithm+":") {
				continue
			}
			for _, pub := range keys {
				if signing.VerifyJSON(signed, server, keyID, pub) == nil {
					return true
				}
			}
		}
	}
	return false
}

// thirdPartyKeys returns the decodable ed25519 public keys of an
// m.room.third_party_invite content. Keys that are not unpadded base64 of
// 32 bytes cannot match any signature and are skipped.
func thirdPartyKeys(content []byte) []ed25519.PublicKey {
	obj, err := object(content)
	if err != nil {
		return nil
	}
	var out []ed25519.PublicKey
	add := func(o map[string]json.RawMessage) {
		s, ok := str(o, "public_key")
		if !ok {
			return
		}
		if b, err := signing.DecodeBase64(s); err == nil && len(b) == ed25519.PublicKeySize {
			out = append(out, ed25519.PublicKey(b))
		}
	}
	add(obj)
	var list []json.RawMessage
	if raw, ok := obj["public_keys"]; ok && len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &list) == nil {
		for _, item := range list {
			if o, err := object(item); err == nil {
				add(o)
			}
		}
	}
	return out
}
