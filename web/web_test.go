package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/oauth"
	"plaza/peek"
	"plaza/peek/snapshot"
	"plaza/web"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// site is the real homeserver with previews, sign-in and the web site, on a
// real PostgreSQL database, listening on a random loopback port.
type site struct {
	t       testing.TB
	URL     string
	hs      *homeserver.Server
	pool    *pgxpool.Pool
	handler http.Handler
}

func newSite(t testing.TB, repos web.RepoRooms, mutate ...func(*web.Config)) *site {
	t.Helper()
	return startSite(t, storagetest.NewDB(t, storage.Migrations()), repos, mutate...)
}

// startSite starts a site on a database.
func startSite(t testing.TB, pool *pgxpool.Pool, repos web.RepoRooms, mutate ...func(*web.Config)) *site {
	t.Helper()
	hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(),
		Registration: "open", BcryptCost: bcrypt.MinCost}, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	// Wired as cmd/plaza wires it: the snapshot cache renders each event
	// once with the web renderer.
	renderer := web.NewRenderer()
	previews := peek.New(hs, peek.Config{Snapshot: snapshot.Config{Render: renderer.Render}})
	ts := httptest.NewUnstartedServer(nil)
	signIn, err := oauth.New(oauth.Config{PublicURL: "http://" + ts.Listener.Addr().String(), DataDir: t.TempDir(), Demo: true}, hs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := web.Config{Sessions: signIn, Repos: repos, Renderer: renderer}
	for _, m := range mutate {
		m(&cfg)
	}
	w, err := web.New(hs, previews.Cache(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := signIn.Handler(hs.Handler(previews.Routes, w.Routes))
	ts.Config.Handler = h
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(w.Close)
	return &site{t: t, URL: ts.URL, hs: hs, pool: pool, handler: h}
}

// client speaks the Matrix client API, or browses the site.
type client struct {
	t      testing.TB
	base   string
	token  string
	UserID string
	txn    atomic.Int64
}

func (s *site) register(name string) *client {
	s.t.Helper()
	c := &client{t: s.t, base: s.URL}
	var out struct {
		Token  string `json:"access_token"`
		UserID string `json:"user_id"`
	}
	c.json("POST", "/_matrix/client/v3/register", map[string]any{"username": name, "password": "secret-" + name,
		"auth": map[string]any{"type": "m.login.dummy"}}, &out)
	c.token, c.UserID = out.Token, out.UserID
	return c
}

// json makes a client API request that must succeed.
func (c *client) json(method, path string, body, out any) {
	c.t.Helper()
	js, err := json.Marshal(body)
	if err != nil {
		c.t.Fatal(err)
	}
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(js))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

// createRoom creates a room with the given history visibility.
func (c *client) createRoom(alias, name, topic, visibility string) string {
	c.t.Helper()
	var out struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "name": name, "topic": topic,
		"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "",
			"content": map[string]any{"history_visibility": visibility}}}}
	if alias != "" {
		body["room_alias_name"] = alias
	}
	c.json("POST", "/_matrix/client/v3/createRoom", body, &out)
	return out.RoomID
}

func (c *client) send(roomID string, content map[string]any) string {
	c.t.Helper()
	return c.sendType(roomID, "m.room.message", content)
}

func (c *client) sendType(roomID, typ string, content map[string]any) string {
	c.t.Helper()
	var out struct {
		EventID string `json:"event_id"`
	}
	c.json("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/t%d", url.PathEscape(roomID), typ, c.txn.Add(1)), content, &out)
	return out.EventID
}

