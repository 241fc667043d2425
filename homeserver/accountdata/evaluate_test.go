package accountdata

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const bob = "@bob:plaza.test"

// event decodes an event the way callers of Evaluate do.
func event(t *testing.T, js string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("test event %s: %v", js, err)
	}
	return m
}

func defaults(t *testing.T) Ruleset {
	t.Helper()
	rs, err := effective(bob, &userRules{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestEvaluateDefaultRules runs the spec's default rules over the events
// they are written for.
func TestEvaluateDefaultRules(t *testing.T) {
	group := func(ev string) EventView {
		return EventView{Event: event(t, ev), UserID: bob, DisplayName: "Bob", MemberCount: 5, SenderPowerLevel: 0}
	}
	oneToOne := func(ev string) EventView {
		v := group(ev)
		v.MemberCount = 2
		return v
	}
	moderator := func(v EventView) EventView {
		v.SenderPowerLevel = 50
		return v
	}
	tests := []struct {
		name      string
		ev        EventView
		notify    bool
		highlight bool
		sound     string
	}{
		{"a message in a group notifies silently", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"hi"}}`), true, false, ""},
		{"a message in a 1:1 room notifies with sound", oneToOne(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"hi"}}`), true, false, "default"},
		{"a mention highlights", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"hey","m.mentions":{"user_ids":["@carol:plaza.test","@bob:plaza.test"]}}}`), true, true, "default"},
		{"a mention of someone else does not highlight", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"hey","m.mentions":{"user_ids":["@carol:plaza.test"]}}}`), true, false, ""},
		{"a body naming the user is no mention since v1.17", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"bob: @bob:plaza.test"}}`), true, false, ""},
		{"a notice does not notify", oneToOne(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.notice","body":"bot says"}}`), false, false, ""},
		{"an edit does not notify", oneToOne(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"* fixed","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}}`), false, false, ""},
		{"a reply notifies", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"yes","m.relates_to":{"m.in_reply_to":{"event_id":"$x"}}}}`), true, false, ""},
		{"a reaction does not notify", oneToOne(`{"type":"m.reaction","sender":"@alice:plaza.test","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"👍"}}}`), false, false, ""},
		{"own messages never notify", oneToOne(`{"type":"m.room.message","sender":"@bob:plaza.test","content":{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":["@bob:plaza.test"]}}}`), false, false, ""},
		{"an invite for me notifies with sound", group(`{"type":"m.room.member","sender":"@alice:plaza.test","state_key":"@bob:plaza.test","content":{"membership":"invite"}}`), true, false, "default"},
		{"an invite for someone else does not notify", group(`{"type":"m.room.member","sender":"@alice:plaza.test","state_key":"@carol:plaza.test","content":{"membership":"invite"}}`), false, false, ""},
		{"a join does not notify", oneToOne(`{"type":"m.room.member","sender":"@alice:plaza.test","state_key":"@alice:plaza.test","content":{"membership":"join"}}`), false, false, ""},
		{"@room from a moderator highlights", moderator(group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}}`)), true, true, ""},
		{"@room from anyone else is a plain message", group(`{"type":"m.room.message","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}}`), true, false, ""},
		{"a room upgrade highlights", group(`{"type":"m.room.tombstone","sender":"@alice:plaza.test","state_key":"","content":{"replacement_room":"!new"}}`), true, true, ""},
		{"a tombstone that is not state does nothing", group(`{"type":"m.room.tombstone","sender":"@alice:plaza.test","content":{"replacement_room":"!new"}}`), false, false, ""},
		{"server ACL changes do not notify", group(`{"type":"m.room.server_acl","sender":"@alice:plaza.test","state_key":"","content":{"allow":["*"]}}`), false, false, ""},
		{"a call rings", group(`{"type":"m.call.invite","sender":"@alice:plaza.test","content":{}}`), true, false, "ring"},
		{"encrypted in a 1:1 room notifies with sound", oneToOne(`{"type":"m.room.encrypted","sender":"@alice:plaza.test","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`), true, false, "default"},
		{"encrypted in a group notifies silently", group(`{"type":"m.room.encrypted","sender":"@alice:plaza.test","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`), true, false, ""},
		{"other events do nothing", group(`{"type":"m.room.topic","sender":"@alice:plaza.test","state_key":"","content":{"topic":"t"}}`), false, false, ""},
	}
	rs := defaults(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, h, s := Evaluate(rs, tc.ev)
			if n != tc.notify || h != tc.highlight || s != tc.sound {
				t.Fatalf("Evaluate = notify %v, highlight %v, sound %q; want %v, %v, %q", n, h, s, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

func TestEvaluateUserChanges(t *testing.T) {
	msg := EventView{Event: event(t, `{"type":"m.room.message","room_id":"!r","sender":"@alice:plaza.test","content":{"msgtype":"m.text","body":"Time for tea?"}}`),
		UserID: bob, MemberCount: 5}
	f := false
	tests := []struct {
		name      string
		u         *userRules
		notify    bool
		highlight bool
		sound     string
	}{
		{"master on silences everything", &userRules{Defaults: map[string]defaultChange{"override/.m.rule.master": {Enabled: boolp(true)}}}, false, false, ""},
		{"a content rule matches a word", &userRules{Rules: map[Kind][]Rule{KindContent: {
			{RuleID: "tea", Enabled: true, Pattern: "tea", Actions: []Action{{Name: "notify"}, {Name: "set_tweak", Tweak: "sound", Value: json.RawMessage(`"kettle"`)}}}}}}, true, false, "kettle"},
		{"a content rule does not match inside a word", &userRules{Rules: map[Kind][]Rule{KindContent: {
			{RuleID: "te", Enabled: true, Pattern: "te", Actions: []Action{{Name: "notify"}, {Name: "set_tweak", Tweak: "highlight"}}}}}}, true, false, ""},
		{"a disabled user rule is skipped", &userRules{Rules: map[Kind][]Rule{KindRoom: {
			{RuleID: "!r", Enabled: false, Actions: []Action{}}}}}, true, false, ""},
		{"a room rule mutes the room", &userRules{Rules: map[Kind][]Rule{KindRoom: {
			{RuleID: "!r", Enabled: true, Actions: []Action{}}}}}, false, false, ""},
		{"a sender rule with highlight false", &userRules{Rules: map[Kind][]Rule{KindSender: {
			{RuleID: "@alice:plaza.test", Enabled: true, Actions: []Action{{Name: "notify"}, {Name: "set_tweak", Tweak: "highlight", Value: json.RawMessage(`false`)}}}}}}, true, false, ""},
		{"highlight without notify shows nothing", &userRules{Rules: map[Kind][]Rule{KindOverride: {
			{RuleID: "hl", Enabled: true, Conditions: []Condition{}, Actions: []Action{{Name: "set_tweak", Tweak: "highlight"}}}}}}, false, false, ""},
		{"an unknown condition never matches", &userRules{Rules: map[Kind][]Rule{KindOverride: {
			{RuleID: "odd", Enabled: true, Conditions: []Condition{{Kind: "org.example.odd"}}, Actions: []Action{}}}}}, true, false, ""},
		{"disabling .m.rule.message leaves nothing", &userRules{Defaults: map[string]defaultChange{"underride/.m.rule.message": {Enabled: &f}}}, false, false, ""},
		{"changing .m.rule.message's actions", &userRules{Defaults: map[string]defaultChange{"underride/.m.rule.message": {Actions: []Action{{Name: "notify"}, {Name: "set_tweak", Tweak: "highlight"}}}}}, true, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := effective(bob, tc.u)
			if err != nil {
				t.Fatal(err)
			}
			n, h, s := Evaluate(rs, msg)
			if n != tc.notify || h != tc.highlight || s != tc.sound {
				t.Fatalf("Evaluate = %v, %v, %q; want %v, %v, %q", n, h, s, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

func boolp(b bool) *bool { return &b }

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s  string
		words, want bool
	}{
		// The spec's event_match examples.
		{"lunc?*", "Lunch plans", false, true},
		{"lunc?*", "LUNCH", false, true},
		{"lunc?*", " lunch", false, false},
		{"lunc?*", "lunc", false, false},
		{"ex*ple", "An example event.", true, true},
		{"ex*ple", "exple", true, true},
		{"ex*ple", "An exciting triple-whammy", true, true},
		{"ex*ple", "examples", true, false},
		{"ex*ple", "an example", false, false},
		{"", "", false, true},
		{"", "x", false, false},
		{"m.notice", "m.notice", false, true},
		{"m.notice", "m.noticeX", false, false},
		{"tea", "tea", true, true},
		{"tea", "steam", true, false},
		{"tea", "(tea)", true, true},
		{"*", "", false, true},
		{"a?c", "abc", false, true},
		{"a?c", "ac", false, false},
		{"ÄB*", "äbc", false, true},
	}
	for _, tc := range tests {
		if got := globMatch(tc.pattern, tc.s, true, tc.words); got != tc.want {
			t.Errorf("globMatch(%q, %q, words=%v) = %v, want %v", tc.pattern, tc.s, tc.words, got, tc.want)
		}
	}
	// Linear, not exponential, on a pattern that defeats backtracking.
	long := strings.Repeat("a", 20000)
	if globMatch(strings.Repeat("*a", 30)+"*b", long, true, true) {
		t.Error("pathological pattern matched")
	}
}

func TestLiteralWordMatch(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       bool
	}{
		{"Bob", "hey bob!", true},
		{"Bob", "bobby", false},
		{"B*b", "hi bob", false}, // a display name is not a pattern
		{"B*b", "hi b*b", true},
	} {
		if got := literalWordMatch(tc.name, tc.body); got != tc.want {
			t.Errorf("literalWordMatch(%q, %q) = %v, want %v", tc.name, tc.body, got, tc.want)
		}
	}
}

func TestPropertyPaths(t *testing.T) {
	for key, want := range map[string][]string{
		"content.body":             {"content", "body"},
		`content.m\.relates_to`:    {"content", "m.relates_to"},
		`content.m\\foo`:           {"content", `m\foo`},
		`content.m\xfoo`:           {"content", `m\xfoo`},
		`content.m\.mentions.room`: {"content", "m.mentions", "room"},
	} {
		if got := splitPath(key); !reflect.DeepEqual(got, want) {
			t.Errorf("splitPath(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestPropertyConditions(t *testing.T) {
	ev := EventView{Event: event(t, `{"type":"m.room.create","content":{"m.federate":true,"n":1,"f":1.5,"nothing":null,"s":"true",
		"alt_aliases":["#somewhere:example.org","#myroom:example.com",{"x":1}]}}`)}
	tests := []struct {
		cond Condition
		want bool
	}{
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, true},
		{Condition{Kind: "event_property_is", Key: `content.s`, Value: json.RawMessage(`true`)}, false},
		{Condition{Kind: "event_property_is", Key: `content.n`, Value: json.RawMessage(`true`)}, false},
		{Condition{Kind: "event_property_is", Key: `content.n`, Value: json.RawMessage(`1`)}, true},
		{Condition{Kind: "event_property_is", Key: `content.f`, Value: json.RawMessage(`1.5`)}, false},
		{Condition{Kind: "event_property_is", Key: `content.nothing`, Value: json.RawMessage(`null`)}, true},
		{Condition{Kind: "event_property_is", Key: `content.absent`, Value: json.RawMessage(`null`)}, false},
		{Condition{Kind: "event_property_contains", Key: `content.alt_aliases`, Value: json.RawMessage(`"#myroom:example.com"`)}, true},
		{Condition{Kind: "event_property_contains", Key: `content.alt_aliases`, Value: json.RawMessage(`":example.com"`)}, false},
		{Condition{Kind: "event_property_contains", Key: `content.s`, Value: json.RawMessage(`"true"`)}, false},
		{Condition{Kind: "event_match", Key: `content.n`, Pattern: strp("*")}, false},
		{Condition{Kind: "room_member_count", Is: "<=10"}, true},
		{Condition{Kind: "room_member_count", Is: ">2"}, true},
		{Condition{Kind: "room_member_count", Is: ">3"}, false},
		{Condition{Kind: "room_member_count", Is: ">=3"}, true},
		{Condition{Kind: "room_member_count", Is: "3"}, true},
		{Condition{Kind: "room_member_count", Is: "==4"}, false},
		{Condition{Kind: "room_member_count", Is: "<3"}, false},
		{Condition{Kind: "room_member_count", Is: "-3"}, false},
		{Condition{Kind: "room_member_count", Is: ""}, false},
		{Condition{Kind: "sender_notification_permission", Key: "room"}, false},
		{Condition{Kind: "sender_notification_permission", Key: "custom"}, true},
	}
	ev.MemberCount = 3
	ev.NotificationPowerLevels = map[string]int64{"custom": 10}
	ev.SenderPowerLevel = 20
	for _, tc := range tests {
		if got := conditionHolds(tc.cond, ev); got != tc.want {
			t.Errorf("%+v (value %s) = %v, want %v", tc.cond, tc.cond.Value, got, tc.want)
		}
	}
}

func strp(s string) *string { return &s }
