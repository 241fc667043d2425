package room

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/id"
	"plaza/homeserver/signing"
	"plaza/homeserver/stateres"
	"plaza/homeserver/storage"
)

// Events received from other servers go through the same writer as local
// ones, so nothing races on a room's extremities and state. What can be done
// without the room's state — parsing, signatures, hashes, fetching missing
// auth and prev events — happens before, on the caller's goroutine.
//
// Subscribers tell received events from local ones by the sender's server:
// id.ServerOf(ev.Sender()) == ServerName() only for events this server made
// (a received event always carries its sender's server's signature, which
// for our users only we can make).

// Errors of received events.
var (
	// ErrBadEvent: the PDU is malformed, for another room, or wrongly
	// signed. Nothing of it is stored.
	ErrBadEvent = errors.New("invalid event")
	// ErrMissingEvents: events the PDU depends on could not be fetched.
	ErrMissingEvents = errors.New("missing events")
	// ErrRejected: the event failed the authorization rules and was stored
	// as rejected.
	ErrRejected = errors.New("event rejected")
)

// KeyVerifier finds other servers' signing keys (federation's key ring).
type KeyVerifier interface {
	VerifyKey(ctx context.Context, server, keyID string, at time.Time, request bool) (ed25519.PublicKey, error)
}

// Fetcher asks other servers for events a room lacks (federation's client).
type Fetcher interface {
	// Event fetches one PDU (/event/{eventId}).
	Event(ctx context.Context, server, eventID string) (json.RawMessage, error)
	// MissingEvents asks for the events between earliest and latest
	// (/get_missing_events).
	MissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int) ([]json.RawMessage, error)
	// State fetches the state before an event and its auth chain (/state).
	State(ctx context.Context, server, roomID, eventID string) (state, authChain []json.RawMessage, err error)
}

// SetFederation gives the service what checking received events needs.
// Without it, Receive refuses everything.
func (s *Service) SetFederation(keys KeyVerifier, fetch Fetcher) {
	s.keys, s.fetch = keys, fetch
}

// Bounds on the work one received event may cause.
const (
	maxAuthFetch     = 100 // auth events fetched for one PDU
	maxMissingEvents = 20  // asked for through /get_missing_events
	maxStateEvents   = 10000
)

// incoming is a received event, checked and ready for the writer.
type incoming struct {
	ev *event.Event
	// state, if not nil, is the state before ev as fetched from a remote
	// server (its prev events are unknown).
	state map[event.TypeKey]stateItem
	// outlier: store ev without a place in the timeline (state and auth
	// events of a join, invites to rooms we are not in).
	outlier bool
	// delivered: our own event that the room's servers already have
	// (see Notification.Delivered).
	delivered bool
	// deferred: commit without waiting for the disk (see DeferDurability).
	deferred bool
}

type deferKey struct{}

// DeferDurability returns a context under which received events are
// committed without waiting for the disk; they are visible at once. The
// caller must call FlushWAL before it acknowledges them (a federation
// transaction's answer): until then a crash of PostgreSQL or of the machine
// may lose them, and the sender, unanswered, sends them again.
func DeferDurability(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferKey{}, true)
}

// FlushWAL makes every event committed so far durable.
func (s *Service) FlushWAL(ctx context.Context) error { return s.db.FlushWAL(ctx) }

// Receive checks and stores an event sent by origin for a room this server
// is in. It returns the event's ID. A rejected event is stored (and
// ErrRejected returned); one that is malformed or wrongly signed is not.
// A soft-failed event is stored out of the timeline and nil returned.
func (s *Service) Receive(ctx context.Context, origin, roomID string, pdu json.RawMessage) (string, error) {
	v, err := s.Version(ctx, roomID)
	if err != nil {
		return "", err
	}
	ev, err := event.Parse(v, pdu)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	return ev.ID(), s.ReceiveEvent(ctx, origin, roomID, ev)
}

// ReceiveEvent is Receive for a PDU the caller already parsed with the
// room's version (event.Parse): its signatures and hash are checked here.
func (s *Service) ReceiveEvent(ctx context.Context, origin, roomID string, ev *event.Event) error {
	if ev.RoomID() != roomID {
		return fmt.Errorf("%w: event is for room %s", ErrBadEvent, ev.RoomID())
	}
	ev, err := s.checkParsed(ctx, ev)
	if err != nil {
		return err
	}
	return s.receive(ctx, origin, ev, true)
}

