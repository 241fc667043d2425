package homeserver_test

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
)

func backupKey(fmi, fc int, verified bool, tag string) map[string]any {
	return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
		"session_data": map[string]any{"ciphertext": tag, "mac": "m", "ephemeral": "e"}}
}

// TestKeyBackup runs a backup's life over HTTP: versions, keys at the three
// levels, the spec's replacement rule, the wrong-version answer and errors.
func TestKeyBackup(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
	authData := map[string]any{"public_key": "abcdefg", "signatures": map[string]any{alice.UserID: map[string]any{"ed25519:DEV": "sig"}}}

	alice.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/version", nil)
	alice.fails(400, "M_INVALID_PARAM", "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "m.other", "auth_data": authData})
	alice.fails(400, "M_MISSING_PARAM", "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg})
	alice.fails(400, "M_BAD_JSON", "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": "x"})
	v1 := alice.must("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": authData}).str("version")
	if v1 == "" {
		t.Fatal("no version")
	}
	got := alice.must("GET", "/_matrix/client/v3/room_keys/version", nil)
	if got.str("version") != v1 || got.str("algorithm") != alg || got.Body["count"] != float64(0) || got.str("etag") == "" ||
		jsonString(got.Body["auth_data"]) != jsonString(authData) {
		t.Fatalf("current version = %s", got.Raw)
	}
	// Backups are per user.
	bob.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/version", nil)
	bob.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	bob.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/keys?version="+v1, nil)

	room, room2 := "!abc:plaza.test", "!def:plaza.test"
	keysPath := func(v string, parts ...string) string {
		p := "/_matrix/client/v3/room_keys/keys"
		for _, x := range parts {
			p += "/" + url.PathEscape(x)
		}
		return p + "?version=" + v
	}
	put := alice.must("PUT", keysPath(v1), map[string]any{"rooms": map[string]any{
		room:  map[string]any{"sessions": map[string]any{"s1": backupKey(5, 1, false, "a"), "s2": backupKey(0, 0, false, "b")}},
		room2: map[string]any{"sessions": map[string]any{"s3": backupKey(0, 0, true, "c")}},
	}})
	if put.Body["count"] != float64(3) {
		t.Fatalf("put = %s", put.Raw)
	}
	etag := put.str("etag")
	if got := alice.must("GET", "/_matrix/client/v3/room_keys/version/"+v1, nil); got.Body["count"] != float64(3) || got.str("etag") != etag {
		t.Fatalf("version after put = %s, etag %s", got.Raw, etag)
	}

	// The replacement rule: a worse key leaves the stored one (and the
	// etag); a better one replaces it.
	sessionPath := keysPath(v1, room, "s1")
	for _, worse := range []map[string]any{backupKey(6, 0, false, "worse"), backupKey(5, 2, false, "worse"), backupKey(5, 1, false, "same")} {
		r := alice.must("PUT", sessionPath, worse)
		if r.str("etag") != etag || r.Body["count"] != float64(3) {
			t.Fatalf("worse key: %s (etag was %s)", r.Raw, etag)
		}
	}
	if got := alice.must("GET", sessionPath, nil); jsonString(got.Body) != jsonString(backupKey(5, 1, false, "a")) {
		t.Fatalf("session after worse keys = %s", got.Raw)
	}
	steps := []map[string]any{backupKey(5, 0, false, "fewer forwards"), backupKey(3, 9, false, "lower index"), backupKey(9, 9, true, "verified")}
	for _, better := range steps {
		r := alice.must("PUT", sessionPath, better)
		if r.str("etag") == etag {
			t.Fatalf("better key did not move the etag: %s", r.Raw)
		}
		etag = r.str("etag")
		if got := alice.must("GET", sessionPath, nil); jsonString(got.Body) != jsonString(better) {
			t.Fatalf("session = %s, want %v", got.Raw, better)
		}
	}
	// Unverified never replaces verified, however good otherwise.
	alice.must("PUT", sessionPath, backupKey(0, 0, false, "unverified"))
	if got := alice.must("GET", sessionPath, nil); got.Body["is_verified"] != true {
		t.Fatalf("verified key replaced: %s", got.Raw)
	}

	// Room level.
	alice.must("PUT", keysPath(v1, room2), map[string]any{"sessions": map[string]any{"s4": backupKey(1, 0, false, "d")}})
	r2 := alice.must("GET", keysPath(v1, room2), nil)
	if sess, _ := r2.Body["sessions"].(map[string]any); len(sess) != 2 || sess["s4"] == nil || sess["s3"] == nil {
		t.Fatalf("room keys = %s", r2.Raw)
	}
	if r := alice.must("GET", keysPath(v1, "!empty:plaza.test"), nil); jsonString(r.Body) != `{"sessions":{}}` {
		t.Fatalf("room without keys = %s", r.Raw)
	}
	alice.fails(404, "M_NOT_FOUND", "GET", keysPath(v1, room, "nope"), nil)
	// Clients percent-encode the room ID's sigil and colon.
	if got := alice.must("GET", "/_matrix/client/v3/room_keys/keys/%21abc%3Aplaza.test/s1?version="+v1, nil); got.Body["is_verified"] != true {
		t.Fatalf("percent-encoded room ID: %s", got.Raw)
	}
	all := alice.must("GET", keysPath(v1), nil)
	rooms, _ := all.Body["rooms"].(map[string]any)
	if len(rooms) != 2 {
		t.Fatalf("all keys = %s", all.Raw)
	}

	// Bad input writes nothing.
	before := alice.must("GET", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	alice.fails(400, "M_MISSING_PARAM", "PUT", "/_matrix/client/v3/room_keys/keys", map[string]any{"rooms": map[string]any{}})
	alice.fails(400, "M_BAD_JSON", "PUT", keysPath(v1, room), map[string]any{"sessions": map[string]any{
		"ok": backupKey(0, 0, false, "x"), "bad": map[string]any{"first_message_index": 0}}})
	alice.fails(400, "M_BAD_JSON", "PUT", keysPath(v1, room, "s9"), map[string]any{"first_message_index": "0", "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", keysPath(v1, "not-a-room", "s9"), backupKey(0, 0, false, "x"))
	alice.fails(400, "M_NOT_JSON", "PUT", keysPath(v1, room, "s9"), "{")
	alice.fails(404, "M_NOT_FOUND", "PUT", keysPath("999", room, "s9"), backupKey(0, 0, false, "x"))
	alice.fails(404, "M_NOT_FOUND", "PUT", keysPath("abc", room, "s9"), backupKey(0, 0, false, "x"))
	if after := alice.must("GET", "/_matrix/client/v3/room_keys/version/"+v1, nil); jsonString(after.Body) != jsonString(before.Body) {
		t.Fatalf("bad requests changed the backup: %s -> %s", before.Raw, after.Raw)
	}

	// Updating: only auth_data changes; the version must match.
	newAuth := map[string]any{"public_key": "hijklmn"}
	alice.fails(400, "M_INVALID_PARAM", "PUT", "/_matrix/client/v3/room_keys/version/"+v1, map[string]any{"algorithm": alg, "auth_data": newAuth, "version": "77"})
	alice.fails(404, "M_NOT_FOUND", "PUT", "/_matrix/client/v3/room_keys/version/77", map[string]any{"algorithm": alg, "auth_data": newAuth})
	alice.must("PUT", "/_matrix/client/v3/room_keys/version/"+v1, map[string]any{"algorithm": alg, "auth_data": newAuth, "version": v1})
	if got := alice.must("GET", "/_matrix/client/v3/room_keys/version", nil); jsonString(got.Body["auth_data"]) != jsonString(newAuth) {
		t.Fatalf("auth_data not updated: %s", got.Raw)
	}

	// A new version becomes current: writes to the old one are refused
	// with the current version; it can still be read and emptied.
	v2 := alice.must("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": authData}).str("version")
	if v2 == v1 {
		t.Fatal("same version twice")
	}
	wrong := alice.fails(403, "M_WRONG_ROOM_KEYS_VERSION", "PUT", keysPath(v1, room, "s9"), backupKey(0, 0, false, "x"))
	if wrong.str("current_version") != v2 {
		t.Fatalf("wrong version answer = %s", wrong.Raw)
	}
	if got := alice.must("GET", "/_matrix/client/v3/room_keys/version", nil); got.str("version") != v2 || got.Body["count"] != float64(0) {
		t.Fatalf("current = %s", got.Raw)
	}
	del := alice.must("DELETE", keysPath(v1, room), nil)
	if del.Body["count"] != float64(2) {
		t.Fatalf("after deleting a room's keys: %s", del.Raw)
	}
	del = alice.must("DELETE", keysPath(v1, room2, "s4"), nil)
	if del.Body["count"] != float64(1) {
		t.Fatalf("after deleting a session's key: %s", del.Raw)
	}

	// Deleting a version: gone for good, its number not reused, keys gone.
	alice.must("DELETE", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	alice.fails(404, "M_NOT_FOUND", "DELETE", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	alice.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	alice.fails(404, "M_NOT_FOUND", "GET", keysPath(v1), nil)
	alice.fails(404, "M_NOT_FOUND", "PUT", keysPath(v1, room, "s9"), backupKey(0, 0, false, "x"))
	alice.must("DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil)
	alice.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/room_keys/version", nil)
	v3 := alice.must("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": authData}).str("version")
	if v3 == v1 || v3 == v2 {
		t.Fatalf("deleted version number reused: %s", v3)
	}
	alice.fails(400, "M_MISSING_PARAM", "GET", "/_matrix/client/v3/room_keys/keys", nil)
	if r := alice.must("GET", keysPath(v3), nil); jsonString(r.Body) != `{"rooms":{}}` {
		t.Fatalf("new backup's keys = %s", r.Raw)
	}
	// Unauthenticated requests are refused.
	s.anon().fails(401, "M_MISSING_TOKEN", "GET", "/_matrix/client/v3/room_keys/version", nil)
}

// TestKeyBackupConcurrentVersions: versions created at once by several
// devices are all distinct, and the newest is current.
func TestKeyBackupConcurrentVersions(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	const n = 8
	versions := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := alice.do("POST", "/_matrix/client/v3/room_keys/version", map[string]any{
				"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "k"}})
			versions <- fmt.Sprint(r.Status, " ", r.str("version"))
		}()
	}
	wg.Wait()
	close(versions)
	seen := map[string]bool{}
	for v := range versions {
		if seen[v] || !strings.HasPrefix(v, "200 ") {
			t.Fatalf("answers %v, then %q", seen, v)
		}
		seen[v] = true
	}
	if cur := alice.must("GET", "/_matrix/client/v3/room_keys/version", nil).str("version"); cur != fmt.Sprint(n) {
		t.Fatalf("current version %s, want %d", cur, n)
	}
}
