package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/spectest"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/oauth"
	"plaza/oauth/fakeforge"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// clientOrigin is a Matrix web client on the redirect allow-list. Nothing
// listens there: the tests stop at the redirect to it.
const clientOrigin = "https://client.example"

// env is Plaza (homeserver plus sign-in) on a real database and a real
// port, and a fake forge on another.
type env struct {
	t        *testing.T
	url      string
	hs       *homeserver.Server
	svc      *oauth.Service
	forge    *fakeforge.Forge
	forgeURL string
	cfg      oauth.Config
}

// forge users: ids are immutable, logins may change.
const (
	alice = 1
	bob   = 2
	carol = 3
)

func newEnv(t *testing.T, mutate ...func(*oauth.Config)) *env {
	t.Helper()
	forge := fakeforge.New(fakeforge.Options{})
	forge.AddClient("gh-client", "gh-secret")
	forge.AddClient("gl-client", "gl-secret")
	forge.AddUser(fakeforge.User{ID: alice, Login: "Alice", Name: "Alice Liddell"})
	forge.AddUser(fakeforge.User{ID: bob, Login: "bob"})
	forge.AddUser(fakeforge.User{ID: carol, Login: "carol", Name: "Carol"})
	forge.SignIn(alice)
	forgeSrv := httptest.NewServer(forge)
	t.Cleanup(forgeSrv.Close)

	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)

	pool := storagetest.NewDB(t, storage.Migrations())
	dataDir := t.TempDir()
	hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", PublicURL: srv.URL,
		DataDir: dataDir, Registration: "closed", BcryptCost: bcrypt.MinCost}, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth.Config{
		PublicURL: srv.URL, DataDir: dataDir,
		GitHub:            &oauth.ForgeConfig{ClientID: "gh-client", ClientSecret: "gh-secret", URL: forgeSrv.URL + "/github", APIURL: forgeSrv.URL + "/github/api/"},
		GitLab:            &oauth.ForgeConfig{ClientID: "gl-client", ClientSecret: "gl-secret", URL: forgeSrv.URL + "/gitlab"},
		RedirectAllowlist: []string{clientOrigin, "im.example.app:"},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	svc, err := oauth.New(cfg, hs)
	if err != nil {
		t.Fatal(err)
	}
	h := svc.Handler(hs.Handler())
	handler.Store(&h)
	return &env{t: t, url: srv.URL, hs: hs, svc: svc, forge: forge, forgeURL: forgeSrv.URL, cfg: cfg}
}

// browser is a web browser: a cookie jar, and redirects followed by hand so
// the test sees each hop.
type browser struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, jar: jar, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status   int
	location string // the redirect that left Plaza and the forge, if any
	body     string
	hops     []string
}

