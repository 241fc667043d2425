package spectest_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"plaza/homeserver/spectest"
)

// mutate decodes a JSON body, lets f change it, and encodes it again.
func mutate(t *testing.T, body string, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("bad test body: %v", err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// at walks a decoded body by keys and array indexes.
func at(v any, path ...any) map[string]any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			v = v.(map[string]any)[p]
		case int:
			v = v.([]any)[p]
		}
	}
	return v.(map[string]any)
}

// wantProblem asserts err is a mismatch naming path with a message
// containing msg.
func wantProblem(t *testing.T, err error, path, msg string) {
	t.Helper()
	var mm *spectest.MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("want a mismatch at %q (%s), got %v", path, msg, err)
	}
	for _, p := range mm.Problems {
		if p.Path == path && strings.Contains(p.Message, msg) {
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error text does not name %q: %v", path, err)
			}
			return
		}
	}
	t.Fatalf("want a problem at %q containing %q, got %v", path, msg, err)
}

const syncBody = `{
  "next_batch": "s72595_4483_1934",
  "account_data": {"events": [{"type": "org.example.custom", "content": {"k": "v"}}]},
  "rooms": {
    "join": {
      "!726s6s6q:example.com": {
        "summary": {"m.heroes": ["@alice:example.com"], "m.joined_member_count": 2, "m.invited_member_count": 0},
        "state": {"events": [{"type": "m.room.member", "state_key": "@alice:example.com", "sender": "@alice:example.com",
          "event_id": "$1", "origin_server_ts": 1432735824653, "content": {"membership": "join"}}]},
        "timeline": {"limited": true, "prev_batch": "t34-23535_0_0", "events": [
          {"type": "m.room.message", "sender": "@alice:example.com", "event_id": "$2", "origin_server_ts": 1432735824654,
           "content": {"msgtype": "m.text", "body": "hello"}, "unsigned": {"age": 5}}]},
        "ephemeral": {"events": [{"type": "m.typing", "content": {"user_ids": []}}]},
        "unread_notifications": {"highlight_count": 1, "notification_count": 2}
      }
    },
    "invite": {
      "!696r7674:example.com": {"invite_state": {"events": [
        {"type": "m.room.name", "state_key": "", "sender": "@alice:example.com", "content": {"name": "My Room Name"}}]}}
    },
    "leave": {"!left:example.com": {"timeline": {"events": []}}}
  }
}`

const capabilitiesBody = `{"capabilities": {
  "m.change_password": {"enabled": false},
  "m.room_versions": {"default": "12", "available": {"11": "stable", "12": "stable"}},
  "org.example.custom": {"anything": 1}
}}`

const loginBody = `{"user_id": "@alice:example.com", "access_token": "abc", "device_id": "DEV",
  "well_known": {"m.homeserver": {"base_url": "https://example.com"}}}`

