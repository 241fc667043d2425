package homeserver_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/spectest"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/peek"
)

// newPeekServer is newServer with the peek package's routes mounted, as
// cmd/plaza wires them.
func newPeekServer(t *testing.T, cfgs ...peek.Config) (*testServer, *peek.Service) {
	t.Helper()
	pcfg := peek.Config{}
	if len(cfgs) > 0 {
		pcfg = cfgs[0]
	}
	pool := storagetest.NewDB(t, storage.Migrations())
	cfg := homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(), Registration: "open", BcryptCost: bcrypt.MinCost}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	p := peek.New(hs, pcfg)
	ts := httptest.NewServer(hs.Handler(p.Routes))
	t.Cleanup(ts.Close)
	return &testServer{t: t, URL: ts.URL, hs: hs}, p
}

func (s *testServer) guest() *client {
	s.t.Helper()
	c := s.anon()
	r := c.must("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{})
	c.token, c.UserID, c.Device = r.str("access_token"), r.str("user_id"), r.str("device_id")
	return c
}

func (c *client) putState(roomID, typ string, content map[string]any) {
	c.t.Helper()
	c.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/", content)
}

func chunkBodies(r response, key string) []string {
	m, _ := r.Body[key].(map[string]any)
	return bodiesAny(m["chunk"])
}

func peekTimeline(r response, roomID string) []map[string]any {
	rooms, _ := r.Body["rooms"].(map[string]any)
	pk, _ := rooms["peek"].(map[string]any)
	room, _ := pk[roomID].(map[string]any)
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.(map[string]any))
	}
	return out
}

