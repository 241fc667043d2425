package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

func (a *API) messageRoutes(r chi.Router) {
	r.Put("/rooms/{roomID}/send/{eventType}/{txnID}", a.send)
	r.Put("/rooms/{roomID}/redact/{eventID}/{txnID}", a.redact)
	r.Get("/rooms/{roomID}/messages", a.messages)
	r.Get("/rooms/{roomID}/context/{eventID}", a.eventContext)
	r.Get("/rooms/{roomID}/event/{eventID}", a.getEvent)
	r.Get("/rooms/{roomID}/threads", a.threads)
	r.Get("/rooms/{roomID}/relations/{eventID}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", a.relations)
	r.Get("/rooms/{roomID}/timestamp_to_event", a.timestampToEvent)
}

// The v1 prefix carries a few of these endpoints too.
func (a *API) V1Routes(r chi.Router) {
	r.Get("/rooms/{roomID}/threads", a.threads)
	r.Get("/rooms/{roomID}/relations/{eventID}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}", a.relations)
	r.Get("/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", a.relations)
	r.Get("/rooms/{roomID}/timestamp_to_event", a.timestampToEvent)
}

// sendTxn runs a /send or /redact once per (device, txnID): retries of the
// same transaction get the first answer. The transaction ID is stored with
// the event, in the same database transaction, so the check costs a lookup
// and no extra commit; concurrent retries in this process share one send.
func (a *API) sendTxn(w http.ResponseWriter, r *http.Request, redaction bool, do func() (*room.Result, error)) {
	ctx := r.Context()
	rq := requester(r)
	txnID := httpapi.PathParam(r, "txnID")
	key := rq.UserID + "\x00" + rq.DeviceID + "\x00" + strconv.FormatBool(redaction) + "\x00" + txnID
	v, err, _ := a.txns.Do(key, func() (any, error) {
		if id, err := a.db.EventByTxn(ctx, rq.UserID, rq.DeviceID, txnID, redaction); err == nil {
			return id, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		res, err := do()
		if err != nil {
			return nil, err
		}
		return res.Event.ID(), nil
	})
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"event_id": v.(string)})
}

func (a *API) send(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	if err := a.limiter.allow("send", rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roomID, typ, txnID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "txnID")
	body, err := httpapi.ReadBody(r, httpapi.DefaultMaxBody)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var obj map[string]json.RawMessage
	if err := httpapi.Unmarshal(body, &obj); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if typ == event.TypeRedaction {
		httpapi.Fail(w, r, httpapi.BadJSON("use the /redact endpoint to redact events"))
		return
	}
	a.sendTxn(w, r, false, func() (*room.Result, error) {
		res, err := a.rooms.Send(context.WithoutCancel(r.Context()), roomID, room.Request{
			Sender: rq.UserID, Type: typ, Content: body, TxnDevice: rq.DeviceID, TxnID: txnID})
		return &res, err
	})
}

func (a *API) redact(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	if err := a.limiter.allow("send", rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roomID, target, txnID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID"), httpapi.PathParam(r, "txnID")
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	content := map[string]any{}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	a.sendTxn(w, r, true, func() (*room.Result, error) {
		res, err := a.rooms.Send(context.WithoutCancel(r.Context()), roomID, room.Request{
			Sender: rq.UserID, Type: event.TypeRedaction, Content: mustJSON(content), Redacts: target,
			TxnDevice: rq.DeviceID, TxnID: txnID})
		return &res, err
	})
}

// parseStreamToken reads a stream position from a sync or pagination token
// ("s123", possibly followed by "_…" parts for other streams).
func parseStreamToken(tok string) (int64, error) {
	if !strings.HasPrefix(tok, "s") {
		return 0, httpapi.InvalidParam("invalid token %q", tok)
	}
	num := tok[1:]
	if i := strings.IndexByte(num, '_'); i >= 0 {
		num = num[:i]
	}
	pos, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, httpapi.InvalidParam("invalid token %q", tok)
	}
	return pos, nil
}

// StreamToken renders a stream position as a token.
func StreamToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

