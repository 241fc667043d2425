// Package snapshot owns the hot-room snapshot cache that Plaza's room
// previews are served from: per room, the latest events an anonymous reader
// may see (history visibility world_readable at the event), already rendered
// as client JSON, with the room summary (name, topic, avatar, canonical alias,
// join rule, member counts, ...).
//
// A snapshot is immutable; every change builds a new one (copy-on-write), so
// a reader holds a consistent view without locks. Changes come only from the
// room service's event stream (room.Service.Subscribe): the cache never asks
// "did this room change?", so several processes fed by the same stream stay
// consistent. A cold room is loaded once however many readers ask at the same
// time, and memory is bounded by an LRU on an estimate of each room's bytes.
//
// A cold load reads only what the first screen shows, with a few targeted
// queries run at once — the state without member events, a member COUNT, the
// latest events and their senders' member events — and never loads the room
// into the room service, which for a 20,000-member room means reading and
// parsing every member event (seconds). Every user's membership (strings,
// which keep the counts exact as the stream changes them) is read after the
// first snapshot is served.
package snapshot

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"plaza/homeserver/event"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
)

// ErrNotFound is returned for rooms this server does not know.
var ErrNotFound = errors.New("room not found")

// Config bounds the cache.
type Config struct {
	// MaxBytes bounds the estimated memory of all snapshots (default 256 MiB).
	MaxBytes int64
	// Events is how many of the latest visible events a snapshot keeps
	// (default 50).
	Events int
	// Loads bounds cold loads running at once (default 4): anyone may ask
	// for any room's summary, and a cold 20,000-member room costs the room
	// service seconds of CPU, so a flood of them must queue, not pile up.
	Loads int
	// Render, if set, renders an event for the web room page (an HTML
	// fragment). It runs once when the event enters a snapshot and again
	// only when the event changes there (redacted, edited), so a page view
	// copies bytes instead of rendering; its result is Event.HTML and is
	// counted in MaxBytes. It must not block: it runs under the cache's
	// lock, on the room writer's goroutine.
	Render func(ev *Event) []byte
}

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = 256 << 20
	}
	if c.Events <= 0 {
		c.Events = 50
	}
	if c.Loads <= 0 {
		c.Loads = 4
	}
	return c
}

// Summary is what a room preview shows about a room.
type Summary struct {
	RoomID            string
	RoomVersion       string
	RoomType          string
	Name              string
	Topic             string
	AvatarURL         string
	CanonicalAlias    string
	JoinRule          string
	AllowedRoomIDs    []string
	GuestCanJoin      bool
	HistoryVisibility string
	Encryption        string
	JoinedMembers     int
	InvitedMembers    int
}

// WorldReadable reports whether the room's current history visibility lets
// anyone read it.
func (s *Summary) WorldReadable() bool { return s.HistoryVisibility == "world_readable" }

// Public reports whether anyone may learn about the room without being in
// it: its join rule lets anyone join or knock (room_summary's rule).
func (s *Summary) Public() bool {
	switch s.JoinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	return false
}

// Event is one timeline event rendered for clients.
type Event struct {
	Pos    int64
	Event  *event.Event // as sent (unredacted), for re-rendering
	Sender string
	TS     int64
	// body is the client JSON without unsigned and without its closing
	// brace; unsigned holds extra unsigned members ("redacted_because":…)
	// without braces. Age is added when written, so the bytes stay valid.
	body     []byte
	unsigned []byte
	// Redacted is set when a redaction applied to the event.
	Redacted bool
	// Edit is the latest m.replace edit of this event seen in the window.
	Edit *event.Event
	// HTML is Config.Render's rendering of the event as it is now (nil
	// without a Render hook). Shared by every reader: never modify it.
	HTML []byte
}

// Snapshot is one room's preview at a stream position. Never modified once
// published.
type Snapshot struct {
	Summary Summary
	// Pos is the stream position the snapshot is current to for this room.
	Pos int64
	// Events are the latest visible events, oldest first.
	Events []*Event
	// Floor is the position after which Events hold every visible event
	// (older ones were trimmed or never loaded).
	Floor int64
	// State is the room's current state without member events, rendered.
	State map[event.TypeKey][]byte
	// Members holds the rendered current member events of the senders of
	// Events (lazy-loading members: a 20,000-member room's preview does not
	// carry 20,000 member events).
	Members map[string][]byte

	changed chan struct{} // closed when a newer snapshot replaces this one
	bytes   int64
}