// CheckPDU parses a received PDU and checks its signatures and content
// hash; an event whose content does not match its hash is redacted, as the
// spec asks.
func (s *Service) CheckPDU(ctx context.Context, v *event.RoomVersion, pdu json.RawMessage) (*event.Event, error) {
	ev, err := event.Parse(v, pdu)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	return s.checkParsed(ctx, ev)
}

func (s *Service) checkParsed(ctx context.Context, ev *event.Event) (*event.Event, error) {
	if err := s.verifyEvent(ctx, ev); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadEvent, ev.ID(), err)
	}
	if ev.CheckContentHash() != nil {
		red, err := ev.Redact()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
		}
		ev = red
	}
	return ev, nil
}

// verifyEvent checks the signatures an event needs: its sender's server's
// (v6+ event IDs are hashes, so no other server is named), plus the
// authorising server of a restricted join.
func (s *Service) verifyEvent(ctx context.Context, ev *event.Event) error {
	if s.keys == nil {
		return errors.New("federation is not set up")
	}
	verify := func(server string) error { return s.verifyBy(ctx, ev, server) }
	if err := verify(id.ServerOf(ev.Sender())); err != nil {
		return err
	}
	return auth.CheckJoinAuthorisedSignature(ev, verify)
}

// verifyBy checks that ev carries a valid signature by server, with a key
// valid when the event says it was sent.
func (s *Service) verifyBy(ctx context.Context, ev *event.Event, server string) error {
	if server == "" {
		return errors.New("no server to check a signature of")
	}
	sigs, err := ev.Signatures()
	if err != nil {
		return err
	}
	bytes, err := ev.SignedBytes()
	if err != nil {
		return err
	}
	var last error = fmt.Errorf("no signature by %s", server)
	for keyID, sig := range sigs[server] {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		pub, err := s.keys.VerifyKey(ctx, server, keyID, time.UnixMilli(ev.OriginServerTS()), false)
		if err != nil {
			last = err
			continue
		}
		if err := signing.VerifyBytes(bytes, sig, pub); err != nil {
			last = fmt.Errorf("signature by %s %s: %w", server, keyID, err)
			continue
		}
		return nil
	}
	return last
}

// receive fetches what ev depends on and hands it to the writer. fill says
// whether missing prev events may be asked for (not for events that were
// themselves fetched that way: one round of gap filling per PDU).
func (s *Service) receive(ctx context.Context, origin string, ev *event.Event, fill bool) error {
	return s.receiveIncoming(ctx, origin, &incoming{ev: ev}, fill)
}

