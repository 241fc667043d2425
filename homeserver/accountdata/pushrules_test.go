package accountdata

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"plaza/homeserver/httpapi"
)

func ruleIDs(rules []Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.RuleID)
	}
	return out
}

// TestDefaultRuleset checks the defaults against the spec's list and order
// (v1.17 and later: no legacy body-mention rules).
func TestDefaultRuleset(t *testing.T) {
	rs, err := DefaultRuleset(`@odd"user:plaza.test`)
	if err != nil {
		t.Fatal(err)
	}
	wantOverride := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
		".m.rule.suppress_edits"}
	wantUnderride := []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"}
	if got := ruleIDs(rs.Override); !slices.Equal(got, wantOverride) {
		t.Errorf("override = %v", got)
	}
	if got := ruleIDs(rs.Underride); !slices.Equal(got, wantUnderride) {
		t.Errorf("underride = %v", got)
	}
	if len(rs.Content)+len(rs.Room)+len(rs.Sender) != 0 {
		t.Errorf("unexpected content/room/sender defaults: %+v", rs)
	}
	for _, k := range kinds() {
		for _, r := range *rs.Rules(k) {
			if !r.Default || r.Enabled == (r.RuleID == masterRuleID) || r.Actions == nil || r.Conditions == nil {
				t.Errorf("rule %s: default %v enabled %v actions %v conditions %v", r.RuleID, r.Default, r.Enabled, r.Actions, r.Conditions)
			}
		}
	}
	// The user's ID is substituted, JSON-escaped, where the spec says.
	invite, _ := rs.Find(KindOverride, ".m.rule.invite_for_me")
	if p := invite.Conditions[2].Pattern; p == nil || *p != `@odd"user:plaza.test` {
		t.Errorf("invite_for_me state_key pattern = %v", p)
	}
	mention, _ := rs.Find(KindOverride, ".m.rule.is_user_mention")
	if v := string(mention.Conditions[0].Value); v != `"@odd\"user:plaza.test"` {
		t.Errorf("is_user_mention value = %s", v)
	}
	// Fresh values: changing one result does not change the next.
	rs.Override[0].Enabled = true
	again, _ := DefaultRuleset("@bob:plaza.test")
	if again.Override[0].Enabled {
		t.Error("DefaultRuleset shares state between calls")
	}
}

// TestRulesetJSON checks the client-facing shape: empty lists are lists,
// a master rule shows "conditions": [], a room rule none, "value": null and
// "pattern": "" survive.
func TestRulesetJSON(t *testing.T) {
	u := &userRules{Rules: map[Kind][]Rule{KindRoom: {{RuleID: "!r", Enabled: true, Actions: []Action{}}}}}
	rs, err := effective(bob, u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, want := range []string{
		`"content":[]`, `"sender":[]`,
		`{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}`,
		`"room":[{"rule_id":"!r","default":false,"enabled":true,"actions":[]}]`,
		`{"kind":"event_match","key":"state_key","pattern":""}`,
		`{"set_tweak":"highlight"}`, `{"set_tweak":"sound","value":"ring"}`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("ruleset JSON lacks %s:\n%s", want, js)
		}
	}
	var c Condition
	if err := json.Unmarshal([]byte(`{"kind":"event_property_is","key":"k","value":null}`), &c); err != nil || string(c.Value) != "null" {
		t.Fatalf("null value: %q %v", c.Value, err)
	}
	if b, _ := json.Marshal(c); string(b) != `{"kind":"event_property_is","key":"k","value":null}` {
		t.Fatalf("null value re-encoded as %s", b)
	}
}

// TestStoredChangesRoundTrip: an emptied action list is a change, an
// untouched one is not.
func TestStoredChangesRoundTrip(t *testing.T) {
	u := &userRules{Defaults: map[string]defaultChange{
		"underride/.m.rule.message":     {Actions: []Action{}},
		"override/.m.rule.member_event": {Enabled: boolp(false)},
	}}
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseUserRules(b)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := effective(bob, back)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := rs.Find(KindUnderride, ".m.rule.message")
	if msg.Actions == nil || len(msg.Actions) != 0 || !msg.Enabled {
		t.Errorf(".m.rule.message after round trip: %+v (stored %s)", msg, b)
	}
	member, _ := rs.Find(KindOverride, ".m.rule.member_event")
	if member.Enabled || len(member.Actions) != 0 {
		t.Errorf(".m.rule.member_event after round trip: %+v", member)
	}
	call, _ := rs.Find(KindUnderride, ".m.rule.call")
	if len(call.Actions) != 2 {
		t.Errorf(".m.rule.call lost its actions: %+v", call)
	}
}

func newUserRules(t *testing.T) *userRules {
	t.Helper()
	defs, err := DefaultRuleset(bob)
	if err != nil {
		t.Fatal(err)
	}
	return &userRules{defaults: defs}
}

