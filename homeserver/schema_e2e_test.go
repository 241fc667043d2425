package homeserver_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"plaza/homeserver/spectest"
)

// conformance validates live responses against the Matrix spec's own
// OpenAPI definitions. A mismatch is reported with t.Errorf, not t.Fatalf,
// so that one non-conforming endpoint does not hide the others.
type conformance struct {
	t    *testing.T
	spec *spectest.Spec
	// responses and events count what was checked, so the test can show
	// that its walk over the bodies found something to check.
	responses, events int
}

// check validates r against the spec's schema for (method, template, r.Status).
func (c *conformance) check(method, template string, r response) {
	c.t.Helper()
	c.responses++
	err := c.spec.Validate(method, template, r.Status, r.Raw)
	if errors.Is(err, spectest.ErrNoSchema) && r.Status >= 400 {
		// The spec lists this error status in prose only; its body is then
		// the standard error object every error response uses.
		c.checkError(method+" "+template+" "+strconv.Itoa(r.Status), r)
		return
	}
	if err != nil {
		c.t.Errorf("%v\nbody: %s", err, clip(r.Raw))
	}
}

// checkError validates an error body against the spec's standard error
// schema, for errors the spec names in prose (e.g. M_UNRECOGNIZED for an
// unknown endpoint, M_MISSING_TOKEN) rather than in an endpoint's responses.
func (c *conformance) checkError(what string, r response) {
	c.t.Helper()
	c.responses++
	if err := c.spec.ValidateSchema("api/client-server/definitions/errors/error.yaml", r.Raw); err != nil {
		c.t.Errorf("%s: %v\nbody: %s", what, err, clip(r.Raw))
	}
}

// events validates each event of a list against the spec's schema for its
// type; where names the list in the error message.
func (c *conformance) eventList(format spectest.EventFormat, where string, list any) int {
	c.t.Helper()
	evs, _ := list.([]any)
	for i, e := range evs {
		raw, err := json.Marshal(e)
		if err != nil {
			c.t.Fatal(err)
		}
		c.events++
		if err := c.spec.ValidateEvent(format, raw); err != nil {
			c.t.Errorf("%s[%d]: %v\nevent: %s", where, i, err, clip(raw))
		}
	}
	return len(evs)
}

// syncEvents validates every event inside a /sync response and returns how
// many it saw, so the caller can tell that the walk found something.
func (c *conformance) syncEvents(r response) int {
	c.t.Helper()
	n := 0
	obj := func(v any, key string) map[string]any {
		m, _ := v.(map[string]any)
		x, _ := m[key].(map[string]any)
		return x
	}
	for _, key := range []string{"presence", "account_data"} {
		n += c.eventList(spectest.SyncEvent, "/sync "+key, obj(r.Body, key)["events"])
	}
	rooms := obj(r.Body, "rooms")
	for _, section := range []string{"join", "leave"} {
		for id, room := range obj(rooms, section) {
			for _, key := range []string{"state", "timeline", "ephemeral", "account_data"} {
				n += c.eventList(spectest.SyncEvent, "/sync rooms."+section+"."+id+"."+key, obj(room, key)["events"])
			}
		}
	}
	return n
}

