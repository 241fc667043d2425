package auth

import (
	"errors"
	"fmt"
	"slices"

	"plaza/homeserver/event"
)

// levelsView answers the questions Allowed asks of the power levels in a
// state — one user's level, one event type's level, one property — by
// looking each value up in the canonical content. Decoding the whole content
// (every users entry) for every message checked would cost more than all the
// rest of the check in a room with many moderators.
//
// It reads values exactly as parseLevels does. It only judges the values it
// is asked for, so an unreadable value elsewhere in the content goes
// unnoticed; a power levels event in the state passed rule 10, which reads
// all of them, so that difference never shows in practice.
type levelsView struct {
	present bool // the state has a power levels event
	stringy bool
	// The content's members, found in one pass: each lookup then scans
	// only the object it concerns.
	props         [numProps][]byte
	users, events []byte
	malformed     bool
	// creator is the room creator: at Infinite in v12 (with the additional
	// creators), at 100 before v12 when there is no power levels event.
	creator    string
	additional []string
	infinite   bool
}

func newLevelsView(ci *createInfo, plEv *event.Event) levelsView {
	lv := levelsView{creator: ci.creator, additional: ci.additional, infinite: ci.ev.Version().PrivilegedCreators}
	if plEv == nil {
		return lv
	}
	lv.index(plEv.Content(), !plEv.Version().IntegerPowerLevels)
	return lv
}

// index finds the members of a power levels content.
func (lv *levelsView) index(content []byte, stringy bool) {
	lv.present = true
	lv.stringy = stringy
	err := eachMember(content, func(k, v []byte) bool {
		switch string(k) {
		case "users":
			lv.users = v
		case "events":
			lv.events = v
		default:
			for i := range numProps {
				if string(k) == propName(i) {
					lv.props[i] = v
				}
			}
		}
		return true
	})
	lv.malformed = err != nil
}

func (lv *levelsView) invalid(what string) error {
	return fmt.Errorf("power levels content.%s is not an integer%s", what, stringyNote(lv.stringy))
}

// prop returns a top-level property with its default.
func (lv *levelsView) prop(i int) (int64, error) {
	if lv.malformed {
		return 0, errors.New("power levels content is not an object")
	}
	raw := lv.props[i]
	if raw == nil || lv.stringy && isNull(raw) {
		return propDefault(i), nil
	}
	n, ok := level(raw, lv.stringy)
	if !ok {
		return 0, lv.invalid(propName(i))
	}
	return n, nil
}

// entry looks a key up in one of the object-valued properties.
func (lv *levelsView) entry(prop string, m []byte, key string, nullIsAbsent bool) (int64, bool, error) {
	if lv.malformed {
		return 0, false, errors.New("power levels content is not an object")
	}
	if m == nil {
		return 0, false, nil
	}
	if m[0] != '{' {
		return 0, false, fmt.Errorf("power levels content.%s is not an object", prop)
	}
	raw, ok := get(m, key)
	if !ok || nullIsAbsent && isNull(raw) {
		return 0, false, nil
	}
	n, ok := level(raw, lv.stringy)
	if !ok {
		return 0, false, lv.invalid(fmt.Sprintf("%s[%q]", prop, key))
	}
	return n, true, nil
}

// user returns a user's level.
func (lv *levelsView) user(userID string) (int64, error) {
	if lv.infinite && userID != "" && (userID == lv.creator || slices.Contains(lv.additional, userID)) {
		return Infinite, nil
	}
	if !lv.present {
		if userID != "" && userID == lv.creator {
			return 100, nil
		}
		return 0, nil
	}
	n, ok, err := lv.entry("users", lv.users, userID, false)
	if err != nil || ok {
		return n, err
	}
	return lv.prop(propUsersDefault)
}

// event returns the level required to send an event of type typ.
func (lv *levelsView) event(typ string, isState bool) (int64, error) {
	if lv.present {
		n, ok, err := lv.entry("events", lv.events, typ, lv.stringy)
		if err != nil || ok {
			return n, err
		}
	}
	if isState {
		return lv.prop(propStateDefault)
	}
	return lv.prop(propEventsDefault)
}
