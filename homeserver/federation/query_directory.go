package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
)

// Directory limits: a page of /publicRooms, and the children one
// /hierarchy answer describes.
const (
	defaultPublicRoomsLimit = 100
	maxPublicRoomsLimit     = 500
	maxHierarchyChildren    = 500
)

// DirectoryRoutes adds the authenticated public room directory and space
// hierarchy endpoints.
func (s *Service) DirectoryRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.Authenticate)
		r.Get("/_matrix/federation/v1/publicRooms", s.getPublicRooms)
		r.Post("/_matrix/federation/v1/publicRooms", s.postPublicRooms)
		r.Get("/_matrix/federation/v1/hierarchy/{roomID}", s.getHierarchy)
	})
}

// roomSummary is a room as the directory and the hierarchy describe it
// (the spec's PublicRoomsChunk).
type roomSummary struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
}

// summarize reads a room's summary from its current state.
func (s *Service) summarize(ctx context.Context, roomID string) (*roomSummary, error) {
	rooms := s.locals.Rooms
	str := func(typ, field string) (string, error) {
		ev, err := rooms.StateEvent(ctx, roomID, typ, "")
		if err != nil || ev == nil {
			return "", err
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(ev.Content(), &c) != nil {
			return "", nil
		}
		var v string
		_ = json.Unmarshal(c[field], &v) // not a string: as if absent
		return v, nil
	}
	sum := &roomSummary{RoomID: roomID}
	var hv, guests string
	for _, f := range []struct {
		typ, field string
		dst        *string
	}{
		{"m.room.name", "name", &sum.Name},
		{"m.room.topic", "topic", &sum.Topic},
		{"m.room.canonical_alias", "alias", &sum.CanonicalAlias},
		{"m.room.avatar", "url", &sum.AvatarURL},
		{"m.room.join_rules", "join_rule", &sum.JoinRule},
		{"m.room.create", "type", &sum.RoomType},
		{"m.room.history_visibility", "history_visibility", &hv},
		{"m.room.guest_access", "guest_access", &guests},
	} {
		v, err := str(f.typ, f.field)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	n, err := rooms.JoinedCount(ctx, roomID)
	if err != nil {
		return nil, err
	}
	sum.NumJoinedMembers, sum.WorldReadable, sum.GuestCanJoin = n, hv == "world_readable", guests == "can_join"
	return sum, nil
}

// publicRoomsQuery is a directory request, from the query string (GET) or
// the body (POST).
type publicRoomsQuery struct {
	Limit  *int   `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term,omitempty"`
		RoomTypes         []*string `json:"room_types,omitempty"` // null stands for rooms without a type
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string `json:"third_party_instance_id,omitempty"`
}

func (s *Service) getPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsQuery
	if err := parsePublicRoomsQuery(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.publicRooms(w, r, req)
}

func (s *Service) postPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsQuery
	if err := httpapi.DecodeLimit(r, &req, maxQueryBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.publicRooms(w, r, req)
}

// publicRooms answers a directory page.
func (s *Service) publicRooms(w http.ResponseWriter, r *http.Request, req publicRoomsQuery) {
	out, err := s.localPublicRooms(r.Context(), req)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, out)
}

// localPublicRooms is a page of this server's directory. Rooms are ordered
// by joined members, most first; since is "n<offset>" or "p<offset>".
func (s *Service) localPublicRooms(ctx context.Context, req publicRoomsQuery) (map[string]any, error) {
	limit := defaultPublicRoomsLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httpapi.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, maxPublicRoomsLimit)
		if limit == 0 {
			limit = defaultPublicRoomsLimit
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(req.Since[1:])
		if (req.Since[0] != 'n' && req.Since[0] != 'p') || err != nil || n < 0 {
			return nil, httpapi.InvalidParam("since is not a token this server gave")
		}
		offset = n
	}
	if req.ThirdPartyInstanceID != "" {
		// Plaza bridges no other networks.
		return map[string]any{"chunk": []any{}, "total_room_count_estimate": 0}, nil
	}
	all, err := s.publishedSummaries(ctx)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(req.Filter.GenericSearchTerm)
	matching := all[:0]
	for _, sum := range all {
		if term != "" && !strings.Contains(strings.ToLower(sum.Name+"\x00"+sum.Topic+"\x00"+sum.CanonicalAlias), term) {
			continue
		}
		if req.Filter.RoomTypes != nil && !slices.ContainsFunc(req.Filter.RoomTypes, func(t *string) bool {
			return (t == nil && sum.RoomType == "") || (t != nil && *t == sum.RoomType)
		}) {
			continue
		}
		matching = append(matching, sum)
	}
	out := map[string]any{"total_room_count_estimate": len(matching)}
	offset = min(offset, len(matching))
	end := min(offset+limit, len(matching))
	out["chunk"] = matching[offset:end]
	if end < len(matching) {
		out["next_batch"] = "n" + strconv.Itoa(end)
	}
	if offset > 0 {
		out["prev_batch"] = "p" + strconv.Itoa(max(offset-limit, 0))
	}
	return out, nil
}

// publicRoomsTimeout bounds a client's wait for another server's directory.
const publicRoomsTimeout = 20 * time.Second

