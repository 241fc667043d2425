package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"strconv"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// PDURoutes adds the authenticated endpoints about room events: inbound
// transactions, joins, and the reads other servers use to fill gaps.
func (s *Service) PDURoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.Authenticate)
		r.Put("/_matrix/federation/v1/send/{txnID}", s.serveSend)
		r.Get("/_matrix/federation/v1/event/{eventID}", s.serveEvent)
		r.Get("/_matrix/federation/v1/state/{roomID}", s.serveState)
		r.Get("/_matrix/federation/v1/state_ids/{roomID}", s.serveStateIDs)
		r.Get("/_matrix/federation/v1/event_auth/{roomID}/{eventID}", s.serveEventAuth)
		r.Post("/_matrix/federation/v1/get_missing_events/{roomID}", s.serveMissingEvents)
		r.Get("/_matrix/federation/v1/backfill/{roomID}", s.serveBackfill)
		r.Get("/_matrix/federation/v1/make_join/{roomID}/{userID}", s.serveMakeJoin)
		r.Put("/_matrix/federation/v2/send_join/{roomID}/{eventID}", s.serveSendJoin)
		r.Put("/_matrix/federation/v1/send_join/{roomID}/{eventID}", s.serveSendJoinV1)
	})
}

// roomFor checks that origin may read the room: it is not denied by the
// room's server ACL, and it has a member joined to the room (or the room is
// world readable). Unknown rooms, and rooms origin may not read, are both
// 403 to the asker, who learns nothing about which.
func (s *Service) roomFor(ctx context.Context, origin, roomID string) error {
	rooms := s.locals.Rooms
	if rooms == nil || !id.ValidRoomID(roomID) {
		return httpapi.NotFound("unknown room")
	}
	if err := s.aclAllows(ctx, roomID, origin); err != nil {
		return err
	}
	servers, err := rooms.Servers(ctx, roomID)
	if errors.Is(err, room.ErrNotFound) {
		return httpapi.NotFound("unknown room")
	}
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv == origin {
			return nil
		}
	}
	hv, err := rooms.StateEvent(ctx, roomID, "m.room.history_visibility", "")
	if err != nil {
		return err
	}
	if hv != nil {
		var c struct {
			V string `json:"history_visibility"`
		}
		if json.Unmarshal(hv.Content(), &c) == nil && c.V == "world_readable" {
			return nil
		}
	}
	return httpapi.Forbidden("%s is not in room %s", origin, roomID)
}

func pdus(evs []*event.Event) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e.JSON()
	}
	return out
}

// GET /event/{eventID}
func (s *Service) serveEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	eventID := httpapi.PathParam(r, "eventID")
	se, err := s.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && se.Rejected) {
		httpapi.Fail(w, r, httpapi.NotFound("unknown event"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.roomFor(ctx, Origin(ctx), se.Event.RoomID()); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out, err := s.forServer(ctx, Origin(ctx), []*storage.StoredEvent{se})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": s.cfg.Now().UnixMilli(),
		"pdus": out})
}

// stateAt answers /state and /state_ids.
func (s *Service) stateAt(w http.ResponseWriter, r *http.Request) (state, chain []*event.Event, ok bool) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("event_id is required"))
		return nil, nil, false
	}
	if err := s.roomFor(ctx, Origin(ctx), roomID); err != nil {
		httpapi.Fail(w, r, err)
		return nil, nil, false
	}
	state, chain, err := s.locals.Rooms.StateAt(ctx, roomID, eventID)
	if errors.Is(err, room.ErrUnknownEvent) {
		httpapi.Fail(w, r, httpapi.NotFound("unknown event"))
		return nil, nil, false
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return nil, nil, false
	}
	return state, chain, true
}

// GET /state/{roomID}?event_id=
func (s *Service) serveState(w http.ResponseWriter, r *http.Request) {
	state, chain, ok := s.stateAt(w, r)
	if ok {
		httpapi.Respond(w, http.StatusOK, map[string]any{"pdus": pdus(state), "auth_chain": pdus(chain)})
	}
}

func ids(evs []*event.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID()
	}
	return out
}

// GET /state_ids/{roomID}?event_id=
func (s *Service) serveStateIDs(w http.ResponseWriter, r *http.Request) {
	state, chain, ok := s.stateAt(w, r)
	if ok {
		httpapi.Respond(w, http.StatusOK, map[string]any{"pdu_ids": ids(state), "auth_chain_ids": ids(chain)})
	}
}

