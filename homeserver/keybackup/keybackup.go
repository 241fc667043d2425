// Package keybackup serves server-side key backups (client-server API,
// "Server-side key backups"): a user's backup versions under
// /room_keys/version and the encrypted megolm session keys stored in them
// under /room_keys/keys. The server never reads what it stores: auth_data and
// session_data are kept as the client sent them; only the metadata the
// spec's replacement rule compares (is_verified, first_message_index,
// forwarded_count) is looked at.
//
// Keys are only written to the current (newest, not deleted) version, so a
// client still writing to a replaced backup learns of the new one through
// M_WRONG_ROOM_KEYS_VERSION; reads and deletions may name any existing
// version.
package keybackup

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// Algorithm is the one backup algorithm the spec defines.
const Algorithm = "m.megolm_backup.v1.curve25519-aes-sha2"

// Limits on one request. Clients upload keys in batches (Element sends a few
// hundred sessions at a time, each well under a kilobyte); a whole backup
// restored elsewhere is read, not written, in one request.
const (
	maxKeysBody     = 16 << 20
	maxKeysPerPut   = 20000
	maxAuthDataBody = 64 << 10
)

// Service serves the key backup endpoints.
type Service struct {
	db *storage.DB
}

// New returns the service; mount Routes behind authentication.
func New(db *storage.DB) *Service { return &Service{db: db} }

// Routes mounts the endpoints on the authenticated /_matrix/client/v3 router.
func (s *Service) Routes(r chi.Router) {
	r.Post("/room_keys/version", s.createVersion)
	r.Get("/room_keys/version", s.getVersion)
	r.Get("/room_keys/version/{version}", s.getVersion)
	r.Put("/room_keys/version/{version}", s.updateVersion)
	r.Delete("/room_keys/version/{version}", s.deleteVersion)
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomID}", "/room_keys/keys/{roomID}/{sessionID}"} {
		r.Get(p, s.getKeys)
		r.Put(p, s.putKeys)
		r.Delete(p, s.deleteKeys)
	}
}

