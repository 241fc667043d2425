// Package spectest checks Client-Server API responses against the Matrix
// specification's own OpenAPI definitions (matrix-spec's data/api/client-server
// and the event schemas under data/event-schemas/schema), so that tests judge
// Plaza by the spec's text rather than by our reading of it.
//
// The spec's files are OpenAPI 3.1 documents whose schemas are JSON Schema
// 2020-12 spread over many YAML files joined by relative $refs. This package
// reads them lazily, rewrites the few OpenAPI-only keywords into plain JSON
// Schema, and hands them to github.com/santhosh-tekuri/jsonschema for the
// validation itself.
package spectest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"
)

// Schema documents get synthetic URLs so that the spec's relative $refs
// resolve against them. Two trees are served: the spec as written, and a
// variant for events in the /sync format (see EventFormat).
const (
	specBase = "https://matrix-spec.invalid/spec/"
	syncBase = "https://matrix-spec.invalid/sync-events/"
)

// Spec is a loaded copy of the Client-Server API definitions. Its methods are
// safe for concurrent use.
type Spec struct {
	dataDir string
	// ops maps "METHOD /full/path/template" to where its responses are.
	ops map[string]operation

	mu       sync.Mutex
	docs     map[string]any // preprocessed documents by URL, filled lazily
	compiler *jsonschema.Compiler
	compiled map[string]*jsonschema.Schema // by schema location
}

// operation locates one operation's "responses" object inside an API file.
type operation struct {
	fileURL string
	// responses is the JSON pointer to the operation's responses object.
	responses string
}

// EventFormat says which shape of event is being validated.
type EventFormat int

const (
	// ClientEvent is an event with its room_id, as /messages, /context,
	// /event and /state return it.
	ClientEvent EventFormat = iota
	// SyncEvent is a room event inside /sync, where the room_id is implied
	// by the enclosing object. The spec's per-type event schemas all build
	// on core-event-schema/room_event.yaml, which requires room_id, while
	// that very file says room_id "will not be present on events that arrive
	// through /sync"; the spec ships sync_room_event.yaml and
	// sync_state_event.yaml for that case, and this format substitutes them.
	SyncEvent
)

// ErrNoSchema is wrapped by Validate's error when the spec documents the
// response (typically an error status, in prose) but gives it no
// application/json schema.
var ErrNoSchema = errors.New("the spec gives no application/json schema for this response")

// Problem is one way in which a body departs from its schema.
type Problem struct {
	// Path is a JSON pointer into the validated body ("" is the whole body).
	Path string
	// Message says what the schema wanted, e.g. "missing property 'sender'".
	Message string
}

func (p Problem) String() string {
	where := p.Path
	if where == "" {
		where = "(root)"
	}
	return where + ": " + p.Message
}

// MismatchError reports a body that does not conform to the spec.
type MismatchError struct {
	// What names what was checked, e.g. "GET /_matrix/client/v3/sync 200".
	What     string
	Problems []Problem
	// Cause is the validator's full error tree, for errors.As.
	Cause error
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s does not conform to the spec:", e.What)
	for _, p := range e.Problems {
		b.WriteString("\n  at ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *MismatchError) Unwrap() error { return e.Cause }

// Dir finds the spec checkout for tests: the module root is the nearest
// directory at or above the working directory holding go.mod, and the spec
// sits beside the repository as ../shared/matrix-spec (so in CI, as on a
// developer's machine, shared/ is a sibling of the clone).
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("spectest: %w", err)
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return "", fmt.Errorf("spectest: no go.mod at or above %s", wd)
		}
		root = parent
	}
	dir := filepath.Join(root, "..", "shared", "matrix-spec")
	if _, err := os.Stat(filepath.Join(dir, "data", "api", "client-server")); err != nil {
		return "", fmt.Errorf("spectest: the Matrix spec is missing: expected a matrix-spec checkout at %s (beside the repository, as ../shared/matrix-spec): %w", filepath.Clean(dir), err)
	}
	return filepath.Clean(dir), nil
}

