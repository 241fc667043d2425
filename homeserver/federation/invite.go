package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// InviteRoutes adds the endpoints of invites, leaves and knocks.
func (s *Service) InviteRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.Authenticate)
		r.Put("/_matrix/federation/v2/invite/{roomID}/{eventID}", s.serveInvite)
		r.Get("/_matrix/federation/v1/make_leave/{roomID}/{userID}", s.serveMakeLeave)
		r.Put("/_matrix/federation/v2/send_leave/{roomID}/{eventID}", s.serveSendLeave)
		r.Put("/_matrix/federation/v1/send_leave/{roomID}/{eventID}", s.serveSendLeaveV1)
		r.Get("/_matrix/federation/v1/make_knock/{roomID}/{userID}", s.serveMakeKnock)
		r.Put("/_matrix/federation/v1/send_knock/{roomID}/{eventID}", s.serveSendKnock)
	})
}

// PUT /v2/invite/{roomID}/{eventID}: another server invites one of our
// users; we check the event, countersign it and keep the invite.
func (s *Service) serveInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID, eventID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "eventID")
	var req struct {
		Event           json.RawMessage   `json:"event"`
		RoomVersion     string            `json:"room_version"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := httpapi.DecodeLimit(r, &req, 512<<10); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	v, err := event.Version(req.RoomVersion)
	if err != nil {
		e := httpapi.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "room version %q is not supported", req.RoomVersion)
		e.Extra = map[string]any{"room_version": req.RoomVersion}
		httpapi.Fail(w, r, e)
		return
	}
	rooms := s.locals.Rooms
	if rooms == nil {
		httpapi.Fail(w, r, httpapi.Forbidden("invites are not accepted"))
		return
	}
	ev, err := rooms.CheckPDU(ctx, v, req.Event)
	if err != nil {
		httpapi.Fail(w, r, httpapi.BadJSON("%v", err))
		return
	}
	sk := ev.StateKey()
	switch {
	case ev.ID() != eventID || ev.RoomID() != roomID:
		httpapi.Fail(w, r, httpapi.BadJSON("the event does not match the path"))
		return
	case ev.Type() != event.TypeMember || sk == nil || room.MembershipOf(ev) != "invite":
		httpapi.Fail(w, r, httpapi.BadJSON("not an invite"))
		return
	case id.ServerOf(ev.Sender()) != origin:
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not invite for %s", origin, ev.Sender()))
		return
	}
	if err := s.localUser(*sk); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	acct, err := s.db.AccountByUserID(ctx, *sk)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acct.Deactivated) {
		httpapi.Fail(w, r, httpapi.NotFound("no such user"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.aclAllows(ctx, roomID, origin); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	sev, err := s.countersign(v, ev)
	if err != nil {
		httpapi.Fail(w, r, httpapi.BadJSON("the invite cannot be countersigned"))
		return
	}
	state, _ := json.Marshal(req.InviteRoomState)
	if err := rooms.StoreInvite(ctx, v, sev, origin, state); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"event": json.RawMessage(sev.JSON())})
}

// Invite invites a remote user to a room of ours: the invitee's server
// countersigns the event (/v2/invite), then it is placed in the room like a
// received event and sent to the room's servers.
func (r Remote) Invite(ctx context.Context, roomID, sender, invitee string, content json.RawMessage) error {
	s := r.s
	rooms := s.locals.Rooms
	ev, err := rooms.Template(ctx, roomID, room.Request{Sender: sender, Type: event.TypeMember, StateKey: &invitee, Content: content})
	if err != nil {
		return err
	}
	v, err := rooms.Version(ctx, roomID)
	if err != nil {
		return err
	}
	server := id.ServerOf(invitee)
	body := map[string]any{"event": json.RawMessage(ev.JSON()), "room_version": v.ID, "invite_room_state": s.strippedState(ctx, roomID)}
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	uri := "/_matrix/federation/v2/invite/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.ID())
	if err := s.Client.DoJSON(ctx, server, http.MethodPut, uri, body, &resp, true); err != nil {
		return remoteFailure(server, "the invite", err)
	}
	signed, err := event.Parse(v, resp.Event)
	if err != nil || signed.ID() != ev.ID() {
		return httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s answered the invite with another event", server)
	}
	var sigErr error
	if err := s.verifyEventBy(ctx, signed, server); err != nil {
		sigErr = err
	}
	if sigErr != nil {
		return httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s did not sign the invite: %v", server, sigErr)
	}
	if _, err := rooms.Receive(ctx, s.cfg.ServerName, roomID, signed.JSON()); err != nil {
		return err
	}
	return nil
}

// verifyEventBy checks an event's signature by server.
func (s *Service) verifyEventBy(ctx context.Context, ev *event.Event, server string) error {
	sigs, err := ev.Signatures()
	if err != nil {
		return err
	}
	b, err := ev.SignedBytes()
	if err != nil {
		return err
	}
	for keyID, sig := range sigs[server] {
		pub, err := s.Keys.VerifyKey(ctx, server, keyID, s.cfg.Now(), false)
		if err == nil && signing.VerifyBytes(b, sig, pub) == nil {
			return nil
		}
	}
	return errors.New("no valid signature")
}

// strippedState is the room state shown to invitees.
func (s *Service) strippedState(ctx context.Context, roomID string) []any {
	out := []any{}
	for _, typ := range []string{event.TypeCreate, event.TypeJoinRules, "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"} {
		ev, err := s.locals.Rooms.StateEvent(ctx, roomID, typ, "")
		if err == nil && ev != nil {
			out = append(out, map[string]any{"type": ev.Type(), "state_key": "", "sender": ev.Sender(), "content": json.RawMessage(ev.Content())})
		}
	}
	return out
}

// GET /make_leave/{roomID}/{userID}
func (s *Service) serveMakeLeave(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID, userID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "userID")
	if u, err := id.ParseUserID(userID); err != nil || u.ServerName != origin {
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not leave for %q", origin, userID))
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
	tmpl, err := s.locals.Rooms.Template(ctx, roomID, room.Request{Sender: userID, Type: event.TypeMember, StateKey: &userID,
		Content: json.RawMessage(`{"membership":"leave"}`)})
	if errors.Is(err, room.ErrForbidden) {
		httpapi.Fail(w, r, httpapi.Forbidden("%s may not leave: %v", userID, err))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"room_version": v.ID, "event": templateOf(tmpl)})
}

// PUT /v2/send_leave/{roomID}/{eventID}
func (s *Service) serveSendLeave(w http.ResponseWriter, r *http.Request) { s.sendLeave(w, r, false) }

// PUT /v1/send_leave/{roomID}/{eventID}: the same, answered as [200, {}].
func (s *Service) serveSendLeaveV1(w http.ResponseWriter, r *http.Request) { s.sendLeave(w, r, true) }

func (s *Service) sendLeave(w http.ResponseWriter, r *http.Request, v1 bool) {
	ctx := r.Context()
	origin := Origin(ctx)
	roomID := httpapi.PathParam(r, "roomID")
	_, ev, body, ok := s.membershipPDU(w, r, "leave")
	if !ok {
		return
	}
	if _, err := s.locals.Rooms.Receive(ctx, origin, roomID, body); err != nil {
		switch {
		case errors.Is(err, room.ErrRejected):
			httpapi.Fail(w, r, httpapi.Forbidden("the leave is not allowed"))
		case errors.Is(err, room.ErrBadEvent):
			httpapi.Fail(w, r, httpapi.BadJSON("%v", err))
		default:
			httpapi.Fail(w, r, err)
		}
		return
	}
	s.relay(ctx, roomID, origin, ev)
	if v1 {
		httpapi.Respond(w, http.StatusOK, []any{http.StatusOK, struct{}{}})
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// relay queues a remote user's membership event, accepted through one of
// the make/send handshakes, for the room's other servers: the sender only
// relays our own users' events by itself.
func (s *Service) relay(ctx context.Context, roomID, origin string, ev *event.Event) {
	servers, err := s.locals.Rooms.Servers(ctx, roomID)
	if err != nil {
		return
	}
	var others []string
	for _, sv := range servers {
		if sv != origin && sv != s.cfg.ServerName {
			others = append(others, sv)
		}
	}
	if len(others) > 0 {
		_ = s.Sender.Queue(ctx, others, [][]byte{ev.JSON()}, nil)
	}
}

// Leave leaves a room we are not in — in practice, rejects a remote
// invite — through make_leave/send_leave at the inviting server.
func (r Remote) Leave(ctx context.Context, roomID, userID string, servers []string) error {
	return r.makeAndSend(ctx, "leave", roomID, userID, servers, json.RawMessage(`{}`))
}
