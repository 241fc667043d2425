package stateres

import (
	"errors"
	"maps"
	"math/rand/v2"
	"testing"

	"plaza/homeserver/event"
)

// Every known-answer case runs under room version 11 (state resolution v2)
// and 12 (v2.1). The DAGs are drawn oldest at the top; "setup" stands for
// create, alice's join, the first power levels event (PL0) and public join
// rules (JR0), then whatever joins the case lists. Alice has 100 before v12
// and is a creator with infinite power in v12; either way she outranks
// everyone.
var versions = []string{"11", "12"}

func forVersions(t *testing.T, f func(t *testing.T, version string)) {
	for _, v := range versions {
		t.Run("v"+v, func(t *testing.T) { f(t, v) })
	}
}

// Ban vs join race:
//
//	setup, bob joins (bob 50 in PL0)
//	        |
//	   +----+----+
//	   |         |
//	bob bans   eve joins
//	  eve
//
// The ban is a power event, so it is authorised first, against the state at
// the fork, where bob may ban (50 ≥ ban 50). Eve's join, ordered in the
// mainline phase, then meets her ban in the partial state and is dropped.
func TestBanBeatsJoin(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{bob: 50})
		b.join(bob)
		a, c := b, b.fork()
		ban := a.member(bob, eve, "ban")
		c.join(eve)
		got := r.resolve(a, c)
		r.expect(got, keyMember(eve), ban)
		r.expect(got, keyMember(bob), r.events[b.state[keyMember(bob)]])
	})
}

// Power level revert race:
//
//	setup, bob joins, carol joins (bob 50 in PL0)
//	              |
//	      +-------+--------+
//	      |                |
//	alice demotes bob   bob names the room
//	   (PL1: bob 0)        |
//	                    bob bans carol
//
// PL0, PL1 and the ban are power events, and carol's join (the other value
// of her key) is in the ban's auth chain. Kahn's order puts PL0 first
// (everything else stands on it), then PL1 (alice outranks carol, whose join
// is ready too), then carol's join, then the ban, which fails against PL1. The
// name, ordered in the mainline phase, fails against PL1 too: the mod's
// changes are dropped, the demotion stays.
func TestPowerLevelRevertRace(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{bob: 50})
		b.join(bob)
		carolJoin := b.join(carol)
		a, c := b, b.fork()
		pl1 := a.powerLevels(alice, map[string]int64{bob: 0})
		c.send(bob, "m.room.name", "", `{"name":"bob's room"}`)
		c.member(bob, carol, "ban")
		got := r.resolve(a, c)
		r.expect(got, keyPL, pl1)
		r.expect(got, keyName, nil)
		r.expect(got, keyMember(carol), carolJoin)
	})
}

// Topic set by two users of different power; the mainline decides:
//
//	     setup, carol joins
//	            |
//	     +------+---------------+
//	     |                      |
//	alice raises carol      alice sets topic A
//	(PL1: carol 50)         (late timestamp)
//	     |
//	carol sets topic C
//	(early timestamp)
//
// The only conflicted power event is PL1 vs PL0, and PL1 wins, so the
// mainline is PL1 → PL0. Topic A cites PL0 (position 1), topic C cites PL1
// (position 0); a greater position sorts first, so topic C is applied last
// and wins, although alice has more power and sent hers later.
func TestTopicMainlineOrder(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		b.join(carol)
		a, c := b, b.fork()
		pl1 := a.powerLevels(alice, map[string]int64{carol: 50})
		topicC := a.sendAt(2000, carol, "m.room.topic", "", `{"topic":"C"}`)
		c.sendAt(3000, alice, "m.room.topic", "", `{"topic":"A"}`)
		got := r.resolve(a, c)
		r.expect(got, keyPL, pl1)
		r.expect(got, keyTopic, topicC)
	})
}

// Greater power sorts first in the power ordering, so the lesser power's
// concurrent change is applied last and wins:
//
//	setup, bob joins (bob 50)
//	           |
//	     +-----+-----+
//	     |           |
//	 bob: JR knock  alice: JR invite
//	 (ts 2000)      (ts 3000)
//
// Neither cites the other (join rules are not among a join rules event's auth
// events), so only the comparison orders them. By timestamp alone alice's
// would come last; the power level comes first in the comparison, so alice's
// is applied first and bob's (still allowed: 50 ≥ state_default 50) last.
func TestPowerOrderingHigherPowerFirst(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{bob: 50})
		b.join(bob)
		a, c := b, b.fork()
		knock := a.sendAt(2000, bob, event.TypeJoinRules, "", `{"join_rule":"knock"}`)
		c.sendAt(3000, alice, event.TypeJoinRules, "", `{"join_rule":"invite"}`)
		got := r.resolve(a, c)
		r.expect(got, keyJR, knock)
	})
}

