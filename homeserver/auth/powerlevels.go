package auth

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"plaza/homeserver/event"
	"plaza/homeserver/id"
)

// Infinite is the power level of the room creators in room version 12: above
// any level a power levels event can hold, so no one can outrank, kick, ban
// or demote a creator, and creators are equals among themselves.
const Infinite int64 = math.MaxInt64

// PowerLevels is an m.room.power_levels content as the auth rules read it,
// with the spec's defaults filled in for absent properties.
type PowerLevels struct {
	Users         map[string]int64
	UsersDefault  int64
	EventsDefault int64
	StateDefault  int64
	Ban           int64
	Kick          int64
	Redact        int64
	Invite        int64
	Events        map[string]int64
	Notifications map[string]int64
	// Creators are the room creators of a version 12 room (the create event's
	// sender and additional_creators). Their level is Infinite whatever Users
	// says. Always empty before version 12, where a creator is an ordinary
	// user who merely starts at 100 (see PowerLevelsFor).
	Creators []string
}

// The integer-valued top-level properties, in the order the spec lists them.
const (
	propUsersDefault = iota
	propEventsDefault
	propStateDefault
	propBan
	propRedact
	propKick
	propInvite
	numProps
)

func propName(i int) string {
	switch i {
	case propUsersDefault:
		return "users_default"
	case propEventsDefault:
		return "events_default"
	case propStateDefault:
		return "state_default"
	case propBan:
		return "ban"
	case propRedact:
		return "redact"
	case propKick:
		return "kick"
	default:
		return "invite"
	}
}

// propDefault is the value of an absent property, per the m.room.power_levels
// schema and the server-server "Definitions".
func propDefault(i int) int64 {
	switch i {
	case propStateDefault, propBan, propRedact, propKick:
		return 50
	default:
		return 0
	}
}

// optLevel is a property value together with whether it was present: the
// power levels auth rule compares what was written, not the defaults.
type optLevel struct {
	v   int64
	set bool
}

// levels is a power levels content as written, validated for the room version.
type levels struct {
	props         [numProps]optLevel
	users         map[string]int64
	events        map[string]int64
	notifications map[string]int64
}

// contentError names the property of a power levels content that is invalid,
// so that the auth rules can cite the rule that property falls under.
type contentError struct {
	field  string // "" when the content itself is not an object
	reason string
}

func (e *contentError) Error() string {
	if e.field == "" {
		return "power levels content: " + e.reason
	}
	return "power levels content." + e.field + ": " + e.reason
}

// parseLevels validates and reads a power levels content.
//
// From version 10 every value must be a JSON integer. Before, a string holding
// an integer is accepted anywhere an integer is, as the spec requires for
// backwards compatibility; null is read as absent for the top-level
// properties and the events/notifications entries (as earlier servers treat
// it) but not for a users entry, whose value the rules require to be an
// integer. Anything else (booleans, floats, objects) is invalid in every
// version: a level that cannot be read as an integer has no meaning.
func parseLevels(v *event.RoomVersion, content []byte) (levels, error) {
	var l levels
	var props [numProps][]byte
	var users, events, notifications []byte
	err := eachMember(content, func(k, val []byte) bool {
		switch string(k) {
		case "users":
			users = val
		case "events":
			events = val
		case "notifications":
			notifications = val
		default:
			for i := range numProps {
				if string(k) == propName(i) {
					props[i] = val
				}
			}
		}
		return true
	})
	if err != nil {
		return l, &contentError{reason: "not a JSON object"}
	}
	stringy := !v.IntegerPowerLevels
	for i, raw := range props {
		if raw == nil || stringy && isNull(raw) {
			continue
		}
		n, ok := level(raw, stringy)
		if !ok {
			return l, &contentError{field: propName(i), reason: "not an integer" + stringyNote(stringy)}
		}
		l.props[i] = optLevel{n, true}
	}
	// events and notifications before users: the spec checks them in that
	// order (rules 10.2 and 10.3 in version 12).
	if l.events, err = levelMap(events, "events", stringy, false); err != nil {
		return l, err
	}
	if l.notifications, err = levelMap(notifications, "notifications", stringy, false); err != nil {
		return l, err
	}
	if l.users, err = levelMap(users, "users", stringy, true); err != nil {
		return l, err
	}
	return l, nil
}

func stringyNote(stringy bool) string {
	if stringy {
		return " or a string holding one"
	}
	return ""
}