// RoomEventFilter is the spec's filter for room events.
type RoomEventFilter struct {
	Limit                   int      `json:"limit"`
	Types                   []string `json:"types"`
	NotTypes                []string `json:"not_types"`
	Senders                 []string `json:"senders"`
	NotSenders              []string `json:"not_senders"`
	Rooms                   []string `json:"rooms"`
	NotRooms                []string `json:"not_rooms"`
	ContainsURL             *bool    `json:"contains_url"`
	LazyLoadMembers         bool     `json:"lazy_load_members"`
	IncludeRedundantMembers bool     `json:"include_redundant_members"`
	UnreadThreadNotifs      bool     `json:"unread_thread_notifications"`
}

// Storage returns the part of the filter the database applies.
func (f *RoomEventFilter) Storage() storage.EventFilter {
	return storage.EventFilter{Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders, NotSenders: f.NotSenders, ContainsURL: f.ContainsURL}
}

// Formatter renders stored events for one requester: redacted events as
// redacted with redacted_because, the requester's own transaction IDs, age.
type Formatter struct {
	DB       *storage.DB
	UserID   string
	DeviceID string
	NowMS    int64
}

// Format renders events in client format.
func (f *Formatter) Format(ctx context.Context, evs []*storage.StoredEvent) ([]event.ClientEvent, error) {
	// The redactions and replaced state events the client format points
	// to, loaded in one query.
	var related []string
	for _, e := range evs {
		if e.RedactedBy != "" {
			related = append(related, e.RedactedBy)
		}
		if e.ReplacesState != "" {
			related = append(related, e.ReplacesState)
		}
	}
	byID := map[string]*storage.StoredEvent{}
	if len(related) > 0 {
		rs, err := f.DB.EventsByID(ctx, related)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			byID[r.Event.ID()] = r
		}
	}
	out := make([]event.ClientEvent, 0, len(evs))
	for _, e := range evs {
		ev := e.Event
		unsigned := map[string]any{"age": max(f.NowMS-ev.OriginServerTS(), 0)}
		if e.RedactedBy != "" {
			if red, err := ev.Redact(); err == nil {
				ev = red
			}
			if r := byID[e.RedactedBy]; r != nil {
				rc := r.Event.Client()
				unsigned["redacted_because"] = rc
			}
		}
		if e.TxnID != "" && ev.Sender() == f.UserID && e.TxnDevice == f.DeviceID {
			unsigned["transaction_id"] = e.TxnID
		}
		if e.ReplacesState != "" {
			unsigned["replaces_state"] = e.ReplacesState
			if prev := byID[e.ReplacesState]; prev != nil {
				content := prev.Event.Content()
				if prev.RedactedBy != "" {
					if red, err := prev.Event.Redact(); err == nil {
						content = red.Content()
					}
				}
				unsigned["prev_content"] = json.RawMessage(content)
				unsigned["prev_sender"] = prev.Event.Sender()
			}
		}
		ce := ev.Client()
		ce.Unsigned = unsigned
		out = append(out, ce)
	}
	return out, nil
}

func (a *API) formatter(r *http.Request) *Formatter {
	rq := requester(r)
	f := &Formatter{DB: a.db, NowMS: a.now().UnixMilli()}
	if rq != nil {
		f.UserID, f.DeviceID = rq.UserID, rq.DeviceID
	}
	return f
}

// parseFilterParam reads the JSON filter query parameter.
func parseFilterParam(r *http.Request) (*RoomEventFilter, error) {
	f := &RoomEventFilter{}
	if s := r.URL.Query().Get("filter"); s != "" {
		if err := json.Unmarshal([]byte(s), f); err != nil {
			return nil, httpapi.BadJSON("filter is not a valid RoomEventFilter: %v", err)
		}
	}
	return f, nil
}