// ForTest loads the spec found by Dir, failing t (never skipping) when it
// cannot: a conformance suite that silently skips proves nothing.
func ForTest(t testing.TB) *Spec {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Load indexes the Client-Server API definitions under specDir (a
// matrix-spec checkout: the directory holding data/). Schemas are compiled
// on first use.
func Load(specDir string) (*Spec, error) {
	dataDir, err := filepath.Abs(filepath.Join(specDir, "data"))
	if err != nil {
		return nil, fmt.Errorf("spectest: %w", err)
	}
	apiDir := filepath.Join(dataDir, "api", "client-server")
	files, err := filepath.Glob(filepath.Join(apiDir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("spectest: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("spectest: no API definitions in %s", apiDir)
	}
	s := &Spec{
		dataDir:  dataDir,
		ops:      map[string]operation{},
		docs:     map[string]any{},
		compiled: map[string]*jsonschema.Schema{},
	}
	s.compiler = jsonschema.NewCompiler()
	// OpenAPI 3.1 schemas are JSON Schema 2020-12 but rarely say so.
	s.compiler.DefaultDraft(jsonschema.Draft2020)
	s.compiler.UseLoader(loader{s})
	for _, f := range files {
		rel, _ := filepath.Rel(dataDir, f)
		u := specBase + filepath.ToSlash(rel)
		doc, err := s.load(u)
		if err != nil {
			return nil, err
		}
		if err := s.index(u, doc); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// index records the operations of one OpenAPI document under their full
// path templates. The spec writes paths relative to a server URL of the form
// "{protocol}://{hostname}{basePath}" whose basePath variable defaults to
// e.g. /_matrix/client/v3, so the full template is that default plus the
// path key.
func (s *Spec) index(fileURL string, doc any) error {
	root, _ := doc.(map[string]any)
	paths, _ := root["paths"].(map[string]any)
	if paths == nil {
		return nil // a definitions file, not an API
	}
	base, err := serverBase(root)
	if err != nil {
		return fmt.Errorf("spectest: %s: %w", fileURL, err)
	}
	for p, item := range paths {
		methods, _ := item.(map[string]any)
		for m, op := range methods {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options":
			default:
				continue // parameters, summary, x-…
			}
			if _, ok := op.(map[string]any)["responses"]; !ok {
				continue
			}
			key := strings.ToUpper(m) + " " + base + p
			if prev, dup := s.ops[key]; dup {
				return fmt.Errorf("spectest: %s is defined twice (%s and %s)", key, prev.fileURL, fileURL)
			}
			s.ops[key] = operation{fileURL: fileURL, responses: "/paths/" + escapePtr(p) + "/" + m + "/responses"}
		}
	}
	return nil
}

// serverBase returns the path part of the document's first server URL with
// its variables at their defaults.
func serverBase(root map[string]any) (string, error) {
	servers, _ := root["servers"].([]any)
	if len(servers) == 0 {
		return "", nil
	}
	srv, _ := servers[0].(map[string]any)
	raw, _ := srv["url"].(string)
	vars, _ := srv["variables"].(map[string]any)
	for name, v := range vars {
		def, _ := v.(map[string]any)["default"].(string)
		raw = strings.ReplaceAll(raw, "{"+name+"}", def)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("server url %q: %w", raw, err)
	}
	return strings.TrimSuffix(u.Path, "/"), nil
}

// Validate checks a response body against the schema the spec gives for
// (method, path template, status), e.g. ("GET", "/_matrix/client/v3/sync",
// 200). It fails when the spec defines no such response, and returns a
// *MismatchError when the body does not conform.
func (s *Spec) Validate(method, pathTemplate string, status int, body []byte) error {
	what := fmt.Sprintf("%s %s %d", method, pathTemplate, status)
	loc, err := s.responseSchema(method, pathTemplate, status)
	if err != nil {
		return fmt.Errorf("spectest: %s: %w", what, err)
	}
	return s.validate(what, loc, body)
}

// ValidateSchema checks a body against a schema file named relative to the
// spec's data directory (optionally with a #fragment), e.g.
// "api/client-server/definitions/errors/error.yaml". It serves responses the
// spec describes only in prose, such as errors on endpoints that list no
// error responses.
func (s *Spec) ValidateSchema(file string, body []byte) error {
	return s.validate(file, specBase+file, body)
}

// ValidateEvent checks one event against the spec's schema for its type
// (data/event-schemas/schema/<type>.yaml, or <type>$<msgtype>.yaml for
// messages with a specified msgtype). Types the spec does not define pass.
// Redacted events are checked against the generic event shape only, since
// redaction strips the content keys the per-type schemas require.
func (s *Spec) ValidateEvent(format EventFormat, event []byte) error {
	var head struct {
		Type    string `json:"type"`
		Content struct {
			MsgType any `json:"msgtype"`
		} `json:"content"`
		StateKey *string `json:"state_key"`
		Unsigned struct {
			RedactedBecause json.RawMessage `json:"redacted_because"`
		} `json:"unsigned"`
	}
	// A body that does not even decode into this shape gets the generic
	// event schema below, which says precisely what is wrong with it.
	decodeErr := json.Unmarshal(event, &head)
	base := specBase
	if format == SyncEvent {
		base = syncBase
	}
	schemaDir := filepath.Join(s.dataDir, "event-schemas", "schema")
	var file string
	switch {
	case decodeErr != nil || head.Type == "":
		file = "core-event-schema/event.yaml"
	case len(head.Unsigned.RedactedBecause) > 0 && head.StateKey != nil:
		file = "core-event-schema/state_event.yaml"
	case len(head.Unsigned.RedactedBecause) > 0:
		file = "core-event-schema/room_event.yaml"
	case strings.ContainsAny(head.Type, "/\\"):
		// Cannot name a schema file, and no type the spec defines does.
	default:
		if mt, ok := head.Content.MsgType.(string); ok && !strings.ContainsAny(mt, "/\\") {
			if f := head.Type + "$" + mt + ".yaml"; exists(filepath.Join(schemaDir, f)) {
				file = f
			}
		}
		if file == "" {
			if f := head.Type + ".yaml"; exists(filepath.Join(schemaDir, f)) {
				file = f
			}
		}
	}
	if file == "" {
		return nil
	}
	what := fmt.Sprintf("%s event (event-schemas/schema/%s)", head.Type, file)
	return s.validate(what, base+"event-schemas/schema/"+escapeURLPath(file), event)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// responseSchema finds the schema location for one response.
func (s *Spec) responseSchema(method, pathTemplate string, status int) (string, error) {
	op, ok := s.ops[strings.ToUpper(method)+" "+pathTemplate]
	if !ok {
		return "", errors.New("the spec defines no such operation")
	}
	s.mu.Lock()
	doc := s.docs[op.fileURL]
	s.mu.Unlock()
	ptr := op.responses + "/" + strconv.Itoa(status)
	resp, err := lookup(doc, ptr)
	if err != nil {
		return "", fmt.Errorf("the spec defines no %d response for it", status)
	}
	// Responses may be shared through #/components/responses/….
	if m, ok := resp.(map[string]any); ok {
		if ref, ok := m["$ref"].(string); ok {
			if !strings.HasPrefix(ref, "#/") {
				return "", fmt.Errorf("response $ref %q outside its file is not supported", ref)
			}
			ptr = ref[1:]
			if _, err := lookup(doc, ptr); err != nil {
				return "", fmt.Errorf("response $ref %q: %w", ref, err)
			}
		}
	}
	ptr += "/content/" + escapePtr("application/json") + "/schema"
	if _, err := lookup(doc, ptr); err != nil {
		return "", ErrNoSchema
	}
	return op.fileURL + "#" + ptr, nil
}

// lookup follows a JSON pointer through a decoded document.
func lookup(doc any, ptr string) (any, error) {
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no %q at %s", tok, ptr)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("no %q at %s", tok, ptr)
		}
	}
	return cur, nil
}

func escapePtr(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// escapeURLPath escapes a relative file name for use in a URL; event schema
// files have "$" in their names, which is legal there, but keep it general.
func escapeURLPath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}

func (s *Spec) validate(what, loc string, body []byte) error {
	sch, err := s.compile(loc)
	if err != nil {
		return fmt.Errorf("spectest: %s: compiling %s: %w", what, loc, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return &MismatchError{What: what, Problems: []Problem{{Message: "body is not JSON: " + err.Error()}}, Cause: err}
	}
	err = sch.Validate(inst)
	var verr *jsonschema.ValidationError
	if errors.As(err, &verr) {
		return &MismatchError{What: what, Problems: problems(verr), Cause: verr}
	}
	if err != nil {
		return fmt.Errorf("spectest: %s: %w", what, err)
	}
	return nil
}

func (s *Spec) compile(loc string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.compiled[loc]; ok {
		return sch, nil
	}
	sch, err := s.compiler.Compile(loc)
	if err != nil {
		return nil, err
	}
	s.compiled[loc] = sch
	return sch, nil
}

// problems flattens the validator's error tree to its leaves, which are the
// concrete failures (the inner nodes only say "allOf failed" and the like).
func problems(e *jsonschema.ValidationError) []Problem {
	p := message.NewPrinter(language.English)
	seen := map[Problem]bool{}
	var out []Problem
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		pr := Problem{Path: pointer(e.InstanceLocation), Message: e.ErrorKind.LocalizedString(p)}
		if !seen[pr] {
			seen[pr] = true
			out = append(out, pr)
		}
	}
	walk(e)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapePtr(t))
	}
	return b.String()
}

// loader serves the spec's YAML files to the schema compiler. Only URLs under
// the two synthetic bases are served, so a stray absolute $ref fails loudly
// instead of reaching the network.
type loader struct{ s *Spec }

// Load implements jsonschema.URLLoader. The compiler calls it with its own
// lock held (Spec.compile), so the cache needs no further locking there.
func (l loader) Load(u string) (any, error) {
	if doc, ok := l.s.docs[u]; ok {
		return doc, nil
	}
	return l.s.loadLocked(u)
}

// load reads, preprocesses and caches one document.
func (s *Spec) load(u string) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if doc, ok := s.docs[u]; ok {
		return doc, nil
	}
	return s.loadLocked(u)
}

func (s *Spec) loadLocked(u string) (any, error) {
	var rel string
	syncVariant := false
	switch {
	case strings.HasPrefix(u, specBase):
		rel = u[len(specBase):]
	case strings.HasPrefix(u, syncBase):
		rel, syncVariant = u[len(syncBase):], true
	default:
		return nil, fmt.Errorf("spectest: $ref to %s leaves the spec", u)
	}
	rel, err := url.PathUnescape(rel)
	if err != nil {
		return nil, fmt.Errorf("spectest: %s: %w", u, err)
	}
	rel = path.Clean(rel)
	if rel == ".." || strings.HasPrefix(rel, "../") || path.IsAbs(rel) {
		return nil, fmt.Errorf("spectest: $ref to %s leaves the spec's data directory", u)
	}
	file := rel
	if syncVariant {
		switch rel {
		case "event-schemas/schema/core-event-schema/room_event.yaml":
			file = "event-schemas/schema/core-event-schema/sync_room_event.yaml"
		case "event-schemas/schema/core-event-schema/state_event.yaml":
			file = "event-schemas/schema/core-event-schema/sync_state_event.yaml"
		}
	}
	raw, err := os.ReadFile(filepath.Join(s.dataDir, filepath.FromSlash(file)))
	if err != nil {
		return nil, fmt.Errorf("spectest: %w", err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return nil, fmt.Errorf("spectest: %s: %w", file, err)
	}
	y, err = plain(y)
	if err != nil {
		return nil, fmt.Errorf("spectest: %s: %w", file, err)
	}
	if m, ok := y.(map[string]any); ok && m["openapi"] != nil {
		openAPI(m)
	} else {
		y = schema(y)
	}
	// A JSON round trip gives the compiler numbers in the same form
	// (json.Number) as the instances it validates.
	js, err := json.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("spectest: %s: %w", file, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("spectest: %s: %w", file, err)
	}
	s.docs[u] = doc
	return doc, nil
}

// plain turns a decoded YAML value into JSON's data model: YAML allows
// non-string keys (an unquoted `200:` is an integer) and timestamps.
func plain(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			p, err := plain(e)
			if err != nil {
				return nil, err
			}
			v[k] = p
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			p, err := plain(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = p
		}
		return out, nil
	case []any:
		for i, e := range v {
			p, err := plain(e)
			if err != nil {
				return nil, err
			}
			v[i] = p
		}
		return v, nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	case nil, bool, string, int, int64, uint64, float64:
		return v, nil
	default:
		return nil, fmt.Errorf("unexpected YAML value %T", v)
	}
}

// openAPI rewrites the schemas inside an OpenAPI document: those of
// responses (inline or under components/responses) and components/schemas.
// Request schemas are never compiled here, so they are left alone.
func openAPI(doc map[string]any) {
	responses := func(rs any) {
		m, _ := rs.(map[string]any)
		for _, r := range m {
			resp, _ := r.(map[string]any)
			content, _ := resp["content"].(map[string]any)
			for _, mt := range content {
				media, _ := mt.(map[string]any)
				if media == nil {
					continue
				}
				delete(media, "example")
				delete(media, "examples")
				if sch, ok := media["schema"]; ok {
					media["schema"] = schema(sch)
				}
			}
		}
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, item := range paths {
		ops, _ := item.(map[string]any)
		for _, op := range ops {
			if o, ok := op.(map[string]any); ok {
				responses(o["responses"])
			}
		}
	}
	comps, _ := doc["components"].(map[string]any)
	responses(comps["responses"])
	if schemas, ok := comps["schemas"].(map[string]any); ok {
		for k, v := range schemas {
			schemas[k] = schema(v)
		}
	}
}

// schema rewrites one schema, and the schemas inside it, from OpenAPI's
// dialect to plain JSON Schema 2020-12:
//   - `nullable: true` (OpenAPI 3.0) becomes a "null" member of `type` (and
//     of `enum`, which would otherwise still refuse null);
//   - `x-…` extensions, `example` and `examples` are dropped: they are
//     annotations, and OpenAPI's `examples` is a map where 2020-12 wants an
//     array, which the compiler's metaschema check would refuse.
//
// Everything else (allOf, additionalProperties, patternProperties, type
// lists, $ref with sibling keywords) already means in 2020-12 what OpenAPI 3.1
// means by it, so the compiler handles it as is. It walks only schema
// positions, so a property that happens to be called "example" or "x-foo"
// inside `properties` is kept.
func schema(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for k := range m {
		if strings.HasPrefix(k, "x-") || k == "example" || k == "examples" {
			delete(m, k)
		}
	}
	if n, ok := m["nullable"].(bool); ok {
		delete(m, "nullable")
		if n {
			addNull(m)
		}
	}
	for k, sub := range m {
		switch k {
		case "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "additionalItems",
			"items", "contains", "propertyNames", "not", "if", "then", "else":
			if _, ok := sub.(map[string]any); ok {
				m[k] = schema(sub)
			}
		}
		switch k {
		case "properties", "patternProperties", "$defs", "definitions", "dependentSchemas":
			if subs, ok := sub.(map[string]any); ok {
				for name, v := range subs {
					subs[name] = schema(v)
				}
			}
		case "allOf", "anyOf", "oneOf", "prefixItems", "items":
			if subs, ok := sub.([]any); ok {
				for i, v := range subs {
					subs[i] = schema(v)
				}
			}
		}
	}
	return m
}

func addNull(m map[string]any) {
	switch t := m["type"].(type) {
	case string:
		if t != "null" {
			m["type"] = []any{t, "null"}
		}
	case []any:
		for _, e := range t {
			if e == "null" {
				return
			}
		}
		m["type"] = append(t, "null")
	}
	if enum, ok := m["enum"].([]any); ok {
		for _, e := range enum {
			if e == nil {
				return
			}
		}
		m["enum"] = append(enum, nil)
	}
}
