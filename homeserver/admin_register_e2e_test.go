package homeserver_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"testing"

	"plaza/homeserver"
)

// sharedSecretMAC computes the mac the way Synapse's register_new_matrix_user
// does, independently of the server's code.
func sharedSecretMAC(secret, nonce, user, password string, admin bool, userType string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	msg := nonce + "\x00" + user + "\x00" + password + "\x00" + role
	if userType != "" {
		msg += "\x00" + userType
	}
	mac.Write([]byte(msg))
	return hex.EncodeToString(mac.Sum(nil))
}

func TestSharedSecretRegistration(t *testing.T) {
	const secret = "complement"
	s := newServer(t, func(c *homeserver.Config) {
		c.Registration = "closed" // the admin API works whatever the public mode
		c.RegistrationSharedSecret = secret
	})
	anon := s.anon()
	const path = "/_synapse/admin/v1/register"
	nonce := func() string {
		t.Helper()
		n := anon.must("GET", path, nil).str("nonce")
		if len(n) < 16 {
			t.Fatalf("nonce %q is too short to be unguessable", n)
		}
		return n
	}
	body := func(nonce, user, password string, admin bool, userType, mac string) map[string]any {
		b := map[string]any{"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac}
		if userType != "" {
			b["user_type"] = userType
		}
		return b
	}

	// An admin, then an ordinary user whose MAC covers a user_type.
	n := nonce()
	r := anon.must("POST", path, body(n, "Root", "root-pw", true, "", sharedSecretMAC(secret, n, "Root", "root-pw", true, "")))
	if r.str("user_id") != "@root:plaza.test" || r.str("access_token") == "" || r.str("device_id") == "" || r.str("home_server") != "plaza.test" {
		t.Fatalf("register = %s", r.Raw)
	}
	acct, err := s.hs.DB.AccountByUserID(context.Background(), "@root:plaza.test")
	if err != nil || !acct.IsAdmin {
		t.Fatalf("@root: %+v, %v; want an admin", acct, err)
	}
	who := &client{t: t, base: s.URL, token: r.str("access_token")}
	if got := who.must("GET", "/_matrix/client/v3/account/whoami", nil).str("user_id"); got != "@root:plaza.test" {
		t.Errorf("whoami with the returned token = %q", got)
	}
	n = nonce()
	anon.must("POST", path, body(n, "bot", "bot-pw", false, "bot", sharedSecretMAC(secret, n, "bot", "bot-pw", false, "bot")))
	if acct, err := s.hs.DB.AccountByUserID(context.Background(), "@bot:plaza.test"); err != nil || acct.IsAdmin {
		t.Fatalf("@bot: %+v, %v; want an ordinary user", acct, err)
	}
	// The password works for an ordinary login.
	anon.must("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bot"}, "password": "bot-pw"})

	// A nonce is good once, even when the first use failed.
	n = nonce()
	anon.fails(http.StatusForbidden, "M_FORBIDDEN", "POST", path, body(n, "eve", "pw", false, "", sharedSecretMAC("wrong", n, "eve", "pw", false, "")))
	anon.fails(http.StatusBadRequest, "M_UNKNOWN", "POST", path, body(n, "eve", "pw", false, "", sharedSecretMAC(secret, n, "eve", "pw", false, "")))
	// Claiming admin with a MAC made for notadmin fails.
	n = nonce()
	anon.fails(http.StatusForbidden, "M_FORBIDDEN", "POST", path, body(n, "eve", "pw", true, "", sharedSecretMAC(secret, n, "eve", "pw", false, "")))
	// A nonce the server never gave.
	anon.fails(http.StatusBadRequest, "M_UNKNOWN", "POST", path, body("made-up", "eve", "pw", false, "", sharedSecretMAC(secret, "made-up", "eve", "pw", false, "")))
	// A MAC that is not hex.
	anon.fails(http.StatusForbidden, "M_FORBIDDEN", "POST", path, body(nonce(), "eve", "pw", false, "", "not hex"))
	if acct, err := s.hs.DB.AccountByUserID(context.Background(), "@eve:plaza.test"); err == nil && acct != nil {
		t.Errorf("a refused registration created @eve: %+v", acct)
	}
	// Taken and invalid names, missing fields, bad JSON.
	n = nonce()
	anon.fails(http.StatusBadRequest, "M_USER_IN_USE", "POST", path, body(n, "root", "pw", false, "", sharedSecretMAC(secret, n, "root", "pw", false, "")))
	n = nonce()
	anon.fails(http.StatusBadRequest, "M_INVALID_USERNAME", "POST", path, body(n, "bad name", "pw", false, "", sharedSecretMAC(secret, n, "bad name", "pw", false, "")))
	anon.fails(http.StatusBadRequest, "M_MISSING_PARAM", "POST", path, map[string]any{"nonce": nonce(), "username": "x"})
	anon.fails(http.StatusBadRequest, "M_MISSING_PARAM", "POST", path, map[string]any{"username": "x", "password": "y", "mac": "00"})
	anon.fails(http.StatusBadRequest, "M_INVALID_PARAM", "POST", path, body(nonce(), "x\x00y", "pw", false, "", "00"))
	anon.fails(http.StatusBadRequest, "M_BAD_JSON", "POST", path, `{"nonce": 5}`)
	anon.fails(http.StatusBadRequest, "M_NOT_JSON", "POST", path, `{nope`)

	// Without a secret the endpoint does not exist.
	off := newServer(t).anon()
	off.fails(http.StatusNotFound, "M_UNRECOGNIZED", "GET", path, nil)
	off.fails(http.StatusNotFound, "M_UNRECOGNIZED", "POST", path, map[string]any{})
}
