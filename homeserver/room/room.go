// Package room owns the rooms this server takes part in: their DAG, their
// current state and the writing of new events. It is the "one writer per
// room" of DESIGN.md: every event of a room is built, authorised and persisted
// by that room's writer, which batches concurrent requests into one database
// transaction (group commit) so a busy room costs one commit per batch, not
// per message.
//
// A loaded room keeps its current state in memory; readers get it without a
// query. Subscribers hear of every persisted event, in stream order per room,
// before the stream position becomes visible to readers.
package room

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"plaza/homeserver/auth"
	"plaza/homeserver/builder"
	"plaza/homeserver/event"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
)

// Errors the client API maps to Matrix errors.
var (
	ErrNotFound  = errors.New("room not found")
	ErrForbidden = errors.New("forbidden")
	// ErrUnknownEvent is returned when a request names an event the room
	// does not have (a redaction of an unknown event).
	ErrUnknownEvent = errors.New("unknown event")
)

// maxBatch bounds the events one transaction writes.
const maxBatch = 128

// Service is the writer and state cache of all rooms.
type Service struct {
	db         *storage.DB
	tracker    *stream.Tracker
	serverName string
	key        signing.Key
	now        func() time.Time
	keys       KeyVerifier // see SetFederation
	fetch      Fetcher

	mu    sync.Mutex
	rooms map[string]*roomEntry
	// lastCreateTS makes create events' timestamps strictly increasing: a
	// version 12 room ID is the create event's hash, so two identical
	// createRoom requests in the same millisecond would otherwise collide.
	lastCreateTS int64

	subsMu sync.RWMutex
	subs   []func(Notification)

	visMu  sync.Mutex
	vis    map[string]map[string]*Visibility // room → user → visibility
	visGen map[string]uint64                 // room → changes seen
}

// Notification tells subscribers about events just persisted in one room:
// local events and events received over federation alike. A subscriber
// tells them apart by the sender's server: id.ServerOf(ev.Sender()) is
// ServerName() only for events this server made (a received event must
// carry its sender's server's signature, which for our users only we can
// make). Events of local users in rooms we are not in (a knock, a rejected
// invite, already delivered through make_/send_) come too, for /sync; such
// rooms are not loaded (Version returns ErrNotFound).
type Notification struct {
	RoomID string
	Events []*storage.StoredEvent
	// Delivered is set for our users' membership events that already
	// reached the room's servers through a make_/send_ handshake (a join,
	// leave or knock over federation): the outbound sender must not send
	// them again.
	Delivered bool
}

// New returns the room service.
func New(db *storage.DB, tracker *stream.Tracker, serverName string, key signing.Key) *Service {
	return &Service{db: db, tracker: tracker, serverName: serverName, key: key, now: time.Now, rooms: map[string]*roomEntry{},
		vis: map[string]map[string]*Visibility{}, visGen: map[string]uint64{}}
}

// UpTo returns the stream position readers may read up to.
func (s *Service) UpTo() int64 { return s.tracker.UpTo() }

// ServerName returns the server's name.
func (s *Service) ServerName() string { return s.serverName }

// Subscribe registers f to hear about every persisted event. f runs on the
// writer's goroutine and must be quick.
func (s *Service) Subscribe(f func(Notification)) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.subs = append(s.subs, f)
}

type stateItem struct {
	nid int64
	ev  *event.Event
}

type roomEntry struct {
	loadMu sync.Mutex // serialises loading
	loaded bool

	smu         sync.RWMutex // guards the fields below for readers
	row         *storage.Room
	state       map[event.TypeKey]stateItem
	joined      int // members whose current membership is join
	extremities []*event.Event
	chainLen    int
	servers     []string // servers with joined members; nil: not computed

	qmu     sync.Mutex
	queue   []*pending
	writing bool
}

type pending struct {
	req Request
	// remote, if set, is a received event to place instead of req.
	remote *incoming
	done   chan struct{}
	res    Result
	err    error
}

// Request asks the writer for a new local event.
type Request struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// The sending device's transaction, echoed to it in unsigned.
	TxnDevice, TxnID string
}

// Result is the persisted event.
type Result struct {
	Event     *event.Event
	NID       int64
	StreamPos int64
}

func (s *Service) entry(roomID string) *roomEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomID]
	if r == nil {
		r = &roomEntry{}
		s.rooms[roomID] = r
	}
	return r
}

