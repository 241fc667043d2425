package main

import (
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// allowPrivateLink finds the not-found page's "Allow access to private
// repositories" link.
var allowPrivateLink = regexp.MustCompile(`id="allow-private" href="([^"]+)"`)

// TestCommunityPrivateOptIn runs `plaza serve --demo` and signs alice-dev
// in on the web through the demo forge with the minimal scopes: the demo's
// private repository acme/gadget, which she administers, is absent to her —
// the not-found page, offering the opt-in, exactly as for a repository that
// does not exist, and no room — until she opts in through the forge's
// authorization again (the repo scope). Then her visit creates its room,
// and the Matrix client she signs in with SSO (a plain sign-in keeps the
// opted-in token) joins it; it is invite-only, and its page hers.
func TestCommunityPrivateOptIn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	// The browser is sent to the demo forge under the public URL, which
	// must be where the server listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	base := "http://" + addr
	srv := startServe(t, bin, []string{
		"PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=" + addr, "PLAZA_PUBLIC_URL=" + base,
		"PLAZA_SERVER_NAME=plaza.test", "PLAZA_RATE_LIMIT=false",
	}, "--demo")
	defer srv.stop(t)
	hs := homeserverClient{t: t, base: srv.url}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// get fetches u, following redirects within the site (the demo forge
	// is under it), and returns the last response and its body.
	get := func(u string) (*http.Response, string) {
		t.Helper()
		for range 10 {
			resp, err := browser.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode/100 != 3 || loc == "" {
				return resp, string(body)
			}
			next, err := resp.Request.URL.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			if next.Host != addr {
				t.Fatalf("redirected off the site: %s", next)
			}
			u = next.String()
		}
		t.Fatalf("too many redirects from %s", u)
		return nil, ""
	}
	// consent starts a flow at u, continues as alice-dev (id 1001) on the
	// demo forge's page, and follows the way back; it returns the forge's
	// authorization URL and where the browser ends up.
	consent := func(u string) (authorize *url.URL, resp *http.Response, body string) {
		t.Helper()
		resp, body = get(u)
		if !strings.Contains(resp.Request.URL.Path, "/_plaza/demo-forge/github/login/oauth/authorize") || !strings.Contains(body, "Continue as alice-dev") {
			t.Fatalf("%s did not reach the forge's page: %s %d", u, resp.Request.URL, resp.StatusCode)
		}
		authorize = resp.Request.URL
		form := authorize.Query()
		form.Set("user", "1001")
		post, err := browser.PostForm(base+authorize.Path, form)
		if err != nil {
			t.Fatal(err)
		}
		post.Body.Close()
		resp, body = get(post.Header.Get("Location"))
		return authorize, resp, body
	}
	scopes := func(authorize *url.URL) []string { return strings.Fields(authorize.Query().Get("scope")) }

	// Signed in with the minimal scopes: the private repository's page is
	// the not-found page, with the opt-in link, as for one that does not
	// exist.
	authorize, resp, body := consent(base + "/_plaza/login/demo?next=/acme/gadget")
	if got := scopes(authorize); slices.Contains(got, "repo") {
		t.Fatalf("sign-in asked for the repo scope: %v", got)
	}
	if resp.Request.URL.Path != "/acme/gadget" || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("alice-dev, not opted in, on /acme/gadget: %s %d", resp.Request.URL, resp.StatusCode)
	}
	m := allowPrivateLink.FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, "Allow access to private repositories") {
		t.Fatalf("the not-found page offers no opt-in:\n%s", body)
	}
	optIn := html.UnescapeString(m[1])
	if optIn != "/_plaza/login/demo?private=1&next=%2Facme%2Fgadget" {
		t.Errorf("opt-in link %q", optIn)
	}
	nope, nopeBody := get(base + "/acme/nope")
	if nope.StatusCode != http.StatusNotFound || allowPrivateLink.FindString(nopeBody) != strings.ReplaceAll(m[0], "gadget", "nope") {
		t.Errorf("a repository that does not exist answers otherwise: %d\n%s", nope.StatusCode, nopeBody)
	}
	anon, err := http.Get(base + "/acme/gadget")
	if err != nil {
		t.Fatal(err)
	}
	anonBody, _ := io.ReadAll(anon.Body)
	anon.Body.Close()
	if anon.StatusCode != http.StatusNotFound || allowPrivateLink.Match(anonBody) {
		t.Errorf("anonymous /acme/gadget: %d, opt-in offered: %v", anon.StatusCode, allowPrivateLink.Match(anonBody))
	}
	hs.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_gadget:plaza.test"), "", nil, http.StatusNotFound, nil)

	// She opts in: the forge is asked again, with the repo scope, and her
	// visit back creates the room. Its history is for its members only (the
	// web site's rule for rooms that are not world-readable); she is not
	// offered the opt-in again.
	authorize, resp, body = consent(base + optIn)
	if !slices.Contains(scopes(authorize), "repo") {
		t.Fatalf("the opt-in did not ask for the repo scope: %v", scopes(authorize))
	}
	if resp.Request.URL.Path != "/acme/gadget" || allowPrivateLink.MatchString(body) {
		t.Fatalf("alice-dev, opted in, on /acme/gadget: %s %d, opt-in offered again: %v", resp.Request.URL, resp.StatusCode, allowPrivateLink.MatchString(body))
	}
	// The forge vouches for her: the page offers the room's join button,
	// and nothing of its history yet.
	joinForm := regexp.MustCompile(`<form method="post" action="(/_plaza/rooms/[^"]+/join)">`).FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || joinForm == nil || strings.Contains(body, `id="composer"`) {
		t.Fatalf("alice-dev, opted in, on /acme/gadget: %d, join form %v:\n%s", resp.StatusCode, joinForm, body)
	}
	req, err := http.NewRequest("POST", base+html.UnescapeString(joinForm[1]), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", base)
	req.Header.Set("Referer", base+"/acme/gadget")
	post, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusSeeOther {
		t.Fatalf("joining from the page: %d", post.StatusCode)
	}
	if resp, body = get(base + "/acme/gadget"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="composer"`) {
		t.Fatalf("alice-dev, joined from the page, on /acme/gadget: %d, no composer:\n%s", resp.StatusCode, body)
	}

	// Her Matrix client signs in (the minimal scopes again; the opted-in
	// token is kept) and joins the room, which is invite-only.
	authorize, resp, _ = consent(base + "/_matrix/client/v3/login/sso/redirect/demo?redirectUrl=" + url.QueryEscape(base+"/_plaza/account?client=1"))
	if slices.Contains(scopes(authorize), "repo") {
		t.Errorf("a plain sign-in asked for the repo scope: %v", scopes(authorize))
	}
	token := resp.Request.URL.Query().Get("loginToken")
	if token == "" {
		t.Fatalf("SSO ended at %s without a login token", resp.Request.URL)
	}
	var login struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	hs.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": token}, http.StatusOK, &login)
	var joined struct {
		RoomID string `json:"room_id"`
	}
	hs.do("POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_gadget:plaza.test"), login.AccessToken, map[string]any{}, http.StatusOK, &joined)
	var rules struct {
		JoinRule string `json:"join_rule"`
	}
	hs.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(joined.RoomID)+"/state/m.room.join_rules/", login.AccessToken, nil, http.StatusOK, &rules)
	if rules.JoinRule != "invite" {
		t.Errorf("the private repository's room has join rule %q", rules.JoinRule)
	}
	// A member, she has its page now; it is still absent to anyone else.
	if resp, _ = get(base + "/acme/gadget"); resp.StatusCode != http.StatusOK {
		t.Errorf("alice-dev, a member, on /acme/gadget: %d", resp.StatusCode)
	}
	hs.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_gadget:plaza.test"), "", nil, http.StatusNotFound, nil)
}
