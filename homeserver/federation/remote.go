package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/signing"
)

// fetcher is room.Fetcher over the federation client: how the room writer
// asks other servers for events it lacks.
type fetcher struct{ c *Client }

func (f fetcher) Event(ctx context.Context, server, eventID string) (json.RawMessage, error) {
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := f.c.DoJSON(ctx, server, http.MethodGet, "/_matrix/federation/v1/event/"+url.PathEscape(eventID), nil, &resp, true); err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("%s answered %d PDUs for event %s", server, len(resp.PDUs), eventID)
	}
	return resp.PDUs[0], nil
}

func (f fetcher) MissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int) ([]json.RawMessage, error) {
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	body := map[string]any{"earliest_events": earliest, "latest_events": latest, "limit": limit, "min_depth": 0}
	if err := f.c.DoJSON(ctx, server, http.MethodPost, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID), body, &resp, true); err != nil {
		return nil, err
	}
	if len(resp.Events) > limit {
		resp.Events = resp.Events[:limit]
	}
	return resp.Events, nil
}

func (f fetcher) State(ctx context.Context, server, roomID, eventID string) (state, authChain []json.RawMessage, err error) {
	var resp struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	uri := "/_matrix/federation/v1/state/" + url.PathEscape(roomID) + "?event_id=" + url.QueryEscape(eventID)
	if err := f.c.DoJSON(ctx, server, http.MethodGet, uri, nil, &resp, true); err != nil {
		return nil, nil, err
	}
	return resp.PDUs, resp.AuthChain, nil
}

// Fetcher returns the room service's way to ask other servers for events.
func (s *Service) Fetcher() room.Fetcher { return fetcher{s.Client} }

// Remote is clientapi.Remote: local users reaching rooms on other servers.
type Remote struct{ s *Service }

// Remote returns the client API's access to remote rooms.
func (s *Service) Remote() Remote { return Remote{s} }

// ResolveAlias asks the alias's server (/query/directory).
func (r Remote) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	a, err := id.ParseRoomAlias(alias)
	if err != nil {
		return "", nil, httpapi.InvalidParam("invalid room alias %q", alias)
	}
	var resp struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err = r.s.Client.DoJSON(ctx, a.ServerName, http.MethodGet, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil, &resp, true)
	var re *RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return "", nil, httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return "", nil, httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "asking %s about %s failed", a.ServerName, alias)
	}
	if !id.ValidRoomID(resp.RoomID) {
		return "", nil, httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s answered an invalid room ID", a.ServerName)
	}
	servers := slices.DeleteFunc(resp.Servers, func(s string) bool { return !id.ValidServerName(s) })
	if !slices.Contains(servers, a.ServerName) {
		servers = append([]string{a.ServerName}, servers...)
	}
	return resp.RoomID, servers, nil
}

// Join joins a local user to a room through one of servers: make_join for
// a template, which we complete and sign, then send_join, whose answer (the
// room's state and auth chain) becomes our copy of the room.
func (r Remote) Join(ctx context.Context, roomID, userID string, servers []string, content json.RawMessage) error {
	return r.makeAndSend(ctx, "join", roomID, userID, servers, content)
}

func (r Remote) makeAndSend(ctx context.Context, membership, roomID, userID string, servers []string, content json.RawMessage) error {
	s := r.s
	if s.locals.Rooms == nil {
		return errors.New("federation: no room service")
	}
	if _, inviter, ok, err := s.locals.Rooms.RemoteInvite(ctx, roomID, userID); err == nil && ok && !slices.Contains(servers, inviter) {
		servers = append([]string{inviter}, servers...)
	}
	var tried []string
	var last error = httpapi.NotFound("no server to %s %s through", membership, roomID)
	if d := id.ServerOf(roomID); d != "" && !slices.Contains(servers, d) {
		servers = append(servers, d)
	}
	for _, server := range servers {
		if server == s.cfg.ServerName || slices.Contains(tried, server) || !id.ValidServerName(server) {
			continue
		}
		tried = append(tried, server)
		err := r.tryMembership(ctx, server, membership, roomID, userID, content)
		if err == nil {
			return nil
		}
		last = err
		var he *httpapi.Error
		if errors.As(err, &he) && he.Status == http.StatusForbidden {
			return err // the room said no; another server would too
		}
	}
	return last
}

// remoteFailure maps another server's refusal to the client's error.
func remoteFailure(server, what string, err error) error {
	var re *RemoteError
	if errors.As(err, &re) && re.Status >= 400 && re.Status < 500 {
		code := re.ErrCode
		if code == "" {
			code = "M_UNKNOWN"
		}
		return httpapi.Custom(re.Status, code, "%s refused %s: %s", server, what, re.Message)
	}
	return httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s via %s failed: %v", what, server, err)
}