// load brings a room's state into memory once.
func (s *Service) load(ctx context.Context, roomID string) (*roomEntry, error) {
	r := s.entry(roomID)
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.loaded {
		return r, nil
	}
	if err := s.fill(ctx, r, roomID); err != nil {
		return nil, err
	}
	return r, nil
}

// fill loads a room's state into r; the caller holds r.loadMu. A room whose
// row holds no state yet (only outliers: a join over federation that did
// not finish) is not one we are in.
func (s *Service) fill(ctx context.Context, r *roomEntry, roomID string) error {
	row, err := s.db.Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && row.StateGroup == 0) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	entries, err := s.db.StateOfGroup(ctx, row.StateGroup)
	if err != nil {
		return err
	}
	nids := make([]int64, len(entries))
	for i, e := range entries {
		nids[i] = e.EventNID
	}
	evs, err := s.db.EventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	state := make(map[event.TypeKey]stateItem, len(evs))
	for _, se := range evs {
		tk, _ := se.Event.TypeKey()
		state[tk] = stateItem{nid: se.NID, ev: se.Event}
	}
	ext, err := s.db.EventsByID(ctx, row.Extremities)
	if err != nil {
		return err
	}
	chainLen, err := s.db.StateGroupChainLen(ctx, row.StateGroup)
	if err != nil {
		return err
	}
	joined := 0
	for tk, it := range state {
		if tk.Type == event.TypeMember && MembershipOf(it.ev) == "join" {
			joined++
		}
	}
	r.smu.Lock()
	r.row, r.state, r.chainLen, r.joined = row, state, chainLen, joined
	r.extremities = r.extremities[:0]
	for _, se := range ext {
		r.extremities = append(r.extremities, se.Event)
	}
	r.smu.Unlock()
	r.loaded = true
	return nil
}

// Version returns a room's version.
func (s *Service) Version(ctx context.Context, roomID string) (*event.RoomVersion, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	return r.row.Version, nil
}

// StateEvent returns one piece of current state, or nil.
func (s *Service) StateEvent(ctx context.Context, roomID, typ, stateKey string) (*event.Event, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	return r.state[event.TypeKey{Type: typ, StateKey: stateKey}].ev, nil
}

// CurrentState returns a copy of the room's current state events.
func (s *Service) CurrentState(ctx context.Context, roomID string) ([]*event.Event, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	out := make([]*event.Event, 0, len(r.state))
	for _, it := range r.state {
		out = append(out, it.ev)
	}
	return out, nil
}

// Membership returns a user's current membership ("" if none).
func (s *Service) Membership(ctx context.Context, roomID, userID string) (string, error) {
	ev, err := s.StateEvent(ctx, roomID, event.TypeMember, userID)
	if err != nil || ev == nil {
		return "", err
	}
	return MembershipOf(ev), nil
}

// MembershipOf reads content.membership of a member event.
func MembershipOf(ev *event.Event) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Membership
}

// Send builds, authorises and persists a local event. It waits for the
// room's writer, which may persist it together with others.
func (s *Service) Send(ctx context.Context, roomID string, req Request) (Result, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return Result{}, err
	}
	p := &pending{req: req, done: make(chan struct{})}
	s.enqueue(r, p)
	return p.res, p.err
}

// enqueue hands p to the room's writer and waits until it is written.
func (s *Service) enqueue(r *roomEntry, p *pending) {
	r.qmu.Lock()
	r.queue = append(r.queue, p)
	lead := !r.writing
	r.writing = true
	r.qmu.Unlock()
	if lead {
		s.drainOnce(r)
	}
	// The writer always finishes a request it took, so waiting without
	// watching ctx never blocks forever, and a request that was written is
	// reported as written.
	<-p.done
}

// drainOnce writes one batch from the queue, then hands what is left to a
// new goroutine so the leader's own caller is not kept waiting.
func (s *Service) drainOnce(r *roomEntry) {
	r.qmu.Lock()
	n := min(len(r.queue), maxBatch)
	batch := slices.Clone(r.queue[:n])
	r.queue = r.queue[n:]
	r.qmu.Unlock()

	s.writeBatch(r, batch)

	r.qmu.Lock()
	more := len(r.queue) > 0
	if !more {
		r.writing = false
	}
	r.qmu.Unlock()
	if more {
		go s.drainOnce(r)
	}
}

