package auth

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"plaza/homeserver/event"
)

// checkPowerLevels is the m.room.power_levels rule (10 in v12, 9 before),
// reached once the sender is known to be joined and to have the level the
// power levels event type requires.
func (c *checker) checkPowerLevels(senderLevel int64) error {
	next, err := parseLevels(c.v, c.ev.Content())
	if err != nil {
		return c.denyContent(err)
	}
	if c.v.PrivilegedCreators {
		for _, u := range sortedKeys(next.users) {
			if c.create.isCreator(u) {
				return c.deny(fmt.Sprintf("users lists room creator %s", u), 10, 4)
			}
		}
	}
	prevEv := c.state(event.TypePowerLevels, "")
	if prevEv == nil {
		return nil // 10.5: the room's first power levels
	}
	// The previous content passed this rule too, so it parses; if it does
	// not, nothing can be compared with it.
	prev, err := parseLevels(prevEv.Version(), prevEv.Content())
	if err != nil {
		return c.deny("power levels in the state are invalid: "+err.Error(), 10, 6)
	}
	sl := levelString(senderLevel)

	// 10.6: the top-level levels. Only what is written is compared: adding
	// a property has no current value to check, removing one no new value.
	for i := range numProps {
		o, n := prev.props[i], next.props[i]
		if o == n {
			continue
		}
		if o.set && o.v > senderLevel {
			return c.deny(fmt.Sprintf("cannot change %s from %d, above the sender's level %s", propName(i), o.v, sl), 10, 6, 1)
		}
		if n.set && n.v > senderLevel {
			return c.deny(fmt.Sprintf("cannot set %s to %d, above the sender's level %s", propName(i), n.v, sl), 10, 6, 2)
		}
	}

	// 10.7 for events then notifications, then 10.8 for both, as listed.
	tables := [2]struct {
		name       string
		prev, next map[string]int64
	}{{"events", prev.events, next.events}, {"notifications", prev.notifications, next.notifications}}
	for _, m := range tables {
		for _, k := range unionKeys(m.prev, m.next) {
			o, hadO := m.prev[k]
			n, hasN := m.next[k]
			if hadO && (!hasN || n != o) && o > senderLevel {
				return c.deny(fmt.Sprintf("cannot change or remove %s[%q] = %d, above the sender's level %s", m.name, k, o, sl), 10, 7, 1)
			}
		}
	}
	for _, m := range tables {
		for _, k := range unionKeys(m.prev, m.next) {
			o, hadO := m.prev[k]
			n, hasN := m.next[k]
			if hasN && (!hadO || n != o) && n > senderLevel {
				return c.deny(fmt.Sprintf("cannot set %s[%q] to %d, above the sender's level %s", m.name, k, n, sl), 10, 8, 1)
			}
		}
	}

	// 10.9: no one may change or remove a peer or a superior; the sender's
	// own entry is exempt, so users may demote themselves.
	users := unionKeys(prev.users, next.users)
	for _, u := range users {
		o, hadO := prev.users[u]
		n, hasN := next.users[u]
		if u != c.ev.Sender() && hadO && (!hasN || n != o) && o >= senderLevel {
			return c.deny(fmt.Sprintf("cannot change or remove %s's level %d, not below the sender's level %s", u, o, sl), 10, 9, 1)
		}
	}
	// 10.10: no one may raise anyone, themselves included, above their own
	// level; raising someone to it is allowed.
	for _, u := range users {
		o, hadO := prev.users[u]
		n, hasN := next.users[u]
		if hasN && (!hadO || n != o) && n > senderLevel {
			return c.deny(fmt.Sprintf("cannot set %s's level to %d, above the sender's level %s", u, n, sl), 10, 10, 1)
		}
	}
	return nil
}

// denyContent maps an invalid power levels content to its rule: 10.1 for the
// top-level integers, 10.2 for events and notifications (both v10+), 10.3 for
// users. Versions 6–9 only have the users rule (9.1); other unreadable values
// are refused under the power levels rule as a whole ("9"), since a level
// that is not an integer cannot be compared by the rules that follow.
func (c *checker) denyContent(err error) error {
	var ce *contentError
	if !errors.As(err, &ce) {
		return c.deny(err.Error(), 10)
	}
	switch {
	case ce.field == "users":
		return c.deny(ce.Error(), 10, 3)
	case !c.v.IntegerPowerLevels:
		return c.deny(ce.Error(), 10)
	case ce.field == "events" || ce.field == "notifications":
		return c.deny(ce.Error(), 10, 2)
	default:
		return c.deny(ce.Error(), 10, 1)
	}
}

// unionKeys returns the keys of both maps, sorted so that the first offending
// entry, and so the error, is always the same.
func unionKeys(a, b map[string]int64) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