// GET /event_auth/{roomID}/{eventID}
func (s *Service) serveEventAuth(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, eventID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID")
	if err := s.roomFor(ctx, Origin(ctx), roomID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	se, err := s.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && se.Event.RoomID() != roomID) {
		httpapi.Fail(w, r, httpapi.NotFound("unknown event"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	chain, err := s.locals.Rooms.AuthChain(ctx, roomID, []string{eventID})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"auth_chain": pdus(chain)})
}

// maxMissingLimit bounds one /get_missing_events answer.
const maxMissingLimit = 100

// POST /get_missing_events/{roomID}
func (s *Service) serveMissingEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    *int     `json:"limit"`
	}
	if err := httpapi.DecodeLimit(r, &req, 256<<10); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if len(req.Latest) == 0 {
		httpapi.Fail(w, r, httpapi.BadJSON("latest_events is required"))
		return
	}
	limit := 10
	if req.Limit != nil {
		limit = min(max(*req.Limit, 0), maxMissingLimit)
	}
	if err := s.roomFor(ctx, Origin(ctx), roomID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nid, err := s.locals.Rooms.NID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	evs, err := s.db.MissingEvents(ctx, nid, req.Earliest, req.Latest, limit)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out, err := s.forServer(ctx, Origin(ctx), evs)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"events": out})
}

// forServer renders events for origin: redacted where history visibility
// hides them from it (or they were redacted here).
func (s *Service) forServer(ctx context.Context, origin string, evs []*storage.StoredEvent) ([]json.RawMessage, error) {
	visible, err := s.locals.Rooms.VisibleToServer(ctx, origin, evs)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(evs))
	for i, se := range evs {
		out[i] = redactedJSON(se)
		if !visible[i] {
			if red, err := se.Event.Redact(); err == nil {
				out[i] = red.JSON()
			}
		}
	}
	return out, nil
}

func redactedJSON(se *storage.StoredEvent) json.RawMessage {
	if se.RedactedBy != "" {
		if red, err := se.Event.Redact(); err == nil {
			return red.JSON()
		}
	}
	return se.Event.JSON()
}