// setState replaces a piece of current state, keeping the joined count in
// step. The caller holds r.smu.
func (r *roomEntry) setState(tk event.TypeKey, it stateItem) {
	if tk.Type == event.TypeMember {
		r.servers = nil
		if old := r.state[tk].ev; old != nil && MembershipOf(old) == "join" {
			r.joined--
		}
		if MembershipOf(it.ev) == "join" {
			r.joined++
		}
	}
	r.state[tk] = it
}

// overlay is the room state as seen during a batch: the batch's own new state
// over the room's current state.
type overlay struct {
	base  map[event.TypeKey]stateItem
	added map[event.TypeKey]*event.Event
}

func (o *overlay) get(typ, sk string) *event.Event {
	tk := event.TypeKey{Type: typ, StateKey: sk}
	if ev, ok := o.added[tk]; ok {
		return ev
	}
	return o.base[tk].ev
}

// writeBatch writes a batch in queue order: runs of local requests as one
// group commit each, received events one by one between them.
func (s *Service) writeBatch(r *roomEntry, batch []*pending) {
	var locals []*pending
	for _, p := range batch {
		if p.remote == nil {
			locals = append(locals, p)
			continue
		}
		if len(locals) > 0 {
			s.writeLocal(r, locals)
			locals = nil
		}
		s.writeRemote(r, p)
	}
	if len(locals) > 0 {
		s.writeLocal(r, locals)
	}
}

func (s *Service) writeLocal(r *roomEntry, batch []*pending) {
	ctx := context.Background()
	r.smu.RLock()
	row := r.row
	ov := &overlay{base: r.state, added: map[event.TypeKey]*event.Event{}}
	prev := slices.Clone(r.extremities)
	chainLen := r.chainLen
	stateSize := len(r.state)
	r.smu.RUnlock()

	var built []*pending
	var news []storage.NewEvent
	for _, p := range batch {
		ev, err := s.build(row, ov, prev, p.req)
		if err != nil {
			p.err = err
			close(p.done)
			continue
		}
		ne := storage.NewEvent{Event: ev, TxnDevice: p.req.TxnDevice, TxnID: p.req.TxnID}
		if tk, ok := ev.TypeKey(); ok {
			if old := ov.get(tk.Type, tk.StateKey); old != nil {
				ne.ReplacesState = old.ID()
			}
		}
		if ev.Type() == event.TypeRedaction && ev.Redacts() != "" {
			apply, err := s.redactionAllowed(ev, ov)
			if err != nil {
				p.err = err
				close(p.done)
				continue
			}
			ne.ApplyRedaction = apply
		}
		if tk, ok := ev.TypeKey(); ok {
			ov.added[tk] = ev
			if ev.Type() == event.TypeMember {
				ne.Membership = MembershipOf(ev)
			}
			chainLen++
			if chainLen >= max(64, stateSize/8) {
				ne.Snapshot, chainLen = true, 0
			}
		}
		prev = []*event.Event{ev}
		built = append(built, p)
		news = append(news, ne)
	}
	if len(news) == 0 {
		return
	}
	for i := range news {
		news[i].StreamPos = s.tracker.Reserve()
	}
	r.smu.RLock()
	startChain := r.chainLen
	r.smu.RUnlock()
	persisted, err := s.db.PersistEvents(ctx, row, news, startChain, []string{prev[0].ID()})
	if err != nil {
		for i, p := range built {
			s.tracker.Complete(news[i].StreamPos)
			p.err = fmt.Errorf("persisting event: %w", err)
			close(p.done)
		}
		slog.Error("persisting events failed", "room", row.RoomID, "err", err)
		return
	}
	stored := make([]*storage.StoredEvent, len(news))
	r.smu.Lock()
	for i, ne := range news {
		if tk, ok := ne.Event.TypeKey(); ok {
			r.setState(tk, stateItem{nid: persisted[i].NID, ev: ne.Event})
		}
		stored[i] = &storage.StoredEvent{NID: persisted[i].NID, StreamPos: ne.StreamPos, Event: ne.Event, TxnDevice: ne.TxnDevice, TxnID: ne.TxnID,
			ReplacesState: ne.ReplacesState}
	}
	r.extremities = prev
	r.chainLen = persisted[len(persisted)-1].ChainLen
	r.smu.Unlock()

	s.publish(row.RoomID, stored)
	for i, p := range built {
		s.tracker.Complete(news[i].StreamPos)
		p.res = Result{Event: news[i].Event, NID: persisted[i].NID, StreamPos: news[i].StreamPos}
		close(p.done)
	}
}

