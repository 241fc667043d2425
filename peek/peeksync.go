package peek

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/sync"
	"plaza/peek/snapshot"
)

// peek serves MSC2753's POST /peek/{roomIdOrAlias}: the calling device sees
// the room in the "peek" section of its /sync until the peek expires or it
// unpeeks. Calling it again renews the peek. It never creates membership.
func (s *Service) peek(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID, err := s.resolve(ctx, pathParam(r, "roomIDOrAlias"))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	snap, err := s.snapshot(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !snap.Summary.WorldReadable() {
		httpapi.Fail(w, r, httpapi.Forbidden("this room is not world-readable"))
		return
	}
	d := device{rq.UserID, rq.DeviceID}
	now := s.now()
	expiry := now.Add(s.cfg.PeekLifetime)
	s.mu.Lock()
	if now.Sub(s.lastSweep) > time.Minute {
		// Devices that never sync again would otherwise keep their expired
		// peeks forever; a sweep now and then bounds them.
		s.lastSweep = now
		for other := range s.peeks {
			s.expireLocked(other)
		}
	}
	s.expireLocked(d)
	p := s.peeks[d][roomID]
	if p == nil && len(s.peeks[d]) >= s.cfg.MaxPeeksPerDevice {
		s.mu.Unlock()
		httpapi.Fail(w, r, httpapi.LimitExceeded(0))
		return
	}
	isNew := p == nil
	if isNew {
		// A position of its own marks the peek's start in the stream: a
		// /sync from before it shows the room in full, one after it only
		// what is new, and the waiting /sync wakes.
		pos := s.hs.Tracker.Reserve()
		s.hs.Tracker.Complete(pos)
		p = &peekEntry{start: pos}
		if s.peeks[d] == nil {
			s.peeks[d] = map[string]*peekEntry{}
		}
		s.peeks[d][roomID] = p
		if s.byRoom[roomID] == nil {
			s.byRoom[roomID] = map[device]struct{}{}
		}
		s.byRoom[roomID][d] = struct{}{}
	}
	p.expiry = expiry
	start := p.start
	s.mu.Unlock()
	if isNew {
		s.hs.Sync.NotifyUser(rq.UserID, start)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"room_id": roomID, "peek_expiry_ts": expiry.UnixMilli()})
}

// unpeek serves MSC2753's POST /unpeek/{roomId}. Unpeeking a room one does
// not peek into is not an error: the outcome is the same.
func (s *Service) unpeek(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	s.mu.Lock()
	s.removeLocked(device{rq.UserID, rq.DeviceID}, pathParam(r, "roomID"))
	s.mu.Unlock()
	httpapi.Respond(w, http.StatusOK, map[string]any{})
}

func (s *Service) removeLocked(d device, roomID string) {
	delete(s.peeks[d], roomID)
	if len(s.peeks[d]) == 0 {
		delete(s.peeks, d)
	}
	delete(s.byRoom[roomID], d)
	if len(s.byRoom[roomID]) == 0 {
		delete(s.byRoom, roomID)
	}
}

// expireLocked drops a device's expired peeks; expiry is checked lazily,
// whenever the device's peeks are read.
func (s *Service) expireLocked(d device) {
	now := s.now()
	for roomID, p := range s.peeks[d] {
		if now.After(p.expiry) {
			s.removeLocked(d, roomID)
		}
	}
}

// onEvents wakes the /sync long-polls of devices peeking into the room, and
// watches guest access.
func (s *Service) onEvents(n room.Notification) {
	if len(n.Events) == 0 {
		return
	}
	s.watchGuestAccess(n)
	pos := n.Events[len(n.Events)-1].StreamPos
	s.mu.Lock()
	var users []string
	for d := range s.byRoom[n.RoomID] {
		users = append(users, d.userID)
	}
	s.mu.Unlock()
	for _, u := range users {
		s.hs.Sync.NotifyUser(u, pos)
	}
}

