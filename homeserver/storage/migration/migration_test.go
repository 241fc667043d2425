package migration_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"plaza/homeserver/storage/migration"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

var (
	first  = "CREATE TABLE rooms (id text PRIMARY KEY);"
	second = "ALTER TABLE rooms ADD COLUMN name text;\nCREATE TABLE events (id text PRIMARY KEY, room text REFERENCES rooms);"
)

func migrations(files ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i, sql := range files {
		fsys[fmt.Sprintf("%03d_step.sql", i+1)] = &fstest.MapFile{Data: []byte(sql)}
	}
	return fsys
}

// connect gives the test an empty database and a connection to it.
func connect(t *testing.T) (*pgx.Conn, *pgxpool.Pool) {
	t.Helper()
	pool := storagetest.NewDB(t, nil)
	conn, err := pgx.ConnectConfig(context.Background(), pool.Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, pool
}

func version(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var v int
	if err := pool.QueryRow(context.Background(), "SELECT version FROM "+migration.VersionTable).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func TestApplyFreshThenIdempotent(t *testing.T) {
	t.Parallel()
	conn, pool := connect(t)
	ctx := context.Background()

	var log logBuffer
	if err := migration.Apply(ctx, conn, migrations(first, second), log.logf); err != nil {
		t.Fatal(err)
	}
	if v := version(t, pool); v != 2 {
		t.Errorf("version %d, want 2", v)
	}
	if !tableExists(t, pool, "events") {
		t.Error("events table missing")
	}
	for _, want := range []string{"applying 001_step.sql", "applying 002_step.sql", "version 2"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress log lacks %q:\n%s", want, log.String())
		}
	}

	log = logBuffer{}
	if err := migration.Apply(ctx, conn, migrations(first, second), log.logf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "applying") || !strings.Contains(log.String(), "up to date") {
		t.Errorf("second Apply should do nothing, logged:\n%s", log.String())
	}
}

func TestApplyUpgradesStepByStep(t *testing.T) {
	t.Parallel()
	conn, pool := connect(t)
	ctx := context.Background()
	if err := migration.Apply(ctx, conn, migrations(first), nil); err != nil {
		t.Fatal(err)
	}
	if v := version(t, pool); v != 1 || tableExists(t, pool, "events") {
		t.Fatalf("after first: version %d", v)
	}
	if err := migration.Apply(ctx, conn, migrations(first, second), nil); err != nil {
		t.Fatal(err)
	}
	if v := version(t, pool); v != 2 || !tableExists(t, pool, "events") {
		t.Fatalf("after second: version %d", v)
	}
}

// An older binary must not touch a database a newer one migrated.
func TestApplyRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	conn, pool := connect(t)
	ctx := context.Background()
	if err := migration.Apply(ctx, conn, migrations(first, second), nil); err != nil {
		t.Fatal(err)
	}
	err := migration.Apply(ctx, conn, migrations(first), nil)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Apply with fewer migrations: %v, want a 'newer' error", err)
	}
	if v := version(t, pool); v != 2 || !tableExists(t, pool, "events") {
		t.Errorf("schema changed by a refused Apply: version %d", v)
	}
}

// A failing migration leaves no trace: its transaction rolls back and the
// version stays where it was. The error names the migration and the line.
func TestFailedMigrationRollsBack(t *testing.T) {
	t.Parallel()
	conn, pool := connect(t)
	ctx := context.Background()
	bad := "CREATE TABLE half (id int);\nCREATE TABLE broken (id int,,);"
	err := migration.Apply(ctx, conn, migrations(first, bad), nil)
	if err == nil {
		t.Fatal("Apply succeeded with a syntax error")
	}
	for _, want := range []string{"002_step.sql", "line 2", "broken"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if v := version(t, pool); v != 1 {
		t.Errorf("version %d, want 1", v)
	}
	if tableExists(t, pool, "half") {
		t.Error("the failed migration's first statement was not rolled back")
	}
}

func TestApplyNeedsMigrations(t *testing.T) {
	t.Parallel()
	conn, _ := connect(t)
	// What an fs.Sub of the wrong directory looks like.
	err := migration.Apply(context.Background(), conn, fstest.MapFS{"migrations/001_x.sql": {Data: []byte(first)}}, nil)
	if err == nil || !strings.Contains(err.Error(), "no NNN_name.sql files") {
		t.Fatalf("Apply on an FS without migrations at its root: %v", err)
	}
}

// Several Plaza processes starting at once all succeed, and the migrations
// run once.
func TestConcurrentApplyPool(t *testing.T) {
	t.Parallel()
	_, pool := connect(t)
	fsys := migrations(first, second, "INSERT INTO rooms (id) VALUES ('!once')")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = migration.ApplyPool(context.Background(), pool, fsys, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ApplyPool #%d: %v", i, err)
		}
	}
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM rooms").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("third migration ran %d times", n)
	}
}

// A migration numbered below one already applied is refused by name, not
// silently skipped (tern alone only counts).
func TestMigrationAddedBelowAppliedOnesIsRefused(t *testing.T) {
	conn, pool := connect(t)
	ctx := context.Background()
	applied := fstest.MapFS{
		"001_a.sql": {Data: []byte("CREATE TABLE a (x int);")},
		"030_c.sql": {Data: []byte("CREATE TABLE c (x int);")},
	}
	if err := migration.Apply(ctx, conn, applied, nil); err != nil {
		t.Fatal(err)
	}
	later := fstest.MapFS{
		"001_a.sql": applied["001_a.sql"],
		"020_b.sql": {Data: []byte("CREATE TABLE b (x int);")},
		"030_c.sql": applied["030_c.sql"],
	}
	err := migration.Apply(ctx, conn, later, nil)
	if err == nil || !strings.Contains(err.Error(), "020_b.sql") {
		t.Fatalf("a migration slipped in below applied ones: %v", err)
	}
	if tableExists(t, pool, "b") {
		t.Fatal("the misnumbered migration ran")
	}
	// Numbered above, it runs.
	later = fstest.MapFS{"001_a.sql": applied["001_a.sql"], "030_c.sql": applied["030_c.sql"], "040_b.sql": later["020_b.sql"]}
	if err := migration.Apply(ctx, conn, later, nil); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, pool, "b") || version(t, pool) != 3 {
		t.Fatal("a well-numbered migration did not run")
	}
}
