package stateres

import (
	"encoding/json"
	"fmt"

	"plaza/homeserver/event"
)

// conflictedClosures walks, for each state S_i, the auth closure D_i of its
// conflicted events (the events and their auth chains), counting in
// node.sets how many closures hold each node. It returns the union of the
// closures: a set closed under auth ancestry that contains the full
// conflicted set and every auth chain walked later.
func (r *resolver) conflictedClosures(conflicted []int32) ([]int32, error) {
	var union []int32
	stack := r.stack[:0]
	for i, s := range r.states {
		mark := int32(i + 1)
		stack = stack[:0]
		for _, n := range conflicted {
			tk, _ := r.nodes[n].ev.TypeKey()
			if s[tk] == r.nodes[n].ev.ID() {
				stack = append(stack, n)
			}
		}
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if r.nodes[n].lastSet == mark {
				continue
			}
			r.nodes[n].lastSet = mark
			r.nodes[n].sets++
			if r.nodes[n].sets == 1 {
				union = append(union, n)
			}
			auth, err := r.authOf(n)
			if err != nil {
				return nil, err
			}
			stack = append(stack, auth...)
		}
	}
	r.stack = stack
	return union, nil
}

// authDifference adds the auth difference to the full conflicted set.
//
// The spec defines the full auth chain C_i of a state S_i over all of its
// events. Computing those for states with tens of thousands of members would
// dominate the cost of a resolution that changes a handful of keys, so it is
// split: with U the unconflicted events and their auth chains (common to every
// C_i) and D_i the closures conflictedClosures walked, C_i = U ∪ D_i, hence
// ∪C_i − ∩C_i = (∪D_i − ∩D_i) − U. U is walked only when some event of
// ∪D_i − ∩D_i, not already in the full conflicted set (as conflicted events
// and, in v2.1, the conflicted state subgraph are), could be in it, and only
// until every such event has been found there.
func (r *resolver) authDifference(union []int32) error {
	all := int32(len(r.states))
	open := 0
	for _, n := range union {
		if r.nodes[n].sets == all || r.has(n, flagFull) {
			continue
		}
		// An unconflicted state event is in every state and so in every C_i:
		// a state's own events count as part of its full auth chain (see the
		// package documentation).
		if r.isUnconflictedValue(n) {
			continue
		}
		r.set(n, flagCandidate)
		open++
	}
	if open > 0 {
		stack, err := r.markUnconflictedChains(r.stack, open)
		if err != nil {
			return err
		}
		r.stack = stack
	}
	for _, n := range union {
		if r.has(n, flagCandidate) && !r.has(n, flagInUnconflictedChain) {
			r.set(n, flagFull)
		}
	}
	return nil
}

// markUnconflictedChains walks the auth chains of the unconflicted state
// events, marking what it meets, until all open candidates have been met.
func (r *resolver) markUnconflictedChains(stack []int32, open int) ([]int32, error) {
	w := r.newWalk()
	for k, id := range r.states[0] {
		if _, conflicted := r.conflictedKeys[k]; conflicted {
			continue
		}
		// The unconflicted events themselves are not interned: there are
		// typically thousands of them and only their auth events matter.
		ev, err := r.src.Event(id)
		if err != nil {
			return nil, fmt.Errorf("stateres: loading event %s: %w", id, err)
		}
		if ev == nil {
			return nil, errNoEvent(id)
		}
		stack = stack[:0]
		for _, a := range ev.AuthEventIDs() {
			n, err := r.node(a)
			if err != nil {
				return nil, err
			}
			stack = append(stack, n)
		}
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if r.nodes[n].seen == w {
				continue
			}
			r.nodes[n].seen = w
			if r.has(n, flagCandidate) && !r.has(n, flagInUnconflictedChain) {
				r.set(n, flagInUnconflictedChain)
				if open--; open == 0 {
					return stack, nil
				}
			}
			auth, err := r.authOf(n)
			if err != nil {
				return nil, err
			}
			stack = append(stack, auth...)
		}
	}
	return stack, nil
}

