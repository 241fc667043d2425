// Package ephemeral owns what rooms say about their members without events:
// typing notifications, read receipts and read markers, presence, and the
// unread counts derived from receipts. It serves their endpoints and adds
// them to /sync as an extension.
//
// Typing and presence live in memory (they are worthless after a restart);
// receipts are stored. Every change takes a position in the global stream so
// sync tokens cover them and long-polls wake.
//
// Over federation (federation.go): local users' typing, public read receipts
// and presence go to the other servers of their rooms through Outbound;
// remote users' arrive through RemoteTyping, RemoteReceipt and
// RemotePresence, accepted only for users joined to the room.
package ephemeral

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
	"plaza/homeserver/sync"
)

// Typing notifications last at most this long without renewal.
const maxTypingTimeout = 2 * time.Minute

// Service serves typing, receipts and presence.
type Service struct {
	db      *storage.DB
	rooms   *room.Service
	tracker *stream.Tracker
	syncer  *sync.Service

	mu          gosync.Mutex
	typing      map[string]map[string]*time.Timer // room → user → expiry timer
	typingPos   map[string]int64                  // room → position of the last typing change
	presence    map[string]presenceState
	presencePos map[string]int64 // user → position of the last presence change

	counter Counter
	unread  map[string]map[string]*unreadEntry // user → room
	out     Outbound                           // nil: no federation

	// Where receipts last changed, so a sync that nothing concerns skips
	// the receipts queries. Positions before startPos are unknown here.
	startPos       int64
	roomReceiptPos map[string]int64 // room → last public receipt
	userReceiptPos map[string]int64 // user → last receipt of theirs
	ownReceiptPos  map[string]int64 // user + "\x00" + room → last receipt there
}

type presenceState struct {
	Presence   string
	StatusMsg  string
	LastActive int64
}

// New builds the service and registers it with /sync.
func New(db *storage.DB, rooms *room.Service, tracker *stream.Tracker, syncer *sync.Service) *Service {
	s := &Service{db: db, rooms: rooms, tracker: tracker, syncer: syncer,
		typing: map[string]map[string]*time.Timer{}, typingPos: map[string]int64{},
		presence: map[string]presenceState{}, presencePos: map[string]int64{}, unread: map[string]map[string]*unreadEntry{},
		startPos: tracker.UpTo(), roomReceiptPos: map[string]int64{}, userReceiptPos: map[string]int64{}, ownReceiptPos: map[string]int64{}}
	syncer.AddExtension(s)
	return s
}

// Routes mounts the endpoints (behind authentication).
func (s *Service) Routes(r chi.Router) {
	r.Put("/rooms/{roomID}/typing/{userID}", s.putTyping)
	r.Post("/rooms/{roomID}/receipt/{receiptType}/{eventID}", s.postReceipt)
	r.Post("/rooms/{roomID}/read_markers", s.postReadMarkers)
	r.Put("/presence/{userID}/status", s.putPresence)
	r.Get("/presence/{userID}/status", s.getPresence)
}

// bump takes a stream position for an in-memory change: f applies the
// change under s.mu, notify marks who it concerns. Both happen before the
// position completes, so a sync woken by the stream finds the change.
func (s *Service) bump(f func(pos int64), notify func(pos int64)) {
	pos := s.tracker.Reserve()
	s.mu.Lock()
	f(pos)
	s.mu.Unlock()
	notify(pos)
	s.tracker.Complete(pos)
}

func (s *Service) requireJoined(ctx context.Context, roomID, userID string) error {
	m, err := s.rooms.Membership(ctx, roomID, userID)
	if errors.Is(err, room.ErrNotFound) {
		return httpapi.NotFound("room not found")
	}
	if err != nil {
		return err
	}
	if m != "join" {
		return httpapi.Forbidden("you are not joined to this room")
	}
	return nil
}

func (s *Service) putTyping(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID, userID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "userID")
	if userID != rq.UserID {
		httpapi.Fail(w, r, httpapi.Forbidden("you can only set your own typing state"))
		return
	}
	var req struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.Typing == nil {
		httpapi.Fail(w, r, httpapi.BadJSON("typing is required"))
		return
	}
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	timeout := min(max(time.Duration(req.Timeout)*time.Millisecond, time.Second), maxTypingTimeout)
	s.setTyping(roomID, userID, *req.Typing, timeout)
	s.federate(ctx, []string{roomID}, "m.typing", map[string]any{"room_id": roomID, "user_id": userID, "typing": *req.Typing})
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (s *Service) setTyping(roomID, userID string, typing bool, timeout time.Duration) {
	s.bump(func(pos int64) {
		users := s.typing[roomID]
		if users == nil {
			users = map[string]*time.Timer{}
			s.typing[roomID] = users
		}
		if t := users[userID]; t != nil {
			t.Stop()
			delete(users, userID)
		}
		if typing {
			users[userID] = time.AfterFunc(timeout, func() { s.expireTyping(roomID, userID) })
		}
		s.typingPos[roomID] = pos
	}, func(pos int64) { s.syncer.NotifyRoom(roomID, pos) })
}

