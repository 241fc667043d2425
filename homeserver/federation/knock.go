package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/signing"
)

// GET /make_knock/{roomID}/{userID}?ver=
func (s *Service) serveMakeKnock(w http.ResponseWriter, r *http.Request) {
	s.serveMake(w, r, "knock")
}

// serveMake answers make_join and make_knock: a template of the member
// event, built and authorised on the room's current state.
func (s *Service) serveMake(w http.ResponseWriter, r *http.Request, membership string) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID, userID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "userID")
	if u, err := id.ParseUserID(userID); err != nil || u.ServerName != origin {
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not %s for %q", origin, membership, userID))
		return
	}
	if s.locals.Rooms == nil {
		httpapi.Fail(w, r, httpapi.NotFound("unknown room"))
		return
	}
	if err := s.aclAllows(ctx, roomID, origin); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	v, err := s.locals.Rooms.Version(ctx, roomID)
	if errors.Is(err, room.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("unknown room"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = []string{"1"}
	}
	if !slices.Contains(vers, v.ID) {
		e := httpapi.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "the room is version %s", v.ID)
		e.Extra = map[string]any{"room_version": v.ID}
		httpapi.Fail(w, r, e)
		return
	}
	content := map[string]any{"membership": membership}
	if membership == "join" {
		via, err := s.restrictedVia(ctx, roomID, userID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	body, _ := json.Marshal(content)
	tmpl, err := s.locals.Rooms.Template(ctx, roomID, room.Request{Sender: userID, Type: event.TypeMember, StateKey: &userID, Content: body})
	if errors.Is(err, room.ErrForbidden) {
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not %s: %v", userID, membership, err))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"room_version": v.ID, "event": templateOf(tmpl)})
}

// restrictedVia decides a join to a restricted room: "" when the room is
// not restricted or the user needs no authorisation (invited, or already
// joined); else one of our joined users who may invite, once the user is
// found joined to one of the rooms the join rule allows.
func (s *Service) restrictedVia(ctx context.Context, roomID, userID string) (string, error) {
	rooms := s.locals.Rooms
	jr, err := rooms.StateEvent(ctx, roomID, event.TypeJoinRules, "")
	if err != nil || jr == nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	_ = json.Unmarshal(jr.Content(), &c)
	if c.JoinRule != "restricted" && c.JoinRule != "knock_restricted" {
		return "", nil
	}
	if m, err := rooms.Membership(ctx, roomID, userID); err != nil || m == "invite" || m == "join" {
		return "", err
	}
	allowed, checked := false, false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		m, err := rooms.Membership(ctx, a.RoomID, userID)
		if errors.Is(err, room.ErrNotFound) {
			continue // a room we are not in: we cannot tell
		}
		if err != nil {
			return "", err
		}
		checked = true
		allowed = allowed || m == "join"
	}
	if !allowed {
		if !checked {
			return "", httpapi.Custom(http.StatusBadRequest, "M_UNABLE_TO_AUTHORISE_JOIN", "this server cannot check the rooms that grant joining")
		}
		return "", httpapi.Forbidden("%s is in none of the rooms that grant joining", userID)
	}
	pl, err := rooms.PowerLevels(ctx, roomID)
	if err != nil {
		return "", err
	}
	state, err := rooms.CurrentState(ctx, roomID)
	if err != nil {
		return "", err
	}
	var candidates []string
	for _, ev := range state {
		sk := ev.StateKey()
		if ev.Type() == event.TypeMember && sk != nil && id.ServerOf(*sk) == s.cfg.ServerName && room.MembershipOf(ev) == "join" &&
			pl.UserLevel(*sk) >= pl.Invite {
			candidates = append(candidates, *sk)
		}
	}
	if len(candidates) == 0 {
		return "", httpapi.Custom(http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN", "no user of this server may let %s in", userID)
	}
	slices.Sort(candidates)
	return candidates[0], nil
}

// authoriseJoin countersigns a restricted join that names one of our users
// as its authoriser, as the auth rules require of us.
func (s *Service) authoriseJoin(v *event.RoomVersion, ev *event.Event) (*event.Event, error) {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Via == "" || id.ServerOf(c.Via) != s.cfg.ServerName {
		return ev, nil
	}
	return s.countersign(v, ev)
}

// PUT /v1/send_knock/{roomID}/{eventID}
func (s *Service) serveSendKnock(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID := httpapi.PathParam(r, "roomID")
	_, ev, body, ok := s.membershipPDU(w, r, "knock")
	if !ok {
		return
	}
	if !s.receiveMembership(w, r, origin, roomID, body) {
		return
	}
	s.relay(ctx, roomID, origin, ev)
	httpapi.Respond(w, http.StatusOK, map[string]any{"knock_room_state": s.strippedState(ctx, roomID)})
}

// receiveMembership places a membership event that came through a
// make/send handshake, answering the request itself when it fails.
func (s *Service) receiveMembership(w http.ResponseWriter, r *http.Request, origin, roomID string, body []byte) bool {
	ctx := r.Context()
	evID, err := s.locals.Rooms.Receive(ctx, origin, roomID, body)
	switch {
	case errors.Is(err, room.ErrRejected):
		httpapi.Fail(w, r, httpapi.Forbidden("not allowed by the room's rules"))
		return false
	case errors.Is(err, room.ErrBadEvent):
		httpapi.Fail(w, r, httpapi.BadJSON("%v", err))
		return false
	case err != nil:
		httpapi.Fail(w, r, err)
		return false
	}
	se, err := s.db.EventByID(ctx, evID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return false
	}
	if se.SoftFailed || se.Rejected {
		httpapi.Fail(w, r, httpapi.Forbidden("not allowed by the room's current state"))
		return false
	}
	return true
}

// Knock knocks on a room this server is not in (make_knock/send_knock).
func (r Remote) Knock(ctx context.Context, roomID, userID string, servers []string, content json.RawMessage) error {
	return r.makeAndSend(ctx, "knock", roomID, userID, servers, content)
}

// countersign adds our signature to an event another server made: over the
// event's signed bytes (its redacted form), as event signatures are.
func (s *Service) countersign(v *event.RoomVersion, ev *event.Event) (*event.Event, error) {
	b, err := ev.SignedBytes()
	if err != nil {
		return nil, err
	}
	sig, err := canonicaljson.Marshal(signing.SignBytes(b, s.cfg.Key))
	if err != nil {
		return nil, err
	}
	js := ev.JSON()
	sigs, ok, err := canonicaljson.Get(js, "signatures")
	if err != nil {
		return nil, err
	}
	if !ok || len(sigs) == 0 || sigs[0] != '{' {
		sigs = []byte("{}")
	}
	mine, ok, err := canonicaljson.Get(sigs, s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	if !ok || len(mine) == 0 || mine[0] != '{' {
		mine = []byte("{}")
	}
	if mine, err = canonicaljson.Set(mine, s.cfg.Key.ID, sig); err != nil {
		return nil, err
	}
	if sigs, err = canonicaljson.Set(sigs, s.cfg.ServerName, mine); err != nil {
		return nil, err
	}
	if js, err = canonicaljson.Set(js, "signatures", sigs); err != nil {
		return nil, err
	}
	out, err := event.Parse(v, js)
	if err != nil {
		return nil, err
	}
	if out.ID() != ev.ID() {
		return nil, errors.New("countersigning changed the event")
	}
	return out, nil
}