func text(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

// get fetches a page anonymously (or with the headers given).
func (s *site) get(path string, header ...string) (int, string, http.Header) {
	s.t.Helper()
	req, err := http.NewRequest("GET", s.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func mustContain(t *testing.T, page string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

func mustNotContain(t *testing.T, page string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(page, b) {
			t.Errorf("page contains %q", b)
		}
	}
}

func TestRoomPageReadableWithoutJavaScript(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("acme_widget", "Widget chat", "All about <widgets>", "world_readable")
	bob := s.register("bob")
	bob.json("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)

	alice.send(roomID, text("hello see https://example.org/docs. ok"))
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "evil", "format": "org.matrix.custom.html",
		"formatted_body": `<b>bold</b><script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:alert(3)">js</a>` +
			`<pre><code class="language-go">func main() { return "x" }</code></pre>`})
	root := bob.send(roomID, text("thread root"))
	bob.send(roomID, map[string]any{"msgtype": "m.text", "body": "a reply in the thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	typo := alice.send(roomID, text("teh typo"))
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* the typo", "m.new_content": text("the fixed typo"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": typo}})
	secret := bob.send(roomID, text("regrettable words"))
	var red struct{}
	bob.json("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r1", url.PathEscape(roomID), url.PathEscape(secret)), map[string]any{}, &red)

	for _, path := range []string{"/room/" + url.PathEscape(roomID), "/room/" + url.PathEscape("#acme_widget:plaza.test"), "/acme/widget"} {
		status, page, h := s.get(path)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, page)
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: content type %q", path, h.Get("Content-Type"))
		}
		mustContain(t, page, "<h1>Widget chat</h1>", "All about &lt;widgets&gt;", "2 members", "#acme_widget:plaza.test",
			`<a href="https://example.org/docs"`, "<b>bold</b>", `<pre class="chroma">`, "thread root",
			"1 reply", "a reply in the thread", "the fixed typo", "(edited)", "Message deleted",
			`<time datetime="`, "Sign in with the demo forge", `<main id="room"`)
		mustNotContain(t, page, "<script>alert", "onerror", "javascript:", "regrettable words", "teh typo", `id="composer"`,
			"Older messages") // the whole history is on the page
		if strings.Count(page, "a reply in the thread") != 1 {
			t.Errorf("the thread reply shows %d times", strings.Count(page, "a reply in the thread"))
		}
	}
}

func TestRoomsThatAreNotWorldReadableAreNotFound(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	private := alice.createRoom("hidden", "Hidden", "", "shared")
	alice.send(private, text("members only"))

	_, missingPage, _ := s.get("/room/" + url.PathEscape("!nosuchroom:plaza.test"))
	for _, path := range []string{"/room/" + url.PathEscape(private), "/room/" + url.PathEscape("#hidden:plaza.test"),
		"/room/" + url.PathEscape("!nosuchroom:plaza.test"), "/room/garbage", "/room/" + url.PathEscape("#nope:plaza.test")} {
		status, page, _ := s.get(path)
		if status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, status)
		}
		mustNotContain(t, page, "members only", "Hidden")
		// Pages differ only in where sign-in returns to.
		if stripNext(page) != stripNext(missingPage) {
			t.Errorf("GET %s: the 404 differs from a missing room's, revealing that the room exists", path)
		}
	}
	// Its members read it (from storage); a signed-in stranger gets the
	// same 404 as anyone.
	status, page, h := s.get("/room/"+url.PathEscape(private), "Cookie", s.session(alice.UserID))
	if status != http.StatusOK || !strings.Contains(page, "members only") || !strings.Contains(page, `id="composer"`) ||
		!strings.Contains(h.Get("Cache-Control"), "no-store") {
		t.Errorf("a member's view of the private room: %d, Cache-Control %q", status, h.Get("Cache-Control"))
	}
	stranger := s.register("stranger")
	status, page, _ = s.get("/room/"+url.PathEscape(private), "Cookie", s.session(stranger.UserID))
	if status != http.StatusNotFound || strings.Contains(page, "members only") {
		t.Errorf("a stranger's view of the private room: %d", status)
	}

	for _, cookie := range []string{"", s.session(stranger.UserID)} {
		status, body, _ := s.get("/_plaza/rooms/"+url.PathEscape(private)+"/live", "Cookie", cookie)
		if status != http.StatusNotFound || !strings.Contains(body, `"M_NOT_FOUND"`) {
			t.Errorf("live stream of a private room for a non-member: %d %s", status, body)
		}
	}
}

var nextRE = regexp.MustCompile(`next=[^"]*`)

func stripNext(page string) string { return nextRE.ReplaceAllString(page, "next=") }

