package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

const initialSyncHelp = `
Measures initial /sync (no since token) for a user in many rooms with long
histories.

Seeding: the user <prefix>-isync-r<rooms>-m<messages> creates --rooms public
rooms, --seeders further users join them all, and --seed-concurrency workers
post --messages messages into each room, with progress output. When done, a
marker state event (org.plaza.bench.seed) records the seed in the first room.
Seeding first leaves any rooms the user is still in from an earlier
(possibly interrupted) seed, so the measured user is in exactly --rooms rooms.

With --reuse, a complete earlier seed with the same --rooms and --messages is
found through its marker and used as is, so repeated runs are quick.

Measuring: --iterations initial /sync calls with the server's default filter,
then as many with a lazy-loading filter (lazy_load_members, timeline limit
--lazy-limit). Reports the first (cold) call, median and p90 time and the
median response size (decoded bytes).
`

type initialSyncConfig struct {
	rooms           int
	messages        int
	reuse           bool
	iterations      int
	seeders         int
	seedConcurrency int
	lazyLimit       int
}

func newInitialSyncConfig() scenarioConfig {
	return &initialSyncConfig{rooms: 50, messages: 2000, iterations: 5, seeders: 4, seedConcurrency: 16, lazyLimit: 10}
}

func (c *initialSyncConfig) bind(fs *flag.FlagSet) {
	fs.IntVar(&c.rooms, "rooms", c.rooms, "`number` of rooms the user is in")
	fs.IntVar(&c.messages, "messages", c.messages, "`number` of messages seeded into each room")
	fs.BoolVar(&c.reuse, "reuse", c.reuse, "skip seeding when a complete earlier seed of the same size exists")
	fs.IntVar(&c.iterations, "iterations", c.iterations, "initial /sync calls timed per filter")
	fs.IntVar(&c.seeders, "seeders", c.seeders, "`number` of users posting the seed messages (they also make the member lists longer)")
	fs.IntVar(&c.seedConcurrency, "seed-concurrency", c.seedConcurrency, "concurrent sends while seeding")
	fs.IntVar(&c.lazyLimit, "lazy-limit", c.lazyLimit, "timeline `limit` of the lazy-loading filter")
}

const (
	maxSeedRooms    = 10000
	maxSeedMessages = 10_000_000 // in total
	maxIterations   = 1000
)

func (c *initialSyncConfig) validate(map[string]bool) error {
	switch {
	case c.rooms <= 0 || c.rooms > maxSeedRooms:
		return fmt.Errorf("--rooms %d: want 1 to %d", c.rooms, maxSeedRooms)
	case c.messages < 0:
		return fmt.Errorf("--messages %d: must not be negative", c.messages)
	case int64(c.rooms)*int64(c.messages) > maxSeedMessages:
		return fmt.Errorf("--rooms × --messages = %d: at most %d", int64(c.rooms)*int64(c.messages), maxSeedMessages)
	case c.iterations <= 0 || c.iterations > maxIterations:
		return fmt.Errorf("--iterations %d: want 1 to %d", c.iterations, maxIterations)
	case c.seeders <= 0 || c.seeders > 1000:
		return fmt.Errorf("--seeders %d: want 1 to 1000", c.seeders)
	case c.seedConcurrency <= 0 || c.seedConcurrency > 1024:
		return fmt.Errorf("--seed-concurrency %d: want 1 to 1024", c.seedConcurrency)
	case c.lazyLimit <= 0:
		return fmt.Errorf("--lazy-limit %d: must be positive", c.lazyLimit)
	}
	return nil
}

func (c *initialSyncConfig) params() map[string]any {
	return map[string]any{"rooms": c.rooms, "messages": c.messages, "reuse": c.reuse, "iterations": c.iterations}
}

