package auth

import (
	"encoding/json"
	"testing"

	"plaza/homeserver/canonicaljson"
)

// eachMember must agree with encoding/json on every canonical object, and
// never panic on anything else.
func FuzzEachMember(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":{"b":[1,{"c":"}"}]},"d":"\"\\","e":null}`,
		`{"users":{"@a:b":100,"@c\"d:e":"50"},"ban":-1}`, `{"a":"\\"}`, `[1]`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = eachMember(data, func(k, v []byte) bool { return true }) // must not panic
		c, err := canonicaljson.Canonicalize(data)
		if err != nil || c[0] != '{' {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(c, &want); err != nil {
			t.Fatalf("canonical JSON that encoding/json rejects: %s", c)
		}
		got := map[string]json.RawMessage{}
		if err := eachMember(c, func(k, v []byte) bool {
			key, ok := decodeKey(k)
			if !ok {
				t.Fatalf("undecodable key %q in %s", k, c)
			}
			got[key] = v
			return true
		}); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d members, encoding/json has %d", c, len(got), len(want))
		}
		for k, v := range want {
			if string(got[k]) != string(v) {
				t.Fatalf("%s: member %q is %s, encoding/json has %s", c, k, got[k], v)
			}
		}
	})
}

// The lazy reader Allowed uses must agree with the full parse wherever the
// full parse succeeds.
func FuzzLevelsViewAgrees(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"ban":75,"events":{"m.room.name":60},"events_default":5,"invite":25,"kick":65,"notifications":{"room":20},"redact":55,"state_default":45,"users":{"@bob:a.test":30},"users_default":10}`,
		`{"ban":"75","events":{"m.room.name":" 60 ","x":null},"users":{"@bob:a.test":"+30"},"users_default":null}`,
		`{"users":{"@b\"ob:a.test":1}}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, integers bool) {
		c, err := canonicaljson.Canonicalize(data)
		if err != nil {
			return
		}
		v := versions()[3] // 9
		if integers {
			v = versions()[4] // 10
		}
		var lv levelsView
		lv.index(c, !v.IntegerPowerLevels)
		_, _ = lv.user("@nobody:x") // must not panic, whatever the content
		_, _ = lv.event("t", true)
		pl, err := ParsePowerLevels(v, c)
		if err != nil {
			return
		}
		check := func(what string, got int64, err error, want int64) {
			if err != nil || got != want {
				t.Fatalf("%s in %s: view says %d, %v; parse says %d", what, c, got, err, want)
			}
		}
		for u, want := range pl.Users {
			got, err := lv.user(u)
			check(u, got, err, want)
		}
		got, err := lv.user("@nobody:x")
		check("users_default", got, err, pl.UsersDefault)
		for typ, want := range pl.Events {
			got, err := lv.event(typ, false)
			check(typ, got, err, want)
		}
		got, err = lv.event("not.listed", true)
		check("state_default", got, err, pl.StateDefault)
		got, err = lv.event("not.listed", false)
		check("events_default", got, err, pl.EventsDefault)
		for i, want := range []int64{pl.UsersDefault, pl.EventsDefault, pl.StateDefault, pl.Ban, pl.Redact, pl.Kick, pl.Invite} {
			got, err := lv.prop(i)
			check(propName(i), got, err, want)
		}
	})
}
