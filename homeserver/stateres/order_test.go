package stateres

import (
	"testing"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
)

// newTestResolver returns a resolver over a room's events, as Resolve would
// set one up, for tests of its parts.
func newTestResolver(t *testing.T, r *room) *resolver {
	t.Helper()
	return &resolver{
		v: r.v, src: r.store, index: map[string]int32{},
		powerLevels: map[[2]int32]auth.PowerLevels{},
	}
}

// An ancestor must come first in the power ordering even when the path to it
// leaves X:
//
//	bob joins            y  (in X, power 0)
//	   |
//	bob invites carol    z  (not in X)
//	   |
//	carol joins             (not in X)
//	   |
//	carol kicks dave     P  (in X, carol at 50)
//
// By the comparison alone P (greater power) would precede y; the auth DAG
// puts y first.
func TestPowerOrderAncestorThroughNonX(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(map[string]int64{carol: 50})
		b.join(dave)
		b.joinRule(alice, "invite")
		b.member(alice, bob, "invite")
		y := b.join(bob)
		b.member(bob, carol, "invite")
		b.join(carol)
		p := b.member(carol, dave, "leave")

		res := newTestResolver(t, r)
		var xs []int32
		for _, ev := range []*event.Event{p, y} {
			n, err := res.node(ev.ID())
			if err != nil {
				t.Fatal(err)
			}
			res.set(n, flagPowerSet)
			xs = append(xs, n)
		}
		if err := res.loadCreate(); err != nil { // v12 creators' power
			t.Fatal(err)
		}
		got, err := res.reverseTopologicalPowerOrder(xs)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || res.nodes[got[0]].ev != y || res.nodes[got[1]].ev != p {
			t.Errorf("order = %v, want [bob's join, carol's kick]", got)
		}
		if res.nodes[got[1]].power <= res.nodes[got[0]].power {
			t.Errorf("fixture: P's sender power %d should exceed y's %d", res.nodes[got[1]].power, res.nodes[got[0]].power)
		}
	})
}

// Three forks: with nothing but alice's topics in conflict, the mainline
// positions tie and the latest timestamp is applied last.
//
//	        setup
//	     /    |    \
//	topic 1 topic 2 topic 3   (ts 3000, 1000, 2000)
func TestThreeForks(t *testing.T) {
	forVersions(t, func(t *testing.T, version string) {
		r := newRoom(t, version)
		b := r.create(nil)
		f1, f2, f3 := b, b.fork(), b.fork()
		t1 := f1.sendAt(3000, alice, "m.room.topic", "", `{"topic":"1"}`)
		f2.sendAt(1000, alice, "m.room.topic", "", `{"topic":"2"}`)
		f3.sendAt(2000, alice, "m.room.topic", "", `{"topic":"3"}`)
		got := r.resolve(f1, f2, f3)
		r.expect(got, keyTopic, t1)
	})
}
