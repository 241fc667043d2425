// Package cluster owns Plaza's private PostgreSQL cluster: the one `plaza
// serve` starts when no database URL is configured, and the one each test
// binary starts through storagetest.
//
// Start finds the system's PostgreSQL server binaries (see Options.BinDir for
// the search order), creates the cluster with initdb the first time, starts
// postgres listening only on a unix socket in a private directory under /tmp,
// and waits until it accepts connections. Stop shuts it down the way
// `pg_ctl stop -m fast` does. Nothing listens on TCP, and authentication is
// "trust" because only the socket directory's owner (and root) can reach the
// socket.
//
// # Running as root
//
// initdb and postgres refuse to run as root. When Plaza's effective uid is 0
// they run as an unprivileged account instead: the owner of an existing
// cluster directory if that is not root, else the system user "postgres" if
// it exists (Debian's postgresql package creates it), else a system user
// "plaza", which Start creates with useradd. Start makes the cluster
// directory and the socket directory that account's own, but it never loosens
// the permissions of directories above the cluster directory: if one of them
// is not searchable by that account (a data directory under /root, or under a
// t.TempDir(), whose parents are mode 0700), Start fails with a message naming
// the directory and the fix. Changing the mode of someone's home directory
// behind their back is worse than a clear error.
//
// # Lifetime
//
// postgres runs as Plaza's direct child (not daemonised by pg_ctl), in its own
// process group, so a Ctrl-C in a terminal reaches Plaza, which calls Stop,
// rather than postgres directly. Stop is the normal way down. To make sure
// the server does not outlive a Plaza that crashed or was killed with SIGKILL,
// the child also gets a parent-death signal (SIGINT, PostgreSQL's fast
// shutdown). Linux sends that signal when the *thread* that forked the child
// exits, not the process, and the Go runtime may retire an OS thread whenever
// a locked goroutine exits. So postgres is forked from a goroutine that locks
// its OS thread and stays on it, waiting for postgres, until postgres exits:
// that thread, and with it the parent-death signal, lives exactly as long as
// the server or the whole Plaza process, whichever ends first. The cost is one
// OS thread per cluster.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the name of the cluster's superuser role, created by initdb.
const Superuser = "postgres"

// port only names the socket file (.s.PGSQL.<port>) inside the private socket
// directory; nothing listens on TCP, so it cannot clash with another server.
const port = 5432

// logName is the server's log file inside the cluster directory.
const logName = "server.log"

// Options says where the cluster lives and how to run it.
type Options struct {
	// Dir is the cluster's data directory, for example <datadir>/postgres.
	// It is created (with its parents) if missing, and initdb runs in it if it
	// holds no cluster yet. Required.
	Dir string

	// Logf receives progress messages (initdb, start, stop). Optional.
	Logf func(format string, args ...any)

	// NoSync trades durability for speed: initdb --no-sync, and fsync,
	// synchronous_commit and full_page_writes off. For tests and throwaway
	// demos only: a power failure can corrupt such a cluster.
	NoSync bool

	// BinDir is the directory holding initdb and postgres. If empty, Start
	// uses $PLAZA_PG_BIN; else, for an existing cluster, the installed
	// /usr/lib/postgresql/<its version>/bin; else `pg_config --bindir`; else
	// the newest /usr/lib/postgresql/<version>/bin; else initdb from $PATH.
	BinDir string

	// Settings are extra server settings (postgres -c name=value); they
	// override Start's defaults.
	Settings map[string]string

	// StartTimeout bounds the wait for the server to accept connections after
	// it was launched. Crash recovery happens in that window, hence the
	// generous default of 2 minutes.
	StartTimeout time.Duration
}

