package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testDir returns a fresh directory for a cluster. Not t.TempDir(): its
// parents are mode 0700, which the server's account cannot enter when the
// tests run as root (see checkReachable).
func testDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "plaza-cluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, "pg")
}

func start(t *testing.T, dir string) *Cluster {
	t.Helper()
	// NoSync for speed, but with synchronous_commit back on: a crash of the
	// server process (not of the machine) must then lose nothing, which
	// TestRestartAfterCrash relies on.
	c, err := Start(context.Background(), Options{
		Dir:      dir,
		NoSync:   true,
		Settings: map[string]string{"synchronous_commit": "on"},
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c
}

func stop(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func exec1(t *testing.T, c *Cluster, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func query(t *testing.T, c *Cluster, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartConnectStop(t *testing.T) {
	t.Parallel()
	c := start(t, testDir(t))

	if got := query(t, c, "SELECT current_setting('listen_addresses')"); got != "" {
		t.Errorf("listen_addresses = %q, want empty (unix socket only)", got)
	}
	if got := query(t, c, "SELECT current_setting('server_encoding')"); got != "UTF8" {
		t.Errorf("server_encoding = %q", got)
	}
	if got := query(t, c, "SELECT datcollate FROM pg_database WHERE datname = 'postgres'"); got != "C" {
		t.Errorf("collation = %q, want C", got)
	}
	if got := query(t, c, "SELECT current_setting('fsync')"); got != "off" {
		t.Errorf("fsync = %q with NoSync", got)
	}
	if got := query(t, c, "SELECT current_setting('server_version_num')"); !strings.HasPrefix(got, c.Version()) {
		t.Errorf("server_version_num = %q, Version() = %q", got, c.Version())
	}
	// Unix socket paths are limited to ~107 bytes.
	if n := len(filepath.Join(c.SocketDir(), ".s.PGSQL.5432")); n > 100 {
		t.Errorf("socket path is %d bytes long", n)
	}
	fi, err := os.Stat(c.SocketDir())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode = %v, want 0700", fi.Mode().Perm())
	}

	stop(t, c)
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if _, err := os.Stat(c.SocketDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory left behind: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, c.ConnString("postgres")); err == nil {
		conn.Close(ctx)
		t.Error("connected after Stop")
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	c := start(t, dir)
	exec1(t, c, "CREATE TABLE kept AS SELECT 'still here'::text AS v")
	stop(t, c)

	c = start(t, dir)
	if got := query(t, c, "SELECT v FROM kept"); got != "still here" {
		t.Errorf("after restart: %q", got)
	}
}

// A crash (SIGKILL of the server) leaves postmaster.pid and the socket lock
// file behind; the next Start must recover.
func TestRestartAfterCrash(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	c := start(t, dir)
	exec1(t, c, "CREATE TABLE survived AS SELECT 'yes'::text AS v")
	if err := c.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("expected a stale postmaster.pid after the crash: %v", err)
	}
	if err := c.Stop(context.Background()); err == nil {
		t.Error("Stop after a crash reported no error")
	}
	waitBackendsGone(t, dir)

	c = start(t, dir)
	if got := query(t, c, "SELECT v FROM survived"); got != "yes" {
		t.Errorf("after crash recovery: %q", got)
	}
}

// waitBackendsGone waits for the killed server's children, which exit once
// they notice their postmaster is gone, so that they release the old shared
// memory.
func waitBackendsGone(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		busy := false
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			pid, _ := strconv.Atoi(filepath.Base(p))
			if alive, ours := processState(pid, dir); alive && ours {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the crashed server's processes did not exit")
}

// A postmaster.pid naming a pid that is now an unrelated live process (common
// after a container restart) or a dead one must not stop the server.
func TestStalePIDFile(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	c := start(t, dir)
	stop(t, c)

	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		pid  int
	}{
		{"live unrelated process", sleeper.Process.Pid},
		{"dead process", dead.Process.Pid},
	} {
		// Same shape as a real one: pid, data directory, start time, port…
		content := fmt.Sprintf("%d\n%s\n1700000000\n5432\n/tmp\n\n  5432001    131072\nready   \n", tc.pid, dir)
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c := start(t, dir)
		query(t, c, "SELECT 'ok'")
		stop(t, c)
	}
}

func TestSecondStartOnSameDirFails(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	c := start(t, dir)
	_, err := Start(context.Background(), Options{Dir: dir, NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Start: %v, want an 'already running' error", err)
	}
	// The first server is unharmed.
	query(t, c, "SELECT 'ok'")
}

// A first start interrupted during initdb leaves nothing that stops the next
// one.
func TestInterruptedInitdb(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if c, err := Start(ctx, Options{Dir: dir, NoSync: true}); err == nil {
		c.Stop(context.Background())
		t.Skip("initdb finished within the deadline; nothing was interrupted")
	}
	c := start(t, dir)
	query(t, c, "SELECT 'ok'")
}

// A server that will not start is reported with its own words.
func TestStartFailureQuotesServerLog(t *testing.T) {
	t.Parallel()
	_, err := Start(context.Background(), Options{
		Dir:      testDir(t),
		NoSync:   true,
		Settings: map[string]string{"shared_buffers": "lots"},
	})
	if err == nil || !strings.Contains(err.Error(), "shared_buffers") || !strings.Contains(err.Error(), "last lines of") {
		t.Fatalf("Start with a bad setting: %v, want the server's complaint about shared_buffers", err)
	}
}

func TestRefusesNonEmptyNonCluster(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Start: %v, want a 'not empty' error", err)
	}
}

// When run as root the server runs as another account, which must be able to
// reach the cluster directory; Start says which directory is in the way.
func TestUnreachableDirAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only meaningful as root")
	}
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pg") // t.TempDir's parents are 0700
	_, err := Start(context.Background(), Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "chmod o+x") {
		t.Fatalf("Start: %v, want an error suggesting chmod o+x", err)
	}
}

func TestBadBinDir(t *testing.T) {
	t.Setenv("PLAZA_PG_BIN", t.TempDir())
	_, err := Start(context.Background(), Options{Dir: filepath.Join(t.TempDir(), "pg")})
	if err == nil || !strings.Contains(err.Error(), "PLAZA_PG_BIN") {
		t.Fatalf("Start: %v, want an error about PLAZA_PG_BIN", err)
	}
}

func TestParseMajor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15"},
		{"postgres (PostgreSQL) 17.2\n", "17"},
		{"postgres (PostgreSQL) 18beta1\n", "18"},
		{"postgres (PostgreSQL) 9.6.24\n", "9.6"},
	} {
		got, err := parseMajor(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseMajor(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := parseMajor("something else"); err == nil {
		t.Error("parseMajor accepted garbage")
	}
}

// helperEnv makes the test binary act as a Plaza that starts a cluster,
// prints the server's pid, and waits to be killed.
const helperEnv = "PLAZA_CLUSTER_TEST_HELPER_DIR"

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper for TestServerDiesWithParent")
	}
	c, err := Start(context.Background(), Options{Dir: dir, NoSync: true})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// Churn through OS threads: if the parent-death signal were tied to
	// whichever thread happened to fork postgres, this would fire it.
	for range 50 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Exiting while locked makes the runtime end this OS thread.
			runtime.LockOSThread()
		}()
		<-done
	}
	fmt.Printf("pid %d\n", c.proc.Pid)
	time.Sleep(time.Minute)
	os.Exit(2)
}

