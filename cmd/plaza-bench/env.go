package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// env is what every scenario runs with: the flags, the one client, the
// progress output and the run's identity.
type env struct {
	g     globalConfig
	c     *client
	clk   clock
	start time.Time // the origin of the monotonic bench_ts clock
	runID string    // unique per invocation: txn IDs and message markers

	mu  sync.Mutex
	log io.Writer // progress, stderr; nil when quiet
}

func newEnv(g globalConfig, base *url.URL, stderr io.Writer) *env {
	e := &env{
		g:     g,
		c:     newClient(base, g.Timeout),
		clk:   wallClock{},
		start: time.Now(),
		runID: newRunID(),
		log:   stderr,
	}
	if g.Quiet {
		e.log = nil
	}
	return e
}

func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("pb%x%s", time.Now().Unix(), hex.EncodeToString(b[:]))
}

// monoNS is now on the monotonic clock, in nanoseconds since the process
// began, the unit of bench_ts.
func (e *env) monoNS() int64 {
	return int64(time.Since(e.start))
}

// logf prints one progress line to stderr, stamped with the time since start.
func (e *env) logf(format string, args ...any) {
	if e.log == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.log, "[%7.1fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

// every prints status() once per interval until the returned stop is called.
func (e *env) every(interval time.Duration, status func() string) (stop func()) {
	if e.log == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.logf("%s", status())
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// parallel calls fn(ctx, i) for i in [0, n) with at most conc calls at once
// and returns the first error, after which no further calls start.
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range min(n, conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// setupConcurrency bounds concurrent registrations, logins, room creations
// and joins: setup is not what is measured, and servers rate-limit it.
const setupConcurrency = 16

// accounts registers (or logs in) every localpart, with progress.
func (e *env) accounts(ctx context.Context, localparts []string) ([]*session, error) {
	out := make([]*session, len(localparts))
	var done atomic.Int64
	limited0 := e.c.rateLimited.Load()
	verb := "logging in"
	if e.g.Register {
		verb = "registering"
	}
	e.logf("%s %d users (%s…)", verb, len(localparts), localparts[0])
	stop := e.every(2*time.Second, func() string {
		return fmt.Sprintf("  %s: %d/%d users, %d answers 429 so far", verb, done.Load(), len(localparts), e.c.rateLimited.Load()-limited0)
	})
	defer stop()
	err := parallel(ctx, len(localparts), setupConcurrency, func(ctx context.Context, i int) error {
		s, err := e.c.account(ctx, localparts[i], e.g.Password, e.g.Register, e.runID)
		if err != nil {
			return err
		}
		out[i] = s
		done.Add(1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// createRooms has owner create n public rooms named after the run.
func (e *env) createRooms(ctx context.Context, owner *session, n int, label string) ([]string, error) {
	rooms := make([]string, n)
	err := parallel(ctx, n, setupConcurrency, func(ctx context.Context, i int) error {
		id, err := owner.createRoom(ctx, fmt.Sprintf("plaza-bench %s %s #%d", e.runID, label, i))
		rooms[i] = id
		return err
	})
	return rooms, err
}

// joinAll makes every (session, room) pair in joins a membership.
func (e *env) joinAll(ctx context.Context, joins []membership) error {
	if len(joins) == 0 {
		return nil
	}
	var done atomic.Int64
	stop := e.every(2*time.Second, func() string {
		return fmt.Sprintf("  joining: %d/%d", done.Load(), len(joins))
	})
	defer stop()
	return parallel(ctx, len(joins), setupConcurrency, func(ctx context.Context, i int) error {
		if err := joins[i].s.join(ctx, joins[i].room); err != nil {
			return err
		}
		done.Add(1)
		return nil
	})
}

type membership struct {
	s    *session
	room string
}

// scenario runs body as one reported scenario: it samples the server's RSS
// around it (with --pid) and counts the rate-limited answers it met.
func (e *env) scenario(ctx context.Context, name string, params map[string]any, body func(ctx context.Context, rep *scenarioReport) error) (*scenarioReport, error) {
	rep := &scenarioReport{Name: name, Params: params, Started: time.Now()}
	var sampler *rssSampler
	if e.g.PID > 0 {
		var err error
		if sampler, err = startRSS(e.g.PID, 100*time.Millisecond); err != nil {
			return rep, err
		}
	}
	limited0, requests0 := e.c.rateLimited.Load(), e.c.requests.Load()
	wait0 := e.c.retryWaitNS.Load()
	e.logf("== %s %s", name, formatParams(params))
	err := body(ctx, rep)
	rep.ElapsedS = time.Since(rep.Started).Seconds()
	rep.Requests = e.c.requests.Load() - requests0
	rep.RateLimited = e.c.rateLimited.Load() - limited0
	rep.RateLimitWaitS = time.Duration(e.c.retryWaitNS.Load() - wait0).Seconds()
	if sampler != nil {
		r, serr := sampler.finish()
		rep.RSS = &r
		if serr != nil && err == nil {
			err = fmt.Errorf("sampling server RSS: %w", serr)
		}
	}
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

func formatParams(params map[string]any) string {
	keys := sortedKeys(params)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, params[k])
	}
	return strings.Join(parts, " ")
}
