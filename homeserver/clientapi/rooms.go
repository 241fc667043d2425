package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

func (a *API) roomRoutes(r chi.Router) {
	r.Post("/createRoom", noGuests(a.createRoom))
	r.Post("/join/{roomIDOrAlias}", a.joinRoomIDOrAlias)
	r.Post("/rooms/{roomID}/join", a.joinRoomID)
	r.Post("/knock/{roomIDOrAlias}", noGuests(a.knock))
	r.Post("/rooms/{roomID}/leave", a.leave)
	r.Post("/rooms/{roomID}/forget", a.forget)
	r.Post("/rooms/{roomID}/invite", noGuests(a.membershipChange("invite")))
	r.Post("/rooms/{roomID}/kick", noGuests(a.membershipChange("leave")))
	r.Post("/rooms/{roomID}/ban", noGuests(a.membershipChange("ban")))
	r.Post("/rooms/{roomID}/unban", noGuests(a.membershipChange("unban")))
	r.Get("/joined_rooms", a.joinedRooms)
	r.Get("/rooms/{roomID}/joined_members", a.joinedMembers)
	r.Get("/rooms/{roomID}/members", a.members)
	r.Get("/rooms/{roomID}/state", a.getState)
	r.Get("/rooms/{roomID}/state/{eventType}", a.getStateEvent)
	r.Get("/rooms/{roomID}/state/{eventType}/*", a.getStateEvent)
	r.Put("/rooms/{roomID}/state/{eventType}", a.putState)
	r.Put("/rooms/{roomID}/state/{eventType}/*", a.putState)
	r.Put("/directory/room/{alias}", noGuests(a.putAlias))
	r.Delete("/directory/room/{alias}", noGuests(a.deleteAlias))
	r.Get("/rooms/{roomID}/aliases", a.roomAliases)
	r.Post("/rooms/{roomID}/upgrade", noGuests(a.upgrade))
}

// roomErr maps room service errors to Matrix errors.
func roomErr(err error) error {
	var rule *auth.RuleError
	switch {
	case errors.Is(err, room.ErrNotFound):
		return httpapi.NotFound("room not found")
	case errors.Is(err, room.ErrUnknownEvent):
		return httpapi.NotFound("%v", err)
	case errors.As(err, &rule):
		return httpapi.Forbidden("%s", rule.Error())
	case errors.Is(err, room.ErrForbidden), errors.Is(err, auth.ErrForbidden):
		return httpapi.Forbidden("%v", err)
	case errors.Is(err, event.ErrTooLarge):
		return httpapi.TooLarge("%v", err)
	case errors.Is(err, event.ErrNotJSON), errors.Is(err, event.ErrMalformed):
		return httpapi.BadJSON("%v", err)
	case errors.Is(err, event.ErrUnsupportedRoomVersion):
		return httpapi.UnsupportedRoomVersion("%v", err)
	}
	return err
}