func TestRepositoryWithoutRoom(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	status, page, _ := s.get("/acme/nothing-yet")
	if status != http.StatusNotFound {
		t.Errorf("status %d, want 404", status)
	}
	mustContain(t, page, "There is no room for acme/nothing-yet yet", "Sign in with the demo forge", "/_plaza/login/demo?next=%2Facme%2Fnothing-yet")
	for _, path := range []string{"/acme/..", "/acme/a%20b", "/acme/" + strings.Repeat("x", 101)} {
		if status, page, _ := s.get(path); status != http.StatusNotFound || strings.Contains(page, "There is no room") {
			t.Errorf("%s: %d, want the plain 404", path, status)
		}
	}
	if n, err := s.hs.DB.ResolveAlias(context.Background(), "#acme_nothing-yet:plaza.test"); err == nil {
		t.Errorf("an anonymous visit created room %s", n)
	}
}

// repos is a RepoRooms that creates a room for signed-in viewers.
type repos struct {
	create func(forgePath string) string
	asked  atomic.Int64
}

func (r *repos) RepoRoom(_ context.Context, forgePath, viewer string) (string, error) {
	r.asked.Add(1)
	switch {
	case forgePath == "acme/missing":
		return "", web.ErrNoSuchRepo
	case forgePath == "acme/down":
		return "", fmt.Errorf("the forge is down: %w", web.ErrTryLater)
	case viewer == "":
		return "", web.ErrRoomNotCreated
	}
	return r.create(forgePath), nil
}

func TestRepoRoomsThroughTheCommunityService(t *testing.T) {
	t.Parallel()
	rr := &repos{}
	s := newSite(t, rr)
	alice := s.register("alice")
	rr.create = func(forgePath string) string { return alice.createRoom("", "Room of "+forgePath, "", "world_readable") }

	if status, page, _ := s.get("/acme/missing"); status != http.StatusNotFound || strings.Contains(page, "no room for") {
		t.Errorf("a repository the forge does not know: %d", status)
	}
	if status, page, h := s.get("/acme/down"); status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(page, "try again") {
		t.Errorf("the forge is down: %d", status)
	}
	if status, page, _ := s.get("/acme/rocket"); status != http.StatusNotFound || !strings.Contains(page, "There is no room for acme/rocket yet") {
		t.Errorf("anonymous visit: %d", status)
	}
	cookie := s.session(alice.UserID)
	status, page, _ := s.get("/acme/rocket", "Cookie", cookie)
	if status != http.StatusOK {
		t.Fatalf("signed-in visit: %d %s", status, page)
	}
	mustContain(t, page, "Room of acme/rocket", alice.UserID, `id="composer"`)

	// Later views of the repository's (world-readable) room come from
	// memory: the community service is not asked again.
	asked := rr.asked.Load()
	for _, path := range []string{"/acme/rocket", "/Acme/Rocket"} {
		if status, page, _ := s.get(path); status != http.StatusOK || !strings.Contains(page, "Room of acme/rocket") {
			t.Errorf("%s: %d", path, status)
		}
	}
	if n := rr.asked.Load() - asked; n != 0 {
		t.Errorf("the community service was asked %d more times", n)
	}
}

// session signs user in to the web site and returns the cookie header.
func (s *site) session(userID string) string {
	s.t.Helper()
	token := fmt.Sprintf("test-session-%d", time.Now().UnixNano())
	now := time.Now().UnixMilli()
	if err := s.hs.DB.CreateWebSession(context.Background(), token, userID, now+3600_000, now); err != nil {
		s.t.Fatal(err)
	}
	return "plaza_session=" + token
}

func TestWebRoutesLeaveMatrixPathsAlone(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	if status, body, _ := s.get("/_matrix/client/versions"); status != http.StatusOK || !strings.Contains(body, `"versions"`) {
		t.Errorf("/_matrix/client/versions: %d %s", status, body)
	}
	if status, body, _ := s.get("/_matrix/nothing"); status != http.StatusNotFound || !strings.Contains(body, "M_UNRECOGNIZED") {
		t.Errorf("/_matrix/nothing: %d %s", status, body)
	}
	if status, body, _ := s.get("/.well-known/matrix/client"); status == http.StatusOK && !strings.Contains(body, "m.homeserver") {
		t.Errorf("/.well-known/matrix/client: %d %s", status, body)
	}
	if status, body, _ := s.get("/_plaza/session"); status != http.StatusOK || !strings.Contains(body, `"signed_in"`) {
		t.Errorf("/_plaza/session: %d %s", status, body)
	}
	status, page, _ := s.get("/")
	if status != http.StatusOK || !strings.Contains(page, "<h1>Plaza</h1>") {
		t.Errorf("/: %d", status)
	}
}