// TestRoomPreviews: a world-readable room is readable by an anonymous
// visitor, a guest and a signed-in non-member, through every preview API,
// but only from the moment its history became world-readable; a room that
// is not world-readable is not; and nobody's preview leaves a trace.
func TestRoomPreviews(t *testing.T) {
	s, _ := newPeekServer(t)
	alice, bob, guest := s.register("alice"), s.register("bob"), s.guest()

	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "public_chat", "name": "Widgets", "topic": "All about widgets", "room_alias_name": "widgets"}).str("room_id")
	secret := alice.send(roomID, text("before world-readable"))
	alice.putState(roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
	alice.putState(roomID, "m.room.guest_access", map[string]any{"guest_access": "can_join"})
	alice.putState(roomID, "m.room.avatar", map[string]any{"url": "mxc://plaza.test/avatar"})
	hello := alice.send(roomID, text("hello world"))
	rid := url.PathEscape(roomID)

	// room_summary, anonymous and signed in, field by field (spec v1.15
	// RoomSummary: PublishedRoomsChunk plus room_type, allowed_room_ids,
	// encryption, room_version; membership only when authenticated).
	for _, who := range []*client{s.anon(), bob} {
		for _, target := range []string{roomID, "#widgets:plaza.test"} {
			r := who.must("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(target), nil)
			want := map[string]any{"room_id": roomID, "name": "Widgets", "topic": "All about widgets",
				"canonical_alias": "#widgets:plaza.test", "num_joined_members": float64(1), "world_readable": true,
				"guest_can_join": true, "join_rule": "public", "room_version": "12", "avatar_url": "mxc://plaza.test/avatar"}
			if who == bob {
				want["membership"] = "leave"
			}
			for k, v := range want {
				if r.Body[k] != v {
					t.Errorf("room_summary %s as %q: %s = %v, want %v (%s)", target, who.UserID, k, r.Body[k], v, r.Raw)
				}
			}
			for k := range r.Body {
				if _, ok := want[k]; !ok {
					t.Errorf("room_summary: unexpected field %s in %s", k, r.Raw)
				}
			}
		}
	}

	for _, c := range []*client{guest, bob} {
		is := c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", nil)
		got := chunkBodies(is, "messages")
		if !slices.Contains(got, "hello world") || slices.Contains(got, "before world-readable") {
			t.Fatalf("initialSync as %s: %v", c.UserID, got)
		}
		if is.str("room_id") != roomID || is.Body["state"] == nil {
			t.Fatalf("initialSync shape: %s", is.Raw)
		}
		msgs := c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/messages?dir=b&limit=50", nil)
		got = bodiesAny(msgs.Body["chunk"])
		if !slices.Contains(got, "hello world") || slices.Contains(got, "before world-readable") {
			t.Fatalf("/messages as %s: %v", c.UserID, got)
		}
		c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/state", nil)
		c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.name/", nil)
		c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/event/"+url.PathEscape(hello), nil)
		c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/rooms/"+rid+"/event/"+url.PathEscape(secret), nil)
		c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/rooms/"+rid+"/context/"+url.PathEscape(secret), nil)
		ctx := c.must("GET", "/_matrix/client/v3/rooms/"+rid+"/context/"+url.PathEscape(hello)+"?limit=20", nil)
		if b := bodiesAny(ctx.Body["events_before"]); slices.Contains(b, "before world-readable") {
			t.Fatalf("/context leaks history from before world_readable: %v", b)
		}
	}

	// Peeking with /events: from initialSync's end, a new message arrives.
	end := guest.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", nil).Body["messages"].(map[string]any)["end"].(string)
	got := make(chan response, 1)
	go func() {
		got <- guest.do("GET", "/_matrix/client/v3/events?room_id="+url.QueryEscape(roomID)+"&from="+end+"&timeout=10000", nil)
	}()
	time.Sleep(100 * time.Millisecond)
	alice.send(roomID, text("live"))
	ev := <-got
	if ev.Status != 200 || !slices.Contains(bodiesAny(ev.Body["chunk"]), "live") {
		t.Fatalf("/events: %d %s", ev.Status, ev.Raw)
	}
	next := ev.str("end")
	if r := guest.must("GET", "/_matrix/client/v3/events?room_id="+url.QueryEscape(roomID)+"&from="+next+"&timeout=0", nil); len(bodiesAny(r.Body["chunk"])) != 0 {
		t.Fatalf("/events repeats events: %s", r.Raw)
	}

	// Peeking through /sync (MSC2753).
	const msc = "/_matrix/client/unstable/org.matrix.msc2753"
	first := bob.sync("", 0)
	pk := bob.must("POST", msc+"/peek/"+url.PathEscape("#widgets:plaza.test"), map[string]any{})
	if pk.str("room_id") != roomID || pk.Body["peek_expiry_ts"].(float64) < float64(time.Now().UnixMilli()) {
		t.Fatalf("peek: %s", pk.Raw)
	}
	full := bob.sync(first.str("next_batch"), 5000)
	if b := bodies(peekTimeline(full, roomID)); !slices.Contains(b, "live") || slices.Contains(b, "before world-readable") {
		t.Fatalf("sync peek section: %v %s", b, full.Raw)
	}
	if _, joined := full.Body["rooms"].(map[string]any)["join"].(map[string]any)[roomID]; joined {
		t.Fatalf("peeked room in join: %s", full.Raw)
	}
	done := make(chan response, 1)
	go func() { done <- bob.syncNoFatal(full.str("next_batch")) }()
	time.Sleep(100 * time.Millisecond)
	alice.send(roomID, text("while peeking"))
	inc := <-done
	if b := bodies(peekTimeline(inc, roomID)); !slices.Equal(b, []string{"while peeking"}) {
		t.Fatalf("incremental peek: %v %s", b, inc.Raw)
	}
	bob.must("POST", msc+"/peek/"+url.PathEscape(roomID), map[string]any{}) // renewal
	bob.must("POST", msc+"/unpeek/"+url.PathEscape(roomID), map[string]any{})
	alice.send(roomID, text("after unpeek"))
	after := bob.sync(inc.str("next_batch"), 0)
	if len(peekTimeline(after, roomID)) != 0 {
		t.Fatalf("unpeeked room still in sync: %s", after.Raw)
	}
	// A guest peeks too.
	guest.must("POST", msc+"/peek/"+url.PathEscape(roomID), map[string]any{})
	if b := bodies(peekTimeline(guest.sync("", 0), roomID)); !slices.Contains(b, "after unpeek") {
		t.Fatalf("guest peek: %v", b)
	}

	// Lurkers are invisible: no membership for bob or the guest.
	members := alice.must("GET", "/_matrix/client/v3/rooms/"+rid+"/members", nil)
	if n := len(members.Body["chunk"].([]any)); n != 1 {
		t.Fatalf("members after peeking: %s", members.Raw)
	}
	if r := s.anon().must("GET", "/_matrix/client/v1/room_summary/"+rid, nil); r.Body["num_joined_members"] != float64(1) {
		t.Fatalf("member count after peeking: %s", r.Raw)
	}
	if r := bob.must("GET", "/_matrix/client/v3/joined_rooms", nil); len(r.Body["joined_rooms"].([]any)) != 0 {
		t.Fatalf("bob joined by peeking: %s", r.Raw)
	}
}

// TestPreviewsOfClosedRooms: rooms whose history is shared or joined-only are
// not previewable, and room_summary does not reveal that they exist.
func TestPreviewsOfClosedRooms(t *testing.T) {
	s, _ := newPeekServer(t)
	alice, bob, guest := s.register("alice"), s.register("bob"), s.guest()
	for _, hv := range []string{"shared", "joined"} {
		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).str("room_id")
		alice.putState(roomID, "m.room.history_visibility", map[string]any{"history_visibility": hv})
		msg := alice.send(roomID, text("private"))
		rid := url.PathEscape(roomID)
		missing := s.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("!nosuchroom"), nil)
		for _, c := range []*client{s.anon(), bob, guest} {
			r := c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v1/room_summary/"+rid, nil)
			if r.str("error") != missing.str("error") {
				t.Fatalf("room_summary tells a hidden room from a missing one: %s vs %s", r.Raw, missing.Raw)
			}
		}
		// Alice, a member, gets the summary with her membership.
		if r := alice.must("GET", "/_matrix/client/v1/room_summary/"+rid, nil); r.str("membership") != "join" || r.Body["world_readable"] != false {
			t.Fatalf("member's summary: %s", r.Raw)
		}
		for _, c := range []*client{bob, guest} {
			c.fails(403, "M_FORBIDDEN", "GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", nil)
			c.fails(403, "M_FORBIDDEN", "GET", "/_matrix/client/v3/rooms/"+rid+"/messages", nil)
			c.fails(403, "M_FORBIDDEN", "GET", "/_matrix/client/v3/rooms/"+rid+"/state", nil)
			c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/rooms/"+rid+"/event/"+url.PathEscape(msg), nil)
			c.fails(403, "M_FORBIDDEN", "GET", "/_matrix/client/v3/events?room_id="+url.QueryEscape(roomID), nil)
			c.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/unstable/org.matrix.msc2753/peek/"+rid, map[string]any{})
		}
		// A member's initialSync is their own view.
		if b := chunkBodies(alice.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", nil), "messages"); !slices.Contains(b, "private") {
			t.Fatalf("member initialSync: %v", b)
		}
	}
}