func errcode(err error) string {
	var e *httpapi.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestRuleOrdering(t *testing.T) {
	u := newUserRules(t)
	add := func(id, before, after string) error {
		return u.putRule(KindOverride, Rule{RuleID: id, Enabled: true, Conditions: []Condition{}, Actions: []Action{}}, before, after)
	}
	for _, step := range []struct {
		id, before, after string
		want              []string
	}{
		{"a", "", "", []string{"a"}},
		{"b", "", "", []string{"b", "a"}},       // new rules go first
		{"c", "a", "", []string{"b", "c", "a"}}, // before a
		{"d", "", "b", []string{"b", "d", "c", "a"}},
		{"e", "b", "a", []string{"e", "b", "d", "c", "a"}}, // before wins over after
		{"b", "", "", []string{"e", "b", "d", "c", "a"}},   // an update keeps its place
		{"b", "", "a", []string{"e", "d", "c", "a", "b"}},  // or moves
	} {
		if err := add(step.id, step.before, step.after); err != nil {
			t.Fatalf("put %s: %v", step.id, err)
		}
		if got := ruleIDs(u.Rules[KindOverride]); !slices.Equal(got, step.want) {
			t.Fatalf("after put %s before=%q after=%q: %v, want %v", step.id, step.before, step.after, got, step.want)
		}
	}
	if err := add("f", "nope", ""); errcode(err) != "M_INVALID_PARAM" {
		t.Fatalf("before an unknown rule: %v", err)
	}
	// An update keeps a disabled rule disabled.
	if err := u.setEnabled(KindOverride, "c", false); err != nil {
		t.Fatal(err)
	}
	if err := add("c", "", ""); err != nil {
		t.Fatal(err)
	}
	if i := u.userRule(KindOverride, "c"); u.Rules[KindOverride][i].Enabled {
		t.Fatal("updating a rule re-enabled it")
	}

	// The effective ruleset: master, the user's overrides, the other defaults.
	rs, err := effective(bob, u)
	if err != nil {
		t.Fatal(err)
	}
	got := ruleIDs(rs.Override)
	if !slices.Equal(got[:6], []string{".m.rule.master", "e", "d", "c", "a", "b"}) || got[6] != ".m.rule.suppress_notices" {
		t.Fatalf("effective override order: %v", got)
	}
}

func TestRuleChanges(t *testing.T) {
	u := newUserRules(t)
	if err := u.deleteRule(KindOverride, ".m.rule.master"); errcode(err) != "M_INVALID_PARAM" {
		t.Fatalf("deleting a default: %v", err)
	}
	if err := u.deleteRule(KindOverride, "nope"); errcode(err) != "M_NOT_FOUND" {
		t.Fatalf("deleting an unknown rule: %v", err)
	}
	if err := u.setEnabled(KindContent, ".m.rule.master", true); errcode(err) != "M_NOT_FOUND" {
		t.Fatalf("a default of another kind: %v", err)
	}
	if err := u.setActions(KindUnderride, ".m.rule.message", []Action{}); err != nil {
		t.Fatal(err)
	}
	if err := u.putRule(KindSender, Rule{RuleID: "@spam:x", Enabled: true, Actions: []Action{}}, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := u.deleteRule(KindSender, "@spam:x"); err != nil {
		t.Fatal(err)
	}
	if len(u.Rules) != 0 {
		t.Fatalf("rules left after deleting the only one: %+v", u.Rules)
	}
	for i := range maxUserRules {
		if err := u.putRule(KindRoom, Rule{RuleID: "!r" + strings.Repeat("x", i), Enabled: true, Actions: []Action{}}, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.putRule(KindRoom, Rule{RuleID: "!one-too-many", Actions: []Action{}}, "", ""); errcode(err) != "M_TOO_LARGE" {
		t.Fatalf("rule %d: %v", maxUserRules+1, err)
	}
}

func TestValidateActions(t *testing.T) {
	var acts []Action
	if err := json.Unmarshal([]byte(`["notify","dont_notify","coalesce",{"set_tweak":"sound","value":"x"},{"set_tweak":"highlight"},{"set_tweak":"org.custom","value":{"a":1}}]`), &acts); err != nil {
		t.Fatal(err)
	}
	got, err := validateActions(acts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if string(b) != `["notify",{"set_tweak":"sound","value":"x"},{"set_tweak":"highlight"},{"set_tweak":"org.custom","value":{"a":1}}]` {
		t.Fatalf("validated actions: %s", b)
	}
	for _, bad := range []string{`["ring"]`, `[{"set_tweak":"highlight","value":"yes"}]`, `[{"set_tweak":"sound"}]`, `[{"set_tweak":""}]`} {
		var a []Action
		if err := json.Unmarshal([]byte(bad), &a); err != nil {
			t.Fatal(err)
		}
		if _, err := validateActions(a); errcode(err) != "M_BAD_JSON" {
			t.Errorf("%s: %v", bad, err)
		}
	}
	var a []Action
	if err := json.Unmarshal([]byte(`[{"notify":true}]`), &a); err == nil {
		t.Error("an object without set_tweak decoded")
	}
}
