package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

const deliverHelp = `
Measures how long a message takes to reach many clients through /sync.

--clients users join one fresh room and each runs a /sync long-poll loop
(timeout=30000, the previous next_batch as since, an inline filter limited to
the room with a small timeline limit). One sender user posts m.room.message
events at --rate for --duration, open-loop, each carrying its sequence number
and its send time on this process's monotonic clock ("bench_seq",
"bench_ts"). Every client records receive time minus send time for every
message it sees. A timeline that comes back "limited" is backfilled through
/rooms/{roomId}/messages, so a small limit does not lose messages.

After the last send, clients get up to --drain to catch up; then the loops
stop. Reports delivery latency p50/p90/p99/max over all deliveries, send
latency, and the number of missed and duplicated deliveries, which must both
be 0 (otherwise the run fails).
`

type deliverConfig struct {
	clients       int
	rate          float64
	duration      time.Duration
	drain         time.Duration
	timelineLimit int
	sendWorkers   int
}

func newDeliverConfig() scenarioConfig {
	return &deliverConfig{clients: 100, rate: 50, duration: 10 * time.Second, drain: 15 * time.Second, timelineLimit: 10, sendWorkers: 4}
}

func (c *deliverConfig) bind(fs *flag.FlagSet) {
	fs.IntVar(&c.clients, "clients", c.clients, "`number` of syncing clients, each its own user")
	fs.Float64Var(&c.rate, "rate", c.rate, "`messages/s` the sender posts, open-loop")
	fs.DurationVar(&c.duration, "duration", c.duration, "how long the sender posts")
	fs.DurationVar(&c.drain, "drain", c.drain, "how long clients may take to catch up after the last send")
	fs.IntVar(&c.timelineLimit, "timeline-limit", c.timelineLimit, "timeline `limit` in the clients' sync filter")
	fs.IntVar(&c.sendWorkers, "send-workers", c.sendWorkers, "`number` of sends the sender may have in flight, so one slow send does not hold back the schedule")
}

// Bounds that keep the recorded samples (one per delivery) within memory.
const (
	maxClients      = 10000
	maxDeliverSends = 1_000_000
	maxDeliveries   = 20_000_000
)

func (c *deliverConfig) validate(map[string]bool) error {
	switch {
	case c.clients <= 0 || c.clients > maxClients:
		return fmt.Errorf("--clients %d: want 1 to %d", c.clients, maxClients)
	case c.rate <= 0:
		return fmt.Errorf("--rate %v: must be positive", c.rate)
	case c.duration <= 0:
		return fmt.Errorf("--duration %v: must be positive", c.duration)
	case c.drain <= 0:
		return fmt.Errorf("--drain %v: must be positive", c.drain)
	case c.timelineLimit <= 0:
		return fmt.Errorf("--timeline-limit %d: must be positive", c.timelineLimit)
	case c.sendWorkers <= 0 || c.sendWorkers > 256:
		return fmt.Errorf("--send-workers %d: want 1 to 256", c.sendWorkers)
	}
	sends := c.rate * c.duration.Seconds()
	if sends > maxDeliverSends {
		return fmt.Errorf("--rate × --duration = %.0f messages: at most %d", sends, maxDeliverSends)
	}
	if sends*float64(c.clients) > maxDeliveries {
		return fmt.Errorf("--clients × --rate × --duration = %.0f deliveries: at most %d", sends*float64(c.clients), maxDeliveries)
	}
	return nil
}

func (c *deliverConfig) params() map[string]any {
	return map[string]any{"clients": c.clients, "rate": c.rate, "duration": c.duration.String(), "timeline_limit": c.timelineLimit}
}

type deliverResult struct {
	Clients     int            `json:"clients"`
	TargetRate  float64        `json:"target_rate"`
	Sent        int            `json:"sent"`
	SentPerSec  float64        `json:"sent_per_s"`
	Expected    int64          `json:"expected_deliveries"`
	Delivered   int64          `json:"delivered"`
	Missed      int64          `json:"missed"`
	Duplicated  int64          `json:"duplicated"`
	Unexpected  int64          `json:"unexpected"` // run messages with a seq never sent successfully
	Gaps        int64          `json:"gaps"`       // limited timelines backfilled
	Latency     latencySummary `json:"latency"`
	SendLatency latencySummary `json:"send_latency"`
}

// The long-poll timeout the spec's clients use, and the cap on backfill.
const (
	longPoll           = 30 * time.Second
	maxBackfillPages   = 100
	backfillPageLimit  = 100
	drainCheckInterval = 20 * time.Millisecond
)

// syncClient is one receiving user and what it has seen.
type syncClient struct {
	s     *session
	since string

	seen      map[int64]bool // by bench_seq; owned by the client's loop
	unique    atomic.Int64
	dups      int64
	unexpect  int64
	gaps      int64
	latencies []time.Duration
}