// The server must not outlive a Plaza that was killed without calling Stop.
func TestServerDiesWithParent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	t.Parallel()
	dir := testDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "pid %d", &pid); err == nil {
			break
		}
		t.Log(sc.Text())
	}
	if pid == 0 {
		t.Fatal("helper did not report a server pid")
	}
	// The server survived the helper's thread churn.
	if alive, _ := processState(pid, dir); !alive {
		t.Fatal("server died while its parent was still alive")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if alive, _ := processState(pid, dir); !alive {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatal("server outlived its parent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It went down with a fast (clean) shutdown, so the next start needs no
	// recovery and finds no stale pid file.
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after parent death: %v", err)
	}
}

// BenchmarkStart measures a cold start (initdb, then start until the server
// accepts connections) and a restart of an existing cluster. Stopping is
// not timed.
func BenchmarkStart(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, dir string) {
		c, err := Start(ctx, Options{Dir: dir, NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := benchDir(b)
			b.StartTimer()
			run(b, dir)
		}
	})
	b.Run("existing", func(b *testing.B) {
		dir := benchDir(b)
		run(b, dir)
		for b.Loop() {
			run(b, dir)
		}
	})
}

func benchDir(b *testing.B) string {
	parent, err := os.MkdirTemp("", "plaza-cluster-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(parent, "pg")
}