type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []stateEventInput `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
}

type stateEventInput struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func strp(s string) *string { return &s }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with maps of plain values
	}
	return b
}

func (a *API) createRoom(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	if err := a.limiter.allow("create", rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req createRoomRequest
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	vid := req.RoomVersion
	if vid == "" {
		vid = event.DefaultRoomVersion
	}
	v, err := event.Version(vid)
	if err != nil {
		httpapi.Fail(w, r, httpapi.UnsupportedRoomVersion("room version %q is not supported", vid))
		return
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		httpapi.Fail(w, r, httpapi.BadJSON("visibility must be public or private"))
		return
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	if preset != "private_chat" && preset != "public_chat" && preset != "trusted_private_chat" {
		httpapi.Fail(w, r, httpapi.BadJSON("unknown preset %q", preset))
		return
	}
	for _, u := range req.Invite {
		if _, err := id.ParseUserID(u); err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("invalid user ID %q in invite", u))
			return
		}
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + a.cfg.ServerName
		if _, err := id.ParseRoomAlias(alias); err != nil || strings.ContainsAny(req.RoomAliasName, ":# ") {
			httpapi.Fail(w, r, httpapi.InvalidParam("invalid room_alias_name"))
			return
		}
		if _, err := a.db.ResolveAlias(ctx, alias); err == nil {
			httpapi.Fail(w, r, httpapi.RoomInUse("room alias %s already exists", alias))
			return
		}
	}

	createContent := map[string]any{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			httpapi.Fail(w, r, httpapi.BadJSON("creation_content must be an object"))
			return
		}
	}
	createContent["room_version"] = v.ID
	if !v.ImplicitCreator {
		createContent["creator"] = rq.UserID
	}

	// Power levels: defaults, the trusted preset's invitees, then the override.
	users := map[string]any{}
	if !v.PrivilegedCreators {
		users[rq.UserID] = 100
	}
	if preset == "trusted_private_chat" {
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
	}
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]any
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			httpapi.Fail(w, r, httpapi.BadJSON("power_level_content_override must be an object"))
			return
		}
		for k, val := range override {
			pl[k] = val
		}
	}

	me := rq.UserID
	acct, _ := a.db.AccountByUserID(ctx, me)
	join := map[string]any{"membership": "join"}
	if acct != nil {
		if acct.DisplayName != "" {
			join["displayname"] = acct.DisplayName
		}
		if acct.AvatarURL != "" {
			join["avatar_url"] = acct.AvatarURL
		}
	}
	st := func(typ, sk string, content any) room.Request {
		var c json.RawMessage
		switch x := content.(type) {
		case json.RawMessage:
			c = x
		default:
			c = mustJSON(x)
		}
		return room.Request{Sender: me, Type: typ, StateKey: strp(sk), Content: c}
	}
	initial := []room.Request{st(event.TypeMember, me, join), st(event.TypePowerLevels, "", pl)}
	if alias != "" {
		initial = append(initial, st("m.room.canonical_alias", "", map[string]any{"alias": alias}))
	}
	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	initial = append(initial,
		st(event.TypeJoinRules, "", map[string]any{"join_rule": joinRule}),
		st(event.TypeHistoryVisibility, "", map[string]any{"history_visibility": "shared"}),
		st("m.room.guest_access", "", map[string]any{"guest_access": guest}))
	for _, s := range req.InitialState {
		if s.Type == "" || s.Type == event.TypeCreate || s.Type == event.TypeMember {
			httpapi.Fail(w, r, httpapi.BadJSON("initial_state may not contain %q events", s.Type))
			return
		}
		content := s.Content
		if len(content) == 0 {
			content = json.RawMessage("{}")
		}
		// A later entry for the same key replaces the preset's one.
		initial = slices.DeleteFunc(initial, func(q room.Request) bool {
			return q.Type == s.Type && q.StateKey != nil && *q.StateKey == s.StateKey && q.Type != event.TypePowerLevels
		})
		initial = append(initial, st(s.Type, s.StateKey, content))
	}
	if req.Name != nil {
		initial = append(initial, st("m.room.name", "", map[string]any{"name": *req.Name}))
	}
	if req.Topic != nil {
		initial = append(initial, st("m.room.topic", "", map[string]any{"topic": *req.Topic}))
	}
	var remoteInvites []string
	inviteContent := map[string]any{"membership": "invite"}
	if req.IsDirect {
		inviteContent["is_direct"] = true
	}
	for _, u := range req.Invite {
		if a.remote != nil && id.ServerOf(u) != a.cfg.ServerName {
			// Their server must countersign: invited once the room exists.
			remoteInvites = append(remoteInvites, u)
			continue
		}
		initial = append(initial, st(event.TypeMember, u, inviteContent))
	}

	roomID, err := a.rooms.CreateRoom(ctx, v, me, mustJSON(createContent), initial)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	for _, u := range remoteInvites {
		// The room exists whatever their servers answer; a failed invite
		// is logged, as the client cannot be told about it here.
		if err := a.remote.Invite(ctx, roomID, me, u, mustJSON(inviteContent)); err != nil {
			slog.Warn("inviting a remote user to a new room failed", "room", roomID, "user", u, "err", err)
		}
	}
	if alias != "" {
		if err := a.db.CreateAlias(ctx, alias, roomID, me); err != nil {
			slog.Warn("room created but alias taken meanwhile", "room", roomID, "alias", alias)
		}
	}
	if req.Visibility == "public" {
		if err := a.db.SetPublished(ctx, roomID, true); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// resolveRoom turns a room ID or alias into a room ID, and the servers to
// join it through when it is on other servers. requester is the signed-in
// user asking, or "".
func (a *API) resolveRoom(ctx context.Context, idOrAlias, requester string) (string, []string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		if !id.ValidRoomID(idOrAlias) {
			return "", nil, httpapi.InvalidParam("invalid room ID %q", idOrAlias)
		}
		return idOrAlias, nil, nil
	case strings.HasPrefix(idOrAlias, "#"):
		parsed, err := id.ParseRoomAlias(idOrAlias)
		if err != nil {
			return "", nil, httpapi.InvalidParam("invalid room alias %q", idOrAlias)
		}
		if parsed.ServerName != a.cfg.ServerName {
			if a.remote == nil {
				return "", nil, httpapi.NotFound("room alias %s not found", idOrAlias)
			}
			return a.remote.ResolveAlias(ctx, idOrAlias)
		}
		roomID, err := a.ResolveLocalAlias(ctx, idOrAlias, requester)
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, ErrNoSuchAlias) {
			return "", nil, httpapi.NotFound("room alias %s not found", idOrAlias)
		}
		return roomID, []string{a.cfg.ServerName}, err
	}
	return "", nil, httpapi.InvalidParam("%q is neither a room ID nor an alias", idOrAlias)
}

// profileContent adds the user's display name and avatar to a member event.
func (a *API) profileContent(ctx context.Context, userID string, c map[string]any) {
	acct, err := a.db.AccountByUserID(ctx, userID)
	if err != nil {
		return
	}
	if acct.DisplayName != "" {
		c["displayname"] = acct.DisplayName
	}
	if acct.AvatarURL != "" {
		c["avatar_url"] = acct.AvatarURL
	}
}

func (a *API) join(w http.ResponseWriter, r *http.Request, roomID string) {
	ctx := r.Context()
	rq := requester(r)
	if err := a.limiter.allow("join", rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if rq.IsGuest {
		ga, err := a.rooms.StateEvent(ctx, roomID, "m.room.guest_access", "")
		if err != nil {
			httpapi.Fail(w, r, roomErr(err))
			return
		}
		var c struct {
			GuestAccess string `json:"guest_access"`
		}
		if ga != nil {
			_ = json.Unmarshal(ga.Content(), &c)
		}
		if c.GuestAccess != "can_join" {
			httpapi.Fail(w, r, httpapi.GuestAccessForbidden())
			return
		}
	}
	if a.joinGate != nil {
		if err := a.joinGate(ctx, roomID, rq.UserID); err != nil {
			httpapi.Fail(w, r, roomErr(err))
			return
		}
	}
	if err := a.sendOwnMembership(ctx, roomID, rq.UserID, "join", req.Reason); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// sendOwnMembership changes the user's own membership (join, knock or
// leave). Joins and knocks carry the user's display name and avatar.
func (a *API) sendOwnMembership(ctx context.Context, roomID, userID, membership, reason string) error {
	content := map[string]any{"membership": membership}
	if reason != "" {
		content["reason"] = reason
	}
	if membership != "leave" {
		a.profileContent(ctx, userID, content)
	}
	_, err := a.rooms.Send(ctx, roomID, room.Request{Sender: userID, Type: event.TypeMember, StateKey: &userID, Content: mustJSON(content)})
	return roomErr(err)
}

func (a *API) joinRoomIDOrAlias(w http.ResponseWriter, r *http.Request) {
	roomID, servers, err := a.resolveRoom(r.Context(), httpapi.PathParam(r, "roomIDOrAlias"), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	servers = append(servers, r.URL.Query()["server_name"]...)
	servers = append(servers, r.URL.Query()["via"]...)
	if a.joinRemote(w, r, roomID, servers) {
		return
	}
	a.join(w, r, roomID)
}

// joinRemote joins a room this server is not in over federation, through
// servers (and the room ID's own server). It reports whether it answered.
func (a *API) joinRemote(w http.ResponseWriter, r *http.Request, roomID string, servers []string) bool {
	ctx := r.Context()
	if a.remote == nil {
		return false
	}
	if _, err := a.rooms.Version(ctx, roomID); err == nil {
		// A room we have but none of our users is in any more: our copy
		// is stale, so join through its servers as for a new room.
		inRoom, err := a.rooms.Servers(ctx, roomID)
		if err != nil || slices.Contains(inRoom, a.cfg.ServerName) || len(inRoom) == 0 {
			return false
		}
		servers = append(servers, inRoom...)
	} else if !errors.Is(err, room.ErrNotFound) {
		return false
	}
	rq := requester(r)
	if rq.IsGuest {
		httpapi.Fail(w, r, httpapi.GuestAccessForbidden())
		return true
	}
	if err := a.limiter.allow("join", rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return true
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return true
	}
	content := map[string]any{"membership": "join"}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	a.profileContent(ctx, rq.UserID, content)
	if err := a.remote.Join(ctx, roomID, rq.UserID, servers, mustJSON(content)); err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return true
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"room_id": roomID})
	return true
}

func (a *API) joinRoomID(w http.ResponseWriter, r *http.Request) {
	roomID := httpapi.PathParam(r, "roomID")
	if !id.ValidRoomID(roomID) {
		httpapi.Fail(w, r, httpapi.InvalidParam("invalid room ID"))
		return
	}
	if a.joinRemote(w, r, roomID, nil) {
		return
	}
	a.join(w, r, roomID)
}

func (a *API) knock(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID, servers, err := a.resolveRoom(ctx, httpapi.PathParam(r, "roomIDOrAlias"), rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if a.remote != nil {
		// A room this server is not in: knock through its servers.
		if _, err := a.rooms.Version(ctx, roomID); errors.Is(err, room.ErrNotFound) {
			servers = append(servers, r.URL.Query()["server_name"]...)
			servers = append(servers, r.URL.Query()["via"]...)
			content := map[string]any{"membership": "knock"}
			if req.Reason != "" {
				content["reason"] = req.Reason
			}
			a.profileContent(ctx, rq.UserID, content)
			if err := a.remote.Knock(ctx, roomID, rq.UserID, servers, mustJSON(content)); err != nil {
				httpapi.Fail(w, r, roomErr(err))
				return
			}
			httpapi.Respond(w, http.StatusOK, map[string]string{"room_id": roomID})
			return
		}
	}
	if err := a.sendOwnMembership(ctx, roomID, rq.UserID, "knock", req.Reason); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"room_id": roomID})
}

func (a *API) leave(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if a.remote != nil {
		// Rejecting an invite to a room this server is not in goes to
		// the inviting server.
		if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, room.ErrNotFound) {
			if err := a.remote.Leave(r.Context(), roomID, rq.UserID, nil); err != nil {
				httpapi.Fail(w, r, roomErr(err))
				return
			}
			httpapi.Respond(w, http.StatusOK, struct{}{})
			return
		}
	}
	if err := a.sendOwnMembership(r.Context(), roomID, rq.UserID, "leave", req.Reason); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) forget(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	m, err := a.rooms.Membership(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	if m == "join" || m == "invite" || m == "knock" {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusBadRequest, "M_UNKNOWN", "leave the room before forgetting it"))
		return
	}
	if err := a.db.Forget(ctx, rq.UserID, roomID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// membershipChange serves invite, kick, ban and unban: a member event about
// another user.
func (a *API) membershipChange(membership string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		rq := requester(r)
		roomID := httpapi.PathParam(r, "roomID")
		var req struct {
			UserID string `json:"user_id"`
			Reason string `json:"reason"`
		}
		if err := httpapi.Decode(r, &req); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if req.UserID == "" {
			httpapi.Fail(w, r, httpapi.MissingParam("user_id is required"))
			return
		}
		if _, err := id.ParseUserID(req.UserID); err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("invalid user_id"))
			return
		}
		target := membership
		if membership == "unban" {
			cur, err := a.rooms.Membership(ctx, roomID, req.UserID)
			if err != nil {
				httpapi.Fail(w, r, roomErr(err))
				return
			}
			if cur != "ban" {
				httpapi.Fail(w, r, httpapi.Forbidden("%s is not banned", req.UserID))
				return
			}
			target = "leave"
		}
		if membership == "leave" {
			// A kick applies only to someone in the room, invited or knocking.
			cur, err := a.rooms.Membership(ctx, roomID, req.UserID)
			if err != nil {
				httpapi.Fail(w, r, roomErr(err))
				return
			}
			if cur != "join" && cur != "invite" && cur != "knock" {
				httpapi.Fail(w, r, httpapi.Forbidden("%s is not in the room", req.UserID))
				return
			}
		}
		if membership == "invite" {
			if cur, err := a.rooms.Membership(ctx, roomID, req.UserID); err == nil && cur == "invite" {
				httpapi.Respond(w, http.StatusOK, struct{}{}) // already invited
				return
			}
		}
		content := map[string]any{"membership": target}
		if req.Reason != "" {
			content["reason"] = req.Reason
		}
		if target == "invite" {
			a.profileContent(ctx, req.UserID, content)
			if a.remote != nil && id.ServerOf(req.UserID) != a.cfg.ServerName {
				// The invitee's server countersigns the invite first.
				if err := a.remote.Invite(ctx, roomID, rq.UserID, req.UserID, mustJSON(content)); err != nil {
					httpapi.Fail(w, r, roomErr(err))
					return
				}
				httpapi.Respond(w, http.StatusOK, struct{}{})
				return
			}
		}
		if _, err := a.rooms.Send(ctx, roomID, room.Request{Sender: rq.UserID, Type: event.TypeMember, StateKey: &req.UserID, Content: mustJSON(content)}); err != nil {
			httpapi.Fail(w, r, roomErr(err))
			return
		}
		httpapi.Respond(w, http.StatusOK, struct{}{})
	}
}

func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request) {
	rooms, err := a.db.RoomsWithMembership(r.Context(), requester(r).UserID, "join")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if rooms == nil {
		rooms = []string{}
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"joined_rooms": rooms})
}

// requireMember checks the requester may read the room's state: a current
// member, or anyone when the room is world-readable.
func (a *API) requireMember(ctx context.Context, roomID, userID string) error {
	m, err := a.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return roomErr(err)
	}
	if m == "join" {
		return nil
	}
	hv, err := a.rooms.StateEvent(ctx, roomID, event.TypeHistoryVisibility, "")
	if err != nil {
		return roomErr(err)
	}
	if hv != nil && strings.Contains(string(hv.Content()), `"history_visibility":"world_readable"`) {
		return nil
	}
	return httpapi.Forbidden("you are not a member of this room")
}

func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	if err := a.requireMember(ctx, roomID, requester(r).UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	state, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	joined := map[string]any{}
	for _, ev := range state {
		if ev.Type() != event.TypeMember || room.MembershipOf(ev) != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		m := map[string]any{}
		if c.DisplayName != nil {
			m["display_name"] = *c.DisplayName
		}
		if c.AvatarURL != nil {
			m["avatar_url"] = *c.AvatarURL
		}
		joined[*ev.StateKey()] = m
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"joined": joined})
}

func (a *API) members(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	q := r.URL.Query()
	state, err := a.visibleState(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var members []*event.Event
	if at := q.Get("at"); at != "" {
		pos, err := parseStreamToken(at)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if members, err = a.rooms.MembersAt(ctx, roomID, pos); err != nil {
			httpapi.Fail(w, r, roomErr(err))
			return
		}
	} else {
		for _, ev := range state {
			if ev.Type() == event.TypeMember {
				members = append(members, ev)
			}
		}
	}
	want, notWant := q.Get("membership"), q.Get("not_membership")
	out := []event.ClientEvent{}
	for _, ev := range members {
		m := room.MembershipOf(ev)
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		out = append(out, ev.Client())
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"chunk": out})
}

// visibleState returns the room state the user may see: the current state
// for members (and for anyone in a world-readable room), the state when they
// left for former members.
func (a *API) visibleState(ctx context.Context, roomID, userID string) ([]*event.Event, error) {
	m, err := a.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return nil, roomErr(err)
	}
	if m == "join" {
		st, err := a.rooms.CurrentState(ctx, roomID)
		return st, roomErr(err)
	}
	if err := a.requireMember(ctx, roomID, userID); err == nil {
		st, err := a.rooms.CurrentState(ctx, roomID)
		return st, roomErr(err)
	}
	if m == "leave" || m == "ban" {
		st, err := a.rooms.StateAfterMembership(ctx, roomID, userID)
		return st, roomErr(err)
	}
	return nil, httpapi.Forbidden("you are not a member of this room")
}

func (a *API) getState(w http.ResponseWriter, r *http.Request) {
	state, err := a.visibleState(r.Context(), httpapi.PathParam(r, "roomID"), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := make([]event.ClientEvent, len(state))
	for i, ev := range state {
		out[i] = ev.Client()
	}
	httpapi.Respond(w, http.StatusOK, out)
}

// stateKeyParam reads the optional state key after the event type (it may
// contain slashes).
func stateKeyParam(r *http.Request) string {
	return httpapi.PathParam(r, "*")
}

func (a *API) getStateEvent(w http.ResponseWriter, r *http.Request) {
	state, err := a.visibleState(r.Context(), httpapi.PathParam(r, "roomID"), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	typ, sk := httpapi.PathParam(r, "eventType"), stateKeyParam(r)
	for _, ev := range state {
		if ev.Type() == typ && ev.StateKeyEquals(sk) {
			if r.URL.Query().Get("format") == "event" {
				httpapi.Respond(w, http.StatusOK, ev.Client())
				return
			}
			httpapi.RespondRaw(w, http.StatusOK, ev.Content())
			return
		}
	}
	httpapi.Fail(w, r, httpapi.NotFound("no %s state with key %q", typ, sk))
}

func (a *API) putState(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	roomID := httpapi.PathParam(r, "roomID")
	typ, sk := httpapi.PathParam(r, "eventType"), stateKeyParam(r)
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
	if rq.IsGuest && typ != event.TypeMember {
		httpapi.Fail(w, r, httpapi.GuestAccessForbidden())
		return
	}
	if typ == event.TypeCreate {
		httpapi.Fail(w, r, httpapi.Forbidden("the create event cannot be replaced"))
		return
	}
	if typ == "m.room.canonical_alias" {
		if err := a.checkCanonicalAlias(ctx, roomID, obj); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	res, err := a.rooms.Send(ctx, roomID, room.Request{Sender: rq.UserID, Type: typ, StateKey: &sk, Content: body})
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"event_id": res.Event.ID()})
}

// checkCanonicalAlias enforces the spec: the aliases must be valid and, when
// local, point to this room.
func (a *API) checkCanonicalAlias(ctx context.Context, roomID string, obj map[string]json.RawMessage) error {
	var aliases []string
	if raw, ok := obj["alias"]; ok && string(raw) != "null" {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return httpapi.BadJSON("alias must be a string")
		}
		aliases = append(aliases, s)
	}
	if raw, ok := obj["alt_aliases"]; ok {
		var alts []string
		if json.Unmarshal(raw, &alts) != nil {
			return httpapi.BadJSON("alt_aliases must be an array of strings")
		}
		aliases = append(aliases, alts...)
	}
	for _, al := range aliases {
		parsed, err := id.ParseRoomAlias(al)
		if err != nil {
			return httpapi.Custom(http.StatusBadRequest, "M_INVALID_PARAM", "invalid alias %q", al)
		}
		if parsed.ServerName == a.cfg.ServerName {
			target, err := a.db.ResolveAlias(ctx, al)
			if err != nil || target != roomID {
				return httpapi.Custom(http.StatusBadRequest, "M_BAD_ALIAS", "alias %s does not point to this room", al)
			}
		}
	}
	return nil
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request) {
	alias := httpapi.PathParam(r, "alias")
	asker := ""
	if rq, ok := a.optionalRequester(r); ok && !rq.IsGuest {
		asker = rq.UserID
	}
	roomID, servers, err := a.resolveRoom(r.Context(), alias, asker)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
}

func (a *API) putAlias(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	alias := httpapi.PathParam(r, "alias")
	parsed, err := id.ParseRoomAlias(alias)
	if err != nil {
		httpapi.Fail(w, r, httpapi.InvalidParam("invalid room alias"))
		return
	}
	if parsed.ServerName != a.cfg.ServerName {
		httpapi.Fail(w, r, httpapi.InvalidParam("aliases of other servers cannot be created here"))
		return
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !id.ValidRoomID(req.RoomID) {
		httpapi.Fail(w, r, httpapi.InvalidParam("invalid room_id"))
		return
	}
	if err := a.requireJoined(ctx, req.RoomID, requester(r).UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := a.db.CreateAlias(ctx, alias, req.RoomID, requester(r).UserID); err != nil {
		if errors.Is(err, storage.ErrExists) {
			httpapi.Fail(w, r, httpapi.Custom(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias))
			return
		}
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) requireJoined(ctx context.Context, roomID, userID string) error {
	m, err := a.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return roomErr(err)
	}
	if m != "join" {
		return httpapi.Forbidden("you are not joined to this room")
	}
	return nil
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	alias := httpapi.PathParam(r, "alias")
	roomID, creator, err := a.db.AliasCreator(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("room alias %s not found", alias))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if creator != rq.UserID && !rq.IsAdmin {
		pl, err := a.rooms.PowerLevels(ctx, roomID)
		if err != nil || pl.UserLevel(rq.UserID) < pl.EventLevel("m.room.canonical_alias", true) {
			httpapi.Fail(w, r, httpapi.Forbidden("only the alias's creator or a room moderator may delete it"))
			return
		}
	}
	if err := a.db.DeleteAlias(ctx, alias); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) roomAliases(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	if err := a.requireMember(ctx, roomID, requester(r).UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	aliases, err := a.db.RoomAliases(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if aliases == nil {
		aliases = []string{}
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"aliases": aliases})
}

// upgrade replaces a room by a new one of another version: the new room
// copies the important state and points back to the old one, and the old
// room gets a tombstone (spec "Room Upgrades").
func (a *API) upgrade(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	oldID := httpapi.PathParam(r, "roomID")
	var req struct {
		NewVersion string `json:"new_version"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	v, err := event.Version(req.NewVersion)
	if err != nil {
		httpapi.Fail(w, r, httpapi.UnsupportedRoomVersion("room version %q is not supported", req.NewVersion))
		return
	}
	pl, err := a.rooms.PowerLevels(ctx, oldID)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	if err := a.requireJoined(ctx, oldID, rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if pl.UserLevel(rq.UserID) < pl.EventLevel("m.room.tombstone", true) {
		httpapi.Fail(w, r, httpapi.Forbidden("you may not upgrade this room"))
		return
	}
	state, err := a.rooms.CurrentState(ctx, oldID)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	last, err := a.rooms.LatestEventID(ctx, oldID)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	createContent := map[string]any{"room_version": v.ID, "predecessor": map[string]any{"room_id": oldID, "event_id": last}}
	if !v.ImplicitCreator {
		createContent["creator"] = rq.UserID
	}
	me := rq.UserID
	join := map[string]any{"membership": "join"}
	a.profileContent(ctx, me, join)
	initial := []room.Request{{Sender: me, Type: event.TypeMember, StateKey: strp(me), Content: mustJSON(join)}}
	copied := []string{event.TypePowerLevels, event.TypeJoinRules, event.TypeHistoryVisibility, "m.room.guest_access",
		"m.room.name", "m.room.topic", "m.room.avatar", "m.room.encryption", "m.room.server_acl", "m.room.canonical_alias"}
	for _, ev := range state {
		if !slices.Contains(copied, ev.Type()) || !ev.StateKeyEquals("") {
			continue
		}
		content := json.RawMessage(ev.Content())
		if ev.Type() == event.TypePowerLevels {
			content = upgradedPowerLevels(ev.Content(), me, v)
		}
		initial = append(initial, room.Request{Sender: me, Type: ev.Type(), StateKey: strp(""), Content: content})
	}
	newID, err := a.rooms.CreateRoom(ctx, v, me, mustJSON(createContent), initial)
	if err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	tomb := mustJSON(map[string]any{"body": "This room has been replaced", "replacement_room": newID})
	if _, err := a.rooms.Send(ctx, oldID, room.Request{Sender: me, Type: "m.room.tombstone", StateKey: strp(""), Content: tomb}); err != nil {
		httpapi.Fail(w, r, roomErr(err))
		return
	}
	// Point local aliases at the new room.
	aliases, _ := a.db.RoomAliases(ctx, oldID)
	for _, al := range aliases {
		if err := a.db.DeleteAlias(ctx, al); err == nil {
			_ = a.db.CreateAlias(ctx, al, newID, me)
		}
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"replacement_room": newID})
}