// Join rules changed to invite vs a join in the other fork:
//
//	     setup
//	       |
//	  +----+---------+
//	  |              |
//	alice: JR     frank joins
//	 invite       (public at the fork)
//
// The join rules change is a power event and is applied first; frank's join,
// in the mainline phase, meets an invite-only room and is dropped, so frank
// has no membership at all.
func TestJoinRulesInviteBeatsJoin(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		a, c := b, b.fork()
		jr := a.joinRule(alice, "invite")
		c.join(frank)
		got := r.resolve(a, c)
		r.expect(got, keyJR, jr)
		r.expect(got, keyMember(frank), nil)
	})
}

// A state reset that v2.1's empty start prevents (MSC4297, first change):
//
//	setup, bob joins (bob 50)
//	       |
//	alice: topic OLD
//	       |
//	bob: topic NEW        (authorised by PL0, where bob has 50)
//	       |
//	alice: PL1, bob 0     (demotes bob afterwards)
//
// The room's true state after PL1 is {topic NEW, PL1}. A faulty server —
// the spec's rationale for how states diverge — hands out {topic OLD, PL1}.
// Resolving the two, only the topic is conflicted and PL1 is unconflicted.
//
// v2 starts the iterative auth checks from the unconflicted state, so topic
// NEW is authorised against PL1, which postdates it and gives bob 0: it is
// dropped and the room resets to topic OLD. v2.1 starts from an empty state,
// so topic NEW is checked against its own auth events (PL0) and stays. (With
// no power events, v2.1's partial state has no power levels and the mainline
// is empty; timestamps order the topics.)
func TestStateResetEmptyStart(t *testing.T) {
	want := map[string]string{"11": "OLD", "12": "NEW"}
	forVersions(t, func(t *testing.T, version string) {
		r, faulty, real, topics := stateResetRoom(t, version)
		got := r.resolve(faulty, real)
		r.expect(got, keyTopic, topics[want[version]])
		r.expect(got, keyPL, r.events[real.state[keyPL]])
	})
}

func stateResetRoom(t *testing.T, version string) (r *room, faulty, real *branch, topics map[string]*event.Event) {
	r = newRoom(t, version)
	real = r.create(map[string]int64{bob: 50})
	real.join(bob)
	topics = map[string]*event.Event{"OLD": real.topic(alice, "OLD")}
	topics["NEW"] = real.topic(bob, "NEW")
	real.powerLevels(alice, map[string]int64{bob: 0})
	faulty = real.fork()
	faulty.state[keyTopic] = topics["OLD"].ID()
	return r, faulty, real, topics
}

// The same shape with the RejectionSource hook: if the server knows that
// PL0 was rejected, v2.1 may not use it to authorise topic NEW, which then
// finds no power levels at all (state_default 50, bob 0) and is dropped.
func TestRejectedAuthEventNotUsed(t *testing.T) {
	r, faulty, real, topics := stateResetRoom(t, "12")
	pl0 := r.events[real.state[keyPL]].AuthEventIDs()
	for _, id := range pl0 {
		if r.events[id].Type() == event.TypePowerLevels {
			r.rejected[id] = true
		}
	}
	got, err := Resolve(r.v, []StateMap{faulty.state, real.state}, rejectingStore{r.store})
	if err != nil {
		t.Fatal(err)
	}
	r.expect(got, keyTopic, topics["OLD"])
}

// A state reset that v2.1's conflicted state subgraph prevents (MSC4297,
// second change):
//
//	setup, bob joins (PL0: bob 50)
//	       |
//	alice: PL1, bob 100
//	       |
//	carol joins           (cites PL1 in auth_events)
//	       |
//	bob: PL2, carol 75    (needs bob's 100 from PL1)
//
// A faulty server hands out the state after carol's join but with PL0:
// {PL0, carol joined}; the true state is {PL2, carol joined}. PL1 is in
// both full auth chains (carol's join cites it), so it is not in the auth
// difference.
//
// v2: the full conflicted set is {PL0, PL2}. PL0 is applied, then PL2 is
// checked against PL0, where bob has only 50 and may not grant 75: the room
// resets to PL0. v2.1: PL1 lies on the auth path PL2 → PL1 → PL0 between two
// conflicted events, so it joins the full conflicted set and is replayed
// between them; PL2 is then allowed.
func TestStateResetConflictedSubgraph(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		real := r.create(map[string]int64{bob: 50})
		pl0 := r.events[real.state[keyPL]]
		real.join(bob)
		real.powerLevels(alice, map[string]int64{bob: 100})
		real.join(carol)
		pl2 := real.powerLevels(bob, map[string]int64{bob: 100, carol: 75})
		faulty := real.fork()
		faulty.state[keyPL] = pl0.ID()
		got := r.resolve(faulty, real)
		if version == "11" {
			r.expect(got, keyPL, pl0)
		} else {
			r.expect(got, keyPL, pl2)
		}
	})
}

