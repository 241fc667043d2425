package storagetest

import (
	"context"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { Main(m) }

func testMigrations(t testing.TB) fs.FS {
	t.Helper()
	fsys, err := fs.Sub(os.DirFS("testdata"), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func queryString(t testing.TB, db *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestNewDBIsMigrated(t *testing.T) {
	t.Parallel()
	db := NewDB(t, testMigrations(t))
	if got := queryString(t, db, "SELECT version::text FROM schema_version"); got != "2" {
		t.Errorf("schema version %s, want 2", got)
	}
	if got := queryString(t, db, "SELECT count(*)::text FROM items"); got != "0" {
		t.Errorf("items holds %s rows, want an empty table", got)
	}
}

func TestNilMigrationsGivesEmptyDB(t *testing.T) {
	t.Parallel()
	db := NewDB(t, nil)
	if got := queryString(t, db, "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public'"); got != "0" {
		t.Errorf("%s tables in public, want 0", got)
	}
}

// Parallel tests get databases of their own: what one writes, no other sees.
func TestParallelTestsAreIsolated(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		names []string
	)
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				db := NewDB(t, testMigrations(t))
				ctx := context.Background()
				for range i + 1 {
					if _, err := db.Exec(ctx, "INSERT INTO items (body) VALUES ($1)", t.Name()); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(50 * time.Millisecond) // overlap with the others' writes
				if got, want := queryString(t, db, "SELECT count(*)::text FROM items"), strconv.Itoa(i+1); got != want {
					t.Errorf("%s rows, want %s: another test's rows leaked in", got, want)
				}
				mu.Lock()
				names = append(names, queryString(t, db, "SELECT current_database()"))
				mu.Unlock()
			})
		}
	})
	sort.Strings(names)
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("databases shared between tests: %v", names)
	}
}

// The migrations run once per binary; every database is a copy of the
// result. The stamp migration draws a random value, so copies agree on it,
// and an FS with the same files (another value) maps to the same template.
func TestTemplateIsReused(t *testing.T) {
	t.Parallel()
	a := NewDB(t, testMigrations(t))
	b := NewDB(t, testMigrations(t))
	files := fstest.MapFS{}
	for _, name := range []string{"001_items.sql", "002_stamp.sql"} {
		data, err := os.ReadFile("testdata/migrations/" + name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = &fstest.MapFile{Data: data}
	}
	c := NewDB(t, files)

	stampA := queryString(t, a, "SELECT value FROM stamp")
	for _, db := range []*pgxpool.Pool{b, c} {
		if got := queryString(t, db, "SELECT value FROM stamp"); got != stampA {
			t.Errorf("stamp %s, want %s: migrations ran again instead of copying the template", got, stampA)
		}
	}
}

// A different set of migrations gets a template of its own.
func TestDifferentMigrationsGetTheirOwnTemplate(t *testing.T) {
	t.Parallel()
	files := fstest.MapFS{
		"001_other.sql": {Data: []byte("CREATE TABLE other (x int);")},
	}
	db := NewDB(t, files)
	if got := queryString(t, db, "SELECT count(*)::text FROM pg_tables WHERE tablename IN ('other', 'items')"); got != "1" {
		t.Errorf("found %s of tables other/items, want only other", got)
	}
	base := NewDB(t, testMigrations(t))
	if got := queryString(t, base, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'other'"); got != "0" {
		t.Error("table from another migrations FS leaked into the template")
	}
}

// The test's database is gone once the test is, even if the test left a
// connection open.
func TestDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		url := NewDBURL(t, nil)
		// A connection the test forgets to close.
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	var n int
	if err := h.admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestBrokenMigrationsFailTheTest(t *testing.T) {
	t.Parallel()
	files := fstest.MapFS{"001_bad.sql": {Data: []byte("CREATE TABLE oops (")}}
	ctx := context.Background()
	// Run through the internals: a failing NewDB would fail this test.
	if err := h.start(t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := h.template(ctx, files, t.Logf); err == nil {
		t.Fatal("template from broken migrations: no error")
	}
	// Asking again reports the same failure without retrying.
	if _, err := h.template(ctx, files, t.Logf); err == nil {
		t.Fatal("second attempt: no error")
	}
}

func TestDBName(t *testing.T) {
	for _, tc := range []struct {
		seq  uint64
		name string
		want string
	}{
		{1, "TestFoo", "t1_testfoo"},
		{12, "TestFoo/sub-case_2", "t12_testfoo_sub_case_2"},
		{3, "TestÜnicode", "t3_test_nicode"},
	} {
		if got := dbName(tc.seq, tc.name); got != tc.want {
			t.Errorf("dbName(%d, %q) = %q, want %q", tc.seq, tc.name, got, tc.want)
		}
	}
	long := dbName(999999, "TestAVeryLongNameThatGoesOnAndOnAndOnBeyondWhatPostgreSQLAllowsForIdentifiers")
	if len(long) > 63 {
		t.Errorf("dbName gave %d bytes, PostgreSQL keeps 63", len(long))
	}
}

// BenchmarkCreateDB measures what a test pays for its database: the copy of
// a migrated template (the drop, at cleanup, is timed separately). It
// reports the median, which is what a typical test sees.
func BenchmarkCreateDB(b *testing.B) {
	if err := h.start(b.Logf); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	tmpl, err := h.template(ctx, testMigrations(b), b.Logf)
	if err != nil {
		b.Fatal(err)
	}
	var creates, drops []time.Duration
	for i := 0; b.Loop(); i++ {
		name := dbName(h.seq.Add(1), "bench")
		t0 := time.Now()
		if err := h.createDB(ctx, name, tmpl); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := h.dropDB(ctx, name); err != nil {
			b.Fatal(err)
		}
		creates = append(creates, t1.Sub(t0))
		drops = append(drops, time.Since(t1))
	}
	b.ReportMetric(float64(median(creates).Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(median(drops).Microseconds())/1000, "drop-p50-ms")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
