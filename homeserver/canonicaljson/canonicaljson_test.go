package canonicaljson

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// specExamples are the input/output pairs of the "Canonical JSON" examples
// in the spec's appendices.
var specExamples = []struct{ in, want string }{
	{`{}`, `{}`},
	{"{\n    \"one\": 1,\n    \"two\": \"Two\"\n}", `{"one":1,"two":"Two"}`},
	{"{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}", `{"a":"1","b":"2"}`},
	{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
	{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
	{"{\n    \"a\": \"日本語\"\n}", `{"a":"日本語"}`},
	{"{\n    \"本\": 2,\n    \"日\": 1\n}", `{"日":1,"本":2}`},
	{"{\n    \"a\": \"\\u65E5\"\n}", `{"a":"日"}`},
	{"{\n    \"a\": null\n}", `{"a":null}`},
}

func TestSpecExamples(t *testing.T) {
	for _, tc := range specExamples {
		got, err := Canonicalize([]byte(tc.in))
		if err != nil {
			t.Errorf("Canonicalize(%q): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("Canonicalize(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if !IsCanonical([]byte(tc.want)) {
			t.Errorf("IsCanonical(%s) = false", tc.want)
		}
	}
}

// The last example in the spec, {"a": -0, "b": 1e10} → {"a":0,"b":10000000000},
// contradicts the spec's own grammar and room version 6's strictness, and
// Synapse rejects 1e10 (a Python float) in events. We side with the rules:
// -0 is accepted and normalised, 1e10 is rejected.
func TestSpecExampleWithExponent(t *testing.T) {
	if _, err := Canonicalize([]byte("{\n    \"a\": -0,\n    \"b\": 1e10\n}")); err == nil {
		t.Error("1e10 accepted; want an error")
	}
	got, err := Canonicalize([]byte("{\n    \"a\": -0,\n    \"b\": 10000000000\n}"))
	if err != nil || string(got) != `{"a":0,"b":10000000000}` {
		t.Errorf("got %s, %v", got, err)
	}
}

// The spec's event signing test vectors give the sha256 content hash of two
// events; the hash is over the canonical event without unsigned, signatures
// and hashes, so it checks our bytes against the spec's exactly.
func TestSpecContentHashes(t *testing.T) {
	tests := []struct{ event, hash string }{
		{`{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
		{`{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`, "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
	}
	for _, tc := range tests {
		c, err := Canonicalize([]byte(tc.event))
		if err != nil {
			t.Fatal(err)
		}
		stripped, err := Delete(c, "unsigned", "signatures", "hashes")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(stripped)
		if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != tc.hash {
			t.Errorf("hash of %s = %s, want %s", stripped, got, tc.hash)
		}
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"scalar true", `true`, `true`},
		{"scalar false", ` false `, `false`},
		{"scalar null", "\tnull\r\n", `null`},
		{"scalar string", `"x"`, `"x"`},
		{"scalar int", `42`, `42`},
		{"empty array", `[ ]`, `[]`},
		{"empty object", "{ \n }", `{}`},
		{"array whitespace", `[ 1 , 2 ,3 ]`, `[1,2,3]`},
		{"array keeps order", `[3,1,2]`, `[3,1,2]`},
		{"nested sort", `{"b":{"d":1,"c":2},"a":[{"z":1,"y":2}]}`, `{"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}`},
		{"reverse sort", `{"e":5,"d":4,"c":3,"b":2,"a":1}`, `{"a":1,"b":2,"c":3,"d":4,"e":5}`},
		{"prefix keys", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
		{"sort after rewrite", `{ "b" : "\u0041" , "a" : "\/" }`, `{"a":"/","b":"A"}`},
		{"sort with nested rewrite", `{"b":{"y": -0,"x":"\u00e9"},"a":[ 1 ]}`, `{"a":[1],"b":{"x":"é","y":0}}`},
		{"negative zero", `-0`, `0`},
		{"negative zero in array", `[-0,0,-1]`, `[0,0,-1]`},
		{"max int", `9007199254740991`, `9007199254740991`},
		{"min int", `-9007199254740991`, `-9007199254740991`},
		{"zero", `0`, `0`},
		{"html not escaped", `"<a href=\"x\">&amp;</a>"`, `"<a href=\"x\">&amp;</a>"`},
		{"html escapes decoded", `"\u003cb\u003e \u0026"`, `"<b> &"`},
		{"DEL raw", "\"\x7f\"", "\"\x7f\""},
		{"DEL escaped", `"\u007f"`, "\"\x7f\""},
		{"line separator raw", "\"\u2028\u2029\"", "\"\u2028\u2029\""},
		{"line separator escaped", `"\u2028"`, "\"\u2028\""},
		{"BMP max", `"\uffff"`, "\"\uffff\""},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"surrogate pair upper", `"\uD83D\uDE00"`, `"😀"`},
		{"max code point", `"\udbff\udfff"`, "\"\U0010ffff\""},
		{"raw 4-byte", `"😀"`, `"😀"`},
		{"long string", `"` + strings.Repeat("abcdefgh", 40) + `"`, `"` + strings.Repeat("abcdefgh", 40) + `"`},
		{"long string with escape late", `"` + strings.Repeat("a", 37) + `\/` + strings.Repeat("é", 20) + `"`, `"` + strings.Repeat("a", 37) + `/` + strings.Repeat("é", 20) + `"`},
		{"escaped key", `{"\u0062":1,"a":2}`, `{"a":2,"b":1}`},
		{"key with short escape", `{"a\n":1,"a":2}`, `{"a":2,"a\n":1}`},
		{"whitespace inside and around", " \t\r\n{ \"a\" :\n[ true ,\tnull ] } \n", `{"a":[true,null]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonicalize(%q): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Fatalf("Canonicalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if err := Valid([]byte(tc.in)); err != nil {
				t.Errorf("Valid(%q) = %v", tc.in, err)
			}
			if IsCanonical([]byte(tc.in)) != (tc.in == tc.want) {
				t.Errorf("IsCanonical(%q) = %v", tc.in, !(tc.in == tc.want))
			}
			if !IsCanonical(got) {
				t.Errorf("IsCanonical(%q) = false for output", got)
			}
		})
	}
}

func TestCanonicalizeReturnsCopy(t *testing.T) {
	in := []byte(`{"a":1}`)
	out, err := Canonicalize(in)
	if err != nil {
		t.Fatal(err)
	}
	out[0] = 'X'
	if in[0] != '{' {
		t.Error("Canonicalize returned its input instead of a copy")
	}
}

func TestReject(t *testing.T) {
	tests := []struct {
		name, in, reason string
		offset           int
	}{
		{"empty", ``, "end of input", 0},
		{"only whitespace", `   `, "end of input", 3},
		{"float", `1.0`, "not an integer", 0},
		{"fraction", `{"a":0.5}`, "not an integer", 5},
		{"exponent", `1e2`, "not an integer", 0},
		{"exponent upper", `1E2`, "not an integer", 0},
		{"negative exponent", `-5e-1`, "not an integer", 0},
		{"spec 1e10", `{"a":-0,"b":1e10}`, "not an integer", 12},
		{"too big", `9007199254740992`, "out of range", 0},
		{"too small", `-9007199254740992`, "out of range", 0},
		{"huge", `123456789012345678901234567890`, "out of range", 0},
		{"leading zero", `01`, "leading zero", 0},
		{"negative leading zero", `-01`, "leading zero", 0},
		{"double zero", `00`, "leading zero", 0},
		{"lone minus", `-`, "invalid number", 0},
		{"minus letter", `-a`, "invalid number", 0},
		{"plus", `+1`, "looking for a value", 0},
		{"hex", `0x10`, "after top-level value", 1},
		{"NaN", `NaN`, "looking for a value", 0},
		{"Infinity", `Infinity`, "looking for a value", 0},
		{"duplicate key", `{"a":1,"a":2}`, "duplicate object key", 7},
		{"duplicate key unsorted", `{"b":1,"a":2,"b":3}`, "duplicate object key", 13},
		{"duplicate via escape", `{"a":1,"\u0061":2}`, "duplicate object key", 7},
		{"duplicate nested", `{"x":{"k":1,"k":1}}`, "duplicate object key", 12},
		{"invalid utf8", "\"\xff\"", "invalid UTF-8", 1},
		{"invalid utf8 later", "\"abc\xe6\x97\"", "invalid UTF-8", 4},
		{"invalid utf8 after escape", "\"\\n\xc3\"", "invalid UTF-8", 3},
		{"overlong utf8", "\"\xc0\xaf\"", "invalid UTF-8", 1},
		{"utf8 surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8", 1},
		{"invalid utf8 in key", "{\"\xff\":1}", "invalid UTF-8", 2},
		{"lone high surrogate", `"\ud800"`, "high surrogate", 1},
		{"lone high surrogate then char", `"\ud800x"`, "high surrogate", 1},
		{"high surrogate then non-low", `"\ud800\u0041"`, "high surrogate", 1},
		{"high surrogate twice", `"\ud800\ud800"`, "high surrogate", 1},
		{"lone low surrogate", `"\udc00"`, "low surrogate", 1},
		{"bad escape", `"\x"`, "invalid escape", 1},
		{"bad unicode escape", `"\u12g4"`, `invalid \u escape`, 1},
		{"short unicode escape", `"\u12"`, `invalid \u escape`, 1},
		{"raw newline", "\"a\nb\"", "control character", 2},
		{"raw tab", "\"\t\"", "control character", 1},
		{"raw nul", "\"\x00\"", "control character", 1},
		{"unterminated string", `"abc`, "unterminated string", 0},
		{"unterminated long string", `"abcdefghijklmnopq`, "unterminated string", 0},
		{"unterminated escape", `"\`, "end of input", 2},
		{"trailing data", `{} {}`, "after top-level value", 3},
		{"trailing garbage", `1x`, "after top-level value", 1},
		{"trailing comma array", `[1,]`, "looking for a value", 3},
		{"trailing comma object", `{"a":1,}`, "looking for an object key", 7},
		{"missing colon", `{"a" 1}`, "after object key", 5},
		{"missing value", `{"a":}`, "looking for a value", 5},
		{"unquoted key", `{a:1}`, "looking for an object key", 1},
		{"single quotes", `'a'`, "looking for a value", 0},
		{"missing comma", `[1 2]`, "after array element", 3},
		{"unclosed array", `[1`, "end of input", 2},
		{"unclosed object", `{"a":1`, "end of input", 6},
		{"bad literal", `tru`, "invalid literal", 0},
		{"bad literal 2", `nul1`, "invalid literal", 0},
		{"capital literal", `True`, "looking for a value", 0},
		{"BOM", "\ufeff{}", "looking for a value", 0},
		{"comment", `{} // x`, "after top-level value", 3},
		{"vertical tab whitespace", "\v{}", "looking for a value", 0},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "nesting deeper", MaxDepth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []struct {
				name string
				fn   func([]byte) error
			}{
				{"Canonicalize", func(b []byte) error { _, err := Canonicalize(b); return err }},
				{"Valid", Valid},
			} {
				err := f.fn([]byte(tc.in))
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("%s(%q) = %v, want *Error", f.name, tc.in, err)
				}
				if !strings.Contains(e.Reason, tc.reason) || e.Offset != tc.offset {
					t.Errorf("%s(%q) = %q at %d, want %q at %d", f.name, tc.in, e.Reason, e.Offset, tc.reason, tc.offset)
				}
			}
			if IsCanonical([]byte(tc.in)) {
				t.Errorf("IsCanonical(%q) = true", tc.in)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Canonicalize([]byte(`[1.5]`))
	want := "canonical json: number is not an integer: fractions and exponents are not allowed at offset 1"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestStringEscapes(t *testing.T) {
	short := map[byte]string{'\b': `\b`, '\t': `\t`, '\n': `\n`, '\f': `\f`, '\r': `\r`}
	for c := 0; c < 0x20; c++ {
		want, ok := short[byte(c)]
		if !ok {
			want = fmt.Sprintf(`\u%04x`, c)
		}
		for _, in := range []string{fmt.Sprintf(`\u%04x`, c), fmt.Sprintf(`\u%04X`, c), want} {
			got, err := Canonicalize([]byte(`"` + in + `"`))
			if err != nil {
				t.Errorf("%q: %v", in, err)
				continue
			}
			if string(got) != `"`+want+`"` {
				t.Errorf("%q → %s, want %q", in, got, want)
			}
		}
	}
	for in, want := range map[string]string{
		`\"`:     `\"`,
		`\u0022`: `\"`,
		`\\`:     `\\`,
		`\u005c`: `\\`,
		`\u005C`: `\\`,
		`\/`:     `/`,
		`\u002f`: `/`,
		`/`:      `/`,
		`\u0041`: `A`,
		`\u00e9`: `é`,
		`\u00E9`: `é`,
		`\u20ac`: `€`,
		`\u0020`: ` `,
		`\u0000`: `\u0000`,
		`\u001f`: `\u001f`,
		`\u001F`: `\u001f`,
		`a\tb`:   `a\tb`,
	} {
		got, err := Canonicalize([]byte(`"` + in + `"`))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if string(got) != `"`+want+`"` {
			t.Errorf("%q → %s, want %q", in, got, want)
		}
	}
}

func TestKeyOrder(t *testing.T) {
	// Code point order, not UTF-16 order: U+1F600 (a surrogate pair in
	// UTF-16) sorts after U+FFFD.
	keys := []string{"", "\"", "A", "B", "Z", "\\", "_", "a", "b", "z", "~", "\x7f", "é", "ÿ", "Ā", "日", "本", "\ufffd", "😀", "\U0010ffff", "a\u0000", "aa"}
	sort.Strings(keys) // byte order of UTF-8 is code point order
	var want bytes.Buffer
	want.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			want.WriteByte(',')
		}
		b, err := AppendString(nil, k)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(b)
		fmt.Fprintf(&want, ":%d", i)
	}
	want.WriteByte('}')
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 20; trial++ {
		perm := rng.Perm(len(keys))
		var in bytes.Buffer
		in.WriteByte('{')
		for j, i := range perm {
			if j > 0 {
				in.WriteString(" , ")
			}
			// Escape every key character to make sure order is by
			// decoded key, not by its spelling.
			in.WriteByte('"')
			for _, r := range keys[i] {
				if r > 0xffff {
					r1, r2 := utf16Pair(r)
					fmt.Fprintf(&in, `\u%04x\u%04x`, r1, r2)
				} else if trial%2 == 0 {
					fmt.Fprintf(&in, `\u%04X`, r)
				} else {
					s, _ := AppendString(nil, string(r))
					in.Write(s[1 : len(s)-1])
				}
			}
			fmt.Fprintf(&in, `":%d`, i)
		}
		in.WriteByte('}')
		got, err := Canonicalize(in.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", in.Bytes(), err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("Canonicalize(%s)\n = %s\nwant %s", in.Bytes(), got, want.Bytes())
		}
	}
}

// Objects larger than the inline member array, and larger than the
// insertion sort threshold, take other code paths.
func TestLargeObjects(t *testing.T) {
	for _, n := range []int{15, 16, 17, 33, 200} {
		var in, want bytes.Buffer
		in.WriteByte('{')
		want.WriteByte('{')
		for i := 0; i < n; i++ {
			if i > 0 {
				in.WriteByte(',')
				want.WriteByte(',')
			}
			// Keys share a long prefix so that ordering needs more
			// than the first eight bytes.
			fmt.Fprintf(&in, `"member.name.%04d": %d`, n-1-i, n-1-i)
			fmt.Fprintf(&want, `"member.name.%04d":%d`, i, i)
		}
		in.WriteByte('}')
		want.WriteByte('}')
		got, err := Canonicalize(in.Bytes())
		if err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%d members: %s, %v", n, got, err)
		}
		dup := append(bytes.TrimSuffix(in.Bytes(), []byte("}")), `,"member.name.0007":1}`...)
		if _, err := Canonicalize(dup); err == nil || !strings.Contains(err.Error(), "duplicate") {
			t.Errorf("%d members with a duplicate: %v", n, err)
		}
	}
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + r>>10, 0xdc00 + r&0x3ff
}

func TestIntegers(t *testing.T) {
	for _, n := range []int64{0, 1, -1, 9, 10, 99, 100, 1 << 31, 1 << 32, -1 << 40, MaxInt, MinInt, MaxInt - 1, MinInt + 1, 1000000000000000} {
		s := strconv.FormatInt(n, 10)
		got, err := Canonicalize([]byte(s))
		if err != nil || string(got) != s {
			t.Errorf("Canonicalize(%s) = %s, %v", s, got, err)
		}
	}
	for _, s := range []string{"9007199254740992", "-9007199254740992", "18446744073709551616", "99999999999999999", "10000000000000000", "-10000000000000000", "90071992547409910"} {
		if _, err := Canonicalize([]byte(s)); err == nil {
			t.Errorf("Canonicalize(%s) accepted", s)
		}
	}
}

func TestDepth(t *testing.T) {
	nest := func(n int, mixed bool) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			if mixed && i%2 == 1 {
				b.WriteString(`{"k":`)
			} else {
				b.WriteString("[")
			}
		}
		b.WriteString("1")
		for i := n - 1; i >= 0; i-- {
			if mixed && i%2 == 1 {
				b.WriteString("}")
			} else {
				b.WriteString("]")
			}
		}
		return b.String()
	}
	for _, mixed := range []bool{false, true} {
		ok := nest(MaxDepth, mixed)
		if got, err := Canonicalize([]byte(ok)); err != nil || string(got) != ok {
			t.Errorf("depth %d (mixed %v): %v", MaxDepth, mixed, err)
		}
		if _, err := Canonicalize([]byte(nest(MaxDepth+1, mixed))); err == nil || !strings.Contains(err.Error(), "nesting") {
			t.Errorf("depth %d (mixed %v): %v, want nesting error", MaxDepth+1, mixed, err)
		}
	}
	// Far too deep input must fail cleanly, not exhaust the stack.
	if err := Valid([]byte(strings.Repeat("[", 1<<20))); err == nil {
		t.Error("deep input accepted")
	}
}

func TestMarshal(t *testing.T) {
	type content struct {
		Msgtype string `json:"msgtype"`
		Body    string `json:"body"`
	}
	type event struct {
		Type    string         `json:"type"`
		Content content        `json:"content"`
		TS      int64          `json:"origin_server_ts"`
		Extra   map[string]any `json:"extra,omitempty"`
	}
	got, err := Marshal(event{
		Type:    "m.room.message",
		Content: content{Msgtype: "m.text", Body: "<b>hi</b> & \"bye\" é\u2028"},
		TS:      1700000000000,
		Extra:   map[string]any{"z": 1, "a": []any{true, nil}},
	})
	want := `{"content":{"body":"<b>hi</b> & \"bye\" é` + "\u2028" + `","msgtype":"m.text"},"extra":{"a":[true,null],"z":1},"origin_server_ts":1700000000000,"type":"m.room.message"}`
	if err != nil || string(got) != want {
		t.Errorf("Marshal = %s, %v\nwant %s", got, err, want)
	}
	if got, err := Marshal(map[string]int{"b": 1, "a": 2}); err != nil || string(got) != `{"a":2,"b":1}` {
		t.Errorf("Marshal(map) = %s, %v", got, err)
	}
	if got, err := Marshal(json.RawMessage(`{"b": 1.0}`)); err == nil {
		t.Errorf("Marshal(float) = %s, want error", got)
	}
	if _, err := Marshal(1.5); err == nil {
		t.Error("Marshal(1.5) accepted")
	}
	if _, err := Marshal(int64(1 << 60)); err == nil {
		t.Error("Marshal(1<<60) accepted")
	}
	if _, err := Marshal(make(chan int)); err == nil {
		t.Error("Marshal(chan) accepted")
	}
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":                   `""`,
		"plain":              `"plain"`,
		"a\"b\\c/d":          `"a\"b\\c/d"`,
		"\x00\x01\x1f\x7f":   `"\u0000\u0001\u001f` + "\x7f\"",
		"\b\t\n\f\r":         `"\b\t\n\f\r"`,
		"日本語 😀 <&>":          `"日本語 😀 <&>"`,
		"mixed\ttab and é\n": `"mixed\ttab and é\n"`,
	} {
		got, err := AppendString([]byte("x"), in)
		if err != nil || string(got) != "x"+want {
			t.Errorf("AppendString(%q) = %s, %v, want x%s", in, got, err, want)
		}
		if !IsCanonical(got[1:]) {
			t.Errorf("AppendString(%q) = %s is not canonical", in, got)
		}
	}
	if _, err := AppendString(nil, "a\xffb"); err == nil {
		t.Error("AppendString accepted invalid UTF-8")
	}
}

func TestGetDeleteSet(t *testing.T) {
	obj := []byte(`{"":0,"a\n":{"x":[1,"}"]},"hashes":{"sha256":"abc"},"s\"q":"v","signatures":{"d":{"k":"s"}},"unsigned":{"age":1},"z":[{"q":"]"}]}`)
	if !IsCanonical(obj) {
		t.Fatal("test object is not canonical")
	}
	for key, want := range map[string]string{
		"":           `0`,
		"a\n":        `{"x":[1,"}"]}`,
		"s\"q":       `"v"`,
		"signatures": `{"d":{"k":"s"}}`,
		"z":          `[{"q":"]"}]`,
		"missing":    ``,
		"a":          ``,
		"zz":         ``,
	} {
		got, ok, err := Get(obj, key)
		if err != nil || string(got) != want || ok != (want != "") {
			t.Errorf("Get(%q) = %s, %v, %v, want %s", key, got, ok, err, want)
		}
	}

	tests := []struct {
		keys []string
		want string
	}{
		{nil, string(obj)},
		{[]string{"signatures", "unsigned"}, `{"":0,"a\n":{"x":[1,"}"]},"hashes":{"sha256":"abc"},"s\"q":"v","z":[{"q":"]"}]}`},
		{[]string{"", "z"}, `{"a\n":{"x":[1,"}"]},"hashes":{"sha256":"abc"},"s\"q":"v","signatures":{"d":{"k":"s"}},"unsigned":{"age":1}}`},
		{[]string{"", "a\n", "hashes", "s\"q", "signatures", "unsigned", "z"}, `{}`},
		{[]string{"nope"}, string(obj)},
	}
	for _, tc := range tests {
		got, err := Delete(obj, tc.keys...)
		if err != nil || string(got) != tc.want {
			t.Errorf("Delete(%q) = %s, %v\nwant %s", tc.keys, got, err, tc.want)
		}
	}

	setTests := []struct {
		obj, key, value, want string
	}{
		{`{}`, "a", `1`, `{"a":1}`},
		{`{"b":1}`, "a", `2`, `{"a":2,"b":1}`},
		{`{"b":1}`, "c", `2`, `{"b":1,"c":2}`},
		{`{"b":1}`, "b", `2`, `{"b":2}`},
		{`{"a":1,"c":3}`, "b", ` { "y" : 1, "x" : 2 } `, `{"a":1,"b":{"x":2,"y":1},"c":3}`},
		{`{"a":1,"c":3}`, "c", `[]`, `{"a":1,"c":[]}`},
		{`{"a":1,"c":3}`, "a", `null`, `{"a":null,"c":3}`},
		{`{"a\n":1}`, "a\n", `2`, `{"a\n":2}`},
		{`{"a\n":1}`, "a", `2`, `{"a":2,"a\n":1}`},
		{`{"é":1}`, "z", `2`, `{"z":2,"é":1}`},
	}
	for _, tc := range setTests {
		got, err := Set([]byte(tc.obj), tc.key, []byte(tc.value))
		if err != nil || string(got) != tc.want {
			t.Errorf("Set(%s, %q, %s) = %s, %v, want %s", tc.obj, tc.key, tc.value, got, err, tc.want)
		}
	}
	if _, err := Set([]byte(`{}`), "a", []byte(`1.5`)); err == nil {
		t.Error("Set accepted a float value")
	}
	if _, err := Set([]byte(`{}`), "\xff", []byte(`1`)); err == nil {
		t.Error("Set accepted an invalid UTF-8 key")
	}
}

func TestObjectFunctionsRejectNonObjects(t *testing.T) {
	for _, in := range []string{``, `[]`, `"x"`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1`, `{"a:1}`, `{"a":[1}`, `{"a":1}x}`, `{"a":tr}`, `{"a":"}`, `{1:2}`, `{"a":1"b":2}`} {
		if _, _, err := Get([]byte(in), "zzz"); err == nil {
			t.Errorf("Get(%q) accepted", in)
		}
		if _, err := Delete([]byte(in)); err == nil {
			t.Errorf("Delete(%q) accepted", in)
		}
		if _, err := Set([]byte(in), "zzz", []byte("1")); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
}

// TestDifferential compares Canonicalize with a slow reference built on
// encoding/json over randomly generated documents written in random
// non-canonical spellings.
func TestDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 3000; i++ {
		v := randomValue(rng, 0)
		var in bytes.Buffer
		writeLoose(rng, &in, v)
		got, err := Canonicalize(in.Bytes())
		if err != nil {
			t.Fatalf("Canonicalize(%s): %v", in.Bytes(), err)
		}
		want, err := reference(in.Bytes())
		if err != nil {
			t.Fatalf("reference(%s): %v", in.Bytes(), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Canonicalize(%s)\n = %s\nwant %s", in.Bytes(), got, want)
		}
	}
}

var randomRunes = []rune{'a', 'b', 'z', 'A', '0', ' ', '"', '\\', '/', '\n', '\t', '\b', '\x00', '\x1f', '\x7f', '<', '&', 'é', 'ÿ', '日', '\u2028', '\ufffd', '\uffff', '😀', '\U0010ffff'}

func randomString(rng *rand.Rand) string {
	n := rng.IntN(12)
	if rng.IntN(10) == 0 {
		n = 20 + rng.IntN(100)
	}
	r := make([]rune, n)
	for i := range r {
		if rng.IntN(3) == 0 {
			r[i] = randomRunes[rng.IntN(len(randomRunes))]
		} else {
			r[i] = rune('a' + rng.IntN(26))
		}
	}
	return string(r)
}

func randomValue(rng *rand.Rand, depth int) any {
	k := rng.IntN(8)
	if depth > 4 {
		k = rng.IntN(5)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2:
		switch rng.IntN(4) {
		case 0:
			return int64(rng.IntN(21) - 10)
		case 1:
			return rng.Int64N(2*MaxInt+1) - MaxInt
		case 2:
			return int64(MaxInt)
		}
		return int64(MinInt)
	case 3, 4:
		return randomString(rng)
	case 5:
		a := make([]any, rng.IntN(5))
		for i := range a {
			a[i] = randomValue(rng, depth+1)
		}
		return a
	default:
		m := map[string]any{}
		for n := rng.IntN(8); len(m) < n; {
			m[randomString(rng)] = randomValue(rng, depth+1)
		}
		return m
	}
}

// writeLoose writes v as valid but non-canonical JSON: random whitespace,
// random member order, random escaping, -0 for zero.
func writeLoose(rng *rand.Rand, b *bytes.Buffer, v any) {
	ws := func() {
		for n := rng.IntN(3); n > 0; n-- {
			b.WriteByte(" \t\r\n"[rng.IntN(4)])
		}
	}
	ws()
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int64:
		if v == 0 && rng.IntN(2) == 0 {
			b.WriteString("-0")
		} else {
			b.WriteString(strconv.FormatInt(v, 10))
		}
	case string:
		writeLooseString(rng, b, v)
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			writeLoose(rng, b, e)
		}
		ws()
		b.WriteByte(']')
	case map[string]any:
		b.WriteByte('{')
		first := true
		for k, e := range v { // map order is random
			if !first {
				b.WriteByte(',')
			}
			first = false
			ws()
			writeLooseString(rng, b, k)
			ws()
			b.WriteByte(':')
			writeLoose(rng, b, e)
		}
		ws()
		b.WriteByte('}')
	}
	ws()
}

func writeLooseString(rng *rand.Rand, b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\' || r < 0x20 || rng.IntN(4) == 0:
			if r > 0xffff {
				r1, r2 := utf16Pair(r)
				fmt.Fprintf(b, `\u%04x\u%04X`, r1, r2)
			} else if r == '/' && rng.IntN(2) == 0 {
				b.WriteString(`\/`)
			} else if e := shortEscape(r); e != 0 && rng.IntN(2) == 0 {
				b.WriteByte('\\')
				b.WriteByte(e)
			} else if rng.IntN(2) == 0 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				fmt.Fprintf(b, `\u%04X`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// reference is the obvious, slow canonicalizer: decode with encoding/json,
// re-encode by the spec's rules. It resolves duplicate keys and invalid
// UTF-8 the encoding/json way, so compare only on input Canonicalize
// accepts.
func reference(in []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err := refEncode(&b, v)
	return b.Bytes(), err
}

func refEncode(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n > MaxInt || n < MinInt {
			return fmt.Errorf("bad number %s", v)
		}
		b.WriteString(strconv.FormatInt(n, 10))
	case string:
		refString(b, v)
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := refEncode(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			refString(b, k)
			b.WriteByte(':')
			if err := refEncode(b, v[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	}
	return nil
}

func refString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

func TestNoAllocsWhenValidating(t *testing.T) {
	ev := benchEvent(t)
	if n := testing.AllocsPerRun(100, func() {
		if err := Valid(ev); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Valid allocates %v times per call", n)
	}
	canon, err := Canonicalize(ev)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Canonicalize(canon) }); n != 1 {
		t.Errorf("Canonicalize of canonical input allocates %v times per call, want 1", n)
	}
}
