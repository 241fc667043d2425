package oauth_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"plaza/homeserver/spectest"
)

var linkRE = regexp.MustCompile(`<a href="([^"]+)">([^<]+)</a>`)

// pageLink returns the URL of the link whose text is text on a page.
func pageLink(t *testing.T, base string, p page, text string) string {
	t.Helper()
	for _, m := range linkRE.FindAllStringSubmatch(p.body, -1) {
		if html.UnescapeString(m[2]) == text {
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := u.Parse(html.UnescapeString(m[1]))
			if err != nil {
				t.Fatal(err)
			}
			return ref.String()
		}
	}
	t.Fatalf("no link %q on the page: %d %s", text, p.status, p.body)
	return ""
}

// uiaChallenge sends a UIA-protected request and expects the 401 that
// starts a session; it returns the session and the offered flows.
func (e *env) uiaChallenge(method, path, token string, body map[string]any) (string, []string) {
	e.t.Helper()
	status, out := e.api(method, path, token, body)
	if status != http.StatusUnauthorized {
		e.t.Fatalf("%s %s: %d %v, want the 401 of user-interactive auth", method, path, status, out)
	}
	session, _ := out["session"].(string)
	var flows []string
	for _, f := range out["flows"].([]any) {
		var stages []string
		for _, s := range f.(map[string]any)["stages"].([]any) {
			stages = append(stages, s.(string))
		}
		flows = append(flows, strings.Join(stages, ","))
	}
	if session == "" {
		e.t.Fatalf("no session in %v", out)
	}
	return session, flows
}

// ssoAccess signs in with SSO as the forge's current user and returns an
// access token.
func (e *env) ssoAccess(idp string) string {
	e.t.Helper()
	status, body := e.api("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": e.ssoLogin(idp)})
	if status != 200 {
		e.t.Fatalf("m.login.token: %d %v", status, body)
	}
	return body["access_token"].(string)
}

// reauthenticate opens the fallback page for session in a fresh browser,
// confirms with the forge idp, and returns the last page.
func (e *env) reauthenticate(session, idp, wantAction string) page {
	e.t.Helper()
	b := newBrowser(e.t)
	p := b.visit("GET", e.url+"/_matrix/client/v3/auth/m.login.sso/fallback/web?session="+url.QueryEscape(session), nil)
	if p.status != 200 || !strings.Contains(p.body, wantAction) || !strings.Contains(p.body, "do not continue") {
		e.t.Fatalf("fallback page: %d %s", p.status, p.body)
	}
	return b.visit("GET", pageLink(e.t, e.url, p, "Confirm with "+idp), nil)
}

