package homeserver_test

import (
	"net/url"
	"testing"

	"plaza/homeserver/spectest"
)

// TestClientGapsMatchSpec checks the answers of key backup, pushers and
// room directory visibility, errors included, against the spec's schemas.
func TestClientGapsMatchSpec(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	spec := spectest.ForTest(t)
	check := func(method, template string, r response) {
		t.Helper()
		if err := spec.Validate(method, template, r.Status, r.Raw); err != nil {
			t.Errorf("%s %s: %v", method, template, err)
		}
	}
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
	auth := map[string]any{"public_key": "abc", "signatures": map[string]any{}}
	check("GET", "/_matrix/client/v3/room_keys/version", alice.do("GET", "/_matrix/client/v3/room_keys/version", nil))
	r := alice.must("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": auth})
	check("POST", "/_matrix/client/v3/room_keys/version", r)
	v := r.str("version")
	check("GET", "/_matrix/client/v3/room_keys/version", alice.must("GET", "/_matrix/client/v3/room_keys/version", nil))
	check("GET", "/_matrix/client/v3/room_keys/version/{version}", alice.must("GET", "/_matrix/client/v3/room_keys/version/"+v, nil))
	check("GET", "/_matrix/client/v3/room_keys/version/{version}", alice.do("GET", "/_matrix/client/v3/room_keys/version/99", nil))
	check("PUT", "/_matrix/client/v3/room_keys/version/{version}", alice.must("PUT", "/_matrix/client/v3/room_keys/version/"+v, map[string]any{"algorithm": alg, "auth_data": auth}))
	check("PUT", "/_matrix/client/v3/room_keys/version/{version}", alice.do("PUT", "/_matrix/client/v3/room_keys/version/"+v, map[string]any{"algorithm": alg, "auth_data": auth, "version": "7"}))

	room := url.PathEscape("!r:plaza.test")
	q := "?version=" + v
	check("PUT", "/_matrix/client/v3/room_keys/keys", alice.must("PUT", "/_matrix/client/v3/room_keys/keys"+q, map[string]any{"rooms": map[string]any{
		"!r:plaza.test": map[string]any{"sessions": map[string]any{"s1": backupKey(0, 0, false, "a")}}}}))
	check("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}", alice.must("PUT", "/_matrix/client/v3/room_keys/keys/"+room+q, map[string]any{"sessions": map[string]any{"s2": backupKey(0, 0, false, "b")}}))
	check("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", alice.must("PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/s3"+q, backupKey(1, 0, true, "c")))
	check("GET", "/_matrix/client/v3/room_keys/keys", alice.must("GET", "/_matrix/client/v3/room_keys/keys"+q, nil))
	check("GET", "/_matrix/client/v3/room_keys/keys/{roomId}", alice.must("GET", "/_matrix/client/v3/room_keys/keys/"+room+q, nil))
	check("GET", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", alice.must("GET", "/_matrix/client/v3/room_keys/keys/"+room+"/s3"+q, nil))
	check("GET", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", alice.do("GET", "/_matrix/client/v3/room_keys/keys/"+room+"/nope"+q, nil))
	check("DELETE", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", alice.must("DELETE", "/_matrix/client/v3/room_keys/keys/"+room+"/s3"+q, nil))
	check("DELETE", "/_matrix/client/v3/room_keys/keys/{roomId}", alice.must("DELETE", "/_matrix/client/v3/room_keys/keys/"+room+q, nil))
	alice.must("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": auth})
	check("PUT", "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", alice.do("PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/s3"+q, backupKey(1, 0, true, "c")))
	check("DELETE", "/_matrix/client/v3/room_keys/keys", alice.must("DELETE", "/_matrix/client/v3/room_keys/keys"+q, nil))
	check("DELETE", "/_matrix/client/v3/room_keys/version/{version}", alice.must("DELETE", "/_matrix/client/v3/room_keys/version/"+v, nil))
	check("DELETE", "/_matrix/client/v3/room_keys/version/{version}", alice.do("DELETE", "/_matrix/client/v3/room_keys/version/"+v, nil))

	check("POST", "/_matrix/client/v3/pushers/set", alice.must("POST", "/_matrix/client/v3/pushers/set", httpPusher("org.example.app", "k", "phone")))
	check("POST", "/_matrix/client/v3/pushers/set", alice.do("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http"}))
	check("GET", "/_matrix/client/v3/pushers", alice.must("GET", "/_matrix/client/v3/pushers", nil))

	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	list := "/_matrix/client/v3/directory/list/room/" + url.PathEscape(roomID)
	check("PUT", "/_matrix/client/v3/directory/list/room/{roomId}", alice.must("PUT", list, map[string]any{"visibility": "public"}))
	check("GET", "/_matrix/client/v3/directory/list/room/{roomId}", alice.must("GET", list, nil))
	check("GET", "/_matrix/client/v3/directory/list/room/{roomId}", alice.do("GET", "/_matrix/client/v3/directory/list/room/"+url.PathEscape("!nope:plaza.test"), nil))
}