// GET /backfill/{roomID}?v=&limit=
func (s *Service) serveBackfill(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	q := r.URL.Query()
	from := q["v"]
	limit, err := strconv.Atoi(q.Get("limit"))
	if len(from) == 0 || err != nil || limit < 0 {
		httpapi.Fail(w, r, httpapi.InvalidParam("v and a numeric limit are required"))
		return
	}
	limit = min(limit, maxMissingLimit)
	if err := s.roomFor(ctx, Origin(ctx), roomID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	nid, err := s.locals.Rooms.NID(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// The events named, and those before them: a walk with no stop.
	evs, err := s.db.MissingEvents(ctx, nid, nil, from, limit)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	named, err := s.db.EventsByID(ctx, from)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var picked []*storage.StoredEvent
	for _, se := range named {
		if se.Event.RoomID() == roomID && !se.Rejected && len(picked) < limit {
			picked = append(picked, se)
		}
	}
	for i := len(evs) - 1; i >= 0 && len(picked) < limit; i-- {
		picked = append(picked, evs[i])
	}
	out, err := s.forServer(ctx, Origin(ctx), picked)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": s.cfg.Now().UnixMilli(), "pdus": out})
}

// GET /make_join/{roomID}/{userID}?ver=
func (s *Service) serveMakeJoin(w http.ResponseWriter, r *http.Request) {
	s.serveMake(w, r, "join")
}

// templateOf is an event without what the joining server makes itself.
func templateOf(ev *event.Event) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(ev.JSON(), &m)
	delete(m, "signatures")
	delete(m, "hashes")
	return m
}

// PUT /v2/send_join/{roomID}/{eventID}
func (s *Service) serveSendJoin(w http.ResponseWriter, r *http.Request) { s.sendJoin(w, r, false) }

// PUT /v1/send_join/{roomID}/{eventID}: the same, answered as [200, {...}].
func (s *Service) serveSendJoinV1(w http.ResponseWriter, r *http.Request) { s.sendJoin(w, r, true) }

func (s *Service) sendJoin(w http.ResponseWriter, r *http.Request, v1 bool) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID := httpapi.PathParam(r, "roomID")
	v, ev, _, ok := s.membershipPDU(w, r, "join")
	if !ok {
		return
	}
	// A restricted join naming one of our users needs our signature
	// before the auth rules accept it.
	ev, err := s.authoriseJoin(v, ev)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !s.receiveMembership(w, r, origin, roomID, ev.JSON()) {
		return
	}
	state, chain, err := s.locals.Rooms.StateAt(ctx, roomID, ev.ID())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	servers, err := s.locals.Rooms.Servers(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.relay(ctx, roomID, origin, ev)
	answer := map[string]any{"origin": s.cfg.ServerName, "state": pdus(state), "auth_chain": pdus(chain),
		"members_omitted": false, "servers_in_room": servers, "event": json.RawMessage(ev.JSON())}
	if v1 {
		httpapi.Respond(w, http.StatusOK, []any{http.StatusOK, answer})
		return
	}
	httpapi.Respond(w, http.StatusOK, answer)
}

// aclAllows applies the room's m.room.server_acl to server.
func (s *Service) aclAllows(ctx context.Context, roomID, server string) error {
	acl, err := s.locals.Rooms.StateEvent(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, room.ErrNotFound) || acl == nil {
		return nil
	}
	if err != nil {
		return err
	}
	if !ACLAllows(acl.Content(), server) {
		return httpapi.Forbidden("server %s is denied by the room's server ACL", server)
	}
	return nil
}

// ACLAllows applies an m.room.server_acl content to a server name (spec,
// "Server Access Control Lists"): the port is ignored, IP literals follow
// allow_ip_literals, deny wins over allow, and no allow entry allows none.
func ACLAllows(content []byte, server string) bool {
	var c struct {
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
		AllowIPLiterals *bool `json:"allow_ip_literals"`
	}
	if json.Unmarshal(content, &c) != nil {
		return true // an unreadable ACL is ignored, as the spec's clients would
	}
	host, _ := splitServerName(server)
	if isIPLiteral(host) && c.AllowIPLiterals != nil && !*c.AllowIPLiterals {
		return false
	}
	match := func(list []any) bool {
		for _, p := range list {
			if ps, ok := p.(string); ok {
				if m, err := path.Match(globToPath(ps), host); err == nil && m {
					return true
				}
			}
		}
		return false
	}
	if match(c.Deny) {
		return false
	}
	return match(c.Allow)
}

// globToPath turns an ACL glob ('*' and '?' only) into a path.Match pattern,
// escaping everything else; ACL globs match dots and any character.
func globToPath(glob string) string {
	var b []byte
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*', '?':
			b = append(b, c)
		case '\\', '[', ']':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// membershipPDU reads the member event of a send_join, send_leave or
// send_knock: the room must be ours and not deny the origin by ACL, the
// event must match the path, be the sender's own membership change of that
// kind, and come from the sender's server. On failure it has answered.
func (s *Service) membershipPDU(w http.ResponseWriter, r *http.Request, membership string) (v *event.RoomVersion, ev *event.Event, body []byte, ok bool) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID, eventID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID")
	if s.locals.Rooms == nil {
		httpapi.Fail(w, r, httpapi.NotFound("unknown room"))
		return nil, nil, nil, false
	}
	if err := s.aclAllows(ctx, roomID, origin); err != nil {
		httpapi.Fail(w, r, err)
		return nil, nil, nil, false
	}
	v, err := s.locals.Rooms.Version(ctx, roomID)
	if errors.Is(err, room.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("unknown room"))
		return nil, nil, nil, false
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return nil, nil, nil, false
	}
	body, err = httpapi.ReadBody(r, event.MaxPDUSize*2)
	if err != nil {
		httpapi.Fail(w, r, err)
		return nil, nil, nil, false
	}
	// Checked in full by Receive (once countersigned, for restricted joins).
	ev, err = event.Parse(v, body)
	if err != nil {
		httpapi.Fail(w, r, httpapi.BadJSON("%v", err))
		return nil, nil, nil, false
	}
	sk := ev.StateKey()
	switch {
	case ev.ID() != eventID:
		httpapi.Fail(w, r, httpapi.BadJSON("the event's ID is %s, not %s", ev.ID(), eventID))
		return nil, nil, nil, false
	case ev.RoomID() != roomID:
		httpapi.Fail(w, r, httpapi.BadJSON("the event is for another room"))
		return nil, nil, nil, false
	case ev.Type() != event.TypeMember || sk == nil || *sk != ev.Sender() || room.MembershipOf(ev) != membership:
		httpapi.Fail(w, r, httpapi.BadJSON("not a %s event", membership))
		return nil, nil, nil, false
	case id.ServerOf(ev.Sender()) != origin:
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not %s for %s", origin, membership, ev.Sender()))
		return nil, nil, nil, false
	}
	return v, ev, body, true
}