// TestUIASSO: an account made by SSO has no password; deleting a device
// and deactivating go through the m.login.sso stage and its fallback page.
func TestUIASSO(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.ssoAccess("github")
	second := e.ssoAccess("github")
	status, who := e.api("GET", "/_matrix/client/v3/account/whoami", second, nil)
	if status != 200 {
		t.Fatal(who)
	}
	secondDevice := who["device_id"].(string)
	deletePath := "/_matrix/client/v3/devices/" + url.PathEscape(secondDevice)

	session, flows := e.uiaChallenge("DELETE", deletePath, first, map[string]any{})
	if strings.Join(flows, ";") != "m.login.sso" {
		t.Fatalf("flows for a password-less SSO account: %v", flows)
	}
	// The 401 is the spec's AuthenticationResponse.
	_, challenge := e.api("DELETE", deletePath, first, map[string]any{"auth": map[string]any{"session": session}})
	raw, _ := json.Marshal(challenge)
	if err := spectest.ForTest(t).Validate("DELETE", "/_matrix/client/v3/devices/{deviceId}", 401, raw); err != nil {
		t.Fatalf("401 %s: %v", raw, err)
	}
	// Retrying before the stage is done: still 401, same session.
	if s, _ := e.uiaChallenge("DELETE", deletePath, first, map[string]any{"auth": map[string]any{"session": session}}); s != session {
		t.Fatalf("session changed before completion: %s -> %s", session, s)
	}
	// A password is no way in for an account without one.
	if status, out := e.api("DELETE", deletePath, first, map[string]any{"auth": map[string]any{"session": session, "type": "m.login.password", "user": "@alice:plaza.test", "password": ""}}); status != 401 || out["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("password stage on an SSO account: %d %v", status, out)
	}

	done := e.reauthenticate(session, "GitHub", "remove devices from your account")
	if done.status != 200 || !strings.Contains(done.body, `window.opener.postMessage("authDone", "*")`) || !strings.Contains(done.body, "window.onAuthDone()") {
		t.Fatalf("completion page: %d %s", done.status, done.body)
	}
	// The session, now complete, lets the request through once.
	if status, out := e.api("DELETE", deletePath, first, map[string]any{"auth": map[string]any{"session": session}}); status != 200 {
		t.Fatalf("retry after SSO: %d %v", status, out)
	}
	if status, _ := e.api("GET", "/_matrix/client/v3/account/whoami", second, nil); status != 401 {
		t.Fatalf("the deleted device's token still works: %d", status)
	}
	if s, _ := e.uiaChallenge("POST", "/_matrix/client/v3/delete_devices", first, map[string]any{"devices": []string{}, "auth": map[string]any{"session": session}}); s == session {
		t.Fatal("a used session was accepted again")
	}

	// Deactivation the same way, with the m.login.sso type named.
	session, _ = e.uiaChallenge("POST", "/_matrix/client/v3/account/deactivate", first, map[string]any{})
	if p := e.reauthenticate(session, "GitHub", "deactivate your account"); p.status != 200 {
		t.Fatalf("completion: %d %s", p.status, p.body)
	}
	if status, out := e.api("POST", "/_matrix/client/v3/account/deactivate", first, map[string]any{"auth": map[string]any{"type": "m.login.sso", "session": session}}); status != 200 {
		t.Fatalf("deactivate after SSO: %d %v", status, out)
	}
	b := newBrowser(t)
	p := b.visit("GET", e.url+"/_matrix/client/v3/login/sso/redirect/github?redirectUrl="+url.QueryEscape(clientOrigin+"/"), nil)
	if p.status != http.StatusForbidden || !strings.Contains(p.body, "deactivated") {
		t.Fatalf("sign-in to a deactivated account: %d %s", p.status, p.body)
	}
}

