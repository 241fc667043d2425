package stateres

import (
	"math"
	"slices"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
)

// reverseTopologicalPowerOrder sorts X with Kahn's algorithm over the auth
// DAG, taking at each step the smallest ready event: higher sender power
// first, then earlier origin_server_ts, then smaller event ID.
//
// An edge y → x means y is an auth ancestor of x. When the path from x down to
// y leaves X (possible in v2, whose full conflicted set need not be closed
// under paths between its members), the edge is still kept: the ordering must
// put ancestors first whatever lies between them.
func (r *resolver) reverseTopologicalPowerOrder(xs []int32) ([]int32, error) {
	for _, x := range xs {
		if err := r.senderPower(x); err != nil {
			return nil, err
		}
	}
	// pos maps a node of X to its place in xs, for the Kahn bookkeeping.
	pos := make(map[int32]int, len(xs))
	for i, x := range xs {
		pos[x] = i
	}
	inX := func(n int32) bool { return r.has(n, flagPowerSet) }
	r.clearMemo()
	indegree := make([]int, len(xs))
	children := make([][]int32, len(xs))
	for i, x := range xs {
		w := r.newWalk()
		stack := append(r.stack[:0], r.nodes[x].auth...)
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if r.nodes[n].seen == w {
				continue
			}
			r.nodes[n].seen = w
			if inX(n) {
				indegree[i]++
				j := pos[n]
				children[j] = append(children[j], x)
				continue
			}
			through, err := r.reaches(n, inX)
			if err != nil {
				return nil, err
			}
			if through {
				stack = append(stack, r.nodes[n].auth...)
			}
		}
		r.stack = stack
	}

	less := func(a, b int32) bool {
		na, nb := &r.nodes[a], &r.nodes[b]
		if na.power != nb.power {
			return na.power > nb.power
		}
		if ta, tb := na.ev.OriginServerTS(), nb.ev.OriginServerTS(); ta != tb {
			return ta < tb
		}
		return na.ev.ID() < nb.ev.ID()
	}
	ready := minHeap{less: less}
	for i, x := range xs {
		if indegree[i] == 0 {
			ready.push(x)
		}
	}
	out := make([]int32, 0, len(xs))
	for ready.len() > 0 {
		x := ready.pop()
		out = append(out, x)
		for _, c := range children[pos[x]] {
			j := pos[c]
			if indegree[j]--; indegree[j] == 0 {
				ready.push(c)
			}
		}
	}
	// Only a forged cycle could leave events behind; they cannot be ordered
	// and so cannot be authorised after their ancestors: leave them out.
	return out, nil
}

// senderPower computes the power level of node n's sender as n's own auth
// events define it (the create event standing in for v12, whose events do
// not cite it), once per node. Power levels are parsed once per (power
// levels, create) pair: most events being ordered share them.
func (r *resolver) senderPower(n int32) error {
	if r.has(n, flagPowerKnown) {
		return nil
	}
	authNodes, err := r.authOf(n)
	if err != nil {
		return err
	}
	key := [2]int32{-1, -1} // power levels and create among n's auth events
	for _, a := range authNodes {
		switch ae := r.nodes[a].ev; {
		case !ae.StateKeyEquals(""):
		case ae.Type() == event.TypePowerLevels && key[0] < 0:
			key[0] = a
		case ae.Type() == event.TypeCreate && key[1] < 0:
			key[1] = a
		}
	}
	lookup := func(typ, stateKey string) *event.Event {
		switch {
		case stateKey != "":
		case typ == event.TypeCreate && r.create != nil:
			return r.create
		case typ == event.TypeCreate && key[1] >= 0:
			return r.nodes[key[1]].ev
		case typ == event.TypePowerLevels && key[0] >= 0:
			return r.nodes[key[0]].ev
		}
		return nil
	}
	ev := r.nodes[n].ev
	pl, ok := r.powerLevels[key]
	if !ok {
		if pl, err = auth.PowerLevelsFor(lookup); err != nil {
			// Unreadable power levels: let auth apply its fallback (0, or
			// infinite for a v12 creator) to this event alone.
			r.nodes[n].power = auth.SenderPowerLevel(ev, lookup)
			r.set(n, flagPowerKnown)
			return nil
		}
		r.powerLevels[key] = pl
	}
	r.nodes[n].power = pl.UserLevel(ev.Sender())
	r.set(n, flagPowerKnown)
	return nil
}

