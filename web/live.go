package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
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

// viewer is one live stream. Its queue is drained by whoever holds
// "writing": a goroutine started on demand for a hijacked connection (so an
// idle viewer has no goroutine, no stack and no bufio buffers — a few hundred
// bytes), or the handler's goroutine where the connection cannot be hijacked
// (HTTP/2).
type viewer struct {
	write func([]byte) error // writes to the client, with a deadline
	conn  net.Conn           // the hijacked connection, or nil
	wake  chan struct{}      // handler mode: the queue has something
	gone  chan struct{}      // closed when the viewer is dropped

	mu      sync.Mutex
	queue   []liveMsg
	writing bool // someone is draining the queue
	closed  bool
	last    int64 // position last written (only the writer touches it)
}

// offer queues m without blocking; false means the viewer is too far
// behind.
func (v *viewer) offer(m liveMsg) bool {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return true
	}
	if len(v.queue) >= viewerBuffer {
		v.mu.Unlock()
		return false
	}
	v.queue = append(v.queue, m)
	start := !v.writing
	v.writing = true
	v.mu.Unlock()
	if start {
		if v.conn != nil {
			go v.drainConn()
		} else {
			select {
			case v.wake <- struct{}{}:
			default:
			}
		}
	}
	return true
}

// drainConn drains a hijacked viewer's queue; a failed write closes it,
// and the hub removes it at its next broadcast.
func (v *viewer) drainConn() {
	if !v.flush() {
		v.drop()
	}
}

// flush writes the queue until it is empty, then gives up "writing". It
// reports false when a write failed.
func (v *viewer) flush() bool {
	for {
		v.mu.Lock()
		if v.closed || len(v.queue) == 0 {
			v.writing = false
			closed := v.closed
			v.mu.Unlock()
			return !closed
		}
		batch := v.queue
		v.queue = nil
		v.mu.Unlock()
		var b []byte
		for _, m := range batch {
			if m.pos != 0 && m.pos <= v.last {
				continue // already sent in the catch-up
			}
			if m.pos != 0 {
				v.last = m.pos
			}
			if len(batch) == 1 {
				b = m.data
			} else {
				b = append(b, m.data...)
			}
		}
		if len(b) > 0 {
			if err := v.write(b); err != nil {
				return false
			}
		}
	}
}

// drop ends the viewer's stream (once). A viewer dropped by its own failed
// write is removed from its hub at the hub's next broadcast (heartbeats
// come every 25 seconds).
func (v *viewer) drop() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	v.queue = nil
	v.mu.Unlock()
	if v.conn != nil {
		_ = v.conn.Close()
	}
	close(v.gone)
}

func (v *viewer) isClosed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.closed
}

type hub struct {
	roomID string
	done   chan struct{} // closed when the last viewer left

	mu      sync.Mutex
	snap    *snapshot.Snapshot // what viewers have been sent up to
	viewers map[*viewer]struct{}
}

type hubs struct {
	s       *Service
	mu      sync.Mutex
	rooms   map[string]*hub
	members map[string]*memberHub // rooms that are not world-readable
}

func newHubs(s *Service) *hubs {
	return &hubs{s: s, rooms: map[string]*hub{}, members: map[string]*memberHub{}}
}

// join adds a viewer to the room's hub, starting it from snap if the room
// has none, and returns the snapshot the viewer's queue continues from.
func (hs *hubs) join(roomID string, snap *snapshot.Snapshot, v *viewer) (*hub, *snapshot.Snapshot) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.rooms[roomID]
	if h == nil {
		h = &hub{roomID: roomID, done: make(chan struct{}), snap: snap, viewers: map[*viewer]struct{}{}}
		hs.rooms[roomID] = h
		go hs.run(h, snap)
	}
	h.mu.Lock()
	h.viewers[v] = struct{}{}
	from := h.snap
	h.mu.Unlock()
	return h, from
}