// versionBody is the body of POST and PUT /room_keys/version.
type versionBody struct {
	Algorithm *string         `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

// validate checks what both create and update require.
func (b *versionBody) validate() error {
	if b.Algorithm == nil {
		return httpapi.MissingParam("algorithm is required")
	}
	if *b.Algorithm != Algorithm {
		return httpapi.InvalidParam("unsupported backup algorithm %q", *b.Algorithm)
	}
	if len(b.AuthData) == 0 || string(b.AuthData) == "null" {
		return httpapi.MissingParam("auth_data is required")
	}
	if !isObject(b.AuthData) {
		return httpapi.BadJSON("auth_data must be an object")
	}
	return nil
}

// isObject reports whether a JSON value (already known to be valid) is an
// object.
func isObject(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// readVersionBody reads and checks a backup version's description.
func readVersionBody(r *http.Request) (versionBody, error) {
	var body versionBody
	if err := httpapi.DecodeLimit(r, &body, maxAuthDataBody); err != nil {
		return body, err
	}
	return body, body.validate()
}

func (s *Service) createVersion(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	body, err := readVersionBody(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	v, err := s.db.CreateKeyBackup(r.Context(), rq.UserID, *body.Algorithm, body.AuthData)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"version": strconv.FormatInt(v, 10)})
}

// pathVersion parses the version of the path. Versions are numbers this
// server handed out, so anything else names no backup.
func pathVersion(r *http.Request) (int64, error) {
	return parseVersion(httpapi.PathParam(r, "version"))
}

func parseVersion(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, httpapi.NotFound("unknown backup version")
	}
	return v, nil
}

// fail answers a storage error with the spec's error.
func fail(w http.ResponseWriter, r *http.Request, err error) {
	var wrong *storage.WrongKeyBackupVersionError
	switch {
	case errors.Is(err, storage.ErrNoKeyBackup):
		httpapi.Fail(w, r, httpapi.NotFound("unknown backup version"))
	case errors.As(err, &wrong):
		e := httpapi.Custom(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "wrong backup version")
		e.Extra = map[string]any{"current_version": strconv.FormatInt(wrong.Current, 10)}
		httpapi.Fail(w, r, e)
	default:
		httpapi.Fail(w, r, err)
	}
}

func (s *Service) getVersion(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	var version int64
	if chi.URLParam(r, "version") != "" {
		var err error
		if version, err = pathVersion(r); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	v, err := s.db.KeyBackup(r.Context(), rq.UserID, version)
	if errors.Is(err, storage.ErrNoKeyBackup) && version == 0 {
		httpapi.Fail(w, r, httpapi.NotFound("no current backup version"))
		return
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{
		"algorithm": v.Algorithm,
		"auth_data": json.RawMessage(v.AuthData),
		"count":     v.Count,
		"etag":      strconv.FormatInt(v.Etag, 10),
		"version":   strconv.FormatInt(v.Version, 10),
	})
}

func (s *Service) updateVersion(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	version, err := pathVersion(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	body, err := readVersionBody(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if body.Version != nil && *body.Version != httpapi.PathParam(r, "version") {
		httpapi.Fail(w, r, httpapi.InvalidParam("version in body does not match the path"))
		return
	}
	cur, err := s.db.KeyBackup(r.Context(), rq.UserID, version)
	if err != nil {
		fail(w, r, err)
		return
	}
	// Only auth_data may change (the keys are encrypted for the algorithm).
	if cur.Algorithm != *body.Algorithm {
		httpapi.Fail(w, r, httpapi.InvalidParam("algorithm cannot be changed"))
		return
	}
	if err := s.db.UpdateKeyBackup(r.Context(), rq.UserID, version, body.AuthData); err != nil {
		fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{})
}

func (s *Service) deleteVersion(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	version, err := pathVersion(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.db.DeleteKeyBackup(r.Context(), rq.UserID, version); err != nil {
		fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{})
}

// keyData is KeyBackupData, every member required.
type keyData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

type roomKeys struct {
	Sessions map[string]keyData `json:"sessions"`
}

type allKeys struct {
	Rooms map[string]roomKeys `json:"rooms"`
}

// key validates one session key of a request.
func key(roomID, sessionID string, d keyData) (storage.BackedUpKey, error) {
	if !id.ValidRoomID(roomID) {
		return storage.BackedUpKey{}, httpapi.InvalidParam("invalid room ID %q", roomID)
	}
	if sessionID == "" || len(sessionID) > 255 {
		return storage.BackedUpKey{}, httpapi.InvalidParam("invalid session ID in room %s", roomID)
	}
	switch {
	case d.FirstMessageIndex == nil, d.ForwardedCount == nil, d.IsVerified == nil, len(d.SessionData) == 0:
		return storage.BackedUpKey{}, httpapi.BadJSON("key of session %s in room %s: first_message_index, forwarded_count, is_verified and session_data are required", sessionID, roomID)
	case *d.FirstMessageIndex < 0, *d.ForwardedCount < 0:
		return storage.BackedUpKey{}, httpapi.BadJSON("key of session %s in room %s: negative index or count", sessionID, roomID)
	case !isObject(d.SessionData):
		return storage.BackedUpKey{}, httpapi.BadJSON("key of session %s in room %s: session_data must be an object", sessionID, roomID)
	}
	return storage.BackedUpKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *d.FirstMessageIndex,
		ForwardedCount: *d.ForwardedCount, IsVerified: *d.IsVerified, SessionData: d.SessionData}, nil
}

// queryVersion reads the required ?version= of the /room_keys/keys endpoints.
func queryVersion(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("version")
	if s == "" {
		return 0, httpapi.MissingParam("the version query parameter is required")
	}
	return parseVersion(s)
}

func (s *Service) putKeys(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	version, err := queryVersion(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roomID, sessionID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "sessionID")
	var keys []storage.BackedUpKey
	add := func(roomID, sessionID string, d keyData) error {
		if len(keys) >= maxKeysPerPut {
			return httpapi.TooLarge("at most %d keys per request", maxKeysPerPut)
		}
		k, err := key(roomID, sessionID, d)
		keys = append(keys, k)
		return err
	}
	err = func() error {
		body, err := httpapi.ReadBody(r, maxKeysBody)
		if err != nil {
			return err
		}
		switch {
		case sessionID != "":
			var d keyData
			if err := httpapi.Unmarshal(body, &d); err != nil {
				return err
			}
			return add(roomID, sessionID, d)
		case roomID != "":
			var rk roomKeys
			if err := httpapi.Unmarshal(body, &rk); err != nil {
				return err
			}
			if rk.Sessions == nil {
				return httpapi.MissingParam("sessions is required")
			}
			for sid, d := range rk.Sessions {
				if err := add(roomID, sid, d); err != nil {
					return err
				}
			}
		default:
			var all allKeys
			if err := httpapi.Unmarshal(body, &all); err != nil {
				return err
			}
			if all.Rooms == nil {
				return httpapi.MissingParam("rooms is required")
			}
			for rid, rk := range all.Rooms {
				if rk.Sessions == nil {
					return httpapi.MissingParam("rooms.%s.sessions is required", rid)
				}
				for sid, d := range rk.Sessions {
					if err := add(rid, sid, d); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}()
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	etag, count, err := s.db.PutBackupKeys(r.Context(), rq.UserID, version, keys)
	if err != nil {
		fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"etag": strconv.FormatInt(etag, 10), "count": count})
}

func (s *Service) getKeys(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	version, err := queryVersion(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roomID, sessionID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "sessionID")
	keys, err := s.db.BackupKeys(r.Context(), rq.UserID, version, roomID, sessionID)
	if err != nil {
		fail(w, r, err)
		return
	}
	data := func(k storage.BackedUpKey) map[string]any {
		return map[string]any{"first_message_index": k.FirstMessageIndex, "forwarded_count": k.ForwardedCount,
			"is_verified": k.IsVerified, "session_data": json.RawMessage(k.SessionData)}
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			httpapi.Fail(w, r, httpapi.NotFound("no key for this session in the backup"))
			return
		}
		httpapi.Respond(w, http.StatusOK, data(keys[0]))
	case roomID != "":
		// A room without keys is an empty map, as for a backup without
		// keys: clients restore rooms one by one and expect no error.
		sessions := map[string]any{}
		for _, k := range keys {
			sessions[k.SessionID] = data(k)
		}
		httpapi.Respond(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[string]map[string]map[string]any{}
		for _, k := range keys {
			if rooms[k.RoomID] == nil {
				rooms[k.RoomID] = map[string]map[string]any{"sessions": {}}
			}
			rooms[k.RoomID]["sessions"][k.SessionID] = data(k)
		}
		httpapi.Respond(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

func (s *Service) deleteKeys(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	version, err := queryVersion(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	roomID, sessionID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "sessionID")
	etag, count, err := s.db.DeleteBackupKeys(r.Context(), rq.UserID, version, roomID, sessionID)
	if err != nil {
		fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"etag": strconv.FormatInt(etag, 10), "count": count})
}
