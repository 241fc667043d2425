package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"plaza/homeserver/auth"
	"plaza/homeserver/builder"
	"plaza/homeserver/event"
	"plaza/homeserver/storage"
)

// BulkRoom describes a room the bulk loader creates: the create event, the
// initial events, then Count more events from Events.
type BulkRoom struct {
	Version       *event.RoomVersion
	Creator       string
	CreateContent json.RawMessage
	Initial       []Request
	// Events returns the i-th event after the initial ones, 0 <= i < Count.
	Events func(i int) Request
	Count  int
	// From and To spread the events' origin_server_ts evenly: the create
	// event at From, the last event at To (an imported history has days).
	From, To time.Time
	// Progress, if set, hears how many events are persisted so far.
	Progress func(done, total int)
}

// bulkBatch is how many events one bulk transaction writes: large enough
// that COPY pays, small enough that the stream positions it holds in flight
// keep readers waiting only milliseconds.
const bulkBatch = 1000

// BulkCreate creates a room and writes its events at import speed. Every
// event is built, hashed, signed and authorised exactly as Send does it, and
// the rows written are the ones the ordinary writer writes (see
// storage.BulkPersist), each batch in one transaction at its own stream
// positions, published to subscribers before those complete: afterwards the
// room is indistinguishable from one written a message at a time. What
// changes is the cost — one builder goroutine signing while the database
// copies the previous batch, instead of a round trip per event.
//
// The loader holds the room's writer role throughout: Sends to the room
// wait in its queue and run when the load ends. A failure leaves the room
// as of the last batch written, consistent, and is returned with the room
// ID (if the create event was written).
func (s *Service) BulkCreate(ctx context.Context, b BulkRoom) (string, error) {
	total := 1 + len(b.Initial) + b.Count
	span := b.To.Sub(b.From)
	if span < 0 {
		return "", errors.New("bulk room: To before From")
	}
	tsOf := func(i int) int64 {
		if total == 1 {
			return b.From.UnixMilli()
		}
		return b.From.Add(time.Duration(float64(span) * float64(i) / float64(total-1))).UnixMilli()
	}
	if !b.Version.RoomIDFromCreate {
		// Their ID is the create event's hash: no ID to mint, no collision.
		return "", errors.New("bulk rooms are created in room versions whose ID is the create event's")
	}
	signer := builder.Signer{ServerName: s.serverName, Key: s.key}
	create, err := builder.BuildCreate(b.Version, "", b.Creator, b.CreateContent, tsOf(0), signer)
	if errors.Is(err, auth.ErrForbidden) {
		return "", fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	if err != nil {
		return "", err
	}
	roomID := create.RoomID()

	// Take the writer role before the room exists anywhere: a load of the
	// new ID waits for the first batch, and Sends queue behind the loader.
	r := s.entry(roomID)
	r.loadMu.Lock()
	loadHeld := true
	defer func() {
		if loadHeld {
			r.loadMu.Unlock()
		}
	}()
	if r.loaded {
		return "", fmt.Errorf("room %s exists already", roomID)
	}
	r.qmu.Lock()
	r.writing = true
	r.qmu.Unlock()
	defer func() {
		r.qmu.Lock()
		more := len(r.queue) > 0
		r.writing = more
		r.qmu.Unlock()
		if more {
			go s.drainOnce(r)
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []storage.NewEvent, 2)
	built := make(chan error, 1)
	go func() {
		built <- s.bulkBuild(ctx, b, create, tsOf, batches)
		close(batches)
	}()

	row := &storage.Room{RoomID: roomID, Version: b.Version}
	chainLen, done := 0, 0
	for batch := range batches {
		for i := range batch {
			batch[i].StreamPos = s.tracker.Reserve()
		}
		last := batch[len(batch)-1].Event
		persisted, err := s.db.BulkPersist(ctx, row, batch, chainLen, []string{last.ID()})
		if err != nil {
			for _, ne := range batch {
				s.tracker.Complete(ne.StreamPos)
			}
			cancel()
			for range batches {
			}
			return roomIDIf(done > 0, roomID), fmt.Errorf("bulk persist: %w", err)
		}
		stored := make([]*storage.StoredEvent, len(batch))
		r.smu.Lock()
		if r.row == nil {
			r.row, r.state, r.joined = row, map[event.TypeKey]stateItem{}, 0
		}
		for i, ne := range batch {
			if tk, ok := ne.Event.TypeKey(); ok {
				r.setState(tk, stateItem{nid: persisted[i].NID, ev: ne.Event})
			}
			stored[i] = &storage.StoredEvent{NID: persisted[i].NID, StreamPos: ne.StreamPos, Event: ne.Event, ReplacesState: ne.ReplacesState}
		}
		r.extremities = []*event.Event{last}
		r.chainLen = persisted[len(persisted)-1].ChainLen
		chainLen = r.chainLen
		r.smu.Unlock()
		if !r.loaded {
			r.loaded = true
			r.loadMu.Unlock()
			loadHeld = false
		}
		s.publish(roomID, stored)
		for _, ne := range batch {
			s.tracker.Complete(ne.StreamPos)
		}
		done += len(batch)
		if b.Progress != nil {
			b.Progress(done, total)
		}
	}
	if err := <-built; err != nil {
		return roomIDIf(done > 0, roomID), err
	}
	return roomID, nil
}

func roomIDIf(ok bool, roomID string) string {
	if ok {
		return roomID
	}
	return ""
}

// bulkBuild builds the room's events in order and hands them over in
// batches. It keeps its own view of the state (the loader is the only
// writer, so it is the room's state as the batches commit).
func (s *Service) bulkBuild(ctx context.Context, b BulkRoom, create *event.Event, tsOf func(int) int64, out chan<- []storage.NewEvent) error {
	signer := builder.Signer{ServerName: s.serverName, Key: s.key}
	state := map[event.TypeKey]*event.Event{{Type: event.TypeCreate}: create}
	lookup := func(typ, sk string) *event.Event { return state[event.TypeKey{Type: typ, StateKey: sk}] }
	prev := []*event.Event{create}
	batch := make([]storage.NewEvent, 0, bulkBatch)
	batch = append(batch, storage.NewEvent{Event: create})
	chainLen := 0 // the create event starts the room with a full snapshot
	send := func() error {
		select {
		case out <- batch:
		case <-ctx.Done():
			return ctx.Err()
		}
		batch = make([]storage.NewEvent, 0, bulkBatch)
		return nil
	}
	total := 1 + len(b.Initial) + b.Count
	for i := 1; i < total; i++ {
		var req Request
		if i <= len(b.Initial) {
			req = b.Initial[i-1]
		} else {
			req = b.Events(i - 1 - len(b.Initial))
		}
		if req.Redacts != "" || req.Type == event.TypeRedaction {
			return fmt.Errorf("event %d: bulk loads do not apply redactions", i)
		}
		ev, err := builder.Build(builder.Room{Version: b.Version, ID: create.RoomID(), State: lookup, Extremities: prev},
			builder.Request{Sender: req.Sender, Type: req.Type, StateKey: req.StateKey, Content: req.Content}, tsOf(i), signer)
		if errors.Is(err, auth.ErrForbidden) {
			return fmt.Errorf("event %d: %w: %w", i, ErrForbidden, err)
		}
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		ne := storage.NewEvent{Event: ev}
		if tk, ok := ev.TypeKey(); ok {
			if old := state[tk]; old != nil {
				ne.ReplacesState = old.ID()
			}
			if ev.Type() == event.TypeMember {
				ne.Membership = MembershipOf(ev)
			}
			// The writer's snapshot policy (writeBatch), so the state
			// groups are the ones a message-at-a-time room would have.
			chainLen++
			if chainLen >= max(64, len(state)/8) {
				ne.Snapshot, chainLen = true, 0
			}
			state[tk] = ev
		}
		prev = []*event.Event{ev}
		batch = append(batch, ne)
		if len(batch) == bulkBatch {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		return send()
	}
	return nil
}
