package web_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds the browser the way scripts/ensure-chromium.sh (run by
// `make test`) does: $PLAZA_CHROMIUM, then the usual names on $PATH. Without
// one the test fails; -short skips it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no browser tests")
	}
	if p := os.Getenv("PLAZA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: run scripts/ensure-chromium.sh (make test does) or set PLAZA_CHROMIUM")
	return ""
}

// browser starts a headless Chromium; javascript false disables scripts.
func browser(t *testing.T, javascript bool) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	if !javascript {
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
	}
	return ctx
}

// waitText waits until the page's message list contains want.
func waitText(ctx context.Context, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		text, err := chromedp.Run(ctx, chromedp.TextContent("#timeline"))
		if err != nil {
			return err
		}
		if strings.Contains(text, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestBrowserSeesMessagesLive is the proof: a headless Chromium
// opens a room page and sees the last messages, then sees a message sent
// through the client API appear live, and, with JavaScript disabled, sees
// it after a reload.
func TestBrowserSeesMessagesLive(t *testing.T) {
	chromiumPath(t) // fails early when there is no browser
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("browsed", "Browsed room", "Read me in a browser", "world_readable")
	earlier := alice.send(roomID, text("an earlier message"))
	latest := alice.send(roomID, text("the latest message before the visit"))
	page := s.URL + "/room/" + url.PathEscape(roomID)

	ctx := browser(t, true)
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible("#timeline")); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	heading, err := chromedp.Run(ctx, chromedp.Text("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if heading != "Browsed room" || !strings.Contains(title, "Browsed room") {
		t.Errorf("heading %q, title %q", heading, title)
	}
	if err := waitText(ctx, "the latest message before the visit", 5*time.Second); err != nil {
		t.Fatalf("the last messages are not on the page: %v", err)
	}
	// The script marks the page once its live stream is open (the server
	// answers only after registering the viewer).
	if err := chromedp.Do(ctx, chromedp.WaitVisible(`#room[data-connected="1"]`)); err != nil {
		t.Fatalf("the page never opened its live stream: %v", err)
	}

	sent := time.Now()
	alice.send(roomID, text("sent live through the client API"))
	// The issue asks for under a second; the wait is longer so that a
	// loaded machine does not fail the test, and the figure is logged.
	if err := waitText(ctx, "sent live through the client API", 10*time.Second); err != nil {
		t.Fatalf("the live message never appeared: %v", err)
	}
	t.Logf("live message appeared in the browser %v after the client API returned", time.Since(sent).Round(time.Millisecond))

	// Edits and redactions show live too.
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* fixed", "m.new_content": text("the latest message, edited live"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": latest}})
	if err := waitText(ctx, "the latest message, edited live", 10*time.Second); err != nil {
		t.Errorf("the edit never showed: %v", err)
	}
	var red struct{}
	alice.json("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r1", url.PathEscape(roomID), url.PathEscape(earlier)), map[string]any{}, &red)
	if err := waitText(ctx, "Message deleted", 10*time.Second); err != nil {
		t.Errorf("the redaction never showed: %v", err)
	}

	noJS := browser(t, false)
	if err := chromedp.Do(noJS, chromedp.Navigate(page), chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(noJS, chromedp.TextContent("#timeline"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "sent live through the client API") || !strings.Contains(text, "the latest message, edited live") ||
		strings.Contains(text, "an earlier message") {
		t.Errorf("without JavaScript, after a reload, the page shows %q", text)
	}
}

// TestBrowserLoadsOlderMessagesOnScroll scrolls to the top of a long room's
// page and sees older messages come in.
func TestBrowserLoadsOlderMessagesOnScroll(t *testing.T) {
	chromiumPath(t)
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("long", "Long room", "", "world_readable")
	for i := range 120 {
		alice.send(roomID, text(fmt.Sprintf("message number %03d", i)))
	}
	ctx := browser(t, true)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/room/"+url.PathEscape(roomID)), chromedp.WaitVisible("#timeline")); err != nil {
		t.Fatal(err)
	}
	if err := waitText(ctx, "message number 119", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	first, err := chromedp.Run(ctx, chromedp.TextContent("#timeline"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(first, "message number 030") {
		t.Fatal("the first screen already holds old messages; the test proves nothing")
	}
	// Each page of older messages loads when the top comes into view.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any]("window.scrollTo(0, 0)")); err != nil {
			t.Fatal(err)
		}
		if waitText(ctx, "message number 000", 300*time.Millisecond) == nil {
			break
		}
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(ctx, chromedp.TextContent("#timeline"))
			t.Fatalf("older messages never loaded; the list starts %q", text[:min(len(text), 200)])
		}
	}
}

// TestBrowserComposer signs a member in (a session cookie), writes a
// message in the page's composer and sees it arrive through the live stream
// without a reload.
func TestBrowserComposer(t *testing.T) {
	chromiumPath(t)
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("chat", "Chat", "", "world_readable")
	alice.send(roomID, text("say something"))
	cookie := strings.TrimPrefix(s.session(alice.UserID), "plaza_session=")

	ctx := browser(t, true)
	if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: "plaza_session", Value: cookie, URL: s.URL + "/"}); err != nil {
		t.Fatal(err)
	}
	page := s.URL + "/room/" + url.PathEscape(roomID)
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(`#room[data-connected="1"]`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys("#body", "typed **in the page**"), chromedp.Click(`#composer button`)); err != nil {
		t.Fatal(err)
	}
	if err := waitText(ctx, "typed in the page", 10*time.Second); err != nil {
		t.Fatalf("the composed message never showed: %v", err)
	}
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("timeline").innerHTML`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html, "<strong>in the page</strong>") {
		t.Errorf("the message's markdown was not rendered: %s", html)
	}
	box, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("body").value`))
	if err != nil || box != "" {
		t.Errorf("the composer was not cleared: %q %v", box, err)
	}
	url2, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	if err != nil || url2 != page {
		t.Errorf("the page was left: %q", url2)
	}
}
