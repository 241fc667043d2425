package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

const sendHelp = `
Measures how fast the server accepts m.room.message events and how long each
send takes, for every combination of --senders and --rooms.

Each sender is its own user and device and sends with
PUT /rooms/{roomId}/send/m.room.message/{txnId}, a unique txnId per event.
Every combination gets fresh rooms. With fewer senders than rooms a sender
rotates over its share of the rooms; with more, senders share rooms.

--rate 0 is closed-loop: each sender sends its next event when the previous
one returns, and latency is the request alone. --rate R is open-loop: events
are due at fixed times adding up to R events/s in total, and latency is
measured from when an event was due, so time spent queued behind a slow
server counts (a server that cannot keep up shows it in p99 and max).

A run stops after --duration (no event is started later) or, with --events,
after that many events per combination.

Reports events/s and latency p50/p90/p99/max per combination.
`

type sendConfig struct {
	senders  intList
	rooms    intList
	duration time.Duration
	events   int
	rate     float64
}

func newSendConfig() scenarioConfig {
	return &sendConfig{senders: intList{1, 8, 32}, rooms: intList{1, 32}, duration: 10 * time.Second}
}

func (c *sendConfig) bind(fs *flag.FlagSet) {
	fs.Var(&c.senders, "senders", "comma-separated `counts` of concurrent senders (each its own user and device)")
	fs.Var(&c.rooms, "rooms", "comma-separated `counts` of rooms the senders spread over")
	fs.DurationVar(&c.duration, "duration", c.duration, "how long each combination sends")
	fs.IntVar(&c.events, "events", c.events, "send exactly `N` events per combination instead of running for --duration")
	fs.Float64Var(&c.rate, "rate", c.rate, "target total `events/s`, open-loop; 0 sends as fast as possible")
}

// Bounds that keep a typo from becoming a denial of service.
const (
	maxSenders    = 10000
	maxRooms      = 10000
	maxSendEvents = 10_000_000
)

func (c *sendConfig) validate(explicit map[string]bool) error {
	if explicit["duration"] && explicit["events"] {
		return errors.New("give either --duration or --events, not both")
	}
	if c.events < 0 || c.events > maxSendEvents {
		return fmt.Errorf("--events %d: want 1 to %d", c.events, maxSendEvents)
	}
	if c.events == 0 && c.duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive", c.duration)
	}
	if c.rate < 0 {
		return fmt.Errorf("--rate %v: must be 0 (as fast as possible) or positive", c.rate)
	}
	if slices.Max(c.senders) > maxSenders {
		return fmt.Errorf("--senders: at most %d", maxSenders)
	}
	if slices.Max(c.rooms) > maxRooms {
		return fmt.Errorf("--rooms: at most %d", maxRooms)
	}
	return nil
}

func (c *sendConfig) params() map[string]any {
	p := map[string]any{"senders": c.senders.String(), "rooms": c.rooms.String(), "rate": c.rate}
	if c.events > 0 {
		p["events"] = c.events
	} else {
		p["duration"] = c.duration.String()
	}
	return p
}

// sendResult is one (senders, rooms) combination.
type sendResult struct {
	Senders      int            `json:"senders"`
	Rooms        int            `json:"rooms"`
	TargetRate   float64        `json:"target_rate"`
	Events       int64          `json:"events"`
	ElapsedS     float64        `json:"elapsed_s"`
	EventsPerSec float64        `json:"events_per_s"`
	Latency      latencySummary `json:"latency"`
	RateLimited  int64          `json:"rate_limited"`
}

func (c *sendConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "send", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		names := make([]string, slices.Max(c.senders))
		for i := range names {
			names[i] = fmt.Sprintf("%s-send-%d", e.g.UsersPrefix, i)
		}
		users, err := e.accounts(ctx, names)
		if err != nil {
			return err
		}
		for _, s := range c.senders {
			for _, r := range c.rooms {
				res, err := c.combination(ctx, e, users[:s], r)
				if err != nil {
					return err
				}
				rep.Send = append(rep.Send, *res)
			}
		}
		return nil
	})
	return []*scenarioReport{rep}, err
}

// senderRooms spreads rooms over senders so that every room has a sender and
// every sender a room: sender i sends to the rooms r with r ≡ i (mod senders)
// when there are more rooms than senders, else to room i mod rooms.
func senderRooms(i, senders, rooms int) []int {
	if senders >= rooms {
		return []int{i % rooms}
	}
	var out []int
	for r := i; r < rooms; r += senders {
		out = append(out, r)
	}
	return out
}

func (c *sendConfig) combination(ctx context.Context, e *env, users []*session, nrooms int) (*sendResult, error) {
	label := fmt.Sprintf("send s%d r%d", len(users), nrooms)
	e.logf("%s: creating %d rooms", label, nrooms)
	rooms, err := e.createRooms(ctx, users[0], nrooms, label)
	if err != nil {
		return nil, err
	}
	var joins []membership
	plan := make([][]string, len(users))
	for i, u := range users {
		for _, r := range senderRooms(i, len(users), nrooms) {
			plan[i] = append(plan[i], rooms[r])
			if i != 0 { // the creator is in every room already
				joins = append(joins, membership{u, rooms[r]})
			}
		}
	}
	if err := e.joinAll(ctx, joins); err != nil {
		return nil, err
	}

	p := planFor(len(users), c.rate, c.events, c.duration)
	var completed atomic.Int64
	limited0 := e.c.rateLimited.Load()
	began := time.Now()
	stop := e.every(time.Second, func() string {
		n, secs := completed.Load(), time.Since(began).Seconds()
		bound := fmt.Sprintf("%.0fs/%v", secs, c.duration)
		if c.events > 0 {
			bound = fmt.Sprintf("%d/%d events", n, c.events)
		}
		return fmt.Sprintf("  %s: %s, %d sent, %.0f/s", label, bound, n, float64(n)/secs)
	})
	res, err := runPlan(ctx, e.clk, p, &completed, func(ctx context.Context, ev event) error {
		u, rs := users[ev.worker], plan[ev.worker]
		seq := int64(ev.index)
		_, err := u.sendMessage(ctx, rs[ev.seq%len(rs)], benchContent{
			MsgType: "m.text",
			Body:    fmt.Sprintf("plaza-bench %s message %d", label, ev.index),
			Run:     e.runID,
			Seq:     &seq,
		})
		return err
	})
	stop()
	if err != nil {
		return nil, err
	}
	out := &sendResult{
		Senders:     len(users),
		Rooms:       nrooms,
		TargetRate:  c.rate,
		Events:      res.completed,
		ElapsedS:    res.elapsed().Seconds(),
		Latency:     summarize(res.latencies),
		RateLimited: e.c.rateLimited.Load() - limited0,
	}
	if out.ElapsedS > 0 {
		out.EventsPerSec = float64(out.Events) / out.ElapsedS
	}
	e.logf("%s: %d events in %.2fs, %.1f/s, p50 %.2fms p99 %.2fms", label, out.Events, out.ElapsedS, out.EventsPerSec, out.Latency.P50MS, out.Latency.P99MS)
	return out, nil
}

func planFor(workers int, rate float64, events int, duration time.Duration) plan {
	p := plan{workers: workers, rate: rate, events: events, duration: duration}
	if events > 0 {
		p.duration = 0
	}
	return p
}