// Cluster is a running PostgreSQL server started by Start.
type Cluster struct {
	dir     string
	binDir  string
	sockDir string
	version string
	logf    func(format string, args ...any)

	proc    *os.Process
	done    chan struct{} // closed once postgres has exited and been reaped
	exitErr error         // postgres's exit status; read only after done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts the cluster in opts.Dir, creating it first if needed, and
// returns once it accepts connections. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	existing, err := clusterVersion(dir)
	if err != nil {
		return nil, err
	}
	binDir, err := findBinDir(opts.BinDir, existing)
	if err != nil {
		return nil, err
	}
	version, err := serverVersion(binDir)
	if err != nil {
		return nil, err
	}
	if existing != "" && existing != version {
		return nil, fmt.Errorf("cluster: %s holds a PostgreSQL %s cluster but the binaries in %s are PostgreSQL %s: "+
			"install PostgreSQL %s (apt-get install postgresql-%s) or point PLAZA_PG_BIN at its bin directory, "+
			"or upgrade the cluster with pg_upgrade", dir, existing, binDir, version, existing, existing)
	}

	acct, err := serverAccount(dir, existing != "", logf)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, existing != "", acct); err != nil {
		return nil, err
	}
	if existing == "" {
		if err := initdb(ctx, binDir, dir, opts.NoSync, acct, logf); err != nil {
			return nil, err
		}
	}
	if err := removeStalePID(dir, logf); err != nil {
		return nil, err
	}
	sockDir, err := prepareSocketDir(dir, acct)
	if err != nil {
		return nil, err
	}

	c := &Cluster{
		dir:     dir,
		binDir:  binDir,
		sockDir: sockDir,
		version: version,
		logf:    logf,
		done:    make(chan struct{}),
	}
	launched := time.Now()
	logOffset, err := c.launch(opts, acct)
	if err != nil {
		return nil, err
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if err := c.waitReady(ctx, timeout, logOffset); err != nil {
		// Best effort: the server may be half up; do not leave it behind.
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(stopCtx)
		return nil, err
	}
	logf("postgres: PostgreSQL %s accepting connections after %s (data %s, socket %s)",
		version, time.Since(launched).Round(time.Millisecond), dir, sockDir)
	return c, nil
}

// ConnString returns a connection URL for database dbname as the superuser,
// through the cluster's unix socket. pgx, psql and libpq all accept it.
func (c *Cluster) ConnString(dbname string) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.User(Superuser),
		Path:   "/" + dbname,
		// Unescaped for legibility: the socket directory is made of
		// characters that need no escaping in a query.
		RawQuery: "host=" + c.sockDir + "&port=" + strconv.Itoa(port) + "&sslmode=disable",
	}
	return u.String()
}

// SocketDir returns the directory holding the server's unix socket, for
// `psql -h DIR -U postgres`.
func (c *Cluster) SocketDir() string { return c.sockDir }

// Dir returns the cluster's data directory.
func (c *Cluster) Dir() string { return c.dir }

// Version returns the server's major version, such as "15".
func (c *Cluster) Version() string { return c.version }

