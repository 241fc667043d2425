package migration

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

func TestSequentialRenumbersGaps(t *testing.T) {
	in := fstest.MapFS{
		"001_core.sql":     {Data: []byte("a")},
		"030_receipts.sql": {Data: []byte("c")},
		"010_media.sql":    {Data: []byte("b")},
		"README":           {Data: []byte("ignored")},
	}
	out, names, err := sequential(in)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[001_core.sql 010_media.sql 030_receipts.sql]" {
		t.Fatalf("names %v", names)
	}
	want := map[string]string{"001_core.sql": "a", "002_media.sql": "b", "003_receipts.sql": "c"}
	entries, _ := fs.ReadDir(out, ".")
	if len(entries) != len(want) {
		t.Fatalf("got %d files, want %d", len(entries), len(want))
	}
	for name, data := range want {
		got, err := fs.ReadFile(out, name)
		if err != nil || string(got) != data {
			t.Fatalf("%s = %q, %v; want %q", name, got, err, data)
		}
	}
	dup := fstest.MapFS{"002_a.sql": {Data: []byte("x")}, "002_b.sql": {Data: []byte("y")}}
	if _, _, err := sequential(dup); err == nil || !strings.Contains(err.Error(), "numbered 2") {
		t.Fatalf("duplicate numbers: %v", err)
	}
}
