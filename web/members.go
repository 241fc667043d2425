package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/peek/snapshot"
)

// Live streams of rooms that are not world-readable, for their members. The
// snapshot cache holds nothing of such rooms, so the site subscribes to the
// room service's stream once (Service.New) and routes each notification to
// the room's members' hub, which renders each event once for all its
// viewers, as the anonymous hubs do, and drops a viewer whose membership
// ends. Resuming reads storage once per connection, never per event.

// memberNotes bounds the notifications queued for one members' hub; past it
// the hub resets its viewers (they reload) rather than hold up the writer.
const memberNotes = 256

type memberHub struct {
	roomID string
	notes  chan room.Notification
	done   chan struct{}

	mu      sync.Mutex
	viewers map[*viewer]string // the viewer's user
}

// onEvents is the site's room-stream subscription. It runs on the room
// writer's goroutine: it only hands the notification over.
func (hs *hubs) onEvents(n room.Notification) {
	hs.mu.Lock()
	h := hs.members[n.RoomID]
	hs.mu.Unlock()
	if h == nil {
		return
	}
	select {
	case h.notes <- n:
	default:
		go hs.resetMembers(h)
	}
}

// joinMembers adds a member's viewer to the room's members' hub.
func (hs *hubs) joinMembers(roomID, user string, v *viewer) *memberHub {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.members[roomID]
	if h == nil {
		h = &memberHub{roomID: roomID, notes: make(chan room.Notification, memberNotes), done: make(chan struct{}),
			viewers: map[*viewer]string{}}
		hs.members[roomID] = h
		go hs.runMembers(h)
	}
	h.mu.Lock()
	h.viewers[v] = user
	h.mu.Unlock()
	return h
}

// removeMember drops a viewer; the last one stops the hub.
func (hs *hubs) removeMember(h *memberHub, v *viewer) {
	hs.mu.Lock()
	h.mu.Lock()
	delete(h.viewers, v)
	empty := len(h.viewers) == 0
	h.mu.Unlock()
	if empty && hs.members[h.roomID] == h {
		delete(hs.members, h.roomID)
		close(h.done)
	}
	hs.mu.Unlock()
	v.drop()
}

// resetMembers stops a hub that fell behind, telling its viewers to reload.
func (hs *hubs) resetMembers(h *memberHub) {
	hs.mu.Lock()
	if hs.members[h.roomID] == h {
		delete(hs.members, h.roomID)
		close(h.done)
	}
	hs.mu.Unlock()
	hs.broadcastMembers(h, func(string) bool { return true }, resetMsg)
	h.mu.Lock()
	all := make([]*viewer, 0, len(h.viewers))
	for v := range h.viewers {
		all = append(all, v)
	}
	h.mu.Unlock()
	for _, v := range all {
		hs.removeMember(h, v)
	}
}

// broadcastMembers offers msg to the viewers whose user to accepts,
// dropping those too far behind.
func (hs *hubs) broadcastMembers(h *memberHub, to func(user string) bool, msg liveMsg) {
	var out []*viewer
	h.mu.Lock()
	for v, user := range h.viewers {
		if to(user) && (!v.offer(msg) || v.isClosed()) {
			out = append(out, v)
		}
	}
	h.mu.Unlock()
	for _, v := range out {
		hs.removeMember(h, v)
	}
}

// runMembers follows the room's notifications until the hub stops.
func (hs *hubs) runMembers(h *memberHub) {
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	everyone := func(string) bool { return true }
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
			hs.broadcastMembers(h, everyone, pingMsg)
		case n := <-h.notes:
			for _, se := range n.Events {
				if se.Event.Type() == event.TypeMember && se.Event.StateKey() != nil && room.MembershipOf(se.Event) != "join" {
					hs.dropUser(h, *se.Event.StateKey())
				}
				msg, err := hs.s.memberMessage(h.roomID, se)
				if err != nil {
					hs.s.log.Warn("live: rendering a members' event", "room", h.roomID, "err", err)
					hs.resetMembers(h)
					return
				}
				hs.broadcastMembers(h, everyone, msg)
			}
		}
	}
}

