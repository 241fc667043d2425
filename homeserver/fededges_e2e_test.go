package homeserver_test

import (
	"crypto/ed25519"
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

// uploadDeviceKeys uploads signed identity keys and one one-time key for
// c's device.
func (c *client) uploadDeviceKeys(otkID, otk string) {
	c.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	obj := map[string]any{"user_id": c.UserID, "device_id": c.Device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + c.Device: signing.EncodeBase64(pub), "curve25519:" + c.Device: signing.EncodeBase64(pub)}}
	js, _ := json.Marshal(obj)
	signed, err := signing.SignJSON(js, c.UserID, signing.Key{ID: "ed25519:" + c.Device, Private: priv})
	if err != nil {
		c.t.Fatal(err)
	}
	c.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": json.RawMessage(signed),
		"one_time_keys": map[string]any{"signed_curve25519:" + otkID: map[string]any{"key": otk}}})
}

// syncUntil long-polls c's sync from since until cond holds for a
// response, and returns it; the deadline only ends a test that would
// otherwise hang.
func (c *client) syncUntil(since string, cond func(response) bool) response {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.sync(since, 1000)
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("sync never got there; last: %s", r.Raw)
		}
		if since != "" {
			since = r.str("next_batch")
		}
	}
}

// An encrypted DM between servers: keys are queried and claimed across,
// the olm to-device message and the encrypted room event arrive; typing,
// receipts, device-list changes and profiles cross too.
func TestFederationEncryptedDMAndEDUs(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	bob.must("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.UserID)+"/displayname", map[string]any{"displayname": "Bob B."})
	alice.uploadDeviceKeys("AAAA", "alice-otk")
	bob.uploadDeviceKeys("BBBB", "bob-otk")

	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "dm",
		"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape("#dm:"+a.name), map[string]any{})

	// Profiles and keys come from bob's server.
	if r := alice.must("GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob.UserID), nil); r.str("displayname") != "Bob B." {
		t.Errorf("bob's profile seen from a: %s", r.Raw)
	}
	r := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	dk, _ := r.Body["device_keys"].(map[string]any)[bob.UserID].(map[string]any)
	if _, ok := dk[bob.Device]; !ok {
		t.Fatalf("bob's device keys from a: %s", r.Raw)
	}
	if f, _ := r.Body["failures"].(map[string]any); len(f) != 0 {
		t.Errorf("failures: %v", f)
	}
	r = alice.must("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{bob.UserID: map[string]string{bob.Device: "signed_curve25519"}}})
	otks, _ := r.Body["one_time_keys"].(map[string]any)[bob.UserID].(map[string]any)[bob.Device].(map[string]any)
	if _, ok := otks["signed_curve25519:BBBB"]; !ok {
		t.Fatalf("claimed from a: %s", r.Raw)
	}

	// The olm message that carries the megolm session, then the event.
	bobSince := bob.sync("", 0).str("next_batch")
	alice.must("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", map[string]any{"messages": map[string]any{
		bob.UserID: map[string]any{bob.Device: map[string]any{"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "k", "ciphertext": map[string]any{}}}}})
	bob.syncUntil(bobSince, func(r response) bool {
		td, _ := r.Body["to_device"].(map[string]any)
		evs, _ := td["events"].([]any)
		return len(evs) == 1 && evs[0].(map[string]any)["sender"] == alice.UserID && evs[0].(map[string]any)["type"] == "m.room.encrypted"
	})
	encID := alice.sendType(roomID, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "opaque",
		"sender_key": "k", "session_id": "s", "device_id": alice.Device})
	bob.syncUntil("", func(r response) bool {
		for _, ev := range timeline(r, roomID) {
			if ev["event_id"] == encID {
				return true
			}
		}
		return false
	})

	// bob types and reads; alice sees both.
	aliceSince := alice.sync("", 0).str("next_batch")
	bob.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(bob.UserID), map[string]any{"typing": true, "timeout": 30000})
	bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(encID), map[string]any{})
	var typed, read bool
	alice.syncUntil(aliceSince, func(r response) bool {
		for _, e := range ephemeral(r, roomID, "m.typing") {
			ids, _ := e["content"].(map[string]any)["user_ids"].([]any)
			typed = typed || slices.Contains(ids, any(bob.UserID))
		}
		for _, e := range ephemeral(r, roomID, "m.receipt") {
			rc, _ := e["content"].(map[string]any)[encID].(map[string]any)
			reads, _ := rc["m.read"].(map[string]any)
			read = read || reads[bob.UserID] != nil
		}
		return typed && read
	})

	// bob signs in on a second device with keys: alice hears of the change.
	aliceSince = alice.sync("", 0).str("next_batch")
	bob2 := b.anon()
	lr := bob2.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "secret-bob"})
	bob2.token, bob2.UserID, bob2.Device = lr.str("access_token"), lr.str("user_id"), lr.str("device_id")
	bob2.uploadDeviceKeys("CCCC", "bob2-otk")
	alice.syncUntil(aliceSince, func(r response) bool {
		dl, _ := r.Body["device_lists"].(map[string]any)
		changed, _ := dl["changed"].([]any)
		return slices.Contains(changed, any(bob.UserID))
	})
	r = alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	if dk, _ := r.Body["device_keys"].(map[string]any)[bob.UserID].(map[string]any); len(dk) != 2 {
		t.Errorf("bob's devices after the change: %s", r.Raw)
	}
}
