package stateres

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
)

// StateMap is a room state: (type, state_key) → event ID.
type StateMap map[event.TypeKey]string

// EventSource loads events by ID (the caller's cache or database). A missing
// event is an error: state resolution needs every event in the states it is
// given and in their auth chains.
type EventSource interface {
	Event(id string) (*event.Event, error)
}

// RejectionSource may be implemented by an EventSource that knows which events
// were rejected when they were received. The spec says a rejected auth event is
// never used to authorise an event during the iterative auth checks; without
// this interface every loaded event is taken to be accepted.
type RejectionSource interface {
	Rejected(id string) bool
}

// ErrInvalidState is wrapped by errors about the input itself (as opposed to
// failures of the EventSource): a state map entry whose event has another
// type or state key, an event of another room, an unknown algorithm.
var ErrInvalidState = errors.New("stateres: invalid input")

// Resolve resolves several state sets of one room (the states after each
// fork's tip) into one, with the algorithm of room version v. The result does
// not depend on the order of states. The input maps are not modified; the
// result is a new map. See the package documentation for how the spec's
// open points are read.
func Resolve(v *event.RoomVersion, states []StateMap, src EventSource) (StateMap, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: nil room version", ErrInvalidState)
	}
	if v.StateRes != event.StateResV2 && v.StateRes != event.StateResV21 {
		return nil, fmt.Errorf("%w: room version %s has state resolution algorithm %d", ErrInvalidState, v.ID, v.StateRes)
	}
	switch len(states) {
	case 0:
		return StateMap{}, nil
	case 1:
		return clone(states[0]), nil
	}
	conflictedKeys := conflictedKeys(states)
	if len(conflictedKeys) == 0 {
		return clone(states[0]), nil
	}
	r := &resolver{
		v:              v,
		src:            src,
		states:         states,
		conflictedKeys: conflictedKeys,
		index:          make(map[string]int32, 256),
		powerLevels:    map[[2]int32]auth.PowerLevels{},
	}
	r.rejections, _ = src.(RejectionSource)
	return r.resolve()
}

func errNoEvent(id string) error {
	return fmt.Errorf("stateres: loading event %s: event source returned no event", id)
}

func clone(s StateMap) StateMap {
	if s == nil {
		return StateMap{}
	}
	return maps.Clone(s)
}

// conflictedKeys returns the keys that are not present with the same event in
// every state. Every other key of states[0] is unconflicted, which is how the
// unconflicted state map is represented without copying it.
func conflictedKeys(states []StateMap) map[event.TypeKey]struct{} {
	keys := map[event.TypeKey]struct{}{}
	first := states[0]
	for k, id := range first {
		for _, s := range states[1:] {
			if other, ok := s[k]; !ok || other != id {
				keys[k] = struct{}{}
				break
			}
		}
	}
	for _, s := range states[1:] {
		for k := range s {
			if _, ok := first[k]; !ok {
				keys[k] = struct{}{}
			}
		}
	}
	return keys
}

// Node flags.
const (
	flagConflicted          uint16 = 1 << iota // in the conflicted state set
	flagFull                                   // in the full conflicted set
	flagPowerSet                               // in X: picked for the power-event phase
	flagUnconflicted                           // the unconflicted state's value for its key
	flagInUnconflictedChain                    // in an unconflicted event's auth chain
	flagCandidate                              // in some but not all conflicted closures, fate open
	flagPowerKnown                             // power holds the sender's power level
	flagMainlineKnown                          // mainline holds the mainline position
	flagTypeChecked                            // flagUnconflicted has been computed
)

// node is one event as the resolver sees it. Events are interned into a dense
// slice so that graph walks use integer indices and per-node fields instead of
// sets keyed by 44-byte event IDs.
type node struct {
	ev *event.Event
	// auth holds the indices of ev's auth events once authDone is set; edges
	// are resolved on first use because most events are never walked.
	auth     []int32
	authDone bool
	flags    uint16
	// seen is the number of the last walk that visited the node (see
	// resolver.walk), so walks need no visited set of their own.
	seen uint32
	// sets counts the state sets whose conflicted closure contains the node;
	// lastSet (set index + 1) stops a closure from counting it twice.
	sets, lastSet int32
	power         int64
	mainline      int64
	// memo is scratch space for one memoised graph computation at a time.
	memo uint8
}

