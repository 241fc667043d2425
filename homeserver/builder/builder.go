// Package builder turns a client's request for a new event into a finished,
// signed and authorised PDU: it picks prev_events and depth from the room's
// forward extremities, selects auth_events from the room state with the spec's
// selection algorithm, hashes and signs, and checks the result against the
// authorization rules. It is pure: no database, no network.
package builder

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/signing"
)

// MaxPrevEvents bounds the prev_events of a new event; extremities beyond it
// stay extremities and are merged by later events.
const MaxPrevEvents = 10

// MaxDepth is the largest depth canonical JSON can carry.
const MaxDepth = 1<<53 - 1

// Request is what a client asks for.
type Request struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts string
}

// Room is what the builder needs to know of the room.
type Room struct {
	Version *event.RoomVersion
	ID      string
	// State is the room state the event is built on. For version 12 rooms it
	// must return the create event for (m.room.create, "").
	State auth.StateLookup
	// Extremities are the room's forward extremities: the new event's parents.
	Extremities []*event.Event
}

// Signer is the server identity that signs.
type Signer struct {
	ServerName string
	Key        signing.Key
}

// ErrNoExtremities is returned for a room without any event to build on.
var ErrNoExtremities = errors.New("room has no forward extremities")

// Build makes the event. Errors wrap event.ErrMalformed/ErrNotJSON/
// ErrTooLarge for bad input and auth.ErrForbidden when the rules refuse it.
func Build(room Room, req Request, nowMS int64, signer Signer) (*event.Event, error) {
	if len(room.Extremities) == 0 {
		return nil, ErrNoExtremities
	}
	content := req.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	sk := ""
	if req.StateKey != nil {
		sk = *req.StateKey
	}
	keys, err := auth.AuthEventKeys(room.Version, req.Type, sk, req.Sender, content)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", event.ErrMalformed, err)
	}
	authIDs := []string{}
	for _, k := range keys {
		if ev := room.State(k.Type, k.StateKey); ev != nil {
			authIDs = append(authIDs, ev.ID())
		}
	}
	// The deepest extremities are the best parents: they carry the most
	// history, and depth only grows.
	prev := slices.Clone(room.Extremities)
	slices.SortStableFunc(prev, func(a, b *event.Event) int {
		switch {
		case a.Depth() > b.Depth():
			return -1
		case a.Depth() < b.Depth():
			return 1
		}
		return 0
	})
	if len(prev) > MaxPrevEvents {
		prev = prev[:MaxPrevEvents]
	}
	prevIDs := make([]string, len(prev))
	depth := int64(0)
	for i, p := range prev {
		prevIDs[i] = p.ID()
		depth = max(depth, p.Depth())
	}
	proto := event.Proto{
		Type: req.Type, StateKey: req.StateKey, Sender: req.Sender, RoomID: room.ID, Content: content,
		Redacts: req.Redacts, PrevEvents: prevIDs, AuthEvents: authIDs, Depth: min(depth+1, MaxDepth),
		OriginServerTS: nowMS,
	}
	ev, err := proto.Build(room.Version, signer.ServerName, signer.Key)
	if err != nil {
		return nil, err
	}
	if err := auth.Allowed(ev, room.State); err != nil {
		return nil, err
	}
	return ev, nil
}

// BuildCreate makes the create event of a new room. roomID is ignored for
// version 12, whose room ID is derived from the event.
func BuildCreate(v *event.RoomVersion, roomID, creator string, content json.RawMessage, nowMS int64, signer Signer) (*event.Event, error) {
	sk := ""
	proto := event.Proto{Type: event.TypeCreate, StateKey: &sk, Sender: creator, RoomID: roomID, Content: content,
		PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1, OriginServerTS: nowMS}
	ev, err := proto.Build(v, signer.ServerName, signer.Key)
	if err != nil {
		return nil, err
	}
	if err := auth.Allowed(ev, func(string, string) *event.Event { return nil }); err != nil {
		return nil, err
	}
	return ev, nil
}
