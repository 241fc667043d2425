package homeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// testServer is a real homeserver on a real PostgreSQL database, listening
// on a random loopback port.
type testServer struct {
	t   *testing.T
	URL string
	hs  *homeserver.Server
}

func newServer(t *testing.T, mutate ...func(*homeserver.Config)) *testServer {
	t.Helper()
	pool := storagetest.NewDB(t, storage.Migrations())
	cfg := homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(), Registration: "open", BcryptCost: bcrypt.MinCost}
	for _, m := range mutate {
		m(&cfg)
	}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(hs.Handler())
	t.Cleanup(ts.Close)
	return &testServer{t: t, URL: ts.URL, hs: hs}
}

// client is a Matrix client speaking HTTP to the test server.
type client struct {
	t      *testing.T
	base   string
	token  string
	UserID string
	Device string
	txn    atomic.Int64
}

type response struct {
	Status int
	Body   map[string]any
	Raw    []byte
}

func (r response) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

func (c *client) do(method, path string, body any) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

// must performs a request that has to succeed.
func (c *client) must(method, path string, body any) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != 200 {
		c.t.Fatalf("%s %s = %d %s", method, path, r.Status, r.Raw)
	}
	return r
}

// fails performs a request that must fail with status and errcode.
func (c *client) fails(status int, errcode, method, path string, body any) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != status || r.str("errcode") != errcode {
		c.t.Fatalf("%s %s = %d %s, want %d %s", method, path, r.Status, r.Raw, status, errcode)
	}
	return r
}

func (s *testServer) anon() *client { return &client{t: s.t, base: s.URL} }

func (s *testServer) register(name string) *client {
	s.t.Helper()
	c := s.anon()
	r := c.must("POST", "/_matrix/client/v3/register", map[string]any{
		"username": name, "password": "secret-" + name, "auth": map[string]any{"type": "m.login.dummy"}})
	c.token, c.UserID, c.Device = r.str("access_token"), r.str("user_id"), r.str("device_id")
	return c
}

func (c *client) send(roomID string, content map[string]any) string {
	c.t.Helper()
	return c.sendType(roomID, "m.room.message", content)
}

func (c *client) sendType(roomID, typ string, content map[string]any) string {
	c.t.Helper()
	txn := fmt.Sprintf("t%d-%d", time.Now().UnixNano(), c.txn.Add(1))
	r := c.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/"+typ+"/"+txn, content)
	return r.str("event_id")
}

func text(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func (c *client) sync(since string, timeoutMS int) response {
	c.t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeoutMS)}}
	if since != "" {
		q.Set("since", since)
	}
	return c.must("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
}

// timeline extracts a joined room's timeline events from a sync response.
func timeline(r response, roomID string) []map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.(map[string]any))
	}
	return out
}

func bodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		if c, ok := e["content"].(map[string]any); ok {
			if b, ok := c["body"].(string); ok {
				out = append(out, b)
			}
		}
	}
	return out
}

func TestVersionsAndDiscovery(t *testing.T) {
	s := newServer(t)
	c := s.anon()
	r := c.must("GET", "/_matrix/client/versions", nil)
	if !strings.Contains(string(r.Raw), `"v1.19"`) {
		t.Fatalf("versions: %s", r.Raw)
	}
	c.must("GET", "/.well-known/matrix/client", nil)
	c.fails(401, "M_MISSING_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)
	c.token = "nope"
	c.fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)
	c.fails(404, "M_UNRECOGNIZED", "GET", "/_matrix/client/v3/nonsense", nil)
	// CORS preflight.
	req, _ := http.NewRequest("OPTIONS", s.URL+"/_matrix/client/v3/sync", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("CORS headers missing: %v", resp.Header)
	}
}