// levelMap reads one of the object-valued properties (raw, nil when
// absent). Members come in canonical order, so the same content always
// fails on the same entry.
func levelMap(raw []byte, name string, stringy, userKeys bool) (map[string]int64, error) {
	if raw == nil {
		return nil, nil
	}
	out := make(map[string]int64)
	var bad error
	err := eachMember(raw, func(rawKey, val []byte) bool {
		k, ok := decodeKey(rawKey)
		if !ok {
			bad = &contentError{field: name, reason: "malformed key"}
			return false
		}
		if userKeys {
			if _, err := id.ParseUserID(k); err != nil {
				bad = &contentError{field: name, reason: fmt.Sprintf("key %q is not a valid user ID", k)}
				return false
			}
		} else if stringy && isNull(val) {
			return true
		}
		n, ok := level(val, stringy)
		if !ok {
			bad = &contentError{field: name, reason: fmt.Sprintf("value of %q is not an integer%s", k, stringyNote(stringy))}
			return false
		}
		out[k] = n
		return true
	})
	if err != nil {
		return nil, &contentError{field: name, reason: "not an object"}
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// powerLevels applies the defaults to what was written.
func (l *levels) powerLevels() PowerLevels {
	get := func(i int) int64 {
		if l.props[i].set {
			return l.props[i].v
		}
		return propDefault(i)
	}
	return PowerLevels{
		Users:         l.users,
		UsersDefault:  get(propUsersDefault),
		EventsDefault: get(propEventsDefault),
		StateDefault:  get(propStateDefault),
		Ban:           get(propBan),
		Kick:          get(propKick),
		Redact:        get(propRedact),
		Invite:        get(propInvite),
		Events:        l.events,
		Notifications: l.notifications,
	}
}

// defaultLevels are the power levels of a room without an m.room.power_levels
// event: everyone at 0, state_default, ban, kick and redact at 50, invite and
// events_default at 0. The creator's 100 (before v12) or infinite level (v12)
// is added by the caller, who knows the create event.
func defaultLevels() PowerLevels {
	var l levels
	return l.powerLevels()
}

// ParsePowerLevels validates and reads an m.room.power_levels content under
// room version v, filling in the defaults of absent properties. Version 10
// and later accept JSON integers only; versions 6 to 9 also accept strings
// holding integers. Users keys must be valid user IDs. Creators are not
// known from the content alone: see PowerLevelsFor.
func ParsePowerLevels(v *event.RoomVersion, content []byte) (PowerLevels, error) {
	if v == nil {
		return PowerLevels{}, errors.New("auth: ParsePowerLevels needs a room version")
	}
	content, err := canonical(content)
	if err != nil {
		return PowerLevels{}, &contentError{reason: "not valid JSON: " + err.Error()}
	}
	l, err := parseLevels(v, content)
	if err != nil {
		return PowerLevels{}, err
	}
	return l.powerLevels(), nil
}

// UserLevel returns a user's power level: Infinite for a v12 room creator,
// else their users entry, else users_default.
func (pl PowerLevels) UserLevel(userID string) int64 {
	if slices.Contains(pl.Creators, userID) {
		return Infinite
	}
	if l, ok := pl.Users[userID]; ok {
		return l
	}
	return pl.UsersDefault
}

// IsCreator reports whether userID is a v12 room creator.
func (pl PowerLevels) IsCreator(userID string) bool { return slices.Contains(pl.Creators, userID) }

// EventLevel returns the level required to send an event of type evType:
// its events entry, else state_default or events_default.
func (pl PowerLevels) EventLevel(evType string, isState bool) int64 {
	if l, ok := pl.Events[evType]; ok {
		return l
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// NotificationLevel returns the level required to trigger a notification of
// the given key ("room" for @room). The spec defines only "room", defaulting
// to 50; other absent keys get the same 50.
func (pl PowerLevels) NotificationLevel(key string) int64 {
	if l, ok := pl.Notifications[key]; ok {
		return l
	}
	return 50
}

// PowerLevelsFor returns the power levels in effect in a state: the
// m.room.power_levels event's content with defaults, or, when the state has
// none, the defaults with the room creator at 100 (versions 6–11; content.creator
// before v11, the create event's sender from v11). In version 12 the creators
// have Infinite level in either case. The room version is taken from the
// create event (or the power levels event if there is no create event).
func PowerLevelsFor(state StateLookup) (PowerLevels, error) {
	if state == nil {
		return PowerLevels{}, errors.New("auth: PowerLevelsFor needs a state")
	}
	create := state(event.TypeCreate, "")
	var ci *createInfo
	if create != nil {
		c, err := readCreate(create)
		if err != nil {
			return PowerLevels{}, err
		}
		ci = &c
	}
	return powerLevelsIn(ci, state(event.TypePowerLevels, ""))
}

func powerLevelsIn(ci *createInfo, plEv *event.Event) (PowerLevels, error) {
	var pl PowerLevels
	switch {
	case plEv != nil:
		l, err := parseLevels(plEv.Version(), plEv.Content())
		if err != nil {
			return PowerLevels{}, fmt.Errorf("power levels event %s: %w", plEv.ID(), err)
		}
		pl = l.powerLevels()
	default:
		pl = defaultLevels()
		if ci != nil && !ci.ev.Version().PrivilegedCreators && ci.creator != "" {
			pl.Users = map[string]int64{ci.creator: 100}
		}
	}
	if ci != nil {
		pl.Creators = ci.creators()
	}
	return pl, nil
}

// SenderPowerLevel returns the power level of ev's sender in state (usually
// the state made of ev's auth events), as state resolution's reverse
// topological power ordering needs. A state whose power levels cannot be read
// gives 0 to everyone but v12 creators: ordering must still be total and the
// same on every server, and such a state cannot authorise anything anyway.
func SenderPowerLevel(ev *event.Event, state StateLookup) int64 {
	if ev == nil || state == nil {
		return 0
	}
	pl, err := PowerLevelsFor(state)
	if err != nil {
		if create := state(event.TypeCreate, ""); create != nil {
			if ci, err := readCreate(create); err == nil && ci.isCreator(ev.Sender()) {
				return Infinite
			}
		}
		return 0
	}
	return pl.UserLevel(ev.Sender())
}
