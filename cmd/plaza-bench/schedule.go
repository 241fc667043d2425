package main

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// plan says which events a run sends and when.
//
// With a rate the run is open-loop: event k is due at start + k/rate whether
// or not earlier requests have come back, and worker w owns the events
// k = j*workers + w. A worker that falls behind sends its next event at once,
// and that event's latency is measured from when it was due, so time spent
// queued behind a slow server is part of the latency instead of silently
// lowering the offered load (coordinated omission).
//
// Without a rate the run is closed-loop: each worker sends its next event as
// soon as the previous one completes, and latency is the request alone.
//
// A run is bounded by events (when > 0) or else by duration: no event is
// started once duration has passed since start.
type plan struct {
	workers  int
	rate     float64 // total events per second; 0 = as fast as possible
	events   int     // total events; 0 = bounded by duration
	duration time.Duration
}

func (p plan) openLoop() bool { return p.rate > 0 }

// offset is when event k is due, relative to the start of an open-loop run.
func (p plan) offset(k int) time.Duration {
	return time.Duration(math.Round(float64(k) * float64(time.Second) / p.rate))
}

// slot reports the global index of worker w's j-th event in an open-loop run,
// when it is due relative to the start, and whether it belongs to the run.
func (p plan) slot(w, j int) (k int, due time.Duration, ok bool) {
	k = j*p.workers + w
	due = p.offset(k)
	if p.events > 0 {
		return k, due, k < p.events
	}
	return k, due, due < p.duration
}

// planned is how many events an open-loop run will send (an upper bound for a
// closed-loop run bounded by events; unknown, 0, for a closed-loop run bounded
// by duration).
func (p plan) planned() int {
	if p.events > 0 {
		return p.events
	}
	if !p.openLoop() {
		return 0
	}
	return int(math.Ceil(p.duration.Seconds() * p.rate))
}

// clock is the time source of a run; tests replace it to make scheduling
// deterministic.
type clock interface {
	Now() time.Time
	// SleepUntil returns when t has come or ctx is done, whichever is first.
	SleepUntil(ctx context.Context, t time.Time) error
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// event identifies one event of a run for the function that sends it.
type event struct {
	worker int // which worker sends it
	seq    int // the worker's own count, from 0
	index  int // the run-wide index, from 0, unique in the run
}

// runResult is what a run observed.
type runResult struct {
	latencies []time.Duration // one per completed event, in no order
	start     time.Time
	last      time.Time // when the last event completed
	completed int64
}

// elapsed is the time from the start to the last completion, the denominator
// of the achieved rate.
func (r *runResult) elapsed() time.Duration {
	if r.last.Before(r.start) {
		return 0
	}
	return r.last.Sub(r.start)
}

// runPlan drives p.workers workers calling send for each event of the plan and
// returns their latencies. It stops at the first error, which it returns. The
// completed counter, if not nil, is updated as events complete so progress can
// be reported while the run goes on.
func runPlan(ctx context.Context, clk clock, p plan, completed *atomic.Int64, send func(ctx context.Context, ev event) error) (*runResult, error) {
	if completed == nil {
		completed = new(atomic.Int64)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	start := clk.Now()
	end := start.Add(p.duration)
	var next atomic.Int64 // closed loop: the next unclaimed event index

	var (
		mu   sync.Mutex
		res  = &runResult{start: start, last: start}
		wg   sync.WaitGroup
		errs = make(chan error, p.workers)
	)
	for w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var last time.Time
			defer func() {
				mu.Lock()
				res.latencies = append(res.latencies, lat...)
				if last.After(res.last) {
					res.last = last
				}
				mu.Unlock()
			}()
			for j := 0; ctx.Err() == nil; j++ {
				ev := event{worker: w, seq: j}
				var due time.Time
				if p.openLoop() {
					k, off, ok := p.slot(w, j)
					if !ok {
						return
					}
					ev.index, due = k, start.Add(off)
					if err := clk.SleepUntil(ctx, due); err != nil {
						return
					}
				} else {
					ev.index = int(next.Add(1) - 1)
					if p.events > 0 && ev.index >= p.events {
						return
					}
					due = clk.Now()
					if p.events == 0 && !due.Before(end) {
						return
					}
				}
				if err := send(ctx, ev); err != nil {
					if ctx.Err() == nil {
						errs <- err
						cancel(err)
					}
					return
				}
				last = clk.Now()
				lat = append(lat, last.Sub(due))
				completed.Add(1)
			}
		}()
	}
	wg.Wait()
	res.completed = int64(len(res.latencies))
	select {
	case err := <-errs:
		return res, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return res, context.Cause(ctx)
	}
	return res, nil
}
