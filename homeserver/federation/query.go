package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/clientapi"
	"plaza/homeserver/e2ee"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// maxQueryBody bounds the bodies of key queries and claims.
const maxQueryBody = 512 << 10

// QueryRoutes adds the authenticated query endpoints: profiles, aliases,
// devices and E2EE keys of this server's users, the public room directory
// and space hierarchies.
func (s *Service) QueryRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.Authenticate)
		r.Get("/_matrix/federation/v1/query/profile", s.queryProfile)
		r.Get("/_matrix/federation/v1/query/directory", s.queryDirectory)
		r.Get("/_matrix/federation/v1/user/devices/{userID}", s.userDevices)
		r.Post("/_matrix/federation/v1/user/keys/query", s.userKeysQuery)
		r.Post("/_matrix/federation/v1/user/keys/claim", s.userKeysClaim)
	})
	s.DirectoryRoutes(r)
}

// localUser checks that userID is a user of this server.
func (s *Service) localUser(userID string) error {
	u, err := id.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("%q is not a user ID", userID)
	}
	if u.ServerName != s.cfg.ServerName {
		return httpapi.InvalidParam("%s is not a user of this server", userID)
	}
	return nil
}

// GET /query/profile?user_id=&field=
func (s *Service) queryProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	if err := s.localUser(userID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if field != "" && field != "displayname" && field != "avatar_url" {
		httpapi.Fail(w, r, httpapi.InvalidParam("unknown profile field %q", field))
		return
	}
	acct, err := s.db.AccountByUserID(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acct.Deactivated) {
		httpapi.Fail(w, r, httpapi.NotFound("no such user"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := map[string]string{}
	if acct.DisplayName != "" && field != "avatar_url" {
		out["displayname"] = acct.DisplayName
	}
	if acct.AvatarURL != "" && field != "displayname" {
		out["avatar_url"] = acct.AvatarURL
	}
	httpapi.Respond(w, http.StatusOK, out)
}

// GET /query/directory?room_alias=
func (s *Service) queryDirectory(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	alias := r.URL.Query().Get("room_alias")
	a, err := id.ParseRoomAlias(alias)
	if err != nil {
		httpapi.Fail(w, r, httpapi.InvalidParam("%q is not a room alias", alias))
		return
	}
	if a.ServerName != s.cfg.ServerName {
		httpapi.Fail(w, r, httpapi.NotFound("%s is not an alias of this server", alias))
		return
	}
	if s.locals.Client == nil {
		httpapi.Fail(w, r, httpapi.NotFound("room alias not found"))
		return
	}
	// Through the alias resolver, so rooms made on demand answer too.
	roomID, err := s.locals.Client.ResolveLocalAlias(ctx, alias, "")
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, clientapi.ErrNoSuchAlias) {
		httpapi.Fail(w, r, httpapi.NotFound("room alias not found"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	servers := []string{s.cfg.ServerName}
	others, err := s.Sender.RoomServers(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	servers = append(servers, others...)
	httpapi.Respond(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
}

// GET /user/devices/{userID}
func (s *Service) userDevices(w http.ResponseWriter, r *http.Request) {
	userID := httpapi.PathParam(r, "userID")
	if err := s.localUser(userID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if s.locals.E2EE == nil {
		httpapi.Fail(w, r, httpapi.NotFound("no such user"))
		return
	}
	devices, master, selfSigning, streamID, err := s.locals.E2EE.UserDevices(r.Context(), userID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := map[string]any{"user_id": userID, "stream_id": streamID, "devices": devices}
	if master != nil {
		out["master_key"] = master
	}
	if selfSigning != nil {
		out["self_signing_key"] = selfSigning
	}
	httpapi.Respond(w, http.StatusOK, out)
}

// POST /user/keys/query
func (s *Service) userKeysQuery(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxQueryBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("device_keys is required"))
		return
	}
	if s.locals.E2EE == nil {
		httpapi.Respond(w, http.StatusOK, map[string]any{"device_keys": map[string]any{}})
		return
	}
	keys, err := s.locals.E2EE.LocalKeys(r.Context(), req.DeviceKeys)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"device_keys": keys.DeviceKeys, "master_keys": keys.MasterKeys,
		"self_signing_keys": keys.SelfSigningKeys})
}

// POST /user/keys/claim
func (s *Service) userKeysClaim(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxQueryBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("one_time_keys is required"))
		return
	}
	if s.locals.E2EE == nil {
		httpapi.Respond(w, http.StatusOK, map[string]any{"one_time_keys": map[string]any{}})
		return
	}
	keys, err := s.locals.E2EE.ClaimLocalKeys(r.Context(), req.OneTimeKeys)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"one_time_keys": keys})
}

// QueryKeys asks server for its users' device and cross-signing keys
// (e2ee's client-side /keys/query). What the answer says about users we did
// not ask about, or of other servers, is dropped, as are device keys whose
// JSON names another user or device than the one they are filed under.
func (o outbound) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*e2ee.RemoteKeys, error) {
	var resp struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}
	if err := o.s.Client.DoJSON(ctx, server, "POST", "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": deviceKeys}, &resp, true); err != nil {
		return nil, err
	}
	out := &e2ee.RemoteKeys{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}}
	for u, devs := range resp.DeviceKeys {
		if _, asked := deviceKeys[u]; !asked || id.ServerOf(u) != server {
			continue
		}
		out.DeviceKeys[u] = map[string]json.RawMessage{}
		for dev, k := range devs {
			var named struct {
				UserID   string `json:"user_id"`
				DeviceID string `json:"device_id"`
			}
			if json.Unmarshal(k, &named) == nil && named.UserID == u && named.DeviceID == dev {
				out.DeviceKeys[u][dev] = k
			}
		}
	}
	for u, k := range resp.MasterKeys {
		if _, asked := deviceKeys[u]; asked && id.ServerOf(u) == server {
			out.MasterKeys[u] = k
		}
	}
	for u, k := range resp.SelfSigningKeys {
		if _, asked := deviceKeys[u]; asked && id.ServerOf(u) == server {
			out.SelfSigningKeys[u] = k
		}
	}
	return out, nil
}