// Done is closed when the server has exited, whether through Stop or not: a
// server that dies under a running Plaza is a fatal condition to watch for.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Stop shuts the server down like `pg_ctl stop -m fast`: SIGINT, which rolls
// back open transactions, disconnects clients and writes a checkpoint. If ctx
// ends first it falls back to an immediate shutdown (SIGQUIT, crash recovery
// on next start) and finally SIGKILL. It reports an error if the server had
// already failed. Calling Stop again returns the first result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	select {
	case <-c.done:
		// Already gone on its own: that is a failure worth reporting.
		os.RemoveAll(c.sockDir)
		if c.exitErr != nil {
			return fmt.Errorf("cluster: postgres had exited: %v%s", c.exitErr, c.logTail(0))
		}
		return fmt.Errorf("cluster: postgres had exited unexpectedly%s", c.logTail(0))
	default:
	}
	start := time.Now()
	var errs []error
	if err := c.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("cluster: signalling postgres: %w", err))
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.logf("postgres: fast shutdown too slow (%v), shutting down immediately", ctx.Err())
		_ = c.proc.Signal(syscall.SIGQUIT)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.proc.Kill()
			<-c.done
		}
		errs = append(errs, fmt.Errorf("cluster: postgres did not shut down cleanly: %w", ctx.Err()))
	}
	if c.exitErr != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("cluster: postgres exited with %v%s", c.exitErr, c.logTail(0)))
	}
	// The socket directory is derived from the data directory, so it is ours
	// alone; postgres removed its socket and lock file on the way out.
	if err := os.RemoveAll(c.sockDir); err != nil {
		errs = append(errs, fmt.Errorf("cluster: %w", err))
	}
	c.logf("postgres: stopped in %s", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// launch starts postgres and returns the size of the server log before it
// started, so that errors can quote only this run's lines.
func (c *Cluster) launch(opts Options, acct *account) (int64, error) {
	logPath := filepath.Join(c.dir, logName)
	rotateLog(logPath)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("cluster: opening server log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	if acct != nil {
		// So that a later non-root run as the same account can append to it.
		if err := logFile.Chown(int(acct.uid), int(acct.gid)); err != nil {
			return 0, fmt.Errorf("cluster: %w", err)
		}
	}
	var offset int64
	if fi, err := logFile.Stat(); err == nil {
		offset = fi.Size()
	}

	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), serverArgs(c.dir, c.sockDir, opts)...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = serverProcAttr(acct)

	started := make(chan error, 1)
	go func() {
		// Never unlocked, on purpose: see the package comment. The thread
		// ends with this goroutine, which ends only after postgres has.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.exitErr = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return 0, fmt.Errorf("cluster: starting %s: %w", cmd.Path, err)
	}
	c.proc = cmd.Process
	return offset, nil
}

// serverArgs builds the postgres command line: settings go on it rather
// than into postgresql.conf so that the cluster directory stays what initdb
// made and a change of Plaza's defaults applies to existing clusters too.
func serverArgs(dir, sockDir string, opts Options) []string {
	settings := map[string]string{
		"listen_addresses":        "",
		"unix_socket_directories": sockDir,
		"unix_socket_permissions": "0700",
		"port":                    strconv.Itoa(port),
		// The server's idea of "today" must not depend on the host's zone.
		"TimeZone":     "UTC",
		"log_timezone": "UTC",
		// A dev box or a small server: enough connections for several pools
		// (one per Plaza process and its tools), modest memory.
		"max_connections": "200",
		"shared_buffers":  "128MB",
		"work_mem":        "8MB",
		"max_wal_size":    "1GB",
	}
	if opts.NoSync {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", dir}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// waitReady polls until the server accepts a connection, the server exits,
// or the time is up. "The database system is starting up" (crash recovery)
// counts as not yet ready.
func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration, logOffset int64) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	connString := c.ConnString("postgres")
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		attemptCtx, attemptCancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgconn.Connect(attemptCtx, connString)
		attemptCancel()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-c.done:
			return fmt.Errorf("cluster: postgres exited during start-up (%v)%s", c.exitErr, c.logTail(logOffset))
		case <-ctx.Done():
			return fmt.Errorf("cluster: postgres did not accept connections on %s: %w (last attempt: %v)%s",
				c.sockDir, ctx.Err(), lastErr, c.logTail(logOffset))
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// logTail returns the last lines of the server log written since offset,
// formatted to be appended to an error message.
func (c *Cluster) logTail(offset int64) string {
	const lines = 20
	f, err := os.Open(filepath.Join(c.dir, logName))
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	var tail []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		tail = append(tail, sc.Text())
		if len(tail) > lines {
			tail = tail[1:]
		}
	}
	if len(tail) == 0 {
		return ""
	}
	return "\nlast lines of " + f.Name() + ":\n\t" + strings.Join(tail, "\n\t")
}

// rotateLog keeps the server log from growing without bound across restarts:
// past 10 MB the previous log moves aside, replacing an older one.
func rotateLog(path string) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 10<<20 {
		_ = os.Rename(path, path+".1")
	}
}