func (c *deliverConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "deliver", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.deliver(ctx, e)
		rep.Deliver = res
		return err
	})
	return []*scenarioReport{rep}, err
}

// syncFilter is the clients' inline filter: this room only, few events, no
// presence or account data, lazy-loaded members.
func syncFilter(roomID string, limit int) string {
	f := map[string]any{
		"presence":     map[string]any{"types": []string{}},
		"account_data": map[string]any{"types": []string{}},
		"room": map[string]any{
			"rooms":        []string{roomID},
			"timeline":     map[string]any{"limit": limit},
			"state":        map[string]any{"lazy_load_members": true},
			"ephemeral":    map[string]any{"types": []string{}},
			"account_data": map[string]any{"types": []string{}},
		},
	}
	b, _ := json.Marshal(f) // plain maps and strings always marshal
	return string(b)
}

func (c *deliverConfig) deliver(ctx context.Context, e *env) (*deliverResult, error) {
	names := make([]string, c.clients+1)
	names[0] = e.g.UsersPrefix + "-deliver-sender"
	for i := range c.clients {
		names[i+1] = fmt.Sprintf("%s-deliver-%d", e.g.UsersPrefix, i)
	}
	users, err := e.accounts(ctx, names)
	if err != nil {
		return nil, err
	}
	sender := users[0]
	rooms, err := e.createRooms(ctx, sender, 1, "deliver")
	if err != nil {
		return nil, err
	}
	room := rooms[0]
	joins := make([]membership, c.clients)
	for i := range joins {
		joins[i] = membership{users[i+1], room}
	}
	e.logf("deliver: %d clients joining %s", c.clients, room)
	if err := e.joinAll(ctx, joins); err != nil {
		return nil, err
	}
	return c.measure(ctx, e, sender, room, users[1:])
}

// measure runs the sends and the receivers' sync loops once the receivers
// are joined to room.
func (c *deliverConfig) measure(ctx context.Context, e *env, sender *session, room string, receivers []*session) (*deliverResult, error) {
	clients := make([]*syncClient, len(receivers))
	for i := range clients {
		clients[i] = &syncClient{s: receivers[i], seen: map[int64]bool{}}
	}

	// Every client holds a since token from before the first send, so each
	// message must reach each client through incremental syncs.
	filter := syncFilter(room, c.timelineLimit)
	e.logf("deliver: initial syncs")
	err := parallel(ctx, len(clients), setupConcurrency, func(ctx context.Context, i int) error {
		resp, err := clients[i].s.sync(ctx, syncParams{filter: filter})
		if err != nil {
			return err
		}
		var sr syncResponse
		if err := json.Unmarshal(resp.body, &sr); err != nil {
			return fmt.Errorf("%s: decode sync: %w", clients[i].s.UserID, err)
		}
		if sr.NextBatch == "" {
			return fmt.Errorf("%s: sync returned no next_batch", clients[i].s.UserID)
		}
		clients[i].since = sr.NextBatch
		return nil
	})
	if err != nil {
		return nil, err
	}

	p := plan{workers: c.sendWorkers, rate: c.rate, duration: c.duration}
	sentOK := make([]atomic.Bool, p.planned())

	loopCtx, stopLoops := context.WithCancelCause(ctx)
	defer stopLoops(nil)
	var wg sync.WaitGroup
	var loopErr atomic.Pointer[error]
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.syncLoop(loopCtx, e, cl, room, filter, sentOK); err != nil && loopCtx.Err() == nil {
				loopErr.CompareAndSwap(nil, &err)
				stopLoops(err)
			}
		}()
	}
	finish := func() error {
		stopLoops(nil)
		wg.Wait()
		if p := loopErr.Load(); p != nil {
			return *p
		}
		return nil
	}

	var completed atomic.Int64
	stop := e.every(time.Second, func() string {
		var got int64
		for _, cl := range clients {
			got += cl.unique.Load()
		}
		return fmt.Sprintf("  deliver: %d sent, %d deliveries", completed.Load(), got)
	})
	e.logf("deliver: sending %.1f/s for %v to %d clients", c.rate, c.duration, c.clients)
	sendRes, err := runPlan(loopCtx, e.clk, p, &completed, func(ctx context.Context, ev event) error {
		seq := int64(ev.index)
		content := benchContent{
			MsgType: "m.text",
			Body:    fmt.Sprintf("plaza-bench deliver message %d", ev.index),
			Run:     e.runID,
			Seq:     &seq,
			TS:      e.monoNS(),
		}
		if _, err := sender.sendMessage(ctx, room, content); err != nil {
			return err
		}
		sentOK[ev.index].Store(true)
		return nil
	})
	if err != nil {
		stop()
		if lerr := finish(); lerr != nil {
			return nil, lerr
		}
		return nil, err
	}

	// Wait for every client to have every message, or for the drain time.
	sent := int64(sendRes.completed)
	want := sent * int64(len(clients))
	drainUntil := time.Now().Add(c.drain)
	for time.Now().Before(drainUntil) && loopCtx.Err() == nil {
		var got int64
		for _, cl := range clients {
			got += cl.unique.Load()
		}
		if got >= want {
			break
		}
		time.Sleep(drainCheckInterval)
	}
	stop()
	if err := finish(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &deliverResult{
		Clients:     c.clients,
		TargetRate:  c.rate,
		Sent:        int(sent),
		Expected:    want,
		SendLatency: summarize(sendRes.latencies),
	}
	if secs := sendRes.elapsed().Seconds(); secs > 0 {
		res.SentPerSec = float64(sent) / secs
	}
	var all []time.Duration
	for _, cl := range clients {
		res.Delivered += cl.unique.Load()
		res.Duplicated += cl.dups
		res.Unexpected += cl.unexpect
		res.Gaps += cl.gaps
		all = append(all, cl.latencies...)
		for i := range sentOK {
			if sentOK[i].Load() && !cl.seen[int64(i)] {
				res.Missed++
			}
		}
	}
	res.Latency = summarize(all)
	e.logf("deliver: %d/%d deliveries, p50 %.2fms p99 %.2fms, missed %d duplicated %d",
		res.Delivered, res.Expected, res.Latency.P50MS, res.Latency.P99MS, res.Missed, res.Duplicated)
	return res, nil
}