func TestAccounts(t *testing.T) {
	s := newServer(t)
	anon := s.anon()
	// UIA: the first request gets the flows.
	r := anon.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "alice", "password": "pw"})
	if r.Status != 401 || r.Body["flows"] == nil || r.str("session") == "" {
		t.Fatalf("register without auth: %d %s", r.Status, r.Raw)
	}
	alice := s.register("alice")
	if alice.UserID != "@alice:plaza.test" || alice.token == "" {
		t.Fatalf("register: %+v", alice)
	}
	anon.fails(400, "M_USER_IN_USE", "GET", "/_matrix/client/v3/register/available?username=alice", nil)
	anon.must("GET", "/_matrix/client/v3/register/available?username=bob", nil)
	anon.fails(400, "M_INVALID_USERNAME", "GET", "/_matrix/client/v3/register/available?username=b%20ob", nil)
	anon.fails(400, "M_USER_IN_USE", "POST", "/_matrix/client/v3/register", map[string]any{
		"username": "alice", "password": "x", "auth": map[string]any{"type": "m.login.dummy"}})

	who := alice.must("GET", "/_matrix/client/v3/account/whoami", nil)
	if who.str("user_id") != alice.UserID || who.str("device_id") != alice.Device {
		t.Fatalf("whoami: %s", who.Raw)
	}
	// Password login, wrong password, unknown user.
	login := anon.must("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret-alice"})
	second := &client{t: t, base: s.URL, token: login.str("access_token"), UserID: alice.UserID, Device: login.str("device_id")}
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong"})
	// A full user ID typed with capitals names the same account.
	upper := anon.must("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@ALICE:plaza.test"}, "password": "secret-alice"})
	if upper.str("user_id") != alice.UserID {
		t.Fatalf("login as @ALICE: %s", upper.Raw)
	}
	(&client{t: t, base: s.URL, token: upper.str("access_token")}).must("POST", "/_matrix/client/v3/logout", map[string]any{})
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@nobody:plaza.test"}, "password": "x"})
	anon.fails(400, "M_NOT_JSON", "POST", "/_matrix/client/v3/login", "{not json")
	anon.fails(400, "M_BAD_JSON", "POST", "/_matrix/client/v3/login", `{"type": 5}`)

	// Devices: list, rename, delete with password UIA.
	devs := alice.must("GET", "/_matrix/client/v3/devices", nil)
	if n := len(devs.Body["devices"].([]any)); n != 2 {
		t.Fatalf("want 2 devices, got %s", devs.Raw)
	}
	alice.must("PUT", "/_matrix/client/v3/devices/"+second.Device, map[string]any{"display_name": "laptop"})
	if d := alice.must("GET", "/_matrix/client/v3/devices/"+second.Device, nil); d.str("display_name") != "laptop" {
		t.Fatalf("rename: %s", d.Raw)
	}
	alice.fails(401, "", "DELETE", "/_matrix/client/v3/devices/"+second.Device, map[string]any{})
	alice.must("DELETE", "/_matrix/client/v3/devices/"+second.Device, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}, "password": "secret-alice"}})
	second.fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)

	// Password change logs other devices out, the new password works.
	third := anon.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice"})
	alice.must("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "new-pw", "auth": map[string]any{
		"type": "m.login.password", "user": "alice", "password": "secret-alice"}})
	(&client{t: t, base: s.URL, token: third.str("access_token")}).fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)
	anon.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "new-pw"})

	// Logout.
	alice.must("POST", "/_matrix/client/v3/logout", nil)
	alice.fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)

	// Guests.
	g := anon.must("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{})
	guest := &client{t: t, base: s.URL, token: g.str("access_token")}
	if w := guest.must("GET", "/_matrix/client/v3/account/whoami", nil); w.Body["is_guest"] != true {
		t.Fatalf("guest whoami: %s", w.Raw)
	}
	guest.fails(403, "M_GUEST_ACCESS_FORBIDDEN", "POST", "/_matrix/client/v3/createRoom", map[string]any{})
}

func TestRegistrationModes(t *testing.T) {
	closed := newServer(t, func(c *homeserver.Config) { c.Registration = "closed" })
	closed.anon().fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/register", map[string]any{
		"username": "x", "password": "y", "auth": map[string]any{"type": "m.login.dummy"}})

	tok := newServer(t, func(c *homeserver.Config) { c.Registration = "token" })
	one := 1
	if err := tok.hs.DB.CreateRegistrationToken(context.Background(), "let-me-in", &one, nil); err != nil {
		t.Fatal(err)
	}
	anon := tok.anon()
	r := anon.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "x", "password": "y", "auth": map[string]any{"type": "m.login.dummy"}})
	if r.Status != 401 {
		t.Fatalf("dummy auth accepted in token mode: %s", r.Raw)
	}
	anon.must("POST", "/_matrix/client/v3/register", map[string]any{"username": "x", "password": "y",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "let-me-in"}})
	r = anon.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "z", "password": "y",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "let-me-in"}})
	if r.Status != 401 {
		t.Fatalf("a single-use token was used twice: %s", r.Raw)
	}
}