// ClaimKeys claims one-time keys of server's users' devices (e2ee's
// client-side /keys/claim).
func (o outbound) ClaimKeys(ctx context.Context, server string, claims map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var resp struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := o.s.Client.DoJSON(ctx, server, "POST", "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": claims}, &resp, true); err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for u, devs := range resp.OneTimeKeys {
		if _, asked := claims[u]; asked && id.ServerOf(u) == server {
			out[u] = devs
		}
	}
	return out, nil
}

// QueryProfile asks the user's server for their profile (field "" for all
// of it).
func (s *Service) QueryProfile(ctx context.Context, userID, field string) (displayName, avatarURL string, err error) {
	server := id.ServerOf(userID)
	if server == "" {
		return "", "", httpapi.InvalidParam("%q is not a user ID", userID)
	}
	uri := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(userID)
	if field != "" {
		uri += "&field=" + url.QueryEscape(field)
	}
	var resp struct {
		DisplayName *string `json:"displayname"`
		AvatarURL   *string `json:"avatar_url"`
	}
	if err := s.Client.DoJSON(ctx, server, "GET", uri, nil, &resp, true); err != nil {
		return "", "", fmt.Errorf("profile of %s: %w", userID, err)
	}
	if resp.DisplayName != nil {
		displayName = *resp.DisplayName
	}
	if resp.AvatarURL != nil {
		avatarURL = *resp.AvatarURL
	}
	return displayName, avatarURL, nil
}

// profileTimeout bounds a client's wait for a remote profile.
const profileTimeout = 10 * time.Second

// ProfileForClient is QueryProfile for the client API's GET /profile: the
// remote server's 404 stays a 404, and a server that cannot be reached or
// answers nonsense is a 502, never a 500 of ours.
func (s *Service) ProfileForClient(ctx context.Context, userID string) (displayName, avatarURL string, err error) {
	ctx, cancel := context.WithTimeout(ctx, profileTimeout)
	defer cancel()
	dn, av, err := s.QueryProfile(ctx, userID, "")
	var re *RemoteError
	switch {
	case err == nil:
		return dn, av, nil
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		return "", "", httpapi.NotFound("profile not found")
	default:
		var he *httpapi.Error
		if errors.As(err, &he) {
			return "", "", err
		}
		return "", "", httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "the user's server could not be asked: %v", err)
	}
}
