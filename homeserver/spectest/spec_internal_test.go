package spectest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestEveryResponseSchemaCompiles loads every response schema of every
// operation in the spec, so that an OpenAPI construct the loader does not
// understand shows up here rather than as a confusing e2e failure.
func TestEveryResponseSchemaCompiles(t *testing.T) {
	s := ForTest(t)
	if len(s.ops) < 100 {
		t.Fatalf("indexed only %d operations; the Client-Server API has well over 100", len(s.ops))
	}
	compiled := 0
	for key, op := range s.ops {
		method, path, _ := strings.Cut(key, " ")
		rs, err := lookup(s.docs[op.fileURL], op.responses)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		for st := range rs.(map[string]any) {
			code, err := strconv.Atoi(st)
			if err != nil {
				t.Errorf("%s: response key %q is not a status code", key, st)
				continue
			}
			loc, err := s.responseSchema(method, path, code)
			if errors.Is(err, ErrNoSchema) {
				continue
			}
			if err != nil {
				t.Errorf("%s %d: %v", key, code, err)
				continue
			}
			if _, err := s.compile(loc); err != nil {
				t.Errorf("%s %d: %v", key, code, err)
			}
			compiled++
		}
	}
	if compiled < 300 {
		t.Errorf("compiled only %d response schemas", compiled)
	}
}

// TestSpecExamplesConform validates every response example the spec gives
// against the schema it illustrates: a few hundred known-good bodies, which
// a validator that misreads the spec's dialect would reject.
func TestSpecExamplesConform(t *testing.T) {
	s := ForTest(t)
	files, err := filepath.Glob(filepath.Join(s.dataDir, "api", "client-server", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		doc := readYAML(t, f)
		root := doc.(map[string]any)
		base, err := serverBase(root)
		if err != nil {
			t.Fatal(err)
		}
		paths, _ := root["paths"].(map[string]any)
		for _, p := range sortedKeys(paths) {
			for _, m := range sortedKeys(paths[p].(map[string]any)) {
				op, ok := paths[p].(map[string]any)[m].(map[string]any)
				if !ok {
					continue
				}
				responses, _ := op["responses"].(map[string]any)
				for _, st := range sortedKeys(responses) {
					resp := deref(t, doc, responses[st])
					content, _ := resp.(map[string]any)["content"].(map[string]any)
					media, _ := content["application/json"].(map[string]any)
					examples, _ := media["examples"].(map[string]any)
					for _, name := range sortedKeys(examples) {
						ex := deref(t, doc, examples[name]).(map[string]any)
						body, err := json.Marshal(resolveExample(t, ex["value"], filepath.Dir(f)))
						if err != nil {
							t.Fatal(err)
						}
						code, _ := strconv.Atoi(st)
						if err := s.Validate(strings.ToUpper(m), base+p, code, body); err != nil {
							t.Errorf("%s example %q: %v", filepath.Base(f), name, err)
						}
						checked++
					}
				}
			}
		}
	}
	if checked < 200 {
		t.Errorf("checked only %d examples", checked)
	}
}

func readYAML(t *testing.T, file string) any {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	y, err = plain(y)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return y
}

// deref follows a local "#/components/…" $ref of a response or example.
func deref(t *testing.T, doc, v any) any {
	t.Helper()
	m, _ := v.(map[string]any)
	ref, ok := m["$ref"].(string)
	if !ok || !strings.HasPrefix(ref, "#/") {
		return v
	}
	target, err := lookup(doc, ref[1:])
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// resolveExample expands the spec's example $refs, which (unlike schema
// $refs) name a file whose object the sibling keys then extend, e.g.
// {"$ref": "core/room_event.json", "type": "m.room.message", …}.
func resolveExample(t *testing.T, v any, dir string) any {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		if ref, ok := v["$ref"].(string); ok {
			file := filepath.Join(dir, filepath.FromSlash(ref))
			for k, e := range resolveExample(t, readYAML(t, file), filepath.Dir(file)).(map[string]any) {
				out[k] = e
			}
		}
		for k, e := range v {
			if k != "$ref" {
				out[k] = resolveExample(t, e, dir)
			}
		}
		return out
	case []any:
		for i, e := range v {
			v[i] = resolveExample(t, e, dir)
		}
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