// TestConversation drives two users through a room's life: create, invite,
// join, talk, edit, react, thread, redact, paginate, sync incrementally,
// leave, ban.
func TestConversation(t *testing.T) {
	s := newServer(t)
	alice, bob, eve := s.register("alice"), s.register("bob"), s.register("eve")

	cr := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"name": "Widgets", "topic": "All about widgets", "room_alias_name": "widgets", "preset": "private_chat"})
	roomID := cr.str("room_id")
	if !strings.HasPrefix(roomID, "!") || strings.Contains(roomID, ":") {
		t.Fatalf("v12 room IDs have no server part: %q", roomID)
	}
	if r := bob.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#widgets:plaza.test"), nil); r.str("room_id") != roomID {
		t.Fatalf("alias: %s", r.Raw)
	}
	// Private room: bob cannot join uninvited, and cannot read it.
	bob.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/join/"+url.PathEscape("#widgets:plaza.test"), nil)
	bob.fails(403, "M_FORBIDDEN", "GET", "/_matrix/client/v3/rooms/"+roomID+"/messages", nil)
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/x1", text("intruder"))

	bobSync := bob.sync("", 0)
	since := bobSync.str("next_batch")
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{"user_id": bob.UserID})
	inv := bob.sync(since, 5000)
	if _, ok := inv.Body["rooms"].(map[string]any)["invite"].(map[string]any)[roomID]; !ok {
		t.Fatalf("bob's sync does not show the invite: %s", inv.Raw)
	}
	since = inv.str("next_batch")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape("#widgets:plaza.test"), nil)

	hello := alice.send(roomID, text("hello bob"))
	hi := bob.send(roomID, text("hi alice"))
	joined := bob.sync(since, 5000)
	if got := bodies(timeline(joined, roomID)); !contains(got, "hello bob") || !contains(got, "hi alice") {
		t.Fatalf("bob's incremental sync lacks the messages: %v\n%s", got, joined.Raw)
	}
	since = joined.str("next_batch")

	// Transaction idempotency: the same txn ID gives the same event.
	r1 := alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/same", text("once"))
	r2 := alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/same", text("once"))
	if r1.str("event_id") != r2.str("event_id") {
		t.Fatalf("retried transaction created two events: %s %s", r1.Raw, r2.Raw)
	}
	since = alice.sync(since, 0).str("next_batch")

	// Long-poll: a sync waiting with a timeout returns when bob's message lands.
	done := make(chan response)
	go func() { done <- alice.syncNoFatal(since) }()
	time.Sleep(100 * time.Millisecond)
	bob.send(roomID, text("wake up"))
	select {
	case r := <-done:
		if !contains(bodies(timeline(r, roomID)), "wake up") {
			t.Fatalf("long-poll returned without the message: %s", r.Raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not wake up")
	}

	// Edit, reaction, reply, thread.
	edit := alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* hello bob!", "m.new_content": text("hello bob!"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": hello}})
	alice.sendType(roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": hi, "key": "👍"}})
	bob.send(roomID, map[string]any{"msgtype": "m.text", "body": "> hello\nreply", "m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": hello}}})
	t1 := bob.send(roomID, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": hello}})
	rel := alice.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/relations/"+hello+"/m.replace", nil)
	if chunk := rel.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != edit {
		t.Fatalf("relations m.replace: %s", rel.Raw)
	}
	th := alice.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/relations/"+hello+"/m.thread", nil)
	if chunk := th.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != t1 {
		t.Fatalf("relations m.thread: %s", th.Raw)
	}
	threads := alice.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/threads", nil)
	if chunk := threads.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != hello {
		t.Fatalf("threads: %s", threads.Raw)
	}

	// Redaction: bob may not redact alice's message, alice may redact her own.
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+hello+"/r1", map[string]any{})
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+hello+"/r2", map[string]any{"reason": "typo"})
	ev := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+hello, nil)
	if c := ev.Body["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("redacted event still has content: %s", ev.Raw)
	}
	if ev.Body["unsigned"].(map[string]any)["redacted_because"] == nil {
		t.Fatalf("redacted event lacks redacted_because: %s", ev.Raw)
	}

	// Pagination backwards from the end, then forwards again.
	for i := 0; i < 25; i++ {
		alice.send(roomID, text(fmt.Sprintf("msg %02d", i)))
	}
	var seen []string
	from := ""
	for page := 0; page < 20; page++ {
		q := "/_matrix/client/v3/rooms/" + roomID + "/messages?dir=b&limit=7"
		if from != "" {
			q += "&from=" + from
		}
		p := bob.must("GET", q, nil)
		for _, e := range p.Body["chunk"].([]any) {
			m := e.(map[string]any)
			if m["type"] == "m.room.message" {
				if b, ok := m["content"].(map[string]any)["body"].(string); ok && strings.HasPrefix(b, "msg ") {
					seen = append(seen, b)
				}
			}
		}
		from = p.str("end")
		if from == "" {
			break
		}
	}
	if len(seen) != 25 || seen[0] != "msg 24" || seen[24] != "msg 00" {
		t.Fatalf("backwards pagination saw %d messages: %v", len(seen), seen)
	}
	fw := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=f&limit=1000&from=s0", nil)
	var fwd []string
	for _, e := range fw.Body["chunk"].([]any) {
		if b, ok := e.(map[string]any)["content"].(map[string]any)["body"].(string); ok && strings.HasPrefix(b, "msg ") {
			fwd = append(fwd, b)
		}
	}
	if len(fwd) != 25 || fwd[0] != "msg 00" {
		t.Fatalf("forwards pagination: %v", fwd)
	}

	// Context around an event.
	cx := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/context/"+hi+"?limit=4", nil)
	if cx.Body["event"].(map[string]any)["event_id"] != hi || len(cx.Body["events_before"].([]any)) != 2 {
		t.Fatalf("context: %s", cx.Raw)
	}

	// State and members.
	name := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name", nil)
	if name.str("name") != "Widgets" {
		t.Fatalf("room name: %s", name.Raw)
	}
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name", map[string]any{"name": "Bob's"})
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.topic", map[string]any{"topic": "Widgets and gadgets"})
	jm := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", nil)
	if len(jm.Body["joined"].(map[string]any)) != 2 {
		t.Fatalf("joined members: %s", jm.Raw)
	}
	members := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/members?membership=join", nil)
	if len(members.Body["chunk"].([]any)) != 2 {
		t.Fatalf("members: %s", members.Raw)
	}
	jr := bob.must("GET", "/_matrix/client/v3/joined_rooms", nil)
	if rooms := jr.Body["joined_rooms"].([]any); len(rooms) != 1 || rooms[0] != roomID {
		t.Fatalf("joined_rooms: %s", jr.Raw)
	}

	// Bob leaves; he keeps seeing history up to his leave only.
	bob.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", nil)
	alice.send(roomID, text("after bob left"))
	after := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=50", nil)
	if contains(bodiesAny(after.Body["chunk"]), "after bob left") {
		t.Fatalf("a former member sees messages sent after leaving")
	}
	// Ban: eve joins? No: the room is private. Alice invites eve, then bans her.
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{"user_id": eve.UserID})
	eve.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/join", nil)
	eve.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+roomID+"/kick", map[string]any{"user_id": alice.UserID})
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/ban", map[string]any{"user_id": eve.UserID, "reason": "spam"})
	eve.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/e1", text("still here?"))
	eve.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+roomID+"/join", nil)
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/unban", map[string]any{"user_id": eve.UserID})
	bob.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/forget", nil)
}