// dropUser ends the streams of a user who is no longer a member.
func (hs *hubs) dropUser(h *memberHub, user string) {
	h.mu.Lock()
	var out []*viewer
	for v, u := range h.viewers {
		if u == user {
			out = append(out, v)
		}
	}
	h.mu.Unlock()
	for _, v := range out {
		hs.removeMember(h, v)
	}
}

// memberMessage renders a stored event of a members-only room.
func (s *Service) memberMessage(roomID string, se *storage.StoredEvent) (liveMsg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := snapshot.RenderStored(ctx, s.hs.DB, []*storage.StoredEvent{se})
	if err != nil || len(evs) != 1 {
		return liveMsg{}, fmt.Errorf("rendering %s: %w", se.Event.ID(), err)
	}
	ev := evs[0]
	names, err := s.senderNames(ctx, roomID, evs)
	if err != nil {
		return liveMsg{}, err
	}
	target := func(id string) *snapshot.Event {
		// An edit's target as it now reads: one query per edit for all
		// viewers of the room.
		t, err := s.hs.DB.EventByID(ctx, id)
		if err != nil || t.Event.RoomID() != roomID || t.RedactedBy != "" {
			return nil
		}
		rendered, err := snapshot.RenderStored(ctx, s.hs.DB, []*storage.StoredEvent{t})
		if err != nil || len(rendered) != 1 || rendered[0].Sender != ev.Sender {
			return nil
		}
		cp := *rendered[0]
		cp.Edit = ev.Event
		return &cp
	}
	js, err := json.Marshal(ev.Event.Client())
	if err != nil {
		return liveMsg{}, fmt.Errorf("encoding %s: %w", se.Event.ID(), err)
	}
	return s.encodeLive(ev, js, 0, names, target), nil
}

// memberStream serves the live stream of a room that is not world-readable:
// to its signed-in members only; everyone else gets the missing room's 404.
func (s *Service) memberStream(w http.ResponseWriter, r *http.Request, roomID string, since int64) {
	user, err := s.user(r)
	if err != nil {
		s.log.Error("live: reading the web session", "err", err)
		httpapi.Fail(w, r, err)
		return
	}
	member := ""
	if user != "" {
		if member, err = s.hs.Rooms.Membership(r.Context(), roomID, user); err != nil && !errors.Is(err, room.ErrNotFound) {
			httpapi.Fail(w, r, err)
			return
		}
	}
	if member != "join" {
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
		return
	}
	// Join before reading the catch-up: every event after it is queued, and
	// what the catch-up also holds is skipped by position.
	v, head := s.openStream(w)
	h := s.live.joinMembers(roomID, user, v)
	remove := func() { s.live.removeMember(h, v) }
	b := append(head, "retry: 2000\n\n"...)
	v.last = s.hs.Rooms.UpTo()
	if since >= 0 && since < v.last {
		v.last = since
		catchUp, ok, err := s.memberCatchUp(r.Context(), roomID, user, since)
		if err != nil || !ok {
			if err != nil {
				s.log.Warn("live: a member's catch-up", "room", roomID, "err", err)
			}
			_ = v.write(append(b, resetMsg.data...))
			remove()
			return
		}
		for _, m := range catchUp {
			b = append(b, m.data...)
			v.last = max(v.last, m.pos)
		}
	}
	s.serveViewer(r, v, b, remove)
}

// memberCatchUp reads what a member missed after since (a page at most:
// more asks for a reload).
func (s *Service) memberCatchUp(ctx context.Context, roomID, user string, since int64) ([]liveMsg, bool, error) {
	nid, err := s.hs.DB.RoomNID(ctx, roomID)
	if err != nil {
		return nil, false, err
	}
	stored, err := s.hs.DB.RoomEvents(ctx, nid, since, 0, false, olderPage+1, storage.EventFilter{})
	if err != nil {
		return nil, false, err
	}
	if len(stored) > olderPage {
		return nil, false, nil
	}
	vis, err := s.hs.Rooms.VisibilityFor(ctx, roomID, user)
	if err != nil {
		return nil, false, err
	}
	var out []liveMsg
	for _, se := range stored {
		if !vis.CanSee(se.StreamPos) {
			continue
		}
		m, err := s.memberMessage(roomID, se)
		if err != nil {
			return nil, false, err
		}
		out = append(out, m)
	}
	return out, true, nil
}