func TestValidate(t *testing.T) {
	s := spectest.ForTest(t)
	const v3 = "/_matrix/client/v3"
	cases := []struct {
		name           string
		method, path   string
		status         int
		body           string
		change         func(m map[string]any)
		wantPath, want string
	}{
		{"sync: next_batch of the wrong type", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) { m["next_batch"] = 5 }, "/next_batch", "want string"},
		{"sync: next_batch missing", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) { delete(m, "next_batch") }, "", "missing property 'next_batch'"},
		{"sync: timeline event without sender", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) {
				delete(at(m, "rooms", "join", "!726s6s6q:example.com", "timeline", "events", 0), "sender")
			}, "/rooms/join/!726s6s6q:example.com/timeline/events/0", "missing property 'sender'"},
		{"sync: timeline without events", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) {
				delete(at(m, "rooms", "join", "!726s6s6q:example.com", "timeline"), "events")
			}, "/rooms/join/!726s6s6q:example.com/timeline", "missing property 'events'"},
		{"sync: stripped invite state without state_key", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) {
				delete(at(m, "rooms", "invite", "!696r7674:example.com", "invite_state", "events", 0), "state_key")
			}, "/rooms/invite/!696r7674:example.com/invite_state/events/0", "missing property 'state_key'"},
		{"sync: unread count as a string", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) {
				at(m, "rooms", "join", "!726s6s6q:example.com", "unread_notifications")["highlight_count"] = "1"
			}, "/rooms/join/!726s6s6q:example.com/unread_notifications/highlight_count", "want integer"},
		{"sync: event id without its sigil", "GET", v3 + "/sync", 200, syncBody,
			func(m map[string]any) {
				at(m, "rooms", "join", "!726s6s6q:example.com", "timeline", "events", 0)["event_id"] = "2"
			}, "/rooms/join/!726s6s6q:example.com/timeline/events/0/event_id", "does not match pattern"},
		{"capabilities: unknown room version stability", "GET", v3 + "/capabilities", 200, capabilitiesBody,
			func(m map[string]any) {
				at(m, "capabilities", "m.room_versions", "available")["12"] = "beta"
			}, "/capabilities/m.room_versions/available/12", "value must be one of"},
		{"capabilities: boolean capability as a string", "GET", v3 + "/capabilities", 200, capabilitiesBody,
			func(m map[string]any) { at(m, "capabilities", "m.change_password")["enabled"] = "no" },
			"/capabilities/m.change_password/enabled", "want boolean"},
		{"capabilities: missing", "GET", v3 + "/capabilities", 200, capabilitiesBody,
			func(m map[string]any) { delete(m, "capabilities") }, "", "missing property 'capabilities'"},
		{"login: no device_id", "POST", v3 + "/login", 200, loginBody,
			func(m map[string]any) { delete(m, "device_id") }, "", "missing property 'device_id'"},
		{"login: well_known without base_url", "POST", v3 + "/login", 200, loginBody,
			func(m map[string]any) { delete(at(m, "well_known", "m.homeserver"), "base_url") },
			"/well_known/m.homeserver", "missing property 'base_url'"},
		{"login 403: error without errcode", "POST", v3 + "/login", 403, `{"errcode": "M_FORBIDDEN", "error": "no"}`,
			func(m map[string]any) { delete(m, "errcode") }, "", "missing property 'errcode'"},
		{"versions: versions of the wrong type", "GET", "/_matrix/client/versions", 200, `{"versions": ["v1.19"]}`,
			func(m map[string]any) { m["versions"] = "v1.19" }, "/versions", "want array"},
		{"well-known: homeserver missing", "GET", "/.well-known/matrix/client", 200, `{"m.homeserver": {"base_url": "https://x"}}`,
			func(m map[string]any) { delete(m, "m.homeserver") }, "", "missing property 'm.homeserver'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Validate(tc.method, tc.path, tc.status, []byte(tc.body)); err != nil {
				t.Fatalf("the known-good body fails: %v", err)
			}
			err := s.Validate(tc.method, tc.path, tc.status, mutate(t, tc.body, tc.change))
			wantProblem(t, err, tc.wantPath, tc.want)
		})
	}
}

func TestValidateUnknownResponses(t *testing.T) {
	s := spectest.ForTest(t)
	var mm *spectest.MismatchError
	if err := s.Validate("GET", "/_matrix/client/v3/nonsense", 200, []byte(`{}`)); err == nil || errors.As(err, &mm) {
		t.Errorf("an operation the spec lacks: got %v, want a lookup error", err)
	}
	if err := s.Validate("GET", "/_matrix/client/v3/sync", 418, []byte(`{}`)); err == nil || errors.As(err, &mm) {
		t.Errorf("a status the spec lacks: got %v, want a lookup error", err)
	}
	// GET /rooms/{roomId}/messages documents its 403 in prose only.
	if err := s.Validate("GET", "/_matrix/client/v3/rooms/{roomId}/messages", 403, []byte(`{}`)); !errors.Is(err, spectest.ErrNoSchema) {
		t.Errorf("a response without a schema: got %v, want ErrNoSchema", err)
	}
	if err := s.Validate("GET", "/_matrix/client/v3/sync", 200, []byte(`{"next_batch": `)); !errors.As(err, &mm) {
		t.Errorf("a body that is not JSON: got %v, want a mismatch", err)
	}
}

func TestValidateSchema(t *testing.T) {
	s := spectest.ForTest(t)
	const errSchema = "api/client-server/definitions/errors/error.yaml"
	if err := s.ValidateSchema(errSchema, []byte(`{"errcode": "M_UNRECOGNIZED", "error": "no"}`)); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, s.ValidateSchema(errSchema, []byte(`{"errcode": 404}`)), "/errcode", "want string")
}

