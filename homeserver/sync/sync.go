// Package sync owns GET /sync and client filters: it turns the global stream
// into each client's view — joined, invited and left rooms with their
// timelines and state, plus what extensions add (account data, to-device
// messages, device lists, receipts, typing, ...) — and long-polls until there
// is something new for that user.
//
// A sync token is "s<position>": everything up to that position of the one
// global stream has been delivered. Tokens therefore survive restarts and
// never skip an event (readers stop at the stream's persisted-up-to mark).
package sync

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/clientapi"
	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
)

// Extension adds a part of the sync response computed elsewhere (account
// data, to-device, device lists, ephemeral events...).
type Extension interface {
	// AddToSync fills its parts of resp for the window (req.Since, req.UpTo].
	AddToSync(ctx context.Context, req *Request, resp *Response) error
}

// Request describes one /sync computation.
type Request struct {
	UserID, DeviceID string
	Since            int64 // 0 for an initial sync
	UpTo             int64
	Filter           *Filter
	FullState        bool
	// Rooms the user is joined to, with their timelines' positions in this
	// response (extensions add per-room data for them).
	JoinedRooms []string
	// Window holds, per room, every event of (Since, UpTo] when the
	// timeline fetched all of them (unfiltered, not limited): extensions
	// that need those events use them instead of querying again.
	Window map[string][]*storage.StoredEvent
}

// Service serves /sync.
type Service struct {
	db         *storage.DB
	rooms      *room.Service
	tracker    *stream.Tracker
	extensions []Extension

	// startPos is the stream position when this process started: the change
	// maps below know nothing older, so a token before it must not wait.
	startPos int64

	mu         gosync.Mutex
	joined     map[string][]string // user → joined rooms, while valid
	userGen    map[string]uint64   // user → membership changes seen
	roomLatest map[string]int64    // last stream position of each room's timeline
	memberPos  map[string]int64    // last stream position of a member event per room
	filters    map[string]*Filter  // parsed filters by user and parameter
	userLatest map[string]int64    // last position of something addressed to a user
}

// New returns the sync service; it subscribes to the room service to learn
// which rooms and users each new position concerns.
func New(db *storage.DB, rooms *room.Service, tracker *stream.Tracker) *Service {
	s := &Service{db: db, rooms: rooms, tracker: tracker, startPos: tracker.UpTo(),
		joined: map[string][]string{}, userGen: map[string]uint64{}, roomLatest: map[string]int64{}, memberPos: map[string]int64{}, filters: map[string]*Filter{},
		userLatest: map[string]int64{}}
	rooms.Subscribe(s.onEvents)
	return s
}

// AddExtension registers an extension.
func (s *Service) AddExtension(e Extension) { s.extensions = append(s.extensions, e) }

// NotifyUser records that something at pos concerns a user (extensions call
// it for to-device messages, account data, ...), so their long-poll wakes.
func (s *Service) NotifyUser(userID string, pos int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLatest[userID] = max(s.userLatest[userID], pos)
}

// NotifyRoom records that something at pos concerns a room's members
// (receipts, typing).
func (s *Service) NotifyRoom(roomID string, pos int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roomLatest[roomID] = max(s.roomLatest[roomID], pos)
}

func (s *Service) onEvents(n room.Notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range n.Events {
		s.roomLatest[n.RoomID] = max(s.roomLatest[n.RoomID], e.StreamPos)
		if e.Event.Type() == event.TypeMember && e.Event.StateKey() != nil {
			u := *e.Event.StateKey()
			s.userLatest[u] = max(s.userLatest[u], e.StreamPos)
			s.userGen[u]++
			delete(s.joined, u)
			s.memberPos[n.RoomID] = max(s.memberPos[n.RoomID], e.StreamPos)
		}
	}
}

// maxCachedUsers bounds the joined-rooms cache; past it, it starts over.
const maxCachedUsers = 100_000

// joinedRooms returns the rooms a user is joined to, from a cache that
// membership events clear (before their positions complete).
func (s *Service) joinedRooms(ctx context.Context, userID string) ([]string, error) {
	s.mu.Lock()
	rooms, ok := s.joined[userID]
	gen := s.userGen[userID]
	s.mu.Unlock()
	if ok {
		return rooms, nil
	}
	rooms, err := s.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.userGen[userID] == gen {
		if len(s.joined) >= maxCachedUsers {
			clear(s.joined)
		}
		s.joined[userID] = rooms
	}
	s.mu.Unlock()
	return rooms, nil
}