func (s *Service) receiveIncoming(ctx context.Context, origin string, in *incoming, fill bool) error {
	ev := in.ev
	if ctx.Value(deferKey{}) != nil {
		in.deferred = true
	}
	r, err := s.load(ctx, ev.RoomID())
	if err != nil {
		return err
	}
	known, err := s.db.EventByID(ctx, ev.ID())
	if err == nil && (known.StreamPos != 0 || known.Rejected || known.SoftFailed) {
		return nil // a duplicate
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	missing, err := s.missingPrevs(ctx, ev)
	if err != nil {
		return err
	}
	if len(missing) > 0 && fill && s.fetch != nil {
		s.fillGap(ctx, origin, r, ev)
		if missing, err = s.missingPrevs(ctx, ev); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		// The gap is too wide (or the events are gone): take the state
		// at the missing prevs from the sender's server, checking every
		// event of it, and go on from there.
		if in.state, err = s.stateFromPrevs(ctx, origin, r, ev); err != nil {
			return fmt.Errorf("%w: prev events of %s: %w", ErrMissingEvents, ev.ID(), err)
		}
	}
	// Auth events last: filling the gap or taking the state usually
	// brought them. Those that cannot be had leave the event rejected.
	if err := s.fetchAuthEvents(ctx, origin, r, []*event.Event{ev}); err != nil {
		if !errors.Is(err, ErrMissingEvents) && !errors.Is(err, ErrBadEvent) {
			return err
		}
		slog.Info("federation: auth events unavailable", "origin", origin, "event", ev.ID(), "err", err)
	}
	p := &pending{remote: in, done: make(chan struct{})}
	s.enqueue(r, p)
	return p.err
}

// missingPrevs lists the prev events of ev whose state this server does
// not know: unknown ones, outliers (from a join's state or an auth chain)
// and backfilled events. The state before ev cannot be computed from them,
// so it is fetched.
func (s *Service) missingPrevs(ctx context.Context, ev *event.Event) ([]string, error) {
	prevs := ev.PrevEventIDs()
	have, err := s.db.EventsWithState(ctx, prevs)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, p := range prevs {
		if !have[p] {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// fillGap asks origin for the events between the room's extremities and ev
// and places those it gets, oldest first.
func (s *Service) fillGap(ctx context.Context, origin string, r *roomEntry, ev *event.Event) {
	r.smu.RLock()
	v := r.row.Version
	earliest := make([]string, len(r.extremities))
	for i, e := range r.extremities {
		earliest[i] = e.ID()
	}
	r.smu.RUnlock()
	raws, err := s.fetch.MissingEvents(ctx, origin, ev.RoomID(), earliest, []string{ev.ID()}, maxMissingEvents)
	if err != nil {
		slog.Info("federation: get_missing_events failed", "origin", origin, "event", ev.ID(), "err", err)
		return
	}
	var evs []*event.Event
	for _, raw := range raws {
		m, err := s.CheckPDU(ctx, v, raw)
		if err != nil || m.RoomID() != ev.RoomID() {
			slog.Info("federation: bad missing event", "origin", origin, "err", err)
			continue
		}
		evs = append(evs, m)
	}
	slices.SortStableFunc(evs, func(a, b *event.Event) int {
		if a.Depth() != b.Depth() {
			return int(a.Depth() - b.Depth())
		}
		return strings.Compare(a.ID(), b.ID())
	})
	for _, m := range evs {
		if err := s.receive(ctx, origin, m, false); err != nil && !errors.Is(err, ErrRejected) {
			slog.Info("federation: placing a missing event", "origin", origin, "event", m.ID(), "err", err)
		}
	}
}

// fetchAuthEvents makes sure every auth event of evs is stored, fetching
// the unknown ones (and theirs) from origin and storing them as outliers,
// rejected if they fail the checks against their own auth events.
func (s *Service) fetchAuthEvents(ctx context.Context, origin string, r *roomEntry, evs []*event.Event) error {
	r.smu.RLock()
	v := r.row.Version
	row := r.row
	r.smu.RUnlock()
	fetched := map[string]*event.Event{}
	var want []string
	for _, ev := range evs {
		want = append(want, ev.AuthEventIDs()...)
	}
	for len(want) > 0 {
		known, err := s.db.EventNIDs(ctx, want)
		if err != nil {
			return err
		}
		var next []string
		for _, aid := range want {
			if _, ok := known[aid]; ok || fetched[aid] != nil {
				continue
			}
			if s.fetch == nil || len(fetched) >= maxAuthFetch {
				return fmt.Errorf("%w: auth event %s", ErrMissingEvents, aid)
			}
			raw, err := s.fetch.Event(ctx, origin, aid)
			if err != nil {
				return fmt.Errorf("%w: auth event %s: %w", ErrMissingEvents, aid, err)
			}
			a, err := s.CheckPDU(ctx, v, raw)
			if err != nil {
				return err
			}
			if a.ID() != aid || a.RoomID() != row.RoomID {
				return fmt.Errorf("%w: %s answered %s for auth event %s", ErrBadEvent, origin, a.ID(), aid)
			}
			fetched[aid] = a
			next = append(next, a.AuthEventIDs()...)
		}
		want = next
	}
	if len(fetched) == 0 {
		return nil
	}
	return s.storeOutliers(ctx, row, fetched)
}

// storeOutliers checks events against their own auth events and stores
// them as outliers (rejected when the check fails). Their auth events must
// be stored or among them.
func (s *Service) storeOutliers(ctx context.Context, row *storage.Room, evs map[string]*event.Event) error {
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.AuthEventIDs()...)
	}
	stored, err := s.db.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	byID := map[string]*storage.StoredEvent{}
	for _, se := range stored {
		byID[se.Event.ID()] = se
	}
	rejected := map[string]bool{}
	var check func(e *event.Event, depth int) bool
	check = func(e *event.Event, depth int) bool {
		if r, ok := rejected[e.ID()]; ok {
			return !r
		}
		rejected[e.ID()] = true // a cycle is rejected
		var authEvs []*event.Event
		for _, aid := range e.AuthEventIDs() {
			if se := byID[aid]; se != nil {
				if se.Rejected {
					return false
				}
				authEvs = append(authEvs, se.Event)
			} else if a := evs[aid]; a != nil && depth < 1000 && check(a, depth+1) {
				authEvs = append(authEvs, a)
			} else {
				return false
			}
		}
		ok := auth.CheckAuthEvents(e, authEvs) == nil
		rejected[e.ID()] = !ok
		return ok
	}
	out := make([]storage.Outlier, 0, len(evs))
	for _, e := range evs {
		ok := check(e, 0)
		if !ok {
			slog.Info("room: outlier rejected", "room", e.RoomID(), "event", e.ID(), "type", e.Type(), "sender", e.Sender())
		}
		out = append(out, storage.Outlier{Event: e, Rejected: !ok})
	}
	_, err = s.db.InsertOutliers(ctx, row, out)
	return err
}

// fetchState asks origin for the state before an event and checks it:
// every event's signatures, and its auth against its own auth events.
func (s *Service) fetchState(ctx context.Context, origin string, row *storage.Room, eventID string) (map[event.TypeKey]stateItem, error) {
	if s.fetch == nil {
		return nil, errors.New("no way to fetch state")
	}
	if sf, ok := s.fetch.(StateIDFetcher); ok {
		st, err := s.fetchStateByIDs(ctx, sf, origin, row, eventID)
		if err == nil {
			return st, nil
		}
		slog.Info("federation: state by IDs failed, asking for it whole", "origin", origin, "event", eventID, "err", err)
	}
	stateRaw, chainRaw, err := s.fetch.State(ctx, origin, row.RoomID, eventID)
	if err != nil {
		return nil, err
	}
	if len(stateRaw)+len(chainRaw) > maxStateEvents {
		return nil, fmt.Errorf("state of %d events is too large", len(stateRaw)+len(chainRaw))
	}
	return s.placeState(ctx, row, stateRaw, chainRaw)
}

// stateFromPrevs computes the state before ev when some of its prev events
// are not ours: for each such prev, the state before it from origin
// (/state_ids) and the prev itself, as Synapse asks; the states after all
// prevs are then resolved.
func (s *Service) stateFromPrevs(ctx context.Context, origin string, r *roomEntry, ev *event.Event) (map[event.TypeKey]stateItem, error) {
	r.smu.RLock()
	row := *r.row
	r.smu.RUnlock()
	missing, err := s.missingPrevs(ctx, ev)
	if err != nil {
		return nil, err
	}
	var states []map[event.TypeKey]stateItem
	for _, p := range ev.PrevEventIDs() {
		if !slices.Contains(missing, p) {
			st, err := s.stateAfter(ctx, p)
			if err != nil {
				return nil, err
			}
			states = append(states, st)
			continue
		}
		before, err := s.fetchState(ctx, origin, &row, p)
		if err != nil {
			return nil, err
		}
		raw, err := s.fetch.Event(ctx, origin, p)
		if err != nil {
			return nil, err
		}
		pe, err := s.CheckPDU(ctx, row.Version, raw)
		if err != nil {
			return nil, err
		}
		if pe.ID() != p || pe.RoomID() != row.RoomID {
			return nil, fmt.Errorf("%w: %s answered another event for %s", ErrBadEvent, origin, p)
		}
		after := maps.Clone(before)
		if tk, ok := pe.TypeKey(); ok && auth.Allowed(pe, lookup(before)) == nil {
			if err := s.storeOutliers(ctx, &row, map[string]*event.Event{p: pe}); err != nil {
				return nil, err
			}
			se, err := s.db.EventByID(ctx, p)
			if err != nil {
				return nil, err
			}
			if !se.Rejected {
				after[tk] = stateItem{nid: se.NID, ev: se.Event}
			}
		}
		states = append(states, after)
	}
	if len(states) == 0 {
		return nil, errors.New("no prev events")
	}
	return s.resolve(ctx, row.Version, states)
}

// StateIDFetcher is a Fetcher that can also list a state by event IDs
// (/state_ids), so that only the events we lack are fetched.
type StateIDFetcher interface {
	StateIDs(ctx context.Context, server, roomID, eventID string) (state, authChain []string, err error)
}

// maxStateFetch bounds the events fetched one by one for a state; past it
// the whole state is asked for at once.
const maxStateFetch = 100

// fetchStateByIDs gets the state before an event from its IDs, fetching only the
// events we do not have, each checked like any received event.
func (s *Service) fetchStateByIDs(ctx context.Context, sf StateIDFetcher, origin string, row *storage.Room, eventID string) (map[event.TypeKey]stateItem, error) {
	stateIDs, chainIDs, err := sf.StateIDs(ctx, origin, row.RoomID, eventID)
	if err != nil {
		return nil, err
	}
	if len(stateIDs)+len(chainIDs) > maxStateEvents {
		return nil, fmt.Errorf("state of %d events is too large", len(stateIDs)+len(chainIDs))
	}
	all := append(slices.Clone(stateIDs), chainIDs...)
	known, err := s.db.EventNIDs(ctx, all)
	if err != nil {
		return nil, err
	}
	fetched := map[string]*event.Event{}
	tried := map[string]bool{}
	for _, eid := range all {
		if _, ok := known[eid]; ok || tried[eid] {
			continue
		}
		if len(tried) >= maxStateFetch {
			return nil, fmt.Errorf("more than %d state events to fetch", maxStateFetch)
		}
		tried[eid] = true
		// An event that cannot be had is left out: the events it
		// authorises are then rejected, not trusted.
		raw, err := s.fetch.Event(ctx, origin, eid)
		if err != nil {
			slog.Info("federation: a state event is unavailable", "origin", origin, "event", eid, "err", err)
			continue
		}
		e, err := s.CheckPDU(ctx, row.Version, raw)
		if err != nil || e.ID() != eid || e.RoomID() != row.RoomID {
			slog.Info("federation: a state event is invalid", "origin", origin, "event", eid, "err", err)
			continue
		}
		fetched[eid] = e
	}
	if len(fetched) > 0 {
		if err := s.storeOutliers(ctx, row, fetched); err != nil {
			return nil, err
		}
	}
	stored, err := s.db.EventsByID(ctx, stateIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[event.TypeKey]stateItem, len(stored))
	for _, se := range stored {
		tk, ok := se.Event.TypeKey()
		if !ok || se.Rejected || se.Event.RoomID() != row.RoomID {
			continue
		}
		out[tk] = stateItem{nid: se.NID, ev: se.Event}
	}
	return out, nil
}

// placeState checks and stores a state and its auth chain as outliers and
// returns the state as a map. Events that fail their checks are left out.
func (s *Service) placeState(ctx context.Context, row *storage.Room, stateRaw, chainRaw []json.RawMessage) (map[event.TypeKey]stateItem, error) {
	all := map[string]*event.Event{}
	var state []*event.Event
	raws := append(slices.Clone(stateRaw), chainRaw...)
	checked := s.checkPDUs(ctx, row.Version, raws)
	for i := range raws {
		e := checked[i]
		if e == nil || e.RoomID() != row.RoomID {
			continue
		}
		all[e.ID()] = e
		if i < len(stateRaw) && e.IsState() {
			state = append(state, e)
		}
	}
	if err := s.storeOutliers(ctx, row, all); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(state))
	for _, e := range state {
		ids = append(ids, e.ID())
	}
	stored, err := s.db.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[event.TypeKey]stateItem, len(stored))
	for _, se := range stored {
		tk, ok := se.Event.TypeKey()
		if !ok || se.Rejected {
			continue
		}
		out[tk] = stateItem{nid: se.NID, ev: se.Event}
	}
	return out, nil
}

