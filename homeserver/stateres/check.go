package stateres

import (
	"plaza/homeserver/auth"
	"plaza/homeserver/event"
)

// partialState is the state the iterative auth checks build. In v2 it starts
// as the unconflicted state map, which is read through from the input rather
// than copied (it can hold tens of thousands of members); in v2.1 it starts
// empty. Either way, what the checks accept goes into overlay.
type partialState struct {
	r       *resolver
	overlay map[event.TypeKey]int32
	useBase bool
}

// get returns the node holding key k, if any.
func (ps *partialState) get(k event.TypeKey) (int32, bool, error) {
	if n, ok := ps.overlay[k]; ok {
		return n, true, nil
	}
	if !ps.useBase {
		return 0, false, nil
	}
	id, ok := ps.r.unconflicted(k)
	if !ok {
		return 0, false, nil
	}
	n, err := ps.r.node(id)
	if err != nil {
		return 0, false, err
	}
	return n, true, nil
}

func (r *resolver) rejected(n int32) bool {
	return r.rejections != nil && r.rejections.Rejected(r.nodes[n].ev.ID())
}

// authEntry is one (key, event) pair an event is authorised against.
type authEntry struct {
	key event.TypeKey
	ev  *event.Event
}

// iterativeAuthChecks authorises each event in order and, if allowed, puts it
// into the partial state; a rejected event is simply left out.
//
// Each event is checked against its own auth events, except that for every
// key the auth rules select for it (auth.AuthEventKeys), the partial state's
// event is used where the partial state has one. Rejected events are used
// neither way.
func (r *resolver) iterativeAuthChecks(order []int32, ps *partialState) error {
	var entries []authEntry
	// put records ev for key k; over an existing entry only if override.
	put := func(k event.TypeKey, ev *event.Event, override bool) {
		for i := range entries {
			if entries[i].key == k {
				if override {
					entries[i].ev = ev
				}
				return
			}
		}
		entries = append(entries, authEntry{k, ev})
	}
	lookup := func(typ, stateKey string) *event.Event {
		for i := range entries {
			if entries[i].key.Type == typ && entries[i].key.StateKey == stateKey {
				return entries[i].ev
			}
		}
		return nil
	}
	for _, n := range order {
		ev := r.nodes[n].ev
		tk, ok := ev.TypeKey()
		if !ok {
			continue
		}
		keys, err := auth.AuthEventKeys(r.v, ev.Type(), tk.StateKey, ev.Sender(), ev.Content())
		if err != nil {
			// Content the auth rules cannot even read cannot pass them.
			continue
		}
		entries = entries[:0]
		authNodes, err := r.authOf(n)
		if err != nil {
			return err
		}
		for _, a := range authNodes {
			if ak, ok := r.nodes[a].ev.TypeKey(); ok && !r.rejected(a) {
				put(ak, r.nodes[a].ev, false)
			}
		}
		for _, k := range keys {
			m, ok, err := ps.get(k)
			if err != nil {
				return err
			}
			if ok && !r.rejected(m) {
				put(k, r.nodes[m].ev, true)
			}
		}
		if r.create != nil {
			// Version 12: the room ID stands for the create event.
			put(event.TypeKey{Type: event.TypeCreate}, r.create, true)
		}
		if auth.Allowed(ev, lookup) == nil {
			ps.overlay[tk] = n
		}
	}
	return nil
}