// The auth difference brings in an intermediate power levels event only one
// fork's chain holds:
//
//	setup, bob and carol join (PL0: bob 50)
//	          |
//	   +------+--------------+
//	   |                     |
//	alice: PL1, bob 100    alice: topic
//	   |
//	bob: PL2, carol 75
//
// The conflicted events are PL0 and PL2 (and the topic). PL1 is in the
// first fork's full auth chain only, so it is in the auth difference and is
// replayed between them; without it PL2 would be checked against PL0, where
// bob's 50 may not grant 75. (In v2.1 PL1 is also in the conflicted state
// subgraph, on the path PL2 → PL1 → PL0.)
func TestAuthDifferenceReplayed(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{bob: 50})
		b.join(bob)
		b.join(carol)
		a, c := b, b.fork()
		a.powerLevels(alice, map[string]int64{bob: 100})
		pl2 := a.powerLevels(bob, map[string]int64{bob: 100, carol: 75})
		c.topic(alice, "elsewhere")
		got := r.resolve(a, c)
		r.expect(got, keyPL, pl2)
	})
}

// Equal timestamps fall back to event IDs, in both orderings:
//
//	     setup
//	       |
//	  +----+----+
//	  |         |
//	 JR x      JR y      (alice, same ts: power ordering)
//	  |         |
//	topic x   topic y    (alice, same ts: mainline ordering)
//
// Same sender power, same timestamp, same mainline position: the smaller ID
// is applied first, so the larger ID wins each key.
func TestEqualTimestampsIDTieBreak(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		a, c := b, b.fork()
		jrA := a.sendAt(5000, alice, event.TypeJoinRules, "", `{"join_rule":"invite"}`)
		jrC := c.sendAt(5000, alice, event.TypeJoinRules, "", `{"join_rule":"knock"}`)
		tA := a.sendAt(6000, alice, "m.room.topic", "", `{"topic":"x"}`)
		tC := c.sendAt(6000, alice, "m.room.topic", "", `{"topic":"y"}`)
		got := r.resolve(a, c)
		r.expect(got, keyJR, maxID(jrA, jrC))
		r.expect(got, keyTopic, maxID(tA, tC))
	})
}

func maxID(a, b *event.Event) *event.Event {
	if a.ID() > b.ID() {
		return a
	}
	return b
}

// Identical states have no conflict: the input comes back unchanged (as a
// copy), without a single event being loaded.
func TestIdenticalStates(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		b.join(bob)
		got, err := Resolve(r.v, []StateMap{b.state, maps.Clone(b.state), b.state}, &store{})
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, b.state) {
			t.Errorf("got %v, want %v", got, b.state)
		}
		got[keyTopic] = "$x"
		if _, ok := b.state[keyTopic]; ok {
			t.Error("result shares the input map")
		}
	})
}

func TestOneAndNoStates(t *testing.T) {
	r := newRoom(t, "12")
	b := r.create(nil)
	got, err := Resolve(r.v, []StateMap{b.state}, &store{})
	if err != nil || !maps.Equal(got, b.state) {
		t.Errorf("one state: got %v, %v; want %v", got, err, b.state)
	}
	got, err = Resolve(r.v, nil, &store{})
	if err != nil || len(got) != 0 {
		t.Errorf("no states: got %v, %v; want empty", got, err)
	}
}

// A key that only some states have is conflicted; with nothing against it,
// it survives (here, a join in one fork).
func TestKeyMissingFromOneState(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		a, c := b, b.fork()
		j := a.join(dave)
		c.topic(alice, "hello")
		got := r.resolve(a, c)
		r.expect(got, keyMember(dave), j)
		r.expect(got, keyTopic, r.events[c.state[keyTopic]])
		if len(got) != len(b.state)+1 {
			t.Errorf("got %d keys, want %d", len(got), len(b.state)+1)
		}
	})
}

// An empty (even nil) state against a full one: every key is conflicted, and
// the full state's events, all allowed against their own auth events, come
// through.
func TestEmptyState(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{bob: 50})
		b.join(bob)
		b.topic(bob, "hi")
		for _, empty := range []StateMap{nil, {}} {
			got, err := Resolve(r.v, []StateMap{empty, b.state}, r.store)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, b.state) {
				t.Errorf("got %v, want %v", got, b.state)
			}
		}
	})
}

