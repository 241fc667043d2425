package auth

import "plaza/homeserver/event"

// StateMap is a state held in memory: an event's auth events when checking
// it against them, or the working state of state resolution.
type StateMap map[event.TypeKey]*event.Event

// NewStateMap builds a StateMap from state events; message events are
// skipped, and a later event replaces an earlier one with the same key.
func NewStateMap(events ...*event.Event) StateMap {
	m := make(StateMap, len(events))
	for _, e := range events {
		m.Add(e)
	}
	return m
}

// Add puts a state event in the map, replacing any with the same key.
func (m StateMap) Add(e *event.Event) {
	if tk, ok := e.TypeKey(); ok {
		m[tk] = e
	}
}

// Lookup is the map as a StateLookup.
func (m StateMap) Lookup(typ, stateKey string) *event.Event {
	return m[event.TypeKey{Type: typ, StateKey: stateKey}]
}
