package stateres

import (
	"fmt"
	"testing"

	"plaza/homeserver/event"
)

// bigRoom builds a room with members joined users, then two forks that make a
// few dozen conflicting changes each: power level changes, bans, kicks,
// topics, joins and leaves.
func bigRoom(tb testing.TB, version string, members int) (*room, *branch, *branch) {
	r := newRoom(tb, version)
	b := r.create(map[string]int64{bob: 50, carol: 50})
	b.join(bob)
	b.join(carol)
	user := func(i int) string { return fmt.Sprintf("@u%05d:%s", i, server) }
	for i := range members {
		b.join(user(i))
	}
	a, c := b, b.fork()

	// Fork a: alice raises two members to 50, in two steps (so that the
	// first step is in the auth difference, whose candidates make Resolve
	// walk the auth chains of all the unconflicted members); bob bans ten
	// members; topics; five new joins; five members leave.
	a.powerLevels(alice, map[string]int64{bob: 50, carol: 50, user(0): 50})
	a.powerLevels(alice, map[string]int64{bob: 50, carol: 50, user(0): 50, user(1): 50})
	for i := range 10 {
		a.member(bob, user(100+i), "ban")
	}
	a.topic(alice, "a1")
	a.topic(bob, "a2")
	for i := range 5 {
		a.join(fmt.Sprintf("@new-a%d:%s", i, server))
		a.member(user(200+i), user(200+i), "leave")
	}
	a.topic(user(0), "a3")

	// Fork c: alice demotes bob and drops the two raised members; carol bans
	// ten other members and kicks five; topics; five new joins.
	c.powerLevels(alice, map[string]int64{bob: 0, carol: 50})
	for i := range 10 {
		c.member(carol, user(300+i), "ban")
	}
	for i := range 5 {
		c.member(carol, user(400+i), "leave")
	}
	c.topic(carol, "c1")
	for i := range 5 {
		c.join(fmt.Sprintf("@new-c%d:%s", i, server))
	}
	c.topic(alice, "c2")
	return r, a, c
}

// BenchmarkResolve20kMembers resolves two forks of a room with 20,000
// members (every one of them in both state sets) and a few dozen conflicted
// events per fork. The fixture is built once, outside the timed loop (b.Loop
// times only the loop). cpu-ns/op is the process's CPU time per resolution,
// garbage collection included, which stays meaningful on a busy machine.
func BenchmarkResolve20kMembers(b *testing.B) {
	for _, version := range versions {
		b.Run("v"+version, func(b *testing.B) {
			r, x, y := bigRoom(b, version, 20000)
			states := []StateMap{x.state, y.state}
			var got StateMap
			b.ReportAllocs()
			cpu := processCPUTime()
			n := 0
			for b.Loop() {
				var err error
				if got, err = Resolve(r.v, states, r.store); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(processCPUTime()-cpu)/float64(n), "cpu-ns/op")
			if len(got) < 20000 {
				b.Fatalf("resolved state has %d entries", len(got))
			}
		})
	}
}

// The benchmark's fixture, small, with its known outcome.
//
// Power events first: both power levels events are alice's and the second
// fork's (later) wins, demoting bob to 0. The targets' joins precede the
// kicks and bans that cite them; bob's bans then fail, carol's bans and
// kicks stand.
//
// Then the mainline, based on the second fork's power levels: the first
// fork's events cite the first fork's power levels, whose chain meets the
// mainline one step further down, so they all come before the second fork's.
// Bob's and user 0's topics fail (both at 0 now); alice's and the new
// members' joins and the leaves pass; carol's and then alice's second-fork
// topics are applied last, so alice's "c2" is the topic.
func TestBigRoomShape(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r, a, c := bigRoom(t, version, 500)
		got := r.resolve(a, c)
		user := func(i int) string { return fmt.Sprintf("@u%05d:%s", i, server) }
		fromA := func(k event.TypeKey) *event.Event { return r.events[a.state[k]] }
		fromC := func(k event.TypeKey) *event.Event { return r.events[c.state[k]] }
		r.expect(got, keyPL, fromC(keyPL))
		r.expect(got, keyTopic, fromC(keyTopic))
		for i := range 10 {
			r.expect(got, keyMember(user(100+i)), fromC(keyMember(user(100+i)))) // bob's ban void
			r.expect(got, keyMember(user(300+i)), fromC(keyMember(user(300+i)))) // carol's ban
		}
		for i := range 5 {
			r.expect(got, keyMember(user(200+i)), fromA(keyMember(user(200+i)))) // left
			r.expect(got, keyMember(user(400+i)), fromC(keyMember(user(400+i)))) // kicked
			k := keyMember(fmt.Sprintf("@new-a%d:%s", i, server))
			r.expect(got, k, fromA(k))
			k = keyMember(fmt.Sprintf("@new-c%d:%s", i, server))
			r.expect(got, k, fromC(k))
		}
		r.expect(got, keyMember(user(1)), fromA(keyMember(user(1))))
		if want := len(c.state) + 5; len(got) != want {
			t.Errorf("resolved state has %d keys, want %d", len(got), want)
		}
	})
}

// countingStore counts the events Resolve loads.
type countingStore struct {
	*store
	loads int
}

func (s *countingStore) Event(id string) (*event.Event, error) {
	s.loads++
	return s.store.Event(id)
}

// The cost model of the package documentation: one fork changes the power
// levels twice, the other leaves them alone.
//
//	setup, 300 members
//	       |
//	   +---+----------+
//	   |              |
//	  PL1           topic
//	   |
//	  PL2
//
// PL1 is in the first fork's full auth chain only, so it is a candidate for
// the auth difference, and v2 must read every unconflicted member's auth
// events to learn whether one of them cites it. In v2.1 PL1 lies between the
// conflicted PL2 and PL0, so the conflicted state subgraph already holds it
// and the members are never read.
func TestUnconflictedChainsWalkedOnlyWhenNeeded(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		for i := range 300 {
			b.join(fmt.Sprintf("@u%05d:%s", i, server))
		}
		a, c := b, b.fork()
		a.powerLevels(alice, map[string]int64{bob: 50})
		pl2 := a.powerLevels(alice, map[string]int64{bob: 100})
		c.topic(alice, "t")
		src := &countingStore{store: r.store}
		got, err := Resolve(r.v, []StateMap{a.state, c.state}, src)
		if err != nil {
			t.Fatal(err)
		}
		r.expect(got, keyPL, pl2)
		walked := src.loads > 300
		if want := version == "11"; walked != want {
			t.Errorf("%d events loaded; walked the members: %v, want %v", src.loads, walked, want)
		}
	})
}