// TestUIASSOAttacks: a session completes only for its own user, its own
// request, in the browser that started the confirmation.
func TestUIASSOAttacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	aliceToken := e.ssoAccess("github")
	e.forge.SignIn(bob)
	bobToken := e.ssoAccess("github")
	e.forge.SignIn(alice)

	// Bob signs in at the forge to confirm alice's session: refused.
	session, _ := e.uiaChallenge("POST", "/_matrix/client/v3/account/deactivate", aliceToken, map[string]any{})
	e.forge.SignIn(bob)
	if p := e.reauthenticate(session, "GitHub", "deactivate your account"); p.status != http.StatusForbidden || !strings.Contains(p.body, "not the account linked to @alice:plaza.test") {
		t.Fatalf("bob confirming alice's session: %d %s", p.status, p.body)
	}
	e.forge.SignIn(alice)
	if s, _ := e.uiaChallenge("POST", "/_matrix/client/v3/account/deactivate", aliceToken, map[string]any{"auth": map[string]any{"session": session}}); s != session {
		t.Fatal("the session was lost")
	}

	// A completed session authorises its own request only, for its own user.
	if p := e.reauthenticate(session, "GitHub", "deactivate your account"); p.status != 200 {
		t.Fatalf("completion: %d %s", p.status, p.body)
	}
	if s, _ := e.uiaChallenge("POST", "/_matrix/client/v3/account/deactivate", bobToken, map[string]any{"auth": map[string]any{"session": session}}); s == session {
		t.Fatal("bob used alice's session")
	}
	if s, _ := e.uiaChallenge("POST", "/_matrix/client/v3/delete_devices", aliceToken, map[string]any{"devices": []string{}, "auth": map[string]any{"session": session}}); s == session {
		t.Fatal("a session for deactivation deleted devices")
	}

	// The forge's answer is bound to the browser that asked.
	session, _ = e.uiaChallenge("POST", "/_matrix/client/v3/delete_devices", aliceToken, map[string]any{"devices": []string{}})
	victim := newBrowser(t)
	p := victim.visit("GET", e.url+"/_matrix/client/v3/auth/m.login.sso/fallback/web?session="+url.QueryEscape(session), nil)
	start := pageLink(t, e.url, p, "Confirm with GitHub")
	resp, err := victim.c.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = victim.c.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	other := newBrowser(t)
	other.visit("GET", e.url+"/_plaza/login/github", nil) // a browser cookie of its own
	if p := other.visit("GET", callback, nil); p.status != 400 {
		t.Fatalf("callback in another browser: %d %s", p.status, p.body)
	}
	if p := victim.visit("GET", callback, nil); p.status != 200 || !strings.Contains(p.body, "authDone") {
		t.Fatalf("callback in its own browser: %d %s", p.status, p.body)
	}
	if p := victim.visit("GET", callback, nil); p.status != 400 {
		t.Fatalf("replayed callback: %d %s", p.status, p.body)
	}

	// Unknown sessions get an error page, not a flow.
	if p := newBrowser(t).visit("GET", e.url+"/_matrix/client/v3/auth/m.login.sso/fallback/web?session=nope", nil); p.status != 400 || len(p.hops) != 0 {
		t.Fatalf("unknown session: %d %v", p.status, p.hops)
	}
}

// TestUIAPasswordAndSSO: an account with a password and a linked forge is
// offered both, and the password still works.
func TestUIAPasswordAndSSO(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.ssoAccess("github")
	if status, out := e.api("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "pw-1", "logout_devices": false}); status != 401 {
		t.Fatalf("password change without auth: %d %v", status, out)
	}
	session, _ := e.uiaChallenge("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "pw-1", "logout_devices": false})
	if p := e.reauthenticate(session, "GitHub", "change your password"); p.status != 200 {
		t.Fatal(p.body)
	}
	if status, out := e.api("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "pw-1", "logout_devices": false, "auth": map[string]any{"session": session}}); status != 200 {
		t.Fatalf("password set after SSO: %d %v", status, out)
	}
	_, flows := e.uiaChallenge("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "pw-2"})
	if strings.Join(flows, ";") != "m.login.password;m.login.sso" {
		t.Fatalf("flows: %v", flows)
	}
	if status, out := e.api("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "pw-2", "logout_devices": false,
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw-1"}}); status != 200 {
		t.Fatalf("password stage: %d %v", status, out)
	}
}

// TestUIASSOCrossSigning: replacing cross-signing keys (e2ee) goes through
// the same user-interactive auth, so an SSO account can reset them.
func TestUIASSOCrossSigning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.ssoAccess("gitlab")
	master := func() map[string]any {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		k := base64.RawStdEncoding.EncodeToString(pub)
		return map[string]any{"master_key": map[string]any{"user_id": "@alice:plaza.test", "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + k: k}}}
	}
	const upload = "/_matrix/client/v3/keys/device_signing/upload"
	if status, out := e.api("POST", upload, token, master()); status != 200 {
		t.Fatalf("first upload: %d %v", status, out)
	}
	replacement := master()
	session, flows := e.uiaChallenge("POST", upload, token, replacement)
	if strings.Join(flows, ";") != "m.login.sso" {
		t.Fatalf("flows %v", flows)
	}
	if p := e.reauthenticate(session, "GitLab", "replace your cross-signing keys"); p.status != 200 {
		t.Fatalf("completion: %d %s", p.status, p.body)
	}
	replacement["auth"] = map[string]any{"session": session}
	if status, out := e.api("POST", upload, token, replacement); status != 200 {
		t.Fatalf("replacement after SSO: %d %v", status, out)
	}
}