func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		httpapi.Fail(w, r, httpapi.InvalidParam("dir must be b or f"))
		return
	}
	limit, err := queryLimit(r, 10, 1000)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	filter, err := parseFilterParam(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	vis, err := a.readableRoom(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nid, err := a.db.RoomNID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var from int64
	if t := q.Get("from"); t != "" {
		if from, err = parseStreamToken(t); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	} else if dir == "b" {
		from = a.rooms.UpTo()
	}
	var to int64
	if t := q.Get("to"); t != "" {
		if to, err = parseStreamToken(t); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	upto := a.rooms.UpTo()
	if dir == "b" {
		from = min(from, upto)
	} else if to == 0 || to > upto {
		to = upto
	}
	evs, err := a.db.RoomEvents(ctx, nid, from, to, dir == "b", limit, filter.Storage())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if dir == "b" && len(evs) < limit && to == 0 && a.remote != nil {
		// The start of what this server has: a room joined over
		// federation may have older history on its other servers.
		if n, err := a.remote.Backfill(ctx, roomID, limit-len(evs)); err == nil && n > 0 {
			if evs, err = a.db.RoomEvents(ctx, nid, from, to, true, limit, filter.Storage()); err != nil {
				httpapi.Fail(w, r, err)
				return
			}
		}
	}
	resp := map[string]any{"start": StreamToken(from)}
	if len(evs) > 0 && len(evs) == limit {
		last := evs[len(evs)-1].StreamPos
		if dir == "b" {
			resp["end"] = StreamToken(last - 1)
		} else {
			resp["end"] = StreamToken(last)
		}
	}
	visible := VisibleOnly(vis, evs)
	chunk, err := a.formatter(r).Format(ctx, visible)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	resp["chunk"] = chunk
	if filter.LazyLoadMembers {
		st, err := a.memberEventsFor(ctx, roomID, visible)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		resp["state"] = st
	}
	httpapi.Respond(w, http.StatusOK, resp)
}

// memberEventsFor returns the current member events of the senders of evs
// (lazy-loading members).
func (a *API) memberEventsFor(ctx context.Context, roomID string, evs []*storage.StoredEvent) ([]event.ClientEvent, error) {
	seen := map[string]bool{}
	out := []event.ClientEvent{}
	for _, e := range evs {
		s := e.Event.Sender()
		if seen[s] {
			continue
		}
		seen[s] = true
		m, err := a.rooms.StateEvent(ctx, roomID, event.TypeMember, s)
		if err != nil {
			return nil, roomErr(err)
		}
		if m != nil {
			out = append(out, m.Client())
		}
	}
	return out, nil
}

// visibleEvent loads an event of a room that the requester may see.
func (a *API) visibleEvent(ctx context.Context, roomID, eventID, userID string) (*storage.StoredEvent, *room.Visibility, error) {
	ev, err := a.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.Event.RoomID() != roomID || ev.StreamPos == 0 || ev.Rejected || ev.SoftFailed)) {
		return nil, nil, httpapi.NotFound("event not found")
	}
	if err != nil {
		return nil, nil, err
	}
	vis, err := a.rooms.VisibilityFor(ctx, roomID, userID)
	if err != nil {
		return nil, nil, err
	}
	if !vis.CanSee(ev.StreamPos) {
		return nil, nil, httpapi.NotFound("event not found")
	}
	return ev, vis, nil
}

func (a *API) getEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ev, _, err := a.visibleEvent(ctx, httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID"), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out, err := a.formatter(r).Format(ctx, []*storage.StoredEvent{ev})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, out[0])
}