// upgradedPowerLevels copies power levels into a new room, making the
// upgrader 100 (or, in v12, leaving creators out of users).
func upgradedPowerLevels(content []byte, upgrader string, v *event.RoomVersion) json.RawMessage {
	var pl map[string]any
	if json.Unmarshal(content, &pl) != nil {
		pl = map[string]any{}
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	if v.PrivilegedCreators {
		delete(users, upgrader)
	} else {
		users[upgrader] = 100
	}
	pl["users"] = users
	return mustJSON(pl)
}

// leaveAllRooms makes a deactivated user leave every room they are in or
// invited to. Failures are logged: the account is already deactivated.
func (a *API) leaveAllRooms(ctx context.Context, userID string) {
	rooms, err := a.db.RoomsWithMembership(ctx, userID, "join", "invite", "knock")
	if err != nil {
		slog.Error("listing rooms of a deactivated user", "user", userID, "err", err)
		return
	}
	leave := mustJSON(map[string]string{"membership": "leave"})
	for _, roomID := range rooms {
		if _, err := a.rooms.Send(ctx, roomID, room.Request{Sender: userID, Type: event.TypeMember, StateKey: &userID, Content: leave}); err != nil {
			slog.Warn("deactivated user could not leave a room", "user", userID, "room", roomID, "err", err)
		}
	}
}