// TestSnapshotFollowsTheStream: once a room's preview is warm, a new message,
// an edit and a redaction reach it through the event stream alone.
func TestSnapshotFollowsTheStream(t *testing.T) {
	s, p := newPeekServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Old"}).str("room_id")
	alice.putState(roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
	first := alice.send(roomID, text("first"))
	rid := url.PathEscape(roomID)
	initial := func() response {
		return bob.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync?limit=50", nil)
	}
	initial() // warm
	if n, _ := p.Cache().Len(); n != 1 {
		t.Fatalf("cache holds %d rooms", n)
	}
	alice.send(roomID, text("second"))
	if b := chunkBodies(initial(), "messages"); !slices.Equal(b, []string{"first", "second"}) {
		t.Fatalf("after a send: %v", b)
	}
	alice.putState(roomID, "m.room.name", map[string]any{"name": "New"})
	if r := s.anon().must("GET", "/_matrix/client/v1/room_summary/"+rid, nil); r.str("name") != "New" {
		t.Fatalf("summary after rename: %s", r.Raw)
	}
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* first!", "m.new_content": text("first!"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": first}})
	snap, err := p.Cache().Get(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snap.Events {
		if e.Event.ID() == first && e.Edit == nil {
			t.Fatal("the edit did not reach the snapshot")
		}
	}
	alice.must("PUT", "/_matrix/client/v3/rooms/"+rid+"/redact/"+url.PathEscape(first)+"/r1", map[string]any{"reason": "oops"})
	is := initial()
	chunk := is.Body["messages"].(map[string]any)["chunk"].([]any)
	var redacted map[string]any
	for _, e := range chunk {
		if e.(map[string]any)["event_id"] == first {
			redacted = e.(map[string]any)
		}
	}
	if redacted == nil {
		t.Fatalf("redacted event gone from the timeline: %s", is.Raw)
	}
	if c := redacted["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("redaction not applied: %v", redacted)
	}
	if u := redacted["unsigned"].(map[string]any); u["redacted_because"] == nil {
		t.Fatalf("no redacted_because: %v", redacted)
	}
	// /messages, from storage, agrees with the snapshot.
	msgs := bob.must("GET", "/_matrix/client/v3/rooms/"+rid+"/messages?dir=b&limit=50", nil)
	if fmt.Sprint(bodiesAny(msgs.Body["chunk"])) != fmt.Sprint(reverse(chunkBodies(is, "messages"))) {
		t.Fatalf("snapshot %v vs /messages %v", chunkBodies(is, "messages"), bodiesAny(msgs.Body["chunk"]))
	}
}