var assetRE = regexp.MustCompile(`/_plaza/static/app\.[0-9a-f]{10}\.(css|js)`)

func TestStaticAssetsAreFingerprintedAndCached(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	_, page, _ := s.get("/")
	urls := assetRE.FindAllString(page, -1)
	if len(urls) != 2 {
		t.Fatalf("asset links %q, want a stylesheet and a script", urls)
	}
	for _, u := range urls {
		status, body, h := s.get(u)
		if status != http.StatusOK || body == "" || !strings.Contains(h.Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d, Cache-Control %q", u, status, h.Get("Cache-Control"))
		}
	}
	if status, _, _ := s.get("/_plaza/static/app.css"); status != http.StatusNotFound {
		t.Errorf("an unfingerprinted name: %d", status)
	}
}

// sse reads a Server-Sent Events stream.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

type sseMsg struct {
	id, event string
	data      map[string]any
}

func (s *site) live(t *testing.T, roomID string, header ...string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL+"/_plaza/rooms/"+url.PathEscape(roomID)+"/live", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next message that has data (skipping comments and
// retry hints).
func (e *sse) next(t *testing.T) sseMsg {
	t.Helper()
	var m sseMsg
	for {
		line, err := e.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if m.data != nil || m.event != "" {
				return m
			}
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &m.data); err != nil {
				t.Fatalf("data %q: %v", line, err)
			}
		}
	}
}

func TestLiveStream(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("live", "Live", "", "world_readable")
	first := alice.send(roomID, text("before anyone watched"))
	_, page, _ := s.get("/room/" + url.PathEscape(roomID))
	mustContain(t, page, "before anyone watched")

	a := s.live(t, roomID)
	b := s.live(t, roomID)
	hello := alice.send(roomID, text("hello **live**"))
	var helloID string
	for _, v := range []*sse{a, b} {
		m := v.next(t)
		if m.data["event_id"] != hello || m.data["type"] != "m.room.message" || m.id == "" {
			t.Fatalf("live message %+v, want %s", m, hello)
		}
		if html, _ := m.data["html"].(string); !strings.Contains(html, "hello **live**") || !strings.Contains(html, `id="`+hello+`"`) {
			t.Errorf("live html %q", html)
		}
		helloID = m.id
	}
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* hello", "m.new_content": text("hello, edited"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": hello}})
	m := a.next(t)
	if m.data["replaces"] != hello || !strings.Contains(m.data["html"].(string), "hello, edited") {
		t.Errorf("edit: %+v", m.data)
	}
	var red struct{}
	alice.json("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r1", url.PathEscape(roomID), url.PathEscape(first)), map[string]any{}, &red)
	if m := a.next(t); m.data["redacts"] != first {
		t.Errorf("redaction: %+v", m.data)
	}

	// Resuming after the first live message replays what followed it.
	c := s.live(t, roomID, "Last-Event-ID", helloID)
	if m := c.next(t); m.data["replaces"] != hello {
		t.Errorf("resumed stream starts with %+v, want the edit", m.data)
	}
	if m := c.next(t); m.data["redacts"] != first {
		t.Errorf("resumed stream's second message %+v, want the redaction", m.data)
	}

	if status, body, _ := s.get("/_plaza/rooms/"+url.PathEscape(roomID)+"/live", "Last-Event-ID", "yesterday"); status != http.StatusBadRequest || !strings.Contains(body, "M_INVALID_PARAM") {
		t.Errorf("a bad Last-Event-ID: %d %s", status, body)
	}
}