type initialSyncResult struct {
	Rooms        int                  `json:"rooms"`
	Messages     int                  `json:"messages"`
	Seeded       bool                 `json:"seeded"`
	SeedElapsedS float64              `json:"seed_elapsed_s,omitempty"`
	SeedPerSec   float64              `json:"seed_per_s,omitempty"`
	Variants     []initialSyncVariant `json:"variants"`
}

type initialSyncVariant struct {
	Name        string  `json:"name"`
	Filter      string  `json:"filter,omitempty"`
	Calls       int     `json:"calls"`
	FirstMS     float64 `json:"first_ms"`
	MedianMS    float64 `json:"median_ms"`
	P90MS       float64 `json:"p90_ms"`
	MaxMS       float64 `json:"max_ms"`
	MedianBytes int     `json:"median_bytes"`
	RoomsSeen   int     `json:"rooms_seen"`
}

// The marker a finished seed leaves in its first room.
const (
	seedMarkerType = "org.plaza.bench.seed"
	seedMarkerKey  = "seed"
)

type seedMarker struct {
	Rooms    int      `json:"rooms"`
	Messages int      `json:"messages"`
	RoomIDs  []string `json:"room_ids"`
	Run      string   `json:"run"`
}

func (c *initialSyncConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "initial-sync", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.initialSync(ctx, e)
		rep.InitialSync = res
		return err
	})
	return []*scenarioReport{rep}, err
}

func (c *initialSyncConfig) initialSync(ctx context.Context, e *env) (*initialSyncResult, error) {
	base := fmt.Sprintf("%s-isync-r%d-m%d", e.g.UsersPrefix, c.rooms, c.messages)
	users, err := e.accounts(ctx, []string{base})
	if err != nil {
		return nil, err
	}
	user := users[0]
	res := &initialSyncResult{Rooms: c.rooms, Messages: c.messages}

	joined, err := user.joinedRooms(ctx)
	if err != nil {
		return nil, err
	}
	reused := false
	if c.reuse {
		if reused, err = c.findSeed(ctx, e, user, joined); err != nil {
			return nil, err
		}
	}
	if !reused {
		if len(joined) > 0 {
			e.logf("initial-sync: leaving %d rooms of an earlier seed", len(joined))
			if err := parallel(ctx, len(joined), setupConcurrency, func(ctx context.Context, i int) error {
				return user.leave(ctx, joined[i])
			}); err != nil {
				return nil, err
			}
		}
		began := time.Now()
		if err := c.seed(ctx, e, base, user); err != nil {
			return nil, err
		}
		res.Seeded = true
		res.SeedElapsedS = time.Since(began).Seconds()
		if res.SeedElapsedS > 0 {
			res.SeedPerSec = float64(c.rooms*c.messages) / res.SeedElapsedS
		}
	}

	lazy := fmt.Sprintf(`{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":%d}}}`, c.lazyLimit)
	for _, v := range []struct{ name, filter string }{{"default", ""}, {"lazy-loading", lazy}} {
		out, err := c.timeSyncs(ctx, e, user, v.name, v.filter)
		if err != nil {
			return res, err
		}
		res.Variants = append(res.Variants, *out)
	}
	return res, nil
}

// findSeed looks for the marker of a complete seed of this size and checks
// the user is in exactly its rooms.
func (c *initialSyncConfig) findSeed(ctx context.Context, e *env, user *session, joined []string) (bool, error) {
	for _, room := range joined {
		var m seedMarker
		found, err := user.getState(ctx, room, seedMarkerType, seedMarkerKey, &m)
		if err != nil {
			return false, err
		}
		if !found {
			continue
		}
		a, b := slices.Clone(m.RoomIDs), slices.Clone(joined)
		slices.Sort(a)
		slices.Sort(b)
		if m.Rooms == c.rooms && m.Messages == c.messages && slices.Equal(a, b) {
			e.logf("initial-sync: reusing the seed of run %s (%d rooms × %d messages)", m.Run, m.Rooms, m.Messages)
			return true, nil
		}
		e.logf("initial-sync: the earlier seed does not match (%d rooms × %d messages, user in %d rooms); seeding again", m.Rooms, m.Messages, len(joined))
		return false, nil
	}
	if len(joined) > 0 {
		e.logf("initial-sync: no complete earlier seed found; seeding again")
	}
	return false, nil
}