// Values of node.memo for the memoised reachability computations.
const (
	memoUnknown uint8 = iota
	memoVisiting
	memoYes
	memoNo
)

func (r *resolver) clearMemo() {
	for i := range r.nodes {
		r.nodes[i].memo = memoUnknown
	}
}

// reaches computes, for start and everything below it, whether some auth
// event reached from the node (the node itself excluded) satisfies target.
// Results are memoised in node.memo; call clearMemo before changing target.
func (r *resolver) reaches(start int32, target func(int32) bool) (bool, error) {
	stack := append(r.memoStack[:0], start)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		switch r.nodes[n].memo {
		case memoUnknown:
			r.nodes[n].memo = memoVisiting
			auth, err := r.authOf(n)
			if err != nil {
				return false, err
			}
			for _, a := range auth {
				if r.nodes[a].memo == memoUnknown {
					stack = append(stack, a)
				}
			}
		case memoVisiting:
			// Every auth event is settled now (an auth DAG has no cycles; if
			// one were forged, its back edge simply counts as "no").
			res := memoNo
			for _, a := range r.nodes[n].auth {
				if target(a) || r.nodes[a].memo == memoYes {
					res = memoYes
					break
				}
			}
			r.nodes[n].memo = res
			stack = stack[:len(stack)-1]
		default:
			stack = stack[:len(stack)-1]
		}
	}
	r.memoStack = stack
	return r.nodes[start].memo == memoYes, nil
}

// conflictedSubgraph adds the conflicted state subgraph (v2.1) to the full
// conflicted set: the events on auth paths between two conflicted events.
// Every node of union is an ancestor of (or is) a conflicted event, so an
// event is on such a path exactly when a conflicted event is among its own
// auth ancestors.
func (r *resolver) conflictedSubgraph(union []int32) error {
	r.clearMemo()
	isConflicted := func(n int32) bool { return r.has(n, flagConflicted) }
	for _, n := range union {
		yes, err := r.reaches(n, isConflicted)
		if err != nil {
			return err
		}
		if yes {
			r.set(n, flagFull)
		}
	}
	return nil
}

// isPowerEvent says whether an event might take away someone's ability to
// act: power levels, join rules, kicks and bans. Like the reference
// implementations, only the state_key "" versions of power levels and join
// rules count (other state keys mean nothing to the auth rules), and a
// create event counts too, though it can only be in the full conflicted set
// of a forged room.
func isPowerEvent(ev *event.Event) bool {
	switch ev.Type() {
	case event.TypePowerLevels, event.TypeJoinRules, event.TypeCreate:
		return ev.StateKeyEquals("")
	case event.TypeMember:
		sk := ev.StateKey()
		if sk == nil || *sk == ev.Sender() {
			return false
		}
		m := membership(ev.Content())
		return m == "leave" || m == "ban"
	}
	return false
}

func membership(content []byte) string {
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(content, &c) != nil {
		return ""
	}
	return c.Membership
}

// powerSet selects X: the power events of the full conflicted set, plus every
// event of the full conflicted set in their auth chains. The union of those
// chains is walked once, with one visited mark.
func (r *resolver) powerSet(full []int32) ([]int32, error) {
	var xs []int32
	stack := r.stack[:0]
	for _, n := range full {
		if isPowerEvent(r.nodes[n].ev) {
			r.set(n, flagPowerSet)
			xs = append(xs, n)
			auth, err := r.authOf(n)
			if err != nil {
				return nil, err
			}
			stack = append(stack, auth...)
		}
	}
	w := r.newWalk()
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if r.nodes[n].seen == w {
			continue
		}
		r.nodes[n].seen = w
		if r.has(n, flagFull) && !r.has(n, flagPowerSet) {
			r.set(n, flagPowerSet)
			xs = append(xs, n)
		}
		auth, err := r.authOf(n)
		if err != nil {
			return nil, err
		}
		stack = append(stack, auth...)
	}
	r.stack = stack
	return xs, nil
}
