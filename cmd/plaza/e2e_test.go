package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestEndToEnd builds the real binary and drives it the way an operator and a
// Matrix client would: migrate and admin commands on a fresh data directory,
// `plaza serve --demo` on the embedded cluster, logins over HTTP, an admin
// command against the running server, SIGTERM, and a restart on the same data.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	data := reachableTempDir(t)
	env := []string{
		"PLAZA_DATA_DIR=" + data,
		"PLAZA_LISTEN=127.0.0.1:0",
		"PLAZA_SERVER_NAME=plaza.test",
		"PLAZA_REGISTRATION=token",
		"PLAZA_RATE_LIMIT=false",
	}

	// One-shot commands before any server has run: each starts and stops the
	// embedded cluster on its own.
	runPlaza(t, bin, env, "", "migrate")
	if out := runPlaza(t, bin, env, "carol-password\n", "admin", "create-user", "--username", "carol", "--password", "-"); !strings.Contains(out, "@carol:plaza.test") {
		t.Errorf("create-user printed %q, want the user ID", out)
	}
	token := strings.TrimSpace(runPlaza(t, bin, env, "", "admin", "registration-token", "--uses", "1", "--expires", "1h"))
	if !validRegistrationToken(token) {
		t.Fatalf("registration-token printed %q, not a token", token)
	}

	srv := startServe(t, bin, env, "--demo")
	postmaster := postmasterPID(t, data)
	hs := homeserverClient{t: t, base: srv.url}

	var versions struct{ Versions []string }
	hs.do("GET", "/_matrix/client/versions", "", nil, http.StatusOK, &versions)
	if len(versions.Versions) == 0 {
		t.Errorf("/versions lists no versions")
	}
	alice := hs.login("alice", demoPassword)
	var whoami struct {
		UserID string `json:"user_id"`
	}
	hs.do("GET", "/_matrix/client/v3/account/whoami", alice, nil, http.StatusOK, &whoami)
	if whoami.UserID != "@alice:plaza.test" {
		t.Errorf("whoami = %q, want @alice:plaza.test", whoami.UserID)
	}
	var rooms struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	hs.do("GET", "/_matrix/client/v3/joined_rooms", alice, nil, http.StatusOK, &rooms)
	if len(rooms.JoinedRooms) != 1 {
		t.Errorf("alice is in rooms %v, want the welcome room", rooms.JoinedRooms)
	}
	hs.login("bob", demoPassword)
	hs.login("carol", "carol-password")
	hs.registerWithToken("dave", "dave-password", token)

	// An admin command while the server owns the cluster attaches to it.
	runPlaza(t, bin, env, "erin-password\n", "admin", "create-user", "--username", "erin", "--password", "-")
	hs.login("erin", "erin-password")

	srv.stop(t)
	assertPostgresGone(t, data, postmaster)

	// A restart keeps everything and does not seed the demo twice.
	srv = startServe(t, bin, env, "--demo")
	postmaster = postmasterPID(t, data)
	hs.base = srv.url
	if !srv.logged("demo: users and welcome room already exist") {
		t.Errorf("second start with --demo did not report the existing demo content")
	}
	alice = hs.login("alice", demoPassword)
	hs.do("GET", "/_matrix/client/v3/joined_rooms", alice, nil, http.StatusOK, &rooms)
	if len(rooms.JoinedRooms) != 1 {
		t.Errorf("after restart alice is in rooms %v, want only the welcome room", rooms.JoinedRooms)
	}
	hs.login("dave", "dave-password")
	srv.stop(t)
	assertPostgresGone(t, data, postmaster)
}

// TestServeRefusesBadSetting checks that the binary fails before doing
// anything, naming the setting.
func TestServeRefusesBadSetting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := buildPlaza(t)
	data := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "PLAZA_DATA_DIR="+data, "PLAZA_REGISTRATION=maybe")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
		t.Fatalf("plaza serve with a bad setting: %v, want exit status %d\n%s", err, exitUsage, out)
	}
	if want := `PLAZA_REGISTRATION="maybe": must be open, token or closed`; !strings.Contains(string(out), want) {
		t.Errorf("output %q lacks %q", out, want)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start created the data directory (%v)", err)
	}
}