func (s *Service) expireTyping(roomID, userID string) {
	s.bump(func(pos int64) {
		delete(s.typing[roomID], userID)
		s.typingPos[roomID] = pos
	}, func(pos int64) { s.syncer.NotifyRoom(roomID, pos) })
}

func (s *Service) postReceipt(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID, typ, eventID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "receiptType"), httpapi.PathParam(r, "eventID")
	var req struct {
		ThreadID string `json:"thread_id"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if typ != "m.read" && typ != "m.read.private" && typ != "m.fully_read" {
		httpapi.Fail(w, r, httpapi.InvalidParam("unknown receipt type %q", typ))
		return
	}
	if typ == "m.fully_read" && req.ThreadID != "" {
		httpapi.Fail(w, r, httpapi.InvalidParam("m.fully_read cannot be threaded"))
		return
	}
	if err := s.receipt(ctx, roomID, rq.UserID, typ, req.ThreadID, eventID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (s *Service) postReadMarkers(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID := httpapi.PathParam(r, "roomID")
	var req map[string]string
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	for _, typ := range []string{"m.fully_read", "m.read", "m.read.private"} {
		if id, ok := req[typ]; ok && id != "" {
			if err := s.receipt(ctx, roomID, rq.UserID, typ, "", id); err != nil {
				httpapi.Fail(w, r, err)
				return
			}
		}
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// receipt records one receipt after checking the user may see the event.
func (s *Service) receipt(ctx context.Context, roomID, userID, typ, threadID, eventID string) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	ts := time.Now().UnixMilli()
	if err := s.storeReceipt(ctx, roomID, userID, typ, threadID, eventID, ts); err != nil {
		return err
	}
	if typ == "m.read" {
		s.federate(ctx, []string{roomID}, "m.receipt", receiptEDU(roomID, userID, threadID, eventID, ts))
	}
	return nil
}

// storeReceipt records a receipt of a user known to be joined to the room.
func (s *Service) storeReceipt(ctx context.Context, roomID, userID, typ, threadID, eventID string, ts int64) error {
	if threadID != "" && threadID != "main" && !strings.HasPrefix(threadID, "$") {
		return httpapi.InvalidParam("thread_id must be main or an event ID")
	}
	evPos, evRoom, err := s.db.StreamPosOf(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (evRoom != roomID || evPos <= 0)) {
		return httpapi.NotFound("event not found in this room")
	}
	if err != nil {
		return err
	}
	nid, err := s.db.RoomNID(ctx, roomID)
	if err != nil {
		return err
	}
	pos := s.tracker.Reserve()
	_, err = s.db.PutReceipt(ctx, nid, storage.Receipt{UserID: userID, Type: typ, ThreadID: threadID, EventID: eventID,
		EventPos: evPos, TS: ts, StreamPos: pos})
	if err == nil {
		s.mu.Lock()
		s.userReceiptPos[userID] = pos
		if len(s.ownReceiptPos) >= maxTracked {
			// Forgetting is safe: an unknown position sends readers to the
			// database. The unread cache goes too, as it relies on this.
			clear(s.ownReceiptPos)
			clear(s.unread)
			s.startPos = pos
		}
		s.ownReceiptPos[userID+"\x00"+roomID] = pos
		if typ == "m.read" {
			s.roomReceiptPos[roomID] = pos
		}
		s.mu.Unlock()
		if typ == "m.read" {
			s.syncer.NotifyRoom(roomID, pos)
		} else {
			s.syncer.NotifyUser(userID, pos)
		}
	}
	s.tracker.Complete(pos)
	return err
}

var validPresence = []string{"online", "offline", "unavailable"}

func (s *Service) putPresence(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	userID := httpapi.PathParam(r, "userID")
	if userID != rq.UserID {
		httpapi.Fail(w, r, httpapi.Forbidden("you can only set your own presence"))
		return
	}
	var req struct {
		Presence  string `json:"presence"`
		StatusMsg string `json:"status_msg"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !slices.Contains(validPresence, req.Presence) {
		httpapi.Fail(w, r, httpapi.InvalidParam("presence must be online, offline or unavailable"))
		return
	}
	if len(req.StatusMsg) > 1024 {
		httpapi.Fail(w, r, httpapi.TooLarge("status_msg is too long"))
		return
	}
	// Everyone sharing a room with the user hears of the change.
	rooms, err := s.db.RoomsWithMembership(r.Context(), userID, "join")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	p := presenceState{Presence: req.Presence, StatusMsg: req.StatusMsg, LastActive: time.Now().UnixMilli()}
	s.setPresence(userID, p, rooms)
	s.federate(r.Context(), rooms, "m.presence", map[string]any{"push": []any{presenceEDU(userID, p)}})
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (s *Service) getPresence(w http.ResponseWriter, r *http.Request) {
	userID := httpapi.PathParam(r, "userID")
	s.mu.Lock()
	p, ok := s.presence[userID]
	s.mu.Unlock()
	if !ok {
		acct, err := s.db.AccountByUserID(r.Context(), userID)
		if err != nil || acct.Deactivated {
			httpapi.Fail(w, r, httpapi.NotFound("unknown user"))
			return
		}
		p = presenceState{Presence: "offline"}
	}
	out := map[string]any{"presence": p.Presence, "currently_active": p.Presence == "online"}
	if p.StatusMsg != "" {
		out["status_msg"] = p.StatusMsg
	}
	if p.LastActive > 0 {
		out["last_active_ago"] = max(time.Now().UnixMilli()-p.LastActive, 0)
	}
	httpapi.Respond(w, http.StatusOK, out)
}

// AddToSync adds typing, receipts, read markers, presence and unread counts.
func (s *Service) AddToSync(ctx context.Context, req *sync.Request, resp *sync.Response) error {
	if len(req.JoinedRooms) == 0 {
		return nil
	}
	s.mu.Lock()
	for _, roomID := range req.JoinedRooms {
		if p := s.typingPos[roomID]; p > req.Since && p <= req.UpTo || (req.Since == 0 && len(s.typing[roomID]) > 0) {
			users := []string{}
			for u := range s.typing[roomID] {
				users = append(users, u)
			}
			slices.Sort(users)
			jr := resp.JoinedRoomSection(roomID)
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
	var changedPresence []string
	for u, p := range s.presencePos {
		if p > req.Since && p <= req.UpTo {
			changedPresence = append(changedPresence, u)
		}
	}
	presences := map[string]presenceState{}
	for _, u := range changedPresence {
		presences[u] = s.presence[u]
	}
	s.mu.Unlock()

	var receipts []storage.Receipt
	if s.receiptsMayHaveChanged(req) {
		var err error
		if receipts, err = s.db.ReceiptsSince(ctx, req.JoinedRooms, req.Since, req.UpTo); err != nil {
			return err
		}
	}
	perRoom := map[string]map[string]map[string]map[string]any{} // room → event → type → user → info
	for _, rc := range receipts {
		switch {
		case rc.Type == "m.fully_read":
			if rc.UserID == req.UserID {
				jr := resp.JoinedRoomSection(rc.RoomID)
				jr.AccountData.Events = append(jr.AccountData.Events, map[string]any{"type": "m.fully_read", "content": map[string]string{"event_id": rc.EventID}})
			}
			continue
		case rc.Type == "m.read.private" && rc.UserID != req.UserID:
			continue
		}
		room := perRoom[rc.RoomID]
		if room == nil {
			room = map[string]map[string]map[string]any{}
			perRoom[rc.RoomID] = room
		}
		ev := room[rc.EventID]
		if ev == nil {
			ev = map[string]map[string]any{}
			room[rc.EventID] = ev
		}
		if ev[rc.Type] == nil {
			ev[rc.Type] = map[string]any{}
		}
		info := map[string]any{"ts": rc.TS}
		if rc.ThreadID != "" {
			info["thread_id"] = rc.ThreadID
		}
		ev[rc.Type][rc.UserID] = info
	}
	for roomID, content := range perRoom {
		jr := resp.JoinedRoomSection(roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.receipt", "content": content})
	}

	if len(presences) > 0 {
		if resp.Presence == nil {
			resp.Presence = &sync.EventList{Events: []any{}}
		}
		for u, p := range presences {
			if u != req.UserID && !s.sharesRoom(ctx, req, u) {
				continue
			}
			c := map[string]any{"presence": p.Presence, "currently_active": p.Presence == "online",
				"last_active_ago": max(time.Now().UnixMilli()-p.LastActive, 0)}
			if p.StatusMsg != "" {
				c["status_msg"] = p.StatusMsg
			}
			resp.Presence.Events = append(resp.Presence.Events, map[string]any{"type": "m.presence", "sender": u, "content": c})
		}
	}
	return s.unreadCounts(ctx, req, resp)
}

// sharesRoom reports whether user is joined to one of the requester's rooms.
func (s *Service) sharesRoom(ctx context.Context, req *sync.Request, user string) bool {
	theirs, err := s.db.RoomsWithMembership(ctx, user, "join")
	if err != nil {
		return false
	}
	for _, r := range theirs {
		if slices.Contains(req.JoinedRooms, r) {
			return true
		}
	}
	return false
}

// unreadJudged bounds how many unread events are judged per room and sync:
// clients show "99+" past a point anyway, and every event costs a push rule
// evaluation.
const unreadJudged = 100

// Judge counts, for one user, how many of a room's events notify and how
// many of those highlight.
type Judge func(roomID string, evs []*storage.StoredEvent) (notify, highlight int)

// Counter loads a user's push rules and returns their judge, with the
// version of the rules (counts derived from older rules are recomputed).
type Counter func(ctx context.Context, userID string) (Judge, int64, error)

// SetCounter installs the push-rule judge for unread counts (package
// accountdata provides it; server.go wires the two).
func (s *Service) SetCounter(c Counter) { s.counter = c }

// maxTracked bounds the per-user maps of this package; past it they start
// over, which costs queries, never correctness.
const maxTracked = 1_000_000

// unreadEntry is a user's unread counts in a room, kept between syncs so
// each sync judges only the events that are new since the last one.
type unreadEntry struct {
	read, counted, rules int64 // read receipt, events judged up to, rules version
	asOf                 int64 // the stream position read was current at
	notify, highlight    int
}

// unreadCounts fills unread_notifications of the rooms in the response:
// events from others after the user's read receipt that their push rules
// say notify, and those that highlight. Counts are kept per user and room
// and extended with each sync's new events; a moved receipt or changed rules
// start them again.
func (s *Service) unreadCounts(ctx context.Context, req *sync.Request, resp *sync.Response) error {
	if s.counter == nil {
		return nil
	}
	var ids []string
	for id := range resp.Rooms.Join {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	read, err := s.readPositions(ctx, req, ids)
	if err != nil {
		return err
	}
	judge, rulesVersion, err := s.counter(ctx, req.UserID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.mu.Lock()
		e := s.unread[req.UserID][id]
		var cur unreadEntry
		if e != nil {
			cur = *e
		}
		s.mu.Unlock()
		if e == nil || cur.read != read[id] || cur.rules != rulesVersion || cur.counted > req.UpTo {
			cur = unreadEntry{read: read[id], counted: read[id], rules: rulesVersion}
		}
		cur.asOf = req.UpTo
		if cur.counted < req.UpTo {
			var evs []*storage.StoredEvent
			if window, ok := req.Window[id]; ok && cur.counted == req.Since {
				// The sync already read exactly these events.
				for _, e := range window {
					if e.Event.Sender() != req.UserID {
						evs = append(evs, e)
					}
				}
			} else {
				nid, err := s.rooms.NID(ctx, id)
				if err != nil {
					return err
				}
				if evs, err = s.db.UnreadEvents(ctx, nid, cur.counted, req.UpTo, req.UserID, unreadJudged); err != nil {
					return err
				}
			}
			n, h := judge(id, evs)
			cur.notify += n
			cur.highlight += h
			cur.counted = req.UpTo
			if len(evs) == unreadJudged {
				// More are waiting: the next sync goes on from here.
				cur.counted = evs[len(evs)-1].StreamPos
			}
		}
		s.mu.Lock()
		if len(s.unread) >= maxTracked {
			clear(s.unread)
		}
		if s.unread[req.UserID] == nil {
			s.unread[req.UserID] = map[string]*unreadEntry{}
		}
		s.unread[req.UserID][id] = &cur
		s.mu.Unlock()
		resp.Rooms.Join[id].UnreadNotifications = map[string]int{"notification_count": cur.notify, "highlight_count": cur.highlight}
	}
	return nil
}

// receiptsMayHaveChanged reports whether a receipt the requester may see
// changed in the sync's window.
func (s *Service) receiptsMayHaveChanged(req *sync.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Since < s.startPos || s.userReceiptPos[req.UserID] > req.Since {
		return true
	}
	for _, roomID := range req.JoinedRooms {
		if s.roomReceiptPos[roomID] > req.Since {
			return true
		}
	}
	return false
}

// readPositions returns the user's read positions in rooms: from the unread
// cache when the user sent no receipt in a room since its entry was made,
// from the database otherwise.
func (s *Service) readPositions(ctx context.Context, req *sync.Request, ids []string) (map[string]int64, error) {
	s.mu.Lock()
	cached := true
	out := make(map[string]int64, len(ids))
	for _, id := range ids {
		e := s.unread[req.UserID][id]
		if e == nil || s.ownReceiptPos[req.UserID+"\x00"+id] > e.asOf {
			cached = false
			break
		}
		out[id] = e.read
	}
	s.mu.Unlock()
	if cached {
		return out, nil
	}
	return s.db.ReadUpTo(ctx, req.UserID, ids)
}
