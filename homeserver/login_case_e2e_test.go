package homeserver_test

import "testing"

// TestLoginLocalpartCase: password login finds the account whatever the case
// of the localpart, given bare, as a full ID, or in the deprecated "user"
// member; another server's ID is refused.
func TestLoginLocalpartCase(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	anon := s.anon()
	for _, body := range []map[string]any{
		{"identifier": map[string]any{"type": "m.id.user", "user": "Alice"}},
		{"identifier": map[string]any{"type": "m.id.user", "user": "@Alice:plaza.test"}},
		{"user": "ALICE"},
		{"user": "@aLiCe:plaza.test"},
	} {
		body["type"], body["password"] = "m.login.password", "secret-alice"
		r := anon.must("POST", "/_matrix/client/v3/login", body)
		if r.str("user_id") != alice.UserID {
			t.Fatalf("login %v = %s", body, r.Raw)
		}
		(&client{t: t, base: s.URL, token: r.str("access_token")}).must("POST", "/_matrix/client/v3/logout", map[string]any{})
	}
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@Alice:elsewhere.test"}, "password": "secret-alice"})
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "Alice"}, "password": "Secret-alice"})
}
