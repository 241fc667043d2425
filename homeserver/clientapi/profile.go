package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Profile fields are short: the spec leaves the bound to servers.
const (
	maxDisplayName = 256
	maxAvatarURL   = 1024
)

// publicRoutes are the lookups the spec serves without an access token.
func (a *API) publicRoutes(r chi.Router) {
	r.Get("/directory/room/{alias}", a.getAlias)
	r.Get("/profile/{userID}", a.getProfile)
	r.Get("/profile/{userID}/{field}", a.getProfileField)
}

func (a *API) authedProfileRoutes(r chi.Router) {
	r.Put("/profile/{userID}/{field}", a.putProfileField)
	r.Post("/user_directory/search", a.searchUsers)
}

func (a *API) profileOf(ctx context.Context, userID string) (*storage.Account, error) {
	u, err := id.ParseUserID(userID)
	if err != nil {
		return nil, httpapi.InvalidParam("invalid user ID")
	}
	if u.ServerName != a.cfg.ServerName {
		if a.remoteProfile == nil {
			return nil, httpapi.NotFound("profile not found")
		}
		dn, av, err := a.remoteProfile(ctx, userID)
		if err != nil {
			return nil, err
		}
		return &storage.Account{UserID: userID, DisplayName: dn, AvatarURL: av}, nil
	}
	acct, err := a.db.AccountByUserID(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acct.Deactivated) {
		return nil, httpapi.NotFound("profile not found")
	}
	return acct, err
}

// RemoteProfile asks a remote user's server for their profile. Its errors
// reach the client as they are, so it returns *httpapi.Error values.
type RemoteProfile func(ctx context.Context, userID string) (displayName, avatarURL string, err error)

// SetRemoteProfile installs federation's profile lookup.
func (a *API) SetRemoteProfile(f RemoteProfile) { a.remoteProfile = f }

func profileJSON(acct *storage.Account) map[string]any {
	m := map[string]any{}
	if acct.DisplayName != "" {
		m["displayname"] = acct.DisplayName
	}
	if acct.AvatarURL != "" {
		m["avatar_url"] = acct.AvatarURL
	}
	return m
}

func (a *API) getProfile(w http.ResponseWriter, r *http.Request) {
	acct, err := a.profileOf(r.Context(), httpapi.PathParam(r, "userID"))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, profileJSON(acct))
}

func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) {
	field := httpapi.PathParam(r, "field")
	if field != "displayname" && field != "avatar_url" {
		httpapi.Fail(w, r, httpapi.NotFound("unknown profile field %q", field))
		return
	}
	acct, err := a.profileOf(r.Context(), httpapi.PathParam(r, "userID"))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	m := profileJSON(acct)
	if _, ok := m[field]; !ok {
		httpapi.Fail(w, r, httpapi.NotFound("%s is not set", field))
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{field: m[field]})
}

func (a *API) putProfileField(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	userID, field := httpapi.PathParam(r, "userID"), httpapi.PathParam(r, "field")
	if userID != rq.UserID {
		httpapi.Fail(w, r, httpapi.Forbidden("you can only change your own profile"))
		return
	}
	if field != "displayname" && field != "avatar_url" {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusBadRequest, "M_UNRECOGNIZED", "unknown profile field %q", field))
		return
	}
	var body map[string]json.RawMessage
	if err := httpapi.Decode(r, &body); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var value string
	if raw, ok := body[field]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &value); err != nil {
			httpapi.Fail(w, r, httpapi.BadJSON("%s must be a string", field))
			return
		}
	}
	var dn, av *string
	switch field {
	case "displayname":
		if len(value) > maxDisplayName {
			httpapi.Fail(w, r, httpapi.TooLarge("displayname is longer than %d bytes", maxDisplayName))
			return
		}
		dn = &value
	case "avatar_url":
		if value != "" && !strings.HasPrefix(value, "mxc://") {
			httpapi.Fail(w, r, httpapi.InvalidParam("avatar_url must be an mxc:// URI"))
			return
		}
		if len(value) > maxAvatarURL {
			httpapi.Fail(w, r, httpapi.TooLarge("avatar_url is longer than %d bytes", maxAvatarURL))
			return
		}
		av = &value
	}
	if err := a.db.SetProfile(ctx, rq.UserID, dn, av); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	a.propagateProfile(context.WithoutCancel(ctx), rq.UserID)
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// propagateProfile updates the user's member event in every joined room,
// as the spec asks, so other members see the new name and avatar.
func (a *API) propagateProfile(ctx context.Context, userID string) {
	rooms, err := a.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		slog.Error("listing rooms for a profile change", "user", userID, "err", err)
		return
	}
	for _, roomID := range rooms {
		cur, err := a.rooms.StateEvent(ctx, roomID, event.TypeMember, userID)
		if err != nil || cur == nil {
			continue
		}
		content := map[string]any{}
		_ = json.Unmarshal(cur.Content(), &content)
		delete(content, "displayname")
		delete(content, "avatar_url")
		delete(content, "reason")
		a.profileContent(ctx, userID, content)
		if _, err := a.rooms.Send(ctx, roomID, room.Request{Sender: userID, Type: event.TypeMember, StateKey: &userID, Content: mustJSON(content)}); err != nil {
			slog.Warn("profile change not propagated to a room", "user", userID, "room", roomID, "err", err)
		}
	}
}

func (a *API) searchUsers(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SearchTerm string `json:"search_term"`
		Limit      *int   `json:"limit"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.SearchTerm == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("search_term is required"))
		return
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			httpapi.Fail(w, r, httpapi.InvalidParam("limit must not be negative"))
			return
		}
		limit = min(*req.Limit, 100)
	}
	users, err := a.db.SearchUsers(r.Context(), requester(r).UserID, req.SearchTerm, limit+1)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	limited := len(users) > limit
	if limited {
		users = users[:limit]
	}
	results := make([]map[string]any, 0, len(users))
	for _, u := range users {
		m := map[string]any{"user_id": u.UserID}
		if u.DisplayName != "" {
			m["display_name"] = u.DisplayName
		}
		if u.AvatarURL != "" {
			m["avatar_url"] = u.AvatarURL
		}
		results = append(results, m)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}
