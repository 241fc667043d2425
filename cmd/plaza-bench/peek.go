package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

const peekHelp = `
Measures what an anonymous visitor or a guest waits for when opening a room:
GET /rooms/{room}/initialSync as a guest, GET /_matrix/client/v1/room_summary
anonymously and, with --page, the web room page (Plaza: /room/{room}).

Warm: --iterations calls of each endpoint, one at a time, after a first call
that warms the server's caches; reports p50, p90, p99 and max.

Cold: with --restart, a shell command that restarts the server (and returns
once it was told to; plaza-bench then waits for /_matrix/client/versions),
--cold-runs restarts per endpoint, each followed by one call of that
endpoint only: the first visit after a restart. Without --restart no cold
figures are taken.

Times are measured by plaza-bench over HTTP (loopback when the server is
local): the server's own time plus the connection's.
`

type peekConfig struct {
	room       string
	iterations int
	page       string
	restart    string
	coldRuns   int
}

func newPeekConfig() scenarioConfig {
	return &peekConfig{iterations: 500, coldRuns: 5}
}

func (c *peekConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.room, "room", c.room, "room `ID or alias` to view (a seed scenario's room)")
	fs.IntVar(&c.iterations, "iterations", c.iterations, "warm calls per endpoint")
	fs.StringVar(&c.page, "page", c.page, "room page `path` with {room} for the room ID, e.g. /room/{room} (none when empty)")
	fs.StringVar(&c.restart, "restart", c.restart, "shell `command` restarting the server, for cold figures")
	fs.IntVar(&c.coldRuns, "cold-runs", c.coldRuns, "restarts per endpoint for cold figures")
}

func (c *peekConfig) validate(map[string]bool) error {
	switch {
	case c.room == "":
		return errors.New("--room is required")
	case !strings.HasPrefix(c.room, "!") && !strings.HasPrefix(c.room, "#"):
		return fmt.Errorf("--room %q: want a room ID (!…) or alias (#…)", c.room)
	case c.iterations <= 0 || c.iterations > 1_000_000:
		return fmt.Errorf("--iterations %d: want 1 to 1000000", c.iterations)
	case c.coldRuns <= 0 || c.coldRuns > 1000:
		return fmt.Errorf("--cold-runs %d: want 1 to 1000", c.coldRuns)
	case c.page != "" && (!strings.HasPrefix(c.page, "/") || !strings.Contains(c.page, "{room}")):
		return fmt.Errorf("--page %q: want a path with {room}, such as /room/{room}", c.page)
	}
	return nil
}

func (c *peekConfig) params() map[string]any {
	return map[string]any{"room": c.room, "iterations": c.iterations, "cold_runs": c.coldRuns, "page": c.page, "restart": c.restart != ""}
}

type peekResult struct {
	RoomID    string         `json:"room_id"`
	Endpoints []peekEndpoint `json:"endpoints"`
}

type peekEndpoint struct {
	Name  string         `json:"name"`
	Bytes int            `json:"bytes"`
	Warm  latencySummary `json:"warm"`
	Cold  latencySummary `json:"cold"`
}

func (c *peekConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "peek", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.peek(ctx, e)
		rep.Peek = res
		return err
	})
	return []*scenarioReport{rep}, err
}

// peekTarget is one endpoint: a GET, and whether it needs a guest token.
type peekTarget struct {
	name, path string
	guest      bool
}

func (c *peekConfig) targets(roomID string) []peekTarget {
	rid := url.PathEscape(roomID)
	out := []peekTarget{
		{"initialSync (guest)", "/_matrix/client/v3/rooms/" + rid + "/initialSync", true},
		{"room_summary (anonymous)", "/_matrix/client/v1/room_summary/" + rid, false},
	}
	if c.page != "" {
		out = append(out, peekTarget{"room page (anonymous)", strings.ReplaceAll(c.page, "{room}", rid), false})
	}
	return out
}

