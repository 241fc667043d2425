package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"plaza/homeserver/event"
	"plaza/homeserver/id"
)

// StateLookup returns the state event for (type, state_key) in the state the
// event is checked against, or nil. For v12 rooms the caller makes it return
// the room's create event for (m.room.create, "") even though that event is
// never listed in auth_events.
type StateLookup func(typ, stateKey string) *event.Event

// ErrForbidden is wrapped by every error that means "the auth rules do not
// allow this event". Errors that do not wrap it mean the caller passed
// inconsistent input (a nil event, say); the event must not be accepted
// either way.
var ErrForbidden = errors.New("forbidden by the authorization rules")

// RuleError is the error Allowed, CheckAuthEvents and
// CheckJoinAuthorisedSignature return: which rule of the room version's
// authorization rules failed, and why.
type RuleError struct {
	// Version is the room version whose rules were applied.
	Version string
	// Rule is the rule's number in that version's spec text, e.g. "5.3.3"
	// (v12) or "4.3.3" (v8–v11) for "sender is banned".
	Rule string
	// Reason says what was wrong, in words.
	Reason string
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("%v (room version %s rule %s: %s)", ErrForbidden, e.Version, e.Rule, e.Reason)
}

// Unwrap makes errors.Is(err, ErrForbidden) hold.
func (e *RuleError) Unwrap() error { return ErrForbidden }