// remove drops a viewer and removes it from its hub; the last one stops the
// hub.
func (hs *hubs) remove(h *hub, v *viewer) {
	hs.mu.Lock()
	h.mu.Lock()
	delete(h.viewers, v)
	empty := len(h.viewers) == 0
	h.mu.Unlock()
	if empty && hs.rooms[h.roomID] == h {
		delete(hs.rooms, h.roomID)
		close(h.done)
	}
	hs.mu.Unlock()
	v.drop()
}

// closeAll ends every live stream.
func (hs *hubs) closeAll() {
	hs.mu.Lock()
	var all []*viewer
	for id, h := range hs.rooms {
		h.mu.Lock()
		for v := range h.viewers {
			all = append(all, v)
		}
		h.viewers = map[*viewer]struct{}{}
		h.mu.Unlock()
		delete(hs.rooms, id)
		close(h.done)
	}
	for id, h := range hs.members {
		h.mu.Lock()
		for v := range h.viewers {
			all = append(all, v)
		}
		h.viewers = map[*viewer]string{}
		h.mu.Unlock()
		delete(hs.members, id)
		close(h.done)
	}
	hs.mu.Unlock()
	for _, v := range all {
		v.drop()
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
			hs.broadcast(h, nil, pingMsg)
		case <-snap.Changed():
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			next, err := hs.s.cache.Get(ctx, h.roomID)
			cancel()
			if err != nil {
				if !errors.Is(err, snapshot.ErrNotFound) {
					hs.s.log.Warn("live: reloading a room's snapshot", "room", h.roomID, "err", err)
				}
				// Viewers reconnect and find out for themselves.
				hs.dropAll(h)
				return
			}
			if !next.Summary.WorldReadable() {
				hs.broadcast(h, next, resetMsg)
				hs.dropAll(h)
				return
			}
			evs, ok := next.Since(snap.Pos)
			if !ok {
				hs.broadcast(h, next, resetMsg)
			} else {
				msgs := make([]liveMsg, 0, len(evs))
				for _, ev := range evs {
					msgs = append(msgs, hs.s.liveMessage(next, ev))
				}
				hs.broadcast(h, next, msgs...)
			}
			snap = next
		}
	}
}

// broadcast hands msgs to every viewer without blocking, drops viewers that
// cannot take them (or whose connection failed), and records snap as sent.
func (hs *hubs) broadcast(h *hub, snap *snapshot.Snapshot, msgs ...liveMsg) {
	var out []*viewer
	h.mu.Lock()
	if snap != nil {
		h.snap = snap
	}
	for v := range h.viewers {
		for _, m := range msgs {
			if !v.offer(m) || v.isClosed() {
				out = append(out, v)
				break
			}
		}
	}
	h.mu.Unlock()
	for _, v := range out {
		hs.remove(h, v)
	}
}

// dropAll ends every viewer's stream of a hub.
func (hs *hubs) dropAll(h *hub) {
	h.mu.Lock()
	all := make([]*viewer, 0, len(h.viewers))
	for v := range h.viewers {
		all = append(all, v)
	}
	h.mu.Unlock()
	for _, v := range all {
		hs.remove(h, v)
	}
}

// liveData is a live message's JSON.
type liveData struct {
	EventID    string          `json:"event_id"`
	Pos        int64           `json:"pos"`
	Type       string          `json:"type"`
	Sender     string          `json:"sender"`
	Members    int             `json:"members,omitempty"`
	HTML       string          `json:"html,omitempty"`
	ThreadRoot string          `json:"thread_root,omitempty"`
	Replaces   string          `json:"replaces,omitempty"`
	Redacts    string          `json:"redacts,omitempty"`
	Event      json.RawMessage `json:"event"`
}