// UserChanged reports whether anything addressed to the user (their
// memberships, or whatever extensions marked with NotifyUser) may have
// changed after since; always true for positions older than this process.
// Extensions use it to skip their queries on the common incremental sync.
func (s *Service) UserChanged(userID string, since int64) bool {
	return s.membershipMayHaveChanged(userID, since)
}

// MembersChanged reports whether any member event may have happened in the
// rooms after since (always, for positions older than this process).
func (s *Service) MembersChanged(rooms []string, since int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if since < s.startPos {
		return true
	}
	for _, r := range rooms {
		if s.memberPos[r] > since {
			return true
		}
	}
	return false
}

// membershipMayHaveChanged reports whether the user's memberships may have
// changed after since (always, for positions older than this process).
func (s *Service) membershipMayHaveChanged(userID string, since int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return since < s.startPos || s.userLatest[userID] > since
}

// somethingNew reports whether anything concerning the user or their rooms
// happened after since.
func (s *Service) somethingNew(userID string, rooms []string, since int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if since < s.startPos || s.userLatest[userID] > since {
		return true
	}
	for _, r := range rooms {
		if s.roomLatest[r] > since {
			return true
		}
	}
	return false
}

// Routes mounts /sync and the filter endpoints behind authenticate.
func (s *Service) Routes(r chi.Router) {
	r.Get("/sync", s.sync)
	r.Post("/user/{userID}/filter", s.createFilter)
	r.Get("/user/{userID}/filter/{filterID}", s.getFilter)
}

// Response is the /sync response.
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       Rooms          `json:"rooms"`
	AccountData *EventList     `json:"account_data,omitempty"`
	Presence    *EventList     `json:"presence,omitempty"`
	ToDevice    *EventList     `json:"to_device,omitempty"`
	DeviceLists *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count,omitempty"`
	Fallback    []string       `json:"device_unused_fallback_key_types"`
}

// JoinedRoomSection returns the response's section for a joined room,
// creating an empty one when the room had no new timeline events
// (extensions add ephemeral events or account data to it).
func (r *Response) JoinedRoomSection(roomID string) *JoinedRoom {
	if jr := r.Rooms.Join[roomID]; jr != nil {
		return jr
	}
	jr := &JoinedRoom{Summary: map[string]any{}, UnreadNotifications: map[string]int{"notification_count": 0, "highlight_count": 0}}
	jr.Ephemeral.Events, jr.AccountData.Events = []any{}, []any{}
	jr.State.Events, jr.Timeline.Events = []event.ClientEvent{}, []event.ClientEvent{}
	r.Rooms.Join[roomID] = jr
	return jr
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []any `json:"events"`
}

