package main

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// findChromium returns the Chromium the browser tests drive, found as
// scripts/ensure-chromium.sh finds it. Without one the test fails, saying
// how to get one: a browser test that silently skipped would prove nothing.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PLAZA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found (looked for $PLAZA_CHROMIUM, chromium, chromium-browser, google-chrome): " +
		"run scripts/ensure-chromium.sh (make test does), or go test -short to skip the browser tests")
	return ""
}

// newChromium starts a headless Chromium and returns a tab's context.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findChromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		// Tests run as root in CI containers, where Chromium's sandbox
		// cannot start; the pages it opens are our own.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// Start the browser now, with no deadline (a deadline on the first
	// call would bound the browser's life), so a Chromium that cannot run
	// fails here with its own error.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// xpath selects by XPath, as DOM.performSearch does.
func xpath(q string) chromedp.Search { return chromedp.Search(q) }

// TestChromiumSignIn tries Plaza as a newcomer would after `make run`: the
// real binary in demo mode (no forge configured, the demo forge offered),
// and a real headless Chromium that opens a repository's page, signs in
// there through the demo forge's consent page, and comes back signed in
// (the session cookie set, the page showing the user) to the repository's
// room, created by that visit. Then, as a Matrix client would, it signs in
// with SSO and confirms a device deletion on the m.login.sso fallback page,
// whose completion script must run under the page's
// Content-Security-Policy; and it signs out.
func TestChromiumSignIn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, runs PostgreSQL and Chromium; skipped with -short")
	}
	ctx := newChromium(t)
	bin := buildPlaza(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	// As `make run`: open registration and --demo, the server named after
	// where it listens on localhost (its default is localhost:8008; a test
	// takes a free port).
	host := "localhost:" + port
	srv := startServe(t, bin, []string{
		"PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=127.0.0.1:" + port,
		"PLAZA_SERVER_NAME=" + host, "PLAZA_REGISTRATION=open",
	}, "--demo")
	base := "http://" + host
	userID := "@alice-dev:" + host

	// A newcomer opens a repository of the demo forge that has no room yet:
	// the page says so and offers sign-in, creating nothing.
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/acme/widget"),
		chromedp.WaitVisible(xpath(`//p[contains(., "There is no room for acme/widget yet")]`)),
	)
	if err != nil {
		t.Fatalf("anonymous visit to /acme/widget: %v", err)
	}
	// (Not checked through the client API: an alias lookup is one of the
	// ways that create the room.)
	hs := homeserverClient{t: t, base: srv.url}
	alias := "/_matrix/client/v3/directory/room/" + url.PathEscape("#acme_widget:"+host)

	// Sign in with the demo forge: its consent page lets one pick a demo
	// user; back on the repository's page, signed in, the room exists.
	err = chromedp.Do(ctx,
		chromedp.Click(xpath(`//a[contains(., "Sign in with the demo forge")]`)),
		chromedp.WaitVisible(xpath(`//h1[contains(., "Sign in to Demo forge")]`)),
		chromedp.Click(xpath(`//button[contains(., "Continue as alice-dev")]`)),
		chromedp.WaitVisible(chromedp.CSS("main#room")),
	)
	if err != nil {
		t.Fatalf("signing in from /acme/widget in Chromium: %v", err)
	}
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	roomAttr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("main#room"), "data-room"))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main#room .topic")))
	if err != nil {
		t.Fatal(err)
	}
	header, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("header")))
	if err != nil {
		t.Fatal(err)
	}
	var resolved struct {
		RoomID string `json:"room_id"`
	}
	hs.do("GET", alias, "", nil, http.StatusOK, &resolved)
	if location != base+"/acme/widget" || !strings.HasPrefix(roomAttr.Value, "!") || roomAttr.Value != resolved.RoomID ||
		!strings.HasPrefix(topic, "Widgets for everyone") || !strings.Contains(header, userID) {
		t.Fatalf("after sign-in: at %s, room %q (alias: %q), topic %q, header %q", location, roomAttr.Value, resolved.RoomID, topic, header)
	}

	// The account page says who is signed in.
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/_plaza/account"),
		chromedp.WaitVisible(chromedp.CSS("#signed-in-user")),
	)
	if err != nil {
		t.Fatalf("account page: %v", err)
	}
	who, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#signed-in-user")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(who, "Alice Developer") || !strings.Contains(who, userID) {
		t.Fatalf("the account page says %q", who)
	}
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "plaza_session" {
			session = c
		}
	}
	// Served over plain http on localhost, so not Secure (TestSecureCookies
	// in package oauth covers https).
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteLax || session.Secure || session.Path != "/" {
		t.Fatalf("session cookie %+v (all: %+v)", session, cookies.Cookies)
	}

	// A Matrix client's SSO: the redirect comes back to Plaza itself (so no
	// confirmation page), with a login token in the URL.
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/_matrix/client/v3/login/sso/redirect/demo?redirectUrl="+url.QueryEscape(base+"/_plaza/account?client=1")),
		chromedp.WaitVisible(xpath(`//h1[contains(., "Sign in to Demo forge")]`)),
		chromedp.Click(xpath(`//button[contains(., "Continue as alice-dev")]`)),
		chromedp.WaitVisible(chromedp.CSS("#signed-in-user")),
	)
	if err != nil {
		t.Fatalf("SSO in Chromium: %v", err)
	}
	if location, err = chromedp.Run(ctx, chromedp.Location()); err != nil {
		t.Fatal(err)
	}
	back, err := url.Parse(location)
	if err != nil || back.Query().Get("client") != "1" || back.Query().Get("loginToken") == "" {
		t.Fatalf("SSO came back to %q", location)
	}
	var login struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
		DeviceID    string `json:"device_id"`
	}
	hs.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": back.Query().Get("loginToken")}, http.StatusOK, &login)
	var whoami struct {
		UserID string `json:"user_id"`
	}
	hs.do("GET", "/_matrix/client/v3/account/whoami", login.AccessToken, nil, http.StatusOK, &whoami)
	if login.UserID != userID || whoami.UserID != userID {
		t.Fatalf("SSO signed in %s, whoami %s", login.UserID, whoami.UserID)
	}

	// Deleting the device needs user-interactive auth; the account has no
	// password, so it is the m.login.sso stage, in the browser.
	var challenge struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	deletePath := "/_matrix/client/v3/devices/" + url.PathEscape(login.DeviceID)
	hs.do("DELETE", deletePath, login.AccessToken, map[string]any{}, http.StatusUnauthorized, &challenge)
	if len(challenge.Flows) != 1 || strings.Join(challenge.Flows[0].Stages, ",") != "m.login.sso" {
		t.Fatalf("flows %+v", challenge.Flows)
	}
	// An embedded browser defines onAuthDone (spec: Fallback).
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: `window.onAuthDone = () => { window.plazaAuthDone = true; };`}); err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/_matrix/client/v3/auth/m.login.sso/fallback/web?session="+url.QueryEscape(challenge.Session)),
		chromedp.WaitVisible(xpath(`//p[contains(., "remove devices from your account")]`)),
		chromedp.Click(xpath(`//a[contains(., "Confirm with Demo forge")]`)),
		chromedp.WaitVisible(xpath(`//h1[contains(., "Sign in to Demo forge")]`)),
		chromedp.Click(xpath(`//button[contains(., "Continue as alice-dev")]`)),
		chromedp.WaitVisible(xpath(`//h1[contains(., "Confirmed")]`)),
	)
	if err != nil {
		t.Fatalf("m.login.sso fallback in Chromium: %v", err)
	}
	done, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.plazaAuthDone === true`))
	if err != nil || !done {
		t.Fatalf("the completion page did not call window.onAuthDone (blocked by its Content-Security-Policy?): %v", err)
	}
	hs.do("DELETE", deletePath, login.AccessToken, map[string]any{"auth": map[string]any{"session": challenge.Session}}, http.StatusOK, nil)
	hs.do("GET", "/_matrix/client/v3/account/whoami", login.AccessToken, nil, http.StatusUnauthorized, nil)

	// Sign out of the web site.
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/_plaza/account"),
		chromedp.Click(xpath(`//button[contains(., "Sign out")]`)),
		chromedp.WaitVisible(xpath(`//a[contains(., "Sign in with Demo forge")]`)),
	)
	if err != nil {
		t.Fatalf("sign-out in Chromium: %v", err)
	}
	cookies, err = chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies.Cookies {
		if c.Name == "plaza_session" {
			t.Fatalf("session cookie kept after sign-out: %+v", c)
		}
	}
	srv.stop(t)
}