// Changed returns a channel closed when a newer snapshot of the room exists
// (or the room left the cache): one fan-out per room for live viewers.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// AppendEvent writes e as client JSON to b, with its age at nowMS.
func AppendEvent(b []byte, e *Event, nowMS int64) []byte {
	b = append(b, e.body...)
	b = append(b, `,"unsigned":{"age":`...)
	b = strconv.AppendInt(b, max(nowMS-e.TS, 0), 10)
	if len(e.unsigned) > 0 {
		b = append(b, ',')
		b = append(b, e.unsigned...)
	}
	return append(b, "}}"...)
}

// Size is the length of e's client JSON without its unsigned age.
func (e *Event) Size() int { return len(e.body) + len(e.unsigned) }

// JSON returns e as client JSON with its age at nowMS.
func (e *Event) JSON(nowMS int64) json.RawMessage { return AppendEvent(nil, e, nowMS) }

// Since returns the snapshot's events after pos, and whether the snapshot
// covers everything after pos (false: older events were trimmed away and
// the caller must read storage).
func (s *Snapshot) Since(pos int64) ([]*Event, bool) {
	if pos < s.Floor {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(s.Events, pos+1, func(e *Event, p int64) int {
		switch {
		case e.Pos < p:
			return -1
		case e.Pos > p:
			return 1
		}
		return 0
	})
	return s.Events[i:], true
}

// Cache is the snapshot cache.
type Cache struct {
	cfg     Config
	db      *storage.DB
	rooms   *room.Service
	tracker *stream.Tracker
	now     func() time.Time
	loads   chan struct{} // a slot per running cold load

	// published is the highest stream position the room service has
	// announced to us: a loader waits until readers can read that far, so no
	// event falls between its load and the stream (see load).
	published atomic.Int64

	mu      sync.Mutex
	entries map[string]*entry
	lru     *list.List // of *entry, most recently used first
	bytes   int64
}

// entry is one room's cache slot. Fields after ready are guarded by
// Cache.mu.
type entry struct {
	roomID string
	ready  chan struct{} // closed when the load finished (err or snap set)
	err    error
	elem   *list.Element

	snap *Snapshot
	// pending holds stream notifications that arrived during the load.
	pending []room.Notification
	loading bool
	// memberships are every user's current membership: the summary's
	// counts need a user's previous membership when a new one arrives.
	// Strings only — a 20,000-member room's member events would cost a
	// cold load seconds to read and parse. Even so, 20,000 rows are the
	// slowest read of a cold load, so they are read after the first
	// snapshot is served (nil until then; counts come from a COUNT), and
	// member events from the stream wait in memberQueue meanwhile.
	memberships map[string]string
	memberQueue []*event.Event
	// membershipBytes is memberships' share of the estimate, kept as it
	// changes: summing 20,000 entries per message would cost more than
	// the message.
	membershipBytes int64
	// memberEvents are the member events of the window's senders (and of
	// users whose member event arrived from the stream), for Members.
	memberEvents map[string]*event.Event
	// missing are window senders whose member event is not known yet; a
	// filler goroutine reads them (filling is set while it runs).
	missing map[string]bool
	filling bool
}

// New returns a cache fed by rooms' event stream.
func New(cfg Config, db *storage.DB, rooms *room.Service, tracker *stream.Tracker) *Cache {
	c := &Cache{cfg: cfg.withDefaults(), db: db, rooms: rooms, tracker: tracker, now: time.Now,
		entries: map[string]*entry{}, lru: list.New()}
	c.loads = make(chan struct{}, c.cfg.Loads)
	c.published.Store(tracker.UpTo())
	rooms.Subscribe(c.onEvents)
	return c
}

// Get returns the room's current snapshot, loading it if cold. Concurrent
// callers for a cold room share one load.
func (c *Cache) Get(ctx context.Context, roomID string) (*Snapshot, error) {
	c.mu.Lock()
	e := c.entries[roomID]
	if e != nil && e.snap != nil {
		c.lru.MoveToFront(e.elem)
		s := e.snap
		c.mu.Unlock()
		return s, nil
	}
	if e == nil {
		e = &entry{roomID: roomID, ready: make(chan struct{}), loading: true}
		e.elem = c.lru.PushFront(e)
		c.entries[roomID] = e
		c.mu.Unlock()
		c.load(e)
	} else {
		c.mu.Unlock()
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil {
		return nil, e.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.snap, nil
}

// Membership returns a user's current membership in a cached room ("" if
// none) from memory, and false when the cache cannot tell (the room is not
// cached, or its memberships are still being read after a cold load).
func (c *Cache) Membership(roomID, userID string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[roomID]
	if e == nil || e.memberships == nil {
		return "", false
	}
	return e.memberships[userID], true
}

// Len returns how many rooms are cached and their estimated bytes.
func (c *Cache) Len() (rooms int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

// load builds a cold room's snapshot. The entry is registered before the
// position to load up to is chosen, and the loader waits until readers can
// read everything the stream had announced by then: every event announced
// before registration is then in storage up to that position, and every
// event announced after it was queued on the entry and is replayed.
func (c *Cache) load(e *entry) {
	// The load belongs to every waiter, not to the first caller's request.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b *built
	var err error
	select {
	case c.loads <- struct{}{}:
		pos := c.tracker.Wait(ctx, c.published.Load()-1)
		b, err = c.build(ctx, e.roomID, pos)
		<-c.loads
	case <-ctx.Done():
		err = fmt.Errorf("waiting to load room %s: %w", e.roomID, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		e.err = err
		delete(c.entries, e.roomID)
		c.lru.Remove(e.elem)
		close(e.ready)
		return
	}
	e.snap, e.memberEvents, e.missing, e.loading = b.snap, b.memberEvents, map[string]bool{}, false
	for _, n := range e.pending {
		c.applyLocked(e, n)
	}
	e.pending = nil
	c.bytes += e.snap.bytes
	close(e.ready)
	go c.loadMemberships(e)
	c.fillLocked(e)
	c.evictLocked(e)
}

// loadMemberships reads every user's membership after a cold load and
// makes the counts exact from then on: counted from the map, then the
// member events the stream brought meanwhile replayed on top. The map
// holds absolute values, so an event already reflected in it changes
// nothing when replayed; one committed after the read arrives from the
// stream later. If the read fails the room leaves the cache and the next
// reader loads it again.
func (c *Cache) loadMemberships(e *entry) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var m map[string]string
	nid, err := c.db.RoomNID(ctx, e.roomID)
	if err == nil {
		m, err = c.db.Memberships(ctx, nid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[e.roomID] != e {
		return // evicted meanwhile
	}
	if err != nil {
		c.dropLocked(e)
		return
	}
	e.memberships = m
	e.membershipBytes = 0
	for u, v := range m {
		e.membershipBytes += membershipSize(u, v)
	}
	prev := e.snap
	next := *prev
	next.Summary.JoinedMembers, next.Summary.InvitedMembers = 0, 0
	for _, v := range m {
		next.Summary.JoinedMembers += count(v, "join")
		next.Summary.InvitedMembers += count(v, "invite")
	}
	for _, ev := range e.memberQueue {
		user := *ev.StateKey()
		before, after := m[user], room.MembershipOf(ev)
		next.Summary.JoinedMembers += count(after, "join") - count(before, "join")
		next.Summary.InvitedMembers += count(after, "invite") - count(before, "invite")
		e.setMembership(user, after)
	}
	e.memberQueue = nil
	next.bytes = estimate(&next, e.membershipBytes, e.memberEvents)
	c.bytes += next.bytes - prev.bytes
	if next.Summary.JoinedMembers == prev.Summary.JoinedMembers && next.Summary.InvitedMembers == prev.Summary.InvitedMembers {
		prev.bytes = next.bytes // only ever read under c.mu
		return
	}
	next.changed = make(chan struct{})
	e.snap = &next
	close(prev.changed)
	c.evictLocked(e)
}

// dropLocked removes a loaded room from the cache.
func (c *Cache) dropLocked(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.roomID)
	c.bytes -= e.snap.bytes
	close(e.snap.changed)
}

// built is what a cold load read.
type built struct {
	snap         *Snapshot
	memberEvents map[string]*event.Event
}

// build reads a room's snapshot up to pos from storage, with a few targeted
// queries: the room row, its state without member events, every user's
// membership (strings, for the counts), the history visibility changes, the
// latest events and the member events of their senders. It does not load
// the room into the room service: for a 20,000-member room that means
// reading and parsing every member event, seconds of a first visit.
func (c *Cache) build(ctx context.Context, roomID string, pos int64) (*built, error) {
	row, err := c.db.Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
	}
	// Three independent reads at once: a first visit waits for the
	// slowest, not for their sum.
	var state, latest, senderEvents []*storage.StoredEvent
	var joined, invited int
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		if state, err = c.db.StateWithoutMembers(gctx, row.NID); err != nil {
			return fmt.Errorf("loading room %s state: %w", roomID, err)
		}
		return nil
	})
	g.Go(func() (err error) {
		if joined, invited, err = c.db.MemberCounts(gctx, row.NID); err != nil {
			return fmt.Errorf("counting room %s members: %w", roomID, err)
		}
		return nil
	})
	g.Go(func() (err error) {
		if latest, err = c.db.RoomEvents(gctx, row.NID, pos, 0, true, 2*c.cfg.Events, storage.EventFilter{}); err != nil {
			return fmt.Errorf("room %s events: %w", roomID, err)
		}
		// The window's senders are (nearly always) among these.
		var senders []string
		seen := map[string]bool{}
		for _, e := range latest {
			if !seen[e.Event.Sender()] {
				seen[e.Event.Sender()] = true
				senders = append(senders, e.Event.Sender())
			}
		}
		if len(senders) > 0 {
			if senderEvents, err = c.db.MemberEvents(gctx, row.NID, senders); err != nil {
				return fmt.Errorf("loading room %s senders: %w", roomID, err)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	snap := &Snapshot{Summary: Summary{RoomID: roomID, RoomVersion: row.Version.ID}, Pos: pos,
		State: map[event.TypeKey][]byte{}, Members: map[string][]byte{}, changed: make(chan struct{})}
	// The counts may already include member events after pos that the
	// stream replays; they are recounted exactly once the memberships are
	// read (loadMemberships).
	snap.Summary.JoinedMembers, snap.Summary.InvitedMembers = joined, invited
	var hvEvent *storage.StoredEvent
	for _, se := range state {
		ev := se.Event
		tk, _ := ev.TypeKey()
		snap.State[tk] = render(ev.Client())
		applySummary(&snap.Summary, ev)
		if tk == (event.TypeKey{Type: event.TypeHistoryVisibility}) {
			hvEvent = se
		}
	}
	// Current state may already hold events after pos, which the stream
	// replays on top; the history visibility that judges those replayed
	// events must be the one in force at pos, not the latest.
	hv := newHVChain(c.db, hvEvent)
	if snap.Summary.HistoryVisibility, err = hv.at(ctx, pos); err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
	}
	evs, floor, err := c.visibleEvents(ctx, row.NID, roomID, pos, hv, latest)
	if err != nil {
		return nil, err
	}
	snap.Events, snap.Floor = evs, floor
	byUser := map[string]*event.Event{}
	for _, m := range senderEvents {
		byUser[*m.Event.StateKey()] = m.Event
	}
	memberEvents := map[string]*event.Event{}
	var missing []string
	for _, e := range evs {
		if _, ok := memberEvents[e.Sender]; ok {
			continue
		}
		if m := byUser[e.Sender]; m != nil {
			memberEvents[e.Sender] = m
			snap.Members[e.Sender] = render(m.Client())
		} else if !slices.Contains(missing, e.Sender) {
			missing = append(missing, e.Sender)
		}
	}
	// Senders of older pages (a window reaching past the first page).
	if len(missing) > 0 {
		mevs, err := c.db.MemberEvents(ctx, row.NID, missing)
		if err != nil {
			return nil, fmt.Errorf("loading room %s senders: %w", roomID, err)
		}
		for _, m := range mevs {
			memberEvents[*m.Event.StateKey()] = m.Event
			snap.Members[*m.Event.StateKey()] = render(m.Event.Client())
		}
	}
	snap.bytes = estimate(snap, 0, memberEvents)
	return &built{snap: snap, memberEvents: memberEvents}, nil
}

// hvChain answers "what was the history visibility at position p?" for an
// anonymous reader (who sees exactly the events whose history visibility
// was world_readable) by walking back from the current
// m.room.history_visibility event through each one's replaces_state: a few
// lookups by event ID, where listing a room's history visibility changes
// would scan all of its events (a million in a huge room; there is no
// index by type).
type hvChain struct {
	db *storage.DB
	// known are the changes read so far, newest first; complete is set
	// once the first one (it replaced nothing) is among them.
	known    []hvChange
	complete bool
}

type hvChange struct {
	pos      int64
	hv       string
	replaces string
}

func newHVChain(db *storage.DB, current *storage.StoredEvent) *hvChain {
	ch := &hvChain{db: db}
	if current == nil {
		ch.complete = true
		return ch
	}
	ch.add(current)
	return ch
}

func (ch *hvChain) add(se *storage.StoredEvent) {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(se.Event.Content(), &c)
	ch.known = append(ch.known, hvChange{pos: se.StreamPos, hv: c.HistoryVisibility, replaces: se.ReplacesState})
	if se.ReplacesState == "" {
		ch.complete = true
	}
}

// at returns the history visibility in force at p ("" when none was set,
// or when the chain is broken — events stored before replaces_state was
// recorded: then the answer errs on the side of hiding).
func (ch *hvChain) at(ctx context.Context, p int64) (string, error) {
	for {
		for _, k := range ch.known {
			if k.pos <= p {
				return k.hv, nil
			}
		}
		if ch.complete {
			return "", nil
		}
		prev, err := ch.db.EventByID(ctx, ch.known[len(ch.known)-1].replaces)
		if errors.Is(err, storage.ErrNotFound) {
			ch.complete = true
			continue
		}
		if err != nil {
			return "", fmt.Errorf("history visibility: %w", err)
		}
		ch.add(prev)
	}
}

// visibleEvents reads the latest events an anonymous reader may see, up to
// pos, oldest first, with redactions applied, and the position after which
// they are complete.
// first, if not nil, is the first page (the latest 2×Events events up to
// pos), already read.
func (c *Cache) visibleEvents(ctx context.Context, nid int64, roomID string, pos int64, hv *hvChain, first []*storage.StoredEvent) ([]*Event, int64, error) {
	var out []*storage.StoredEvent
	from := pos
	complete := false
	// A few pages at most: in a world-readable room nearly everything is
	// visible, and in another room nothing is served from here anyway.
	for page := 0; page < 4 && len(out) < c.cfg.Events; page++ {
		batch := first
		if page > 0 || first == nil {
			var err error
			if batch, err = c.db.RoomEvents(ctx, nid, from, 0, true, 2*c.cfg.Events, storage.EventFilter{}); err != nil {
				return nil, 0, fmt.Errorf("room %s events: %w", roomID, err)
			}
		}
		for _, e := range batch {
			h, err := hv.at(ctx, e.StreamPos)
			if err != nil {
				return nil, 0, fmt.Errorf("room %s: %w", roomID, err)
			}
			if h == "world_readable" && len(out) < c.cfg.Events {
				out = append(out, e)
			}
		}
		if len(batch) < 2*c.cfg.Events {
			complete = true
			break
		}
		from = batch[len(batch)-1].StreamPos - 1
	}
	slices.Reverse(out)
	rendered, err := RenderStored(ctx, c.db, out)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range rendered {
		c.renderHTML(e)
	}
	switch {
	case complete && len(out) < c.cfg.Events:
		return rendered, 0, nil // the room's whole visible history
	case len(rendered) > 0:
		return rendered, rendered[0].Pos - 1, nil
	}
	return rendered, pos, nil
}

// RenderStored renders stored events as snapshot events: redacted events in
// their redacted form with redacted_because, as /messages shows them.
func RenderStored(ctx context.Context, db *storage.DB, evs []*storage.StoredEvent) ([]*Event, error) {
	var ids []string
	for _, e := range evs {
		if e.RedactedBy != "" {
			ids = append(ids, e.RedactedBy)
		}
	}
	redactions := map[string]*event.Event{}
	if len(ids) > 0 {
		rs, err := db.EventsByID(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("loading redactions: %w", err)
		}
		for _, r := range rs {
			redactions[r.Event.ID()] = r.Event
		}
	}
	out := make([]*Event, 0, len(evs))
	for _, se := range evs {
		e := newEvent(se.StreamPos, se.Event)
		if se.RedactedBy != "" {
			e = redacted(e, redactions[se.RedactedBy])
		}
		out = append(out, e)
	}
	return out, nil
}

// renderHTML sets e.HTML from the Render hook and returns e. e must not be
// published yet (it is a fresh event or a fresh copy).
func (c *Cache) renderHTML(e *Event) *Event {
	if c.cfg.Render != nil {
		e.HTML = c.cfg.Render(e)
	}
	return e
}

func newEvent(pos int64, ev *event.Event) *Event {
	return &Event{Pos: pos, Event: ev, Sender: ev.Sender(), TS: ev.OriginServerTS(), body: body(ev.Client())}
}

// redacted returns a copy of e in its redacted form.
func redacted(e *Event, because *event.Event) *Event {
	out := *e
	out.Redacted = true
	out.Edit = nil
	if red, err := e.Event.Redact(); err == nil {
		out.body = body(red.Client())
	}
	out.unsigned = nil
	if because != nil {
		out.unsigned = append([]byte(`"redacted_because":`), render(because.Client())...)
	}
	return &out
}

// render marshals a client event (no unsigned).
func render(ce event.ClientEvent) []byte {
	b, err := json.Marshal(ce)
	if err != nil {
		// A parsed event always marshals; keep the cache usable regardless.
		return []byte(`{}`)
	}
	return b
}

// body is render without the closing brace, so unsigned can be appended.
func body(ce event.ClientEvent) []byte {
	b := render(ce)
	return b[:len(b)-1]
}

// applySummary folds one current-state event into the summary.
func applySummary(s *Summary, ev *event.Event) {
	if !ev.StateKeyEquals("") {
		return
	}
	var c struct {
		Name              string `json:"name"`
		Topic             string `json:"topic"`
		URL               string `json:"url"`
		Alias             string `json:"alias"`
		JoinRule          string `json:"join_rule"`
		GuestAccess       string `json:"guest_access"`
		HistoryVisibility string `json:"history_visibility"`
		Algorithm         string `json:"algorithm"`
		Type              string `json:"type"`
		Allow             []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	// A malformed content reads as empty, which is what the spec asks of
	// clients too.
	_ = json.Unmarshal(ev.Content(), &c)
	switch ev.Type() {
	case "m.room.name":
		s.Name = c.Name
	case "m.room.topic":
		s.Topic = c.Topic
	case "m.room.avatar":
		s.AvatarURL = c.URL
	case "m.room.canonical_alias":
		s.CanonicalAlias = c.Alias
	case event.TypeJoinRules:
		s.JoinRule = c.JoinRule
		s.AllowedRoomIDs = nil
		for _, a := range c.Allow {
			if a.Type == "m.room_membership" && a.RoomID != "" {
				s.AllowedRoomIDs = append(s.AllowedRoomIDs, a.RoomID)
			}
		}
	case "m.room.guest_access":
		s.GuestCanJoin = c.GuestAccess == "can_join"
	case event.TypeHistoryVisibility:
		s.HistoryVisibility = c.HistoryVisibility
	case "m.room.encryption":
		s.Encryption = c.Algorithm
	case event.TypeCreate:
		s.RoomType = c.Type
	}
}

// onEvents runs on the room writer's goroutine: it only updates memory.
func (c *Cache) onEvents(n room.Notification) {
	if len(n.Events) > 0 {
		last := n.Events[len(n.Events)-1].StreamPos
		for {
			cur := c.published.Load()
			if last <= cur || c.published.CompareAndSwap(cur, last) {
				break
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[n.RoomID]
	if e == nil {
		return
	}
	if e.loading {
		e.pending = append(e.pending, n)
		return
	}
	old := e.snap.bytes
	c.applyLocked(e, n)
	c.bytes += e.snap.bytes - old
	c.fillLocked(e)
	c.evictLocked(e)
}

// fillLocked starts reading the member events of window senders the cache
// does not know (they joined before the room was loaded), unless a reader
// is at it already. onEvents runs on the room writer's goroutine and must
// not wait for storage, so until the read lands the snapshot lacks those
// members' display names, as a client lazily loading members would.
func (c *Cache) fillLocked(e *entry) {
	if len(e.missing) == 0 || e.filling || e.loading {
		return
	}
	e.filling = true
	users := make([]string, 0, len(e.missing))
	for u := range e.missing {
		users = append(users, u)
	}
	go c.fill(e, users)
}

func (c *Cache) fill(e *entry, users []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var evs []*storage.StoredEvent
	nid, err := c.db.RoomNID(ctx, e.roomID)
	if err == nil {
		evs, err = c.db.MemberEvents(ctx, nid, users)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e.filling = false
	if c.entries[e.roomID] != e {
		return // evicted meanwhile
	}
	if err != nil {
		// The next event from the room tries again.
		return
	}
	prev := e.snap
	next := *prev
	next.changed = make(chan struct{})
	next.Members = cloneMap(prev.Members)
	for _, se := range evs {
		u := *se.Event.StateKey()
		if !e.missing[u] {
			continue // the stream brought a newer one, or the sender left the window
		}
		delete(e.missing, u)
		e.memberEvents[u] = se.Event
		next.Members[u] = render(se.Event.Client())
	}
	for _, u := range users {
		delete(e.missing, u) // no member event: nothing to wait for
	}
	old := prev.bytes
	next.bytes = estimate(&next, e.membershipBytes, e.memberEvents)
	e.snap = &next
	close(prev.changed)
	c.bytes += next.bytes - old
	c.fillLocked(e)
}

// applyLocked builds the snapshot that follows e.snap after n and publishes
// it. Events at or before the snapshot's position are already in it.
func (c *Cache) applyLocked(e *entry, n room.Notification) {
	prev := e.snap
	next := *prev
	next.changed = make(chan struct{})
	stateCopied, membersCopied := false, false
	copyState := func() {
		if !stateCopied {
			next.State = cloneMap(prev.State)
			stateCopied = true
		}
	}
	copyMembers := func() {
		if !membersCopied {
			next.Members = cloneMap(prev.Members)
			membersCopied = true
		}
	}
	events := prev.Events
	eventsCopied := false
	copyEvents := func() {
		if !eventsCopied {
			events = slices.Clone(prev.Events)
			eventsCopied = true
		}
	}
	changed := false
	for _, se := range n.Events {
		if se.StreamPos <= next.Pos {
			continue
		}
		changed = true
		next.Pos = se.StreamPos
		ev := se.Event
		if tk, ok := ev.TypeKey(); ok {
			if ev.Type() == event.TypeMember {
				user := *ev.StateKey()
				if e.memberships == nil {
					// Replayed on the memberships once read; a user with no
					// earlier member event counts at once (before is "").
					e.memberQueue = append(e.memberQueue, ev)
					if se.ReplacesState == "" {
						after := room.MembershipOf(ev)
						next.Summary.JoinedMembers += count(after, "join")
						next.Summary.InvitedMembers += count(after, "invite")
					}
				} else {
					before := e.memberships[user]
					after := room.MembershipOf(ev)
					next.Summary.JoinedMembers += count(after, "join") - count(before, "join")
					next.Summary.InvitedMembers += count(after, "invite") - count(before, "invite")
					e.setMembership(user, after)
				}
				e.memberEvents[user] = ev
				delete(e.missing, user)
				if _, ok := next.Members[user]; ok {
					copyMembers()
					next.Members[user] = render(ev.Client())
				}
			} else {
				copyState()
				next.State[tk] = render(ev.Client())
				applySummary(&next.Summary, ev)
			}
		}
		// History visibility at an event includes the event itself.
		if next.Summary.HistoryVisibility != "world_readable" {
			continue
		}
		copyEvents()
		if ev.Type() == event.TypeRedaction && ev.Redacts() != "" {
			for i, t := range events {
				if t.Event.ID() == ev.Redacts() {
					events[i] = c.renderHTML(redacted(t, ev))
				}
				if t.Edit != nil && t.Edit.ID() == ev.Redacts() {
					cp := *events[i]
					cp.Edit = nil
					events[i] = c.renderHTML(&cp)
				}
			}
		}
		if target := replaces(ev); target != "" {
			for i, t := range events {
				if t.Event.ID() == target && !t.Redacted && t.Sender == ev.Sender() {
					cp := *t
					cp.Edit = ev
					events[i] = c.renderHTML(&cp)
				}
			}
		}
		events = append(events, c.renderHTML(newEvent(se.StreamPos, ev)))
		if _, ok := next.Members[ev.Sender()]; !ok {
			if m := e.memberEvents[ev.Sender()]; m != nil {
				copyMembers()
				next.Members[ev.Sender()] = render(m.Client())
			} else {
				e.missing[ev.Sender()] = true
			}
		}
	}
	if !changed {
		return
	}
	if len(events) > c.cfg.Events {
		drop := len(events) - c.cfg.Events
		trimmed := make([]*Event, c.cfg.Events)
		copy(trimmed, events[drop:])
		next.Floor = trimmed[0].Pos - 1
		events = trimmed
		// Members of senders no longer in the window go with them.
		senders := map[string]bool{}
		for _, t := range events {
			senders[t.Sender] = true
		}
		for u := range next.Members {
			if !senders[u] {
				copyMembers()
				delete(next.Members, u)
			}
		}
		for u := range e.memberEvents {
			if !senders[u] {
				delete(e.memberEvents, u)
			}
		}
		for u := range e.missing {
			if !senders[u] {
				delete(e.missing, u)
			}
		}
	}
	next.Events = events
	next.bytes = estimate(&next, e.membershipBytes, e.memberEvents)
	e.snap = &next
	close(prev.changed)
}

// setMembership records a user's membership, keeping membershipBytes.
func (e *entry) setMembership(user, m string) {
	if old, ok := e.memberships[user]; ok {
		e.membershipBytes -= membershipSize(user, old)
	}
	e.memberships[user] = m
	e.membershipBytes += membershipSize(user, m)
}

// membershipSize is one memberships entry's share of the estimate.
func membershipSize(user, m string) int64 { return int64(len(user)+len(m)) + 48 }

// replaces returns the event an m.replace edit targets, or "".
func replaces(ev *event.Event) string {
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.RelatesTo.RelType != "m.replace" {
		return ""
	}
	return c.RelatesTo.EventID
}

func count(m, want string) int {
	if m == want {
		return 1
	}
	return 0
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// estimate approximates a snapshot's memory: rendered bytes plus per-member
// bookkeeping (the member events themselves are shared with the room
// service, only the map entry is ours).
func estimate(s *Snapshot, membershipBytes int64, memberEvents map[string]*event.Event) int64 {
	n := int64(512)
	for _, e := range s.Events {
		n += int64(len(e.body)+len(e.unsigned)+len(e.HTML)) + 128
	}
	for _, b := range s.State {
		n += int64(len(b)) + 64
	}
	for u, b := range s.Members {
		n += int64(len(u)+len(b)) + 64
	}
	n += membershipBytes
	for _, ev := range memberEvents {
		if ev != nil {
			n += int64(len(ev.JSON())) + 256 // parsed, roughly twice the JSON
		}
	}
	return n
}

// evictLocked drops least recently used rooms until the cache fits, never the
// room just touched nor a room still loading (it holds no counted bytes).
func (c *Cache) evictLocked(keep *entry) {
	el := c.lru.Back()
	for c.bytes > c.cfg.MaxBytes && el != nil {
		victim := el.Value.(*entry)
		el = el.Prev()
		if victim == keep || victim.loading {
			continue
		}
		c.lru.Remove(victim.elem)
		delete(c.entries, victim.roomID)
		c.bytes -= victim.snap.bytes
		close(victim.snap.changed)
	}
}

// Events returns how many events a snapshot keeps.
func (c *Cache) Events() int { return c.cfg.Events }