// checkPDUs runs CheckPDU over many PDUs on all cores (a large room's
// state is thousands of signatures to verify); invalid ones are nil.
func (s *Service) checkPDUs(ctx context.Context, v *event.RoomVersion, raws []json.RawMessage) []*event.Event {
	out := make([]*event.Event, len(raws))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(raws)/64))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(raws) {
					return
				}
				e, err := s.CheckPDU(ctx, v, raws[i])
				if err != nil {
					slog.Info("federation: dropping an invalid state event", "err", err)
					continue
				}
				out[i] = e
			}
		}()
	}
	wg.Wait()
	return out
}

// stateSource is a stateres.EventSource over the database, keeping what it
// loads.
type stateSource struct {
	ctx   context.Context
	db    *storage.DB
	cache map[string]*storage.StoredEvent
}

func (src *stateSource) load(id string) (*storage.StoredEvent, error) {
	if se := src.cache[id]; se != nil {
		return se, nil
	}
	se, err := src.db.EventByID(src.ctx, id)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", id, err)
	}
	src.cache[id] = se
	return se, nil
}

func (src *stateSource) Event(id string) (*event.Event, error) {
	se, err := src.load(id)
	if err != nil {
		return nil, err
	}
	return se.Event, nil
}

func (src *stateSource) Rejected(id string) bool {
	se, err := src.load(id)
	return err == nil && se.Rejected
}