func TestMembersLiveStreamOfAPrivateRoom(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("", "Private", "", "shared")
	bob := s.register("bob")
	alice.json("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": bob.UserID}, nil)
	bob.json("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)
	missed := alice.send(roomID, text("said before bob looked"))
	_, page, _ := s.get("/room/"+url.PathEscape(roomID), "Cookie", s.session(bob.UserID))
	mustContain(t, page, "said before bob looked")
	i := strings.Index(page, `data-pos="`)
	pos := page[i+len(`data-pos="`):]
	pos = pos[:strings.Index(pos, `"`)]

	// Resuming from before the last message replays it; then new ones come.
	before, err := strconv.ParseInt(pos, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	stream := s.live(t, roomID, "Cookie", s.session(bob.UserID), "Last-Event-ID", strconv.FormatInt(before-1, 10))
	if m := stream.next(t); m.data["event_id"] != missed {
		t.Errorf("catch-up %+v, want %s", m.data, missed)
	}
	hello := alice.send(roomID, text("hello, members"))
	m := stream.next(t)
	if m.data["event_id"] != hello || !strings.Contains(m.data["html"].(string), "hello, members") {
		t.Fatalf("live message %+v", m.data)
	}
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* hello", "m.new_content": text("hello, edited for members"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": hello}})
	if m := stream.next(t); m.data["replaces"] != hello || !strings.Contains(m.data["html"].(string), "hello, edited for members") {
		t.Errorf("edit %+v", m.data)
	}

	// Leaving ends the stream.
	bob.json("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{}, nil)
	for {
		line, err := stream.r.ReadString('\n')
		if err != nil {
			break // closed
		}
		if strings.Contains(line, "after bob left") {
			t.Fatal("a former member still receives the room's messages")
		}
		if strings.Contains(line, `"membership":"leave"`) {
			alice.send(roomID, text("after bob left"))
		}
	}
}

