package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"plaza/homeserver/canonicaljson"
)

// Event content is read with exact key matching, never through structs:
// encoding/json matches struct fields case-insensitively, so a struct would
// read {"Membership":"join"} as a join, where every other server sees no
// membership at all.
//
// On the hot path (a message or a join checked against a large room) values
// are looked up in place with canonicaljson.Get, which needs no decoding and
// no allocation: an *event.Event's content is canonical JSON by
// construction. Whole objects are decoded into maps only where every member
// matters (a new power levels event, a third-party invite).

var errNotObject = errors.New("not a JSON object")

// object decodes a JSON object into its members, keys matched exactly.
func object(raw []byte) (map[string]json.RawMessage, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errNotObject
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// str returns obj[key] when it is present and a JSON string.
func str(obj map[string]json.RawMessage, key string) (string, bool) {
	raw, ok := obj[key]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// canonical returns content in canonical form. Event contents already are
// and come back as they are; JSON from elsewhere (a client's request, say)
// is canonicalised, because the in-place lookups rely on sorted keys.
func canonical(content []byte) ([]byte, error) {
	if canonicaljson.IsCanonical(content) {
		return content, nil
	}
	return canonicaljson.Canonicalize(content)
}

// get returns the value of key in the canonical JSON object obj. A malformed
// obj (not an object) reads as having no members.
func get(obj []byte, key string) ([]byte, bool) {
	v, ok, err := canonicaljson.Get(obj, key)
	if err != nil {
		return nil, false
	}
	return v, ok
}

// getString returns the string value of key in the canonical object obj.
func getString(obj []byte, key string) (string, bool) {
	raw, ok := get(obj, key)
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// decodeKey turns a raw object key (between its quotes) into a string.
func decodeKey(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		return "", false
	}
	return s, true
}

func isNull(raw []byte) bool { return string(raw) == "null" }

// Power level values are bounded by canonical JSON's integer range; the same
// bound is applied to values written as strings, so that every level Plaza
// accepts compares the same way on every server.
const (
	maxLevel = 1<<53 - 1
	minLevel = -maxLevel
)

// level reads a power level value: a JSON integer, or (stringy, for room
// versions before 10) a string holding one.
func level(raw []byte, stringy bool) (int64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	switch c := raw[0]; {
	case c == '-' || c >= '0' && c <= '9':
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n < minLevel || n > maxLevel {
			return 0, false
		}
		return n, true
	case c == '"' && stringy:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false
		}
		return stringLevel(s)
	}
	return 0, false
}

// stringLevel parses the string form the spec allows in room versions 1–9
// ("m.room.power_levels events accept values as strings"): base-10 digits,
// any number of leading zeroes, at most one leading '+' or '-', and any
// surrounding whitespace. Nothing else (no inner spaces, no underscores,
// no non-ASCII digits) is accepted.
func stringLevel(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return 0, true
	}
	if len(s) > 16 { // more digits than maxLevel has
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxLevel {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// eachMember calls fn with each member of the canonical JSON object obj, in
// order, until fn returns false. Keys are given raw, escapes undecoded: the
// callers look for plain ASCII names, which canonical JSON never escapes.
// It is canonicaljson.Get for callers that want several members in one
// pass; like Get it trusts obj to be canonical, and fails rather than
// panics when it is not even an object.
func eachMember(obj []byte, fn func(rawKey, val []byte) bool) error {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return errNotObject
	}
	end := len(obj) - 1
	for i := 1; i < end; {
		kEnd, ok := skipString(obj, i)
		if !ok || kEnd >= end || obj[kEnd] != ':' {
			return errNotObject
		}
		vEnd, ok := skipValue(obj, kEnd+1)
		if !ok || vEnd > end {
			return errNotObject
		}
		if !fn(obj[i+1:kEnd-1], obj[kEnd+1:vEnd]) {
			return nil
		}
		switch i = vEnd; {
		case obj[i] == ',':
			i++
		case i != end:
			return errNotObject
		}
	}
	return nil
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for j := i + 1; ; j++ {
		// Strings are long runs without quotes: find the next quote, then
		// see whether an odd number of backslashes escapes it.
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, false
		}
		j += q
		n := 0
		for k := j - 1; k > i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return j + 1, true
		}
	}
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, ok := skipString(b, j)
				if !ok {
					return 0, false
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		return j, j > i
	}
}
