// Package canonicaljson owns Matrix canonical JSON: the one byte encoding of
// a JSON value that event hashes and signatures are computed over
// (appendices, "Canonical JSON"), and the strict input rules that room
// versions 6 and later impose on every event (rooms/v6, "Canonical JSON").
//
// The rules, as enforced here:
//
//   - objects have their keys sorted by Unicode code point, and a key may
//     appear only once (duplicates are ambiguous, so they are rejected rather
//     than resolved "last one wins");
//   - there is no insignificant whitespace;
//   - strings are UTF-8 with only the mandatory escapes, in their shortest
//     form: \" \\ \b \f \n \r \t, and \u00xx (lowercase hex) for the other
//     control characters below U+0020; "/" and non-ASCII are written raw.
//     \uXXXX escapes in the input, surrogate pairs included, are decoded; a
//     lone surrogate is invalid UTF-8 and is rejected;
//   - numbers are integers in [MinInt, MaxInt] written in plain decimal;
//     -0 becomes 0. Fractions and exponents are rejected even when the value
//     is integral ("1.0", "1e2"), as Synapse does for room versions 6 and up;
//   - containers nest at most MaxDepth deep.
//
// Canonicalize, Valid and IsCanonical share one hand-written single-pass
// parser. It never builds a tree: output is the input copied through, except
// where the input is not already canonical, and an object's members are
// reordered in place only when they arrive unsorted. Input that is already
// canonical therefore costs one validation pass and one copy.
package canonicaljson

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	// MaxInt and MinInt bound the integers canonical JSON may carry: the
	// range an IEEE double represents exactly, so every implementation,
	// whatever its number type, reads the same value.
	MaxInt = 1<<53 - 1
	MinInt = -MaxInt

	// MaxDepth is how deeply arrays and objects may nest; the top-level
	// container is depth 1. The spec sets no limit, and real events nest a
	// handful of levels. serde_json's default limit, which the Rust
	// homeservers inherit, allows 127 levels, so 128 turns away nothing
	// they accept. Synapse goes deeper (up to Python's recursion limit);
	// an event nested past 128 levels is an attack, not a message, and the
	// limit bounds this parser's recursion.
	MaxDepth = 128
)

// Error reports input that is not acceptable as canonical JSON: a syntax
// error or a violation of the Matrix rules. Callers turn it into M_BAD_JSON.
type Error struct {
	// Offset is the byte offset in the input where the problem was found.
	Offset int
	// Reason says what is wrong, in words suitable for an M_BAD_JSON error.
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("canonical json: %s at offset %d", e.Reason, e.Offset)
}

// Canonicalize parses in as a single JSON value and returns its canonical
// encoding in a newly allocated slice. Input that breaks the rules in the
// package documentation is rejected with an *Error.
func Canonicalize(in []byte) ([]byte, error) {
	return canonicalize(in, false)
}

// canonicalize may return in itself when it is already canonical and owned
// is set, which saves Marshal a copy of a buffer nobody else holds.
func canonicalize(in []byte, owned bool) ([]byte, error) {
	p := parser{in: in}
	if err := p.document(); err != nil {
		return nil, err
	}
	if p.out == nil {
		if owned {
			return in, nil
		}
		return bytes.Clone(in), nil
	}
	return append(p.out, in[p.mark:]...), nil
}

// Valid reports whether Canonicalize would accept in, without producing the
// canonical encoding.
func Valid(in []byte) error {
	p := parser{in: in, validate: true}
	return p.document()
}

// IsCanonical reports whether in is exactly the canonical encoding of a
// value, i.e. whether Canonicalize(in) would return in unchanged.
func IsCanonical(in []byte) bool {
	p := parser{in: in, validate: true}
	return p.document() == nil && !p.diverged
}

// Marshal encodes v with encoding/json and returns its canonical encoding.
// HTML escaping is turned off first: canonical JSON writes <, > and & raw,
// so escaping them would only be undone again.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	// Encode ends the value with a newline; dropping it here lets already
	// canonical output (sorted map keys, integers only) be returned as is.
	return canonicalize(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), true)
}

// member is one object member seen by the parser, kept until the object
// closes so that its keys can be checked for order and duplicates. Offsets
// are int32 to keep the struct small: objects keep their members on the
// stack, one frame per nesting level.
type member struct {
	prefix         uint64 // the key's first 8 bytes, big-endian: most comparisons end here
	keyOff, keyLen int32  // the decoded key: in parser.in, or in parser.keys if escaped
	inOff          int32  // input offset of the key, for error messages
	start, end     int32  // output span of `"key":value`
	escaped        bool   // the key had escapes, so its decoded form lives in parser.keys
}

// maxInput keeps offsets within member's int32 fields.
const maxInput = math.MaxInt32

