package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

const seedHelp = `
Builds one huge room for the peek and viewers scenarios: --members members
and --messages messages, public, world-readable and guest-joinable. This is
the one scenario that is Plaza-specific: it asks Plaza's admin endpoint
POST /_plaza/admin/v1/seed_room, which builds every event exactly as a send
would (signed, hashed, authorised, with state groups and stream positions)
and writes them a thousand at a time with COPY, inside the running server so
that its caches follow the stream as usual. 20,000 members and 1,000,000
messages take a few minutes on two cores.

It logs in as --admin-user (a server admin: plaza admin create-user --admin)
with --admin-password or $PLAZA_BENCH_ADMIN_PASSWORD, prints progress (rate,
ETA) and finally the room ID, which is also in the results (and is what
--room of peek and viewers wants). The members are accounts
<users-prefix>-<n> without passwords, shared by every seeded room.
`

type seedConfig struct {
	members, messages, days  int
	name, topic, alias       string
	adminUser, adminPassword string
	membersPrefix            string
}

func newSeedConfig() scenarioConfig {
	return &seedConfig{members: 20_000, messages: 1_000_000, days: 365, name: "Huge room", topic: "Seeded by plaza-bench",
		adminUser: "admin", membersPrefix: "seed"}
}

func (c *seedConfig) bind(fs *flag.FlagSet) {
	fs.IntVar(&c.members, "members", c.members, "`number` of members who join")
	fs.IntVar(&c.messages, "messages", c.messages, "`number` of messages after the joins")
	fs.IntVar(&c.days, "days", c.days, "the history spans this many `days` up to now (archive pages have days to show)")
	fs.StringVar(&c.name, "name", c.name, "room `name`")
	fs.StringVar(&c.topic, "topic", c.topic, "room `topic`")
	fs.StringVar(&c.alias, "alias", c.alias, "canonical alias `localpart` (none when empty)")
	fs.StringVar(&c.adminUser, "admin-user", c.adminUser, "`localpart` of a server admin")
	fs.StringVar(&c.adminPassword, "admin-password", c.adminPassword, "the admin's `password` (default $PLAZA_BENCH_ADMIN_PASSWORD)")
	fs.StringVar(&c.membersPrefix, "members-prefix", c.membersPrefix, "members are <`prefix`>-<n>")
}

func (c *seedConfig) validate(map[string]bool) error {
	if c.adminPassword == "" {
		c.adminPassword = os.Getenv("PLAZA_BENCH_ADMIN_PASSWORD")
	}
	switch {
	case c.members < 0 || c.members > 1_000_000:
		return fmt.Errorf("--members %d: want 0 to 1000000", c.members)
	case c.messages < 0 || c.messages > 100_000_000:
		return fmt.Errorf("--messages %d: want 0 to 100000000", c.messages)
	case c.days < 0:
		return fmt.Errorf("--days %d: must not be negative", c.days)
	case c.adminPassword == "":
		return errors.New("--admin-password (or $PLAZA_BENCH_ADMIN_PASSWORD) is required")
	case !localpartRE.MatchString(c.membersPrefix):
		return fmt.Errorf("--members-prefix %q: use only a-z, 0-9 and ._=/+-", c.membersPrefix)
	}
	return nil
}

func (c *seedConfig) params() map[string]any {
	return map[string]any{"members": c.members, "messages": c.messages, "days": c.days}
}

type seedResult struct {
	RoomID   string  `json:"room_id"`
	Alias    string  `json:"alias,omitempty"`
	Members  int     `json:"members"`
	Messages int     `json:"messages"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"events_per_s"`
}

func (c *seedConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "seed", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.seed(ctx, e)
		rep.Seed = res
		return err
	})
	return []*scenarioReport{rep}, err
}

func (c *seedConfig) seed(ctx context.Context, e *env) (*seedResult, error) {
	admin, err := e.c.login(ctx, c.adminUser, c.adminPassword, e.runID)
	if err != nil {
		return nil, fmt.Errorf("logging in as the admin %s: %w", c.adminUser, err)
	}
	body, _ := json.Marshal(map[string]any{"members": c.members, "messages": c.messages, "days": c.days, "name": c.name,
		"topic": c.topic, "alias": c.alias, "users_prefix": c.membersPrefix})
	// The answer streams for minutes: no per-request timeout, only ctx.
	req, err := http.NewRequestWithContext(ctx, "POST", e.c.base+"/_plaza/admin/v1/seed_room", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+admin.token)
	req.Header.Set("Content-Type", "application/json")
	e.c.requests.Add(1)
	started := time.Now()
	resp, err := e.c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST /_plaza/admin/v1/seed_room: %w", unwrapURLError(err))
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if resp.StatusCode != http.StatusOK {
		var raw bytes.Buffer
		_, _ = raw.ReadFrom(resp.Body)
		return nil, newAPIError(request{method: "POST", path: "/_plaza/admin/v1/seed_room"}, &response{status: resp.StatusCode, header: resp.Header, body: raw.Bytes()})
	}
	var last struct {
		Done       int     `json:"done"`
		Total      int     `json:"total"`
		Rate       int     `json:"rate"`
		ETASeconds int     `json:"eta_seconds"`
		RoomID     string  `json:"room_id"`
		Alias      string  `json:"alias"`
		Seconds    float64 `json:"seconds"`
		Errcode    string  `json:"errcode"`
		Error      string  `json:"error"`
	}
	lastLog := time.Time{}
	for sc.Scan() {
		last.Done, last.Total, last.RoomID, last.Errcode = 0, 0, "", ""
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			return nil, fmt.Errorf("seed progress line %q: %w", sc.Text(), err)
		}
		if last.Errcode != "" {
			return nil, fmt.Errorf("seeding failed (room %q as far as it got): %s: %s", last.RoomID, last.Errcode, last.Error)
		}
		if last.Total > 0 && time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			e.logf("seed: %d/%d events (%.1f%%), %d events/s, ETA %s", last.Done, last.Total,
				100*float64(last.Done)/float64(last.Total), last.Rate, time.Duration(last.ETASeconds)*time.Second)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading seed progress: %w", err)
	}
	if last.RoomID == "" {
		return nil, errors.New("the seed answer ended without a room ID")
	}
	secs := time.Since(started).Seconds()
	res := &seedResult{RoomID: last.RoomID, Alias: last.Alias, Members: c.members, Messages: c.messages, Seconds: secs,
		PerSec: float64(c.members+c.messages) / secs}
	e.logf("seed: room %s ready", res.RoomID)
	return res, nil
}

func writeSeedTable(w io.Writer, r *seedResult) {
	fmt.Fprintf(w, "room %s", r.RoomID)
	if r.Alias != "" {
		fmt.Fprintf(w, " (%s)", r.Alias)
	}
	fmt.Fprintf(w, ": %d members, %d messages in %.1fs (%.0f events/s)\n", r.Members, r.Messages, r.Seconds, r.PerSec)
}
