package canonicaljson

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// syntaxOnly reports whether an error reason is a plain JSON syntax error,
// as opposed to a Matrix rule that rejects syntactically valid JSON.
func syntaxOnly(reason string) bool {
	for _, rule := range []string{"not an integer", "out of range", "duplicate", "UTF-8", "surrogate", "nesting"} {
		if strings.Contains(reason, rule) {
			return false
		}
	}
	return true
}

func decodeNumbers(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func FuzzCanonicalize(f *testing.F) {
	for _, ex := range specExamples {
		f.Add([]byte(ex.in))
	}
	for _, s := range []string{
		benchEventJSON,
		"{\n    \"a\": -0,\n    \"b\": 1e10\n}",
		`{"b":{"y": -0,"x":"\u00e9"},"a":[ 1 ]}`,
		`"\ud83d\ude00 \u001F \/ \u0041"`,
		`{"\u0062":1,"a":2,"a\n":3}`,
		`[9007199254740991,-9007199254740991,9007199254740992]`,
		`{"a":1,"a":2}`,
		"\"\xff\"",
		`"\ud800"`,
		`[[[[[[[[[[]]]]]]]]]]`,
		`{"é":1,"日":2,"😀":3,"\uffff":4}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		verr := Valid(in)
		if (err == nil) != (verr == nil) {
			t.Fatalf("Canonicalize err %v, Valid err %v", err, verr)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if e.Offset < 0 || e.Offset > len(in) {
				t.Fatalf("error offset %d outside input of %d bytes", e.Offset, len(in))
			}
			if verr.Error() != err.Error() {
				t.Fatalf("Valid error %q differs from Canonicalize error %q", verr, err)
			}
			if syntaxOnly(e.Reason) && json.Valid(in) {
				t.Fatalf("rejected valid JSON with a syntax error: %v", err)
			}
			if IsCanonical(in) {
				t.Fatal("IsCanonical accepts rejected input")
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		if !json.Valid(out) {
			t.Fatalf("output %q is not valid JSON", out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q → %q, %v", out, again, err)
		}
		if !IsCanonical(out) {
			t.Fatalf("IsCanonical(%q) = false", out)
		}
		if IsCanonical(in) != bytes.Equal(in, out) {
			t.Fatalf("IsCanonical(%q) = %v, output %q", in, IsCanonical(in), out)
		}
		want, err := reference(in)
		if err != nil {
			t.Fatalf("reference rejects accepted input: %v", err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("Canonicalize(%q) = %q, reference %q", in, out, want)
		}
		vin, err1 := decodeNumbers(in)
		vout, err2 := decodeNumbers(out)
		if err1 == nil && err2 == nil && !reflect.DeepEqual(normalize(vin), normalize(vout)) {
			t.Fatalf("values differ: %v vs %v", vin, vout)
		}
		if out[0] == '{' {
			checkObjectEdits(t, out)
		}
	})
}

// normalize turns json.Numbers into int64 so that -0 and 0 compare equal.
func normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return v
		}
		return n
	case []any:
		for i := range v {
			v[i] = normalize(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = normalize(v[k])
		}
	}
	return v
}

// checkObjectEdits exercises Get, Delete and Set on a canonical object:
// every member can be found, removed, and put back to give the object again.
func checkObjectEdits(t *testing.T, obj []byte) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(obj, &members); err != nil {
		t.Fatalf("decoding canonical object %q: %v", obj, err)
	}
	if got, err := Delete(obj); err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("Delete(%q) with no keys = %q, %v", obj, got, err)
	}
	for k := range members {
		v, ok, err := Get(obj, k)
		if err != nil || !ok {
			t.Fatalf("Get(%q, %q) = %v, %v", obj, k, ok, err)
		}
		without, err := Delete(obj, k)
		if err != nil || !IsCanonical(without) {
			t.Fatalf("Delete(%q, %q) = %q, %v", obj, k, without, err)
		}
		if _, ok, _ := Get(without, k); ok {
			t.Fatalf("Delete(%q, %q) left the key", obj, k)
		}
		back, err := Set(without, k, v)
		if err != nil || !bytes.Equal(back, obj) {
			t.Fatalf("Set(%q, %q, %q) = %q, %v, want %q", without, k, v, back, err, obj)
		}
		replaced, err := Set(obj, k, []byte("null"))
		if err != nil || !IsCanonical(replaced) {
			t.Fatalf("Set(%q, %q, null) = %q, %v", obj, k, replaced, err)
		}
	}
}

// FuzzObjectEdits feeds arbitrary bytes to Get, Delete and Set, which trust
// their input to be canonical: on anything else they may return nonsense,
// but they must not panic.
func FuzzObjectEdits(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":{"c":[1,"}"]},"s\"":"\\"}`), "b")
	f.Add([]byte(`{"a":`), "a")
	f.Add([]byte(`{"a\u0000":"x\\"}`), "a\x00")
	f.Fuzz(func(t *testing.T, obj []byte, key string) {
		_, _, _ = Get(obj, key)
		_, _ = Delete(obj, key, "unsigned")
		_, _ = Set(obj, key, []byte(`{"k":1}`))
	})
}