func TestErrors(t *testing.T) {
	r := newRoom(t, "11")
	b := r.create(nil)
	a, c := b, b.fork()
	a.topic(alice, "a")
	c.topic(alice, "c")

	// A state event the source does not have.
	missing := &store{events: maps.Clone(r.events)}
	delete(missing.events, a.state[keyTopic])
	if _, err := Resolve(r.v, []StateMap{a.state, c.state}, missing); !errors.Is(err, errNotFound) {
		t.Errorf("missing state event: err = %v", err)
	}
	// A missing auth event.
	missing = &store{events: maps.Clone(r.events)}
	delete(missing.events, a.state[keyPL])
	if _, err := Resolve(r.v, []StateMap{a.state, c.state}, missing); !errors.Is(err, errNotFound) {
		t.Errorf("missing auth event: err = %v", err)
	}
	// A state map entry naming an event of another key.
	bad := maps.Clone(a.state)
	bad[keyName] = a.state[keyTopic]
	if _, err := Resolve(r.v, []StateMap{bad, c.state}, r.store); !errors.Is(err, ErrInvalidState) {
		t.Errorf("mismatched key: err = %v", err)
	}
	if _, err := Resolve(nil, []StateMap{a.state, c.state}, r.store); !errors.Is(err, ErrInvalidState) {
		t.Errorf("nil version: err = %v", err)
	}
}

// The result must not depend on the order of the states. Random rooms with
// several forks doing random things are resolved with the states in random
// orders.
func TestPermutationsDeterministic(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		rng := rand.New(rand.NewPCG(1, uint64(len(version))))
		for round := range 20 {
			r, branches := randomRoom(t, version, rng)
			states := make([]StateMap, len(branches))
			for i, b := range branches {
				states[i] = b.state
			}
			want, err := Resolve(r.v, states, r.store)
			if err != nil {
				t.Fatal(err)
			}
			for range 10 {
				rng.Shuffle(len(states), func(i, j int) { states[i], states[j] = states[j], states[i] })
				got, err := Resolve(r.v, states, r.store)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, want) {
					t.Fatalf("round %d: permuted states resolve differently:\n%v\nvs\n%v", round, got, want)
				}
			}
		}
	})
}

// randomRoom builds a room with a few members and three to five branches
// forked at random points, each making random changes that its own state
// allows. Branches fork from earlier branches, so their states share and
// conflict in many ways.
func randomRoom(t *testing.T, version string, rng *rand.Rand) (*room, []*branch) {
	r := newRoom(t, version)
	users := []string{bob, carol, dave, eve, frank}
	root := r.create(map[string]int64{bob: 50, carol: 50})
	for _, u := range users[:3] {
		root.join(u)
	}
	branches := []*branch{root}
	n := 3 + rng.IntN(3)
	for len(branches) < n {
		b := branches[rng.IntN(len(branches))].fork()
		for range 1 + rng.IntN(6) {
			randomChange(b, users, rng)
		}
		branches = append(branches, b)
	}
	return r, branches[1:]
}

func randomChange(b *branch, users []string, rng *rand.Rand) {
	r := b.r
	everyone := append([]string{alice}, users...)
	for range 20 { // retry until a change is allowed
		sender := everyone[rng.IntN(len(everyone))]
		target := users[rng.IntN(len(users))]
		var err error
		switch rng.IntN(6) {
		case 0:
			_, err = b.build(sender, "m.room.topic", "", `{"topic":"t`+string(rune('a'+rng.IntN(26)))+`"}`, 0)
		case 1:
			_, err = b.build(sender, event.TypeMember, target, `{"membership":"join"}`, 0)
		case 2:
			_, err = b.build(sender, event.TypeMember, target, `{"membership":"`+[]string{"leave", "ban"}[rng.IntN(2)]+`"}`, 0)
		case 3:
			levels := map[string]int64{}
			for _, u := range users {
				levels[u] = []int64{0, 50, 50, 100}[rng.IntN(4)]
			}
			_, err = b.build(sender, event.TypePowerLevels, "", plContent(r.v, levels), 0)
		case 4:
			_, err = b.build(sender, event.TypeJoinRules, "", `{"join_rule":"`+[]string{"public", "invite"}[rng.IntN(2)]+`"}`, 0)
		case 5:
			// Same timestamps as others, to exercise the ID tie-break.
			_, err = b.build(sender, "m.room.name", "", `{"name":"n"}`, 4242)
		}
		if err == nil {
			return
		}
	}
}

// Sanity check of the fixture builder itself: every state entry names an
// event that exists and has that entry's key.
func TestFixtureConsistent(t *testing.T) {
	r, branches := randomRoom(t, "12", rand.New(rand.NewPCG(7, 7)))
	for _, b := range branches {
		for k, id := range b.state {
			ev, ok := r.events[id]
			if !ok {
				t.Fatalf("%v names unknown %s", k, id)
			}
			if tk, _ := ev.TypeKey(); tk != k {
				t.Fatalf("%v names %s of key %v", k, id, tk)
			}
		}
	}
}