func (c *initialSyncConfig) seed(ctx context.Context, e *env, base string, user *session) error {
	e.logf("initial-sync: seeding %d rooms × %d messages with %d seeders", c.rooms, c.messages, c.seeders)
	rooms, err := e.createRooms(ctx, user, c.rooms, "initial-sync")
	if err != nil {
		return err
	}
	names := make([]string, c.seeders)
	for i := range names {
		names[i] = fmt.Sprintf("%s-seed%d", base, i)
	}
	seeders, err := e.accounts(ctx, names)
	if err != nil {
		return err
	}
	var joins []membership
	for _, s := range seeders {
		for _, r := range rooms {
			joins = append(joins, membership{s, r})
		}
	}
	if err := e.joinAll(ctx, joins); err != nil {
		return err
	}

	total := c.rooms * c.messages
	var done atomic.Int64
	began := time.Now()
	stop := e.every(2*time.Second, func() string {
		n := done.Load()
		rate := float64(n) / time.Since(began).Seconds()
		eta := "?"
		if rate > 0 {
			eta = (time.Duration(float64(int64(total)-n)/rate) * time.Second).Round(time.Second).String()
		}
		return fmt.Sprintf("  seeding: %d/%d messages, %.0f/s, ETA %s", n, total, rate, eta)
	})
	p := plan{workers: c.seedConcurrency, events: total}
	_, err = runPlan(ctx, e.clk, p, &done, func(ctx context.Context, ev event) error {
		s := seeders[ev.worker%len(seeders)]
		_, err := s.sendMessage(ctx, rooms[ev.index%len(rooms)], benchContent{
			MsgType: "m.text",
			Body:    fmt.Sprintf("plaza-bench seed message %d of room %d", ev.index/len(rooms), ev.index%len(rooms)),
		})
		return err
	})
	stop()
	if err != nil {
		return err
	}
	marker := seedMarker{Rooms: c.rooms, Messages: c.messages, RoomIDs: rooms, Run: e.runID}
	if err := user.putState(ctx, rooms[0], seedMarkerType, seedMarkerKey, marker); err != nil {
		return err
	}
	e.logf("initial-sync: seeded %d messages in %.1fs", total, time.Since(began).Seconds())
	return nil
}

func (c *initialSyncConfig) timeSyncs(ctx context.Context, e *env, user *session, name, filter string) (*initialSyncVariant, error) {
	v := &initialSyncVariant{Name: name, Filter: filter, Calls: c.iterations}
	var times []time.Duration
	var sizes []int
	for i := range c.iterations {
		t0 := time.Now()
		resp, err := user.sync(ctx, syncParams{filter: filter})
		if err != nil {
			return nil, err
		}
		d := resp.received.Sub(t0)
		times = append(times, d)
		sizes = append(sizes, len(resp.body))
		var sr struct {
			Rooms struct {
				Join map[string]json.RawMessage `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(resp.body, &sr); err != nil {
			return nil, fmt.Errorf("%s: decode initial sync: %w", user.UserID, err)
		}
		v.RoomsSeen = len(sr.Rooms.Join)
		if i == 0 {
			v.FirstMS = ms(d)
		}
		e.logf("  initial sync (%s) %d/%d: %.1fms, %d bytes, %d rooms", name, i+1, c.iterations, ms(d), len(resp.body), v.RoomsSeen)
	}
	sum := summarize(times)
	v.MedianMS, v.P90MS, v.MaxMS = sum.P50MS, sum.P90MS, sum.MaxMS
	v.MedianBytes = medianInt(sizes)
	return v, nil
}