func (src *stateSource) add(st map[event.TypeKey]stateItem) {
	for _, it := range st {
		if src.cache[it.ev.ID()] == nil {
			src.cache[it.ev.ID()] = &storage.StoredEvent{NID: it.nid, Event: it.ev}
		}
	}
}

// stateAfter returns the state after a stored event.
func (s *Service) stateAfter(ctx context.Context, eventID string) (map[event.TypeKey]stateItem, error) {
	group, target, err := s.db.StateBeforeEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	st, err := s.stateOfGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	if tk, ok := target.Event.TypeKey(); ok && !target.Rejected && !target.SoftFailed {
		st[tk] = stateItem{nid: target.NID, ev: target.Event}
	}
	return st, nil
}

func (s *Service) stateOfGroup(ctx context.Context, group int64) (map[event.TypeKey]stateItem, error) {
	entries, err := s.db.StateOfGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, len(entries))
	for i, e := range entries {
		nids[i] = e.EventNID
	}
	evs, err := s.db.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	st := make(map[event.TypeKey]stateItem, len(evs))
	for _, se := range evs {
		tk, _ := se.Event.TypeKey()
		st[tk] = stateItem{nid: se.NID, ev: se.Event}
	}
	return st, nil
}

// resolve resolves several states with the room version's algorithm.
func (s *Service) resolve(ctx context.Context, v *event.RoomVersion, states []map[event.TypeKey]stateItem) (map[event.TypeKey]stateItem, error) {
	if len(states) == 1 {
		return states[0], nil
	}
	return s.resolveStates(ctx, v, states, nil)
}

