package event

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/signing"
)

// specKey is the key of the spec's signing test vectors (appendices, "Signing
// JSON"): seed YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1, id ed25519:1.
func specKey(t testing.TB) signing.Key {
	t.Helper()
	seed, err := signing.DecodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		t.Fatal(err)
	}
	return signing.Key{ID: "ed25519:1", Private: ed25519.NewKeyFromSeed(seed)}
}

func testKey(t testing.TB) signing.Key {
	t.Helper()
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hashAndSign is the signing algorithm exactly as the spec states it, on any
// canonical event object: it checks Build's faster assembly against the
// spec's vectors (TestSpecEventSigningVectors, TestBuildMatchesSpecAlgorithm).
func hashAndSign(v *RoomVersion, obj []byte, serverName string, key signing.Key) (signed, covered []byte, hash string, err error) {
	ch, err := contentHash(obj)
	if err != nil {
		return nil, nil, "", err
	}
	hash = encodeBase64(ch[:])
	if obj, err = canonicaljson.Set(obj, "hashes", []byte(`{"sha256":"`+hash+`"}`)); err != nil {
		return nil, nil, "", err
	}
	if covered, err = signable(v, obj); err != nil {
		return nil, nil, "", err
	}
	sig := signing.SignBytes(covered, key)
	sigs, err := canonicaljson.Marshal(map[string]map[string]string{serverName: {key.ID: sig}})
	if err != nil {
		return nil, nil, "", err
	}
	if obj, err = canonicaljson.Set(obj, "signatures", sigs); err != nil {
		return nil, nil, "", err
	}
	return obj, covered, hash, nil
}

// Build assembles the signed and the redacted forms in place; it must give
// exactly what the spec's algorithm gives on the same event, for every room
// version and every event type whose redaction differs.
func TestBuildMatchesSpecAlgorithm(t *testing.T) {
	key := testKey(t)
	protos := map[string]Proto{
		"message": message1K(),
		"member": {Type: TypeMember, StateKey: strptr("@u:example.org"),
			Content: json.RawMessage(`{"membership":"join","displayname":"U","join_authorised_via_users_server":"@a:example.org","third_party_invite":{"display_name":"d","signed":{"token":"t"}}}`)},
		"create":       {Type: TypeCreate, StateKey: strptr(""), Content: json.RawMessage(`{"creator":"@u:example.org","room_version":"9","m.federate":true}`)},
		"join_rules":   {Type: TypeJoinRules, StateKey: strptr(""), Content: json.RawMessage(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!x:y"}],"z":1}`)},
		"power_levels": {Type: TypePowerLevels, StateKey: strptr(""), Content: json.RawMessage(`{"ban":50,"invite":0,"users":{"@u:example.org":100},"notifications":{"room":50}}`)},
		"history":      {Type: TypeHistoryVisibility, StateKey: strptr(""), Content: json.RawMessage(`{"history_visibility":"shared","x":1}`)},
		"redaction":    {Type: TypeRedaction, Redacts: "$target", Content: json.RawMessage(`{"reason":"spam"}`)},
		"topic":        {Type: "m.room.topic", StateKey: strptr(""), Content: json.RawMessage(`{"topic":"t"}`)},
	}
	for _, vid := range SupportedVersions() {
		v := MustVersion(vid)
		for name, p := range protos {
			if p.Sender == "" {
				p.Sender, p.PrevEvents, p.AuthEvents, p.Depth, p.OriginServerTS = "@u:example.org", []string{"$p"}, []string{"$a"}, 7, 1700000000000
			}
			p.RoomID = "!r:example.org"
			ev, err := p.Build(v, "example.org", key)
			if err != nil {
				t.Fatalf("v%s %s: %v", vid, name, err)
			}
			bare, err := canonicaljson.Delete(ev.JSON(), "hashes", "signatures")
			if err != nil {
				t.Fatal(err)
			}
			want, covered, _, err := hashAndSign(v, bare, "example.org", key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, ev.JSON()) {
				t.Fatalf("v%s %s: Build differs from the spec algorithm:\n got %s\nwant %s", vid, name, ev.JSON(), want)
			}
			if got, _ := ev.SignedBytes(); !bytes.Equal(got, covered) {
				t.Fatalf("v%s %s: signed bytes differ", vid, name)
			}
		}
	}
}

// The spec's "Event Signing" vectors predate hash-based event IDs, but their
// redaction rules (origin and event_id kept, content stripped) are those of
// room version 6, so the v6 algorithm must reproduce them exactly.
func TestSpecEventSigningVectors(t *testing.T) {
	cases := []struct {
		name, in, wantHash, wantSig string
	}{
		{
			name: "minimal event",
			in: `{"room_id":"!x:domain","sender":"@a:domain","origin":"domain","origin_server_ts":1000000,
				"signatures":{},"hashes":{},"type":"X","content":{},"prev_events":[],"auth_events":[],
				"depth":3,"unsigned":{"age_ts":1000000}}`,
			wantHash: "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
			wantSig:  "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
		},
		{
			name: "redactable content",
			in: `{"content":{"body":"Here is the message content"},"event_id":"$0:domain","origin":"domain",
				"origin_server_ts":1000000,"type":"m.room.message","room_id":"!r:domain","sender":"@u:domain",
				"signatures":{},"unsigned":{"age_ts":1000000}}`,
			wantHash: "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
			wantSig:  "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			obj, err := canonicaljson.Canonicalize([]byte(c.in))
			if err != nil {
				t.Fatal(err)
			}
			signed, _, hash, err := hashAndSign(MustVersion("6"), obj, "domain", specKey(t))
			if err != nil {
				t.Fatal(err)
			}
			if hash != c.wantHash {
				t.Errorf("content hash = %s, want %s", hash, c.wantHash)
			}
			var got struct {
				Hashes     map[string]string            `json:"hashes"`
				Signatures map[string]map[string]string `json:"signatures"`
				Unsigned   map[string]int               `json:"unsigned"`
			}
			if err := json.Unmarshal(signed, &got); err != nil {
				t.Fatal(err)
			}
			if got.Signatures["domain"]["ed25519:1"] != c.wantSig {
				t.Errorf("signature = %s, want %s", got.Signatures["domain"]["ed25519:1"], c.wantSig)
			}
			if got.Hashes["sha256"] != c.wantHash || got.Unsigned["age_ts"] != 1000000 {
				t.Errorf("signed event lost hashes or unsigned: %s", signed)
			}
		})
	}
}

func strptr(s string) *string { return &s }

// buildCreate builds a create event for version v and returns it with the room ID.
func buildCreate(t testing.TB, v *RoomVersion, key signing.Key) *Event {
	t.Helper()
	content := `{"room_version":"` + v.ID + `"}`
	roomID := ""
	if !v.ImplicitCreator {
		content = `{"creator":"@alice:example.org","room_version":"` + v.ID + `"}`
	}
	if !v.RoomIDFromCreate {
		roomID = "!abc:example.org"
	}
	p := Proto{Type: TypeCreate, StateKey: strptr(""), Sender: "@alice:example.org", RoomID: roomID,
		Content: json.RawMessage(content), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1, OriginServerTS: 1700000000000}
	ev, err := p.Build(v, "example.org", key)
	if err != nil {
		t.Fatalf("build create v%s: %v", v.ID, err)
	}
	return ev
}

func TestBuildParseRoundTripEveryVersion(t *testing.T) {
	key := testKey(t)
	for _, vid := range SupportedVersions() {
		v := MustVersion(vid)
		t.Run("v"+vid, func(t *testing.T) {
			create := buildCreate(t, v, key)
			if v.RoomIDFromCreate {
				if create.RoomID() != "!"+create.ID()[1:] {
					t.Fatalf("v12 room ID %q is not derived from create ID %q", create.RoomID(), create.ID())
				}
				if bytes.Contains(create.JSON(), []byte(`"room_id"`)) {
					t.Fatalf("v12 create event carries room_id: %s", create.JSON())
				}
			}
			msg := Proto{Type: "m.room.message", Sender: "@alice:example.org", RoomID: create.RoomID(),
				Content:    json.RawMessage(`{ "msgtype": "m.text", "body": "héllo <b>" }`),
				PrevEvents: []string{create.ID()}, AuthEvents: []string{create.ID()}, Depth: 2, OriginServerTS: 1700000000001}
			built, err := msg.Build(v, "example.org", key)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range []*Event{create, built} {
				parsed, err := Parse(v, ev.JSON())
				if err != nil {
					t.Fatalf("parse built event: %v\n%s", err, ev.JSON())
				}
				if parsed.ID() != ev.ID() || !bytes.Equal(parsed.JSON(), ev.JSON()) || parsed.RoomID() != ev.RoomID() {
					t.Fatalf("round trip changed the event:\nbuilt  %s %s\nparsed %s %s", ev.ID(), ev.JSON(), parsed.ID(), parsed.JSON())
				}
				if !strings.HasPrefix(ev.ID(), "$") || strings.ContainsAny(ev.ID(), "+/=") || len(ev.ID()) != 44 {
					t.Fatalf("event ID %q is not $ + 43 URL-safe base64 chars", ev.ID())
				}
				if err := parsed.CheckContentHash(); err != nil {
					t.Fatal(err)
				}
				covered, err := parsed.SignedBytes()
				if err != nil {
					t.Fatal(err)
				}
				sigs, err := parsed.Signatures()
				if err != nil {
					t.Fatal(err)
				}
				if err := signing.VerifyBytes(covered, sigs["example.org"][key.ID], key.Public()); err != nil {
					t.Fatalf("signature does not verify: %v", err)
				}
			}
			if string(built.Content()) != `{"body":"héllo <b>","msgtype":"m.text"}` {
				t.Fatalf("content not canonical: %s", built.Content())
			}
		})
	}
}

func TestParseAcceptsAnyFormattingAndIgnoresEventIDAndUnsigned(t *testing.T) {
	v := MustVersion("11")
	ev := buildCreate(t, v, testKey(t))
	var m map[string]any
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	m["event_id"] = "$whatever"
	m["unsigned"] = map[string]any{"age": 5}
	pretty, _ := json.MarshalIndent(m, "", "   ")
	parsed, err := Parse(v, pretty)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.ID() != ev.ID() || !bytes.Equal(parsed.JSON(), ev.JSON()) {
		t.Fatalf("formatting, event_id or unsigned changed the event: %s", parsed.JSON())
	}
	if string(parsed.Unsigned()) != `{"age":5}` {
		t.Fatalf("unsigned = %s", parsed.Unsigned())
	}
}

func TestUnsupportedVersions(t *testing.T) {
	for _, vid := range []string{"1", "2", "3", "4", "5", "13", "", "org.example.custom"} {
		if _, err := Version(vid); !errors.Is(err, ErrUnsupportedRoomVersion) {
			t.Errorf("Version(%q) = %v, want ErrUnsupportedRoomVersion", vid, err)
		}
	}
	if got := fmt.Sprint(SupportedVersions()); got != "[6 7 8 9 10 11 12]" {
		t.Errorf("SupportedVersions = %s", got)
	}
	if DefaultRoomVersion != "12" {
		t.Errorf("default room version %s", DefaultRoomVersion)
	}
}

// validPDU returns a well-formed v11 message PDU as a map, for mutation.
func validPDU() map[string]any {
	return map[string]any{
		"auth_events": []any{"$a"}, "prev_events": []any{"$b"}, "content": map[string]any{"body": "x"},
		"depth": 5, "hashes": map[string]any{"sha256": "abc"}, "origin_server_ts": 1,
		"room_id": "!r:example.org", "sender": "@u:example.org", "signatures": map[string]any{},
		"type": "m.room.message",
	}
}

func TestParseRejects(t *testing.T) {
	v := MustVersion("11")
	mutate := func(f func(m map[string]any)) []byte {
		m := validPDU()
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	if _, err := Parse(v, mutate(func(map[string]any) {})); err != nil {
		t.Fatalf("baseline PDU rejected: %v", err)
	}
	long := strings.Repeat("a", 256)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"not json", []byte(`{"type":`), ErrNotJSON},
		{"float", []byte(`{"depth":1.5}`), ErrNotJSON},
		{"duplicate key", []byte(`{"type":"a","type":"b"}`), ErrNotJSON},
		{"array top level", []byte(`[1,2]`), ErrMalformed},
		{"missing type", mutate(func(m map[string]any) { delete(m, "type") }), ErrMalformed},
		{"type too long", mutate(func(m map[string]any) { m["type"] = long }), ErrMalformed},
		{"state_key too long", mutate(func(m map[string]any) { m["state_key"] = long }), ErrMalformed},
		{"sender not a user ID", mutate(func(m map[string]any) { m["sender"] = "alice" }), ErrMalformed},
		{"sender too long", mutate(func(m map[string]any) { m["sender"] = "@" + long + ":x" }), ErrMalformed},
		{"content not object", mutate(func(m map[string]any) { m["content"] = "x" }), ErrMalformed},
		{"depth negative", mutate(func(m map[string]any) { m["depth"] = -1 }), ErrMalformed},
		{"depth string", mutate(func(m map[string]any) { m["depth"] = "1" }), ErrMalformed},
		{"missing origin_server_ts", mutate(func(m map[string]any) { delete(m, "origin_server_ts") }), ErrMalformed},
		{"missing hashes", mutate(func(m map[string]any) { delete(m, "hashes") }), ErrMalformed},
		{"missing signatures", mutate(func(m map[string]any) { delete(m, "signatures") }), ErrMalformed},
		{"prev_events not array", mutate(func(m map[string]any) { m["prev_events"] = "$x" }), ErrMalformed},
		{"bad event ID in auth_events", mutate(func(m map[string]any) { m["auth_events"] = []any{"x"} }), ErrMalformed},
		{"missing room_id", mutate(func(m map[string]any) { delete(m, "room_id") }), ErrMalformed},
		{"bad room_id", mutate(func(m map[string]any) { m["room_id"] = "r:example.org" }), ErrMalformed},
		{"too large", mutate(func(m map[string]any) { m["content"] = map[string]any{"body": strings.Repeat("x", MaxPDUSize)} }), ErrTooLarge},
		{"way too large", []byte(`"` + strings.Repeat("x", 5*MaxPDUSize) + `"`), ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(v, c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("Parse = %v, want %v", err, c.want)
			}
		})
	}
	t.Run("v12 create with room_id", func(t *testing.T) {
		m := validPDU()
		m["type"], m["state_key"], m["prev_events"], m["auth_events"] = TypeCreate, "", []any{}, []any{}
		b, _ := json.Marshal(m)
		if _, err := Parse(MustVersion("12"), b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("v12 create with room_id: %v", err)
		}
		delete(m, "room_id")
		b, _ = json.Marshal(m)
		if _, err := Parse(MustVersion("12"), b); err != nil {
			t.Fatalf("v12 create without room_id: %v", err)
		}
		if _, err := Parse(MustVersion("11"), b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("v11 create without room_id: %v", err)
		}
	})
}

