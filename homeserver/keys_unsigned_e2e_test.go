package homeserver_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// TestUnsignedDeviceKeys: device keys without a self-signature (as
// Complement and some clients upload them) are stored and served, since
// clients verify signatures themselves; keys naming another user or device
// are still refused.
func TestUnsignedDeviceKeys(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(userID, deviceID string) map[string]any {
		return map[string]any{"device_keys": map[string]any{
			"user_id": userID, "device_id": deviceID,
			"algorithms": []any{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys": map[string]any{
				"ed25519:" + deviceID:    base64.RawStdEncoding.EncodeToString(pub),
				"curve25519:" + deviceID: base64.RawStdEncoding.EncodeToString(pub),
			},
		}}
	}
	alice.must("POST", "/_matrix/client/v3/keys/upload", keys(alice.UserID, alice.Device))
	q := bob.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []any{}}})
	dk, _ := q.Body["device_keys"].(map[string]any)
	mine, _ := dk[alice.UserID].(map[string]any)
	dev, _ := mine[alice.Device].(map[string]any)
	if k, _ := dev["keys"].(map[string]any); k == nil || k["ed25519:"+alice.Device] != base64.RawStdEncoding.EncodeToString(pub) {
		t.Fatalf("unsigned keys not served: %s", q.Raw)
	}

	// A bad signature is the readers' business too.
	signed := keys(alice.UserID, alice.Device)
	signed["device_keys"].(map[string]any)["signatures"] = map[string]any{alice.UserID: map[string]any{"ed25519:" + alice.Device: "bm90IGEgc2lnbmF0dXJl"}}
	alice.must("POST", "/_matrix/client/v3/keys/upload", signed)

	alice.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/keys/upload", keys(bob.UserID, alice.Device))
	alice.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/keys/upload", keys(alice.UserID, "OTHERDEVICE"))
	q = bob.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []any{}}})
	if mine := q.Body["device_keys"].(map[string]any)[alice.UserID].(map[string]any); len(mine) != 1 || mine[alice.Device] == nil {
		t.Fatalf("refused uploads changed alice's devices: %s", q.Raw)
	}
}
