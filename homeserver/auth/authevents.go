package auth

import (
	"errors"
	"fmt"
	"slices"

	"plaza/homeserver/event"
)

// AuthEventKeys is the auth events selection algorithm (server-server API,
// "Auth events selection"): the state entries an event of this shape must
// cite in auth_events, when they exist in the state. The create event is
// selected before version 12 only; the create event itself selects nothing.
// Keys are returned in the spec's order without duplicates. It fails only
// when a member event's content is not a JSON object.
func AuthEventKeys(v *event.RoomVersion, typ, stateKey, sender string, content []byte) ([]event.TypeKey, error) {
	if v == nil {
		return nil, errors.New("auth: AuthEventKeys needs a room version")
	}
	if typ == event.TypeCreate && stateKey == "" {
		return nil, nil
	}
	keys := make([]event.TypeKey, 0, 6)
	add := func(typ, sk string) {
		k := event.TypeKey{Type: typ, StateKey: sk}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if !v.RoomIDFromCreate {
		add(event.TypeCreate, "")
	}
	add(event.TypePowerLevels, "")
	add(event.TypeMember, sender)
	if typ != event.TypeMember {
		return keys, nil
	}
	content, err := canonical(content)
	if err != nil || len(content) == 0 || content[0] != '{' {
		return nil, errors.New("auth events selection: member content is not a JSON object")
	}
	add(event.TypeMember, stateKey)
	membership := membershipOf(content)
	if membership == join || membership == invite || membership == knock {
		add(event.TypeJoinRules, "")
	}
	if membership == invite {
		if tpi, ok := get(content, "third_party_invite"); ok {
			if signed, ok := get(tpi, "signed"); ok {
				if token, ok := getString(signed, "token"); ok {
					add(event.TypeThirdPartyInvite, token)
				}
			}
		}
	}
	if membership == join && v.RestrictedJoins {
		if u, ok := getString(content, "join_authorised_via_users_server"); ok {
			add(event.TypeMember, u)
		}
	}
	return keys, nil
}

// CheckAuthEvents applies the rules about an event's own auth_events (rule 2
// before v12, rule 3 in v12): no two entries for one (type, state_key), no
// entry the selection algorithm does not ask for (so, in v12, no create
// event), an entry for every listed ID, every entry in ev's room, and before
// v12 a create event among them.
//
// authEvents are the events named by ev.AuthEventIDs() that the caller holds
// and that were not rejected. The caller must fetch missing ones first: an ID
// without an event here is taken as missing or rejected, and the event is
// rejected (rule 2.3 / 3.3). Passing an event that ev does not list is a
// caller error and fails without ErrForbidden.
//
// The create event is not subject to these rules (rule 1 decides it alone).
// Once CheckAuthEvents passes, the caller checks Allowed against a state made
// of authEvents (plus, in v12, the room's create event): see StateMap.
func CheckAuthEvents(ev *event.Event, authEvents []*event.Event) error {
	if ev == nil || ev.Version() == nil {
		return errors.New("auth: CheckAuthEvents needs an event with a room version")
	}
	v := ev.Version()
	if ev.Type() == event.TypeCreate {
		return nil
	}
	byID := make(map[string]*event.Event, len(authEvents))
	for _, a := range authEvents {
		if a == nil {
			return errors.New("auth: CheckAuthEvents given a nil auth event")
		}
		if !slices.Contains(ev.AuthEventIDs(), a.ID()) {
			return fmt.Errorf("auth: %s is not among the auth_events of %s", a.ID(), ev.ID())
		}
		byID[a.ID()] = a
	}
	// 3.1: duplicates, counting an ID listed twice as a duplicate too.
	seen := make(map[event.TypeKey]string, len(authEvents))
	seenID := make(map[string]bool, len(authEvents))
	for _, aid := range ev.AuthEventIDs() {
		if seenID[aid] {
			return deny(v, fmt.Sprintf("%s is listed twice", aid), 3, 1)
		}
		seenID[aid] = true
		a := byID[aid]
		if a == nil {
			continue
		}
		if tk, ok := a.TypeKey(); ok {
			if other, dup := seen[tk]; dup {
				return deny(v, fmt.Sprintf("%s and %s are both %s/%q", other, aid, tk.Type, tk.StateKey), 3, 1)
			}
			seen[tk] = aid
		}
	}
	// 3.2: only what the selection algorithm asks for.
	sk := ""
	if p := ev.StateKey(); p != nil {
		sk = *p
	}
	want, err := AuthEventKeys(v, ev.Type(), sk, ev.Sender(), ev.Content())
	if err != nil {
		return deny(v, err.Error(), 3, 2)
	}
	for _, aid := range ev.AuthEventIDs() {
		a := byID[aid]
		if a == nil {
			continue
		}
		tk, ok := a.TypeKey()
		switch {
		case !ok:
			return deny(v, fmt.Sprintf("%s is not a state event", aid), 3, 2)
		case v.RoomIDFromCreate && tk.Type == event.TypeCreate && tk.StateKey == "":
			return deny(v, fmt.Sprintf("%s: the create event must not be listed", aid), 3, 2)
		case !slices.Contains(want, tk):
			return deny(v, fmt.Sprintf("%s (%s/%q) is not selected for this event", aid, tk.Type, tk.StateKey), 3, 2)
		}
	}
	// 3.3: what the caller could not give is missing or rejected.
	for _, aid := range ev.AuthEventIDs() {
		if byID[aid] == nil {
			return deny(v, fmt.Sprintf("%s is missing or rejected", aid), 3, 3)
		}
	}
	// 2.4 (before v12): a create event among them.
	if !v.RoomIDFromCreate {
		if _, ok := seen[event.TypeKey{Type: event.TypeCreate}]; !ok {
			return deny(v, "no m.room.create among the auth events", 3, 4)
		}
	}
	// 3.5: all in the same room.
	for _, aid := range ev.AuthEventIDs() {
		if a := byID[aid]; a.RoomID() != ev.RoomID() {
			return deny(v, fmt.Sprintf("%s is in room %s, not %s", aid, a.RoomID(), ev.RoomID()), 3, 5)
		}
	}
	return nil
}