// AddToSync fills the "peek" section of a /sync response (sync.Extension).
// A room appears in full when the peek began after the client's token, and
// with what is new otherwise; a room the user has joined is left to "join".
func (s *Service) AddToSync(ctx context.Context, req *sync.Request, resp *sync.Response) error {
	d := device{req.UserID, req.DeviceID}
	type item struct {
		roomID string
		start  int64
	}
	var items []item
	s.mu.Lock()
	s.expireLocked(d)
	for roomID, p := range s.peeks[d] {
		items = append(items, item{roomID, p.start})
	}
	s.mu.Unlock()
	rf := req.Filter.Room
	for _, it := range items {
		if slices.Contains(req.JoinedRooms, it.roomID) || (rf.Rooms != nil && !slices.Contains(rf.Rooms, it.roomID)) ||
			slices.Contains(rf.NotRooms, it.roomID) {
			continue
		}
		full := req.Since == 0 || req.Since < it.start || req.FullState
		jr, err := s.peekedRoom(ctx, req, it.roomID, full)
		if errors.Is(err, snapshot.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if jr == nil {
			continue
		}
		if resp.Rooms.Peek == nil {
			resp.Rooms.Peek = map[string]*sync.JoinedRoom{}
		}
		resp.Rooms.Peek[it.roomID] = jr
	}
	return nil
}

// peekedRoom builds one room's peek section, or nil when nothing is new.
func (s *Service) peekedRoom(ctx context.Context, req *sync.Request, roomID string, full bool) (*sync.JoinedRoom, error) {
	snap, err := s.cache.Get(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if !snap.Summary.WorldReadable() {
		return nil, nil
	}
	limit := req.Filter.Room.Timeline.Limit
	if limit <= 0 {
		limit = 10
	}
	var evs []*snapshot.Event
	limited := false
	if full {
		evs = snap.Events
		limited = snap.Floor > 0
	} else {
		var reached int64
		evs, reached, err = s.eventsAfter(ctx, snap, roomID, req.Since, req.UpTo)
		if err != nil {
			return nil, err
		}
		limited = reached >= 0
	}
	// Events past the response's token come in the next one.
	for len(evs) > 0 && evs[len(evs)-1].Pos > req.UpTo {
		evs = evs[:len(evs)-1]
	}
	if len(evs) > limit {
		evs, limited = evs[len(evs)-limit:], true
	}
	if !full && len(evs) == 0 {
		return nil, nil
	}
	jr := &sync.JoinedRoom{Summary: map[string]any{}, UnreadNotifications: map[string]int{"notification_count": 0, "highlight_count": 0}}
	jr.Ephemeral.Events, jr.AccountData.Events = []any{}, []any{}
	jr.State.Events, jr.Timeline.Events = []event.ClientEvent{}, []event.ClientEvent{}
	nowMS := s.now().UnixMilli()
	for _, e := range evs {
		var ce event.ClientEvent
		if err := json.Unmarshal(e.JSON(nowMS), &ce); err != nil {
			return nil, err
		}
		jr.Timeline.Events = append(jr.Timeline.Events, ce)
	}
	jr.Timeline.Limited = limited
	if len(evs) > 0 {
		jr.Timeline.PrevBatch = streamToken(evs[0].Pos - 1)
	} else {
		jr.Timeline.PrevBatch = streamToken(req.UpTo)
	}
	if full || limited {
		// The room's state as the preview knows it: everything but
		// members, plus the timeline senders' members.
		inTimeline := map[event.TypeKey]bool{}
		for _, e := range evs {
			if tk, ok := e.Event.TypeKey(); ok {
				inTimeline[tk] = true
			}
		}
		add := func(b []byte) error {
			var ce event.ClientEvent
			if err := json.Unmarshal(b, &ce); err != nil {
				return err
			}
			if ce.StateKey != nil && inTimeline[event.TypeKey{Type: ce.Type, StateKey: *ce.StateKey}] {
				return nil
			}
			jr.State.Events = append(jr.State.Events, ce)
			return nil
		}
		for _, b := range snap.State {
			if err := add(b); err != nil {
				return nil, err
			}
		}
		seen := map[string]bool{}
		for _, e := range evs {
			if b, ok := snap.Members[e.Sender]; ok && !seen[e.Sender] {
				seen[e.Sender] = true
				if err := add(b); err != nil {
					return nil, err
				}
			}
		}
	}
	if full {
		jr.Summary["m.joined_member_count"] = snap.Summary.JoinedMembers
		jr.Summary["m.invited_member_count"] = snap.Summary.InvitedMembers
	}
	return jr, nil
}
