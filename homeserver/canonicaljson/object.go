package canonicaljson

import (
	"bytes"
	"unicode/utf8"
)

// The functions in this file edit the top level of an object that is
// already canonical (as returned by Canonicalize), which is what hashing and
// signing need: drop "signatures" and "unsigned", look up or add a member.
// They trust the input to be canonical and do not re-validate it, so they
// cost a scan, not a parse; malformed input gives an *Error, never a panic,
// but input that is valid yet not canonical gives unspecified results.

// AppendString appends the canonical JSON encoding of s, quotes included,
// to dst. It fails if s is not valid UTF-8.
func AppendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	run := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return nil, &Error{Offset: i, Reason: "invalid UTF-8 in string"}
			}
			i += n
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[run:i]...)
		if e := shortEscape(rune(c)); e != 0 {
			dst = append(dst, '\\', e)
		} else {
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		run = i
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"'), nil
}

// Get returns the value of the member key of the canonical object obj, as
// canonical JSON aliasing obj, and whether it is present.
func Get(obj []byte, key string) (value []byte, ok bool, err error) {
	it := objectIter{obj: obj}
	for it.next() {
		switch c := compareKey(it.key, key); {
		case c == 0:
			return obj[it.valStart:it.valEnd], true, nil
		case c > 0:
			// Keys are sorted: key cannot come later.
			return nil, false, nil
		}
	}
	return nil, false, it.err
}

// Delete returns a copy of the canonical object obj without the members
// named in keys. The result is canonical too.
func Delete(obj []byte, keys ...string) ([]byte, error) {
	out := make([]byte, 0, len(obj))
	out = append(out, '{')
	it := objectIter{obj: obj}
	for it.next() {
		if containsKey(keys, it.key) {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, obj[it.keyStart:it.valEnd]...)
	}
	if it.err != nil {
		return nil, it.err
	}
	return append(out, '}'), nil
}

// Set returns a copy of the canonical object obj with the member key set to
// value, replacing any existing member of that name and keeping key order.
// value may be any JSON; it is canonicalized first.
func Set(obj []byte, key string, value []byte) ([]byte, error) {
	value, err := canonicalize(value, true)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(obj)+len(key)+len(value)+4)
	out = append(out, '{')
	put := func() error {
		if len(out) > 1 {
			out = append(out, ',')
		}
		var err error
		if out, err = AppendString(out, key); err != nil {
			return err
		}
		out = append(out, ':')
		out = append(out, value...)
		return nil
	}
	done := false
	it := objectIter{obj: obj}
	for it.next() {
		if !done {
			c := compareKey(it.key, key)
			if c >= 0 {
				if err := put(); err != nil {
					return nil, err
				}
				done = true
			}
			if c == 0 {
				continue
			}
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, obj[it.keyStart:it.valEnd]...)
	}
	if it.err != nil {
		return nil, it.err
	}
	if !done {
		if err := put(); err != nil {
			return nil, err
		}
	}
	return append(out, '}'), nil
}

func containsKey(keys []string, raw []byte) bool {
	for _, k := range keys {
		if compareKey(raw, k) == 0 {
			return true
		}
	}
	return false
}

// compareKey compares a key as it appears in canonical JSON (escaped, no
// quotes) with a plain string, by code point.
func compareKey(raw []byte, key string) int {
	if bytes.IndexByte(raw, '\\') < 0 {
		return compareBytesString(raw, key)
	}
	var buf [64]byte
	return compareBytesString(unescapeCanonical(buf[:0], raw), key)
}

func compareBytesString(a []byte, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// unescapeCanonical decodes the body of a canonical string, where the only
// escapes are the short ones and \u00xx.
func unescapeCanonical(dst, raw []byte) []byte {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			dst = append(dst, c)
			continue
		}
		i++
		if raw[i] != 'u' {
			dst = append(dst, unescapeShort(raw[i]))
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			dst = append(dst, '\\', 'u')
			continue
		}
		dst = utf8.AppendRune(dst, r)
		i += 4
	}
	return dst
}

// objectIter walks the members of a canonical object.
type objectIter struct {
	obj              []byte
	pos              int
	key              []byte // raw key, without quotes
	keyStart         int
	valStart, valEnd int
	err              error
}

func (it *objectIter) fail(reason string) bool {
	it.err = &Error{Offset: it.pos, Reason: reason}
	return false
}

func (it *objectIter) next() bool {
	b := it.obj
	if it.err != nil {
		return false
	}
	if it.pos == 0 {
		if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
			return it.fail("not a JSON object")
		}
		it.pos = 1
	} else {
		// it.pos is just past the previous value.
		if b[it.pos] == '}' {
			if it.pos != len(b)-1 {
				return it.fail("unexpected data after object")
			}
			return false
		}
		if b[it.pos] != ',' {
			return it.fail("expected ',' between object members")
		}
		it.pos++
	}
	if it.pos == len(b)-1 {
		if it.pos == 1 {
			return false
		}
		return it.fail("unexpected '}' after ','")
	}
	if b[it.pos] != '"' {
		return it.fail("expected object key")
	}
	it.keyStart = it.pos
	end, ok := skipString(b, it.pos)
	if !ok || end >= len(b)-1 || b[end] != ':' {
		return it.fail("malformed object key")
	}
	it.key = b[it.pos+1 : end-1]
	it.valStart = end + 1
	end, ok = skipValue(b, it.valStart)
	if !ok || end > len(b)-1 {
		it.pos = it.valStart
		return it.fail("malformed object value")
	}
	it.valEnd = end
	it.pos = end
	return true
}

// skipString returns the offset just past the string that starts at b[i].
func skipString(b []byte, i int) (int, bool) {
	for i++; ; i++ {
		// Strings are mostly long runs without quotes: let IndexByte
		// find the next candidate, then see whether it is escaped.
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return 0, false
		}
		i += q
		n := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, true
		}
	}
}

// skipValue returns the offset just past the value that starts at b[i]. It
// matches brackets without checking what lies between them; the caller's
// input is canonical, so that is enough to find the value's end.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			}
		}
		return 0, false
	case c == '-' || c >= '0' && c <= '9':
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
		return i, true
	case c == 't' || c == 'n':
		return i + 4, i+4 <= len(b)
	case c == 'f':
		return i + 5, i+5 <= len(b)
	}
	return 0, false
}

// EachMember calls fn with the raw key (escapes intact, no quotes) and the
// value of each member of the canonical object obj, in order, until fn
// returns false. Values alias obj and are canonical themselves.
func EachMember(obj []byte, fn func(rawKey, value []byte) bool) error {
	it := objectIter{obj: obj}
	for it.next() {
		if !fn(it.key, obj[it.valStart:it.valEnd]) {
			return nil
		}
	}
	return it.err
}

// UnescapeKey returns a raw key (as EachMember gives it) as a Go string.
func UnescapeKey(rawKey []byte) string {
	if bytes.IndexByte(rawKey, '\\') < 0 {
		return string(rawKey)
	}
	return string(unescapeCanonical(nil, rawKey))
}