// authPowerLevels returns the power levels event among node n's auth events,
// or -1.
func (r *resolver) authPowerLevels(n int32) (int32, error) {
	authNodes, err := r.authOf(n)
	if err != nil {
		return -1, err
	}
	for _, a := range authNodes {
		if ae := r.nodes[a].ev; ae.Type() == event.TypePowerLevels && ae.StateKeyEquals("") {
			return a, nil
		}
	}
	return -1, nil
}

// noMainline is the mainline position of an event whose power levels chain
// never meets the mainline: greater than any real position.
const noMainline = math.MaxInt64

// mainlineOrder sorts events by the mainline ordering based on the power
// levels event of the partially resolved state: events whose power levels
// chain meets the mainline further from its head come first, then earlier
// origin_server_ts, then smaller event ID.
func (r *resolver) mainlineOrder(events []int32, ps *partialState) error {
	head, ok, err := ps.get(event.TypeKey{Type: event.TypePowerLevels})
	if err != nil {
		return err
	}
	if ok {
		w := r.newWalk()
		for i, p := int64(0), head; p >= 0; i++ {
			if r.nodes[p].seen == w {
				break // a forged cycle
			}
			r.nodes[p].seen = w
			r.nodes[p].mainline = i
			r.set(p, flagMainlineKnown)
			if p, err = r.authPowerLevels(p); err != nil {
				return err
			}
		}
	}
	keys := make(map[int32]int64, len(events))
	var path []int32
	for _, e := range events {
		p, err := r.authPowerLevels(e)
		if err != nil {
			return err
		}
		// Follow the power levels chain until a known position; every
		// event passed on the way shares it.
		path = path[:0]
		position := int64(noMainline)
		w := r.newWalk()
		for p >= 0 {
			if r.has(p, flagMainlineKnown) {
				position = r.nodes[p].mainline
				break
			}
			if r.nodes[p].seen == w {
				break
			}
			r.nodes[p].seen = w
			path = append(path, p)
			if p, err = r.authPowerLevels(p); err != nil {
				return err
			}
		}
		for _, q := range path {
			r.nodes[q].mainline = position
			r.set(q, flagMainlineKnown)
		}
		keys[e] = position
	}
	slices.SortFunc(events, func(a, b int32) int {
		if pa, pb := keys[a], keys[b]; pa != pb {
			if pa > pb {
				return -1
			}
			return 1
		}
		ea, eb := r.nodes[a].ev, r.nodes[b].ev
		if ta, tb := ea.OriginServerTS(), eb.OriginServerTS(); ta != tb {
			if ta < tb {
				return -1
			}
			return 1
		}
		return r.compareIDs(a, b)
	})
	return nil
}

// minHeap is a binary heap of nodes under less; Kahn's algorithm needs the
// smallest ready event at each step.
type minHeap struct {
	items []int32
	less  func(a, b int32) bool
}

func (h *minHeap) len() int { return len(h.items) }

func (h *minHeap) push(x int32) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.items[i], h.items[parent]) {
			break
		}
		h.items[i], h.items[parent] = h.items[parent], h.items[i]
		i = parent
	}
}

func (h *minHeap) pop() int32 {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items = h.items[:last]
	i := 0
	for {
		l, smallest := 2*i+1, i
		if l < last && h.less(h.items[l], h.items[smallest]) {
			smallest = l
		}
		if rc := l + 1; rc < last && h.less(h.items[rc], h.items[smallest]) {
			smallest = rc
		}
		if smallest == i {
			return top
		}
		h.items[i], h.items[smallest] = h.items[smallest], h.items[i]
		i = smallest
	}
}