type resolver struct {
	v              *event.RoomVersion
	src            EventSource
	rejections     RejectionSource
	states         []StateMap
	conflictedKeys map[event.TypeKey]struct{}

	nodes  []node
	index  map[string]int32
	recent [256]idSlot
	walk   uint32
	// Reused walk stacks: stack for plain walks, memoStack for reaches,
	// which may run while a plain walk is under way.
	stack, memoStack []int32

	roomID string
	create *event.Event // the room's create event, for v12 lookups and creators

	// powerLevels caches parsed power levels by the (power levels, create)
	// nodes they were read from; -1 stands for "none".
	powerLevels map[[2]int32]auth.PowerLevels
}

// node returns the index of event id, loading it on first use.
func (r *resolver) node(id string) (int32, error) {
	// Walking the auth chains of thousands of members looks up the same few
	// auth events (create, power levels, join rules) again and again: a
	// direct-mapped cache in front of the map answers those with one string
	// comparison. Event IDs end in base64 hash characters, so their last
	// bytes spread well.
	var slot *idSlot
	if l := len(id); l >= 2 {
		slot = &r.recent[(int(id[l-1])<<3^int(id[l-2]))&(len(r.recent)-1)]
		if slot.id == id {
			return slot.n, nil
		}
	}
	n, err := r.lookupNode(id)
	if err == nil && slot != nil {
		*slot = idSlot{id: id, n: n}
	}
	return n, err
}

type idSlot struct {
	id string
	n  int32
}

func (r *resolver) lookupNode(id string) (int32, error) {
	if n, ok := r.index[id]; ok {
		return n, nil
	}
	ev, err := r.src.Event(id)
	if err != nil {
		return 0, fmt.Errorf("stateres: loading event %s: %w", id, err)
	}
	if ev == nil {
		return 0, errNoEvent(id)
	}
	if r.roomID == "" {
		r.roomID = ev.RoomID()
	} else if ev.RoomID() != r.roomID {
		return 0, fmt.Errorf("%w: event %s is in room %s, not %s", ErrInvalidState, id, ev.RoomID(), r.roomID)
	}
	n := int32(len(r.nodes))
	r.nodes = append(r.nodes, node{ev: ev})
	r.index[id] = n
	return n, nil
}

// authOf returns the indices of node n's auth events, loading them on first use.
func (r *resolver) authOf(n int32) ([]int32, error) {
	if r.nodes[n].authDone {
		return r.nodes[n].auth, nil
	}
	ids := r.nodes[n].ev.AuthEventIDs()
	auth := make([]int32, 0, len(ids))
	for _, id := range ids {
		a, err := r.node(id)
		if err != nil {
			return nil, fmt.Errorf("auth event of %s: %w", r.nodes[n].ev.ID(), err)
		}
		if !slices.Contains(auth, a) {
			auth = append(auth, a)
		}
	}
	// r.nodes may have been reallocated by r.node; index afresh.
	r.nodes[n].auth, r.nodes[n].authDone = auth, true
	return auth, nil
}

// newWalk starts a graph walk: nodes with seen == r.walk have been visited.
func (r *resolver) newWalk() uint32 {
	r.walk++
	return r.walk
}

func (r *resolver) has(n int32, f uint16) bool { return r.nodes[n].flags&f != 0 }
func (r *resolver) set(n int32, f uint16)      { r.nodes[n].flags |= f }

// isUnconflictedValue reports whether node n is the unconflicted state's event
// for its own key.
func (r *resolver) isUnconflictedValue(n int32) bool {
	nd := &r.nodes[n]
	if nd.flags&flagTypeChecked == 0 {
		nd.flags |= flagTypeChecked
		if tk, ok := nd.ev.TypeKey(); ok {
			if _, conflicted := r.conflictedKeys[tk]; !conflicted && r.states[0][tk] == nd.ev.ID() {
				nd.flags |= flagUnconflicted
			}
		}
	}
	return nd.flags&flagUnconflicted != 0
}

// unconflicted returns the unconflicted state's event ID for a key.
func (r *resolver) unconflicted(k event.TypeKey) (string, bool) {
	if _, conflicted := r.conflictedKeys[k]; conflicted {
		return "", false
	}
	id, ok := r.states[0][k]
	return id, ok
}

