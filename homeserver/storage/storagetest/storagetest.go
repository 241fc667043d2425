// Package storagetest gives each test its own freshly migrated PostgreSQL
// database, quickly, against a real server.
//
// Each test binary runs one private cluster (package cluster), started the
// first time a test asks for a database, in a temporary directory (on
// /dev/shm when it is a roomy tmpfs, see baseDir), with durability off for
// speed. Each distinct migrations FS is applied once per
// binary to a template database; every test then gets a copy of that
// template (CREATE DATABASE … TEMPLATE, a file copy of a few megabytes),
// which is dropped when the test ends. Tests may run in parallel: their
// databases share nothing.
//
// A package using it calls Main from its TestMain, which stops the cluster
// and removes its directory once the tests are done:
//
//	func TestMain(m *testing.M) { storagetest.Main(m) }
//
//	func TestRooms(t *testing.T) {
//		t.Parallel()
//		db := storagetest.NewDB(t, storage.Migrations)
//		// db is a *pgxpool.Pool on an empty, fully migrated database.
//	}
//
// PostgreSQL's server binaries must be installed (`make test` installs them;
// see package cluster for where they are looked for). There is no fallback
// to a mock: a test that needs a database and finds none fails.
package storagetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"plaza/homeserver/storage/cluster"
	"plaza/homeserver/storage/migration"
)

// dirPrefix starts the name of every test cluster's temporary directory; the
// pid of the test binary follows, so that a later binary can tell a leftover
// (from a binary killed by -timeout, say) from a live one.
const dirPrefix = "plaza-storagetest-"

// harness is the test binary's one cluster and its templates. It is the
// package's only state, and it must be package state: tests of one binary
// share the cluster but have nothing else in common to carry it.
type harness struct {
	mu        sync.Mutex
	inMain    bool
	templates map[string]*template // by hash of the migrations FS

	startOnce sync.Once
	startErr  error
	dir       string
	cluster   *cluster.Cluster
	admin     *pgxpool.Pool
	fileCopy  bool // server supports CREATE DATABASE … STRATEGY FILE_COPY

	seq atomic.Uint64
}

type template struct {
	once sync.Once
	name string
	err  error
}

var h harness

// Main runs the package's tests (m.Run), then stops the cluster, if a test
// started one, and removes its files. It exits the process with m.Run's
// code, or 1 if the tests passed but the cleanup failed.
func Main(m *testing.M) {
	h.mu.Lock()
	h.inMain = true
	h.mu.Unlock()
	code := m.Run()
	if err := h.shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "storagetest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// NewDB returns a pool on a new database holding the schema of migrations
// (nil for an empty database). The pool is closed and the database dropped
// when the test ends.
func NewDB(t testing.TB, migrations fs.FS) *pgxpool.Pool {
	t.Helper()
	url := NewDBURL(t, migrations)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	// Registered after NewDBURL's drop, so it runs first.
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("storagetest: connecting to the test database: %v", err)
	}
	return pool
}

// NewDBURL is NewDB for code that opens its own connections, such as a
// server under test given a database URL: it returns the new database's
// connection URL. The database is dropped when the test ends, forcibly
// closing connections still open to it.
func NewDBURL(t testing.TB, migrations fs.FS) string {
	t.Helper()
	h.mu.Lock()
	inMain := h.inMain
	h.mu.Unlock()
	if !inMain {
		t.Fatal("storagetest: the package's TestMain must call storagetest.Main(m), which stops the test cluster: " +
			"func TestMain(m *testing.M) { storagetest.Main(m) }")
	}
	if err := h.start(t.Logf); err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tmpl, err := h.template(ctx, migrations, t.Logf)
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}

	name := dbName(h.seq.Add(1), t.Name())
	if err := h.createDB(ctx, name, tmpl); err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.dropDB(ctx, name); err != nil {
			t.Errorf("storagetest: %v", err)
		}
	})
	return h.cluster.ConnString(name)
}

