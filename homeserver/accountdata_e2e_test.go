package homeserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

// globalAccountData returns the top-level account data events of a sync
// response by type.
func globalAccountData(r response) map[string]map[string]any {
	out := map[string]map[string]any{}
	ad, _ := r.Body["account_data"].(map[string]any)
	evs, _ := ad["events"].([]any)
	for _, e := range evs {
		m := e.(map[string]any)
		out[m["type"].(string)], _ = m["content"].(map[string]any)
	}
	return out
}

// roomAccountData returns a joined room's account data events by type.
func roomAccountData(r response, roomID string) map[string]map[string]any {
	out := map[string]map[string]any{}
	rooms, _ := r.Body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	ad, _ := room["account_data"].(map[string]any)
	evs, _ := ad["events"].([]any)
	for _, e := range evs {
		m := e.(map[string]any)
		out[m["type"].(string)], _ = m["content"].(map[string]any)
	}
	return out
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAccountData(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	other := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	global := "/_matrix/client/v3/user/" + alice.UserID + "/account_data/"
	inRoom := "/_matrix/client/v3/user/" + alice.UserID + "/rooms/" + url.PathEscape(roomID) + "/account_data/"

	alice.fails(404, "M_NOT_FOUND", "GET", global+"org.example.config", nil)
	alice.fails(404, "M_NOT_FOUND", "GET", inRoom+"org.example.room", nil)

	// Round trips.
	alice.must("PUT", global+"org.example.config", map[string]any{"theme": "dark", "n": 1})
	alice.must("PUT", inRoom+"org.example.room", map[string]any{"pinned": true})
	if r := alice.must("GET", global+"org.example.config", nil); r.str("theme") != "dark" || r.Body["n"] != 1.0 {
		t.Fatalf("global account data: %s", r.Raw)
	}
	if r := alice.must("GET", inRoom+"org.example.room", nil); r.Body["pinned"] != true {
		t.Fatalf("room account data: %s", r.Raw)
	}
	// No fallback from room to global data, nor the other way round.
	alice.fails(404, "M_NOT_FOUND", "GET", inRoom+"org.example.config", nil)
	alice.fails(404, "M_NOT_FOUND", "GET", global+"org.example.room", nil)

	// Initial sync: everything, plus the push rules.
	first := alice.sync("", 0)
	ga := globalAccountData(first)
	if ga["org.example.config"]["theme"] != "dark" || ga["m.push_rules"]["global"] == nil {
		t.Fatalf("initial sync global account data: %s", first.Raw)
	}
	if ra := roomAccountData(first, roomID); ra["org.example.room"]["pinned"] != true {
		t.Fatalf("initial sync room account data: %s", first.Raw)
	}
	since := first.str("next_batch")

	// Incremental: only what changed.
	alice.must("PUT", global+"org.example.other", map[string]any{"x": 1})
	r := alice.sync(since, 5000)
	ga = globalAccountData(r)
	if len(ga) != 1 || ga["org.example.other"]["x"] != 1.0 {
		t.Fatalf("incremental sync global account data, want only org.example.other: %s", r.Raw)
	}
	if ra := roomAccountData(r, roomID); len(ra) != 0 {
		t.Fatalf("unchanged room account data sent again: %s", r.Raw)
	}
	since = r.str("next_batch")

	// A room change wakes a waiting sync and shows only in its room.
	done := make(chan response)
	go func() { done <- alice.syncNoFatal(since) }()
	time.Sleep(100 * time.Millisecond)
	alice.must("PUT", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+url.PathEscape(other)+"/account_data/org.example.room", map[string]any{"v": 2})
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a long-poll did not wake for account data")
	}
	if ra := roomAccountData(r, other); ra["org.example.room"]["v"] != 2.0 || len(globalAccountData(r)) != 0 || len(roomAccountData(r, roomID)) != 0 {
		t.Fatalf("room account data change: %s", r.Raw)
	}
	since = r.str("next_batch")
	if r := alice.sync(since, 0); len(globalAccountData(r)) != 0 || len(roomAccountData(r, other)) != 0 {
		t.Fatalf("account data delivered twice: %s", r.Raw)
	}

	// Overwriting replaces.
	alice.must("PUT", global+"org.example.config", map[string]any{"theme": "light"})
	if r := alice.must("GET", global+"org.example.config", nil); r.str("theme") != "light" || r.Body["n"] != nil {
		t.Fatalf("overwritten account data: %s", r.Raw)
	}

	// A sync filter chooses types.
	f := url.QueryEscape(`{"account_data":{"not_types":["m.push_rules","org.example.o*"]},"room":{"account_data":{"types":[]}}}`)
	fr := alice.must("GET", "/_matrix/client/v3/sync?filter="+f, nil)
	if ga := globalAccountData(fr); len(ga) != 1 || ga["org.example.config"] == nil {
		t.Fatalf("filtered global account data: %s", fr.Raw)
	}
	if ra := roomAccountData(fr, roomID); len(ra) != 0 {
		t.Fatalf("filtered room account data: %s", fr.Raw)
	}

	// Someone else's account data.
	bob.fails(403, "M_FORBIDDEN", "GET", global+"org.example.config", nil)
	bob.fails(403, "M_FORBIDDEN", "PUT", global+"org.example.config", map[string]any{"theme": "pwned"})
	bob.fails(403, "M_FORBIDDEN", "GET", inRoom+"org.example.room", nil)
	bob.fails(403, "M_FORBIDDEN", "PUT", inRoom+"org.example.room", map[string]any{})
	if r := bob.sync("", 0); globalAccountData(r)["org.example.config"] != nil {
		t.Fatalf("bob sees alice's account data: %s", r.Raw)
	}

	// Bad input, and nothing written.
	alice.fails(400, "M_NOT_JSON", "PUT", global+"org.example.bad", "{")
	alice.fails(400, "M_NOT_JSON", "PUT", global+"org.example.bad", "")
	alice.fails(400, "M_BAD_JSON", "PUT", global+"org.example.bad", "[1]")
	alice.fails(400, "M_BAD_JSON", "PUT", global+"org.example.bad", `"text"`)
	alice.fails(413, "M_TOO_LARGE", "PUT", global+"org.example.bad", map[string]any{"x": strings.Repeat("x", 70000)})
	alice.fails(400, "M_INVALID_PARAM", "PUT", global+strings.Repeat("t", 300), map[string]any{})
	alice.fails(400, "M_INVALID_PARAM", "PUT", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/not-a-room/account_data/org.example.bad", map[string]any{})
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/%40alice:plaza.test/account_data/org.example.bad", nil)
	for _, p := range []string{global, inRoom} {
		alice.fails(405, "M_BAD_JSON", "PUT", p+"m.fully_read", map[string]any{"event_id": "$x"})
		alice.fails(405, "M_BAD_JSON", "PUT", p+"m.push_rules", map[string]any{"global": map[string]any{}})
	}
	alice.fails(404, "M_NOT_FOUND", "GET", global+"org.example.bad", nil)
	alice.fails(404, "M_NOT_FOUND", "GET", inRoom+"org.example.bad", nil)

	// The server-managed types read as account data.
	if r := alice.must("GET", global+"m.push_rules", nil); r.Body["global"] == nil {
		t.Fatalf("m.push_rules as account data: %s", r.Raw)
	}
	alice.fails(404, "M_NOT_FOUND", "GET", inRoom+"m.fully_read", nil)
	ev := alice.send(roomID, text("read me"))
	alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/read_markers", map[string]any{"m.fully_read": ev})
	if r := alice.must("GET", inRoom+"m.fully_read", nil); r.str("event_id") != ev {
		t.Fatalf("m.fully_read as account data: %s", r.Raw)
	}
}

func TestRoomTags(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	tags := "/_matrix/client/v3/user/" + alice.UserID + "/rooms/" + url.PathEscape(roomID) + "/tags"

	if r := alice.must("GET", tags, nil); jsonString(r.Body) != `{"tags":{}}` {
		t.Fatalf("no tags: %s", r.Raw)
	}
	since := alice.sync("", 0).str("next_batch")
	alice.must("PUT", tags+"/m.favourite", map[string]any{"order": 0.25})
	alice.must("PUT", tags+"/u.work", map[string]any{})
	alice.must("PUT", tags+"/"+url.PathEscape("u.with/slash"), map[string]any{"order": 1})
	if r := alice.must("GET", tags, nil); jsonString(r.Body) != `{"tags":{"m.favourite":{"order":0.25},"u.with/slash":{"order":1},"u.work":{}}}` {
		t.Fatalf("tags: %s", r.Raw)
	}
	r := alice.sync(since, 5000)
	if tag := roomAccountData(r, roomID)["m.tag"]; jsonString(tag) != `{"tags":{"m.favourite":{"order":0.25},"u.with/slash":{"order":1},"u.work":{}}}` {
		t.Fatalf("m.tag in sync: %s", r.Raw)
	}
	since = r.str("next_batch")

	// Replacing and removing.
	alice.must("PUT", tags+"/m.favourite", map[string]any{"order": 0.5})
	alice.must("DELETE", tags+"/u.work", nil)
	alice.must("DELETE", tags+"/u.never-set", nil)
	r = alice.sync(since, 5000)
	if tag := roomAccountData(r, roomID)["m.tag"]; jsonString(tag) != `{"tags":{"m.favourite":{"order":0.5},"u.with/slash":{"order":1}}}` {
		t.Fatalf("m.tag after changes: %s", r.Raw)
	}
	since = r.str("next_batch")
	// Deleting a tag the room does not have changes nothing, so no sync.
	alice.must("DELETE", tags+"/u.never-set", nil)
	if r := alice.sync(since, 0); roomAccountData(r, roomID)["m.tag"] != nil {
		t.Fatalf("a no-op delete was synced: %s", r.Raw)
	}
	// Tags are the room's m.tag account data.
	ad := alice.must("GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+url.PathEscape(roomID)+"/account_data/m.tag", nil)
	if jsonString(ad.Body) != `{"tags":{"m.favourite":{"order":0.5},"u.with/slash":{"order":1}}}` {
		t.Fatalf("m.tag account data: %s", ad.Raw)
	}

	// Devices tagging a fresh room at once all win: updates of m.tag are
	// read-modify-write under a lock, including the first one's insert.
	fresh := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).str("room_id")
	freshTags := "/_matrix/client/v3/user/" + alice.UserID + "/rooms/" + url.PathEscape(fresh) + "/tags/"
	statuses := make(chan int)
	for i := range 12 {
		go func() { statuses <- alice.do("PUT", freshTags+fmt.Sprintf("u.t%02d", i), map[string]any{}).Status }()
	}
	for range 12 {
		if st := <-statuses; st != 200 {
			t.Fatalf("concurrent tag PUT = %d", st)
		}
	}
	if r := alice.must("GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+url.PathEscape(fresh)+"/tags", nil); len(r.Body["tags"].(map[string]any)) != 12 {
		t.Fatalf("concurrent tagging lost tags: %s", r.Raw)
	}

	// Bad input, and nothing written.
	bob.fails(403, "M_FORBIDDEN", "GET", tags, nil)
	bob.fails(403, "M_FORBIDDEN", "PUT", tags+"/u.bob", map[string]any{})
	bob.fails(403, "M_FORBIDDEN", "DELETE", tags+"/m.favourite", nil)
	alice.fails(400, "M_BAD_JSON", "PUT", tags+"/u.bad", map[string]any{"order": 1.5})
	alice.fails(400, "M_BAD_JSON", "PUT", tags+"/u.bad", map[string]any{"order": -0.1})
	alice.fails(400, "M_BAD_JSON", "PUT", tags+"/u.bad", map[string]any{"order": "first"})
	alice.fails(400, "M_BAD_JSON", "PUT", tags+"/u.bad", `{"order": null}`)
	alice.fails(400, "M_BAD_JSON", "PUT", tags+"/u.bad", "[]")
	alice.fails(400, "M_NOT_JSON", "PUT", tags+"/u.bad", "{")
	alice.fails(400, "M_INVALID_PARAM", "PUT", tags+"/"+strings.Repeat("x", 256), map[string]any{})
	alice.fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/nope/tags", nil)
	if r := alice.must("GET", tags, nil); strings.Contains(string(r.Raw), "u.bad") || strings.Contains(string(r.Raw), "xxx") {
		t.Fatalf("a refused tag was written: %s", r.Raw)
	}
}

// pushRules fetches the requester's global ruleset.
func pushRules(c *client) map[string]any {
	c.t.Helper()
	return c.must("GET", "/_matrix/client/v3/pushrules/global/", nil).Body
}

func ruleIDsOf(rs map[string]any, kind string) []string {
	var out []string
	for _, r := range rs[kind].([]any) {
		out = append(out, r.(map[string]any)["rule_id"].(string))
	}
	return out
}

func TestPushRules(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	pr := "/_matrix/client/v3/pushrules/global/"

	// The defaults, with the user's own ID where the spec puts it.
	all := alice.must("GET", "/_matrix/client/v3/pushrules/", nil)
	rs := all.Body["global"].(map[string]any)
	if got := strings.Join(ruleIDsOf(rs, "override"), " "); got != ".m.rule.master .m.rule.suppress_notices .m.rule.invite_for_me .m.rule.member_event .m.rule.is_user_mention .m.rule.is_room_mention .m.rule.tombstone .m.rule.reaction .m.rule.room.server_acl .m.rule.suppress_edits" {
		t.Fatalf("default override rules: %s", got)
	}
	if got := strings.Join(ruleIDsOf(rs, "underride"), " "); got != ".m.rule.call .m.rule.encrypted_room_one_to_one .m.rule.room_one_to_one .m.rule.message .m.rule.encrypted" {
		t.Fatalf("default underride rules: %s", got)
	}
	for _, k := range []string{"content", "room", "sender"} {
		if len(rs[k].([]any)) != 0 {
			t.Fatalf("default %s rules: %s", k, all.Raw)
		}
	}
	mention := alice.must("GET", pr+"override/.m.rule.is_user_mention", nil)
	if !strings.Contains(string(mention.Raw), `"value":"`+alice.UserID+`"`) || mention.Body["default"] != true {
		t.Fatalf("is_user_mention: %s", mention.Raw)
	}
	since := alice.sync("", 0).str("next_batch")

	// Add an override rule, then another before it.
	alice.must("PUT", pr+"override/first", map[string]any{
		"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"}, map[string]any{"kind": "room_member_count", "is": "<=10"}},
		"actions":    []any{"notify", map[string]any{"set_tweak": "sound", "value": "beeroclock.wav"}}})
	alice.must("PUT", pr+"override/second?before=first", map[string]any{"conditions": []any{}, "actions": []any{}})
	alice.must("PUT", pr+"override/third?after=first", map[string]any{"actions": []any{"notify"}})
	if got := strings.Join(ruleIDsOf(pushRules(alice), "override")[:5], " "); got != ".m.rule.master second first third .m.rule.suppress_notices" {
		t.Fatalf("override order after adding: %s", got)
	}
	first := alice.must("GET", pr+"override/first", nil)
	if first.Body["enabled"] != true || first.Body["default"] != false || len(first.Body["conditions"].([]any)) != 2 {
		t.Fatalf("the new rule: %s", first.Raw)
	}
	third := alice.must("GET", pr+"override/third", nil)
	if jsonString(third.Body["conditions"]) != "[]" {
		t.Fatalf("a rule without conditions should show none: %s", third.Raw)
	}

	// m.push_rules in sync after a change, with the change.
	r := alice.sync(since, 5000)
	pushed := globalAccountData(r)["m.push_rules"]
	if pushed == nil || !strings.Contains(jsonString(pushed), `"rule_id":"second"`) {
		t.Fatalf("m.push_rules after a change: %s", r.Raw)
	}
	since = r.str("next_batch")
	if r := alice.sync(since, 0); globalAccountData(r)["m.push_rules"] != nil {
		t.Fatalf("unchanged push rules sent again: %s", r.Raw)
	}

	// Content, room and sender rules.
	alice.must("PUT", pr+"content/cake", map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}})
	alice.must("PUT", pr+"room/"+url.PathEscape("!dj234r78wl45Gh4D:matrix.org"), map[string]any{"actions": []any{}})
	alice.must("PUT", pr+"sender/"+url.PathEscape("@spambot:matrix.org"), map[string]any{"actions": []any{"dont_notify"}})
	if r := alice.must("GET", pr+"content/cake", nil); r.str("pattern") != "cake*lie" {
		t.Fatalf("content rule: %s", r.Raw)
	}
	if r := alice.must("GET", pr+"sender/"+url.PathEscape("@spambot:matrix.org"), nil); jsonString(r.Body["actions"]) != "[]" || r.Body["conditions"] != nil {
		t.Fatalf("sender rule (dont_notify dropped, no conditions): %s", r.Raw)
	}

	// Disable a default, change its actions, and read both back.
	alice.must("PUT", pr+"override/.m.rule.member_event/enabled", map[string]any{"enabled": false})
	if r := alice.must("GET", pr+"override/.m.rule.member_event/enabled", nil); r.Body["enabled"] != false {
		t.Fatalf("disabled default: %s", r.Raw)
	}
	alice.must("PUT", pr+"underride/.m.rule.message/actions", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}}})
	if r := alice.must("GET", pr+"underride/.m.rule.message/actions", nil); jsonString(r.Body) != `{"actions":["notify",{"set_tweak":"sound","value":"bing"}]}` {
		t.Fatalf("changed default actions: %s", r.Raw)
	}
	msg := alice.must("GET", pr+"underride/.m.rule.message", nil)
	if msg.Body["default"] != true || msg.Body["enabled"] != true {
		t.Fatalf("a changed default is still a default: %s", msg.Raw)
	}
	// And a user rule's.
	alice.must("PUT", pr+"override/first/enabled", map[string]any{"enabled": false})
	alice.must("PUT", pr+"override/first/actions", map[string]any{"actions": []any{}})
	if r := alice.must("GET", pr+"override/first", nil); r.Body["enabled"] != false || jsonString(r.Body["actions"]) != "[]" {
		t.Fatalf("changed user rule: %s", r.Raw)
	}
	// Updating a rule keeps it disabled and in place.
	alice.must("PUT", pr+"override/first", map[string]any{"actions": []any{"notify"}})
	if r := alice.must("GET", pr+"override/first", nil); r.Body["enabled"] != false {
		t.Fatalf("an update re-enabled the rule: %s", r.Raw)
	}
	if got := strings.Join(ruleIDsOf(pushRules(alice), "override")[:4], " "); got != ".m.rule.master second first third" {
		t.Fatalf("override order after updating: %s", got)
	}

	// Delete an own rule; defaults cannot be deleted.
	alice.must("DELETE", pr+"override/second", nil)
	alice.fails(404, "M_NOT_FOUND", "GET", pr+"override/second", nil)
	alice.fails(404, "M_NOT_FOUND", "DELETE", pr+"override/second", nil)
	alice.fails(400, "M_INVALID_PARAM", "DELETE", pr+"override/.m.rule.master", nil)
	alice.fails(400, "M_INVALID_PARAM", "DELETE", pr+"underride/.m.rule.message", nil)
	alice.must("GET", pr+"override/.m.rule.master", nil)

	r = alice.sync(since, 5000)
	pushed = globalAccountData(r)["m.push_rules"]
	js := jsonString(pushed)
	if pushed == nil || strings.Contains(js, `"rule_id":"second"`) || !strings.Contains(js, `"rule_id":"cake"`) || !strings.Contains(js, `"bing"`) {
		t.Fatalf("m.push_rules after more changes: %s", r.Raw)
	}
	since = r.str("next_batch")

	// Bad input: spec errors, nothing written.
	before := jsonString(pushRules(alice))
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"override/.m.rule.mine", map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"override/"+url.PathEscape(`back\slash`), map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"override/"+url.PathEscape("a/b"), map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"weird/x", map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "GET", pr+"weird/x", nil)
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"override/x?before=nope", map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"override/x?after=.m.rule.master", map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"room/not-a-room", map[string]any{"actions": []any{}})
	alice.fails(400, "M_INVALID_PARAM", "PUT", pr+"sender/not-a-user", map[string]any{"actions": []any{}})
	alice.fails(400, "M_MISSING_PARAM", "PUT", pr+"override/x", map[string]any{"conditions": []any{}})
	alice.fails(400, "M_MISSING_PARAM", "PUT", pr+"content/x", map[string]any{"actions": []any{}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{"explode"}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": "notify"})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{map[string]any{"set_tweak": "highlight", "value": "yes"}}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "type"}}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "many"}}})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "k", "value": []any{1}}}})
	alice.fails(400, "M_NOT_JSON", "PUT", pr+"override/x", "{")
	alice.fails(413, "M_TOO_LARGE", "PUT", pr+"content/x", map[string]any{"pattern": strings.Repeat("x", 20000), "actions": []any{}})
	alice.fails(404, "M_NOT_FOUND", "PUT", pr+"override/nope/enabled", map[string]any{"enabled": true})
	alice.fails(404, "M_NOT_FOUND", "PUT", pr+"override/nope/actions", map[string]any{"actions": []any{}})
	alice.fails(404, "M_NOT_FOUND", "GET", pr+"override/nope/actions", nil)
	alice.fails(404, "M_NOT_FOUND", "PUT", pr+"content/.m.rule.master/enabled", map[string]any{"enabled": true})
	alice.fails(400, "M_MISSING_PARAM", "PUT", pr+"override/.m.rule.master/enabled", map[string]any{})
	alice.fails(400, "M_BAD_JSON", "PUT", pr+"override/.m.rule.master/enabled", map[string]any{"enabled": "yes"})
	alice.fails(400, "M_MISSING_PARAM", "PUT", pr+"override/.m.rule.master/actions", map[string]any{})
	if after := jsonString(pushRules(alice)); after != before {
		t.Fatalf("refused requests changed the push rules:\nbefore %s\nafter  %s", before, after)
	}
	if r := alice.sync(since, 0); globalAccountData(r)["m.push_rules"] != nil {
		t.Fatalf("refused requests were synced: %s", r.Raw)
	}
	// Only the global scope exists.
	alice.fails(404, "M_UNRECOGNIZED", "GET", "/_matrix/client/v3/pushrules/device/override/x", nil)
	// /notifications is not implemented.
	alice.fails(404, "M_UNRECOGNIZED", "GET", "/_matrix/client/v3/notifications", nil)
}

// TestAccountDataInNewlyJoinedRoom: a room joined in the window gets a full
// section in /sync, and with it all its account data.
func TestAccountDataInNewlyJoinedRoom(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	// Bob tags the room before joining it (a client may know it from an invite or a link).
	bob.must("PUT", "/_matrix/client/v3/user/"+bob.UserID+"/rooms/"+url.PathEscape(roomID)+"/tags/u.later", map[string]any{})
	since := bob.sync("", 0).str("next_batch")
	bob.must("POST", "/_matrix/client/v3/join/"+roomID, nil)
	r := bob.sync(since, 5000)
	if tag := roomAccountData(r, roomID)["m.tag"]; jsonString(tag) != `{"tags":{"u.later":{}}}` {
		t.Fatalf("a newly joined room's account data: %s", r.Raw)
	}
}

// TestAccountDataAfterRestart: account data positions seed the stream after
// a restart, so a change made right after one is not hidden behind a token
// handed out before it.
func TestAccountDataAfterRestart(t *testing.T) {
	pool := storagetest.NewDB(t, storage.Migrations())
	dir := t.TempDir()
	start := func() *httptest.Server {
		hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", DataDir: dir, Registration: "open", BcryptCost: bcrypt.MinCost}, storage.New(pool))
		if err != nil {
			t.Fatal(err)
		}
		return httptest.NewServer(hs.Handler())
	}
	ts := start()
	s := &testServer{t: t, URL: ts.URL}
	alice := s.register("alice")
	global := "/_matrix/client/v3/user/" + alice.UserID + "/account_data/"
	alice.must("PUT", global+"org.example.a", map[string]any{"v": 1})
	alice.must("PUT", "/_matrix/client/v3/pushrules/global/override/mine", map[string]any{"actions": []any{}})
	tok := alice.sync("", 0).str("next_batch")
	ts.Close()

	ts2 := start()
	defer ts2.Close()
	alice.base = ts2.URL
	alice.must("PUT", global+"org.example.b", map[string]any{"v": 2})
	r := alice.sync(tok, 5000)
	if ga := globalAccountData(r); ga["org.example.b"]["v"] != 2.0 || ga["org.example.a"] != nil || ga["m.push_rules"] != nil {
		t.Fatalf("sync after restart: %s", r.Raw)
	}
	if r := alice.must("GET", "/_matrix/client/v3/pushrules/global/override/mine", nil); r.Body["enabled"] != true {
		t.Fatalf("push rule after restart: %s", r.Raw)
	}
}