// compareIDs orders nodes by event ID, the tie-break of every ordering.
func (r *resolver) compareIDs(a, b int32) int {
	return strings.Compare(r.nodes[a].ev.ID(), r.nodes[b].ev.ID())
}

func (r *resolver) resolve() (StateMap, error) {
	conflicted, err := r.loadConflicted()
	if err != nil {
		return nil, err
	}
	union, err := r.conflictedClosures(conflicted)
	if err != nil {
		return nil, err
	}
	if r.v.StateRes == event.StateResV21 {
		if err := r.conflictedSubgraph(union); err != nil {
			return nil, err
		}
	}
	if err := r.authDifference(union); err != nil {
		return nil, err
	}
	if err := r.loadCreate(); err != nil {
		return nil, err
	}
	full := make([]int32, 0, len(union))
	for _, n := range union {
		if r.has(n, flagFull) {
			full = append(full, n)
		}
	}

	// Steps 1 and 2: the power events and what they stand on, in reverse
	// topological power order, authorised one by one.
	powerSet, err := r.powerSet(full)
	if err != nil {
		return nil, err
	}
	sortedPower, err := r.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}
	ps := &partialState{r: r, overlay: make(map[event.TypeKey]int32, len(full)), useBase: r.v.StateRes == event.StateResV2}
	if err := r.iterativeAuthChecks(sortedPower, ps); err != nil {
		return nil, err
	}

	// Steps 3 and 4: everything else, in mainline order of the power levels
	// the first phase settled on.
	rest := make([]int32, 0, len(full)-len(powerSet))
	for _, n := range full {
		if !r.has(n, flagPowerSet) {
			rest = append(rest, n)
		}
	}
	if err := r.mainlineOrder(rest, ps); err != nil {
		return nil, err
	}
	if err := r.iterativeAuthChecks(rest, ps); err != nil {
		return nil, err
	}

	// Step 5: the unconflicted state map has the last word. Cloning the
	// first state and taking its conflicted keys out copies the map's tables
	// wholesale, several times faster than inserting the unconflicted
	// entries one by one. The overlay then adds the conflicted keys it
	// resolved, and any other key an event of the full conflicted set
	// brought in.
	out := clone(r.states[0])
	for k := range r.conflictedKeys {
		delete(out, k)
	}
	for k, n := range ps.overlay {
		if _, unconflicted := r.unconflicted(k); !unconflicted {
			out[k] = r.nodes[n].ev.ID()
		}
	}
	return out, nil
}

// loadConflicted loads the conflicted state set, sorted by event ID so that
// node indices (and with them any incidental order) never depend on map
// iteration.
func (r *resolver) loadConflicted() ([]int32, error) {
	var ids []string
	for k := range r.conflictedKeys {
		for _, s := range r.states {
			if id, ok := s[k]; ok {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	conflicted := make([]int32, 0, len(ids))
	for _, id := range ids {
		n, err := r.node(id)
		if err != nil {
			return nil, err
		}
		r.set(n, flagConflicted|flagFull)
		conflicted = append(conflicted, n)
	}
	for k := range r.conflictedKeys {
		for _, s := range r.states {
			id, ok := s[k]
			if !ok {
				continue
			}
			if tk, _ := r.nodes[r.index[id]].ev.TypeKey(); tk != k {
				return nil, fmt.Errorf("%w: state maps %s/%q to event %s of type %s state key %q",
					ErrInvalidState, k.Type, k.StateKey, id, tk.Type, tk.StateKey)
			}
		}
	}
	return conflicted, nil
}

// loadCreate finds the room's create event. Version 12 events never cite it in
// auth_events (the room ID names it), yet the auth rules need it, and
// creators' infinite power comes from it.
func (r *resolver) loadCreate() error {
	if !r.v.RoomIDFromCreate || r.create != nil {
		return nil
	}
	if !strings.HasPrefix(r.roomID, "!") {
		return fmt.Errorf("%w: room ID %q does not name a create event", ErrInvalidState, r.roomID)
	}
	n, err := r.node("$" + r.roomID[1:])
	if err != nil {
		return fmt.Errorf("room create event: %w", err)
	}
	ev := r.nodes[n].ev
	if ev.Type() != event.TypeCreate || !ev.StateKeyEquals("") {
		return fmt.Errorf("%w: room ID %s names event of type %s", ErrInvalidState, r.roomID, ev.Type())
	}
	r.create = ev
	return nil
}
