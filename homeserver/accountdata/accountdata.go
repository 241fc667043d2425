// Package accountdata owns what a user keeps on the server for their own
// clients: account data (global and per room), room tags (stored as the
// room's m.tag account data), and push rules — the endpoints, their
// delivery in /sync, and the push rule evaluator that decides whether an
// event notifies or highlights.
//
// Every change takes a position in the global stream, so sync tokens cover
// it and the user's long-polls wake. Push rules are stored as the user's
// changes only; the ruleset a client sees is those merged over the server's
// defaults (see effective).
package accountdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	gosync "sync"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
	"plaza/homeserver/sync"
)

// maxContentSize bounds one piece of account data, like an event's content.
const maxContentSize = 64 << 10

// maxTypeLength bounds account data types and tag names (the spec's limit
// for event types and for tag names).
const maxTypeLength = 255

// Account data types the server manages: clients read them but may not set
// them through the account data API (the spec requires a 405).
const (
	typeFullyRead = "m.fully_read"
	typePushRules = "m.push_rules"
	typeTag       = "m.tag"
)

// Service serves account data, tags and push rules.
type Service struct {
	db      *storage.DB
	tracker *stream.Tracker
	syncer  *sync.Service

	rulesMu gosync.Mutex
	rules   map[string]cachedRuleset
}

// New builds the service and registers it with /sync.
func New(db *storage.DB, tracker *stream.Tracker, syncer *sync.Service) *Service {
	s := &Service{db: db, tracker: tracker, syncer: syncer, rules: map[string]cachedRuleset{}}
	syncer.AddExtension(s)
	return s
}

// Routes mounts the endpoints (behind authentication).
func (s *Service) Routes(r chi.Router) {
	r.Put("/user/{userID}/account_data/{type}", s.putGlobal)
	r.Get("/user/{userID}/account_data/{type}", s.getGlobal)
	r.Put("/user/{userID}/rooms/{roomID}/account_data/{type}", s.putRoom)
	r.Get("/user/{userID}/rooms/{roomID}/account_data/{type}", s.getRoom)

	r.Get("/user/{userID}/rooms/{roomID}/tags", s.getTags)
	r.Put("/user/{userID}/rooms/{roomID}/tags/{tag}", s.putTag)
	r.Delete("/user/{userID}/rooms/{roomID}/tags/{tag}", s.deleteTag)

	s.pushRuleRoutes(r)
	s.pusherRoutes(r)
}

// pathParam returns a path parameter decoded: chi matches on the escaped
// path when it differs from the decoded one (a room ID's "%21" or a "%2F"),
// and then hands parameters over still escaped.
func pathParam(r *http.Request, name string) (string, error) {
	v := httpapi.PathParam(r, name)
	if !utf8.ValidString(v) {
		return "", httpapi.InvalidParam("%s is not valid UTF-8", name)
	}
	return v, nil
}

// target is the decoded and checked path of an account data or tag request.
type target struct {
	userID, roomID, typ string
}

// parseTarget checks the path: the user must be the requester, the room ID
// (if the route has one) well-formed, and the named parameter (type or tag,
// if any) non-empty and short.
func parseTarget(r *http.Request, withRoom bool, nameParam string) (target, error) {
	var t target
	userID, err := pathParam(r, "userID")
	if err != nil {
		return t, err
	}
	if userID != httpapi.RequesterFrom(r.Context()).UserID {
		return t, httpapi.Forbidden("you can only access your own account data")
	}
	t.userID = userID
	if withRoom {
		if t.roomID, err = pathParam(r, "roomID"); err != nil {
			return t, err
		}
		if !id.ValidRoomID(t.roomID) {
			return t, httpapi.InvalidParam("%q is not a valid room ID", t.roomID)
		}
	}
	if nameParam != "" {
		if t.typ, err = pathParam(r, nameParam); err != nil {
			return t, err
		}
		if t.typ == "" || len(t.typ) > maxTypeLength {
			return t, httpapi.InvalidParam("%s must be 1 to %d bytes long", nameParam, maxTypeLength)
		}
	}
	return t, nil
}

