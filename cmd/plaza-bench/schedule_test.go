package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock only moves when told: sleeping jumps to the wake-up time and a
// fake send advances it by its duration, so single-worker schedules are
// exact.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.After(f.now) {
		f.now = t
	}
	return ctx.Err()
}

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestPlanSlot(t *testing.T) {
	p := plan{workers: 3, rate: 10, duration: time.Second}
	tests := []struct {
		w, j   int
		k      int
		due    time.Duration
		inside bool
	}{
		{0, 0, 0, 0, true},
		{1, 0, 1, 100 * time.Millisecond, true},
		{1, 2, 7, 700 * time.Millisecond, true},
		{0, 3, 9, 900 * time.Millisecond, true},
		{1, 3, 10, time.Second, false}, // due exactly at the end: not started
	}
	for _, tt := range tests {
		k, due, ok := p.slot(tt.w, tt.j)
		if k != tt.k || due != tt.due || ok != tt.inside {
			t.Errorf("slot(%d, %d) = %d, %v, %v; want %d, %v, %v", tt.w, tt.j, k, due, ok, tt.k, tt.due, tt.inside)
		}
	}
	if got := p.planned(); got != 10 {
		t.Errorf("planned() = %d, want 10", got)
	}
	byCount := plan{workers: 3, rate: 10, events: 4}
	if _, _, ok := byCount.slot(0, 1); !ok { // k = 3
		t.Error("event 3 of 4: want inside the run")
	}
	if _, _, ok := byCount.slot(1, 1); ok { // k = 4
		t.Error("event 4 of 4: want outside the run")
	}
}

// A server slower than the schedule makes open-loop latency grow by the
// queueing delay, while closed-loop latency stays the service time.
func TestRunPlanOpenLoopCountsQueueing(t *testing.T) {
	tests := []struct {
		name    string
		p       plan
		service time.Duration
		want    []time.Duration
		elapsed time.Duration
	}{
		{
			name:    "open loop, server too slow",
			p:       plan{workers: 1, rate: 100, events: 5}, // due every 10ms
			service: 30 * time.Millisecond,
			want:    msList(30, 50, 70, 90, 110),
			elapsed: 150 * time.Millisecond,
		},
		{
			name:    "open loop, server fast enough",
			p:       plan{workers: 1, rate: 100, events: 5},
			service: 5 * time.Millisecond,
			want:    msList(5, 5, 5, 5, 5),
			elapsed: 45 * time.Millisecond, // the schedule, not the server, sets the pace
		},
		{
			name:    "closed loop",
			p:       plan{workers: 1, events: 5},
			service: 30 * time.Millisecond,
			want:    msList(30, 30, 30, 30, 30),
			elapsed: 150 * time.Millisecond,
		},
		{
			name:    "open loop bounded by duration",
			p:       plan{workers: 1, rate: 100, duration: 35 * time.Millisecond}, // due 0, 10, 20, 30
			service: 5 * time.Millisecond,
			want:    msList(5, 5, 5, 5),
			elapsed: 35 * time.Millisecond,
		},
		{
			name:    "closed loop bounded by duration",
			p:       plan{workers: 1, duration: 100 * time.Millisecond},
			service: 30 * time.Millisecond, // starts at 0, 30, 60, 90
			want:    msList(30, 30, 30, 30),
			elapsed: 120 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			var order []int
			res, err := runPlan(context.Background(), clk, tt.p, nil, func(ctx context.Context, ev event) error {
				order = append(order, ev.index)
				clk.advance(tt.service)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.latencies, tt.want) {
				t.Errorf("latencies = %v, want %v", res.latencies, tt.want)
			}
			if got := res.elapsed(); got != tt.elapsed {
				t.Errorf("elapsed = %v, want %v", got, tt.elapsed)
			}
			if int(res.completed) != len(tt.want) {
				t.Errorf("completed = %d, want %d", res.completed, len(tt.want))
			}
			for i, k := range order {
				if k != i {
					t.Fatalf("event order = %v, want 0, 1, 2, …", order)
				}
			}
		})
	}
}

// With many workers on the real clock, every planned event is sent exactly
// once whatever the interleaving.
func TestRunPlanSendsEachEventOnce(t *testing.T) {
	tests := []struct {
		name string
		p    plan
		want int
	}{
		{"open loop by duration", plan{workers: 4, rate: 1000, duration: 50 * time.Millisecond}, 50},
		{"open loop by count", plan{workers: 3, rate: 2000, events: 41}, 41},
		{"closed loop by count", plan{workers: 5, events: 37}, 37},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			seen := map[int]int{}
			res, err := runPlan(context.Background(), wallClock{}, tt.p, nil, func(ctx context.Context, ev event) error {
				mu.Lock()
				defer mu.Unlock()
				seen[ev.index]++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != tt.want || int(res.completed) != tt.want || len(res.latencies) != tt.want {
				t.Errorf("sent %d distinct, completed %d, %d latencies; want %d", len(seen), res.completed, len(res.latencies), tt.want)
			}
			for k, n := range seen {
				if k < 0 || k >= tt.want || n != 1 {
					t.Errorf("event %d sent %d times", k, n)
				}
			}
		})
	}
}

func TestRunPlanStops(t *testing.T) {
	t.Run("first error", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := runPlan(context.Background(), wallClock{}, plan{workers: 4, events: 1000}, nil, func(ctx context.Context, ev event) error {
			if ev.index == 10 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			// An hour-long open-loop run: only cancellation can end it.
			_, err := runPlan(ctx, wallClock{}, plan{workers: 2, rate: 10, duration: time.Hour}, nil, func(ctx context.Context, ev event) error {
				return nil
			})
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("runPlan did not stop after cancellation")
		}
	})
}

func TestSenderRooms(t *testing.T) {
	tests := []struct {
		i, senders, rooms int
		want              []int
	}{
		{0, 1, 1, []int{0}},
		{5, 8, 1, []int{0}},
		{0, 1, 3, []int{0, 1, 2}},
		{1, 2, 5, []int{1, 3}},
		{3, 8, 4, []int{3}},
		{6, 8, 4, []int{2}},
	}
	for _, tt := range tests {
		if got := senderRooms(tt.i, tt.senders, tt.rooms); !slices.Equal(got, tt.want) {
			t.Errorf("senderRooms(%d, %d, %d) = %v, want %v", tt.i, tt.senders, tt.rooms, got, tt.want)
		}
	}
}
