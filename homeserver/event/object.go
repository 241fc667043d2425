package event

import (
	"encoding/json"
	"errors"
	"strings"

	"plaza/homeserver/canonicaljson"
)

// member is one "key":value pair of a canonical JSON object, as byte spans of
// the original document. Sub-values of canonical JSON are themselves canonical,
// so filtering members and concatenating the rest in order keeps the result
// canonical without re-encoding anything: that is what makes hashing, redaction
// and signing cheap.
type member struct {
	key   string // decoded key
	raw   []byte // `"key":value`, exactly as in the document
	value []byte // value alone
}

var errNotObject = errors.New("not a JSON object")

// members splits a canonical JSON object into its members. The input must
// already have been validated as canonical JSON.
func members(obj []byte) ([]member, error) {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errNotObject
	}
	out := make([]member, 0, 16)
	i := 1
	for i < len(obj)-1 {
		start := i
		kEnd, err := skipString(obj, i)
		if err != nil {
			return nil, err
		}
		key := string(obj[i+1 : kEnd-1])
		if strings.IndexByte(key, '\\') >= 0 {
			if err := json.Unmarshal(obj[i:kEnd], &key); err != nil {
				return nil, err
			}
		}
		if kEnd >= len(obj) || obj[kEnd] != ':' {
			return nil, errNotObject
		}
		vStart := kEnd + 1
		vEnd, err := skipValue(obj, vStart)
		if err != nil {
			return nil, err
		}
		out = append(out, member{key: key, raw: obj[start:vEnd], value: obj[vStart:vEnd]})
		i = vEnd
		if i < len(obj)-1 {
			if obj[i] != ',' {
				return nil, errNotObject
			}
			i++
		}
	}
	return out, nil
}

// skipString returns the index just past the string starting at obj[i].
func skipString(obj []byte, i int) (int, error) {
	if i >= len(obj) || obj[i] != '"' {
		return 0, errNotObject
	}
	for j := i + 1; j < len(obj); j++ {
		switch obj[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errNotObject
}

// skipValue returns the index just past the value starting at obj[i].
func skipValue(obj []byte, i int) (int, error) {
	if i >= len(obj) {
		return 0, errNotObject
	}
	switch obj[i] {
	case '"':
		return skipString(obj, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(obj); j++ {
			switch obj[j] {
			case '"':
				end, err := skipString(obj, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errNotObject
	default:
		j := i
		for j < len(obj) && obj[j] != ',' && obj[j] != '}' && obj[j] != ']' {
			j++
		}
		return j, nil
	}
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
	first := true
	for _, m := range ms {
		if !keep(m.key) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
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

// withMember returns obj with key set to value (canonical), inserted at its
// sorted position or replacing an existing member.
func withMember(obj []byte, key string, value []byte) ([]byte, error) {
	ms, err := members(obj)
	if err != nil {
		return nil, err
	}
	kb, err := canonicaljson.Marshal(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(obj)+len(kb)+len(value)+2)
	out = append(out, '{')
	placed := false
	n := 0
	put := func(raw []byte) {
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, raw...)
		n++
	}
	mine := append(append(kb, ':'), value...)
	for _, m := range ms {
		if !placed && m.key >= key {
			put(mine)
			placed = true
			if m.key == key {
				continue
			}
		}
		put(m.raw)
	}
	if !placed {
		put(mine)
	}
	return append(out, '}'), nil
}
