package event

import (
	"plaza/homeserver/canonicaljson"
)

// member is one "key":value pair of a canonical JSON object, as byte spans of
// the original document. Sub-values of canonical JSON are themselves
// canonical, so filtering members and concatenating the rest in order keeps
// the result canonical without re-encoding anything: that is what makes
// hashing, redaction and signing cheap.
type member struct {
	key   string // decoded key
	raw   []byte // `"key":value`, exactly as in the document
	value []byte
}

// members splits a canonical JSON object into its members.
func members(obj []byte) ([]member, error) {
	out := make([]member, 0, 16)
	err := canonicaljson.EachMember(obj, func(rawKey, value []byte) bool {
		// rawKey and value alias obj: the member starts at the key's quote.
		start := cap(obj) - cap(rawKey) - 1
		end := cap(obj) - cap(value) + len(value)
		out = append(out, member{key: canonicaljson.UnescapeKey(rawKey), raw: obj[start:end], value: value})
		return true
	})
	return out, err
}

// joinMembers rebuilds a canonical object from the members for which keep
// returns true. The members must come from one canonical object, in order.
func joinMembers(ms []member, keep func(key string) bool) []byte {
	n := 2
	for _, m := range ms {
		n += len(m.raw) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for _, m := range ms {
		if !keep(m.key) {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, m.raw...)
	}
	return append(out, '}')
}

// filterObject is joinMembers on a canonical object's bytes.
func filterObject(obj []byte, keep func(key string) bool) ([]byte, error) {
	ms, err := members(obj)
	if err != nil {
		return nil, err
	}
	return joinMembers(ms, keep), nil
}

// stringMember reads a string member of a canonical object by its exact
// key (encoding/json would also match other capitalisations, which must not
// count: "Redacts" is not "redacts").
func stringMember(obj []byte, key string) (string, bool) {
	v, ok, err := canonicaljson.Get(obj, key)
	if err != nil || !ok || len(v) < 2 || v[0] != '"' {
		return "", false
	}
	var s string
	if err := jsonUnmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}