const memberEvent = `{"type": "m.room.member", "state_key": "@bob:example.com", "sender": "@bob:example.com",
  "event_id": "$m", "origin_server_ts": 1, "room_id": "!r:example.com",
  "content": {"membership": "join", "displayname": null}}`

const textEvent = `{"type": "m.room.message", "sender": "@bob:example.com", "event_id": "$t", "origin_server_ts": 1,
  "room_id": "!r:example.com", "content": {"msgtype": "m.text", "body": "hi", "format": "org.matrix.custom.html", "formatted_body": "<b>hi</b>"}}`

func TestValidateEvent(t *testing.T) {
	s := spectest.ForTest(t)
	withoutRoomID := func(m map[string]any) { delete(m, "room_id") }
	good := []struct {
		name   string
		format spectest.EventFormat
		body   []byte
	}{
		{"member", spectest.ClientEvent, []byte(memberEvent)},
		{"member in /sync, without room_id", spectest.SyncEvent, mutate(t, memberEvent, withoutRoomID)},
		{"text message", spectest.ClientEvent, []byte(textEvent)},
		{"text message in /sync", spectest.SyncEvent, mutate(t, textEvent, withoutRoomID)},
		{"redacted message: content emptied by redaction", spectest.ClientEvent, mutate(t, textEvent, func(m map[string]any) {
			m["content"] = map[string]any{}
			m["unsigned"] = map[string]any{"redacted_because": map[string]any{"type": "m.room.redaction"}}
		})},
		{"a type the spec does not define", spectest.ClientEvent, mutate(t, textEvent, func(m map[string]any) { m["type"] = "org.example.thing" })},
		{"typing, an ephemeral event", spectest.SyncEvent, []byte(`{"type": "m.typing", "content": {"user_ids": ["@a:b"]}}`)},
	}
	for _, tc := range good {
		if err := s.ValidateEvent(tc.format, tc.body); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	bad := []struct {
		name           string
		format         spectest.EventFormat
		body           []byte
		wantPath, want string
	}{
		{"client event without room_id", spectest.ClientEvent, mutate(t, memberEvent, withoutRoomID), "", "missing property 'room_id'"},
		{"membership outside the enum", spectest.ClientEvent, mutate(t, memberEvent, func(m map[string]any) {
			m["content"].(map[string]any)["membership"] = "joined"
		}), "/content/membership", "value must be one of"},
		{"member state_key not a user id", spectest.SyncEvent, mutate(t, memberEvent, func(m map[string]any) { m["state_key"] = "" }),
			"/state_key", "does not match pattern"},
		{"message without body", spectest.SyncEvent, mutate(t, textEvent, func(m map[string]any) {
			delete(m["content"].(map[string]any), "body")
		}), "/content", "missing property 'body'"},
		{"origin_server_ts as a string", spectest.SyncEvent, mutate(t, textEvent, func(m map[string]any) { m["origin_server_ts"] = "1" }),
			"/origin_server_ts", "want integer"},
		{"content not an object", spectest.ClientEvent, mutate(t, textEvent, func(m map[string]any) { m["content"] = 5 }),
			"/content", "want object"},
		{"no type", spectest.SyncEvent, mutate(t, textEvent, func(m map[string]any) { delete(m, "type") }),
			"", "missing property 'type'"},
		{"typing user_ids not an array", spectest.SyncEvent, []byte(`{"type": "m.typing", "content": {"user_ids": "@a:b"}}`),
			"/content/user_ids", "want array"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) { wantProblem(t, s.ValidateEvent(tc.format, tc.body), tc.wantPath, tc.want) })
	}
}

