package peek

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
	"plaza/peek/snapshot"
)

// initialSync serves GET /rooms/{roomId}/initialSync. Non-members (guests
// included) get world-readable rooms from the snapshot; joined members get
// their own view from storage. In both, "state" is the room's state without
// member events plus the members of the senders in "messages" (lazy-loading
// members, as /sync offers): a 20,000-member room's preview would otherwise
// be megabytes, and clients page members through /members.
func (s *Service) initialSync(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID := pathParam(r, "roomID")
	limit, err := intParam(r, "limit", 20, s.cache.Events())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// Read the position before the snapshot: every event of the room up to
	// it is then in the snapshot (see snapshot.Cache), so a client that
	// streams from "end" misses nothing. The snapshot is fetched while the
	// membership is looked up: on a cold room both read storage.
	upto := s.hs.Rooms.UpTo()
	type snapResult struct {
		snap *snapshot.Snapshot
		err  error
	}
	snapCh := make(chan snapResult, 1)
	go func() {
		snap, err := s.snapshot(ctx, roomID)
		snapCh <- snapResult{snap, err}
	}()
	m, err := s.membership(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nowMS := s.now().UnixMilli()
	if m == "join" {
		body, err := s.memberInitialSync(ctx, roomID, rq.UserID, limit, nowMS)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		httpapi.RespondRaw(w, http.StatusOK, body)
		return
	}
	res := <-snapCh
	snap, err := res.snap, res.err
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !snap.Summary.WorldReadable() {
		httpapi.Fail(w, r, httpapi.Forbidden("you are not a member of this room and it is not world-readable"))
		return
	}
	evs := snap.Events[max(len(snap.Events)-limit, 0):]
	state := make([][]byte, 0, len(snap.State)+len(evs))
	for _, b := range snap.State {
		state = append(state, b)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		if b, ok := snap.Members[e.Sender]; ok && !seen[e.Sender] {
			seen[e.Sender] = true
			state = append(state, b)
		}
	}
	// One allocation for the whole answer: the bytes are already rendered.
	size := 256
	for _, e := range evs {
		size += e.Size() + 64
	}
	for _, st := range state {
		size += len(st) + 1
	}
	body := appendInitialSync(make([]byte, 0, size), roomID, m, evs, state, max(upto, snap.Pos), nowMS)
	httpapi.RespondRaw(w, http.StatusOK, body)
}

// appendInitialSync writes the initialSync response from rendered parts.
func appendInitialSync(b []byte, roomID, membership string, evs []*snapshot.Event, state [][]byte, end, nowMS int64) []byte {
	start := end
	if len(evs) > 0 {
		start = evs[0].Pos - 1
	}
	b = append(b, `{"room_id":`...)
	b = appendString(b, roomID)
	if membership != "" {
		b = append(b, `,"membership":`...)
		b = appendString(b, membership)
	}
	b = append(b, `,"messages":{"start":"s`...)
	b = strconv.AppendInt(b, start, 10)
	b = append(b, `","end":"s`...)
	b = strconv.AppendInt(b, end, 10)
	b = append(b, `","chunk":[`...)
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = snapshot.AppendEvent(b, e, nowMS)
	}
	b = append(b, `]},"state":[`...)
	for i, st := range state {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, st...)
	}
	return append(b, `],"account_data":[],"presence":[]}`...)
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// memberInitialSync reads a joined member's view from storage: they may see
// more than an anonymous reader, so the snapshot does not serve them.
func (s *Service) memberInitialSync(ctx context.Context, roomID, userID string, limit int, nowMS int64) ([]byte, error) {
	upto := s.hs.Rooms.UpTo()
	nid, err := s.hs.DB.RoomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	vis, err := s.hs.Rooms.VisibilityFor(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	stored, err := s.hs.DB.RoomEvents(ctx, nid, upto, 0, true, limit, storage.EventFilter{})
	if err != nil {
		return nil, err
	}
	visible := stored[:0]
	for _, e := range stored {
		if vis.CanSee(e.StreamPos) {
			visible = append(visible, e)
		}
	}
	slices.Reverse(visible)
	evs, err := snapshot.RenderStored(ctx, s.hs.DB, visible)
	if err != nil {
		return nil, err
	}
	cur, err := s.hs.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{userID: true}
	for _, e := range evs {
		senders[e.Sender] = true
	}
	var state [][]byte
	for _, ev := range cur {
		if ev.Type() == event.TypeMember && !senders[*ev.StateKey()] {
			continue
		}
		b, err := json.Marshal(ev.Client())
		if err != nil {
			return nil, err
		}
		state = append(state, b)
	}
	return appendInitialSync(nil, roomID, "join", evs, state, upto, nowMS), nil
}