// parser validates and canonicalizes in one pass. Output is produced lazily:
// in[mark:pos] is known to be canonical and is copied to out only when
// something after it must change (whitespace dropped, an escape rewritten,
// members reordered). If nothing ever changes, out stays nil.
type parser struct {
	in       []byte
	pos      int
	mark     int
	out      []byte
	validate bool // check only: never write out
	diverged bool // the output differs from the input

	keys []byte // decoded escaped keys of all open objects
	tmp  []byte // scratch for reordering an object's members
}

func (p *parser) fail(off int, reason string) error {
	return &Error{Offset: off, Reason: reason}
}

func (p *parser) failf(off int, format string, args ...any) error {
	return &Error{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// outPos maps an input offset at or after mark to where that byte lands in
// the output.
func (p *parser) outPos(i int) int {
	return len(p.out) + i - p.mark
}

// drop removes in[i:j] from the output. The canonical stretch before it is
// flushed to out; the caller then appends whatever replaces the dropped bytes.
func (p *parser) drop(i, j int) {
	p.diverged = true
	if !p.validate {
		if p.out == nil {
			// Canonical output is never longer than its input, so this
			// is the only allocation out ever needs.
			p.out = make([]byte, 0, len(p.in))
		}
		p.out = append(p.out, p.in[p.mark:i]...)
	}
	p.mark = j
}

func (p *parser) emit(b ...byte) {
	if !p.validate {
		p.out = append(p.out, b...)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t'
}

func (p *parser) ws() {
	i := p.pos
	if i < len(p.in) && isSpace(p.in[i]) {
		j := i + 1
		for j < len(p.in) && isSpace(p.in[j]) {
			j++
		}
		p.drop(i, j)
		p.pos = j
	}
}

func describe(c byte) string {
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf("byte 0x%02x", c)
	}
	return fmt.Sprintf("%q", rune(c))
}

func (p *parser) eof() error {
	return p.fail(len(p.in), "unexpected end of input")
}

func (p *parser) document() error {
	if len(p.in) > maxInput {
		return p.fail(0, "input too large")
	}
	p.ws()
	if err := p.value(0); err != nil {
		return err
	}
	p.ws()
	if p.pos < len(p.in) {
		return p.failf(p.pos, "unexpected %s after top-level value", describe(p.in[p.pos]))
	}
	return nil
}

func (p *parser) value(depth int) error {
	if p.pos >= len(p.in) {
		return p.eof()
	}
	switch c := p.in[p.pos]; c {
	case '{':
		return p.object(depth + 1)
	case '[':
		return p.array(depth + 1)
	case '"':
		_, err := p.str(false)
		return err
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return p.number()
		}
		return p.failf(p.pos, "unexpected %s looking for a value", describe(c))
	}
}

func (p *parser) literal(lit string) error {
	if len(p.in)-p.pos >= len(lit) && string(p.in[p.pos:p.pos+len(lit)]) == lit {
		p.pos += len(lit)
		return nil
	}
	return p.failf(p.pos, "invalid literal, expected %s", lit)
}

func (p *parser) number() error {
	in := p.in
	start := p.pos
	i := start
	neg := in[i] == '-'
	if neg {
		i++
	}
	digits := i
	if i >= len(in) || in[i] < '0' || in[i] > '9' {
		return p.fail(start, "invalid number")
	}
	var v uint64
	if in[i] == '0' {
		i++
		if i < len(in) && in[i] >= '0' && in[i] <= '9' {
			return p.fail(start, "invalid number: leading zero")
		}
	} else {
		for ; i < len(in) && in[i] >= '0' && in[i] <= '9'; i++ {
			// 17 digits cannot overflow a uint64 and already exceed
			// MaxInt, so stop accumulating there.
			if i-digits < 17 {
				v = v*10 + uint64(in[i]-'0')
			}
		}
	}
	if i < len(in) && (in[i] == '.' || in[i] == 'e' || in[i] == 'E') {
		return p.fail(start, "number is not an integer: fractions and exponents are not allowed")
	}
	if v > MaxInt {
		return p.failf(start, "integer out of range [%d, %d]", MinInt, MaxInt)
	}
	if neg && v == 0 {
		p.drop(start, i)
		p.emit('0')
	}
	p.pos = i
	return nil
}

func (p *parser) array(depth int) error {
	if depth > MaxDepth {
		return p.failf(p.pos, "nesting deeper than %d", MaxDepth)
	}
	p.pos++
	p.ws()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		return nil
	}
	for {
		if err := p.value(depth); err != nil {
			return err
		}
		p.ws()
		if p.pos >= len(p.in) {
			return p.eof()
		}
		switch c := p.in[p.pos]; c {
		case ',':
			p.pos++
			p.ws()
		case ']':
			p.pos++
			return nil
		default:
			return p.failf(p.pos, "unexpected %s after array element", describe(c))
		}
	}
}

