package canonicaljson

import (
	"bytes"
	"encoding/json"
	"testing"
)

// benchEventJSON is a typical m.room.message PDU of about 1 KiB as another
// server might send it: compact, keys in no particular order, HTML and
// non-ASCII in the body, a few escapes that canonical JSON writes raw.
const benchEventJSON = `{"type":"m.room.message","room_id":"!OGEhHVWSdvArJzumhm:matrix.org","sender":"@alice.wonderland:example.org","content":{"msgtype":"m.text","body":"Hey @bob, the build on main is green again \u2014 see https://ci.example.org/builds/4711 \ud83c\udf89\nThanks for fixing the flaky test!","format":"org.matrix.custom.html","formatted_body":"Hey <a href=\"https://matrix.to/#/@bob:example.org\">bob</a>, the build on <code>main</code> is green again — see <a href=\"https://ci.example.org/builds/4711\">#4711</a> 🎉<br/>Thanks for fixing the <em>flaky</em> test! Grüße, Zoë","m.mentions":{"user_ids":["@bob:example.org"]}},"origin_server_ts":1732262400123,"depth":48213,"prev_events":["$Vk8JV2d2c1LxHSrqVZbOZjE4pm0a1Z6QWB-XcUGA2rU"],"auth_events":["$0rcD4dFFzJNqYbXlTh1sLQCRNJCQaGvvMiJKvykdZEg","$Q3qvjvuuvxD8Td8lVbQj1Y8hn0W7ahWBVDTa4Y_7oP0","$g1yNRDO9jKu2iYW6qAQiWVvp0cWL8EfE0BGnfKAa1mA","$wCD6JHoVG7eKY1WwvJ3aYX1Lx0D0vbyoxq5j5fNsN8Y"],"hashes":{"sha256":"2wqtUq5lE6G52/VmdqWRVJwDEyZgx2k0A7fAOmvqSmM"},"signatures":{"example.org":{"ed25519:a_JaEG":"3sMtb7mg6PFcdO8A0tLCuU6T3WcZl1pXcYQjq+jXk5wdQZzpQ8Uu4tJvG2Jfb7Q1Hn0vfNQYQ8QnKJ9e8R6nDw"}},"unsigned":{"age_ts":1732262400123,"transaction_id":"m1732262400.17"}}`

func benchEvent(tb testing.TB) []byte {
	tb.Helper()
	if err := Valid([]byte(benchEventJSON)); err != nil {
		tb.Fatal(err)
	}
	return []byte(benchEventJSON)
}

func BenchmarkCanonicalize(b *testing.B) {
	ev := benchEvent(b)
	canonical, err := Canonicalize(ev)
	if err != nil {
		b.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, ev, "", "    "); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"unsorted", ev},
		{"canonical", canonical},
		{"indented", indented.Bytes()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Canonicalize(bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The approach Canonicalize replaces, for comparison.
	b.Run("encoding-json-map", func(b *testing.B) {
		b.SetBytes(int64(len(ev)))
		b.ReportAllocs()
		for b.Loop() {
			var v map[string]any
			if err := json.Unmarshal(ev, &v); err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkValid(b *testing.B) {
	ev := benchEvent(b)
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Valid(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	var v map[string]any
	if err := json.Unmarshal(benchEvent(b), &v); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDelete(b *testing.B) {
	c, err := Canonicalize(benchEvent(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Delete(c, "signatures", "unsigned"); err != nil {
			b.Fatal(err)
		}
	}
}