func (c *peekConfig) peek(ctx context.Context, e *env) (*peekResult, error) {
	roomID, err := resolveRoom(ctx, e, c.room)
	if err != nil {
		return nil, err
	}
	res := &peekResult{RoomID: roomID}
	targets := c.targets(roomID)
	for _, t := range targets {
		res.Endpoints = append(res.Endpoints, peekEndpoint{Name: t.name})
	}
	if c.restart != "" {
		for i, t := range targets {
			var samples []time.Duration
			for run := range c.coldRuns {
				if err := c.restartServer(ctx, e); err != nil {
					return res, err
				}
				token := ""
				if t.guest {
					if token, err = guestToken(ctx, e); err != nil {
						return res, err
					}
				}
				d, _, err := timedGet(ctx, e, t.path, token)
				if err != nil {
					return res, fmt.Errorf("cold %s: %w", t.name, err)
				}
				samples = append(samples, d)
				e.logf("cold %s run %d: %.1f ms", t.name, run+1, ms(d))
			}
			res.Endpoints[i].Cold = summarize(samples)
		}
	}
	token, err := guestToken(ctx, e)
	if err != nil {
		return res, err
	}
	for i, t := range targets {
		tok := ""
		if t.guest {
			tok = token
		}
		if _, n, err := timedGet(ctx, e, t.path, tok); err != nil { // warms the caches
			return res, fmt.Errorf("%s: %w", t.name, err)
		} else {
			res.Endpoints[i].Bytes = n
		}
		samples := make([]time.Duration, 0, c.iterations)
		for range c.iterations {
			d, _, err := timedGet(ctx, e, t.path, tok)
			if err != nil {
				return res, fmt.Errorf("%s: %w", t.name, err)
			}
			samples = append(samples, d)
		}
		res.Endpoints[i].Warm = summarize(samples)
		e.logf("warm %s: p50 %.2f ms, p99 %.2f ms", t.name, res.Endpoints[i].Warm.P50MS, res.Endpoints[i].Warm.P99MS)
	}
	return res, nil
}

// restartServer runs the restart command and waits until the server answers.
func (c *peekConfig) restartServer(ctx context.Context, e *env) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", c.restart)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("--restart command: %w: %s", err, strings.TrimSpace(string(out)))
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := e.c.do(ctx, request{method: "GET", path: "/_matrix/client/versions"}); err == nil {
			// Keep-alive connections to the old process are gone.
			e.c.http.CloseIdleConnections()
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the server did not come back within 2 minutes of --restart")
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// resolveRoom turns an alias into a room ID (a room ID is returned as is).
func resolveRoom(ctx context.Context, e *env, room string) (string, error) {
	if strings.HasPrefix(room, "!") {
		return room, nil
	}
	var r struct {
		RoomID string `json:"room_id"`
	}
	if err := e.c.doJSON(ctx, request{method: "GET", path: "/_matrix/client/v3/directory/room/" + url.PathEscape(room)}, &r); err != nil {
		return "", fmt.Errorf("resolving %s: %w", room, err)
	}
	return r.RoomID, nil
}

func guestToken(ctx context.Context, e *env) (string, error) {
	var r loginResponse
	if err := e.c.doJSON(ctx, request{method: "POST", path: "/_matrix/client/v3/register", query: url.Values{"kind": {"guest"}},
		body: map[string]any{}}, &r); err != nil {
		return "", fmt.Errorf("registering a guest: %w", err)
	}
	return r.AccessToken, nil
}

// timedGet times one GET from sending it to its last body byte.
func timedGet(ctx context.Context, e *env, path, token string) (time.Duration, int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", e.c.base+path, nil)
	if err != nil {
		return 0, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	e.c.requests.Add(1)
	start := time.Now()
	resp, err := e.c.http.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: %w", path, unwrapURLError(err))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	d := time.Since(start)
	resp.Body.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return d, int(n), nil
}

func writePeekTable(w io.Writer, r *peekResult) {
	fmt.Fprintf(w, "room %s\n", r.RoomID)
	t := newTable(w)
	fmt.Fprintln(t, "endpoint\tbytes\twarm n\twarm p50 ms\twarm p90 ms\twarm p99 ms\twarm max ms\tcold n\tcold p50 ms\tcold p99 ms\tcold max ms\t")
	for _, p := range r.Endpoints {
		fmt.Fprintf(t, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", p.Name, p.Bytes, p.Warm.Count, f2(p.Warm.P50MS), f2(p.Warm.P90MS),
			f2(p.Warm.P99MS), f2(p.Warm.MaxMS), p.Cold.Count, f1(p.Cold.P50MS), f1(p.Cold.P99MS), f1(p.Cold.MaxMS))
	}
	t.Flush()
}
