package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"plaza/homeserver/httpapi"
	"plaza/peek/snapshot"
)

// Live updates: GET /_plaza/rooms/{roomID}/live is a Server-Sent Events
// stream. Each message's id is the event's stream position (an EventSource
// resumes after it with Last-Event-ID; the page passes ?since= the position
// it was rendered at) and its data is JSON:
//
//	{"event_id", "pos", "type", "sender", "members",
//	 "html"?         the rendered list item (a message, a reply, or an edited target),
//	 "thread_root"?  a reply's thread root,
//	 "replaces"?     an edit's target, "redacts"? a redaction's target,
//	 "event"         the client event}
//
// An "event: reset" message tells the viewer it missed events the server no
// longer holds: reload. Comments (": ping") are heartbeats.
//
// One hub per room watches the room's snapshots (Snapshot.Changed) and
// renders each new event once; viewers are a bounded channel each, filled
// without blocking: a viewer whose buffer is full is dropped (its
// EventSource reconnects and resumes), so a slow viewer never holds up the
// room. A viewer costs its handler's goroutine and a small channel.

const (
	// viewerBuffer is how many messages a viewer may fall behind.
	viewerBuffer = 16
	// heartbeat keeps proxies from closing idle streams.
	heartbeat = 25 * time.Second
	// writeTimeout bounds one write to a viewer.
	writeTimeout = 30 * time.Second
)

// liveMsg is one message to viewers, shared by all of them.
type liveMsg struct {
	pos  int64 // 0 for heartbeats and resets
	data []byte
}

var (
	pingMsg  = liveMsg{data: []byte(": ping\n\n")}
	resetMsg = liveMsg{data: []byte("event: reset\ndata: {}\n\n")}
)

type viewer struct {
	ch chan liveMsg // closed by the hub when it drops the viewer
}

type hub struct {
	roomID string
	done   chan struct{} // closed when the last viewer left

	mu      sync.Mutex
	snap    *snapshot.Snapshot // what viewers have been sent up to
	viewers map[*viewer]struct{}
}

type hubs struct {
	s     *Service
	mu    sync.Mutex
	rooms map[string]*hub
}

func newHubs(s *Service) *hubs { return &hubs{s: s, rooms: map[string]*hub{}} }

// join adds a viewer to the room's hub, starting it from snap if the room
// has none, and returns the snapshot the viewer's channel continues from.
func (hs *hubs) join(roomID string, snap *snapshot.Snapshot) (*hub, *viewer, *snapshot.Snapshot) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.rooms[roomID]
	if h == nil {
		h = &hub{roomID: roomID, done: make(chan struct{}), snap: snap, viewers: map[*viewer]struct{}{}}
		hs.rooms[roomID] = h
		go hs.run(h, snap)
	}
	v := &viewer{ch: make(chan liveMsg, viewerBuffer)}
	h.mu.Lock()
	h.viewers[v] = struct{}{}
	from := h.snap
	h.mu.Unlock()
	return h, v, from
}

// leave removes a viewer; the last one stops the hub.
func (hs *hubs) leave(h *hub, v *viewer) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h.mu.Lock()
	delete(h.viewers, v)
	empty := len(h.viewers) == 0
	h.mu.Unlock()
	if empty && hs.rooms[h.roomID] == h {
		delete(hs.rooms, h.roomID)
		close(h.done)
	}
}

// run follows the room's snapshots until the hub stops.
func (hs *hubs) run(h *hub, snap *snapshot.Snapshot) {
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
			h.broadcast(nil, pingMsg)
		case <-snap.Changed():
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			next, err := hs.s.cache.Get(ctx, h.roomID)
			cancel()
			if err != nil {
				if !errors.Is(err, snapshot.ErrNotFound) {
					hs.s.log.Warn("live: reloading a room's snapshot", "room", h.roomID, "err", err)
				}
				// Viewers reconnect and find out for themselves.
				h.dropAll()
				return
			}
			if !next.Summary.WorldReadable() {
				h.broadcast(next, resetMsg)
				h.dropAll()
				return
			}
			evs, ok := next.Since(snap.Pos)
			if !ok {
				h.broadcast(next, resetMsg)
			} else {
				msgs := make([]liveMsg, 0, len(evs))
				for _, ev := range evs {
					msgs = append(msgs, hs.s.liveMessage(next, ev))
				}
				h.broadcast(next, msgs...)
			}
			snap = next
		}
	}
}