func (p *parser) key(m *member) []byte {
	if m.escaped {
		return p.keys[m.keyOff : m.keyOff+m.keyLen]
	}
	return p.in[m.keyOff : m.keyOff+m.keyLen]
}

// compare orders members by key, by code point: for UTF-8 that is byte order.
func (p *parser) compare(a, b *member) int {
	if a.prefix != b.prefix {
		if a.prefix < b.prefix {
			return -1
		}
		return 1
	}
	if a.keyLen <= 8 && b.keyLen <= 8 {
		// The prefixes hold the whole keys, zero-padded, so only the
		// lengths can still differ ("a" against "a\x00").
		return int(a.keyLen - b.keyLen)
	}
	return bytes.Compare(p.key(a), p.key(b))
}

func keyPrefix(k []byte) uint64 {
	if len(k) >= 8 {
		return binary.BigEndian.Uint64(k)
	}
	var x uint64
	for i, c := range k {
		x |= uint64(c) << (56 - 8*i)
	}
	return x
}

// inlineMembers is how many members an object holds before its member list
// moves to the heap; it covers every top-level key of an event.
const inlineMembers = 16

func (p *parser) object(depth int) error {
	if depth > MaxDepth {
		return p.failf(p.pos, "nesting deeper than %d", MaxDepth)
	}
	open := p.outPos(p.pos)
	p.pos++
	p.ws()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
		return nil
	}
	var inline [inlineMembers]member
	ms := inline[:0]
	keysBase := len(p.keys)
	sorted := true
	for {
		if p.pos >= len(p.in) {
			return p.eof()
		}
		if p.in[p.pos] != '"' {
			return p.failf(p.pos, "unexpected %s looking for an object key", describe(p.in[p.pos]))
		}
		m := member{inOff: int32(p.pos), start: int32(p.outPos(p.pos))}
		keyStart := len(p.keys)
		escaped, err := p.str(true)
		if err != nil {
			return err
		}
		if escaped {
			m.escaped, m.keyOff, m.keyLen = true, int32(keyStart), int32(len(p.keys)-keyStart)
		} else {
			m.keyOff, m.keyLen = m.inOff+1, int32(p.pos)-m.inOff-2
		}
		m.prefix = keyPrefix(p.key(&m))
		if len(ms) > 0 {
			switch p.compare(&ms[len(ms)-1], &m) {
			case 0:
				return p.failf(int(m.inOff), "duplicate object key %q", p.key(&m))
			case 1:
				sorted = false
			}
		}
		p.ws()
		if p.pos >= len(p.in) {
			return p.eof()
		}
		if p.in[p.pos] != ':' {
			return p.failf(p.pos, "unexpected %s after object key", describe(p.in[p.pos]))
		}
		p.pos++
		p.ws()
		if err := p.value(depth); err != nil {
			return err
		}
		m.end = int32(p.outPos(p.pos))
		ms = append(ms, m)
		p.ws()
		if p.pos >= len(p.in) {
			return p.eof()
		}
		if c := p.in[p.pos]; c == ',' {
			p.pos++
			p.ws()
			continue
		} else if c != '}' {
			return p.failf(p.pos, "unexpected %s after object value", describe(c))
		}
		break
	}
	if !sorted {
		if err := p.sortMembers(ms, open); err != nil {
			return err
		}
	}
	p.pos++
	p.keys = p.keys[:keysBase]
	return nil
}

