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

// eachMember walks a canonical object's members (raw keys, values).
func eachMember(obj []byte, fn func(rawKey, val []byte) bool) error {
	if err := canonicaljson.EachMember(obj, fn); err != nil {
		return errNotObject
	}
	return nil
}