func (a *API) eventContext(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	ev, vis, err := a.visibleEvent(ctx, roomID, httpapi.PathParam(r, "eventID"), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	limit, err := queryLimit(r, 10, 100)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	filter, err := parseFilterParam(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nid, err := a.db.RoomNID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	before, err := a.db.RoomEvents(ctx, nid, ev.StreamPos-1, 0, true, limit/2, filter.Storage())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	after, err := a.db.RoomEvents(ctx, nid, ev.StreamPos, a.rooms.UpTo(), false, limit-limit/2, filter.Storage())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	before, after = VisibleOnly(vis, before), VisibleOnly(vis, after)
	f := a.formatter(r)
	all := append(append([]*storage.StoredEvent{ev}, before...), after...)
	formatted, err := f.Format(ctx, all)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	start, end := ev.StreamPos-1, ev.StreamPos
	if len(before) > 0 {
		start = before[len(before)-1].StreamPos - 1
	}
	if len(after) > 0 {
		end = after[len(after)-1].StreamPos
	}
	state, err := a.rooms.StateAfterEvent(ctx, ev.Event.ID())
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	stateOut := []event.ClientEvent{}
	senders := map[string]bool{}
	for _, e := range all {
		senders[e.Event.Sender()] = true
	}
	for _, s := range state {
		if filter.LazyLoadMembers && s.Type() == event.TypeMember && !senders[*s.StateKey()] {
			continue
		}
		stateOut = append(stateOut, s.Client())
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{
		"event": formatted[0], "events_before": formatted[1 : 1+len(before)], "events_after": formatted[1+len(before):],
		"start": StreamToken(start), "end": StreamToken(end), "state": stateOut,
	})
}

func (a *API) relations(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, eventID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID")
	_, vis, err := a.visibleEvent(ctx, roomID, eventID, requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := queryLimit(r, 50, 1000)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	forwards := q.Get("dir") == "f"
	var from int64
	if t := q.Get("from"); t != "" {
		if from, err = parseStreamToken(t); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	evs, err := a.db.Relations(ctx, eventID, httpapi.PathParam(r, "relType"), httpapi.PathParam(r, "eventType"), from, limit, forwards)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	visible := VisibleOnly(vis, evs)
	chunk, err := a.formatter(r).Format(ctx, visible)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	resp := map[string]any{"chunk": chunk}
	if len(evs) == limit && limit > 0 {
		resp["next_batch"] = StreamToken(evs[len(evs)-1].StreamPos)
	}
	httpapi.Respond(w, http.StatusOK, resp)
}

func (a *API) threads(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	vis, err := a.readableRoom(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := queryLimit(r, 20, 100)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if inc := q.Get("include"); inc != "" && inc != "all" && inc != "participated" {
		httpapi.Fail(w, r, httpapi.InvalidParam("include must be all or participated"))
		return
	}
	var before int64
	if t := q.Get("from"); t != "" {
		if before, err = parseStreamToken(t); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	nid, err := a.db.RoomNID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roots, latest, err := a.db.ThreadRoots(ctx, nid, before, limit)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	visible := VisibleOnly(vis, roots)
	chunk, err := a.formatter(r).Format(ctx, visible)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	resp := map[string]any{"chunk": chunk}
	if len(roots) == limit && limit > 0 {
		resp["next_batch"] = StreamToken(latest[len(latest)-1])
	}
	httpapi.Respond(w, http.StatusOK, resp)
}

func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		httpapi.Fail(w, r, httpapi.InvalidParam("ts must be an integer"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		httpapi.Fail(w, r, httpapi.InvalidParam("dir must be f or b"))
		return
	}
	vis, err := a.readableRoom(ctx, roomID, requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nid, err := a.db.RoomNID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	ev, err := a.db.EventAtTimestamp(ctx, nid, ts, dir == "f")
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !vis.CanSee(ev.StreamPos)) {
		httpapi.Fail(w, r, httpapi.NotFound("no event found"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"event_id": ev.Event.ID(), "origin_server_ts": ev.Event.OriginServerTS()})
}

// queryLimit reads the "limit" query parameter: def when absent, capped at
// most, M_INVALID_PARAM when not a non-negative integer.
func queryLimit(r *http.Request, def, most int) (int, error) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return def, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, most), nil
}

// VisibleOnly keeps the events the visibility allows, in order.
func VisibleOnly(vis *room.Visibility, evs []*storage.StoredEvent) []*storage.StoredEvent {
	out := make([]*storage.StoredEvent, 0, len(evs))
	for _, e := range evs {
		if vis.CanSee(e.StreamPos) {
			out = append(out, e)
		}
	}
	return out
}

// readableRoom prepares visibility checks for a room the user may read at
// all: a member (current or former) or anyone in a world-readable room.
func (a *API) readableRoom(ctx context.Context, roomID, userID string) (*room.Visibility, error) {
	vis, err := a.rooms.VisibilityFor(ctx, roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("room not found")
	}
	if err != nil {
		return nil, err
	}
	if vis.Member() == "" && !vis.WorldReadable() {
		return nil, httpapi.Forbidden("you are not a member of this room")
	}
	return vis, nil
}