// ClientPublicRooms serves the client API's GET and POST /publicRooms:
// this server's directory, or with ?server= another server's, asked over
// federation. Mount it where the client API is; POST needs an
// authenticated user, GET does not.
func (s *Service) ClientPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsQuery
	if r.Method == http.MethodPost {
		if err := httpapi.DecodeLimit(r, &req, maxQueryBody); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	} else if err := parsePublicRoomsQuery(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	server := r.URL.Query().Get("server")
	if server == "" || server == s.cfg.ServerName {
		s.publicRooms(w, r, req)
		return
	}
	if !id.ValidServerName(server) {
		httpapi.Fail(w, r, httpapi.InvalidParam("%q is not a server name", server))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), publicRoomsTimeout)
	defer cancel()
	var page json.RawMessage
	err := s.Client.DoJSON(ctx, server, "POST", "/_matrix/federation/v1/publicRooms", req, &page, true)
	var re *RemoteError
	switch {
	case err == nil:
		var check struct {
			Chunk []json.RawMessage `json:"chunk"`
		}
		if json.Unmarshal(page, &check) != nil || check.Chunk == nil {
			httpapi.Fail(w, r, httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s answered no directory", server))
			return
		}
		httpapi.RespondRaw(w, http.StatusOK, page)
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		httpapi.Fail(w, r, httpapi.NotFound("%s has no public room directory", server))
	default:
		httpapi.Fail(w, r, httpapi.Custom(http.StatusBadGateway, "M_UNKNOWN", "%s could not be asked: %v", server, err))
	}
}

func parsePublicRoomsQuery(r *http.Request, req *publicRoomsQuery) error {
	q := r.URL.Query()
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return httpapi.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	return nil
}

// publishedSummaries summarizes the published rooms, most members first.
func (s *Service) publishedSummaries(ctx context.Context) ([]*roomSummary, error) {
	if s.locals.Rooms == nil {
		return nil, nil
	}
	ids, err := s.db.PublishedRoomIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*roomSummary, 0, len(ids))
	for _, roomID := range ids {
		sum, err := s.summarize(ctx, roomID)
		if errors.Is(err, room.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	slices.SortStableFunc(out, func(a, b *roomSummary) int {
		return cmp.Or(cmp.Compare(b.NumJoinedMembers, a.NumJoinedMembers), strings.Compare(a.RoomID, b.RoomID))
	})
	return out, nil
}

// strippedState is a state event as the hierarchy shows it.
type strippedState struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Sender         string          `json:"sender"`
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

// hierarchyRoom is a room of a /hierarchy answer.
type hierarchyRoom struct {
	roomSummary
	ChildrenState  []strippedState `json:"children_state"`
	AllowedRoomIDs []string        `json:"allowed_room_ids,omitempty"`
}

// GET /hierarchy/{roomID}?suggested_only=
//
// The room must be one the asking server may see: world-readable, public
// (or knockable) to join, or with members of that server joined. Its
// children we know are described when they pass the same test and listed
// as inaccessible otherwise; children we are not in are left out, as the
// asking server can ask their own servers.
func (s *Service) getHierarchy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	if !id.ValidRoomID(roomID) {
		httpapi.Fail(w, r, httpapi.InvalidParam("%q is not a room ID", roomID))
		return
	}
	origin := Origin(ctx)
	if s.locals.Rooms == nil {
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
		return
	}
	top, ok, err := s.hierarchyRoom(ctx, roomID, origin, suggestedOnly)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if top == nil || !ok {
		httpapi.Fail(w, r, httpapi.NotFound("room not found, or not visible to %s", origin))
		return
	}
	children, inaccessible := []*hierarchyRoom{}, []string{}
	for _, cs := range top.ChildrenState {
		if len(children)+len(inaccessible) == maxHierarchyChildren {
			break
		}
		child, ok, err := s.hierarchyRoom(ctx, cs.StateKey, origin, suggestedOnly)
		switch {
		case err != nil:
			httpapi.Fail(w, r, err)
			return
		case child == nil: // not a room we are in
		case !ok:
			inaccessible = append(inaccessible, cs.StateKey)
		default:
			children = append(children, child)
		}
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"room": top, "children": children, "inaccessible_children": inaccessible})
}

// hierarchyRoom describes one room for origin; nil if we are not in it,
// ok false if origin may not see it.
func (s *Service) hierarchyRoom(ctx context.Context, roomID, origin string, suggestedOnly bool) (*hierarchyRoom, bool, error) {
	state, err := s.locals.Rooms.CurrentState(ctx, roomID)
	if errors.Is(err, room.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	sum, err := s.summarize(ctx, roomID)
	if err != nil {
		return nil, false, err
	}
	h := &hierarchyRoom{roomSummary: *sum, ChildrenState: []strippedState{}}
	visible := sum.WorldReadable || sum.JoinRule == "public" || sum.JoinRule == "knock"
	for _, ev := range state {
		switch {
		case ev.Type() == "m.space.child" && ev.StateKey() != nil && id.ValidRoomID(*ev.StateKey()):
			var c struct {
				Via       []string `json:"via"`
				Suggested bool     `json:"suggested"`
			}
			// A child without via is a removed one.
			if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 || (suggestedOnly && !c.Suggested) {
				continue
			}
			h.ChildrenState = append(h.ChildrenState, strippedState{Type: ev.Type(), StateKey: *ev.StateKey(),
				Sender: ev.Sender(), Content: ev.Content(), OriginServerTS: ev.OriginServerTS()})
		case ev.Type() == "m.room.member" && !visible && ev.StateKey() != nil &&
			id.ServerOf(*ev.StateKey()) == origin && room.MembershipOf(ev) == "join":
			visible = true
		case ev.Type() == "m.room.join_rules":
			h.AllowedRoomIDs = allowedRooms(ev)
		}
	}
	slices.SortFunc(h.ChildrenState, func(a, b strippedState) int { return strings.Compare(a.StateKey, b.StateKey) })
	return h, visible, nil
}

// allowedRooms lists the rooms whose members may join a restricted room.
func allowedRooms(ev *event.Event) []string {
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || (c.JoinRule != "restricted" && c.JoinRule != "knock_restricted") {
		return nil
	}
	var out []string
	for _, a := range c.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			out = append(out, a.RoomID)
		}
	}
	return out
}