func clip(b []byte) string {
	const max = 1500
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// TestSchemaConformance drives the real server through the main
// Client-Server endpoints and checks every response, and the events inside
// them, against ../shared/matrix-spec.
func TestSchemaConformance(t *testing.T) {
	c := &conformance{t: t, spec: spectest.ForTest(t)}
	s := newServer(t)
	anon := s.anon()
	const v3 = "/_matrix/client/v3"

	// Discovery.
	c.check("GET", "/_matrix/client/versions", anon.must("GET", "/_matrix/client/versions", nil))
	c.check("GET", "/.well-known/matrix/client", anon.must("GET", "/.well-known/matrix/client", nil))

	// Registration: the UIA challenge, then success.
	uia := anon.do("POST", v3+"/register", map[string]any{"username": "alice", "password": "secret-alice"})
	if uia.Status != 401 {
		t.Fatalf("register without auth = %d %s, want the 401 UIA challenge", uia.Status, uia.Raw)
	}
	c.check("POST", v3+"/register", uia)
	reg := anon.must("POST", v3+"/register", map[string]any{
		"username": "alice", "password": "secret-alice", "auth": map[string]any{"type": "m.login.dummy"}})
	c.check("POST", v3+"/register", reg)
	alice := &client{t: t, base: s.URL, token: reg.str("access_token"), UserID: reg.str("user_id"), Device: reg.str("device_id")}
	bob, carol := s.register("bob"), s.register("carol")

	// Login, account, devices, capabilities.
	c.check("GET", v3+"/login", anon.must("GET", v3+"/login", nil))
	c.check("POST", v3+"/login", anon.must("POST", v3+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret-alice"}))
	c.check("POST", v3+"/login", anon.fails(403, "M_FORBIDDEN", "POST", v3+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong"}))
	c.check("GET", v3+"/account/whoami", alice.must("GET", v3+"/account/whoami", nil))
	c.check("GET", v3+"/devices", alice.must("GET", v3+"/devices", nil))
	c.check("GET", v3+"/capabilities", alice.must("GET", v3+"/capabilities", nil))
	c.check("GET", v3+"/account/whoami", anon.fails(401, "M_MISSING_TOKEN", "GET", v3+"/account/whoami", nil))
	c.checkError("an unknown endpoint", anon.fails(404, "M_UNRECOGNIZED", "GET", v3+"/nonsense", nil))

	// A room bob is in before his first sync, and leaves after it.
	brief := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", v3+"/join/"+brief, nil)

	// Bob's initial sync.
	initial := bob.sync("", 0)
	c.check("GET", v3+"/sync", initial)
	since := initial.str("next_batch")

	// Rooms: a public one bob joins by alias and a private one he is invited
	// to; he also leaves the room he was in before his first sync, so that
	// his next incremental sync has a join, an invite and a leave section.
	cr := alice.must("POST", v3+"/createRoom", map[string]any{
		"preset": "public_chat", "name": "Widgets", "topic": "All about widgets", "room_alias_name": "widgets"})
	c.check("POST", v3+"/createRoom", cr)
	roomID := cr.str("room_id")
	alias := "#widgets:plaza.test"
	// directory.yaml gives GET /directory/room/{roomAlias} no security
	// requirement: resolving an alias needs no access token.
	resolved := anon.do("GET", v3+"/directory/room/"+url.PathEscape(alias), nil)
	if resolved.Status != 200 {
		t.Errorf("GET /directory/room/{roomAlias} without a token = %d %s; the spec requires no authentication for it", resolved.Status, resolved.Raw)
		resolved = bob.must("GET", v3+"/directory/room/"+url.PathEscape(alias), nil)
	}
	c.check("GET", v3+"/directory/room/{roomAlias}", resolved)
	c.check("GET", v3+"/directory/room/{roomAlias}", bob.fails(404, "M_NOT_FOUND", "GET", v3+"/directory/room/"+url.PathEscape("#nowhere:plaza.test"), nil))
	private := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "private_chat", "name": "Secret"}).str("room_id")

	c.check("POST", v3+"/join/{roomIdOrAlias}", bob.must("POST", v3+"/join/"+url.PathEscape(alias), nil))
	c.check("POST", v3+"/rooms/{roomId}/invite", alice.must("POST", v3+"/rooms/"+private+"/invite", map[string]any{"user_id": bob.UserID}))
	alice.send(brief, text("bob will not stay"))
	c.check("POST", v3+"/rooms/{roomId}/leave", bob.must("POST", v3+"/rooms/"+brief+"/leave", nil))

	// Messages, an edit, a reaction, a thread, a reply.
	send := alice.must("PUT", v3+"/rooms/"+roomID+"/send/m.room.message/txn1", text("hello bob"))
	c.check("PUT", v3+"/rooms/{roomId}/send/{eventType}/{txnId}", send)
	hello := send.str("event_id")
	hi := bob.send(roomID, text("hi alice"))
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "* hello bob!", "m.new_content": text("hello bob!"),
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": hello}})
	alice.sendType(roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": hi, "key": "👍"}})
	bob.send(roomID, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": hello}})
	bob.send(roomID, map[string]any{"msgtype": "m.notice", "body": "> hello\nreply", "m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": hello}}})
	alice.must("PUT", v3+"/rooms/"+roomID+"/typing/"+url.PathEscape(alice.UserID), map[string]any{"typing": true, "timeout": 30000})
	bob.must("POST", v3+"/rooms/"+roomID+"/receipt/m.read/"+hello, map[string]any{})

	// Bob's incremental sync: the join (with timeline, state, ephemeral),
	// the invite and the leave.
	inc := bob.sync(since, 0)
	c.check("GET", v3+"/sync", inc)
	rooms, _ := inc.Body["rooms"].(map[string]any)
	for section, id := range map[string]string{"join": roomID, "invite": private, "leave": brief} {
		if sec, _ := rooms[section].(map[string]any); sec[id] == nil {
			t.Errorf("incremental sync lacks rooms.%s[%s], so its schema went untested: %s", section, id, clip(inc.Raw))
		}
	}
	if n := c.syncEvents(inc); n == 0 {
		t.Errorf("incremental sync carried no events to check: %s", clip(inc.Raw))
	}
	// A fresh initial sync, now that bob is in rooms.
	full := bob.sync("", 0)
	c.check("GET", v3+"/sync", full)
	c.syncEvents(full)

	// State.
	state := bob.must("GET", v3+"/rooms/"+roomID+"/state", nil)
	c.check("GET", v3+"/rooms/{roomId}/state", state)
	var stateList []any
	_ = json.Unmarshal(state.Raw, &stateList)
	c.eventList(spectest.ClientEvent, "/state", stateList)
	c.check("GET", v3+"/rooms/{roomId}/state/{eventType}/{stateKey}", bob.must("GET", v3+"/rooms/"+roomID+"/state/m.room.name/", nil))
	c.check("GET", v3+"/rooms/{roomId}/state/{eventType}/{stateKey}",
		bob.must("GET", v3+"/rooms/"+roomID+"/state/m.room.member/"+url.PathEscape(alice.UserID), nil))
	c.check("GET", v3+"/rooms/{roomId}/state/{eventType}/{stateKey}",
		bob.fails(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+roomID+"/state/m.room.avatar/", nil))
	c.check("PUT", v3+"/rooms/{roomId}/state/{eventType}/{stateKey}",
		alice.must("PUT", v3+"/rooms/"+roomID+"/state/m.room.topic/", map[string]any{"topic": "Widgets and gadgets"}))
	c.check("PUT", v3+"/rooms/{roomId}/state/{eventType}/{stateKey}",
		bob.fails(403, "M_FORBIDDEN", "PUT", v3+"/rooms/"+roomID+"/state/m.room.name/", map[string]any{"name": "Bob's"}))

	// History.
	msgs := bob.must("GET", v3+"/rooms/"+roomID+"/messages?dir=b&limit=50", nil)
	c.check("GET", v3+"/rooms/{roomId}/messages", msgs)
	if c.eventList(spectest.ClientEvent, "/messages chunk", msgs.Body["chunk"]) == 0 {
		t.Errorf("/messages returned no events to check: %s", clip(msgs.Raw))
	}
	c.eventList(spectest.ClientEvent, "/messages state", msgs.Body["state"])
	c.check("GET", v3+"/rooms/{roomId}/messages", carol.fails(403, "M_FORBIDDEN", "GET", v3+"/rooms/"+private+"/messages", nil))
	cx := bob.must("GET", v3+"/rooms/"+roomID+"/context/"+hi+"?limit=4", nil)
	c.check("GET", v3+"/rooms/{roomId}/context/{eventId}", cx)
	c.eventList(spectest.ClientEvent, "/context event", []any{cx.Body["event"]})
	c.eventList(spectest.ClientEvent, "/context events_before", cx.Body["events_before"])
	c.eventList(spectest.ClientEvent, "/context events_after", cx.Body["events_after"])
	c.eventList(spectest.ClientEvent, "/context state", cx.Body["state"])
	ev := bob.must("GET", v3+"/rooms/"+roomID+"/event/"+hello, nil)
	c.check("GET", v3+"/rooms/{roomId}/event/{eventId}", ev)
	c.eventList(spectest.ClientEvent, "/event", []any{ev.Body})
	c.check("GET", v3+"/rooms/{roomId}/event/{eventId}", bob.fails(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+roomID+"/event/$nope", nil))

	// Members.
	members := bob.must("GET", v3+"/rooms/"+roomID+"/members", nil)
	c.check("GET", v3+"/rooms/{roomId}/members", members)
	c.eventList(spectest.ClientEvent, "/members chunk", members.Body["chunk"])
	c.check("GET", v3+"/rooms/{roomId}/joined_members", bob.must("GET", v3+"/rooms/"+roomID+"/joined_members", nil))
	c.check("GET", v3+"/joined_rooms", bob.must("GET", v3+"/joined_rooms", nil))

	// Relations and threads.
	for _, tail := range []string{"", "/m.replace", "/m.thread/m.room.message"} {
		template := "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"
		switch strings.Count(tail, "/") {
		case 1:
			template += "/{relType}"
		case 2:
			template += "/{relType}/{eventType}"
		}
		rel := alice.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/relations/"+hello+tail, nil)
		c.check("GET", template, rel)
		c.eventList(spectest.ClientEvent, "/relations"+tail+" chunk", rel.Body["chunk"])
	}
	threads := alice.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/threads", nil)
	c.check("GET", "/_matrix/client/v1/rooms/{roomId}/threads", threads)
	c.eventList(spectest.ClientEvent, "/threads chunk", threads.Body["chunk"])

	// Profiles and the user directory.
	alice.must("PUT", v3+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]any{"displayname": "Alice Liddell"})
	c.check("GET", v3+"/profile/{userId}", anon.must("GET", v3+"/profile/"+url.PathEscape(alice.UserID), nil))
	c.check("GET", v3+"/profile/{userId}", anon.fails(404, "M_NOT_FOUND", "GET", v3+"/profile/"+url.PathEscape("@ghost:plaza.test"), nil))
	c.check("POST", v3+"/user_directory/search", bob.must("POST", v3+"/user_directory/search", map[string]any{"search_term": "liddell"}))

	// Filters.
	fr := bob.must("POST", v3+"/user/"+url.PathEscape(bob.UserID)+"/filter", map[string]any{
		"room": map[string]any{"timeline": map[string]any{"limit": 10, "types": []string{"m.room.message"}}}})
	c.check("POST", v3+"/user/{userId}/filter", fr)
	c.check("GET", v3+"/user/{userId}/filter/{filterId}",
		bob.must("GET", v3+"/user/"+url.PathEscape(bob.UserID)+"/filter/"+url.PathEscape(fr.str("filter_id")), nil))

	// More of the everyday surface a client touches.
	c.check("GET", v3+"/register/available", anon.must("GET", v3+"/register/available?username=dave", nil))
	c.check("GET", v3+"/register/available", anon.fails(400, "M_USER_IN_USE", "GET", v3+"/register/available?username=alice", nil))
	c.check("POST", v3+"/rooms/{roomId}/join", carol.must("POST", v3+"/rooms/"+roomID+"/join", nil))
	c.check("GET", v3+"/rooms/{roomId}/aliases", alice.must("GET", v3+"/rooms/"+roomID+"/aliases", nil))
	c.check("PUT", v3+"/rooms/{roomId}/typing/{userId}",
		alice.must("PUT", v3+"/rooms/"+roomID+"/typing/"+url.PathEscape(alice.UserID), map[string]any{"typing": false}))
	c.check("POST", v3+"/rooms/{roomId}/receipt/{receiptType}/{eventId}",
		carol.must("POST", v3+"/rooms/"+roomID+"/receipt/m.read/"+hello, map[string]any{}))
	c.check("POST", v3+"/rooms/{roomId}/read_markers",
		carol.must("POST", v3+"/rooms/"+roomID+"/read_markers", map[string]any{"m.fully_read": hello}))
	alice.must("PUT", v3+"/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "online", "status_msg": "coding"})
	c.check("GET", v3+"/presence/{userId}/status", bob.must("GET", v3+"/presence/"+url.PathEscape(alice.UserID)+"/status", nil))
	c.check("GET", v3+"/pushrules/", bob.must("GET", v3+"/pushrules/", nil))
	c.check("GET", v3+"/user/{userId}/account_data/{type}", carol.fails(404, "M_NOT_FOUND", "GET", v3+"/user/"+url.PathEscape(carol.UserID)+"/account_data/org.example.none", nil))
	c.check("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event",
		bob.must("GET", "/_matrix/client/v1/rooms/"+roomID+"/timestamp_to_event?dir=b&ts=99999999999999", nil))

	// Bob's sync after more activity: the redaction and carol's leave show
	// up as timeline events, the redacted one with emptied content.
	since = bob.sync("", 0).str("next_batch")
	c.check("PUT", v3+"/rooms/{roomId}/redact/{eventId}/{txnId}",
		alice.must("PUT", v3+"/rooms/"+roomID+"/redact/"+hi+"/r1", map[string]any{"reason": "spam"}))
	carol.must("POST", v3+"/rooms/"+roomID+"/leave", nil)
	late := bob.sync(since, 0)
	c.check("GET", v3+"/sync", late)
	c.syncEvents(late)
	redacted := bob.must("GET", v3+"/rooms/"+roomID+"/event/"+hi, nil)
	c.check("GET", v3+"/rooms/{roomId}/event/{eventId}", redacted)
	c.eventList(spectest.ClientEvent, "/event (redacted)", []any{redacted.Body})
	t.Logf("checked %d responses and %d events against the spec", c.responses, c.events)
}