// readObject reads a request body that must be a JSON object of at most
// limit bytes, and returns it compacted.
func readObject(r *http.Request, limit int64) ([]byte, error) {
	body, err := httpapi.ReadBody(r, limit)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, httpapi.NotJSON("the request body must be a JSON object")
	}
	if !utf8.Valid(body) {
		return nil, httpapi.NotJSON("the request body is not valid UTF-8")
	}
	var obj map[string]json.RawMessage
	if err := httpapi.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, body); err != nil {
		return nil, httpapi.NotJSON("request body is not valid JSON")
	}
	return out.Bytes(), nil
}

// serverManaged refuses the types only the server may set, with the spec's
// 405 M_BAD_JSON.
func serverManaged(typ string) error {
	if typ == typeFullyRead || typ == typePushRules {
		return httpapi.Custom(http.StatusMethodNotAllowed, "M_BAD_JSON", "cannot set %s through this API", typ)
	}
	return nil
}

func (s *Service) putGlobal(w http.ResponseWriter, r *http.Request) { s.put(w, r, false) }
func (s *Service) putRoom(w http.ResponseWriter, r *http.Request)   { s.put(w, r, true) }
func (s *Service) getGlobal(w http.ResponseWriter, r *http.Request) { s.get(w, r, false) }
func (s *Service) getRoom(w http.ResponseWriter, r *http.Request)   { s.get(w, r, true) }

