package auth

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/signing"
)

func tk(typ, sk string) event.TypeKey { return event.TypeKey{Type: typ, StateKey: sk} }

func TestAuthEventKeys(t *testing.T) {
	create, pl, jr := tk(event.TypeCreate, ""), tk(event.TypePowerLevels, ""), tk(event.TypeJoinRules, "")
	mem := func(u string) event.TypeKey { return tk(event.TypeMember, u) }
	cases := []struct {
		name                     string
		typ, sk, sender, content string
		want                     func(v *event.RoomVersion) []event.TypeKey
	}{
		{"create", event.TypeCreate, "", alice, `{}`, func(*event.RoomVersion) []event.TypeKey { return nil }},
		{"message", "m.room.message", "", bob, `{"body":"x"}`, func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(bob)} }},
		{"state", "m.room.name", "", bob, `{}`, func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(bob)} }},
		{"power levels", event.TypePowerLevels, "", bob, `{}`, func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(bob)} }},
		{"join", event.TypeMember, bob, bob, `{"membership":"join"}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(bob), jr} }},
		{"join authorised by another user", event.TypeMember, dave, dave, `{"join_authorised_via_users_server":"@carol:a.test","membership":"join"}`,
			func(v *event.RoomVersion) []event.TypeKey {
				if !v.RestrictedJoins {
					return []event.TypeKey{pl, mem(dave), jr}
				}
				return []event.TypeKey{pl, mem(dave), jr, mem(carol)}
			}},
		{"leave carrying an authoriser (content not canonical)", event.TypeMember, dave, dave, `{ "membership": "leave", "join_authorised_via_users_server": "@carol:a.test" }`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(dave)} }},
		{"invite", event.TypeMember, dave, carol, `{"membership":"invite"}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(carol), mem(dave), jr} }},
		{"third-party invite", event.TypeMember, dave, carol, `{"third_party_invite":{"signed":{"token":"tok","mxid":"@dave:a.test"}},"membership":"invite"}`,
			func(*event.RoomVersion) []event.TypeKey {
				return []event.TypeKey{pl, mem(carol), mem(dave), jr, tk(event.TypeThirdPartyInvite, "tok")}
			}},
		{"third-party invite without a token", event.TypeMember, dave, carol, `{"membership":"invite","third_party_invite":{"signed":{"token":7}}}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(carol), mem(dave), jr} }},
		{"knock", event.TypeMember, dave, dave, `{"membership":"knock"}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(dave), jr} }},
		{"kick", event.TypeMember, bob, carol, `{"membership":"leave"}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(carol), mem(bob)} }},
		{"ban", event.TypeMember, bob, carol, `{"membership":"ban"}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(carol), mem(bob)} }},
		{"no membership", event.TypeMember, bob, bob, `{}`,
			func(*event.RoomVersion) []event.TypeKey { return []event.TypeKey{pl, mem(bob)} }},
	}
	for _, c := range cases {
		for _, v := range versions() {
			got, err := AuthEventKeys(v, c.typ, c.sk, c.sender, []byte(c.content))
			if err != nil {
				t.Fatalf("%s v%s: %v", c.name, v.ID, err)
			}
			want := c.want(v)
			if want != nil && !v.RoomIDFromCreate {
				want = append([]event.TypeKey{create}, want...)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s v%s:\n got %v\nwant %v", c.name, v.ID, got, want)
			}
		}
	}
	if _, err := AuthEventKeys(event.MustVersion("12"), event.TypeMember, bob, bob, []byte(`[]`)); err == nil {
		t.Error("member content that is not an object: no error")
	}
}

// authEventsOf returns the events ev lists, as a caller would fetch them.
func authEventsOf(r *room, ev *event.Event) []*event.Event {
	var out []*event.Event
	for _, id := range ev.AuthEventIDs() {
		if a := r.all[id]; a != nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func ids(evs ...*event.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.ID())
	}
	return out
}