// DeviceLists is the device_lists section.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// Rooms is the rooms section.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]*KnockedRoom `json:"knock"`
	// Peek holds rooms the device peeks into (MSC2753), shaped like Join;
	// the peek package's extension fills it.
	Peek map[string]*JoinedRoom `json:"peek,omitempty"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []event.ClientEvent `json:"events"`
	Limited   bool                `json:"limited"`
	PrevBatch string              `json:"prev_batch,omitempty"`
}

// JoinedRoom is a joined room's section.
type JoinedRoom struct {
	Summary             map[string]any `json:"summary"`
	State               EventListOf    `json:"state"`
	Timeline            Timeline       `json:"timeline"`
	Ephemeral           EventList      `json:"ephemeral"`
	AccountData         EventList      `json:"account_data"`
	UnreadNotifications map[string]int `json:"unread_notifications"`
	UnreadThreadNotifs  map[string]any `json:"unread_thread_notifications,omitempty"`
}

// EventListOf is {"events": [client events]}.
type EventListOf struct {
	Events []event.ClientEvent `json:"events"`
}

// InvitedRoom is an invited room's section.
type InvitedRoom struct {
	InviteState struct {
		Events []any `json:"events"`
	} `json:"invite_state"`
}

// KnockedRoom is a knocked room's section.
type KnockedRoom struct {
	KnockState struct {
		Events []any `json:"events"`
	} `json:"knock_state"`
}

// LeftRoom is a left room's section.
type LeftRoom struct {
	State       EventListOf `json:"state"`
	Timeline    Timeline    `json:"timeline"`
	AccountData EventList   `json:"account_data"`
}

func (s *Service) sync(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	q := r.URL.Query()
	req := &Request{UserID: rq.UserID, DeviceID: rq.DeviceID, FullState: q.Get("full_state") == "true"}
	if since := q.Get("since"); since != "" {
		pos, err := parseToken(since)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		req.Since = pos
	}
	timeout := time.Duration(0)
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			httpapi.Fail(w, r, httpapi.InvalidParam("timeout must be a non-negative integer"))
			return
		}
		timeout = min(time.Duration(ms)*time.Millisecond, 5*time.Minute)
	}
	filter, err := s.loadFilter(ctx, rq.UserID, q.Get("filter"))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	req.Filter = filter
	if ps := q.Get("set_presence"); ps != "" && ps != "online" && ps != "offline" && ps != "unavailable" {
		httpapi.Fail(w, r, httpapi.InvalidParam("set_presence must be online, offline or unavailable"))
		return
	}

	joined, err := s.joinedRooms(ctx, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	upto := s.tracker.UpTo()
	if req.Since > upto {
		// A token from the future (e.g. of a wiped database) restarts the
		// client from scratch rather than waiting forever.
		req.Since = 0
	}
	if req.Since > 0 && timeout > 0 && !req.FullState && !s.somethingNew(rq.UserID, joined, req.Since) {
		deadline, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		for !s.somethingNew(rq.UserID, joined, req.Since) {
			_, ch := s.tracker.Changed()
			if s.somethingNew(rq.UserID, joined, req.Since) {
				break
			}
			select {
			case <-ch:
				continue
			case <-deadline.Done():
			}
			break
		}
		if ctx.Err() != nil {
			return // the client went away
		}
		if joined, err = s.joinedRooms(ctx, rq.UserID); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	// Only read up to what is persisted and what our change maps have seen.
	upto = s.tracker.UpTo()
	req.UpTo = upto
	req.JoinedRooms = joined
	resp, err := s.compute(ctx, req)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, resp)
}

func parseToken(tok string) (int64, error) {
	if !strings.HasPrefix(tok, "s") {
		return 0, httpapi.InvalidParam("invalid since token")
	}
	num := tok[1:]
	if i := strings.IndexByte(num, '_'); i >= 0 {
		num = num[:i]
	}
	pos, err := strconv.ParseInt(num, 10, 64)
	if err != nil || pos < 0 {
		return 0, httpapi.InvalidParam("invalid since token")
	}
	return pos, nil
}

// compute builds the response for (Since, UpTo].
func (s *Service) compute(ctx context.Context, req *Request) (*Response, error) {
	resp := &Response{NextBatch: clientapi.StreamToken(req.UpTo), Rooms: Rooms{
		Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{}, Leave: map[string]*LeftRoom{}, Knock: map[string]*KnockedRoom{},
	}}
	f := &clientapi.Formatter{DB: s.db, UserID: req.UserID, DeviceID: req.DeviceID, NowMS: time.Now().UnixMilli()}
	rf := req.Filter.Room
	allowed := func(roomID string) bool {
		if rf.Rooms != nil && !slices.Contains(rf.Rooms, roomID) {
			return false
		}
		return !slices.Contains(rf.NotRooms, roomID)
	}

	// Rooms whose membership changed in the window; for an initial sync,
	// every room the user has a membership in.
	type change struct {
		membership string
		pos        int64
	}
	changed := map[string]change{}
	switch {
	case req.Since > 0 && !s.membershipMayHaveChanged(req.UserID, req.Since):
		// Nothing: no membership of the user changed in the window.
	case req.Since > 0:
		cs, err := s.db.MembershipChanges(ctx, req.UserID, req.Since, req.UpTo)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			changed[c.RoomID] = change{c.Membership, c.StreamPos}
		}
	default:
		for _, m := range []string{"invite", "knock"} {
			ids, err := s.db.RoomsWithMembership(ctx, req.UserID, m)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				changed[id] = change{m, 0}
			}
		}
		if rf.IncludeLeave {
			ids, err := s.db.RoomsWithMembership(ctx, req.UserID, "leave", "ban")
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				changed[id] = change{"leave", 0}
			}
		}
	}
	var forgotten []string
	for _, c := range changed {
		if c.membership == "leave" || c.membership == "ban" {
			var err error
			if forgotten, err = s.db.Forgotten(ctx, req.UserID); err != nil {
				return nil, err
			}
			break
		}
	}

	// Joined rooms: a full section for initial syncs and newly joined rooms,
	// only what is new otherwise.
	joinedNIDs := make(map[string]int64, len(req.JoinedRooms))
	for _, roomID := range req.JoinedRooms {
		nid, err := s.rooms.NID(ctx, roomID)
		if err != nil {
			return nil, err
		}
		joinedNIDs[roomID] = nid
	}
	active := map[int64]bool{}
	switch {
	case req.Since == 0 || len(joinedNIDs) == 0:
	case req.Since >= s.startPos:
		// The change map has seen every event since this process started.
		s.mu.Lock()
		for roomID, nid := range joinedNIDs {
			active[nid] = s.roomLatest[roomID] > req.Since
		}
		s.mu.Unlock()
	default:
		nids := make([]int64, 0, len(joinedNIDs))
		for _, n := range joinedNIDs {
			nids = append(nids, n)
		}
		act, err := s.db.RoomsWithEventsSince(ctx, nids, req.Since, req.UpTo)
		if err != nil {
			return nil, err
		}
		for _, n := range act {
			active[n] = true
		}
	}
	for _, roomID := range req.JoinedRooms {
		if !allowed(roomID) {
			continue
		}
		nid := joinedNIDs[roomID]
		_, newlyJoined := changed[roomID]
		full := req.Since == 0 || newlyJoined || req.FullState
		if !full && !active[nid] {
			continue
		}
		jr, err := s.joinedRoom(ctx, req, f, roomID, nid, full)
		if err != nil {
			return nil, err
		}
		resp.Rooms.Join[roomID] = jr
	}
	for roomID, c := range changed {
		if !allowed(roomID) || slices.Contains(forgotten, roomID) {
			continue
		}
		switch c.membership {
		case "invite":
			ir, err := s.invitedRoom(ctx, roomID, req.UserID)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Invite[roomID] = ir
		case "knock":
			kr := &KnockedRoom{}
			st, _, remote, err := s.rooms.RemoteInvite(ctx, roomID, req.UserID)
			if err == nil && !remote {
				st, err = s.strippedState(ctx, roomID, req.UserID)
			}
			if err != nil {
				return nil, err
			}
			kr.KnockState.Events = st
			resp.Rooms.Knock[roomID] = kr
		case "leave", "ban":
			if slices.Contains(req.JoinedRooms, roomID) {
				continue // left and joined again within the window
			}
			if req.Since > 0 || rf.IncludeLeave {
				lr, err := s.leftRoom(ctx, req, f, roomID, c.pos)
				if err != nil {
					return nil, err
				}
				resp.Rooms.Leave[roomID] = lr
			}
		}
	}
	for _, e := range s.extensions {
		if err := e.AddToSync(ctx, req, resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (s *Service) joinedRoom(ctx context.Context, req *Request, f *clientapi.Formatter, roomID string, nid int64, full bool) (*JoinedRoom, error) {
	tf := req.Filter.Room.Timeline
	jr := &JoinedRoom{Summary: map[string]any{}, UnreadNotifications: map[string]int{"notification_count": 0, "highlight_count": 0}}
	jr.Ephemeral.Events, jr.AccountData.Events = []any{}, []any{}
	from := req.Since
	if full {
		from = 0
	}
	tl, evs, limited, err := s.timeline(ctx, req, f, roomID, nid, from, req.UpTo)
	if err != nil {
		return nil, err
	}
	if !limited && !full && tf.Storage().Empty() {
		if req.Window == nil {
			req.Window = map[string][]*storage.StoredEvent{}
		}
		req.Window[roomID] = evs
	}
	jr.Timeline = tl
	if len(evs) == 0 {
		jr.Timeline.PrevBatch = clientapi.StreamToken(req.UpTo)
	}

	// State: everything for a full section; for an incremental, limited
	// timeline the state changes the timeline skipped.
	inTimeline := map[event.TypeKey]bool{}
	senders := map[string]bool{}
	for _, e := range evs {
		if tk, ok := e.Event.TypeKey(); ok {
			inTimeline[tk] = true
		}
		senders[e.Event.Sender()] = true
	}
	lazy := req.Filter.Room.State.LazyLoadMembers
	var state []*event.Event
	switch {
	case full:
		cur, err := s.rooms.CurrentState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, ev := range cur {
			tk, _ := ev.TypeKey()
			if inTimeline[tk] {
				continue
			}
			if lazy && ev.Type() == event.TypeMember && !senders[*ev.StateKey()] && *ev.StateKey() != req.UserID {
				continue
			}
			state = append(state, ev)
		}
	case limited && len(evs) > 0:
		gap, err := s.db.StateEventsBetween(ctx, nid, req.Since, evs[0].StreamPos-1)
		if err != nil {
			return nil, err
		}
		latest := map[event.TypeKey]*event.Event{}
		for _, g := range gap {
			tk, _ := g.Event.TypeKey()
			latest[tk] = g.Event
		}
		for tk, ev := range latest {
			if !inTimeline[tk] {
				state = append(state, ev)
			}
		}
	}
	if lazy && !full {
		// Lazy loading: members of the timeline's senders the client may
		// not know yet.
		for sdr := range senders {
			if inTimeline[event.TypeKey{Type: event.TypeMember, StateKey: sdr}] {
				continue
			}
			m, err := s.rooms.StateEvent(ctx, roomID, event.TypeMember, sdr)
			if err != nil {
				return nil, err
			}
			if m != nil {
				state = append(state, m)
			}
		}
	}
	jr.State.Events = make([]event.ClientEvent, 0, len(state))
	for _, ev := range state {
		jr.State.Events = append(jr.State.Events, ev.Client())
	}
	if full {
		if err := s.summary(ctx, roomID, nid, jr); err != nil {
			return nil, err
		}
	}
	return jr, nil
}

// summary fills the room summary (heroes and member counts).
func (s *Service) summary(ctx context.Context, roomID string, nid int64, jr *JoinedRoom) error {
	joined, invited, err := s.db.MemberCounts(ctx, nid)
	if err != nil {
		return err
	}
	jr.Summary["m.joined_member_count"] = joined
	jr.Summary["m.invited_member_count"] = invited
	return nil
}

func (s *Service) leftRoom(ctx context.Context, req *Request, f *clientapi.Formatter, roomID string, leavePos int64) (*LeftRoom, error) {
	nid, err := s.db.RoomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	lr := &LeftRoom{}
	lr.AccountData.Events = []any{}
	lr.State.Events = []event.ClientEvent{}
	upto := req.UpTo
	if leavePos > 0 {
		upto = leavePos
	}
	if lr.Timeline, _, _, err = s.timeline(ctx, req, f, roomID, nid, req.Since, upto); err != nil {
		return nil, err
	}
	return lr, nil
}

// timeline reads the newest events of a room's window (from, upto] up to
// the filter's limit and renders those the user may see, oldest first. It
// also returns all the events read and whether the window held more.
func (s *Service) timeline(ctx context.Context, req *Request, f *clientapi.Formatter, roomID string, nid, from, upto int64) (Timeline, []*storage.StoredEvent, bool, error) {
	tf := req.Filter.Room.Timeline
	limit := tf.Limit
	if limit <= 0 {
		limit = 10
	}
	// Newest first, one more than the limit to know whether it is limited.
	evs, err := s.db.RoomEvents(ctx, nid, upto, from, true, limit+1, tf.Storage())
	if err != nil {
		return Timeline{}, nil, false, err
	}
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	slices.Reverse(evs)
	vis, err := s.rooms.VisibilityFor(ctx, roomID, req.UserID)
	if err != nil {
		return Timeline{}, nil, false, err
	}
	rendered, err := f.Format(ctx, clientapi.VisibleOnly(vis, evs))
	if err != nil {
		return Timeline{}, nil, false, err
	}
	tl := Timeline{Events: rendered, Limited: limited}
	if len(evs) > 0 {
		tl.PrevBatch = clientapi.StreamToken(evs[0].StreamPos - 1)
	}
	return tl, evs, limited, nil
}

// strippedState is the stripped state shown with invites and knocks.
func (s *Service) strippedState(ctx context.Context, roomID, userID string) ([]any, error) {
	var out []any
	for _, typ := range []string{event.TypeCreate, event.TypeJoinRules, "m.room.name", "m.room.avatar",
		"m.room.canonical_alias", "m.room.encryption", "m.room.topic"} {
		ev, err := s.rooms.StateEvent(ctx, roomID, typ, "")
		if err != nil {
			return nil, err
		}
		if ev != nil {
			out = append(out, map[string]any{"type": ev.Type(), "state_key": "", "sender": ev.Sender(), "content": json.RawMessage(ev.Content())})
		}
	}
	me, err := s.rooms.StateEvent(ctx, roomID, event.TypeMember, userID)
	if err != nil {
		return nil, err
	}
	if me != nil {
		out = append(out, me.Client())
	}
	return out, nil
}

func (s *Service) invitedRoom(ctx context.Context, roomID, userID string) (*InvitedRoom, error) {
	ir := &InvitedRoom{}
	if st, _, ok, err := s.rooms.RemoteInvite(ctx, roomID, userID); err != nil || ok {
		// An invite to a room on other servers: the state it came with.
		ir.InviteState.Events = st
		return ir, err
	}
	st, err := s.strippedState(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	ir.InviteState.Events = st
	return ir, nil
}

// ErrBadFilter is wrapped by filter validation errors.
var ErrBadFilter = errors.New("bad filter")
