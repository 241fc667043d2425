package builder

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/signing"
)

const alice, bob = "@alice:example.org", "@bob:example.org"

// fixture is a small room built only with Build: create, alice's join,
// power levels, public join rules.
type fixture struct {
	t      testing.TB
	v      *event.RoomVersion
	signer Signer
	state  auth.StateMap
	ext    []*event.Event
	roomID string
	now    int64
}

func newFixture(t testing.TB, vid string) *fixture {
	t.Helper()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, v: event.MustVersion(vid), signer: Signer{ServerName: "example.org", Key: key}, state: auth.StateMap{}, now: 1000}
	content := map[string]any{"room_version": vid}
	roomID := ""
	if !f.v.ImplicitCreator {
		content["creator"] = alice
	}
	if !f.v.RoomIDFromCreate {
		roomID = "!room:example.org"
	}
	cb, _ := json.Marshal(content)
	create, err := BuildCreate(f.v, roomID, alice, cb, f.now, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	f.roomID = create.RoomID()
	f.add(create)
	f.mustBuild(alice, event.TypeMember, &[]string{alice}[0], `{"membership":"join"}`)
	users := `{"` + alice + `":100}`
	if f.v.PrivilegedCreators {
		users = `{}`
	}
	f.mustBuild(alice, event.TypePowerLevels, strp(""), `{"users":`+users+`,"state_default":50,"events_default":0,"users_default":0,"ban":50,"kick":50,"redact":50,"invite":0}`)
	f.mustBuild(alice, event.TypeJoinRules, strp(""), `{"join_rule":"public"}`)
	return f
}

func strp(s string) *string { return &s }

func (f *fixture) add(ev *event.Event) {
	f.state.Add(ev)
	f.ext = []*event.Event{ev}
}

func (f *fixture) build(sender, typ string, sk *string, content string) (*event.Event, error) {
	f.now++
	return Build(Room{Version: f.v, ID: f.roomID, State: f.state.Lookup, Extremities: f.ext},
		Request{Sender: sender, Type: typ, StateKey: sk, Content: json.RawMessage(content)}, f.now, f.signer)
}

func (f *fixture) mustBuild(sender, typ string, sk *string, content string) *event.Event {
	f.t.Helper()
	ev, err := f.build(sender, typ, sk, content)
	if err != nil {
		f.t.Fatalf("build %s by %s: %v", typ, sender, err)
	}
	f.add(ev)
	return ev
}

func TestBuildPicksAuthEventsPrevEventsAndDepth(t *testing.T) {
	for _, vid := range event.SupportedVersions() {
		t.Run("v"+vid, func(t *testing.T) {
			f := newFixture(t, vid)
			parent := f.ext[0]
			join := f.mustBuild(bob, event.TypeMember, strp(bob), `{"membership":"join"}`)
			if got := join.PrevEventIDs(); len(got) != 1 || got[0] != parent.ID() {
				t.Fatalf("prev_events = %v, want [%s]", got, parent.ID())
			}
			if join.Depth() != parent.Depth()+1 {
				t.Fatalf("depth %d after %d", join.Depth(), parent.Depth())
			}
			// A join cites power levels, join rules (and before v12 the create
			// event); bob has no member event yet.
			want := []string{f.state.Lookup(event.TypePowerLevels, "").ID(), f.state.Lookup(event.TypeJoinRules, "").ID()}
			if !f.v.RoomIDFromCreate {
				want = append(want, f.state.Lookup(event.TypeCreate, "").ID())
			}
			got := slices.Clone(join.AuthEventIDs())
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("auth_events = %v, want %v", got, want)
			}
			// A message cites bob's own membership too, and passes the
			// auth events check on its own auth events.
			msg := f.mustBuild(bob, "m.room.message", nil, `{"body":"hi"}`)
			var authEvs []*event.Event
			for _, id := range msg.AuthEventIDs() {
				for _, ev := range f.state {
					if ev.ID() == id {
						authEvs = append(authEvs, ev)
					}
				}
			}
			if len(authEvs) != len(msg.AuthEventIDs()) {
				t.Fatalf("message cites events outside the state: %v", msg.AuthEventIDs())
			}
			if err := auth.CheckAuthEvents(msg, authEvs); err != nil {
				t.Fatalf("built event fails the auth_events checks: %v", err)
			}
		})
	}
}

func TestBuildRefusesWhatTheRulesRefuse(t *testing.T) {
	f := newFixture(t, "12")
	// Not a member: may not send.
	if _, err := f.build(bob, "m.room.message", nil, `{"body":"hi"}`); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("non-member message: %v", err)
	}
	f.mustBuild(bob, event.TypeMember, strp(bob), `{"membership":"join"}`)
	// Bob has power 0; state_default is 50.
	if _, err := f.build(bob, "m.room.topic", strp(""), `{"topic":"mine"}`); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("powerless state change: %v", err)
	}
	// Bad input is malformed, not forbidden.
	if _, err := f.build(alice, "m.room.message", nil, `{"n":1.5}`); !errors.Is(err, event.ErrNotJSON) {
		t.Fatalf("float content: %v", err)
	}
	if _, err := Build(Room{Version: f.v, ID: f.roomID, State: f.state.Lookup}, Request{Sender: alice, Type: "x"}, 1, f.signer); !errors.Is(err, ErrNoExtremities) {
		t.Fatalf("no extremities: %v", err)
	}
}

func TestBuildMergesForksAndCapsPrevEvents(t *testing.T) {
	f := newFixture(t, "11")
	base := f.ext[0]
	var forks []*event.Event
	for i := 0; i < MaxPrevEvents+5; i++ {
		f.ext = []*event.Event{base}
		ev, err := f.build(alice, "m.room.message", nil, `{"body":"fork"}`)
		if err != nil {
			t.Fatal(err)
		}
		forks = append(forks, ev)
	}
	f.ext = forks
	merge, err := f.build(alice, "m.room.message", nil, `{"body":"merge"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(merge.PrevEventIDs()) != MaxPrevEvents {
		t.Fatalf("prev_events has %d entries, want %d", len(merge.PrevEventIDs()), MaxPrevEvents)
	}
	if merge.Depth() != base.Depth()+2 {
		t.Fatalf("merge depth %d, want %d", merge.Depth(), base.Depth()+2)
	}
}

func BenchmarkBuildMessage(b *testing.B) {
	f := newFixture(b, "12")
	room := Room{Version: f.v, ID: f.roomID, State: f.state.Lookup, Extremities: f.ext}
	req := Request{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hello world, this is a benchmark message"}`)}
	for b.Loop() {
		if _, err := Build(room, req, 1, f.signer); err != nil {
			b.Fatal(err)
		}
	}
}
