package stream

import (
	"context"
	"math/rand"
	"sync"
	"testing"
	"time"
)

func TestOutOfOrderCompletionHoldsReadersBack(t *testing.T) {
	tr := NewTracker(10, 0)
	a, b, c := tr.Reserve(), tr.Reserve(), tr.Reserve()
	if a != 11 || b != 12 || c != 13 {
		t.Fatalf("positions %d %d %d", a, b, c)
	}
	tr.Complete(c)
	tr.Complete(b)
	if got := tr.UpTo(); got != 10 {
		t.Fatalf("UpTo = %d while 11 is in flight, want 10", got)
	}
	tr.Complete(a)
	if got := tr.UpTo(); got != 13 {
		t.Fatalf("UpTo = %d after all completed, want 13", got)
	}
}

func TestWaitWakesOnAdvanceAndOnCancel(t *testing.T) {
	tr := NewTracker(0, 0)
	done := make(chan int64)
	go func() { done <- tr.Wait(context.Background(), 0) }()
	p := tr.Reserve()
	select {
	case <-done:
		t.Fatal("Wait returned before the position completed")
	case <-time.After(20 * time.Millisecond):
	}
	tr.Complete(p)
	if got := <-done; got != 1 {
		t.Fatalf("Wait = %d, want 1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- tr.Wait(ctx, 1) }()
	cancel()
	if got := <-done; got != 1 {
		t.Fatalf("cancelled Wait = %d, want 1", got)
	}
}

// Concurrent writers completing in random order: a reader must never see a
// position as visible while a lower one is still in flight.
func TestConcurrentNeverSkips(t *testing.T) {
	tr := NewTracker(0, 0)
	var mu sync.Mutex
	completed := map[int64]bool{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	violations := make(chan int64, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			upto := tr.UpTo()
			mu.Lock()
			for p := int64(1); p <= upto; p++ {
				if !completed[p] {
					select {
					case violations <- p:
					default:
					}
				}
			}
			mu.Unlock()
		}
	}()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				p := tr.Reserve()
				time.Sleep(time.Duration(rand.Intn(50)) * time.Microsecond)
				mu.Lock()
				completed[p] = true
				mu.Unlock()
				tr.Complete(p)
			}
		}()
	}
	wg.Wait()
	close(stop)
	select {
	case p := <-violations:
		t.Fatalf("position %d was visible before it completed", p)
	default:
	}
	if tr.UpTo() != 1600 {
		t.Fatalf("UpTo = %d, want 1600", tr.UpTo())
	}
	if b := tr.ReserveBackfill(); b != -1 {
		t.Fatalf("first backfill position %d", b)
	}
}

func TestBlocksAreRecordedBeforeUse(t *testing.T) {
	tr := NewTracker(5, 0)
	var recorded []int64
	tr.RecordBlocks(func(end int64) error { recorded = append(recorded, end); return nil }, nil)
	for i := 0; i < BlockSize+1; i++ {
		p := tr.Reserve()
		if len(recorded) == 0 || p > recorded[len(recorded)-1] {
			t.Fatalf("position %d handed out beyond the recorded block end %v", p, recorded)
		}
		tr.Complete(p)
	}
	if len(recorded) != 2 || recorded[0] != 5+BlockSize || recorded[1] != 5+2*BlockSize {
		t.Fatalf("recorded blocks %v", recorded)
	}
}