func (c *client) syncNoFatal(since string) response {
	req, _ := http.NewRequest("GET", c.base+"/_matrix/client/v3/sync?timeout=8000&since="+since, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func bodiesAny(chunk any) []string {
	var evs []map[string]any
	for _, e := range chunk.([]any) {
		evs = append(evs, e.(map[string]any))
	}
	return bodies(evs)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBadInput checks that malformed, oversized and unauthorised requests get
// the spec's errors and write nothing.
func TestBadInput(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	before := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=100", nil)
	n := len(before.Body["chunk"].([]any))

	p := "/_matrix/client/v3/rooms/" + roomID + "/send/m.room.message/"
	alice.fails(400, "M_NOT_JSON", "PUT", p+"b1", "{")
	alice.fails(400, "M_BAD_JSON", "PUT", p+"b2", "[1,2]")
	alice.fails(400, "M_BAD_JSON", "PUT", p+"b3", `{"body": 1.5}`)
	alice.fails(413, "M_TOO_LARGE", "PUT", p+"b4", map[string]any{"body": strings.Repeat("x", 70000)})
	alice.fails(413, "M_TOO_LARGE", "PUT", p+"b5", map[string]any{"body": strings.Repeat("x", 300000)})
	alice.fails(404, "M_NOT_FOUND", "PUT", "/_matrix/client/v3/rooms/!nope/send/m.room.message/b6", text("x"))
	alice.fails(400, "M_UNSUPPORTED_ROOM_VERSION", "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "1"})
	alice.fails(400, "M_BAD_JSON", "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "weird"})
	alice.fails(400, "M_INVALID_PARAM", "POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{"not-a-user"}})
	alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "taken"})
	alice.fails(400, "M_ROOM_IN_USE", "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "taken"})
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=x", nil)
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?from=garbage", nil)
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/sync?since=garbage", nil)
	alice.fails(400, "M_BAD_JSON", "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":-1}}}`), nil)
	alice.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/sync?filter=12345", nil)
	bob.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/user/"+alice.UserID+"/filter", map[string]any{})
	alice.fails(400, "M_MISSING_PARAM", "POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{})
	alice.fails(404, "M_NOT_FOUND", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/$unknown/r", map[string]any{})
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.power_levels", map[string]any{"users": map[string]any{bob.UserID: 100}})

	after := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=100", nil)
	if m := len(after.Body["chunk"].([]any)); m != n {
		t.Fatalf("bad requests wrote events: %d before, %d after", n, m)
	}
}

// TestRestartKeepsSyncToken restarts the homeserver on the same database: a
// client resumes with its token and gets exactly the events it missed.
func TestRestartKeepsSyncToken(t *testing.T) {
	pool := storagetest.NewDB(t, storage.Migrations())
	dir := t.TempDir()
	start := func() (*homeserver.Server, *httptest.Server) {
		hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", DataDir: dir, Registration: "open", BcryptCost: bcrypt.MinCost}, storage.New(pool))
		if err != nil {
			t.Fatal(err)
		}
		return hs, httptest.NewServer(hs.Handler())
	}
	_, ts := start()
	s := &testServer{t: t, URL: ts.URL}
	alice := s.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	alice.send(roomID, text("before restart"))
	tok := alice.sync("", 0).str("next_batch")
	alice.send(roomID, text("just before restart"))
	ts.Close()

	_, ts2 := start()
	defer ts2.Close()
	alice.base = ts2.URL
	// Events persisted before the restart are news for an old token: the
	// long-poll answers at once instead of waiting out its timeout.
	quick := &http.Client{Timeout: 20 * time.Second}
	req, _ := http.NewRequest("GET", ts2.URL+"/_matrix/client/v3/sync?timeout=60000&since="+tok, nil)
	req.Header.Set("Authorization", "Bearer "+alice.token)
	resp, err := quick.Do(req)
	if err != nil {
		t.Fatalf("long-poll after restart did not answer with the events it missed: %v", err)
	}
	var early map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&early)
	resp.Body.Close()
	if got := bodies(timeline(response{Body: early}, roomID)); len(got) != 1 || got[0] != "just before restart" {
		t.Fatalf("sync after restart gave %v", got)
	}
	tok, _ = early["next_batch"].(string)
	alice.send(roomID, text("after restart 1"))
	alice.send(roomID, text("after restart 2"))
	r := alice.sync(tok, 5000)
	if got := bodies(timeline(r, roomID)); len(got) != 2 || got[0] != "after restart 1" || got[1] != "after restart 2" {
		t.Fatalf("after restart, sync from the old token gave %v", got)
	}
	r2 := alice.sync(r.str("next_batch"), 0)
	if got := bodies(timeline(r2, roomID)); len(got) != 0 {
		t.Fatalf("events delivered twice: %v", got)
	}

	// A token at a position no table holds (typing is in memory) is still
	// a valid incremental token after another restart.
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": true, "timeout": 1000})
	tok3 := alice.sync(r2.str("next_batch"), 0).str("next_batch")
	ts2.Close()
	_, ts3 := start()
	defer ts3.Close()
	alice.base = ts3.URL
	alice.send(roomID, text("after the second restart"))
	r3 := alice.sync(tok3, 5000)
	if got := bodies(timeline(r3, roomID)); len(got) != 1 || got[0] != "after the second restart" {
		t.Fatalf("a token at an in-memory position was not resumed after a restart: %v", got)
	}
}

func TestProfilesAndUserDirectory(t *testing.T) {
	s := newServer(t)
	alice, bob, carol := s.register("alice"), s.register("bob"), s.register("carol")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+roomID, nil)

	alice.must("PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/displayname", map[string]any{"displayname": "Alice Liddell"})
	alice.must("PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/avatar_url", map[string]any{"avatar_url": "mxc://plaza.test/abc"})
	p := s.anon().must("GET", "/_matrix/client/v3/profile/"+alice.UserID, nil)
	if p.str("displayname") != "Alice Liddell" || p.str("avatar_url") != "mxc://plaza.test/abc" {
		t.Fatalf("profile: %s", p.Raw)
	}
	// The change reaches the member event in her rooms.
	m := bob.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+alice.UserID, nil)
	if m.str("displayname") != "Alice Liddell" || m.str("avatar_url") != "mxc://plaza.test/abc" {
		t.Fatalf("member event not updated: %s", m.Raw)
	}
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/displayname", map[string]any{"displayname": "x"})
	alice.fails(400, "M_INVALID_PARAM", "PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/avatar_url", map[string]any{"avatar_url": "http://evil"})
	alice.fails(400, "M_BAD_JSON", "PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/displayname", map[string]any{"displayname": 5})
	s.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/profile/@ghost:plaza.test", nil)

	// Directory: bob finds alice (shared room); carol shares no room with
	// alice but alice is in a room that is not published, so carol does not.
	r := bob.must("POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": "liddell"})
	if res := r.Body["results"].([]any); len(res) != 1 || res[0].(map[string]any)["user_id"] != alice.UserID {
		t.Fatalf("bob's search: %s", r.Raw)
	}
	r = carol.must("POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": "liddell"})
	if res := r.Body["results"].([]any); len(res) != 0 {
		t.Fatalf("carol found a user she shares nothing with: %s", r.Raw)
	}
	carol.fails(400, "M_MISSING_PARAM", "POST", "/_matrix/client/v3/user_directory/search", map[string]any{})
}

// ephemeral returns a joined room's ephemeral events of one type.
func ephemeral(r response, roomID, typ string) []map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	eph, _ := room["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	var out []map[string]any
	for _, e := range evs {
		if m := e.(map[string]any); m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

func unread(r response, roomID string) (int, int) {
	room := r.Body["rooms"].(map[string]any)["join"].(map[string]any)[roomID].(map[string]any)
	u := room["unread_notifications"].(map[string]any)
	return int(u["notification_count"].(float64)), int(u["highlight_count"].(float64))
}

func TestTypingReceiptsPresenceUnread(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+roomID, nil)
	since := bob.sync("", 0).str("next_batch")

	// Typing reaches bob, then stops.
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": true, "timeout": 30000})
	r := bob.sync(since, 5000)
	ty := ephemeral(r, roomID, "m.typing")
	if len(ty) != 1 || fmt.Sprint(ty[0]["content"].(map[string]any)["user_ids"]) != "["+alice.UserID+"]" {
		t.Fatalf("typing: %s", r.Raw)
	}
	since = r.str("next_batch")
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": false})
	r = bob.sync(since, 5000)
	if ty := ephemeral(r, roomID, "m.typing"); len(ty) != 1 || len(ty[0]["content"].(map[string]any)["user_ids"].([]any)) != 0 {
		t.Fatalf("typing stop: %s", r.Raw)
	}
	since = r.str("next_batch")
	bob.fails(403, "M_FORBIDDEN", "PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": true})

	// Unread counts: three messages, one mentioning bob.
	alice.send(roomID, text("one"))
	alice.send(roomID, text("two"))
	m3 := alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "hey bob", "m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	r = bob.sync(since, 5000)
	if n, h := unread(r, roomID); n != 3 || h != 1 {
		t.Fatalf("unread = %d/%d, want 3/1: %s", n, h, r.Raw)
	}
	since = r.str("next_batch")
	// Counts follow bob's push rules: with plain messages turned off (in a
	// two-member room the one-to-one rule is the one that matches), only the
	// mention still notifies.
	for _, rule := range []string{".m.rule.message", ".m.rule.room_one_to_one"} {
		bob.must("PUT", "/_matrix/client/v3/pushrules/global/underride/"+rule+"/enabled", map[string]any{"enabled": false})
	}
	if n, h := unread(bob.sync("", 0), roomID); n != 1 || h != 1 {
		t.Fatalf("unread with messages muted = %d/%d, want 1/1", n, h)
	}
	for _, rule := range []string{".m.rule.message", ".m.rule.room_one_to_one"} {
		bob.must("PUT", "/_matrix/client/v3/pushrules/global/underride/"+rule+"/enabled", map[string]any{"enabled": true})
	}

	// Bob reads: alice sees his public receipt, only bob sees his private one.
	bob.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+m3, map[string]any{})
	ar := alice.sync("", 0)
	rc := ephemeral(ar, roomID, "m.receipt")
	if len(rc) != 1 || rc[0]["content"].(map[string]any)[m3].(map[string]any)["m.read"].(map[string]any)[bob.UserID] == nil {
		t.Fatalf("alice does not see bob's receipt: %s", ar.Raw)
	}
	r = bob.sync(since, 5000)
	if n, h := unread(r, roomID); n != 0 || h != 0 {
		t.Fatalf("unread after reading = %d/%d: %s", n, h, r.Raw)
	}
	since = r.str("next_batch")
	alice.sendAndPrivateReceipt(t, bob, roomID)
	if rc := ephemeral(alice.sync("", 0), roomID, "m.receipt"); strings.Contains(fmt.Sprint(rc), "m.read.private") {
		t.Fatalf("alice sees bob's private receipt: %v", rc)
	}
	bob.fails(400, "M_INVALID_PARAM", "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.bogus/"+m3, map[string]any{})
	bob.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/$nope", map[string]any{})
	bob.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/read_markers", map[string]any{"m.fully_read": m3})

	// Presence.
	alice.must("PUT", "/_matrix/client/v3/presence/"+alice.UserID+"/status", map[string]any{"presence": "online", "status_msg": "coding"})
	p := bob.must("GET", "/_matrix/client/v3/presence/"+alice.UserID+"/status", nil)
	if p.str("presence") != "online" || p.str("status_msg") != "coding" {
		t.Fatalf("presence: %s", p.Raw)
	}
	r = bob.sync(since, 5000)
	if !strings.Contains(string(r.Raw), `"m.presence"`) {
		t.Fatalf("presence not in sync: %s", r.Raw)
	}
	alice.fails(400, "M_INVALID_PARAM", "PUT", "/_matrix/client/v3/presence/"+alice.UserID+"/status", map[string]any{"presence": "dancing"})
}

func (c *client) sendAndPrivateReceipt(t *testing.T, reader *client, roomID string) {
	ev := c.send(roomID, text("private read"))
	reader.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read.private/"+ev, map[string]any{})
}

// Two identical room creations at once must give two rooms (v12 room IDs
// are hashes of the create event), and long passwords work whole.
func TestIdenticalCreatesAndLongPasswords(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	ids := make(chan string, 8)
	for i := 0; i < 8; i++ {
		go func() {
			r := alice.do("POST", "/_matrix/client/v3/createRoom", map[string]any{})
			ids <- r.str("room_id")
		}()
	}
	seen := map[string]bool{}
	for i := 0; i < 8; i++ {
		id := <-ids
		if id == "" || seen[id] {
			t.Fatalf("createRoom gave %q twice or failed", id)
		}
		seen[id] = true
	}
	long := strings.Repeat("correct horse battery staple ", 5)
	anon := s.anon()
	anon.must("POST", "/_matrix/client/v3/register", map[string]any{"username": "longpw", "password": long, "auth": map[string]any{"type": "m.login.dummy"}})
	anon.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "longpw", "password": long})
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "longpw", "password": long[:72]})
	anon.fails(400, "M_INVALID_PARAM", "POST", "/_matrix/client/v3/register", map[string]any{"username": "toolong", "password": strings.Repeat("x", 513), "auth": map[string]any{"type": "m.login.dummy"}})
}

func TestMediaThroughTheHomeserver(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	req, _ := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload?filename=hello.txt", strings.NewReader("hello media"))
	req.Header.Set("Authorization", "Bearer "+alice.token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(up.ContentURI, "mxc://plaza.test/") {
		t.Fatalf("upload: %d %+v", resp.StatusCode, up)
	}
	path := strings.TrimPrefix(up.ContentURI, "mxc://")
	r := alice.do("GET", "/_matrix/client/v1/media/download/"+path, nil)
	if r.Status != 200 || string(r.Raw) != "hello media" {
		t.Fatalf("authenticated download: %d %q", r.Status, r.Raw)
	}
	s.anon().fails(401, "M_MISSING_TOKEN", "GET", "/_matrix/client/v1/media/download/"+path, nil)
}

func TestRefreshDeactivateKnockUpgradeAndMore(t *testing.T) {
	s := newServer(t, func(c *homeserver.Config) { c.AccessTokenLifetime = time.Hour })
	alice, bob := s.register("alice"), s.register("bob")
	anon := s.anon()

	// Refresh tokens: asked for at login, swapped once, the old pair dies.
	l := anon.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "bob", "password": "secret-bob", "refresh_token": true})
	if l.str("refresh_token") == "" || l.Body["expires_in_ms"] == nil {
		t.Fatalf("login without refresh token: %s", l.Raw)
	}
	rf := anon.must("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": l.str("refresh_token")})
	fresh := &client{t: t, base: s.URL, token: rf.str("access_token")}
	fresh.must("GET", "/_matrix/client/v3/account/whoami", nil)
	(&client{t: t, base: s.URL, token: l.str("access_token")}).fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)
	anon.fails(401, "M_UNKNOWN_TOKEN", "POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": l.str("refresh_token")})

	// Capabilities list the room versions.
	caps := alice.must("GET", "/_matrix/client/v3/capabilities", nil)
	if !strings.Contains(string(caps.Raw), `"default":"12"`) {
		t.Fatalf("capabilities: %s", caps.Raw)
	}

	// Knocking on a knock room, then being let in.
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"initial_state": []any{
		map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}}).str("room_id")
	bob.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/join/"+roomID, nil)
	bob.must("POST", "/_matrix/client/v3/knock/"+roomID, map[string]any{"reason": "let me in"})
	if m := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+bob.UserID, nil); m.str("membership") != "knock" {
		t.Fatalf("knock membership: %s", m.Raw)
	}
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{"user_id": bob.UserID})
	bob.must("POST", "/_matrix/client/v3/join/"+roomID, nil)

	// members?at shows the membership as of a token.
	tok := alice.sync("", 0).str("next_batch")
	bob.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", nil)
	at := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/members?at="+tok+"&membership=join", nil)
	if n := len(at.Body["chunk"].([]any)); n != 2 {
		t.Fatalf("members at the earlier token: %d, want 2: %s", n, at.Raw)
	}
	now := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/members?membership=join", nil)
	if n := len(now.Body["chunk"].([]any)); n != 1 {
		t.Fatalf("members now: %d, want 1", n)
	}

	// timestamp_to_event.
	first := alice.send(roomID, text("first"))
	time.Sleep(5 * time.Millisecond)
	ts := time.Now().UnixMilli()
	time.Sleep(5 * time.Millisecond)
	second := alice.send(roomID, text("second"))
	if r := alice.must("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?ts=%d&dir=b", roomID, ts), nil); r.str("event_id") != first {
		t.Fatalf("timestamp_to_event backwards: %s", r.Raw)
	}
	if r := alice.must("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?ts=%d&dir=f", roomID, ts), nil); r.str("event_id") != second {
		t.Fatalf("timestamp_to_event forwards: %s", r.Raw)
	}
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v1/rooms/"+roomID+"/timestamp_to_event?ts=x&dir=f", nil)

	// Upgrade: a new room of the new version, a tombstone in the old one.
	up := alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/upgrade", map[string]any{"new_version": "11"})
	newRoom := up.str("replacement_room")
	tomb := alice.must("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.tombstone", nil)
	if tomb.str("replacement_room") != newRoom {
		t.Fatalf("tombstone: %s", tomb.Raw)
	}
	create := alice.must("GET", "/_matrix/client/v3/rooms/"+newRoom+"/state/m.room.create", nil)
	if create.str("room_version") != "11" || create.Body["predecessor"].(map[string]any)["room_id"] != roomID {
		t.Fatalf("new room's create: %s", create.Raw)
	}
	if jr := alice.must("GET", "/_matrix/client/v3/rooms/"+newRoom+"/state/m.room.join_rules", nil); jr.str("join_rule") != "knock" {
		t.Fatalf("join rules not carried over: %s", jr.Raw)
	}
	bob.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+newRoom+"/upgrade", map[string]any{"new_version": "12"})
	alice.fails(400, "M_UNSUPPORTED_ROOM_VERSION", "POST", "/_matrix/client/v3/rooms/"+newRoom+"/upgrade", map[string]any{"new_version": "3"})

	// Deactivation: password UIA, then the account is gone from its rooms.
	pub := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+pub, nil)
	bob.fails(401, "", "POST", "/_matrix/client/v3/account/deactivate", map[string]any{})
	bob.must("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "bob", "password": "secret-bob"}})
	bob.fails(401, "M_UNKNOWN_TOKEN", "GET", "/_matrix/client/v3/account/whoami", nil)
	anon.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "bob", "password": "secret-bob"})
	if m := alice.must("GET", "/_matrix/client/v3/rooms/"+pub+"/state/m.room.member/"+bob.UserID, nil); m.str("membership") != "leave" {
		t.Fatalf("deactivated user still in the room: %s", m.Raw)
	}
}

func TestRateLimits(t *testing.T) {
	s := newServer(t, func(c *homeserver.Config) { c.RateLimit = true })
	alice := s.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	var limited response
	for i := 0; i < 300; i++ {
		r := alice.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/rl%d", roomID, i), text("spam"))
		if r.Status == 429 {
			limited = r
			break
		}
	}
	if limited.Status != 429 || limited.str("errcode") != "M_LIMIT_EXCEEDED" || limited.Body["retry_after_ms"] == nil {
		t.Fatalf("no 429 after a burst of sends: %d %s", limited.Status, limited.Raw)
	}
	// Logins are limited per IP.
	anon := s.anon()
	got429 := false
	for i := 0; i < 30 && !got429; i++ {
		got429 = anon.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "wrong"}).Status == 429
	}
	if !got429 {
		t.Fatal("no 429 after a burst of failed logins")
	}
}

// enc percent-encodes an identifier the way clients do (encodeURIComponent).
func enc(s string) string {
	return strings.NewReplacer("@", "%40", ":", "%3A", "$", "%24", "#", "%23", "!", "%21", "/", "%2F").Replace(s)
}

// Clients percent-encode identifiers in paths; every endpoint must decode
// them (matrix-js-sdk found this).
func TestPercentEncodedPathParameters(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	v11 := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "11", "room_alias_name": "v11"}).str("room_id")
	if !strings.Contains(v11, ":") {
		t.Fatalf("v11 room ID without a server part: %s", v11)
	}
	base := "/_matrix/client/v3/rooms/" + enc(v11)
	ev := alice.must("PUT", base+"/send/m.room.message/t1", text("hi")).str("event_id")
	alice.must("GET", base+"/event/"+enc(ev), nil)
	alice.must("PUT", base+"/typing/"+enc(alice.UserID), map[string]any{"typing": true, "timeout": 1000})
	alice.must("POST", base+"/receipt/m.read/"+enc(ev), map[string]any{})
	alice.must("POST", "/_matrix/client/v3/user/"+enc(alice.UserID)+"/filter", map[string]any{})
	alice.must("GET", "/_matrix/client/v3/profile/"+enc(alice.UserID), nil)
	if r := alice.must("GET", "/_matrix/client/v3/directory/room/"+enc("#v11:plaza.test"), nil); r.str("room_id") != v11 {
		t.Fatalf("alias lookup: %s", r.Raw)
	}
	// A state key with a slash stays one parameter.
	alice.must("PUT", base+"/state/org.example.thing/"+enc("a/b"), map[string]any{"x": 1})
	if r := alice.must("GET", base+"/state/org.example.thing/"+enc("a/b"), nil); r.Body["x"] != float64(1) {
		t.Fatalf("state key with a slash: %s", r.Raw)
	}
	alice.must("PUT", base+"/redact/"+enc(ev)+"/r1", map[string]any{})
}

// A receipt sent in a room that the next sync does not include must still
// reset that room's count when the room comes back (the counts are cached
// between syncs).
func TestUnreadCountsAcrossRooms(t *testing.T) {
	s := newServer(t)
	alice, bob, carol := s.register("alice"), s.register("bob"), s.register("carol")
	var rooms []string
	for i := 0; i < 2; i++ {
		id := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
		bob.must("POST", "/_matrix/client/v3/join/"+id, nil)
		carol.must("POST", "/_matrix/client/v3/join/"+id, nil) // three members: plain message rule
		rooms = append(rooms, id)
	}
	a, b := rooms[0], rooms[1]
	alice.send(a, text("a1"))
	lastB := alice.send(b, text("b1"))
	alice.send(b, text("b2"))
	r := bob.sync("", 0)
	if n, _ := unread(r, b); n != 2 {
		t.Fatalf("unread in b = %d, want 2", n)
	}
	since := r.str("next_batch")
	bob.must("POST", "/_matrix/client/v3/rooms/"+b+"/receipt/m.read/"+lastB, map[string]any{})
	alice.send(a, text("a2"))
	r = bob.sync(since, 5000)
	since = r.str("next_batch")
	alice.send(b, text("b3"))
	r = bob.sync(since, 5000)
	if n, _ := unread(r, b); n != 2 { // b2 and b3, after the receipt on b1
		t.Fatalf("unread in b after reading b1 = %d, want 2: %s", n, r.Raw)
	}
}

// An invite shows once in incremental syncs, not in every later one.
func TestInviteNotRepeated(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	since := bob.sync("", 0).str("next_batch")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{bob.UserID}}).str("room_id")
	r := bob.sync(since, 5000)
	if _, ok := r.Body["rooms"].(map[string]any)["invite"].(map[string]any)[roomID]; !ok {
		t.Fatalf("invite missing: %s", r.Raw)
	}
	other := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+other, nil)
	since = bob.sync(r.str("next_batch"), 0).str("next_batch")
	alice.send(other, text("hello"))
	r = bob.sync(since, 5000)
	if inv := r.Body["rooms"].(map[string]any)["invite"].(map[string]any); len(inv) != 0 {
		t.Fatalf("the invite came again in a later incremental sync: %s", r.Raw)
	}
}

// State events carry what they replaced, so clients can tell a display name
// change from a join.
func TestPrevContent(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "First"}).str("room_id")
	since := alice.sync("", 0).str("next_batch")
	alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name", map[string]any{"name": "Second"})
	alice.must("PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/displayname", map[string]any{"displayname": "Alice L."})
	r := alice.sync(since, 5000)
	var sawName, sawMember bool
	for _, e := range timeline(r, roomID) {
		u, _ := e["unsigned"].(map[string]any)
		prev, _ := u["prev_content"].(map[string]any)
		switch e["type"] {
		case "m.room.name":
			sawName = prev["name"] == "First" && u["replaces_state"] != nil
		case "m.room.member":
			sawMember = prev["membership"] == "join" && prev["displayname"] != "Alice L."
		}
	}
	if !sawName || !sawMember {
		t.Fatalf("prev_content missing (name %v, member %v): %s", sawName, sawMember, r.Raw)
	}
}
