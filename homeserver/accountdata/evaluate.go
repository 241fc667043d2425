package accountdata

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// EventView is what push rules look at: an event and the facts about its
// room and its recipient that conditions ask for.
type EventView struct {
	// Event is the event as decoded by encoding/json into a map (client or
	// federation format: rules read type, state_key, sender, room_id and
	// content).
	Event map[string]any
	// UserID is the user whose rules are evaluated. Their own events never
	// notify them (the spec's "MUST NOT notify ... for events that the user
	// has sent themselves").
	UserID string
	// DisplayName is the user's display name in the room
	// (contains_display_name); "" matches nothing.
	DisplayName string
	// MemberCount is the room's number of joined members
	// (room_member_count).
	MemberCount int
	// SenderPowerLevel is the sender's power level in the room, and
	// NotificationPowerLevels the power levels event's "notifications"
	// (sender_notification_permission); a missing key requires 50, the
	// spec's default for "room".
	SenderPowerLevel        int64
	NotificationPowerLevels map[string]int64
}

// defaultNotificationLevel is the spec's default of notifications.room.
const defaultNotificationLevel = 50

// Evaluate runs a ruleset against an event: the first enabled rule that
// matches decides. notify says whether the event notifies; highlight and
// sound are its tweaks, and are only ever set when it notifies (a highlight
// of an event that does not notify has nothing to show on).
func Evaluate(rules Ruleset, ev EventView) (notify, highlight bool, sound string) {
	if sender, _ := ev.Event["sender"].(string); ev.UserID != "" && sender == ev.UserID {
		return false, false, ""
	}
	for _, k := range kinds() {
		for _, r := range *rules.Rules(k) {
			if r.Enabled && ruleMatches(k, r, ev) {
				return outcome(r.Actions)
			}
		}
	}
	return false, false, ""
}

// outcome interprets a matched rule's actions; unknown actions and tweaks
// do nothing.
func outcome(actions []Action) (notify, highlight bool, sound string) {
	for _, a := range actions {
		switch {
		case a.Name == "notify":
			notify = true
		case a.Name == "set_tweak" && a.Tweak == "highlight":
			// A highlight tweak without a value means true.
			highlight = true
			if a.Value != nil {
				var b bool
				highlight = json.Unmarshal(a.Value, &b) == nil && b
			}
		case a.Name == "set_tweak" && a.Tweak == "sound":
			var s string
			if json.Unmarshal(a.Value, &s) == nil {
				sound = s
			}
		}
	}
	if !notify {
		return false, false, ""
	}
	return notify, highlight, sound
}

func ruleMatches(k Kind, r Rule, ev EventView) bool {
	switch k {
	case KindOverride, KindUnderride:
		for _, c := range r.Conditions {
			if !conditionHolds(c, ev) {
				return false
			}
		}
		return true
	case KindContent:
		body, ok := lookup(ev.Event, "content.body")
		s, isString := body.(string)
		return ok && isString && r.Pattern != "" && globMatch(r.Pattern, s, true, true)
	case KindRoom:
		roomID, _ := ev.Event["room_id"].(string)
		return roomID != "" && roomID == r.RuleID
	case KindSender:
		sender, _ := ev.Event["sender"].(string)
		return sender != "" && sender == r.RuleID
	}
	return false
}

// conditionHolds evaluates one condition; unknown kinds and malformed
// conditions never hold (the spec: unrecognised conditions MUST NOT match).
func conditionHolds(c Condition, ev EventView) bool {
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil {
			return false
		}
		v, ok := lookup(ev.Event, c.Key)
		s, isString := v.(string)
		if !ok || !isString {
			return false
		}
		// content.body matches on word boundaries; everything else whole.
		return globMatch(*c.Pattern, s, true, c.Key == "content.body")
	case "event_property_is":
		want, ok := conditionValue(c.Value)
		if !ok {
			return false
		}
		v, ok := lookup(ev.Event, c.Key)
		if !ok {
			return false
		}
		got, ok := scalar(v)
		return ok && got == want
	case "event_property_contains":
		want, ok := conditionValue(c.Value)
		if !ok {
			return false
		}
		v, ok := lookup(ev.Event, c.Key)
		list, isList := v.([]any)
		if !ok || !isList {
			return false
		}
		for _, item := range list {
			if got, ok := scalar(item); ok && got == want {
				return true
			}
		}
		return false
	case "contains_display_name":
		body, _ := lookup(ev.Event, "content.body")
		s, isString := body.(string)
		// The display name is literal text, not a pattern.
		return isString && ev.DisplayName != "" && literalWordMatch(ev.DisplayName, s)
	case "room_member_count":
		return memberCountMatches(c.Is, ev.MemberCount)
	case "sender_notification_permission":
		if c.Key == "" {
			return false
		}
		need, ok := ev.NotificationPowerLevels[c.Key]
		if !ok {
			need = defaultNotificationLevel
		}
		return ev.SenderPowerLevel >= need
	}
	return false
}