func (r Remote) tryMembership(ctx context.Context, server, membership, roomID, userID string, content json.RawMessage) error {
	s := r.s
	q := url.Values{}
	if membership != "leave" {
		for _, v := range event.SupportedVersions() {
			q.Add("ver", v)
		}
	}
	uri := "/_matrix/federation/v1/make_" + membership + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID)
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	var tmpl struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	if err := s.Client.DoJSON(ctx, server, http.MethodGet, uri, nil, &tmpl, true); err != nil {
		return remoteFailure(server, "make_"+membership, err)
	}
	if tmpl.RoomVersion == "" {
		tmpl.RoomVersion = "1"
	}
	v, err := event.Version(tmpl.RoomVersion)
	if err != nil {
		return httpapi.UnsupportedRoomVersion("room %s has version %s, which this server does not support", roomID, tmpl.RoomVersion)
	}
	ev, err := completeTemplate(v, tmpl.Event, membership, roomID, userID, content, s.cfg.Now().UnixMilli(), s.cfg.ServerName, s.cfg.Key)
	if err != nil {
		return httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s sent an unusable make_%s template: %v", server, membership, err)
	}
	sendURI := "/_matrix/federation/v2/send_" + membership + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.ID())
	if membership != "join" {
		if membership == "knock" {
			sendURI = strings.Replace(sendURI, "/v2/", "/v1/", 1) // send_knock only has v1
		}
		var answer struct {
			KnockRoomState json.RawMessage `json:"knock_room_state"`
		}
		if err := s.Client.DoJSON(ctx, server, http.MethodPut, sendURI, ev.JSON(), &answer, true); err != nil {
			return remoteFailure(server, "send_"+membership, err)
		}
		return s.locals.Rooms.StoreOwnOutOfRoom(ctx, v, ev, server, answer.KnockRoomState)
	}
	var resp struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
		Event     json.RawMessage   `json:"event"`
	}
	if err := s.Client.DoJSON(ctx, server, http.MethodPut, sendURI, ev.JSON(), &resp, true); err != nil {
		return remoteFailure(server, "send_join", err)
	}
	if len(resp.Event) > 0 {
		// A restricted join comes back signed by the authorising server.
		signed, err := event.Parse(v, resp.Event)
		if err == nil && signed.ID() == ev.ID() {
			ev = signed
		}
	}
	err = s.locals.Rooms.JoinRemote(ctx, v, server, ev, resp.State, resp.AuthChain)
	if errors.Is(err, room.ErrBadEvent) || errors.Is(err, room.ErrRejected) {
		return httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "the room state %s sent does not hold up: %v", server, err)
	}
	return err
}

// completeTemplate turns a make_* template into our signed event, taking
// from it only what is the resident server's to choose (prev_events,
// auth_events, depth) and checking the rest is what we asked for.
func completeTemplate(v *event.RoomVersion, raw json.RawMessage, membership, roomID, userID string, content json.RawMessage, now int64, serverName string, key signing.Key) (*event.Event, error) {
	var t struct {
		Type       string          `json:"type"`
		StateKey   *string         `json:"state_key"`
		Sender     string          `json:"sender"`
		RoomID     string          `json:"room_id"`
		Content    json.RawMessage `json:"content"`
		PrevEvents []string        `json:"prev_events"`
		AuthEvents []string        `json:"auth_events"`
		Depth      json.Number     `json:"depth"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	if t.Type != event.TypeMember || t.StateKey == nil || *t.StateKey != userID || t.Sender != userID || t.RoomID != roomID {
		return nil, errors.New("template is not for this user and room")
	}
	depth, err := strconv.ParseInt(t.Depth.String(), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("template depth: %w", err)
	}
	var c map[string]any
	if err := json.Unmarshal(content, &c); err != nil || c == nil {
		c = map[string]any{}
	}
	c["membership"] = membership
	// The resident server may add join_authorised_via_users_server for a
	// restricted room; that one field is kept from its content.
	var tc map[string]json.RawMessage
	if json.Unmarshal(t.Content, &tc) == nil {
		if via, ok := tc["join_authorised_via_users_server"]; ok && membership == "join" {
			c["join_authorised_via_users_server"] = via
		}
	}
	body, _ := json.Marshal(c)
	p := event.Proto{Type: t.Type, StateKey: t.StateKey, Sender: userID, RoomID: roomID, Content: body,
		PrevEvents: t.PrevEvents, AuthEvents: t.AuthEvents, Depth: depth, OriginServerTS: now}
	return p.Build(v, serverName, key)
}

func (f fetcher) Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, v := range from {
		q.Add("v", v)
	}
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := f.c.DoJSON(ctx, server, http.MethodGet, "/_matrix/federation/v1/backfill/"+url.PathEscape(roomID)+"?"+q.Encode(), nil, &resp, true); err != nil {
		return nil, err
	}
	if len(resp.PDUs) > limit {
		resp.PDUs = resp.PDUs[:limit]
	}
	return resp.PDUs, nil
}

// Backfill fetches history of a room joined over federation.
func (r Remote) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	return r.s.locals.Rooms.Backfill(ctx, roomID, limit)
}

func (f fetcher) StateIDs(ctx context.Context, server, roomID, eventID string) (state, authChain []string, err error) {
	var resp struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	uri := "/_matrix/federation/v1/state_ids/" + url.PathEscape(roomID) + "?event_id=" + url.QueryEscape(eventID)
	if err := f.c.DoJSON(ctx, server, http.MethodGet, uri, nil, &resp, true); err != nil {
		return nil, nil, err
	}
	return resp.PDUIDs, resp.AuthChainIDs, nil
}