// liveMessage renders one new event of a snapshot for viewers.
func (s *Service) liveMessage(snap *snapshot.Snapshot, ev *snapshot.Event) liveMsg {
	return s.encodeLive(ev, ev.JSON(time.Now().UnixMilli()), snap.Summary.JoinedMembers, displayNames(snap.Members),
		func(id string) *snapshot.Event {
			for _, t := range snap.Events {
				if t.Event.ID() == id {
					return t
				}
			}
			return nil
		})
}

// encodeLive renders one event as a live message: evJSON is its client
// JSON, members the joined count (0: not sent), name the senders' display
// names and target finds an edit's target as it now is (nil: unknown).
func (s *Service) encodeLive(ev *snapshot.Event, evJSON json.RawMessage, members int, name func(string) string,
	target func(string) *snapshot.Event) liveMsg {
	d := liveData{EventID: ev.Event.ID(), Pos: ev.Pos, Type: ev.Event.Type(), Sender: ev.Sender,
		Members: members, Event: evJSON}
	c := parseContent(ev.Event.Content())
	kind, related := classify(ev, &c)
	switch kind {
	case message, reply:
		if frag := s.render.fragment(ev); frag != nil {
			d.HTML = string(writeNamed(nil, frag, name(ev.Sender)))
		}
		if kind == reply {
			d.ThreadRoot = related
		}
	case edit:
		d.Replaces = related
		if t := target(related); t != nil {
			if frag := s.render.fragment(t); frag != nil {
				d.HTML = string(writeNamed(nil, frag, name(t.Sender)))
			}
		}
	case redactor:
		d.Redacts = related
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
	if errors.Is(err, snapshot.ErrNotFound) {
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
	if !snap.Summary.WorldReadable() {
		s.memberStream(w, r, roomID, since)
		return
	}

	v, head := s.openStream(w)
	// Until the catch-up is written, broadcasts only queue (writing is
	// set): they follow it in order.
	h, from := s.live.join(roomID, snap, v)
	remove := func() { s.live.remove(h, v) }
	b := append(head, "retry: 2000\n\n"...)
	v.last = from.Pos
	if since >= 0 {
		evs, ok := from.Since(since)
		if !ok {
			_ = v.write(append(b, resetMsg.data...))
			remove()
			return
		}
		for _, ev := range evs {
			b = append(b, s.liveMessage(from, ev).data...)
		}
		v.last = max(v.last, since)
	}
	s.serveViewer(r, v, b, remove)
}

// openStream starts an event stream: it hijacks the connection where it
// can, so that an idle viewer costs no goroutine (the response then has no
// length and no chunking: it ends when the connection closes, as an event
// stream does), and returns the viewer, "writing" until its catch-up is
// out, with the response head to send first (empty when net/http sends it).
func (s *Service) openStream(w http.ResponseWriter) (*viewer, []byte) {
	v := &viewer{gone: make(chan struct{}), writing: true}
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		v.conn = conn
		v.write = func(b []byte) error {
			_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			_, err := conn.Write(b)
			return err
		}
		h := w.Header().Clone()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		h.Set("Connection", "close")
		var hb bytes.Buffer
		hb.WriteString("HTTP/1.1 200 OK\r\n")
		_ = h.Write(&hb)
		hb.WriteString("\r\n")
		return v, hb.Bytes()
	}
	rc := http.NewResponseController(w)
	v.wake = make(chan struct{}, 1)
	v.write = func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return v, nil
}

// serveViewer writes the catch-up b and what queued meanwhile, then leaves
// the viewer to its hub (hijacked) or serves its queue until it is dropped
// or the client goes.
func (s *Service) serveViewer(r *http.Request, v *viewer, b []byte, remove func()) {
	if err := v.write(b); err != nil || !v.flush() {
		remove()
		return
	}
	if v.conn != nil {
		return // the hub's offers write from now on
	}
	for {
		select {
		case <-r.Context().Done():
			remove()
			return
		case <-v.gone:
			return // dropped: too slow, or the room went away
		case <-v.wake:
			if !v.flush() {
				remove()
				return
			}
		}
	}
}
