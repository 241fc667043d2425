package stateres

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"testing"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/signing"
)

const server = "example.org"

// Users of the test rooms. alice creates every room.
const (
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
	carol = "@carol:example.org"
	dave  = "@dave:example.org"
	eve   = "@eve:example.org"
	frank = "@frank:example.org"
)

// store is the EventSource of the tests: every event built, by ID, plus the
// IDs a test declares rejected.
type store struct {
	events   map[string]*event.Event
	rejected map[string]bool
}

func (s *store) Event(id string) (*event.Event, error) {
	if ev, ok := s.events[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("event %s: %w", id, errNotFound)
}

var errNotFound = errors.New("not found")

// rejectingStore adds RejectionSource to a store.
type rejectingStore struct{ *store }

func (s rejectingStore) Rejected(id string) bool { return s.rejected[id] }

// room builds test DAGs with real, signed events.
type room struct {
	t      testing.TB
	v      *event.RoomVersion
	key    signing.Key
	roomID string
	ts     int64
	*store
}

// branch is the tip of one line of the DAG and the state after it.
type branch struct {
	r     *room
	tip   []string
	depth int64
	state StateMap
}

func newRoom(t testing.TB, version string) *room {
	t.Helper()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &room{
		t: t, v: event.MustVersion(version), key: key, roomID: "!room:" + server, ts: 1000,
		store: &store{events: map[string]*event.Event{}, rejected: map[string]bool{}},
	}
}

// create starts the room: alice creates and joins it, sets power levels
// (users gives levels to others; alice gets 100 before v12, and is a creator
// with infinite power in v12), and makes it public.
func (r *room) create(users map[string]int64) *branch {
	r.t.Helper()
	b := &branch{r: r, state: StateMap{}}
	b.send(alice, event.TypeCreate, "", `{"room_version":"`+r.v.ID+`"}`)
	b.send(alice, event.TypeMember, alice, `{"membership":"join"}`)
	b.send(alice, event.TypePowerLevels, "", plContent(r.v, users))
	b.send(alice, event.TypeJoinRules, "", `{"join_rule":"public"}`)
	return b
}

// plContent is power levels content giving alice 100 (before v12, where she
// is not a creator with infinite power) and users their levels.
func plContent(v *event.RoomVersion, users map[string]int64) string {
	all := map[string]int64{}
	if !v.PrivilegedCreators {
		all[alice] = 100
	}
	maps.Copy(all, users)
	b, _ := json.Marshal(map[string]any{"users": all})
	return string(b)
}

// fork returns a second branch from the same tip.
func (b *branch) fork() *branch {
	return &branch{r: b.r, tip: append([]string(nil), b.tip...), depth: b.depth, state: maps.Clone(b.state)}
}

// send appends a state event to the branch and requires it to be allowed.
func (b *branch) send(sender, typ, stateKey, content string) *event.Event {
	b.r.t.Helper()
	ev, err := b.build(sender, typ, stateKey, content, 0)
	if err != nil {
		b.r.t.Fatal(err)
	}
	return ev
}

// sendAt is send with an explicit origin_server_ts.
func (b *branch) sendAt(ts int64, sender, typ, stateKey, content string) *event.Event {
	b.r.t.Helper()
	ev, err := b.build(sender, typ, stateKey, content, ts)
	if err != nil {
		b.r.t.Fatal(err)
	}
	return ev
}

func (b *branch) build(sender, typ, stateKey, content string, ts int64) (*event.Event, error) {
	r := b.r
	keys, err := auth.AuthEventKeys(r.v, typ, stateKey, sender, []byte(content))
	if err != nil {
		return nil, err
	}
	var authIDs []string
	for _, k := range keys {
		if id, ok := b.state[k]; ok {
			authIDs = append(authIDs, id)
		}
	}
	if ts == 0 {
		r.ts++
		ts = r.ts
	}
	sk := stateKey
	p := event.Proto{
		Type: typ, StateKey: &sk, Sender: sender, RoomID: r.roomID, Content: json.RawMessage(content),
		PrevEvents: b.tip, AuthEvents: authIDs, Depth: b.depth + 1, OriginServerTS: ts,
	}
	ev, err := p.Build(r.v, server, r.key)
	if err != nil {
		return nil, err
	}
	if typ == event.TypeCreate {
		r.roomID = ev.RoomID()
	} else if err := auth.Allowed(ev, b.lookup()); err != nil {
		return nil, fmt.Errorf("building %s %q by %s: %w", typ, stateKey, sender, err)
	}
	r.events[ev.ID()] = ev
	b.tip, b.depth = []string{ev.ID()}, b.depth+1
	b.state[event.TypeKey{Type: typ, StateKey: stateKey}] = ev.ID()
	return ev, nil
}

func (b *branch) lookup() auth.StateLookup {
	return func(typ, stateKey string) *event.Event {
		return b.r.events[b.state[event.TypeKey{Type: typ, StateKey: stateKey}]]
	}
}

// Shorthands for the events the tests send.

func (b *branch) join(user string) *event.Event {
	b.r.t.Helper()
	return b.send(user, event.TypeMember, user, `{"membership":"join"}`)
}

func (b *branch) member(sender, target, membership string) *event.Event {
	b.r.t.Helper()
	return b.send(sender, event.TypeMember, target, `{"membership":"`+membership+`"}`)
}

func (b *branch) topic(sender, topic string) *event.Event {
	b.r.t.Helper()
	return b.send(sender, "m.room.topic", "", `{"topic":"`+topic+`"}`)
}

func (b *branch) powerLevels(sender string, users map[string]int64) *event.Event {
	b.r.t.Helper()
	return b.send(sender, event.TypePowerLevels, "", plContent(b.r.v, users))
}

func (b *branch) joinRule(sender, rule string) *event.Event {
	b.r.t.Helper()
	return b.send(sender, event.TypeJoinRules, "", `{"join_rule":"`+rule+`"}`)
}

// Keys the tests look at.
var (
	keyTopic = event.TypeKey{Type: "m.room.topic"}
	keyPL    = event.TypeKey{Type: event.TypePowerLevels}
	keyJR    = event.TypeKey{Type: event.TypeJoinRules}
	keyName  = event.TypeKey{Type: "m.room.name"}
)

func keyMember(user string) event.TypeKey {
	return event.TypeKey{Type: event.TypeMember, StateKey: user}
}

// resolve resolves the branches' states and fails the test on error.
func (r *room) resolve(branches ...*branch) StateMap {
	r.t.Helper()
	states := make([]StateMap, len(branches))
	for i, b := range branches {
		states[i] = b.state
	}
	got, err := Resolve(r.v, states, r.store)
	if err != nil {
		r.t.Fatal(err)
	}
	return got
}

// name describes an event ID for failure messages.
func (r *room) name(id string) string {
	ev, ok := r.events[id]
	if !ok {
		if id == "" {
			return "(none)"
		}
		return id
	}
	return fmt.Sprintf("%s %s/%q by %s %s", id, ev.Type(), *ev.StateKey(), ev.Sender(), ev.Content())
}

// expect checks the resolved value of key: want is the event expected, or
// nil for "absent".
func (r *room) expect(got StateMap, k event.TypeKey, want *event.Event) {
	r.t.Helper()
	wantID := ""
	if want != nil {
		wantID = want.ID()
	}
	if got[k] != wantID {
		r.t.Errorf("%s/%q = %s, want %s", k.Type, k.StateKey, r.name(got[k]), r.name(wantID))
	}
}