func reverse(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// TestGuestEndpointSet: guests reach the spec's guest endpoints and nothing
// else.
func TestGuestEndpointSet(t *testing.T) {
	s, _ := newPeekServer(t)
	guest := s.guest()
	guest.must("GET", "/_matrix/client/v3/account/whoami", nil)
	guest.must("GET", "/_matrix/client/v3/sync?timeout=0", nil)
	guest.must("GET", "/_matrix/client/v3/devices", nil)
	guest.must("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(guest.UserID)+"/displayname", map[string]any{"displayname": "Visitor"})
	for _, c := range []struct{ method, path string }{
		{"GET", "/_matrix/client/v3/joined_rooms"},
		{"POST", "/_matrix/client/v3/createRoom"},
		{"PUT", "/_matrix/client/v3/profile/" + url.PathEscape(guest.UserID) + "/avatar_url"},
		{"PUT", "/_matrix/client/v3/directory/room/" + url.PathEscape("#x:plaza.test")},
		{"POST", "/_matrix/client/v3/account/password"},
		{"GET", "/_matrix/client/v3/user/" + url.PathEscape(guest.UserID) + "/account_data/m.push_rules"},
	} {
		guest.fails(403, "M_GUEST_ACCESS_FORBIDDEN", c.method, c.path, map[string]any{})
	}
}

// TestPeeksExpire: a peek not renewed within its lifetime ends by itself,
// and a device's peeks are its own.
func TestPeeksExpire(t *testing.T) {
	s, _ := newPeekServer(t, peek.Config{PeekLifetime: 300 * time.Millisecond})
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	alice.putState(roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
	alice.send(roomID, text("hi"))
	const msc = "/_matrix/client/unstable/org.matrix.msc2753"
	bob.must("POST", msc+"/peek/"+url.PathEscape(roomID), map[string]any{})
	if b := bodies(peekTimeline(bob.sync("", 0), roomID)); !slices.Equal(b, []string{"hi"}) {
		t.Fatalf("peek: %v", b)
	}
	// Another device of bob's does not see the first device's peek.
	other := s.anon()
	r := other.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "secret-bob"})
	other.token = r.str("access_token")
	if len(peekTimeline(other.sync("", 0), roomID)) != 0 {
		t.Fatal("a peek leaked to another device")
	}
	time.Sleep(400 * time.Millisecond)
	if len(peekTimeline(bob.sync("", 0), roomID)) != 0 {
		t.Fatal("expired peek still in sync")
	}
}

// TestGuestJoins: guests join rooms whose guest access is can_join, not
// others, and leave when guest access is turned off.
func TestGuestJoins(t *testing.T) {
	s, _ := newPeekServer(t)
	alice, guest := s.register("alice"), s.guest()
	closed := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	guest.fails(403, "M_GUEST_ACCESS_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(closed)+"/join", map[string]any{})
	open := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	alice.putState(open, "m.room.guest_access", map[string]any{"guest_access": "can_join"})
	guest.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/join", map[string]any{})
	guest.send(open, text("hello from a guest"))
	alice.putState(open, "m.room.guest_access", map[string]any{"guest_access": "forbidden"})
	for deadline := time.Now().Add(5 * time.Second); ; {
		r := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/joined_members", nil)
		if _, in := r.Body["joined"].(map[string]any)[guest.UserID]; !in {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest is still joined after guest access was turned off: %s", r.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Alice, no guest, stays.
	r := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/joined_members", nil)
	if _, in := r.Body["joined"].(map[string]any)[alice.UserID]; !in {
		t.Fatalf("alice was removed: %s", r.Raw)
	}
}

// TestPreviewsConformToTheSpec validates the preview endpoints' answers
// against the spec's own OpenAPI schemas (room_summary.yaml,
// room_initial_sync.yaml, peeking_events.yaml), and their events against
// the event schemas.
func TestPreviewsConformToTheSpec(t *testing.T) {
	c := &conformance{t: t, spec: spectest.ForTest(t)}
	s, _ := newPeekServer(t)
	alice, guest := s.register("alice"), s.guest()
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "public_chat", "name": "Schema", "topic": "Conformance", "room_alias_name": "schema"}).str("room_id")
	alice.putState(roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
	alice.putState(roomID, "m.room.avatar", map[string]any{"url": "mxc://plaza.test/avatar"})
	alice.putState(roomID, "m.room.join_rules", map[string]any{"join_rule": "restricted",
		"allow": []any{map[string]any{"type": "m.room_membership", "room_id": roomID}}})
	first := alice.send(roomID, text("one"))
	alice.send(roomID, text("two"))
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(first)+"/x", map[string]any{})
	rid := url.PathEscape(roomID)

	const summary = "/_matrix/client/v1/room_summary/{roomIdOrAlias}"
	c.check("GET", summary, s.anon().must("GET", "/_matrix/client/v1/room_summary/"+rid, nil))
	r := guest.must("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#schema:plaza.test"), nil)
	c.check("GET", summary, r)
	if ids, _ := r.Body["allowed_room_ids"].([]any); len(ids) != 1 || ids[0] != roomID {
		t.Errorf("allowed_room_ids: %s", r.Raw)
	}
	c.check("GET", summary, s.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("!missing"), nil))

	is := guest.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", nil)
	c.check("GET", "/_matrix/client/v3/rooms/{roomId}/initialSync", is)
	msgs, _ := is.Body["messages"].(map[string]any)
	if c.eventList(spectest.ClientEvent, "initialSync messages", msgs["chunk"]) == 0 ||
		c.eventList(spectest.ClientEvent, "initialSync state", is.Body["state"]) == 0 {
		t.Fatalf("initialSync had nothing to check: %s", is.Raw)
	}
	ev := guest.must("GET", "/_matrix/client/v3/events?room_id="+url.QueryEscape(roomID)+"&from=s0&timeout=0", nil)
	if err := c.spec.Validate("GET", "/_matrix/client/v3/events ", 200, ev.Raw); err != nil {
		if err2 := c.spec.Validate("GET", "/_matrix/client/v3/events", 200, ev.Raw); err2 != nil {
			t.Errorf("/events: %v; %v", err, err2)
		}
	}
	if c.eventList(spectest.ClientEvent, "/events chunk", ev.Body["chunk"]) == 0 {
		t.Fatalf("/events had nothing to check: %s", ev.Raw)
	}
	guest.must("POST", "/_matrix/client/unstable/org.matrix.msc2753/peek/"+rid, map[string]any{})
	sync := guest.sync("", 0)
	c.check("GET", "/_matrix/client/v3/sync", sync)
	if len(peekTimeline(sync, roomID)) == 0 {
		t.Fatalf("no peek section: %s", sync.Raw)
	}
	pk := sync.Body["rooms"].(map[string]any)["peek"].(map[string]any)[roomID].(map[string]any)
	for _, key := range []string{"timeline", "state"} {
		c.eventList(spectest.SyncEvent, "/sync rooms.peek."+key, pk[key].(map[string]any)["events"])
	}
}