// post submits the composer's or join button's form.
func (s *site) post(path, cookie, origin string, form url.Values, accept string) (int, string, http.Header) {
	s.t.Helper()
	req, err := http.NewRequest("POST", s.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestComposer(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("talk", "Talk", "", "world_readable")
	bob := s.register("bob")
	cookie := s.session(bob.UserID)
	send := "/_plaza/rooms/" + url.PathEscape(roomID) + "/send"
	join := "/_plaza/rooms/" + url.PathEscape(roomID) + "/join"
	msg := url.Values{"body": {"hi from the web"}}

	// Not signed in, another site, not a member: refused, nothing sent.
	for _, c := range []struct {
		name, cookie, origin, path string
		status                     int
		errcode                    string
	}{
		{"anonymous", "", s.URL, send, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"cross-site", cookie, "https://evil.example", send, http.StatusForbidden, "M_FORBIDDEN"},
		{"no origin", cookie, "", send, http.StatusForbidden, "M_FORBIDDEN"},
		{"not a member", cookie, s.URL, send, http.StatusForbidden, "M_FORBIDDEN"},
		{"cross-site join", cookie, "https://evil.example", join, http.StatusForbidden, "M_FORBIDDEN"},
	} {
		status, body, _ := s.post(c.path, c.cookie, c.origin, msg, "")
		if status != c.status || !strings.Contains(body, c.errcode) {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, body, c.status, c.errcode)
		}
	}
	_, page, _ := s.get("/room/"+url.PathEscape(roomID), "Cookie", cookie)
	mustContain(t, page, "Join this room")
	mustNotContain(t, page, "hi from the web", `id="composer"`)

	status, _, h := s.post(join, cookie, s.URL, nil, "")
	if status != http.StatusSeeOther || h.Get("Location") != "/room/"+url.PathEscape(roomID) {
		t.Fatalf("join: %d %s", status, h.Get("Location"))
	}
	_, page, _ = s.get("/room/"+url.PathEscape(roomID), "Cookie", cookie)
	mustContain(t, page, `id="composer"`, `<label for="body">`, "2 members")

	for _, c := range []struct {
		name    string
		form    url.Values
		status  int
		errcode string
	}{
		{"empty", url.Values{"body": {"  \n "}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"too long", url.Values{"body": {strings.Repeat("x", 17<<10)}}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"far too long", url.Values{"body": {strings.Repeat("x", 64<<10)}}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	} {
		status, body, _ := s.post(send, cookie, s.URL, c.form, "")
		if status != c.status || !strings.Contains(body, c.errcode) {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, body, c.status, c.errcode)
		}
	}

	status, body, _ := s.post(send, cookie, s.URL, msg, "application/json")
	var sent struct {
		EventID string `json:"event_id"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &sent) != nil || sent.EventID == "" {
		t.Fatalf("send: %d %s", status, body)
	}
	if status, body, _ := s.post(send, cookie, s.URL, url.Values{"body": {"**bold** from the `web`"}}, "application/json"); status != http.StatusOK {
		t.Fatalf("markdown send: %d %s", status, body)
	}
	status, _, h = s.post(send, cookie, s.URL, url.Values{"body": {"and without script"}}, "")
	if status != http.StatusSeeOther {
		t.Fatalf("form send: %d", status)
	}
	_, page, _ = s.get(h.Get("Location"))
	mustContain(t, page, "hi from the web", "and without script", `id="`+sent.EventID+`"`, "<strong>bold</strong> from the <code>web</code>")

	// The redirect goes back to the form's page on this site, never elsewhere.
	for referer, want := range map[string]string{
		s.URL + "/acme/widget":      "/acme/widget",
		s.URL + "//evil.example/x":  "/room/" + url.PathEscape(roomID),
		s.URL + "/\\evil.example/x": "/room/" + url.PathEscape(roomID),
		"https://evil.example/x":    "/room/" + url.PathEscape(roomID),
	} {
		req, _ := http.NewRequest("POST", s.URL+send, strings.NewReader(url.Values{"body": {"again"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Origin", s.URL)
		req.Header.Set("Referer", referer)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || got != want {
			t.Errorf("Referer %s: %d, redirected to %q, want %q", referer, resp.StatusCode, got, want)
		}
	}
}

func TestJoinAsksTheJoinGate(t *testing.T) {
	t.Parallel()
	var asked atomic.Int64
	s := newSite(t, nil, func(c *web.Config) {
		c.JoinGate = func(_ context.Context, roomID, userID string) error {
			asked.Add(1)
			if strings.HasPrefix(userID, "@carol:") {
				return httpapi.Forbidden("carol may not join")
			}
			return nil
		}
	})
	alice := s.register("alice")
	roomID := alice.createRoom("gated", "Gated", "", "world_readable")
	join := "/_plaza/rooms/" + url.PathEscape(roomID) + "/join"
	carol, bob := s.register("carol"), s.register("bob")
	if status, body, _ := s.post(join, s.session(carol.UserID), s.URL, nil, "application/json"); status != http.StatusForbidden || !strings.Contains(body, "carol may not join") {
		t.Errorf("a join the gate refuses: %d %s", status, body)
	}
	if status, body, _ := s.post(join, s.session(bob.UserID), s.URL, nil, "application/json"); status != http.StatusOK {
		t.Errorf("a join the gate allows: %d %s", status, body)
	}
	if asked.Load() != 2 {
		t.Errorf("the gate was asked %d times, want 2", asked.Load())
	}
	if m, _ := s.hs.Rooms.Membership(context.Background(), roomID, carol.UserID); m != "" {
		t.Errorf("carol's membership is %q after a refused join", m)
	}

	// A room that is not world-readable is joined from the web only if
	// the gate lets one in and the room's rules then do (a private
	// repository's room: the gate invites); otherwise it does not exist.
	var closed struct {
		RoomID string `json:"room_id"`
	}
	alice.json("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Closed"}, &closed)
	closedJoin := "/_plaza/rooms/" + url.PathEscape(closed.RoomID) + "/join"
	if status, body, _ := s.post(closedJoin, s.session(bob.UserID), s.URL, nil, "application/json"); status != http.StatusNotFound || !strings.Contains(body, "M_NOT_FOUND") {
		t.Errorf("joining an invite-only room from the web, uninvited: %d %s", status, body)
	}
	if status, body, _ := s.post(closedJoin, s.session(carol.UserID), s.URL, nil, "application/json"); status != http.StatusNotFound || !strings.Contains(body, "M_NOT_FOUND") {
		t.Errorf("joining an invite-only room the gate refuses: %d %s", status, body)
	}
	alice.json("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(closed.RoomID)+"/invite", map[string]any{"user_id": bob.UserID}, nil)
	if status, body, _ := s.post(closedJoin, s.session(bob.UserID), s.URL, nil, "application/json"); status != http.StatusOK {
		t.Errorf("joining an invite-only room, invited: %d %s", status, body)
	}
	if m, _ := s.hs.Rooms.Membership(context.Background(), closed.RoomID, bob.UserID); m != "join" {
		t.Errorf("bob's membership of the closed room is %q", m)
	}
}

func TestOlderMessages(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("busy", "Busy", "", "world_readable")
	for i := range 120 {
		alice.send(roomID, text(fmt.Sprintf("message number %03d", i)))
	}
	_, page, _ := s.get("/room/" + url.PathEscape(roomID))
	mustContain(t, page, "message number 119", "Older messages")
	mustNotContain(t, page, "message number 050")
	i := strings.Index(page, `href="?before=`)
	if i < 0 {
		t.Fatal("no link to older messages")
	}
	older := page[i+len(`href="`):]
	older = older[:strings.Index(older, `"`)]
	status, page2, _ := s.get("/room/" + url.PathEscape(roomID) + older)
	if status != http.StatusOK {
		t.Fatalf("older page: %d", status)
	}
	mustContain(t, page2, "message number 069", "message number 020", "Latest messages")
	mustNotContain(t, page2, "message number 070", "message number 119")

	status, frag, h := s.get("/room/" + url.PathEscape(roomID) + older + "&fragment=1")
	if status != http.StatusOK || strings.Contains(frag, "<html") || !strings.Contains(frag, "message number 069") || !strings.HasPrefix(h.Get("X-Plaza-Older"), "?before=") {
		t.Errorf("fragment: %d %q", status, h.Get("X-Plaza-Older"))
	}
	// A permalink lands on the page that ends with the message.
	target := s.messageID(t, roomID, "message number 042")
	status, page3, _ := s.get("/room/" + url.PathEscape(roomID) + "?at=" + url.QueryEscape(target))
	if status != http.StatusOK {
		t.Fatalf("permalink: %d", status)
	}
	mustContain(t, page3, `id="`+target+`"`, "message number 042", "message number 000")
	mustNotContain(t, page3, "message number 043")
	if status, _, _ := s.get("/room/" + url.PathEscape(roomID) + "?at=" + url.QueryEscape("$nosuchevent")); status != http.StatusNotFound {
		t.Errorf("a permalink to nothing: %d", status)
	}
	if status, _, _ := s.get("/room/" + url.PathEscape(roomID) + "?before=soon"); status != http.StatusNotFound {
		t.Errorf("a bad position: %d", status)
	}
}

// messageID finds a message's event ID by its body through /messages.
func (s *site) messageID(t *testing.T, roomID, body string) string {
	t.Helper()
	c := &client{t: t, base: s.URL, token: s.register(fmt.Sprintf("finder%d", time.Now().UnixNano()%1e9)).token}
	var out struct {
		Chunk []struct {
			EventID string `json:"event_id"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"chunk"`
	}
	c.json("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=500", nil, &out)
	for _, e := range out.Chunk {
		if e.Content.Body == body {
			return e.EventID
		}
	}
	t.Fatalf("no message %q", body)
	return ""
}

// TestPageWeight reports the room page's weight with 50 messages (a figure,
// not an assertion on time).
func TestPageWeight(t *testing.T) {
	t.Parallel()
	s := newSite(t, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("heavy", "Heavy", "A room full of typical messages", "world_readable")
	for i := range 50 {
		alice.send(roomID, text(fmt.Sprintf("message %d: a typical chat line of moderate length, with a link https://example.org/issue/%d", i, i)))
	}
	_, page, _ := s.get("/room/" + url.PathEscape(roomID))
	total := len(page)
	for _, u := range assetRE.FindAllString(page, -1) {
		_, body, _ := s.get(u)
		total += len(body)
	}
	_, gzPage, h := s.get("/room/"+url.PathEscape(roomID), "Accept-Encoding", "gzip")
	if h.Get("Content-Encoding") != "gzip" {
		t.Errorf("the page is not compressed: Content-Encoding %q", h.Get("Content-Encoding"))
	}
	wire := len(gzPage)
	for _, u := range assetRE.FindAllString(page, -1) {
		_, body, h := s.get(u, "Accept-Encoding", "gzip")
		if h.Get("Content-Encoding") != "gzip" {
			t.Errorf("%s is not compressed", u)
		}
		wire += len(body)
	}
	t.Logf("room page with 50 messages: HTML %d bytes, with CSS and JS %d bytes; gzipped on the wire %d bytes (budget 60 KB)", len(page), total, wire)
	if total > 60<<10 {
		t.Errorf("page weight %d bytes is over the 60 KB budget", total)
	}
}
