// Package stream owns positions in the global stream and the notification of
// readers when new positions become visible.
//
// Writers reserve a position before they commit what it orders and complete it
// after. Positions may commit out of order (two rooms write at once), so
// readers only ever see "up to" the highest position below which nothing is
// still in flight: no reader can read past a gap that will later be filled,
// and so no event is ever skipped.
//
// Positions are handed out in memory: one process owns the stream (DESIGN.md,
// "Scale": several writers later carry a vector of such positions in tokens).
package stream

import (
	"context"
	"sync"
)

// Tracker hands out stream positions and tracks which are persisted.
type Tracker struct {
	mu       sync.Mutex
	last     int64              // highest position handed out
	backfill int64              // lowest (negative) backfill position handed out
	inflight map[int64]struct{} // reserved, not yet completed
	upto     int64              // every position <= upto is complete
	changed  chan struct{}      // closed and replaced whenever upto advances

	// Positions are handed out in blocks whose end is recorded first, so a
	// restarted tracker starts above every position ever handed out.
	blockEnd     int64
	recordBlock  func(end int64) error
	recordErrors func(error)
}

// BlockSize is how many positions are handed out per recorded block.
const BlockSize = 1000

// NewTracker starts after the highest position already persisted, and below
// the lowest backfill position already persisted (0 if none).
func NewTracker(last, lowestBackfill int64) *Tracker {
	if lowestBackfill > 0 {
		lowestBackfill = 0
	}
	return &Tracker{last: last, upto: last, backfill: lowestBackfill, inflight: map[int64]struct{}{}, changed: make(chan struct{}),
		blockEnd: 1<<62 - 1}
}

// RecordBlocks makes the tracker call record with the end of each new block
// of positions before handing out any position in it. A failure is reported
// to onError and the block is used anyway: refusing to write would be worse
// than a token that, after a restart, may run ahead of the stream.
func (t *Tracker) RecordBlocks(record func(end int64) error, onError func(error)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recordBlock, t.recordErrors, t.blockEnd = record, onError, t.last
}

// Reserve hands out the next position. The caller must Complete it, whether
// the write committed or not; an abandoned position is a harmless gap.
func (t *Tracker) Reserve() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last+1 > t.blockEnd {
		t.blockEnd = t.last + BlockSize
		if err := t.recordBlock(t.blockEnd); err != nil && t.recordErrors != nil {
			t.recordErrors(err)
		}
	}
	t.last++
	t.inflight[t.last] = struct{}{}
	return t.last
}

// ReserveBackfill hands out a negative position for an event from the past.
// Such positions are below every token, so they need no tracking.
func (t *Tracker) ReserveBackfill() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.backfill--
	return t.backfill
}

// Complete marks a reserved position as persisted (or abandoned) and wakes
// readers if the visible position advanced.
func (t *Tracker) Complete(pos int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, pos)
	upto := t.last
	for p := range t.inflight {
		if p-1 < upto {
			upto = p - 1
		}
	}
	if upto > t.upto {
		t.upto = upto
		close(t.changed)
		t.changed = make(chan struct{})
	}
}

// UpTo returns the highest position readers may read up to.
func (t *Tracker) UpTo() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.upto
}

// Changed returns the current visible position and a channel closed when it
// next advances.
func (t *Tracker) Changed() (int64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.upto, t.changed
}

// Wait blocks until the visible position is greater than after, or ctx ends;
// it returns the visible position.
func (t *Tracker) Wait(ctx context.Context, after int64) int64 {
	for {
		upto, ch := t.Changed()
		if upto > after {
			return upto
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return t.UpTo()
		}
	}
}