// sortMembers puts the members ms of the object that opened at output
// offset open, and is about to close at p.pos, into key order.
func (p *parser) sortMembers(ms []member, open int) error {
	if len(ms) <= 2*inlineMembers {
		// Insertion sort: objects are small, and this avoids the
		// generic sort's indirect calls and struct copies.
		for i := 1; i < len(ms); i++ {
			m := ms[i]
			j := i
			for ; j > 0 && p.compare(&ms[j-1], &m) > 0; j-- {
				ms[j] = ms[j-1]
			}
			ms[j] = m
		}
	} else {
		slices.SortFunc(ms, func(a, b member) int { return p.compare(&a, &b) })
	}
	for i := 1; i < len(ms); i++ {
		if p.compare(&ms[i-1], &ms[i]) == 0 {
			return p.failf(int(max(ms[i-1].inOff, ms[i].inOff)), "duplicate object key %q", p.key(&ms[i]))
		}
	}
	// Flush everything up to the closing brace so the whole object is in
	// out, then rewrite its members from a copy in sorted order. The
	// separators are single commas by now, so the length does not change.
	p.drop(p.pos, p.pos)
	if p.validate {
		return nil
	}
	if p.tmp == nil {
		// Sized for the largest object there can be, so one allocation
		// serves every object that needs reordering.
		p.tmp = make([]byte, 0, len(p.in))
	}
	first := open + 1
	p.tmp = append(p.tmp[:0], p.out[first:]...)
	w := first
	for i, m := range ms {
		if i > 0 {
			p.out[w] = ','
			w++
		}
		w += copy(p.out[w:], p.tmp[int(m.start)-first:int(m.end)-first])
	}
	return nil
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// str scans the string starting at p.pos, rewriting non-canonical escapes.
// With dec set (object keys) and a string that has escapes, the decoded
// string is appended to p.keys and escaped is true; keys without escapes are
// their own decoded form and are read straight from the input.
func (p *parser) str(dec bool) (escaped bool, err error) {
	in := p.in
	i := p.pos + 1
	run := i      // start of the stretch since the last escape
	var hi uint64 // OR of the bytes in the stretch: high bit set means non-ASCII
	for {
		// Skip eight plain bytes at a time: the word test flags any byte
		// that is '"', '\\' or below 0x20. Flags can spill only into bytes
		// above a real hit, so the lowest flag is exact.
		for i+8 <= len(in) {
			x := binary.LittleEndian.Uint64(in[i:])
			q := x ^ (lsb * '"')
			b := x ^ (lsb * '\\')
			m := ((x - lsb*0x20) &^ x) | ((q - lsb) &^ q) | ((b - lsb) &^ b)
			if m &= msb; m != 0 {
				n := bits.TrailingZeros64(m) >> 3
				hi |= x & (1<<(8*n) - 1)
				i += n
				break
			}
			hi |= x
			i += 8
		}
		for i < len(in) {
			c := in[i]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			hi |= uint64(c)
			i++
		}
		if i >= len(in) {
			return false, p.fail(p.pos, "unterminated string")
		}
		if hi&msb != 0 {
			if !utf8.Valid(in[run:i]) {
				return false, p.fail(run+invalidUTF8(in[run:i]), "invalid UTF-8 in string")
			}
			hi = 0
		}
		if dec && escaped {
			p.keys = append(p.keys, in[run:i]...)
		}
		switch c := in[i]; {
		case c == '"':
			p.pos = i + 1
			return escaped, nil
		case c < 0x20:
			return false, p.failf(i, "unescaped control character %s in string", describe(c))
		}
		if dec && !escaped {
			escaped = true
			p.keys = append(p.keys, in[run:i]...)
		}
		n, err := p.escape(i, dec)
		if err != nil {
			return false, err
		}
		i += n
		run = i
	}
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return 0
}

// shortEscape returns the letter of the two-character escape for r, or 0 if
// r has none.
func shortEscape(r rune) byte {
	switch r {
	case '"':
		return '"'
	case '\\':
		return '\\'
	case '\b':
		return 'b'
	case '\f':
		return 'f'
	case '\n':
		return 'n'
	case '\r':
		return 'r'
	case '\t':
		return 't'
	}
	return 0
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// escape handles the escape sequence at in[i] and returns its length.
func (p *parser) escape(i int, dec bool) (int, error) {
	in := p.in
	if i+1 >= len(in) {
		return 0, p.eof()
	}
	var r rune
	n := 2
	switch e := in[i+1]; e {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		// Already the canonical form.
		if dec {
			p.keys = append(p.keys, unescapeShort(e))
		}
		return 2, nil
	case '/':
		r = '/'
	case 'u':
		var ok bool
		if r, ok = hex4(in[i+2:]); !ok {
			return 0, p.fail(i, `invalid \u escape`)
		}
		n = 6
		if utf16.IsSurrogate(r) {
			if r >= 0xdc00 {
				return 0, p.fail(i, "lone UTF-16 low surrogate in string")
			}
			var r2 rune
			if len(in) >= i+12 && in[i+6] == '\\' && in[i+7] == 'u' {
				r2, _ = hex4(in[i+8:])
			}
			if r2 < 0xdc00 || r2 > 0xdfff {
				return 0, p.fail(i, "lone UTF-16 high surrogate in string")
			}
			r = utf16.DecodeRune(r, r2)
			n = 12
		}
		if r < 0x20 && shortEscape(r) == 0 && (in[i+5] < 'A' || in[i+5] > 'F') {
			// \u00xx in lowercase: already canonical.
			if dec {
				p.keys = append(p.keys, byte(r))
			}
			return n, nil
		}
	default:
		return 0, p.failf(i, "invalid escape %s", describe(e))
	}
	if dec {
		p.keys = utf8.AppendRune(p.keys, r)
	}
	p.drop(i, i+n)
	if p.validate {
		return n, nil
	}
	if s := shortEscape(r); s != 0 {
		p.out = append(p.out, '\\', s)
	} else if r < 0x20 {
		p.out = append(p.out, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	} else {
		p.out = utf8.AppendRune(p.out, r)
	}
	return n, nil
}

func unescapeShort(e byte) byte {
	switch e {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return e
}