// resolveStates runs state resolution over states. self, if not nil, is
// an event of them that is not stored yet.
func (s *Service) resolveStates(ctx context.Context, v *event.RoomVersion, states []map[event.TypeKey]stateItem, self *event.Event) (map[event.TypeKey]stateItem, error) {
	src := &stateSource{ctx: ctx, db: s.db, cache: map[string]*storage.StoredEvent{}}
	if self != nil {
		src.cache[self.ID()] = &storage.StoredEvent{NID: storage.SelfNID, Event: self}
	}
	maps := make([]stateres.StateMap, len(states))
	for i, st := range states {
		src.add(st)
		m := make(stateres.StateMap, len(st))
		for tk, it := range st {
			m[tk] = it.ev.ID()
		}
		maps[i] = m
	}
	res, err := stateres.Resolve(v, maps, src)
	if err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
	}
	out := make(map[event.TypeKey]stateItem, len(res))
	for tk, evID := range res {
		se, err := src.load(evID)
		if err != nil {
			return nil, err
		}
		out[tk] = stateItem{nid: se.NID, ev: se.Event}
	}
	return out, nil
}

func lookup(st map[event.TypeKey]stateItem) auth.StateLookup {
	return func(typ, sk string) *event.Event { return st[event.TypeKey{Type: typ, StateKey: sk}].ev }
}

// writeRemote places one received event; it runs on the room's writer.
func (s *Service) writeRemote(r *roomEntry, p *pending) {
	defer close(p.done)
	res, err := s.placeRemote(context.Background(), r, p.remote)
	p.res, p.err = res, err
}

