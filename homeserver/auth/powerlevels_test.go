package auth

import (
	"testing"

	"plaza/homeserver/event"
)

// TestRuleID pins the renumbering against the spec text of each version.
func TestRuleID(t *testing.T) {
	cases := []struct {
		path []int
		want map[string]string // version → number; versions not listed are not checked
	}{
		{[]int{1, 4}, map[string]string{"6": "1.4", "10": "1.4", "12": "1.4"}},
		{[]int{2}, map[string]string{"12": "2"}},
		{[]int{3, 1}, map[string]string{"6": "2.1", "11": "2.1", "12": "3.1"}},
		{[]int{3, 4}, map[string]string{"6": "2.4", "11": "2.4"}},
		{[]int{3, 5}, map[string]string{"6": "2.5", "12": "3.5"}},
		{[]int{4}, map[string]string{"6": "3", "11": "3", "12": "4"}},
		{[]int{5, 1}, map[string]string{"6": "4.1", "12": "5.1"}},
		{[]int{5, 2}, map[string]string{"8": "4.2", "12": "5.2"}},
		{[]int{5, 3, 3}, map[string]string{"6": "4.2.3", "7": "4.2.3", "8": "4.3.3", "11": "4.3.3", "12": "5.3.3"}},
		{[]int{5, 3, 5, 2}, map[string]string{"8": "4.3.5.2", "10": "4.3.5.2", "12": "5.3.5.2"}},
		{[]int{5, 3, 7}, map[string]string{"6": "4.2.6", "7": "4.2.6", "8": "4.3.7", "12": "5.3.7"}},
		{[]int{5, 4, 1, 8}, map[string]string{"6": "4.3.1.8", "7": "4.3.1.8", "8": "4.4.1.8", "12": "5.4.1.8"}},
		{[]int{5, 4, 5}, map[string]string{"6": "4.3.5", "9": "4.4.5", "12": "5.4.5"}},
		{[]int{5, 5, 1}, map[string]string{"6": "4.4.1", "7": "4.4.1", "8": "4.5.1", "12": "5.5.1"}},
		{[]int{5, 6, 3}, map[string]string{"6": "4.5.3", "8": "4.6.3", "12": "5.6.3"}},
		{[]int{5, 7, 1}, map[string]string{"7": "4.6.1", "8": "4.7.1", "12": "5.7.1"}},
		{[]int{5, 8}, map[string]string{"6": "4.6", "7": "4.7", "8": "4.8", "12": "5.8"}},
		{[]int{6}, map[string]string{"6": "5", "12": "6"}},
		{[]int{7}, map[string]string{"6": "6", "12": "7"}},
		{[]int{8}, map[string]string{"6": "7", "12": "8"}},
		{[]int{9}, map[string]string{"6": "8", "12": "9"}},
		{[]int{10}, map[string]string{"6": "9", "11": "9", "12": "10"}},
		{[]int{10, 1}, map[string]string{"10": "9.1", "12": "10.1"}},
		{[]int{10, 2}, map[string]string{"10": "9.2", "12": "10.2"}},
		{[]int{10, 3}, map[string]string{"6": "9.1", "9": "9.1", "10": "9.3", "12": "10.3"}},
		{[]int{10, 4}, map[string]string{"12": "10.4"}},
		{[]int{10, 6, 1}, map[string]string{"6": "9.3.1", "10": "9.5.1", "12": "10.6.1"}},
		{[]int{10, 7, 1}, map[string]string{"9": "9.4.1", "11": "9.6.1", "12": "10.7.1"}},
		{[]int{10, 8, 1}, map[string]string{"6": "9.5.1", "10": "9.7.1", "12": "10.8.1"}},
		{[]int{10, 9, 1}, map[string]string{"6": "9.6.1", "10": "9.8.1", "12": "10.9.1"}},
		{[]int{10, 10, 1}, map[string]string{"6": "9.7.1", "11": "9.9.1", "12": "10.10.1"}},
	}
	for _, c := range cases {
		for vid, want := range c.want {
			if got := ruleID(event.MustVersion(vid), c.path...); got != want {
				t.Errorf("v%s %v: got %s, want %s", vid, c.path, got, want)
			}
		}
	}
}