func TestCheckAuthEvents(t *testing.T) {
	type tcase struct {
		name string
		min  int
		// build returns the event and the auth events the caller holds.
		build func(r *room) (*event.Event, []*event.Event)
		want  expectation
	}
	// withCreate prepends the create event before v12, as selection does.
	withCreate := func(r *room, evs ...*event.Event) []string {
		if !r.v.RoomIDFromCreate {
			evs = append([]*event.Event{r.create}, evs...)
		}
		return ids(evs...)
	}
	cur := func(r *room, typ, sk string) *event.Event { return r.state[tk(typ, sk)] }
	selected := func(ev *event.Event, r *room) (*event.Event, []*event.Event) { return ev, authEventsOf(r, ev) }
	cases := []tcase{
		{name: "as selected: message", want: ok, build: func(r *room) (*event.Event, []*event.Event) {
			return selected(r.msg("m.room.message", bob, `{}`), r)
		}},
		{name: "as selected: invite", want: ok, build: func(r *room) (*event.Event, []*event.Event) {
			return selected(r.member(carol, dave, "invite", nil), r)
		}},
		{name: "as selected: third-party invite", want: ok, build: func(r *room) (*event.Event, []*event.Event) {
			tp := newThirdParty(r, dave, "tok", singleKey)
			return selected(tpInvite(r, carol, dave, map[string]any{"signed": tp.signed}), r)
		}},
		{name: "create event", want: ok, build: func(r *room) (*event.Event, []*event.Event) { return r.create, nil }},
		{name: "fewer than selected is fine", want: ok, build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`), AuthEvents: withCreate(r, cur(r, event.TypeMember, bob))})
			return selected(ev, r)
		}},
		{name: "authorising user's member event", want: from(8, rej(3, 2), ok), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: event.TypeMember, StateKey: sp(dave), Sender: dave,
				Content:    js(map[string]any{"membership": "join", "join_authorised_via_users_server": carol}),
				AuthEvents: withCreate(r, cur(r, event.TypePowerLevels, ""), cur(r, event.TypeJoinRules, ""), cur(r, event.TypeMember, carol))})
			return selected(ev, r)
		}},
		{name: "duplicate power levels", want: rej(3, 1), build: func(r *room) (*event.Event, []*event.Event) {
			old := cur(r, event.TypePowerLevels, "")
			withPL(r, map[string]any{carol: 50, bob: 1}, nil)
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: withCreate(r, old, cur(r, event.TypePowerLevels, ""), cur(r, event.TypeMember, bob))})
			return selected(ev, r)
		}},
		{name: "same event listed twice", want: rej(3, 1), build: func(r *room) (*event.Event, []*event.Event) {
			m := cur(r, event.TypeMember, bob)
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`), AuthEvents: withCreate(r, m, m)})
			return selected(ev, r)
		}},
		{name: "join rules for a message", want: rej(3, 2), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: withCreate(r, cur(r, event.TypeMember, bob), cur(r, event.TypeJoinRules, ""))})
			return selected(ev, r)
		}},
		{name: "someone else's membership for a message", want: rej(3, 2), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: withCreate(r, cur(r, event.TypeMember, bob), cur(r, event.TypeMember, carol))})
			return selected(ev, r)
		}},
		{name: "a message event listed", want: rej(3, 2), build: func(r *room) (*event.Event, []*event.Event) {
			m := r.msg("m.room.message", bob, `{}`)
			r.add(m)
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: withCreate(r, cur(r, event.TypeMember, bob), m)})
			return selected(ev, r)
		}},
		{name: "v12 create event listed", min: 12, want: rej(3, 2), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: ids(r.create, cur(r, event.TypeMember, bob))})
			return selected(ev, r)
		}},
		{name: "missing or rejected", want: rej(3, 3), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.msg("m.room.message", bob, `{}`)
			held := authEventsOf(r, ev)
			return ev, held[:len(held)-1]
		}},
		{name: "no create event before v12", want: from(12, rej(3, 4), ok), build: func(r *room) (*event.Event, []*event.Event) {
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`),
				AuthEvents: ids(cur(r, event.TypePowerLevels, ""), cur(r, event.TypeMember, bob))})
			return selected(ev, r)
		}},
		{name: "auth event from another room", want: rej(3, 5), build: func(r *room) (*event.Event, []*event.Event) {
			other := "!other:a.test"
			if r.v.RoomIDFromCreate {
				other = "!otherroomcreateeventid"
			}
			m := r.build(event.Proto{Type: event.TypeMember, StateKey: sp(bob), Sender: bob, RoomID: other, Content: js(`{"membership":"join"}`)})
			ev := r.build(event.Proto{Type: "m.room.message", Sender: bob, Content: js(`{}`), AuthEvents: withCreate(r, m)})
			return selected(ev, r)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range versions() {
				if c.min != 0 && num(v) < c.min {
					continue
				}
				r := stdRoom(t, v)
				ev, held := c.build(r)
				expectRule(t, v, CheckAuthEvents(ev, held), c.want(v))
			}
		})
	}

	t.Run("caller errors", func(t *testing.T) {
		r := stdRoom(t, event.MustVersion("12"))
		ev := r.msg("m.room.message", bob, `{}`)
		unlisted := r.state[tk(event.TypeJoinRules, "")]
		err := CheckAuthEvents(ev, append(authEventsOf(r, ev), unlisted))
		if err == nil || errors.Is(err, ErrForbidden) {
			t.Fatalf("unlisted auth event: %v", err)
		}
		if err := CheckAuthEvents(ev, []*event.Event{nil}); err == nil || errors.Is(err, ErrForbidden) {
			t.Fatalf("nil auth event: %v", err)
		}
	})
}

// TestAllowedAgainstAuthEvents runs the receipt path's first check: the
// event against its own auth events (plus the v12 create event).
func TestAllowedAgainstAuthEvents(t *testing.T) {
	for _, v := range versions() {
		r := stdRoom(t, v)
		ev := r.member(carol, dave, "invite", nil)
		held := authEventsOf(r, ev)
		if err := CheckAuthEvents(ev, held); err != nil {
			t.Fatalf("v%s: %v", v.ID, err)
		}
		s := NewStateMap(held...)
		s.Add(r.create)
		if err := Allowed(ev, s.Lookup); err != nil {
			t.Fatalf("v%s: %v", v.ID, err)
		}
		// Without the power levels among them, carol is at users_default.
		delete(s, tk(event.TypePowerLevels, ""))
		withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 1})
		ev = r.member(carol, dave, "invite", nil)
		s = NewStateMap(authEventsOf(r, ev)...)
		s.Add(r.create)
		delete(s, tk(event.TypePowerLevels, ""))
		if err := Allowed(ev, s.Lookup); err != nil {
			t.Fatalf("v%s without power levels: %v", v.ID, err)
		}
	}
}

func TestCheckJoinAuthorisedSignature(t *testing.T) {
	// verifier checks the event's signature by server with the room's key,
	// the way the federation code will (with fetched keys).
	verifier := func(r *room, ev *event.Event, called *[]string) func(string) error {
		return func(server string) error {
			*called = append(*called, server)
			sigs, err := ev.Signatures()
			if err != nil {
				return err
			}
			sig, ok := sigs[server][r.key.ID]
			if !ok {
				return fmt.Errorf("no signature by %s", server)
			}
			b, err := ev.SignedBytes()
			if err != nil {
				return err
			}
			return signing.VerifyBytes(b, sig, r.key.Public())
		}
	}
	cases := []struct {
		name       string
		membership string
		authoriser any
		want       expectation
		wantCalled string
	}{
		{"authoriser on the signing server", "join", carol, ok, "a.test"},
		{"authoriser on another server", "join", zed, from(8, ok, rej(5, 2)), "z.test"},
		{"leave naming an authoriser on another server", "leave", zed, from(8, ok, rej(5, 2)), "z.test"},
		{"no authoriser", "join", nil, ok, ""},
		{"authoriser not a string", "join", 7, from(8, ok, rej(5, 2)), ""},
		{"authoriser not a user ID", "join", "carol", from(8, ok, rej(5, 2)), ""},
	}
	for _, c := range cases {
		for _, v := range versions() {
			r := stdRoom(t, v)
			var extra map[string]any
			if c.authoriser != nil {
				extra = map[string]any{"join_authorised_via_users_server": c.authoriser}
			}
			ev := r.member(dave, dave, c.membership, extra)
			var called []string
			err := CheckJoinAuthorisedSignature(ev, verifier(r, ev, &called))
			t.Run(c.name, func(t *testing.T) { expectRule(t, v, err, c.want(v)) })
			wantCalled := []string(nil)
			if c.wantCalled != "" && v.RestrictedJoins {
				wantCalled = []string{c.wantCalled}
			}
			if !slices.Equal(called, wantCalled) {
				t.Errorf("%s v%s: verify called with %v, want %v", c.name, v.ID, called, wantCalled)
			}
		}
	}
	// Not a member event: nothing to check.
	r := stdRoom(t, event.MustVersion("12"))
	ev := r.msg("m.room.message", bob, map[string]any{"join_authorised_via_users_server": zed})
	if err := CheckJoinAuthorisedSignature(ev, func(string) error { return errors.New("called") }); err != nil {
		t.Fatal(err)
	}
}