func (s *Service) placeRemote(ctx context.Context, r *roomEntry, in *incoming) (Result, error) {
	ev := in.ev
	if known, err := s.db.EventByID(ctx, ev.ID()); err == nil && (known.StreamPos != 0 || known.Rejected || known.SoftFailed) {
		return Result{Event: ev, NID: known.NID, StreamPos: known.StreamPos}, nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return Result{}, err
	}
	r.smu.RLock()
	row := *r.row
	current := r.state
	chainLen := r.chainLen
	extremities := make([]string, len(r.extremities))
	for i, e := range r.extremities {
		extremities[i] = e.ID()
	}
	r.smu.RUnlock()

	// 1. Auth against its own auth events.
	// why says what rejected it: the log of a rejection should say.
	var why error
	authStored, err := s.db.EventsByID(ctx, ev.AuthEventIDs())
	if err != nil {
		return Result{}, err
	}
	if len(authStored) != len(ev.AuthEventIDs()) {
		why = errors.New("an auth event is missing") // one nobody would give us
	}
	authEvs := make([]*event.Event, 0, len(authStored))
	for _, a := range authStored {
		if a.Rejected && why == nil {
			why = fmt.Errorf("auth event %s was rejected", a.Event.ID())
		}
		authEvs = append(authEvs, a.Event)
	}
	if why == nil {
		if err := auth.CheckAuthEvents(ev, authEvs); err != nil {
			why = fmt.Errorf("against its auth events: %w", err)
		}
	}

	// 2. The state before it: from its prev events, resolved when they
	// are several, or as fetched.
	before := in.state
	var beforeGroup int64
	prevs := ev.PrevEventIDs()
	sameAsCurrent := before == nil && sameSet(prevs, extremities)
	if sameAsCurrent {
		before, beforeGroup = current, row.StateGroup
	} else if before == nil {
		var states []map[event.TypeKey]stateItem
		for _, pid := range prevs {
			st, err := s.stateAfter(ctx, pid)
			if err != nil {
				return Result{}, fmt.Errorf("%w: state after %s: %w", ErrMissingEvents, pid, err)
			}
			states = append(states, st)
		}
		if before, err = s.resolve(ctx, row.Version, states); err != nil {
			return Result{}, err
		}
		if len(prevs) == 1 {
			// The state after a message is the state before it: share
			// its group rather than copying the state.
			if g, target, err := s.db.StateBeforeEvent(ctx, prevs[0]); err == nil && !target.Event.IsState() {
				beforeGroup = g
			}
		}
	}
	if why == nil {
		if err := auth.Allowed(ev, lookup(before)); err != nil {
			why = fmt.Errorf("against the state before it: %w", err)
		}
	}
	rejected := why != nil
	if rejected {
		slog.Info("room: remote event rejected", "room", ev.RoomID(), "event", ev.ID(), "type", ev.Type(), "sender", ev.Sender(), "why", why)
	}

	// 3. Soft failure against the current state.
	softFailed := false
	if !rejected && !in.outlier && !sameAsCurrent && auth.Allowed(ev, lookup(current)) != nil {
		softFailed = true
	}

	re := storage.RemoteEvent{Event: ev, Rejected: rejected, SoftFailed: softFailed, BeforeGroup: beforeGroup, Deferred: in.deferred}
	if beforeGroup == 0 {
		re.BeforeState = make(map[event.TypeKey]int64, len(before))
		for tk, it := range before {
			re.BeforeState[tk] = it.nid
		}
	}
	accepted := !rejected && !softFailed && !in.outlier
	var newState map[event.TypeKey]stateItem
	var newExt []string
	if accepted {
		re.StreamPos = s.tracker.Reserve()
		newExt = []string{ev.ID()}
		for _, x := range extremities {
			if !slices.Contains(prevs, x) {
				newExt = append(newExt, x)
			}
		}
		after := before
		if tk, ok := ev.TypeKey(); ok {
			after = maps.Clone(before)
			after[tk] = stateItem{nid: storage.SelfNID, ev: ev}
		}
		if len(newExt) == 1 {
			newState = after
		} else {
			if newState, err = s.resolveWithSelf(ctx, row.Version, current, after, ev); err != nil {
				s.tracker.Complete(re.StreamPos)
				return Result{}, err
			}
		}
		re.Current = diffState(current, newState)
		re.Extremities = newExt
		if tk, ok := ev.TypeKey(); ok {
			if old := current[tk].ev; old != nil {
				re.ReplacesState = old.ID()
			}
		}
		if ev.Type() == event.TypeRedaction && ev.Redacts() != "" {
			re.ApplyRedaction = s.remoteRedactionApplies(ctx, ev, before)
		}
	}
	persisted, err := s.db.PersistRemote(ctx, &row, chainLen, re)
	if re.StreamPos != 0 {
		defer s.tracker.Complete(re.StreamPos)
	}
	if err != nil {
		return Result{}, fmt.Errorf("persisting %s: %w", ev.ID(), err)
	}
	if rejected {
		return Result{Event: ev, NID: persisted.NID}, fmt.Errorf("%w: %s: %w", ErrRejected, ev.ID(), why)
	}
	if !accepted {
		return Result{Event: ev, NID: persisted.NID}, nil
	}
	r.smu.Lock()
	for _, c := range re.Current {
		tk := event.TypeKey{Type: c.Type, StateKey: c.StateKey}
		if c.EventNID == 0 {
			r.delState(tk)
			continue
		}
		it := newState[tk]
		if it.nid == storage.SelfNID {
			it.nid = persisted.NID
		}
		r.setState(tk, it)
	}
	r.row.StateGroup = persisted.StateGroup
	r.row.Extremities = newExt
	r.chainLen = persisted.ChainLen
	r.extremities = r.extremities[:0:0]
	r.extremities = append(r.extremities, ev)
	if len(newExt) > 1 {
		if others, err := s.db.EventsByID(ctx, newExt[1:]); err == nil {
			for _, o := range others {
				r.extremities = append(r.extremities, o.Event)
			}
		}
	}
	r.smu.Unlock()
	stored := &storage.StoredEvent{NID: persisted.NID, StreamPos: re.StreamPos, Event: ev, ReplacesState: re.ReplacesState}
	s.notify(Notification{RoomID: row.RoomID, Events: []*storage.StoredEvent{stored}, Delivered: in.delivered})
	return Result{Event: ev, NID: persisted.NID, StreamPos: re.StreamPos}, nil
}