func (h *harness) createDB(ctx context.Context, name, tmpl string) error {
	sql := "CREATE DATABASE " + ident(name) + " TEMPLATE " + ident(tmpl)
	if h.fileCopy {
		// PostgreSQL 15 made WAL_LOG the default, which writes the whole
		// template through the WAL. For databases this small the old file
		// copy is faster: on tmpfs, a median 10 ms against 17 ms one at a
		// time, and 30 ms against 50 ms four at a time.
		sql += " STRATEGY FILE_COPY"
	}
	if _, err := h.admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// dropDB drops a test's database, disconnecting whatever the test left
// connected to it.
func (h *harness) dropDB(ctx context.Context, name string) error {
	if _, err := h.admin.Exec(ctx, "DROP DATABASE "+ident(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	return nil
}

// start starts the binary's cluster, once; a failure is remembered so that
// every test reports it rather than each trying again. logf is the log of
// the test that happens to pay for the start.
func (h *harness) start(logf func(string, ...any)) error {
	h.startOnce.Do(func() {
		h.startErr = h.doStart(logf)
		if h.startErr != nil && h.dir != "" {
			os.RemoveAll(h.dir)
		}
	})
	return h.startErr
}

func (h *harness) doStart(logf func(string, ...any)) error {
	removeLeftovers()
	dir, err := os.MkdirTemp(baseDir(), dirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return err
	}
	h.dir = dir
	// The cluster keeps its Logf for Stop, which runs after every test has
	// ended, when logging to one would panic: forward to the starting test
	// only while it is starting.
	var logMu sync.Mutex
	defer func() {
		logMu.Lock()
		logf = nil
		logMu.Unlock()
	}()
	startLogf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		if logf != nil {
			logf(format, args...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{
		Dir:    dir,
		NoSync: true,
		Settings: map[string]string{
			// Test databases live for seconds: vacuuming them is wasted
			// work on a small machine.
			"autovacuum": "off",
			// The WAL may sit in RAM (baseDir): checkpoint early rather than
			// let it grow to the server default of 1 GB.
			"max_wal_size": "256MB",
		},
		Logf: startLogf,
	})
	if err != nil {
		return err
	}
	h.cluster = c
	cfg, err := pgxpool.ParseConfig(c.ConnString("postgres"))
	if err != nil {
		return err
	}
	cfg.MaxConns = 4
	h.admin, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	var version int
	if err := h.admin.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return err
	}
	if version < 130000 {
		return fmt.Errorf("PostgreSQL %d is too old: DROP DATABASE … WITH (FORCE) needs 13 or newer", version/10000)
	}
	h.fileCopy = version >= 150000
	h.templates = map[string]*template{}
	return nil
}

func (h *harness) shutdown() error {
	if h.cluster == nil {
		return nil
	}
	if h.admin != nil {
		h.admin.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return errors.Join(h.cluster.Stop(ctx), os.RemoveAll(h.dir))
}

// template returns the name of the template database for migrations,
// building it the first time.
func (h *harness) template(ctx context.Context, migrations fs.FS, logf func(string, ...any)) (string, error) {
	if migrations == nil {
		return "template1", nil
	}
	key, err := hashFS(migrations)
	if err != nil {
		return "", fmt.Errorf("reading migrations: %w", err)
	}
	h.mu.Lock()
	tp := h.templates[key]
	if tp == nil {
		tp = &template{name: "tmpl_" + key}
		h.templates[key] = tp
	}
	h.mu.Unlock()
	tp.once.Do(func() { tp.err = h.buildTemplate(ctx, tp.name, migrations, logf) })
	return tp.name, tp.err
}

func (h *harness) buildTemplate(ctx context.Context, name string, migrations fs.FS, logf func(string, ...any)) error {
	start := time.Now()
	if _, err := h.admin.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
		return fmt.Errorf("creating template database: %w", err)
	}
	conn, err := pgx.Connect(ctx, h.cluster.ConnString(name))
	if err != nil {
		return fmt.Errorf("connecting to template database: %w", err)
	}
	err = migration.Apply(ctx, conn, migrations, nil)
	// Closed before the ALTER: a template with a session open on it cannot
	// be copied.
	if closeErr := conn.Close(ctx); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("migrating template database: %w", err)
	}
	// No connections from now on, so that it can always be copied.
	if _, err := h.admin.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("freezing template database: %w", err)
	}
	logf("storagetest: migrated template database %s in %s", name, time.Since(start).Round(time.Millisecond))
	return nil
}

// hashFS identifies a migrations FS by its contents, so that two FS values
// holding the same files share a template and an edited migration gets a new
// one.
func hashFS(fsys fs.FS) (string, error) {
	sum := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := fsys.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(sum, "%q\n", path)
		n, err := io.Copy(sum, f)
		fmt.Fprintf(sum, "\n%d\n", n)
		return err
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum.Sum(nil)[:8]), nil
}

// dbName makes a database name from a sequence number, unique in the binary,
// and as much of the test's name as fits, to recognise it in server logs.
func dbName(seq uint64, testName string) string {
	var b strings.Builder
	b.WriteString("t")
	b.WriteString(strconv.FormatUint(seq, 10))
	b.WriteByte('_')
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 63 { // PostgreSQL truncates identifiers past 63 bytes
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// shmDir is a RAM-backed file system on most Linux systems.
const shmDir = "/dev/shm"

// baseDir picks where test clusters live: /dev/shm when it is a tmpfs with
// room to spare, else the temporary directory. Every test database is a copy
// of a few hundred files, created and deleted again within seconds; on ext4
// that churn makes inode allocation slow (the kernel scans for recently
// deleted inodes), and a copy that takes 10 ms on tmpfs took 100-200 ms in
// /tmp on the CI machine.
func baseDir() string {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if err := syscall.Statfs(shmDir, &st); err == nil && st.Type == tmpfsMagic &&
		st.Bavail*uint64(st.Bsize) >= 2<<30 && syscall.Access(shmDir, 2 /* W_OK */) == nil {
		return shmDir
	}
	return os.TempDir()
}

// removeLeftovers deletes the directories of earlier test binaries that died
// without running Main's cleanup (a -timeout panic, a SIGKILL). Their
// servers died with them (see package cluster), but their files, some 40 MB
// each, would otherwise accumulate.
func removeLeftovers() {
	for _, base := range []string{shmDir, os.TempDir()} {
		matches, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
		for _, dir := range matches {
			pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), dirPrefix), "-")
			pid, err := strconv.Atoi(pidStr)
			if !ok || err != nil || pid <= 0 {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				os.RemoveAll(dir)
			}
		}
	}
}