// buildPlaza builds this package into a temporary directory, once per test.
func buildPlaza(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "plaza")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// reachableTempDir is a temporary directory every user can enter. As root,
// PostgreSQL runs under another account, which cannot pass through the
// private (0700) directories t.TempDir() makes.
func reachableTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "plaza-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runPlaza runs a one-shot command and returns its standard output.
func runPlaza(t *testing.T, bin string, env []string, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("plaza %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
	}
	return stdout.String()
}

// server is a running `plaza serve`.
type server struct {
	cmd    *exec.Cmd
	url    string
	exited chan error

	mu  sync.Mutex
	log []map[string]any
	raw strings.Builder
}

// startServe starts `plaza serve` with JSON logs and waits until it says
// where it listens.
func startServe(t testing.TB, bin string, env []string, args ...string) *server {
	t.Helper()
	return launchServe(t, t, bin, env, args...)
}

// launchServe is startServe for a server that outlives the test starting
// it: owner's clean-up stops it, while a failure to start fails t (FailNow
// must be called from t's own goroutine, not its parent's).
func launchServe(t, owner testing.TB, bin string, env []string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	// A test binary killed on a timeout must not leave servers (and their
	// PostgreSQL) behind: they get the SIGTERM a clean stop sends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec map[string]any
			_ = json.Unmarshal(sc.Bytes(), &rec)
			s.mu.Lock()
			s.raw.WriteString(sc.Text() + "\n")
			s.log = append(s.log, rec)
			s.mu.Unlock()
			if url, ok := rec["url"].(string); ok && strings.HasPrefix(rec["msg"].(string), "Plaza is ready") {
				ready <- url
			}
		}
		s.exited <- cmd.Wait()
	}()
	owner.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if owner.Failed() {
			t.Logf("plaza serve log:\n%s", s.output())
		}
	})
	select {
	case s.url = <-ready:
		return s
	case err := <-s.exited:
		t.Fatalf("plaza serve exited before it was ready: %v\n%s", err, s.output())
	case <-time.After(2 * time.Minute):
		t.Fatalf("plaza serve not ready after 2 minutes\n%s", s.output())
	}
	return nil
}

func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

func (s *server) logged(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range s.log {
		if rec["msg"] == msg {
			return true
		}
	}
	return false
}

// stop sends SIGTERM and expects a clean exit within 15 seconds.
func (s *server) stop(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("plaza serve exited with %v after SIGTERM, want status 0\n%s", err, s.output())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("plaza serve still running 15s after SIGTERM\n%s", s.output())
	}
}

// postmasterPID reads the embedded server's pid while it runs.
func postmasterPID(t *testing.T, data string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "postgres", "postmaster.pid"))
	if err != nil {
		t.Fatalf("embedded PostgreSQL not running: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// assertPostgresGone checks that the embedded server shut down cleanly: its
// pid file is gone (PostgreSQL removes it last on a clean shutdown) and
// neither it nor any process of its group (its backends and workers) lives.
func assertPostgresGone(t *testing.T, data string, pid int) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(data, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid still exists after plaza exited (%v)", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres (pid %d) still running after plaza exited (kill 0: %v)", pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of postgres's group %d still running after plaza exited (kill 0: %v)", pid, err)
	}
}

// homeserverClient speaks just enough of the client-server API.
type homeserverClient struct {
	t    *testing.T
	base string
}

func (c homeserverClient) do(method, path, token string, body any, wantStatus int, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, wantStatus, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

func (c homeserverClient) login(user, password string) string {
	c.t.Helper()
	var resp struct {
		AccessToken string `json:"access_token"`
	}
	c.do("POST", "/_matrix/client/v3/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}, http.StatusOK, &resp)
	if resp.AccessToken == "" {
		c.t.Fatalf("login as %s returned no access token", user)
	}
	return resp.AccessToken
}

// registerWithToken registers through user-interactive auth with a
// registration token, as Element does when the server asks for one.
func (c homeserverClient) registerWithToken(user, password, token string) {
	c.t.Helper()
	var challenge struct {
		Session string `json:"session"`
	}
	req := map[string]any{"username": user, "password": password}
	c.do("POST", "/_matrix/client/v3/register", "", req, http.StatusUnauthorized, &challenge)
	req["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": challenge.Session}
	var done struct {
		UserID string `json:"user_id"`
	}
	c.do("POST", "/_matrix/client/v3/register", "", req, http.StatusOK, &done)
	if want := fmt.Sprintf("@%s:plaza.test", user); done.UserID != want {
		c.t.Errorf("registered %q, want %s", done.UserID, want)
	}
}