// dialectSpec is a miniature spec that uses the OpenAPI constructs the
// real one may use, each in a spot the test below probes.
const dialectSpec = `openapi: 3.1.0
info: {title: test, version: 1.0.0}
x-top-level-extension: ignored
paths:
  /thing/{id}:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                allOf:
                  - $ref: '#/components/schemas/base'
                  - type: object
                    x-extension: {anything: at all}
                    example: {id: 5}
                    examples: {one: {value: 1}}
                    properties:
                      note: {type: string, nullable: true}
                      level: {type: string, enum: [low, high], nullable: true}
                      either: {type: [string, integer]}
                      strict:
                        type: object
                        additionalProperties: false
                        properties: {a: {type: integer}}
                      counts:
                        type: object
                        additionalProperties: {type: integer}
                      example: {type: integer}
                      other: {$ref: definitions/other.yaml}
              examples:
                response: {value: {id: "x"}}
        "404":
          $ref: '#/components/responses/notFound'
servers:
  - url: "{protocol}://{hostname}{basePath}"
    variables:
      protocol: {default: https}
      hostname: {default: localhost:8008}
      basePath: {default: /_matrix/client/v3}
components:
  schemas:
    base:
      type: object
      required: [id]
      properties:
        id: {type: string}
  responses:
    notFound:
      description: not found
      content:
        application/json:
          schema:
            $ref: definitions/other.yaml
`

func TestOpenAPIDialect(t *testing.T) {
	dir := t.TempDir()
	api := filepath.Join(dir, "data", "api", "client-server")
	if err := os.MkdirAll(filepath.Join(api, "definitions"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(api, "thing.yaml"), []byte(dialectSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	other := "type: object\nrequired: [errcode]\nproperties:\n  errcode: {type: string}\n"
	if err := os.WriteFile(filepath.Join(api, "definitions", "other.yaml"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := spectest.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	const path = "/_matrix/client/v3/thing/{id}"
	good := []string{
		`{"id": "x"}`,
		`{"id": "x", "note": null, "level": null, "either": 3, "strict": {"a": 1}, "counts": {"n": 2}, "example": 1, "other": {"errcode": "E"}}`,
		`{"id": "x", "note": "n", "level": "low", "either": "s", "unknown": true}`,
	}
	for _, b := range good {
		if err := s.Validate("GET", path, 200, []byte(b)); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	bad := []struct{ body, path, want string }{
		{`{"note": "n"}`, "", "missing property 'id'"},                                                  // allOf brings in the base's required
		{`{"id": 1}`, "/id", "want string"},                                                             // and its properties
		{`{"id": "x", "note": 5}`, "/note", "want null or string"},                                      // nullable adds null, nothing more
		{`{"id": "x", "level": "mid"}`, "/level", "value must be one of"},                               // a nullable enum still checks values
		{`{"id": "x", "either": true}`, "/either", "got boolean, want integer or string"},               // type lists
		{`{"id": "x", "strict": {"a": 1, "b": 2}}`, "/strict", "additional properties 'b' not allowed"}, // additionalProperties: false
		{`{"id": "x", "counts": {"n": "2"}}`, "/counts/n", "want integer"},                              // additionalProperties as a schema
		{`{"id": "x", "example": "e"}`, "/example", "want integer"},                                     // a property named like a keyword is kept
		{`{"id": "x", "other": {}}`, "/other", "missing property 'errcode'"},                            // a $ref to another file
	}
	for _, tc := range bad {
		wantProblem(t, s.Validate("GET", path, 200, []byte(tc.body)), tc.path, tc.want)
	}
	// A response shared through #/components/responses.
	if err := s.Validate("GET", path, 404, []byte(`{"errcode": "M_NOT_FOUND"}`)); err != nil {
		t.Error(err)
	}
	wantProblem(t, s.Validate("GET", path, 404, []byte(`{"error": "x"}`)), "", "missing property 'errcode'")
}

// The spec's absence must fail loudly: a conformance suite that skips
// itself when the spec is missing proves nothing.
func TestDirWithoutSpec(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(filepath.Join(repo, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(repo, "sub"))
	_, err := spectest.Dir()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "shared", "matrix-spec")) {
		t.Fatalf("Dir without ../shared/matrix-spec = %v, want an error naming where it looked", err)
	}
	// With the spec in place, Dir finds it from a subdirectory.
	if err := os.MkdirAll(filepath.Join(dir, "shared", "matrix-spec", "data", "api", "client-server"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := spectest.Dir()
	if err != nil || got != filepath.Join(dir, "shared", "matrix-spec") {
		t.Fatalf("Dir = %q, %v", got, err)
	}
}