// visit opens u and follows redirects until one leaves for the client (or
// another site nothing serves), or a page is shown.
func (b *browser) visit(method, u string, form url.Values) page {
	b.t.Helper()
	var p page
	for i := 0; i < 10; i++ {
		var resp *http.Response
		var err error
		if method == http.MethodPost {
			resp, err = b.c.PostForm(u, form)
		} else {
			resp, err = b.c.Get(u)
		}
		if err != nil {
			b.t.Fatalf("%s %s: %v", method, u, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p.status, p.body = resp.StatusCode, string(raw)
		loc := resp.Header.Get("Location")
		if loc == "" || resp.StatusCode < 300 || resp.StatusCode > 399 {
			return p
		}
		next, err := resp.Request.URL.Parse(loc)
		if err != nil {
			b.t.Fatalf("bad Location %q", loc)
		}
		p.hops = append(p.hops, next.String())
		if next.Scheme != "http" || next.Hostname() != "127.0.0.1" {
			p.location = next.String()
			return p
		}
		method, u = http.MethodGet, next.String()
	}
	b.t.Fatal("too many redirects")
	return p
}

// iconRE finds identity providers' icons (media IDs on plaza.test).
var iconRE = regexp.MustCompile(`"icon":"mxc://plaza\.test/([A-Za-z0-9_-]+)"`)

var nonceRE = regexp.MustCompile(`name="nonce" value="([^"]+)"`)

// confirm answers the "Continue to <host>?" page.
func (b *browser) confirm(e *env, p page) page {
	b.t.Helper()
	m := nonceRE.FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		b.t.Fatalf("expected the confirmation page, got %d %s", p.status, p.body)
	}
	return b.visit(http.MethodPost, e.url+"/_plaza/oauth/confirm", url.Values{"nonce": {m[1]}, "continue": {"1"}})
}

// ssoLogin runs the whole SSO flow in a fresh browser and returns the login
// token the client received.
func (e *env) ssoLogin(idp string) string {
	e.t.Helper()
	b := newBrowser(e.t)
	p := b.visit(http.MethodGet, e.url+"/_matrix/client/v3/login/sso/redirect/"+idp+"?redirectUrl="+url.QueryEscape(clientOrigin+"/app?x=1&loginToken=stale"), nil)
	if !strings.Contains(p.body, "Continue to client.example?") {
		e.t.Fatalf("no confirmation page: %d %s", p.status, p.body)
	}
	p = b.confirm(e, p)
	u, err := url.Parse(p.location)
	if err != nil || !strings.HasPrefix(p.location, clientOrigin+"/app?") {
		e.t.Fatalf("redirected to %q (%d %s)", p.location, p.status, p.body)
	}
	if u.Query().Get("x") != "1" || len(u.Query()["loginToken"]) != 1 || u.Query().Get("loginToken") == "stale" {
		e.t.Fatalf("redirect %q: want x=1 kept and exactly one fresh loginToken", p.location)
	}
	return u.Query().Get("loginToken")
}

// api calls the client-server API as a Matrix client.
func (e *env) api(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// loginWith redeems a login token and returns whoami's user id.
func (e *env) loginWith(token string) string {
	e.t.Helper()
	status, body := e.api("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": token})
	if status != 200 {
		e.t.Fatalf("m.login.token: %d %v", status, body)
	}
	access, _ := body["access_token"].(string)
	status, who := e.api("GET", "/_matrix/client/v3/account/whoami", access, nil)
	if status != 200 {
		e.t.Fatalf("whoami: %d %v", status, who)
	}
	return who["user_id"].(string)
}

func TestLoginFlowsListIdentityProviders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, body := e.api("GET", "/_matrix/client/v3/login", "", nil)
	js, _ := json.Marshal(body["flows"])
	icons := iconRE.FindAllStringSubmatch(string(js), -1)
	want := `{"identity_providers":[{"brand":"github","icon":"ICON","id":"github","name":"GitHub"},{"brand":"gitlab","icon":"ICON","id":"gitlab","name":"GitLab"}],"type":"m.login.sso"}`
	if !strings.Contains(iconRE.ReplaceAllString(string(js), `"icon":"ICON"`), want) || !strings.Contains(string(js), `"m.login.token"`) || len(icons) != 2 {
		t.Fatalf("flows = %s", js)
	}
	// The icons are in the media repository, and a restart (a new
	// Service on the same data directory and database) reuses them.
	for _, m := range icons {
		resp, err := http.Get(e.url + "/_matrix/media/v3/download/plaza.test/" + m[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("icon %s: %d %s", m[1], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if _, err := oauth.New(e.cfg, e.hs); err != nil {
		t.Fatal(err)
	}
	_, again := e.api("GET", "/_matrix/client/v3/login", "", nil)
	if js2, _ := json.Marshal(again["flows"]); string(js2) != string(js) {
		t.Fatalf("after a restart: %s, before: %s", js2, js)
	}
	spec := spectest.ForTest(t)
	raw, _ := json.Marshal(body)
	if err := spec.Validate("GET", "/_matrix/client/v3/login", 200, raw); err != nil {
		t.Fatal(err)
	}
	// GET /login's schema leaves flows open; the m.login.sso flow has a
	// schema of its own.
	for _, f := range body["flows"].([]any) {
		if f.(map[string]any)["type"] == "m.login.sso" {
			raw, _ := json.Marshal(f)
			if err := spec.ValidateSchema("api/client-server/definitions/sso_login_flow.yaml", raw); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSSOGitHubAndGitLab(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token := e.ssoLogin("github")
	if got := e.loginWith(token); got != "@alice:plaza.test" {
		t.Fatalf("GitHub sign-in made %s", got)
	}
	// The login token works once.
	if status, body := e.api("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": token}); status != 403 || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("replayed login token: %d %v", status, body)
	}
	// Display name and avatar came from the forge; the avatar was copied.
	_, prof := e.api("GET", "/_matrix/client/v3/profile/@alice:plaza.test", "", nil)
	avatar, _ := prof["avatar_url"].(string)
	if prof["displayname"] != "Alice Liddell" || !strings.HasPrefix(avatar, "mxc://plaza.test/") {
		t.Fatalf("profile %v", prof)
	}
	resp, err := http.Get(e.url + "/_matrix/media/v3/download/plaza.test/" + strings.TrimPrefix(avatar, "mxc://plaza.test/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("avatar download: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// The same login on GitLab is another person: another account.
	if got := e.loginWith(e.ssoLogin("gitlab")); got != "@alice-gl:plaza.test" {
		t.Fatalf("GitLab sign-in made %s", got)
	}
	// Signing in again finds the same accounts.
	if got := e.loginWith(e.ssoLogin("github")); got != "@alice:plaza.test" {
		t.Fatalf("second GitHub sign-in: %s", got)
	}
}

func TestRenameKeepsAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if got := e.loginWith(e.ssoLogin("github")); got != "@alice:plaza.test" {
		t.Fatal(got)
	}
	e.forge.Rename(alice, "alice-renamed")
	if got := e.loginWith(e.ssoLogin("github")); got != "@alice:plaza.test" {
		t.Fatalf("after a rename on the forge: %s", got)
	}
	// Someone who now takes the old login on the forge is someone else.
	e.forge.Rename(carol, "alice")
	e.forge.SignIn(carol)
	if got := e.loginWith(e.ssoLogin("github")); got != "@alice-gh:plaza.test" {
		t.Fatalf("the next user called alice: %s", got)
	}
}

func TestLocalpartCollisions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, lp := range []string{"carol", "carol-gh"} {
		if err := e.hs.DB.CreateAccount(ctx, storage.Account{UserID: "@" + lp + ":plaza.test", Localpart: lp, PasswordHash: "x"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	e.forge.SignIn(carol)
	if got := e.loginWith(e.ssoLogin("github")); got != "@carol-gh-2:plaza.test" {
		t.Fatalf("collision: %s", got)
	}
}

func TestRedirectToPlazaItselfNeedsNoConfirmation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := newBrowser(t)
	// The r0 prefix and the IdP-less endpoint (two IdPs: a picker page).
	p := b.visit("GET", e.url+"/_matrix/client/r0/login/sso/redirect?redirectUrl="+url.QueryEscape(e.url+"/app/"), nil)
	if p.status != 200 || !strings.Contains(p.body, "Continue with GitLab") {
		t.Fatalf("picker: %d %s", p.status, p.body)
	}
	p = newBrowser(t).visit("GET", e.url+"/_matrix/client/v3/login/sso/redirect/github?redirectUrl="+url.QueryEscape(e.url+"/app/"), nil)
	if !strings.HasPrefix(p.hops[len(p.hops)-1], e.url+"/app/?loginToken=") {
		t.Fatalf("own site: %d %v %s", p.status, p.hops, p.body)
	}
}

func TestOpenRedirectRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, target := range []string{"https://evil.example/", "javascript:alert(1)", "//evil.example/", "http://localhost:8080/", "https://client.example@evil.example/"} {
		resp, err := newBrowser(t).c.Get(e.url + "/_matrix/client/v3/login/sso/redirect/github?redirectUrl=" + url.QueryEscape(target))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 || resp.Header.Get("Location") != "" {
			t.Errorf("redirectUrl %s: %d Location %q", target, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// A native app's scheme on the allow-list is accepted (with confirmation).
	b := newBrowser(t)
	p := b.visit("GET", e.url+"/_matrix/client/v3/login/sso/redirect/github?redirectUrl="+url.QueryEscape("im.example.app:/login"), nil)
	p = b.confirm(e, p)
	if !strings.HasPrefix(p.location, "im.example.app:/login?loginToken=") {
		t.Fatalf("native app redirect: %q", p.location)
	}
}

// The demo forge is never offered beside real forges.
func TestNoDemoWithRealForges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *oauth.Config) { c.Demo = true })
	if got := strings.Join(e.svc.Providers(), ","); got != "github,gitlab" {
		t.Fatalf("providers %s", got)
	}
	resp, err := http.Get(e.url + "/_plaza/demo-forge/github/login/oauth/authorize")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("demo forge served: %d", resp.StatusCode)
	}
}

func TestDemoAllowsLocalhost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *oauth.Config) { c.GitHub, c.GitLab, c.Demo = nil, nil, true })
	_, body := e.api("GET", "/_matrix/client/v3/login", "", nil)
	js, _ := json.Marshal(body["flows"])
	if !strings.Contains(iconRE.ReplaceAllString(string(js), `"icon":"ICON"`), `"identity_providers":[{"icon":"ICON","id":"demo","name":"Demo forge (not GitHub)"}]`) {
		t.Fatalf("flows = %s", js)
	}
	b := newBrowser(t)
	p := b.visit("GET", e.url+"/_matrix/client/v3/login/sso/redirect/demo?redirectUrl="+url.QueryEscape("http://localhost:8080/"), nil)
	// The demo forge asks who to be.
	if p.status != 200 || !strings.Contains(p.body, "Continue as alice-dev") {
		t.Fatalf("demo forge page: %d %s", p.status, p.body)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(p.body, -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
	}
	form.Del("deny")
	form.Set("user", "1002")
	p = b.visit("POST", b.lastForgeURL(p, e), form)
	p = b.confirm(e, p)
	u, _ := url.Parse(p.location)
	if got := e.loginWith(u.Query().Get("loginToken")); got != "@bob-dev:plaza.test" {
		t.Fatalf("demo sign-in: %s", got)
	}

	// Community reaches the in-process demo forge's API as sign-in does.
	api, ok := e.svc.ForgeAPI("demo")
	if !ok || api.Flavour != "github" || api.APIURL != e.url+"/_plaza/demo-forge/github/api/" {
		t.Fatalf("ForgeAPI(demo) = %+v, %v", api, ok)
	}
	resp, err := api.HTTP.Get(api.APIURL + "repos/acme/widget")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the demo forge's repository through ForgeAPI: %d", resp.StatusCode)
	}
	if _, ok := e.svc.ForgeAPI("github"); ok {
		t.Fatal("ForgeAPI offers a forge that is not configured")
	}
}

// lastForgeURL is the forge page the browser was last sent to.
func (b *browser) lastForgeURL(p page, e *env) string {
	u, _ := url.Parse(p.hops[len(p.hops)-1])
	u.RawQuery = ""
	return u.String()
}

func TestStateAttacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := e.url + "/_matrix/client/v3/login/sso/redirect/github?redirectUrl=" + url.QueryEscape(clientOrigin+"/")

	// Stop at the forge's redirect back to Plaza.
	toCallback := func(b *browser) string {
		resp, err := b.c.Get(start)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		resp, err = b.c.Get(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Location")
	}
	expectRefused := func(b *browser, u string, status int, what string) {
		t.Helper()
		p := b.visit("GET", u, nil)
		if p.status != status || p.location != "" || nonceRE.MatchString(p.body) {
			t.Errorf("%s: %d %q %s", what, p.status, p.location, p.body)
		}
	}

	victim, attacker := newBrowser(t), newBrowser(t)
	cb := toCallback(victim)
	u, _ := url.Parse(cb)

	// Missing state.
	noState := *u
	noState.RawQuery = "code=" + url.QueryEscape(u.Query().Get("code"))
	expectRefused(victim, noState.String(), 400, "missing state")
	// Mismatched state: a state this browser never got.
	bad := *u
	bad.RawQuery = "code=" + url.QueryEscape(u.Query().Get("code")) + "&state=forged"
	expectRefused(victim, bad.String(), 400, "forged state")
	// The victim's callback opened in the attacker's browser (login CSRF
	// the other way round): the state is bound to the victim's cookie.
	_ = toCallback(attacker) // the attacker has a cookie of its own
	expectRefused(attacker, cb, 400, "state from another browser")
	// The victim's own callback still works once ...
	p := victim.visit("GET", cb, nil)
	if p.status != 200 || !nonceRE.MatchString(p.body) {
		t.Fatalf("the real callback: %d %s", p.status, p.body)
	}
	// ... and only once.
	expectRefused(victim, cb, 400, "replayed state")

	// The confirmation form is single-use and bound to its browser too.
	m := nonceRE.FindStringSubmatch(p.body)
	if q := attacker.visit("POST", e.url+"/_plaza/oauth/confirm", url.Values{"nonce": {m[1]}}); q.status != 400 || q.location != "" {
		t.Errorf("confirmation from another browser: %d %q", q.status, q.location)
	}
	if q := victim.visit("POST", e.url+"/_plaza/oauth/confirm", url.Values{"nonce": {m[1]}}); !strings.Contains(q.location, "loginToken=") {
		t.Fatalf("confirmation: %d %q", q.status, q.location)
	}
	if q := victim.visit("POST", e.url+"/_plaza/oauth/confirm", url.Values{"nonce": {m[1]}}); q.status != 400 || q.location != "" {
		t.Errorf("replayed confirmation: %d %q", q.status, q.location)
	}
}

func TestPKCEVerifierMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := e.url + "/_matrix/client/v3/login/sso/redirect/gitlab?redirectUrl=" + url.QueryEscape(clientOrigin+"/")
	toCallback := func(b *browser) *url.URL {
		resp, err := b.c.Get(start)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		resp, err = b.c.Get(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		u, _ := url.Parse(resp.Header.Get("Location"))
		return u
	}
	// An attacker who got hold of the victim's code injects it into a flow
	// of their own: Plaza redeems it with the attacker's flow's verifier,
	// and GitLab refuses.
	stolen := toCallback(newBrowser(t))
	attacker := newBrowser(t)
	own := toCallback(attacker)
	injected := *own
	injected.RawQuery = url.Values{"code": {stolen.Query().Get("code")}, "state": {own.Query().Get("state")}}.Encode()
	p := attacker.visit("GET", injected.String(), nil)
	if p.status != http.StatusBadGateway || p.location != "" || nonceRE.MatchString(p.body) {
		t.Fatalf("injected code: %d %q %s", p.status, p.location, p.body)
	}
}

func TestForgeError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.forge.SignIn(0) // the forge shows its form; the person denies access
	b := newBrowser(t)
	p := b.visit("GET", e.url+"/_matrix/client/v3/login/sso/redirect/github?redirectUrl="+url.QueryEscape(clientOrigin+"/"), nil)
	if p.status != 200 || !strings.Contains(p.body, "Deny access") {
		t.Fatalf("forge form: %d %s", p.status, p.body)
	}
	form := url.Values{"deny": {"1"}}
	for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(p.body, -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
	}
	p = b.visit("POST", b.lastForgeURL(p, e), form)
	if p.status != 403 || p.location != "" || !strings.Contains(p.body, "declined") {
		t.Fatalf("forge error: %d %q %s", p.status, p.location, p.body)
	}
}

func TestExpiredLoginToken(t *testing.T) {
	t.Parallel()
	// Sign-in's clock runs an hour behind the homeserver's, so the token
	// it issues has expired by the time the client redeems it.
	e := newEnv(t, func(c *oauth.Config) { c.Now = func() time.Time { return time.Now().Add(-time.Hour) } })
	token := e.ssoLogin("github")
	if status, body := e.api("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": token}); status != 403 {
		t.Fatalf("expired login token: %d %v", status, body)
	}
}

func TestWebSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := newBrowser(t)
	session := func() map[string]any {
		resp, err := b.c.Get(e.url + "/_plaza/session")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	if s := session(); s["signed_in"] != false || len(s["providers"].([]any)) != 2 {
		t.Fatalf("before sign-in: %v", s)
	}
	// Follow the flow by hand to see the cookie's attributes.
	resp, err := b.c.Get(e.url + "/_plaza/login/gitlab?next=" + url.QueryEscape("/acme/widget?at=x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i := 0; i < 2; i++ {
		resp, err = b.c.Get(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/acme/widget?at=x" {
		t.Fatalf("web sign-in ended with %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookie := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(cookie, "plaza_session=") || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Lax") || strings.Contains(cookie, "Secure") {
		t.Fatalf("session cookie %q", cookie)
	}
	s := session()
	if s["signed_in"] != true || s["user_id"] != "@alice:plaza.test" || s["displayname"] != "Alice Liddell" {
		t.Fatalf("signed in: %v", s)
	}
	if ids, _ := json.Marshal(s["identities"]); string(ids) != `[{"idp":"gitlab","login":"Alice"}]` {
		t.Fatalf("identities %s", ids)
	}
	// Signing in again replaces the session: the old token stops working.
	old, site := "", &url.URL{Scheme: "http", Host: strings.TrimPrefix(e.url, "http://")}
	for _, c := range b.jar.Cookies(site) {
		if c.Name == "plaza_session" {
			old = c.Value
		}
	}
	b.visit("GET", e.url+"/_plaza/login/github", nil)
	if _, err := e.hs.DB.WebSession(context.Background(), old, time.Now().UnixMilli()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the replaced session still works: %v", err)
	}
	resp, err = b.c.Post(e.url+"/_plaza/logout", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := session(); resp.StatusCode != 200 || s["signed_in"] != false {
		t.Fatalf("after sign-out: %d %v", resp.StatusCode, s)
	}

	// A next that leaves the site is ignored.
	p := newBrowser(t).visit("GET", e.url+"/_plaza/login/github?next="+url.QueryEscape("//evil.example/"), nil)
	if last := p.hops[len(p.hops)-1]; last != e.url+"/" {
		t.Fatalf("next=//evil.example/ went to %q", last)
	}
}

func TestLinkOtherForge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := newBrowser(t)
	// Linking needs a signed-in person.
	if p := b.visit("GET", e.url+"/_plaza/login/gitlab?link=1", nil); p.status != http.StatusUnauthorized || p.location != "" {
		t.Fatalf("link while signed out: %d %q", p.status, p.location)
	}
	// Sign in with GitHub, then link GitLab.
	if p := b.visit("GET", e.url+"/_plaza/login/github", nil); p.hops[len(p.hops)-1] != e.url+"/" {
		t.Fatalf("sign-in went to %v", p.hops)
	}
	p := b.visit("GET", e.url+"/_plaza/login/gitlab?link=1&next=/settings", nil)
	if p.hops[len(p.hops)-1] != e.url+"/settings" {
		t.Fatalf("link went to %v (%d %s)", p.hops, p.status, p.body)
	}
	resp, err := b.c.Get(e.url + "/_plaza/session")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if ids, _ := json.Marshal(s["identities"]); s["user_id"] != "@alice:plaza.test" || string(ids) != `[{"idp":"github","login":"Alice"},{"idp":"gitlab","login":"Alice"}]` {
		t.Fatalf("session after linking: %v", s)
	}
	// GitLab now signs in to the same account, from any client.
	if got := e.loginWith(e.ssoLogin("gitlab")); got != "@alice:plaza.test" {
		t.Fatalf("GitLab sign-in after linking: %s", got)
	}

	// Bob's GitLab account cannot be linked to alice's account once it
	// has one of its own.
	e.forge.SignIn(bob)
	if got := e.loginWith(e.ssoLogin("gitlab")); got != "@bob:plaza.test" {
		t.Fatal(got)
	}
	other := newBrowser(t)
	e.forge.SignIn(carol)
	other.visit("GET", e.url+"/_plaza/login/github", nil)
	e.forge.SignIn(bob)
	if p := other.visit("GET", e.url+"/_plaza/login/gitlab?link=1", nil); p.status != http.StatusConflict || !strings.Contains(p.body, "already signs in to another account") {
		t.Fatalf("linking someone else's identity: %d %s", p.status, p.body)
	}
	// Alice's account keeps one GitLab identity.
	e.forge.SignIn(carol) // her GitLab identity is not mapped yet
	if p := b.visit("GET", e.url+"/_plaza/login/gitlab?link=1", nil); p.status != http.StatusConflict || !strings.Contains(p.body, "already linked") {
		t.Fatalf("a second GitLab identity: %d %s", p.status, p.body)
	}
}

// TestConcurrentFirstSignIn: the same person signing in from several tabs
// at once for the first time gets one account.
func TestConcurrentFirstSignIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 8
	tokens := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			jar, _ := cookiejar.New(nil)
			// Redirects are followed until the client's page on Plaza
			// itself, which nothing serves: the token is in that URL.
			c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
				if req.URL.Path == "/app/" {
					return http.ErrUseLastResponse
				}
				return nil
			}}
			resp, err := c.Get(e.url + "/_matrix/client/v3/login/sso/redirect/github?redirectUrl=" + url.QueryEscape(e.url+"/app/"))
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || loc.Query().Get("loginToken") == "" {
				errs[i] = fmt.Errorf("flow ended with %d %q", resp.StatusCode, resp.Header.Get("Location"))
				return
			}
			tokens[i] = loc.Query().Get("loginToken")
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got := e.loginWith(tokens[i]); got != "@alice:plaza.test" {
			t.Fatalf("sign-in %d made %s", i, got)
		}
	}
}

// TestForgeTokenSealed: the forge's access token is kept, encrypted at
// rest, and opens again for calls on the user's behalf.
func TestForgeTokenSealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.loginWith(e.ssoLogin("github"))
	ident, err := e.svc.ForgeIdentity(context.Background(), "@alice:plaza.test", "github")
	if err != nil || ident.ForgeUserID != alice || ident.Token == nil || ident.Token.AccessToken == "" {
		t.Fatalf("forge identity %+v, %v", ident, err)
	}
	var sealed []byte
	if err := e.hs.DB.Pool.QueryRow(context.Background(), `SELECT access_token FROM oauth_identities WHERE idp = 'github'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(ident.Token.AccessToken)) {
		t.Fatal("the forge token is stored in the clear")
	}
	// The token works on the forge.
	req, _ := http.NewRequest("GET", e.forgeURL+"/github/api/user", nil)
	ident.Token.SetAuthHeader(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the kept token: %d", resp.StatusCode)
	}
	if _, err := e.svc.ForgeIdentity(context.Background(), "@alice:plaza.test", "gitlab"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("no GitLab identity: %v", err)
	}
}