// memberCountMatches evaluates a room_member_count condition.
func memberCountMatches(is string, count int) bool {
	op, n, ok := parseMemberCount(is)
	if !ok {
		return false
	}
	c := int64(count)
	switch op {
	case "<":
		return c < n
	case ">":
		return c > n
	case ">=":
		return c >= n
	case "<=":
		return c <= n
	}
	return c == n
}

// parseMemberCount parses room_member_count's "is": a decimal integer
// optionally prefixed by ==, <, >, >= or <= (none means ==).
func parseMemberCount(is string) (op string, n int64, ok bool) {
	op = "=="
	for _, p := range []string{"==", ">=", "<=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	if is == "" || is[0] < '0' || is[0] > '9' {
		return "", 0, false
	}
	n, err := strconv.ParseInt(is, 10, 64)
	return op, n, err == nil
}

// splitPath splits a dot-separated property path: "\." is a literal dot,
// "\\" a literal backslash, and any other backslash stays as it is.
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// lookup finds the property at a dot-separated path; ok is false when it is
// absent (a JSON null is present, with value nil).
func lookup(ev map[string]any, key string) (any, bool) {
	if key == "" {
		return nil, false
	}
	var cur any = ev
	for _, p := range splitPath(key) {
		m, isMap := cur.(map[string]any)
		if !isMap {
			return nil, false
		}
		v, ok := m[p]
		if !ok {
			return nil, false
		}
		cur = v
	}
	return cur, true
}

// maxSafeInteger bounds the integers canonical JSON allows.
const maxSafeInteger = 1<<53 - 1

// scalar normalises a decoded JSON value to a comparable one: a string,
// bool, nil or an int64 within canonical JSON's range. Other values
// (fractions, arrays, objects) are not comparable.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > maxSafeInteger {
			return nil, false
		}
		return int64(x), true
	case json.Number:
		n, err := x.Int64()
		if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
			return nil, false
		}
		return n, true
	case int:
		return scalar(float64(x))
	case int64:
		if x > maxSafeInteger || x < -maxSafeInteger {
			return nil, false
		}
		return x, true
	}
	return nil, false
}

// conditionValue decodes a condition's value; absent and compound values
// are not comparable.
func conditionValue(raw json.RawMessage) (any, bool) {
	if raw == nil {
		return nil, false
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	return scalar(v)
}

// isWordRune reports whether r belongs to a word: the spec's word
// boundaries are the ends of the value and any character outside
// [A-Za-z0-9_].
func isWordRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_'
}

// globMatch matches a glob ('*' any run of characters, and if question is
// set '?' exactly one) case-insensitively. With words it matches any
// substring of s that starts and ends at a word boundary, else all of s.
//
// It simulates the pattern as an automaton over s, one pass for all start
// positions, so its cost is len(s)×len(pattern) whatever the input
// (backtracking matchers are exponential on patterns like "*a*a*a*b").
func globMatch(pattern, s string, question, words bool) bool {
	p := []rune(strings.ToLower(pattern))
	t := []rune(strings.ToLower(s))
	return runeGlob(p, t, question, words, false)
}

// literalWordMatch reports whether lit occurs in s, case-insensitively, on
// word boundaries.
func literalWordMatch(lit, s string) bool {
	p := []rune(strings.ToLower(lit))
	t := []rune(strings.ToLower(s))
	return runeGlob(p, t, false, true, true)
}

func runeGlob(p, t []rune, question, words, literal bool) bool {
	m := len(p)
	cur, next := make([]bool, m+1), make([]bool, m+1)
	// add puts state k into set with its closure: a '*' may match nothing.
	add := func(set []bool, k int) {
		for !set[k] {
			set[k] = true
			if k == m || literal || p[k] != '*' {
				return
			}
			k++
		}
	}
	add(cur, 0)
	for i := 0; ; i++ {
		if cur[m] && (i == len(t) || words && !isWordRune(t[i])) {
			return true
		}
		if i == len(t) {
			return false
		}
		clear(next)
		c := t[i]
		for k := range m {
			if !cur[k] {
				continue
			}
			switch {
			case !literal && p[k] == '*':
				add(next, k)
			case !literal && question && p[k] == '?', p[k] == c:
				add(next, k+1)
			}
		}
		if words && !isWordRune(c) {
			// A match may start after any non-word character.
			add(next, 0)
		}
		cur, next = next, cur
	}
}

// typeMatches matches an event type against a filter's type pattern, where
// '*' is the only wildcard and case matters.
func typeMatches(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	if !utf8.ValidString(pattern) || !utf8.ValidString(typ) {
		return false
	}
	return runeGlob([]rune(pattern), []rune(typ), false, false, false)
}