func TestBuildRejects(t *testing.T) {
	v, key := MustVersion("12"), testKey(t)
	ok := Proto{Type: "m.room.message", Sender: "@u:example.org", RoomID: "!r", Content: json.RawMessage(`{}`),
		PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 3, OriginServerTS: 1}
	if _, err := ok.Build(v, "example.org", key); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		f    func(p *Proto)
		want error
	}{
		{"float in content", func(p *Proto) { p.Content = json.RawMessage(`{"n":1.5}`) }, ErrNotJSON},
		{"content array", func(p *Proto) { p.Content = json.RawMessage(`[]`) }, ErrMalformed},
		{"empty type", func(p *Proto) { p.Type = "" }, ErrMalformed},
		{"bad sender", func(p *Proto) { p.Sender = "nobody" }, ErrMalformed},
		{"bad room", func(p *Proto) { p.RoomID = "room" }, ErrMalformed},
		{"bad prev event", func(p *Proto) { p.PrevEvents = []string{"p"} }, ErrMalformed},
		{"too large", func(p *Proto) {
			p.Content = json.RawMessage(`{"body":"` + strings.Repeat("é", MaxPDUSize/2) + `"}`)
		}, ErrTooLarge},
	}
	for _, c := range cases {
		p := ok
		c.f(&p)
		if _, err := p.Build(v, "example.org", key); !errors.Is(err, c.want) {
			t.Errorf("%s: Build = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestRedactionsPerVersion(t *testing.T) {
	key := testKey(t)
	type tc struct {
		typ      string
		content  string
		versions map[string]string // version → expected redacted content
	}
	cases := []tc{
		{TypeMember, `{"membership":"join","displayname":"A","join_authorised_via_users_server":"@x:y","third_party_invite":{"display_name":"d","signed":{"token":"t"}}}`,
			map[string]string{
				"6": `{"membership":"join"}`, "8": `{"membership":"join"}`,
				"9":  `{"join_authorised_via_users_server":"@x:y","membership":"join"}`,
				"10": `{"join_authorised_via_users_server":"@x:y","membership":"join"}`,
				"11": `{"join_authorised_via_users_server":"@x:y","membership":"join","third_party_invite":{"signed":{"token":"t"}}}`,
				"12": `{"join_authorised_via_users_server":"@x:y","membership":"join","third_party_invite":{"signed":{"token":"t"}}}`,
			}},
		{TypeJoinRules, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:b"}],"other":1}`,
			map[string]string{
				"6": `{"join_rule":"restricted"}`, "7": `{"join_rule":"restricted"}`,
				"8":  `{"allow":[{"room_id":"!a:b","type":"m.room_membership"}],"join_rule":"restricted"}`,
				"12": `{"allow":[{"room_id":"!a:b","type":"m.room_membership"}],"join_rule":"restricted"}`,
			}},
		{TypePowerLevels, `{"ban":50,"events":{"a":1},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0}`,
			map[string]string{
				"6":  `{"ban":50,"events":{"a":1},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0}`,
				"10": `{"ban":50,"events":{"a":1},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0}`,
				"11": `{"ban":50,"events":{"a":1},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0}`,
			}},
		{TypeHistoryVisibility, `{"history_visibility":"shared","x":1}`,
			map[string]string{"6": `{"history_visibility":"shared"}`, "12": `{"history_visibility":"shared"}`}},
		{TypeRedaction, `{"redacts":"$t","reason":"spam"}`,
			map[string]string{"10": `{}`, "11": `{"redacts":"$t"}`, "12": `{"redacts":"$t"}`}},
		{"m.room.message", `{"body":"secret","msgtype":"m.text"}`,
			map[string]string{"6": `{}`, "12": `{}`}},
		{"m.room.topic", `{"topic":"t"}`, map[string]string{"9": `{}`}},
	}
	for _, c := range cases {
		for vid, want := range c.versions {
			v := MustVersion(vid)
			t.Run(c.typ+"/v"+vid, func(t *testing.T) {
				var sk *string
				if c.typ != "m.room.message" && c.typ != TypeRedaction {
					sk = strptr("")
					if c.typ == TypeMember {
						sk = strptr("@u:example.org")
					}
				}
				p := Proto{Type: c.typ, StateKey: sk, Sender: "@u:example.org", RoomID: "!r:example.org",
					Content: json.RawMessage(c.content), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2, OriginServerTS: 7}
				ev, err := p.Build(v, "example.org", key)
				if err != nil {
					t.Fatal(err)
				}
				red, err := ev.Redact()
				if err != nil {
					t.Fatal(err)
				}
				if string(red.Content()) != want {
					t.Fatalf("redacted content = %s, want %s", red.Content(), want)
				}
				if red.ID() != ev.ID() {
					t.Fatalf("redaction changed the event ID")
				}
				wantHashOK := string(red.Content()) == string(ev.Content())
				if err := red.CheckContentHash(); (err == nil) != wantHashOK {
					t.Fatalf("content hash check after redaction = %v, content unchanged = %v", err, wantHashOK)
				}
				covered, _ := red.SignedBytes()
				sigs, _ := ev.Signatures()
				if err := signing.VerifyBytes(covered, sigs["example.org"][key.ID], key.Public()); err != nil {
					t.Fatalf("signature no longer verifies on the redacted event: %v", err)
				}
			})
		}
	}
}

func TestRedactionDropsTopLevelKeys(t *testing.T) {
	in := `{"auth_events":[],"content":{},"depth":1,"hashes":{"sha256":"h"},"membership":"join","origin":"o","origin_server_ts":1,"prev_events":[],"prev_state":[],"room_id":"!r:o","sender":"@a:o","signatures":{},"type":"m.room.member","unknown":1}`
	v6, _ := redactJSON(MustVersion("6"), []byte(in))
	if want := `{"auth_events":[],"content":{},"depth":1,"hashes":{"sha256":"h"},"membership":"join","origin":"o","origin_server_ts":1,"prev_events":[],"prev_state":[],"room_id":"!r:o","sender":"@a:o","signatures":{},"type":"m.room.member"}`; string(v6) != want {
		t.Errorf("v6 redaction:\n got %s\nwant %s", v6, want)
	}
	v11, _ := redactJSON(MustVersion("11"), []byte(in))
	if want := `{"auth_events":[],"content":{},"depth":1,"hashes":{"sha256":"h"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:o","sender":"@a:o","signatures":{},"type":"m.room.member"}`; string(v11) != want {
		t.Errorf("v11 redaction:\n got %s\nwant %s", v11, want)
	}
}

func TestRedactsPlacement(t *testing.T) {
	key := testKey(t)
	for _, vid := range []string{"10", "11"} {
		v := MustVersion(vid)
		p := Proto{Type: TypeRedaction, Sender: "@u:example.org", RoomID: "!r:example.org", Content: json.RawMessage(`{"reason":"spam"}`),
			Redacts: "$target", PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2}
		ev, err := p.Build(v, "example.org", key)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := Parse(v, ev.JSON())
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Redacts() != "$target" || ev.Redacts() != "$target" {
			t.Fatalf("v%s: Redacts() = %q / %q", vid, parsed.Redacts(), ev.Redacts())
		}
		inContent := bytes.Contains(ev.Content(), []byte(`"redacts"`))
		if inContent != v.RedactsInContent {
			t.Fatalf("v%s: redacts in content = %v: %s", vid, inContent, ev.JSON())
		}
	}
}

func TestCreatorIDs(t *testing.T) {
	key := testKey(t)
	if got := buildCreate(t, MustVersion("10"), key).CreatorIDs(); fmt.Sprint(got) != "[@alice:example.org]" {
		t.Errorf("v10 creators %v", got)
	}
	p := Proto{Type: TypeCreate, StateKey: strptr(""), Sender: "@alice:example.org",
		Content: json.RawMessage(`{"room_version":"12","additional_creators":["@bob:example.org"]}`), Depth: 1}
	ev, err := p.Build(MustVersion("12"), "example.org", key)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.CreatorIDs(); fmt.Sprint(got) != "[@alice:example.org @bob:example.org]" {
		t.Errorf("v12 creators %v", got)
	}
}

// FuzzParse checks that parsing never panics and that an accepted event is
// stable: parsing its JSON again gives the same bytes and ID.
func FuzzParse(f *testing.F) {
	key := testKey(f)
	for _, vid := range []string{"6", "11", "12"} {
		v := MustVersion(vid)
		f.Add(vid, buildCreate(f, v, key).JSON())
	}
	seed, _ := json.Marshal(validPDU())
	f.Add("11", seed)
	f.Add("9", []byte(`{"type":"m.room.member","content":{"membership":"join","third_party_invite":{"signed":{}}}}`))
	f.Fuzz(func(t *testing.T, vid string, data []byte) {
		v, err := Version(vid)
		if err != nil {
			return
		}
		ev, err := Parse(v, data)
		if err != nil {
			return
		}
		again, err := Parse(v, ev.JSON())
		if err != nil {
			t.Fatalf("re-parse of accepted event failed: %v\n%s", err, ev.JSON())
		}
		if again.ID() != ev.ID() || !bytes.Equal(again.JSON(), ev.JSON()) {
			t.Fatalf("unstable: %s vs %s", ev.JSON(), again.JSON())
		}
		red, err := ev.Redact()
		if err != nil {
			t.Fatalf("redact accepted event: %v", err)
		}
		if red.ID() != ev.ID() {
			t.Fatalf("redaction changed ID")
		}
	})
}

// message1K is a realistic ~1 KiB message event proto.
func message1K() Proto {
	body := strings.Repeat("Plaza makes every repository a room. ", 14)
	content, _ := json.Marshal(map[string]any{
		"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html",
		"formatted_body": "<p>" + body + "</p>", "m.mentions": map[string]any{"user_ids": []string{"@bob:example.org"}},
	})
	return Proto{Type: "m.room.message", Sender: "@alice:example.org", RoomID: "!OGEhHVWSdvArJzumhm2Ij8eFDSOYm3XQWSNaPkOrgkA",
		Content:    content,
		PrevEvents: []string{"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"},
		AuthEvents: []string{"$ys7l3lYDvM-s2V8aH-_BTqVLZEhNQvHm4UmpbRTLkN4", "$aBCd3lYDvM-s2V8aH-_BTqVLZEhNQvHm4UmpbRTLkN4", "$xYz0-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"},
		Depth:      4242, OriginServerTS: 1763800000000}
}

// BenchmarkBuildMessage1K measures canonical encoding + content hash +
// reference hash + ed25519 signature of a ~1 KiB message event.
func BenchmarkBuildMessage1K(b *testing.B) {
	v, key, p := MustVersion("12"), testKey(b), message1K()
	ev, err := p.Build(v, "example.org", key)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.JSON())))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Build(v, "example.org", key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignOnly is the ed25519 floor under BenchmarkBuildMessage1K.
func BenchmarkSignOnly(b *testing.B) {
	key := testKey(b)
	msg := make([]byte, 400)
	for b.Loop() {
		signing.SignBytes(msg, key)
	}
}

func BenchmarkParseMessage1K(b *testing.B) {
	v, key, p := MustVersion("12"), testKey(b), message1K()
	ev, err := p.Build(v, "example.org", key)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.JSON())))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(v, ev.JSON()); err != nil {
			b.Fatal(err)
		}
	}
}