func TestParsePowerLevelsDefaults(t *testing.T) {
	for _, v := range versions() {
		pl, err := ParsePowerLevels(v, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		got := []int64{pl.UsersDefault, pl.EventsDefault, pl.StateDefault, pl.Ban, pl.Kick, pl.Redact, pl.Invite,
			pl.UserLevel(bob), pl.EventLevel("m.room.message", false), pl.EventLevel("m.room.name", true), pl.NotificationLevel("room")}
		want := []int64{0, 0, 50, 50, 50, 50, 0, 0, 0, 50, 50}
		if !equalInts(got, want) {
			t.Fatalf("v%s defaults: got %v, want %v", v.ID, got, want)
		}
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParsePowerLevels(t *testing.T) {
	content := `{"ban":75,"events":{"m.room.name":60},"events_default":5,"invite":25,"kick":65,
		"notifications":{"room":20},"redact":55,"state_default":45,"users":{"@bob:a.test":30},"users_default":10}`
	for _, v := range versions() {
		pl, err := ParsePowerLevels(v, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		got := []int64{pl.UsersDefault, pl.EventsDefault, pl.StateDefault, pl.Ban, pl.Kick, pl.Redact, pl.Invite,
			pl.UserLevel(bob), pl.UserLevel(carol), pl.EventLevel("m.room.name", true), pl.EventLevel("m.room.name", false),
			pl.EventLevel("m.room.topic", true), pl.EventLevel("m.room.message", false), pl.NotificationLevel("room")}
		want := []int64{10, 5, 45, 75, 65, 55, 25, 30, 10, 60, 60, 45, 5, 20}
		if !equalInts(got, want) {
			t.Fatalf("v%s: got %v, want %v", v.ID, got, want)
		}
	}
}

func TestStringPowerLevels(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{`"100"`, 100, true},
		{`"000100"`, 100, true},
		{`"+100"`, 100, true},
		{`"-100"`, -100, true},
		{`" 100 "`, 100, true},
		{`" 00100 "`, 100, true},
		{`" +100 "`, 100, true},
		{`"\t-100\n"`, -100, true},
		{`"0"`, 0, true},
		{`"-0"`, 0, true},
		{`"9007199254740991"`, maxLevel, true},
		{`"-9007199254740991"`, minLevel, true},
		{`"9007199254740992"`, 0, false},
		{`"000000000000000000009007199254740991"`, maxLevel, true},
		{`""`, 0, false},
		{`" "`, 0, false},
		{`"+"`, 0, false},
		{`"+-1"`, 0, false},
		{`"--1"`, 0, false},
		{`"1.5"`, 0, false},
		{`"1e3"`, 0, false},
		{`"1 0"`, 0, false},
		{`"- 1"`, 0, false},
		{`"1_000"`, 0, false},
		{`"0x10"`, 0, false},
		{`"١٠٠"`, 0, false},
		{`"abc"`, 0, false},
	}
	v9, v10 := event.MustVersion("9"), event.MustVersion("10")
	for _, c := range cases {
		content := `{"ban":` + c.in + `}`
		pl, err := ParsePowerLevels(v9, []byte(content))
		if c.ok != (err == nil) || c.ok && pl.Ban != c.want {
			t.Errorf("v9 %s: got %d, %v; want %d, ok=%v", c.in, pl.Ban, err, c.want, c.ok)
		}
		if _, err := ParsePowerLevels(v10, []byte(content)); err == nil {
			t.Errorf("v10 %s: accepted a string", c.in)
		}
	}
}

func TestParsePowerLevelsIntegers(t *testing.T) {
	cases := []struct {
		content string
		ok      bool
	}{
		{`{"ban":9007199254740991}`, true},
		{`{"ban":-9007199254740991}`, true},
		{`{"ban":null}`, false}, // v10+: present and not an integer
		{`{"ban":true}`, false},
		{`{"ban":{}}`, false},
		{`{"events":{"m.room.name":null}}`, false},
		{`{"events":null}`, false},
		{`{"users":{"@bob:a.test":1},"users_default":"1"}`, false},
		{`{"users":{"not-a-user":1}}`, false},
		{`[]`, false},
	}
	for _, c := range cases {
		_, err := ParsePowerLevels(event.MustVersion("11"), []byte(c.content))
		if c.ok != (err == nil) {
			t.Errorf("%s: got %v, want ok=%v", c.content, err, c.ok)
		}
	}
	// Before v10, null reads as absent except as a users value.
	for content, ok := range map[string]bool{
		`{"ban":null}`:                          true,
		`{"events":{"m.room.name":null}}`:       true,
		`{"notifications":{"room":null}}`:       true,
		`{"users":{"@bob:a.test":null}}`:        false,
		`{"events":null}`:                       false,
		`{"users":{"@bob:a.test":"1"},"ban":2}`: true,
	} {
		pl, err := ParsePowerLevels(event.MustVersion("9"), []byte(content))
		if ok != (err == nil) {
			t.Errorf("v9 %s: got %v, want ok=%v", content, err, ok)
		}
		if err == nil && content == `{"ban":null}` && pl.Ban != 50 {
			t.Errorf("v9 null ban: got %d, want the default 50", pl.Ban)
		}
	}
}

func TestPowerLevelsFor(t *testing.T) {
	for _, v := range versions() {
		// A create event whose content.creator is bob although alice sent
		// it: before v11 the content names the creator, from v11 the sender.
		content := map[string]any{"room_version": v.ID, "creator": bob}
		if v.PrivilegedCreators {
			content["additional_creators"] = []string{erin}
		}
		r := newRoom(t, v, content)
		pl, err := PowerLevelsFor(r.state.Lookup)
		if err != nil {
			t.Fatal(err)
		}
		var wantAlice, wantBob, wantErin int64
		switch {
		case v.PrivilegedCreators:
			wantAlice, wantBob, wantErin = Infinite, 0, Infinite
		case v.ImplicitCreator:
			wantAlice = 100
		default:
			wantBob = 100
		}
		if a, b, e := pl.UserLevel(alice), pl.UserLevel(bob), pl.UserLevel(erin); a != wantAlice || b != wantBob || e != wantErin {
			t.Errorf("v%s no power levels: alice %d bob %d erin %d, want %d %d %d", v.ID, a, b, e, wantAlice, wantBob, wantErin)
		}
		if pl.StateDefault != 50 || pl.EventsDefault != 0 || pl.Ban != 50 || pl.Invite != 0 {
			t.Errorf("v%s no power levels: defaults %+v", v.ID, pl)
		}

		// With a power levels event, its users count; v12 creators stay infinite.
		r.force(r.stateEv(event.TypePowerLevels, "", alice, map[string]any{"users": map[string]any{carol: 70}, "users_default": 5}))
		pl, err = PowerLevelsFor(r.state.Lookup)
		if err != nil {
			t.Fatal(err)
		}
		wantAlice, wantErin = 5, 5
		if v.PrivilegedCreators {
			wantAlice, wantErin = Infinite, Infinite
		}
		if a, b, c, e := pl.UserLevel(alice), pl.UserLevel(bob), pl.UserLevel(carol), pl.UserLevel(erin); a != wantAlice || b != 5 || c != 70 || e != wantErin {
			t.Errorf("v%s with power levels: alice %d bob %d carol %d erin %d", v.ID, a, b, c, e)
		}
		if pl.IsCreator(alice) != v.PrivilegedCreators {
			t.Errorf("v%s: IsCreator(alice) = %v", v.ID, pl.IsCreator(alice))
		}
	}
	// An empty state has the defaults and no one above 0.
	pl, err := PowerLevelsFor(StateMap{}.Lookup)
	if err != nil || pl.UserLevel(alice) != 0 || pl.StateDefault != 50 {
		t.Fatalf("empty state: %+v, %v", pl, err)
	}
}

func TestSenderPowerLevel(t *testing.T) {
	for _, v := range versions() {
		r := stdRoom(t, v)
		wantAlice := int64(100)
		if v.PrivilegedCreators {
			wantAlice = Infinite
		}
		for sender, want := range map[string]int64{alice: wantAlice, carol: 50, bob: 0} {
			if got := SenderPowerLevel(r.msg("m.room.message", sender, `{}`), r.state.Lookup); got != want {
				t.Errorf("v%s %s: got %d, want %d", v.ID, sender, got, want)
			}
		}
		// Unreadable power levels: 0 for all but v12 creators.
		withPLRaw(r, `{"users":{"@carol:a.test":true}}`)
		for sender, want := range map[string]int64{alice: map[bool]int64{true: Infinite, false: 0}[v.PrivilegedCreators], carol: 0} {
			if got := SenderPowerLevel(r.msg("m.room.message", sender, `{}`), r.state.Lookup); got != want {
				t.Errorf("v%s invalid power levels, %s: got %d, want %d", v.ID, sender, got, want)
			}
		}
	}
}