// clusterVersion returns the major version recorded in dir/PG_VERSION, or ""
// if dir holds no cluster (missing or empty). A non-empty directory without a
// cluster is refused rather than overwritten.
func clusterVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("cluster: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("cluster: %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); "+
			"refusing to initialise a cluster over its contents", dir)
	}
	return "", nil
}

// initdb creates the cluster. Collation is C (byte order: fast, identical on
// every machine, and what Matrix identifiers need), character classification
// is C.UTF-8 so that lower(), upper() and regular expressions understand
// non-ASCII text; if the C.UTF-8 locale is missing it falls back to plain C.
//
// initdb works in a hidden sibling directory that is renamed over dir (empty
// at this point) once complete: an initdb interrupted half-way (Ctrl-C on a
// first start) would otherwise leave a directory that neither starts nor can
// be initialised again. If the parent directory is not writable, it runs in
// dir directly.
func initdb(ctx context.Context, binDir, dir string, noSync bool, acct *account, logf func(string, ...any)) error {
	start := time.Now()
	removeAbandonedInitdb(dir)
	target := dir
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+initdbSuffix)
	if err == nil {
		defer os.RemoveAll(tmp) // a no-op once renamed
		target = tmp
		if acct != nil {
			if err := os.Chown(tmp, int(acct.uid), int(acct.gid)); err != nil {
				return fmt.Errorf("cluster: %w", err)
			}
		}
	}
	run := func(ctype string) ([]byte, error) {
		args := []string{"-D", target, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--lc-ctype=" + ctype}
		if noSync {
			args = append(args, "--no-sync")
		}
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
		cmd.Dir = "/" // the account may not be able to enter our working directory
		cmd.Env = childEnv()
		cmd.SysProcAttr = helperProcAttr(acct)
		return cmd.CombinedOutput()
	}
	out, err := run("C.UTF-8")
	if err != nil && bytes.Contains(out, []byte("locale")) {
		logf("initdb: locale C.UTF-8 unavailable, using C")
		out, err = run("C")
	}
	if err != nil {
		return fmt.Errorf("cluster: initdb %s: %w\n%s", dir, err, bytes.TrimSpace(out))
	}
	if target != dir {
		// rename(2) replaces an empty directory; os.Rename refuses to.
		if err := syscall.Rename(target, dir); err != nil {
			return fmt.Errorf("cluster: moving the new cluster into place: %w", err)
		}
	}
	logf("initdb: created cluster in %s in %s", dir, time.Since(start).Round(time.Millisecond))
	return nil
}

const initdbSuffix = ".initdb-"

// removeAbandonedInitdb deletes what interrupted initdb runs for dir left
// behind. Recent ones are spared: they may belong to a process starting on
// the same directory right now.
func removeAbandonedInitdb(dir string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+initdbSuffix+"*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > 10*time.Minute {
			os.RemoveAll(m)
		}
	}
}

// removeStalePID deals with the postmaster.pid left by a server that crashed
// or was killed. postgres itself only ignores such a file if the pid in it is
// dead; in containers that pid is often reused by an unrelated live process
// after a restart, and postgres would then refuse to start. A pid that is
// alive but is not a postgres working in this directory is stale too. A live
// postgres on this directory (another Plaza using it) is an error.
func removeStalePID(dir string, logf func(string, ...any)) error {
	path := filepath.Join(dir, "postmaster.pid")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err == nil && pid > 0 {
		switch alive, ours := processState(pid, dir); {
		case alive && ours:
			return fmt.Errorf("cluster: PostgreSQL (pid %d) is already running on %s; is another plaza using this data directory? "+
				"If not, stop it with: kill -INT %d", pid, dir, pid)
		case alive && !ours:
			logf("postgres: removing stale postmaster.pid (pid %d now belongs to another process)", pid)
		default:
			logf("postgres: removing stale postmaster.pid (pid %d is gone; the last run did not shut down cleanly)", pid)
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("cluster: removing stale %s: %w", path, err)
	}
	return nil
}

// processState reports whether pid is alive and, if so, whether it is a
// server working in dir (postgres chdirs into its data directory). Zombies
// count as dead. Without /proc the answer is conservative: alive and ours.
func processState(pid int, dir string) (alive, ours bool) {
	err := syscall.Kill(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return false, false
	}
	if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
		// Another user's process. Our server would run as us.
		return true, false
	}
	stat, statErr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if statErr != nil {
		if _, e := os.Stat("/proc/self"); e != nil {
			return true, true
		}
		return false, false // gone between the two checks
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false, false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true, false
	}
	return true, filepath.Clean(cwd) == dir
}