// syncLoop long-polls /sync until ctx ends, recording the run's messages.
func (c *deliverConfig) syncLoop(ctx context.Context, e *env, cl *syncClient, room, filter string, sentOK []atomic.Bool) error {
	for ctx.Err() == nil {
		resp, err := cl.s.sync(ctx, syncParams{since: cl.since, filter: filter, timeout: longPoll})
		if err != nil {
			return err
		}
		recv := int64(resp.received.Sub(e.start)) // both carry monotonic readings
		var sr syncResponse
		if err := json.Unmarshal(resp.body, &sr); err != nil {
			return fmt.Errorf("%s: decode sync: %w", cl.s.UserID, err)
		}
		if sr.NextBatch == "" {
			return fmt.Errorf("%s: sync returned no next_batch", cl.s.UserID)
		}
		if jr, ok := sr.Rooms.Join[room]; ok {
			tl := jr.Timeline
			if tl.Limited && tl.PrevBatch != "" {
				cl.gaps++
				if err := c.backfill(ctx, e, cl, room, tl.PrevBatch, cl.since, recv, sentOK); err != nil {
					return err
				}
			}
			for _, ev := range tl.Events {
				cl.record(e, ev, recv, sentOK, false)
			}
		}
		cl.since = sr.NextBatch
	}
	return nil
}

// backfill pages back from a limited timeline's prev_batch to the previous
// since token. The events are recorded as received at recv, when the sync
// that revealed the gap arrived. Paging stops early at a message seen before,
// in case the server does not honour the "to" token; such overlap is ours,
// not the server's, so it does not count as duplication.
func (c *deliverConfig) backfill(ctx context.Context, e *env, cl *syncClient, room, from, to string, recv int64, sentOK []atomic.Bool) error {
	for range maxBackfillPages {
		known := false // reached a message seen before: the gap is filled
		page, err := cl.s.messages(ctx, room, from, to, "b", backfillPageLimit, "")
		if err != nil {
			return err
		}
		for _, ev := range page.Chunk {
			if cl.record(e, ev, recv, sentOK, true) {
				known = true
			}
		}
		if known || len(page.Chunk) == 0 || page.End == "" || page.End == from {
			return nil
		}
		from = page.End
	}
	return errors.New(cl.s.UserID + ": backfill of a limited timeline did not end after " + fmt.Sprint(maxBackfillPages) + " pages")
}

// record notes one event from a sync or a backfill and reports whether it
// is a run message the client had seen already.
func (cl *syncClient) record(e *env, ev syncEvent, recv int64, sentOK []atomic.Bool, backfill bool) (seenBefore bool) {
	if ev.Type != "m.room.message" || ev.Content.Run != e.runID || ev.Content.Seq == nil {
		return false
	}
	seq := *ev.Content.Seq
	if cl.seen[seq] {
		if !backfill {
			cl.dups++
		}
		return true
	}
	if seq < 0 || seq >= int64(len(sentOK)) {
		cl.unexpect++
		return false
	}
	cl.seen[seq] = true
	cl.unique.Add(1)
	cl.latencies = append(cl.latencies, time.Duration(recv-ev.Content.TS))
	return false
}