// broadcast hands msgs to every viewer without blocking, dropping viewers
// that cannot take them, and records snap as sent.
func (h *hub) broadcast(snap *snapshot.Snapshot, msgs ...liveMsg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if snap != nil {
		h.snap = snap
	}
	for v := range h.viewers {
		for _, m := range msgs {
			select {
			case v.ch <- m:
				continue
			default:
			}
			delete(h.viewers, v)
			close(v.ch)
			break
		}
	}
}

// dropAll ends every viewer's stream.
func (h *hub) dropAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for v := range h.viewers {
		delete(h.viewers, v)
		close(v.ch)
	}
}

// liveData is a live message's JSON.
type liveData struct {
	EventID    string          `json:"event_id"`
	Pos        int64           `json:"pos"`
	Type       string          `json:"type"`
	Sender     string          `json:"sender"`
	Members    int             `json:"members"`
	HTML       string          `json:"html,omitempty"`
	ThreadRoot string          `json:"thread_root,omitempty"`
	Replaces   string          `json:"replaces,omitempty"`
	Redacts    string          `json:"redacts,omitempty"`
	Event      json.RawMessage `json:"event"`
}

// liveMessage renders one new event for viewers.
func (s *Service) liveMessage(snap *snapshot.Snapshot, ev *snapshot.Event) liveMsg {
	d := liveData{EventID: ev.Event.ID(), Pos: ev.Pos, Type: ev.Event.Type(), Sender: ev.Sender,
		Members: snap.Summary.JoinedMembers, Event: ev.JSON(time.Now().UnixMilli())}
	c := parseContent(ev.Event.Content())
	names := displayNames(snap.Members)
	kind, target := classify(ev, &c)
	switch kind {
	case message, reply:
		if frag := s.render.fragment(ev); frag != nil {
			d.HTML = string(writeNamed(nil, frag, names(ev.Sender)))
		}
		if kind == reply {
			d.ThreadRoot = target
		}
	case edit:
		d.Replaces = target
		for _, t := range snap.Events {
			if t.Event.ID() == target {
				if frag := s.render.fragment(t); frag != nil {
					d.HTML = string(writeNamed(nil, frag, names(t.Sender)))
				}
				break
			}
		}
	case redactor:
		d.Redacts = target
	}
	data, err := json.Marshal(d)
	if err != nil {
		s.log.Error("live: encoding an event", "event_id", d.EventID, "err", err)
		return liveMsg{pos: ev.Pos, data: []byte(": skipped\n\n")}
	}
	b := make([]byte, 0, len(data)+32)
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, ev.Pos, 10)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	b = append(b, "\n\n"...)
	return liveMsg{pos: ev.Pos, data: b}
}

// liveStream serves GET /_plaza/rooms/{roomID}/live.
func (s *Service) liveStream(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomID")
	snap, err := s.cache.Get(r.Context(), roomID)
	if errors.Is(err, snapshot.ErrNotFound) || err == nil && !snap.Summary.WorldReadable() {
		// The same answer whether or not the room exists.
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
		return
	} else if err != nil {
		if r.Context().Err() == nil {
			s.log.Error("live: loading a room", "room", roomID, "err", err)
			httpapi.Fail(w, r, err)
		}
		return
	}
	since := int64(-1)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("since")} {
		if v == "" {
			continue
		}
		p, err := strconv.ParseInt(v, 10, 64)
		if err != nil || p < 0 {
			httpapi.Fail(w, r, httpapi.InvalidParam("the position to resume after must be a stream position"))
			return
		}
		since = p
		break
	}

	h, v, from := s.live.join(roomID, snap)
	defer s.live.leave(h, v)

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	last := from.Pos
	if since >= 0 {
		// Catch up from the snapshot the hub continues from.
		evs, ok := from.Since(since)
		if !ok {
			write(resetMsg.data)
			return
		}
		var b []byte
		for _, ev := range evs {
			b = append(b, s.liveMessage(from, ev).data...)
		}
		if since > last {
			last = since
		}
		b = append(b, "retry: 2000\n\n"...)
		if !write(b) {
			return
		}
	} else if !write([]byte("retry: 2000\n\n")) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case m, ok := <-v.ch:
			if !ok {
				return // dropped: too slow, or the room went away
			}
			if m.pos != 0 && m.pos <= last {
				continue
			}
			if m.pos != 0 {
				last = m.pos
			}
			if !write(m.data) {
				return
			}
		}
	}
}