// prepareSocketDir makes the private socket directory. Unix socket paths are
// limited to about 107 bytes, too short for an arbitrary data directory, so it
// lives in /tmp under a name derived from the data directory: stable across
// restarts (`psql -h` keeps working) and distinct per cluster. Because the
// name is predictable, an existing entry is accepted only if it is a real
// directory owned by the server's account and closed to others.
func prepareSocketDir(dir string, acct *account) (string, error) {
	removeAbandonedSocketDirs()
	sum := sha256.Sum256([]byte(dir))
	sockDir := filepath.Join(socketRoot, socketPrefix+hex.EncodeToString(sum[:6]))
	uid, gid := os.Getuid(), os.Getgid()
	if acct != nil {
		uid, gid = int(acct.uid), int(acct.gid)
	}
	if err := os.Mkdir(sockDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("cluster: creating socket directory: %w", err)
	}
	fi, err := os.Lstat(sockDir)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return "", fmt.Errorf("cluster: socket directory %s is not a directory; remove it", sockDir)
	}
	if int(st.Uid) != uid {
		if os.Geteuid() != 0 || st.Uid != 0 {
			return "", fmt.Errorf("cluster: socket directory %s belongs to uid %d, not %d; remove it", sockDir, st.Uid, uid)
		}
		if err := os.Chown(sockDir, uid, gid); err != nil {
			return "", fmt.Errorf("cluster: %w", err)
		}
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(sockDir, 0o700); err != nil {
			return "", fmt.Errorf("cluster: %w", err)
		}
	}
	// Fresh, so that removeAbandonedSocketDirs in another process leaves it
	// alone while our server starts.
	now := time.Now()
	if err := os.Chtimes(sockDir, now, now); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	// No postgres runs on this cluster (removeStalePID made sure), so a
	// socket or lock file left here by a crash is stale, and postgres would
	// trip over a lock file naming a reused pid just as with postmaster.pid.
	entries, err := os.ReadDir(sockDir)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(sockDir, e.Name())); err != nil {
			return "", fmt.Errorf("cluster: cleaning socket directory: %w", err)
		}
	}
	return sockDir, nil
}

const (
	socketRoot   = "/tmp"
	socketPrefix = "plaza-pg-"
)

// removeAbandonedSocketDirs removes the empty socket directories that servers
// of Plaza processes killed before they could call Stop leave behind (each
// cluster has its own, so test runs would otherwise pile them up in /tmp).
// A live server's directory holds its socket, and rmdir fails on a non-empty
// directory, so only an idle one that has not been touched for a minute can
// go; prepareSocketDir touches the one it reuses.
func removeAbandonedSocketDirs() {
	matches, _ := filepath.Glob(filepath.Join(socketRoot, socketPrefix+"*"))
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err == nil && fi.IsDir() && time.Since(fi.ModTime()) > time.Minute {
			_ = syscall.Rmdir(m) // fails, harmlessly, unless empty
		}
	}
}

// childEnv is the environment for initdb and postgres: ours, minus the libpq
// variables that would redirect them (PGDATA, PGPORT, …), with a locale that
// exists everywhere for the server's own messages.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || k == "LC_ALL" || k == "LANG" || strings.HasPrefix(k, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}
