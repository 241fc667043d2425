// Package peek owns instant room previews for people who are not in a room:
// the Matrix room preview APIs for guests and signed-in non-members
// (GET /rooms/{id}/initialSync and the peeking GET /events), the room summary
// (GET /_matrix/client/v1/room_summary, anonymous for public and
// world-readable rooms), and peeking through /sync (MSC2753, unstable prefix
// org.matrix.msc2753). It serves from the hot-room snapshot cache
// (peek/snapshot), so the first screen of a warm room costs no database
// query.
//
// Peekers are invisible: a peek is a per-device entry in memory, never a
// membership, and nothing lists or counts them.
//
// It also carries out the spec's guest-access server behaviour that follows
// the stream: guests leave a room whose guest access stops being can_join.
// (Which endpoints guests may call is clientapi.API.GuestAccess.)
//
// peek depends on the homeserver's exported services; the homeserver never
// imports it (cmd/plaza mounts Routes through homeserver.Server.Handler).
package peek

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
	"plaza/peek/snapshot"
)

// Config configures previews.
type Config struct {
	Snapshot snapshot.Config
	// PeekLifetime is how long an MSC2753 peek lasts unless renewed
	// (default one hour).
	PeekLifetime time.Duration
	// MaxPeeksPerDevice bounds one device's peeks (default 100).
	MaxPeeksPerDevice int
}

// Service serves room previews.
type Service struct {
	hs    *homeserver.Server
	cache *snapshot.Cache
	cfg   Config
	now   func() time.Time

	mu sync.Mutex
	// peeks by device, and the devices peeking each room (to wake their
	// /sync long-polls). Memory only: a restart ends every peek, which the
	// expiry already tells clients to expect.
	peeks     map[device]map[string]*peekEntry
	byRoom    map[string]map[device]struct{}
	lastSweep time.Time
}

type device struct{ userID, deviceID string }

type peekEntry struct {
	start  int64 // stream position the peek began at
	expiry time.Time
}

// New builds the preview service on a homeserver and hooks it into the event
// stream and /sync. Call it before the server starts serving.
func New(hs *homeserver.Server, cfg Config) *Service {
	if cfg.PeekLifetime <= 0 {
		cfg.PeekLifetime = time.Hour
	}
	if cfg.MaxPeeksPerDevice <= 0 {
		cfg.MaxPeeksPerDevice = 100
	}
	s := &Service{hs: hs, cfg: cfg, now: time.Now,
		cache: snapshot.New(cfg.Snapshot, hs.DB, hs.Rooms, hs.Tracker),
		peeks: map[device]map[string]*peekEntry{}, byRoom: map[string]map[device]struct{}{}}
	hs.Rooms.Subscribe(s.onEvents)
	hs.Sync.AddExtension(s)
	return s
}

// Cache returns the snapshot cache (the web room page serves from it too).
func (s *Service) Cache() *snapshot.Cache { return s.cache }

// Routes mounts the preview endpoints on the root router.
func (s *Service) Routes(r chi.Router) {
	auth := s.hs.Client.Authenticate
	r.With(s.optionalAuth).Get("/_matrix/client/v1/room_summary/{roomIDOrAlias}", s.roomSummary)
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		r.With(auth).Get(prefix+"/rooms/{roomID}/initialSync", s.initialSync)
		r.With(auth).Get(prefix+"/events", s.events)
	}
	const msc2753 = "/_matrix/client/unstable/org.matrix.msc2753"
	r.With(auth).Post(msc2753+"/peek/{roomIDOrAlias}", s.peek)
	r.With(auth).Post(msc2753+"/unpeek/{roomID}", s.unpeek)
	r.With(auth).Post("/_plaza/admin/v1/seed_room", s.seedRoom)
}

// optionalAuth authenticates requests that carry a token and lets the others
// through anonymously.
func (s *Service) optionalAuth(next http.Handler) http.Handler {
	authed := s.hs.Client.Authenticate(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.URL.Query().Get("access_token") != "" {
			authed.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// pathParam reads a path parameter, unescaped (chi matches the escaped
// path when the client escaped "!" or ":").
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// resolve turns a room ID or alias into a room ID.
func (s *Service) resolve(ctx context.Context, idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		if !id.ValidRoomID(idOrAlias) {
			return "", httpapi.InvalidParam("invalid room ID %q", idOrAlias)
		}
		return idOrAlias, nil
	case strings.HasPrefix(idOrAlias, "#"):
		if _, err := id.ParseRoomAlias(idOrAlias); err != nil {
			return "", httpapi.InvalidParam("invalid room alias %q", idOrAlias)
		}
		roomID, err := s.hs.DB.ResolveAlias(ctx, idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", httpapi.NotFound("room not found")
		}
		return roomID, err
	}
	return "", httpapi.InvalidParam("%q is neither a room ID nor an alias", idOrAlias)
}

// snapshot returns a room's snapshot, mapping a missing room to 404.
func (s *Service) snapshot(ctx context.Context, roomID string) (*snapshot.Snapshot, error) {
	snap, err := s.cache.Get(ctx, roomID)
	if errors.Is(err, snapshot.ErrNotFound) {
		return nil, httpapi.NotFound("room not found")
	}
	return snap, err
}

// membership returns the requester's membership in a room ("" if none):
// from the snapshot cache when it holds the room, else from storage —
// asking the room service would load the room's whole state, seconds for a
// 20,000-member room a guest merely looks at.
func (s *Service) membership(ctx context.Context, roomID, userID string) (string, error) {
	if m, ok := s.cache.Membership(roomID, userID); ok {
		return m, nil
	}
	m, err := s.hs.DB.RoomMembership(ctx, roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", httpapi.NotFound("room not found")
	}
	return m, err
}

// streamToken renders a position as the tokens /messages and /sync use.
func streamToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

// parseStreamToken reads "s123" (possibly followed by "_…" parts).
func parseStreamToken(tok string) (int64, error) {
	num, ok := strings.CutPrefix(tok, "s")
	if !ok {
		return 0, httpapi.InvalidParam("invalid token %q", tok)
	}
	if i := strings.IndexByte(num, '_'); i >= 0 {
		num = num[:i]
	}
	pos, err := strconv.ParseInt(num, 10, 64)
	if err != nil || pos < 0 {
		return 0, httpapi.InvalidParam("invalid token %q", tok)
	}
	return pos, nil
}

// intParam reads a non-negative integer query parameter.
func intParam(r *http.Request, name string, def, limit int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("%s must be a non-negative integer", name)
	}
	return min(n, limit), nil
}