// build makes and authorises one event on top of prev and the overlay state.
func (s *Service) build(row *storage.Room, ov *overlay, prev []*event.Event, req Request) (*event.Event, error) {
	ev, err := builder.Build(builder.Room{Version: row.Version, ID: row.RoomID, State: ov.get, Extremities: prev},
		builder.Request{Sender: req.Sender, Type: req.Type, StateKey: req.StateKey, Content: req.Content, Redacts: req.Redacts},
		s.now().UnixMilli(), builder.Signer{ServerName: s.serverName, Key: s.key})
	if errors.Is(err, auth.ErrForbidden) {
		return nil, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return ev, err
}

// CreateRoom creates a room: the create event, then initial events (the
// creator's join, power levels, join rules, ...). All of them are built and
// authorised first and written in one transaction with the room's row, so a
// bad initial event leaves nothing behind. For versions before 12 the room ID
// is minted here; from 12 on it is the create event's ID.
func (s *Service) CreateRoom(ctx context.Context, v *event.RoomVersion, creator string, createContent json.RawMessage, initial []Request) (string, error) {
	roomID := ""
	if !v.RoomIDFromCreate {
		roomID = "!" + randomString(18) + ":" + s.serverName
	}
	s.mu.Lock()
	ts := max(s.now().UnixMilli(), s.lastCreateTS+1)
	s.lastCreateTS = ts
	s.mu.Unlock()
	create, err := builder.BuildCreate(v, roomID, creator, createContent, ts, builder.Signer{ServerName: s.serverName, Key: s.key})
	if errors.Is(err, auth.ErrForbidden) {
		return "", fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	if err != nil {
		return "", err
	}
	roomID = create.RoomID()
	row := &storage.Room{RoomID: roomID, Version: v} // NID 0: PersistEvents inserts the row
	ov := &overlay{base: map[event.TypeKey]stateItem{}, added: map[event.TypeKey]*event.Event{{Type: event.TypeCreate}: create}}
	news := []storage.NewEvent{{Event: create}}
	prev := []*event.Event{create}
	for _, req := range initial {
		ev, err := s.build(row, ov, prev, req)
		if err != nil {
			return "", err
		}
		ne := storage.NewEvent{Event: ev}
		if tk, ok := ev.TypeKey(); ok {
			if old := ov.get(tk.Type, tk.StateKey); old != nil {
				ne.ReplacesState = old.ID()
			}
		}
		if tk, ok := ev.TypeKey(); ok {
			ov.added[tk] = ev
			if ev.Type() == event.TypeMember {
				ne.Membership = MembershipOf(ev)
			}
		}
		news = append(news, ne)
		prev = []*event.Event{ev}
	}
	for i := range news {
		news[i].StreamPos = s.tracker.Reserve()
	}
	persisted, err := s.db.PersistEvents(ctx, row, news, 0, []string{prev[0].ID()})
	if err != nil {
		for _, ne := range news {
			s.tracker.Complete(ne.StreamPos)
		}
		return "", err
	}
	r := s.entry(roomID)
	r.loadMu.Lock()
	r.smu.Lock()
	r.row = row
	r.state = make(map[event.TypeKey]stateItem, len(news))
	r.joined = 0
	stored := make([]*storage.StoredEvent, len(news))
	for i, ne := range news {
		if tk, ok := ne.Event.TypeKey(); ok {
			r.setState(tk, stateItem{nid: persisted[i].NID, ev: ne.Event})
		}
		stored[i] = &storage.StoredEvent{NID: persisted[i].NID, StreamPos: ne.StreamPos, Event: ne.Event, ReplacesState: ne.ReplacesState}
	}
	r.extremities = prev
	r.chainLen = persisted[len(persisted)-1].ChainLen
	r.smu.Unlock()
	r.loaded = true
	r.loadMu.Unlock()
	s.publish(roomID, stored)
	for _, ne := range news {
		s.tracker.Complete(ne.StreamPos)
	}
	return roomID, nil
}

func (s *Service) publish(roomID string, stored []*storage.StoredEvent) {
	s.notify(Notification{RoomID: roomID, Events: stored})
}

func (s *Service) notify(n Notification) {
	s.invalidateVisibility(n.RoomID, n.Events)
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	for _, f := range s.subs {
		f(n)
	}
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// PowerLevels returns the room's effective power levels.
func (s *Service) PowerLevels(ctx context.Context, roomID string) (auth.PowerLevels, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return auth.PowerLevels{}, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	return auth.PowerLevelsFor(func(typ, sk string) *event.Event {
		return r.state[event.TypeKey{Type: typ, StateKey: sk}].ev
	})
}

// LatestEventID returns the ID of one of the room's forward extremities.
func (s *Service) LatestEventID(ctx context.Context, roomID string) (string, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return "", err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	if len(r.extremities) == 0 {
		return "", ErrNotFound
	}
	return r.extremities[0].ID(), nil
}

// MembersAt returns the member events in force at a stream position.
func (s *Service) MembersAt(ctx context.Context, roomID string, pos int64) ([]*event.Event, error) {
	nid, err := s.db.RoomNID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	evs, err := s.db.MembersAt(ctx, nid, pos)
	if err != nil {
		return nil, err
	}
	out := make([]*event.Event, len(evs))
	for i, e := range evs {
		out[i] = e.Event
	}
	return out, nil
}

// StateAfterMembership returns the room state right after the user's latest
// membership event: what a former member may still see.
func (s *Service) StateAfterMembership(ctx context.Context, roomID, userID string) ([]*event.Event, error) {
	ev, err := s.StateEvent(ctx, roomID, event.TypeMember, userID)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, ErrForbidden
	}
	return s.StateAfterEvent(ctx, ev.ID())
}

// StateAfterEvent returns the room state after an event.
func (s *Service) StateAfterEvent(ctx context.Context, eventID string) ([]*event.Event, error) {
	group, target, err := s.db.StateBeforeEvent(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	// A backfilled event's state is not known: clients get what is
	// (the event itself, if it is state), as a hint, not a claim.
	if err != nil && !errors.Is(err, storage.ErrNoState) {
		return nil, err
	}
	entries, err := s.db.StateOfGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(entries))
	for _, e := range entries {
		nids = append(nids, e.EventNID)
	}
	evs, err := s.db.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	st := map[event.TypeKey]*event.Event{}
	for _, e := range evs {
		tk, _ := e.Event.TypeKey()
		st[tk] = e.Event
	}
	if tk, ok := target.Event.TypeKey(); ok && !target.Rejected {
		st[tk] = target.Event
	}
	out := make([]*event.Event, 0, len(st))
	for _, e := range st {
		out = append(out, e)
	}
	return out, nil
}

// redactionAllowed decides whether a local redaction may be applied ("Handling
// redactions"): its sender has the redact level, or is on the same server as
// the target's sender — for a local client, the same user, since Plaza does
// not let one local user redact another's events without power. A redaction
// the client may not make is refused outright.
func (s *Service) redactionAllowed(ev *event.Event, ov *overlay) (bool, error) {
	target, err := s.db.EventByID(context.Background(), ev.Redacts())
	if errors.Is(err, storage.ErrNotFound) && s.federated(ev.RoomID()) {
		// Another server may have the event we never received: the
		// redaction goes out for it to apply, if the sender may redact
		// others' events.
		pl, err := auth.PowerLevelsFor(ov.get)
		if err != nil {
			return false, err
		}
		if pl.UserLevel(ev.Sender()) >= pl.Redact {
			return false, nil
		}
		return false, fmt.Errorf("%w: you may only redact your own events", ErrForbidden)
	}
	if errors.Is(err, storage.ErrNotFound) || (err == nil && target.Event.RoomID() != ev.RoomID()) {
		return false, fmt.Errorf("%w: cannot redact %s", ErrUnknownEvent, ev.Redacts())
	}
	if err != nil {
		return false, err
	}
	if target.Event.Sender() == ev.Sender() {
		return true, nil
	}
	pl, err := auth.PowerLevelsFor(ov.get)
	if err != nil {
		return false, err
	}
	if pl.UserLevel(ev.Sender()) >= pl.Redact {
		return true, nil
	}
	return false, fmt.Errorf("%w: you may only redact your own events", ErrForbidden)
}

// federated reports whether servers other than ours have members joined
// to the room.
func (s *Service) federated(roomID string) bool {
	servers, err := s.Servers(context.Background(), roomID)
	return err == nil && slices.ContainsFunc(servers, func(sv string) bool { return sv != s.serverName })
}

// NID returns a room's numeric ID (from the loaded room: no query).
func (s *Service) NID(ctx context.Context, roomID string) (int64, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return 0, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	return r.row.NID, nil
}

// JoinedCount returns how many members are joined (in memory: no query).
func (s *Service) JoinedCount(ctx context.Context, roomID string) (int, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return 0, err
	}
	r.smu.RLock()
	defer r.smu.RUnlock()
	return r.joined, nil
}