// Rules are written in this package with their version 12 numbers; ruleID
// renumbers them for earlier versions, whose lists lack some entries:
//
//   - top level: v12 inserted rule 2 (room_id names the create event), so
//     rules 3 and up are one lower before v12;
//   - membership (5.x): rule 5.2 (join_authorised_via_users_server signature)
//     and 5.3.5 (restricted join rules) arrived in v8, 5.7 (knock) in v7;
//   - power levels (10.x): rules 10.1 and 10.2 (integer-only values) arrived
//     in v10, 10.4 (creators not in users) in v12.
func ruleID(v *event.RoomVersion, path ...int) string {
	p := make([]int, len(path))
	copy(p, path)
	if len(p) > 1 {
		switch p[0] {
		case 5: // m.room.member
			s := p[1]
			if !v.RestrictedJoins && p[1] >= 3 {
				s--
			}
			if !v.Knocking && p[1] == 8 {
				s--
			}
			if p[1] == 3 && len(p) > 2 && !v.RestrictedJoins && p[2] >= 6 {
				p[2]--
			}
			p[1] = s
		case 10: // m.room.power_levels
			s := p[1]
			switch {
			case !v.IntegerPowerLevels && s == 3:
				s = 1
			case !v.IntegerPowerLevels && s >= 5:
				s -= 3
			case !v.PrivilegedCreators && s >= 5:
				s--
			}
			p[1] = s
		}
	}
	if !v.RoomIDFromCreate && p[0] >= 3 {
		p[0]--
	}
	var b strings.Builder
	for i, n := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

func deny(v *event.RoomVersion, reason string, path ...int) error {
	return &RuleError{Version: v.ID, Rule: ruleID(v, path...), Reason: reason}
}

// Memberships.
const (
	join   = "join"
	invite = "invite"
	leave  = "leave"
	ban    = "ban"
	knock  = "knock"
)

// Join rules.
const (
	rulePublic          = "public"
	ruleInvite          = "invite"
	ruleKnock           = "knock"
	ruleRestricted      = "restricted"
	ruleKnockRestricted = "knock_restricted"
)

// createInfo is what the rules read from a create event.
type createInfo struct {
	ev *event.Event
	// creator is content.creator before v11 ("" when absent or not a
	// string), the sender from v11.
	creator string
	// additional are v12's additional_creators.
	additional []string
	// noFederate is m.federate set to false.
	noFederate bool
}

func readCreate(create *event.Event) (createInfo, error) {
	ci := createInfo{ev: create}
	content := create.Content()
	if len(content) == 0 || content[0] != '{' {
		return ci, fmt.Errorf("create event %s: content is not an object", create.ID())
	}
	// The rule reads "set to false": only the JSON boolean counts.
	if raw, ok := get(content, "m.federate"); ok && string(raw) == "false" {
		ci.noFederate = true
	}
	v := create.Version()
	if v.ImplicitCreator {
		ci.creator = create.Sender()
	} else {
		ci.creator, _ = getString(content, "creator")
	}
	if v.PrivilegedCreators {
		// A malformed list was rejected with the create event (rule 1.4);
		// if one gets here anyway, no additional creator is trusted.
		ci.additional, _ = additionalCreators(content)
	}
	return ci, nil
}

// isCreator reports whether userID is a v12 room creator.
func (ci *createInfo) isCreator(userID string) bool {
	return ci.ev.Version().PrivilegedCreators && (userID == ci.creator || slices.Contains(ci.additional, userID))
}

// creators lists the v12 room creators (nil before v12).
func (ci *createInfo) creators() []string {
	if !ci.ev.Version().PrivilegedCreators {
		return nil
	}
	return append([]string{ci.creator}, ci.additional...)
}

// additionalCreators reads content.additional_creators (v12): absent, or an
// array of strings that are valid user IDs by the same grammar as sender.
func additionalCreators(content []byte) ([]string, error) {
	raw, ok := get(content, "additional_creators")
	if !ok {
		return nil, nil
	}
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, errors.New("additional_creators is not an array")
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		var s string
		if len(it) == 0 || it[0] != '"' || json.Unmarshal(it, &s) != nil {
			return nil, fmt.Errorf("additional_creators holds %s, not a string", it)
		}
		if _, err := id.ParseUserID(s); err != nil {
			return nil, fmt.Errorf("additional_creators: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// checker holds one Allowed call: the event, the state, and what has been
// read from the state so far, so that nothing is read twice.
type checker struct {
	ev     *event.Event
	v      *event.RoomVersion
	state  StateLookup
	create createInfo
	lv     levelsView
	haveLV bool
}

func (c *checker) deny(reason string, path ...int) error { return deny(c.v, reason, path...) }

// levels returns the power levels in the state.
func (c *checker) levels() *levelsView {
	if !c.haveLV {
		c.lv = newLevelsView(&c.create, c.state(event.TypePowerLevels, ""))
		c.haveLV = true
	}
	return &c.lv
}

// userLevel and prop read the power levels; an unreadable value fails the
// rule that needed it.
func (c *checker) userLevel(userID string, path ...int) (int64, error) {
	l, err := c.levels().user(userID)
	if err != nil {
		return 0, c.deny("power levels in the state are invalid: "+err.Error(), path...)
	}
	return l, nil
}

func (c *checker) prop(i int, path ...int) (int64, error) {
	l, err := c.levels().prop(i)
	if err != nil {
		return 0, c.deny("power levels in the state are invalid: "+err.Error(), path...)
	}
	return l, nil
}

// membership returns a user's membership in the state, "" when they have no
// member event (or one without a string membership).
func (c *checker) membership(userID string) string {
	m := c.state(event.TypeMember, userID)
	if m == nil {
		return ""
	}
	return membershipOf(m.Content())
}

// membershipOf reads content.membership. The known values come back as
// constants, so that checking a membership allocates nothing.
func membershipOf(content []byte) string {
	raw, ok := get(content, "membership")
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	switch string(raw[1 : len(raw)-1]) {
	case join:
		return join
	case invite:
		return invite
	case leave:
		return leave
	case ban:
		return ban
	case knock:
		return knock
	}
	s, _ := getString(content, "membership")
	return s
}

// Allowed applies the room version's authorization rules to ev against
// state. nil means allowed; otherwise the error wraps ErrForbidden and, as a
// *RuleError, names the rule (e.g. "5.3.3: sender is banned").
//
// Allowed applies every rule that depends on the state. It does not apply:
//
//   - the rules about ev's own auth_events (rule 2 before v12, 3 in v12):
//     use CheckAuthEvents when checking an event against its auth events;
//   - the join_authorised_via_users_server signature rule (4.2, 5.2 in v12):
//     use CheckJoinAuthorisedSignature where signatures are verified;
//   - the rejection status of the create event in v12 rule 2: the caller
//     must not pass a rejected create event.
//
// Before v12 a state without a create event fails rule 2.4; in v12 it fails
// rule 2.
func Allowed(ev *event.Event, state StateLookup) error {
	if ev == nil || state == nil || ev.Version() == nil {
		return errors.New("auth: Allowed needs an event with a room version and a state")
	}
	c := &checker{ev: ev, v: ev.Version(), state: state}
	if ev.Type() == event.TypeCreate {
		return c.checkCreate()
	}

	create := state(event.TypeCreate, "")
	if create == nil {
		if c.v.RoomIDFromCreate {
			return c.deny("the room's create event is not known", 2)
		}
		return c.deny("no m.room.create event in the state", 3, 4)
	}
	var err error
	if c.create, err = readCreate(create); err != nil {
		if c.v.RoomIDFromCreate {
			return c.deny(err.Error(), 2)
		}
		return c.deny(err.Error(), 3, 4)
	}
	if c.v.RoomIDFromCreate && !namesCreate(ev.RoomID(), create.ID()) {
		return c.deny(fmt.Sprintf("room_id %s is not the create event %s", ev.RoomID(), create.ID()), 2)
	}
	if c.create.noFederate && id.ServerOf(ev.Sender()) != id.ServerOf(create.Sender()) {
		return c.deny("the room does not federate (m.federate is false) and the sender is on another server", 4)
	}
	if ev.Type() == event.TypeMember {
		return c.checkMember()
	}
	if m := c.membership(ev.Sender()); m != join {
		return c.deny(fmt.Sprintf("sender is not joined (membership %q)", m), 6)
	}
	senderLevel, err := c.userLevel(ev.Sender(), 8)
	if err != nil {
		return err
	}
	if ev.Type() == event.TypeThirdPartyInvite {
		inviteLevel, err := c.prop(propInvite, 7)
		if err != nil {
			return err
		}
		if senderLevel >= inviteLevel {
			return nil
		}
		return c.deny(fmt.Sprintf("sender's power level %d is below the invite level %d", senderLevel, inviteLevel), 7)
	}
	need, err := c.levels().event(ev.Type(), ev.IsState())
	if err != nil {
		return c.deny("power levels in the state are invalid: "+err.Error(), 8)
	}
	if need > senderLevel {
		return c.deny(fmt.Sprintf("sender's power level %s is below the %d required for %s", levelString(senderLevel), need, ev.Type()), 8)
	}
	if sk := ev.StateKey(); sk != nil && strings.HasPrefix(*sk, "@") && *sk != ev.Sender() {
		return c.deny("state_key starts with @ and is not the sender", 9)
	}
	if ev.Type() == event.TypePowerLevels {
		return c.checkPowerLevels(senderLevel)
	}
	return nil
}

// namesCreate reports whether a v12 room ID is the create event's ID with
// the sigil "!" for "$" (compared in place: this runs for every event).
func namesCreate(roomID, createID string) bool {
	return len(roomID) > 1 && len(roomID) == len(createID) && roomID[0] == '!' && createID[0] == '$' && roomID[1:] == createID[1:]
}

// checkCreate is rule 1. It applies to every event of type m.room.create,
// state key or not: any such event but the room's first has prev_events.
func (c *checker) checkCreate() error {
	ev := c.ev
	if len(ev.PrevEventIDs()) > 0 {
		return c.deny("a create event has no prev_events", 1, 1)
	}
	if c.v.RoomIDFromCreate {
		// The event package refuses to parse a v12 create event with a
		// room_id; look at the wire form anyway rather than rely on it.
		top, err := object(ev.JSON())
		if err != nil {
			return c.deny("event is not a JSON object", 1, 2)
		}
		if _, ok := top["room_id"]; ok {
			return c.deny("a version 12 create event has no room_id", 1, 2)
		}
	} else if rd, sd := id.ServerOf(ev.RoomID()), id.ServerOf(ev.Sender()); rd == "" || rd != sd {
		return c.deny(fmt.Sprintf("room_id domain %q does not match the sender's %q", rd, sd), 1, 2)
	}
	obj, err := object(ev.Content())
	if err != nil {
		return c.deny("content is not an object", 1, 3)
	}
	if raw, ok := obj["room_version"]; ok {
		rv, isStr := str(obj, "room_version")
		if !isStr {
			return c.deny(fmt.Sprintf("content.room_version %s is not a string", raw), 1, 3)
		}
		if _, err := event.Version(rv); err != nil {
			return c.deny(fmt.Sprintf("content.room_version %q is not a recognised version", rv), 1, 3)
		}
	}
	switch {
	case !c.v.ImplicitCreator:
		if _, ok := obj["creator"]; !ok {
			return c.deny("content has no creator", 1, 4)
		}
	case c.v.PrivilegedCreators:
		if _, err := additionalCreators(ev.Content()); err != nil {
			return c.deny(err.Error(), 1, 4)
		}
	}
	return nil
}
