package peek

import (
	"context"
	"net/http"
	"time"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
	"plaza/peek/snapshot"
)

// maxStreamChunk bounds one /events answer; the client comes back for more.
const maxStreamChunk = 100

// events serves the room previews' GET /events?room_id=: the room's new
// world-readable events after "from", waiting up to "timeout" ms for some.
// Waiters wait on the room's snapshot, so a busy room wakes its viewers once
// per change, not once per event per viewer poll.
func (s *Service) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	roomID := q.Get("room_id")
	if roomID == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("room_id is required (only room previews use /events)"))
		return
	}
	timeoutMS, err := intParam(r, "timeout", 0, int(5*time.Minute/time.Millisecond))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	from := int64(-1)
	if t := q.Get("from"); t != "" {
		if from, err = parseStreamToken(t); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	deadline := time.NewTimer(time.Duration(timeoutMS) * time.Millisecond)
	defer deadline.Stop()
	for {
		upto := s.hs.Rooms.UpTo()
		snap, err := s.snapshot(ctx, roomID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if !snap.Summary.WorldReadable() {
			httpapi.Fail(w, r, httpapi.Forbidden("this room is not world-readable"))
			return
		}
		end := max(upto, snap.Pos)
		if from < 0 {
			from = end // no token: stream from now on
		}
		evs, reached, err := s.eventsAfter(ctx, snap, roomID, from, upto)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if reached >= 0 {
			end = reached
		}
		if len(evs) > 0 || timeoutMS == 0 {
			if len(evs) > maxStreamChunk {
				evs = evs[:maxStreamChunk]
				end = evs[len(evs)-1].Pos
			}
			end = max(end, from)
			b := append([]byte(`{"start":`), appendString(nil, streamToken(from))...)
			b = append(b, `,"end":`...)
			b = appendString(b, streamToken(end))
			b = append(b, `,"chunk":[`...)
			nowMS := s.now().UnixMilli()
			for i, e := range evs {
				if i > 0 {
					b = append(b, ',')
				}
				b = snapshot.AppendEvent(b, e, nowMS)
			}
			httpapi.RespondRaw(w, http.StatusOK, append(b, "]}"...))
			return
		}
		select {
		case <-snap.Changed():
		case <-deadline.C:
			timeoutMS = 0
		case <-ctx.Done():
			return
		}
	}
}

// eventsAfter returns the room's world-readable events after pos: from the
// snapshot when it reaches back that far, else from storage. reached is the
// position a truncated storage read got to (-1 when not truncated).
func (s *Service) eventsAfter(ctx context.Context, snap *snapshot.Snapshot, roomID string, pos, upto int64) (evs []*snapshot.Event, reached int64, err error) {
	if evs, ok := snap.Since(pos); ok {
		return evs, -1, nil
	}
	nid, err := s.hs.DB.RoomNID(ctx, roomID)
	if err != nil {
		return nil, -1, err
	}
	vis, err := s.hs.Rooms.VisibilityFor(ctx, roomID, "")
	if err != nil {
		return nil, -1, err
	}
	stored, err := s.hs.DB.RoomEvents(ctx, nid, pos, upto, false, maxStreamChunk, storage.EventFilter{})
	if err != nil {
		return nil, -1, err
	}
	reached = -1
	if len(stored) == maxStreamChunk {
		reached = stored[len(stored)-1].StreamPos
	}
	visible := stored[:0]
	for _, e := range stored {
		if vis.CanSee(e.StreamPos) {
			visible = append(visible, e)
		}
	}
	evs, err = snapshot.RenderStored(ctx, s.hs.DB, visible)
	return evs, reached, err
}
