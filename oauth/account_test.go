package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"plaza/oauth"
)

func TestAccountPageAndPrivateRepoOptIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	b := newBrowser(t)

	// Signed out: the page offers a button per forge, returning to it.
	p := b.visit("GET", e.url+"/_plaza/account", nil)
	if p.status != 200 || !strings.Contains(p.body, "Sign in with GitLab") {
		t.Fatalf("signed-out account page: %d %s", p.status, p.body)
	}
	p = b.visit("GET", pageLink(t, e.url, p, "Sign in with GitHub"), nil)
	if p.hops[len(p.hops)-1] != e.url+"/_plaza/account" || !strings.Contains(p.body, "Signed in as <strong>Alice Liddell</strong> (<code>@alice:plaza.test</code>)") {
		t.Fatalf("after sign-in: %v %d %s", p.hops, p.status, p.body)
	}
	// Sign-in asked for the minimal scopes.
	if got := forgeScope(t, p.hops[0]); got != "read:user user:email read:org" {
		t.Fatalf("sign-in scopes %q", got)
	}
	ident, err := e.svc.ForgeIdentity(ctx, "@alice:plaza.test", "github")
	if err != nil || ident.PrivateRepos || slices.Contains(ident.Scopes, "repo") {
		t.Fatalf("before opting in: %+v %v", ident, err)
	}

	// Opting in asks the forge again, with repo.
	p = b.visit("GET", pageLink(t, e.url, p, "Allow access to private repositories"), nil)
	if got := forgeScope(t, p.hops[0]); got != "read:user user:email read:org repo" {
		t.Fatalf("opt-in scopes %q", got)
	}
	if !strings.Contains(p.body, "Plaza may read your private repositories.") {
		t.Fatalf("after opting in: %d %s", p.status, p.body)
	}
	ident, err = e.svc.ForgeIdentity(ctx, "@alice:plaza.test", "github")
	if err != nil || !ident.PrivateRepos || strings.Join(ident.Scopes, " ") != "read:org read:user repo user:email" {
		t.Fatalf("after opting in: %+v %v", ident, err)
	}
	optedToken := ident.Token.AccessToken

	// A later plain sign-in (minimal scopes) keeps the opted-in token.
	e.loginWith(e.ssoLogin("github"))
	ident, err = e.svc.ForgeIdentity(ctx, "@alice:plaza.test", "github")
	if err != nil || !ident.PrivateRepos || ident.Token.AccessToken != optedToken {
		t.Fatalf("after a plain sign-in: %+v %v", ident, err)
	}

	// Linking GitLab from the page, then opting in there: read_api.
	p = b.visit("GET", e.url+"/_plaza/account", nil)
	p = b.visit("GET", pageLink(t, e.url, p, "Link your GitLab account"), nil)
	if !strings.Contains(p.body, "GitLab: <strong>Alice</strong>. Plaza sees your public repositories only.") {
		t.Fatalf("after linking GitLab: %s", p.body)
	}
	gitlabOptIn := ""
	for _, m := range linkRE.FindAllStringSubmatch(p.body, -1) {
		if strings.Contains(m[1], "gitlab?private=1") {
			gitlabOptIn = e.url + strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	p = b.visit("GET", gitlabOptIn, nil)
	if got := forgeScope(t, p.hops[0]); got != "read_user openid read_api" {
		t.Fatalf("GitLab opt-in scopes %q", got)
	}
	if ident, err := e.svc.ForgeIdentity(ctx, "@alice:plaza.test", "gitlab"); err != nil || !ident.PrivateRepos {
		t.Fatalf("GitLab after opting in: %+v %v", ident, err)
	}

	// Sign-out from the page's form returns to it, signed out.
	p = b.visit("POST", e.url+"/_plaza/logout", url.Values{"next": {"/_plaza/account"}})
	if p.hops[len(p.hops)-1] != e.url+"/_plaza/account" || !strings.Contains(p.body, "Sign in with GitHub") {
		t.Fatalf("after sign-out: %v %s", p.hops, p.body)
	}
	// Opting in needs a signed-in person.
	if p := b.visit("GET", e.url+"/_plaza/login/github?private=1", nil); p.status != http.StatusUnauthorized || len(p.hops) != 0 {
		t.Fatalf("opt-in while signed out: %d %v", p.status, p.hops)
	}
	// The picker keeps a local next and drops any other.
	if p := b.visit("GET", e.url+"/_plaza/login?next="+url.QueryEscape("//evil.example/"), nil); !strings.Contains(p.body, `/_plaza/login/github?next=%2F_plaza%2Faccount"`) {
		t.Fatalf("picker with a foreign next: %s", p.body)
	}
}

// forgeScope is the scope a forge authorization URL asks for.
func forgeScope(t *testing.T, authorizeURL string) string {
	t.Helper()
	u, err := url.Parse(authorizeURL)
	if err != nil || !strings.HasSuffix(u.Path, "/authorize") {
		t.Fatalf("not a forge authorization URL: %q", authorizeURL)
	}
	return u.Query().Get("scope")
}

// TestSecureCookies: cookies are Secure when Plaza is served over https,
// as its public URL or a TLS-terminating proxy says.
func TestSecureCookies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string, header http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	cookie := func(resp *http.Response, name string) *http.Cookie {
		t.Helper()
		for _, c := range resp.Cookies() {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no %s cookie in %v", name, resp.Header["Set-Cookie"])
		return nil
	}

	// Plain http: not Secure (browsers would drop it).
	resp := get(e.url+"/_plaza/login/github", nil)
	if c := cookie(resp, "plaza_oauth_browser"); c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("flow cookie over http: %+v", c)
	}

	// Behind a proxy that terminates TLS: the flow's cookie and the session
	// cookie are Secure.
	https := http.Header{"X-Forwarded-Proto": {"https"}}
	resp = get(e.url+"/_plaza/login/github", https)
	flow := cookie(resp, "plaza_oauth_browser")
	if !flow.Secure {
		t.Fatalf("flow cookie behind https: %+v", flow)
	}
	resp = get(resp.Header.Get("Location"), nil) // the forge approves alice
	resp = get(resp.Header.Get("Location"), http.Header{"X-Forwarded-Proto": {"https"}, "Cookie": {flow.Name + "=" + flow.Value}})
	if c := cookie(resp, "plaza_session"); !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" {
		t.Fatalf("session cookie behind https: %+v", c)
	}

	// A public URL on https makes every cookie Secure.
	e2 := newEnv(t, func(c *oauth.Config) { c.PublicURL = strings.Replace(c.PublicURL, "http://", "https://", 1) })
	resp = get(e2.url+"/_plaza/login/github", nil)
	if c := cookie(resp, "plaza_oauth_browser"); !c.Secure {
		t.Fatalf("flow cookie with an https public URL: %+v", c)
	}
}
