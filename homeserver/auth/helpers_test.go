package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/id"
	"plaza/homeserver/signing"
)

// Users of the test rooms. alice creates every room; carol is a moderator
// (50); bob is an ordinary member (0); dave and erin start outside the room;
// zed is on another server, for m.federate.
const (
	alice = "@alice:a.test"
	bob   = "@bob:a.test"
	carol = "@carol:a.test"
	dave  = "@dave:a.test"
	erin  = "@erin:a.test"
	zed   = "@zed:z.test"
)

func versions() []*event.RoomVersion {
	var out []*event.RoomVersion
	for _, id := range []string{"6", "7", "8", "9", "10", "11", "12"} {
		out = append(out, event.MustVersion(id))
	}
	return out
}

func num(v *event.RoomVersion) int {
	var n int
	fmt.Sscan(v.ID, &n)
	return n
}

func sp(s string) *string { return &s }

// js marshals a Go value for event content; strings are taken as raw JSON.
func js(v any) json.RawMessage {
	if s, ok := v.(string); ok {
		return json.RawMessage(s)
	}
	// Test data is maps, slices, strings and numbers: it always marshals,
	// and if it ever did not, Build would fail on the empty content.
	b, _ := json.Marshal(v)
	return b
}

// room builds realistic, signed events on top of a state, the way a room's
// writer would: prev_events is the last event, auth_events is what the
// selection algorithm picks from the state.
type room struct {
	tb     testing.TB
	v      *event.RoomVersion
	key    signing.Key
	id     string
	create *event.Event
	state  StateMap
	prev   []string
	depth  int64
	all    map[string]*event.Event // every event built, by ID
}

// newRoom creates a room with alice's create event (content given, or the
// version's usual one when nil) and nothing else.
func newRoom(tb testing.TB, v *event.RoomVersion, createContent any) *room {
	tb.Helper()
	if createContent == nil {
		c := map[string]any{"room_version": v.ID}
		if !v.ImplicitCreator {
			c["creator"] = alice
		}
		createContent = c
	}
	key, err := signing.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	r := &room{tb: tb, v: v, key: key, id: "!room:a.test", state: StateMap{}, all: map[string]*event.Event{}}
	create := r.build(event.Proto{Type: event.TypeCreate, StateKey: sp(""), Sender: alice, Content: js(createContent), PrevEvents: []string{}, AuthEvents: []string{}})
	if err := Allowed(create, r.state.Lookup); err != nil {
		tb.Fatalf("create event: %v", err)
	}
	r.create = create
	r.id = create.RoomID()
	r.add(create)
	return r
}

// stdRoom is a room after a usual creation: alice joined, power levels
// (alice 100 before v12, infinite as creator in v12; carol 50), join rule
// invite, then carol and bob joined.
func stdRoom(tb testing.TB, v *event.RoomVersion) *room {
	tb.Helper()
	r := newRoom(tb, v, nil)
	r.apply(r.member(alice, alice, "join", nil))
	r.apply(r.stateEv(event.TypePowerLevels, "", alice, r.plContent(map[string]any{carol: 50}, nil)))
	r.apply(r.stateEv(event.TypeJoinRules, "", alice, `{"join_rule":"invite"}`))
	for _, u := range []string{carol, bob} {
		r.apply(r.member(alice, u, "invite", nil))
		r.apply(r.member(u, u, "join", nil))
	}
	return r
}

// plContent is a power levels content with the given users (plus alice at
// 100 before v12, where she is not a creator with infinite power) and other
// properties.
func (r *room) plContent(users map[string]any, extra map[string]any) json.RawMessage {
	u := map[string]any{}
	if !r.v.PrivilegedCreators {
		u[alice] = 100
	}
	for k, v := range users {
		u[k] = v
	}
	c := map[string]any{"users": u}
	for k, v := range extra {
		c[k] = v
	}
	return js(c)
}

func (r *room) build(p event.Proto) *event.Event {
	r.tb.Helper()
	if p.RoomID == "" {
		p.RoomID = r.id
	}
	if p.PrevEvents == nil {
		p.PrevEvents = r.prev
	}
	if p.AuthEvents == nil {
		sk := ""
		if p.StateKey != nil {
			sk = *p.StateKey
		}
		content := []byte(p.Content)
		if len(content) == 0 {
			content = []byte("{}")
		}
		keys, err := AuthEventKeys(r.v, p.Type, sk, p.Sender, content)
		if err != nil {
			r.tb.Fatalf("AuthEventKeys: %v", err)
		}
		p.AuthEvents = []string{}
		for _, k := range keys {
			if e := r.state[k]; e != nil {
				p.AuthEvents = append(p.AuthEvents, e.ID())
			}
		}
	}
	p.Depth = r.depth + 1
	p.OriginServerTS = 1_700_000_000_000 + r.depth
	ev, err := p.Build(r.v, id.ServerOf(p.Sender), r.key)
	if err != nil {
		r.tb.Fatalf("building %s: %v", p.Type, err)
	}
	if r.all != nil {
		r.all[ev.ID()] = ev
	}
	return ev
}

// stateEv builds a state event; content is a Go value or raw JSON string.
func (r *room) stateEv(typ, stateKey, sender string, content any) *event.Event {
	r.tb.Helper()
	return r.build(event.Proto{Type: typ, StateKey: sp(stateKey), Sender: sender, Content: js(content)})
}

// msg builds a message event.
func (r *room) msg(typ, sender string, content any) *event.Event {
	r.tb.Helper()
	return r.build(event.Proto{Type: typ, Sender: sender, Content: js(content)})
}

// member builds an m.room.member event with extra content members.
func (r *room) member(sender, target, membership string, extra map[string]any) *event.Event {
	r.tb.Helper()
	c := map[string]any{"membership": membership}
	for k, v := range extra {
		c[k] = v
	}
	return r.stateEv(event.TypeMember, target, sender, c)
}

// add puts an event in the state as the new forward extremity, unchecked.
func (r *room) add(ev *event.Event) {
	r.state.Add(ev)
	r.prev = []string{ev.ID()}
	r.depth++
}

// apply checks ev against the state and adds it; setup must be valid.
func (r *room) apply(ev *event.Event) {
	r.tb.Helper()
	if err := Allowed(ev, r.state.Lookup); err != nil {
		r.tb.Fatalf("setup event %s %v by %s: %v", ev.Type(), ev.StateKey(), ev.Sender(), err)
	}
	r.add(ev)
}

// force adds a state event whatever the rules say: for states the rules
// would not let a test reach quickly (a ban, a knock).
func (r *room) force(ev *event.Event) { r.add(ev) }

// setMember forces a membership for target, sent by sender.
func (r *room) setMember(sender, target, membership string) {
	r.tb.Helper()
	r.force(r.member(sender, target, membership, nil))
}

// expectRule checks err against an expected rule given in v12 numbering
// (nil: allowed).
func expectRule(t *testing.T, v *event.RoomVersion, err error, want []int) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("v%s: want allowed, got %v", v.ID, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("v%s: want rejection by rule %s, got allowed", v.ID, ruleID(v, want...))
	}
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("v%s: error %v does not wrap ErrForbidden", v.ID, err)
	}
	var re *RuleError
	if !errors.As(err, &re) {
		t.Fatalf("v%s: error %v is not a *RuleError", v.ID, err)
	}
	if w := ruleID(v, want...); re.Rule != w {
		t.Fatalf("v%s: want rule %s, got %v", v.ID, w, err)
	}
}