func (s *Service) put(w http.ResponseWriter, r *http.Request, withRoom bool) {
	t, err := parseTarget(r, withRoom, "type")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := serverManaged(t.typ); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	content, err := readObject(r, maxContentSize)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.write(t.userID, func(pos int64) (bool, error) {
		return true, s.db.PutAccountData(r.Context(), t.userID, t.roomID, t.typ, content, pos)
	}); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// write runs a change at a new stream position and wakes the user's syncs
// if it changed anything.
func (s *Service) write(userID string, f func(pos int64) (bool, error)) error {
	pos := s.tracker.Reserve()
	changed, err := f(pos)
	if err == nil && changed {
		// Before Complete, as the room writer does: a long-poll wakes when
		// the position completes and then asks whether anything concerns
		// its user; told afterwards, it would sleep through the change.
		s.syncer.NotifyUser(userID, pos)
	}
	// Complete even on failure: an abandoned position is a harmless gap,
	// an uncompleted one would hold every reader back.
	s.tracker.Complete(pos)
	return err
}

func (s *Service) get(w http.ResponseWriter, r *http.Request, withRoom bool) {
	ctx := r.Context()
	t, err := parseTarget(r, withRoom, "type")
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// The server-managed types live elsewhere but read as account data.
	switch {
	case withRoom && t.typ == typeFullyRead:
		eventID, err := s.db.FullyRead(ctx, t.userID, t.roomID)
		if errors.Is(err, storage.ErrNotFound) {
			httpapi.Fail(w, r, httpapi.NotFound("no %s marker in this room", typeFullyRead))
			return
		}
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		httpapi.Respond(w, http.StatusOK, map[string]string{"event_id": eventID})
		return
	case !withRoom && t.typ == typePushRules:
		rs, _, err := s.ruleset(ctx, t.userID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		httpapi.Respond(w, http.StatusOK, map[string]any{"global": rs})
		return
	}
	content, err := s.db.GetAccountData(ctx, t.userID, t.roomID, t.typ)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("no account data of type %s", t.typ))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.RespondRaw(w, http.StatusOK, content)
}

// AddToSync adds the account data that changed in the window — all of it on
// an initial sync and for rooms that get a full section — and the effective
// push rules when they changed. Filters choose rooms and types; their limits
// do not apply, since account data left out of an incremental sync would be
// lost to the client for good.
func (s *Service) AddToSync(ctx context.Context, req *sync.Request, resp *sync.Response) error {
	// Account data, tags and push rules all announce themselves with
	// NotifyUser, and so do membership changes: when none happened, an
	// incremental sync has nothing to add here.
	if req.Since > 0 && !s.syncer.UserChanged(req.UserID, req.Since) {
		return nil
	}
	f := req.Filter
	if f == nil {
		f = &sync.Filter{}
	}
	roomAllowed := func(roomID string) bool {
		return listAllows(f.Room.Rooms, f.Room.NotRooms, roomID, false) &&
			listAllows(f.Room.AccountData.Rooms, f.Room.AccountData.NotRooms, roomID, false)
	}

	// Rooms whose membership changed in the window get a full section from
	// /sync, so they get all their account data too, as on an initial sync.
	full := map[string]bool{}
	if req.Since > 0 && len(req.JoinedRooms) > 0 {
		changes, err := s.db.MembershipChanges(ctx, req.UserID, req.Since, req.UpTo)
		if err != nil {
			return err
		}
		for _, c := range changes {
			full[c.RoomID] = true
		}
	}
	var rooms, fullRooms []string
	for _, roomID := range req.JoinedRooms {
		switch {
		case !roomAllowed(roomID):
		case full[roomID]:
			fullRooms = append(fullRooms, roomID)
		default:
			rooms = append(rooms, roomID)
		}
	}
	for roomID := range resp.Rooms.Leave {
		if roomAllowed(roomID) {
			rooms = append(rooms, roomID)
		}
	}

	data, err := s.db.AccountDataSince(ctx, req.UserID, true, rooms, req.Since, req.UpTo)
	if err != nil {
		return err
	}
	if len(fullRooms) > 0 {
		more, err := s.db.AccountDataSince(ctx, req.UserID, false, fullRooms, 0, req.UpTo)
		if err != nil {
			return err
		}
		data = append(data, more...)
	}

	var global []any
	for _, a := range data {
		ev := map[string]any{"type": a.Type, "content": json.RawMessage(a.Content)}
		if a.RoomID == "" {
			if listAllows(f.AccountData.Types, f.AccountData.NotTypes, a.Type, true) {
				global = append(global, ev)
			}
			continue
		}
		if !listAllows(f.Room.AccountData.Types, f.Room.AccountData.NotTypes, a.Type, true) {
			continue
		}
		if lr := resp.Rooms.Leave[a.RoomID]; lr != nil {
			lr.AccountData.Events = append(lr.AccountData.Events, ev)
		} else {
			jr := resp.JoinedRoomSection(a.RoomID)
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
		}
	}

	if listAllows(f.AccountData.Types, f.AccountData.NotTypes, typePushRules, true) {
		stored, pos, err := s.db.PushRules(ctx, req.UserID)
		if err != nil {
			return err
		}
		if req.Since == 0 || pos > req.Since && pos <= req.UpTo {
			rs, err := rulesetFrom(req.UserID, stored)
			if err != nil {
				return err
			}
			global = append(global, map[string]any{"type": typePushRules, "content": map[string]any{"global": rs}})
		}
	}

	if len(global) > 0 {
		if resp.AccountData == nil {
			resp.AccountData = &sync.EventList{Events: []any{}}
		}
		resp.AccountData.Events = append(resp.AccountData.Events, global...)
	}
	return nil
}

// listAllows applies a filter's inclusion and exclusion lists: an absent
// inclusion list allows everything, an empty one nothing. Types may use '*'
// wildcards (wild); room IDs may not.
func listAllows(include, exclude []string, v string, wild bool) bool {
	match := func(p string) bool {
		if wild {
			return typeMatches(p, v)
		}
		return p == v
	}
	for _, p := range exclude {
		if match(p) {
			return false
		}
	}
	if include == nil {
		return true
	}
	for _, p := range include {
		if match(p) {
			return true
		}
	}
	return false
}