// resolveWithSelf resolves the current state with the state after ev,
// which is not stored yet.
func (s *Service) resolveWithSelf(ctx context.Context, v *event.RoomVersion, current, after map[event.TypeKey]stateItem, ev *event.Event) (map[event.TypeKey]stateItem, error) {
	return s.resolveStates(ctx, v, []map[event.TypeKey]stateItem{current, after}, ev)
}

// remoteRedactionApplies decides whether a received redaction takes effect
// ("Handling redactions"): its sender has the redact level, or its sender's
// server is the target's sender's server.
func (s *Service) remoteRedactionApplies(ctx context.Context, ev *event.Event, state map[event.TypeKey]stateItem) bool {
	target, err := s.db.EventByID(ctx, ev.Redacts())
	if err != nil || target.Event.RoomID() != ev.RoomID() {
		return false
	}
	if id.ServerOf(target.Event.Sender()) == id.ServerOf(ev.Sender()) {
		return true
	}
	pl, err := auth.PowerLevelsFor(lookup(state))
	return err == nil && pl.UserLevel(ev.Sender()) >= pl.Redact
}

// diffState lists what changes from old to new.
func diffState(old, new map[event.TypeKey]stateItem) []storage.StateChange {
	out := []storage.StateChange{}
	for tk, it := range new {
		if o, ok := old[tk]; ok && o.ev.ID() == it.ev.ID() {
			continue
		}
		c := storage.StateChange{Type: tk.Type, StateKey: tk.StateKey, EventNID: it.nid}
		if tk.Type == event.TypeMember {
			c.Membership = MembershipOf(it.ev)
		}
		out = append(out, c)
	}
	for tk := range old {
		if _, ok := new[tk]; !ok {
			out = append(out, storage.StateChange{Type: tk.Type, StateKey: tk.StateKey})
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// delState removes a piece of current state (state resolution can). The
// caller holds r.smu.
func (r *roomEntry) delState(tk event.TypeKey) {
	if tk.Type == event.TypeMember {
		r.servers = nil
		if old := r.state[tk].ev; old != nil && MembershipOf(old) == "join" {
			r.joined--
		}
	}
	delete(r.state, tk)
}

// Servers returns the servers with members joined to the room, ours
// included when we have any, sorted; kept in memory until membership
// changes.
func (s *Service) Servers(ctx context.Context, roomID string) ([]string, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.smu.RLock()
	cached := r.servers
	r.smu.RUnlock()
	if cached != nil {
		return cached, nil
	}
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.servers != nil {
		return r.servers, nil
	}
	out := []string{}
	for tk, it := range r.state {
		if tk.Type != event.TypeMember || MembershipOf(it.ev) != "join" {
			continue
		}
		if d := id.ServerOf(tk.StateKey); d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	r.servers = out
	return out, nil
}