// encoding/json matches keys regardless of case; the PDU format must not.
func TestParseRejectsMiscapitalisedKeys(t *testing.T) {
	v := MustVersion("11")
	m := validPDU()
	delete(m, "sender")
	m["Sender"] = "@u:example.org"
	b, _ := json.Marshal(m)
	if _, err := Parse(v, b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("PDU with only \"Sender\": %v", err)
	}
	// An extra capitalised key next to the real one is just an unknown key.
	m = validPDU()
	m["Type"] = "x"
	b, _ = json.Marshal(m)
	ev, err := Parse(v, b)
	if err != nil || ev.Type() != "m.room.message" {
		t.Fatalf("extra capitalised key: %v", err)
	}
	// Content keys are exact too.
	key := testKey(t)
	p := Proto{Type: TypeRedaction, Sender: "@u:example.org", RoomID: "!r:example.org", Content: json.RawMessage(`{"Redacts":"$victim"}`),
		PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2}
	red, err := p.Build(v, "example.org", key)
	if err != nil {
		t.Fatal(err)
	}
	if red.Redacts() != "" {
		t.Fatalf("\"Redacts\" taken as redacts: %q", red.Redacts())
	}
	cp := Proto{Type: TypeCreate, StateKey: strptr(""), Sender: "@a:example.org", RoomID: "!r:example.org",
		Content: json.RawMessage(`{"Creator":"@mallory:example.org"}`), Depth: 1}
	create, err := cp.Build(MustVersion("6"), "example.org", key)
	if err != nil {
		t.Fatal(err)
	}
	if got := create.CreatorIDs(); len(got) != 0 {
		t.Fatalf("\"Creator\" taken as creator: %v", got)
	}
}
