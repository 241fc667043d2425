// Package homeserver assembles Plaza's Matrix homeserver from its parts —
// storage, the stream, the room writer, the client API, /sync and media — and
// exposes it as one http.Handler plus the services the Gitter features
// (community, peek, search, archive) build on.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/accountdata"
	"plaza/homeserver/clientapi"
	"plaza/homeserver/e2ee"
	"plaza/homeserver/ephemeral"
	"plaza/homeserver/event"
	"plaza/homeserver/federation"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/keybackup"
	"plaza/homeserver/media"
	"plaza/homeserver/push"
	"plaza/homeserver/room"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
	"plaza/homeserver/sync"
)

// Config configures the homeserver.
type Config struct {
	ServerName   string
	PublicURL    string
	DataDir      string // signing key and media live here
	Registration string // open, token, closed
	RateLimit    bool
	// RegistrationSharedSecret enables Synapse's shared-secret admin
	// registration endpoint; empty: it does not exist.
	RegistrationSharedSecret string
	// BcryptCost lowers password hashing cost in tests (0: default).
	BcryptCost int
	// AccessTokenLifetime makes tokens expire and enables refresh tokens.
	AccessTokenLifetime time.Duration
	// MaxUploadBytes bounds media uploads (0: the media package's default).
	MaxUploadBytes int64
	// FederationCAFile holds extra CA certificates (PEM) trusted for
	// outbound federation, besides the system's.
	FederationCAFile string
	// FederationDelegate, if set, is served as m.server at
	// /.well-known/matrix/server.
	FederationDelegate string
	// FederationNotaries are asked for keys that cannot be fetched from
	// their owner.
	FederationNotaries []string
	// FederationAllowPrivate lets outbound federation reach loopback and
	// private addresses (tests, private federations).
	FederationAllowPrivate bool
	// PushAllowPrivate lets pushers' gateways be on loopback and private
	// addresses (tests, gateways on the server's own network).
	PushAllowPrivate bool
}

// Server is a running homeserver.
type Server struct {
	Config  Config
	DB      *storage.DB
	Key     signing.Key
	Tracker *stream.Tracker
	Rooms   *room.Service
	Client  *clientapi.API
	Sync    *sync.Service
	// Ephemeral serves typing, receipts and presence.
	Ephemeral *ephemeral.Service
	Media     *media.Service
	// E2EE serves keys, to-device messages and device lists.
	E2EE *e2ee.Service
	// AccountData serves account data, room tags and push rules.
	AccountData *accountdata.Service
	// KeyBackup serves server-side key backups (/room_keys).
	KeyBackup *keybackup.Service
	// Federation serves the key server and authenticates federation
	// requests both ways.
	Federation *federation.Service
}

// New assembles a homeserver on an open, migrated database.
func New(ctx context.Context, cfg Config, db *storage.DB) (*Server, error) {
	if cfg.ServerName == "" {
		return nil, errors.New("server name is empty")
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "signing.key"))
	if err != nil {
		return nil, err
	}
	hi, lo, err := db.MaxStreamPositions(ctx)
	if err != nil {
		return nil, err
	}
	tracker := stream.NewTracker(hi, lo)
	tracker.RecordBlocks(func(end int64) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return db.SetStreamHighWater(ctx, end)
	}, func(err error) { slog.Error("recording the stream high-water mark", "err", err) })
	rooms := room.New(db, tracker, cfg.ServerName, key)
	api := clientapi.New(clientapi.Config{
		ServerName: cfg.ServerName, PublicURL: cfg.PublicURL, Registration: cfg.Registration,
		BcryptCost: cfg.BcryptCost, AccessTokenLifetime: cfg.AccessTokenLifetime, RateLimit: cfg.RateLimit,
		RegistrationSharedSecret: cfg.RegistrationSharedSecret,
	}, db, rooms)
	syncer := sync.New(db, rooms, tracker)
	keys := e2ee.New(e2ee.Config{ServerName: cfg.ServerName}, db, tracker, syncer)
	syncer.AddExtension(keys)
	eph := ephemeral.New(db, rooms, tracker, syncer)
	acct := accountdata.New(db, tracker, syncer)
	eph.SetCounter(func(ctx context.Context, userID string) (ephemeral.Judge, int64, error) {
		rules, version, err := acct.RulesetVersion(ctx, userID)
		if err != nil {
			return nil, 0, err
		}
		return func(roomID string, evs []*storage.StoredEvent) (int, int) {
			if len(evs) == 0 {
				return 0, 0
			}
			joined, err := rooms.JoinedCount(ctx, roomID)
			if err != nil {
				return 0, 0
			}
			state := func(typ, sk string) *event.Event {
				ev, _ := rooms.StateEvent(ctx, roomID, typ, sk)
				return ev
			}
			return acct.CountNotifications(ctx, userID, rules, state, joined, evs)
		}, version, nil
	})
	push.New(push.Config{AllowPrivateAddresses: cfg.PushAllowPrivate}, db, rooms, acct).Start(ctx)
	med, err := media.New(media.Config{Dir: filepath.Join(cfg.DataDir, "media"), ServerName: cfg.ServerName, MaxUploadBytes: cfg.MaxUploadBytes}, db)
	if err != nil {
		return nil, err
	}
	roots, err := federation.LoadRootCAs(cfg.FederationCAFile)
	if err != nil {
		return nil, fmt.Errorf("federation CA file: %w", err)
	}
	fed, err := federation.New(ctx, federation.Config{
		ServerName: cfg.ServerName, Key: key, RootCAs: roots, Delegate: cfg.FederationDelegate,
		Notaries: cfg.FederationNotaries, AllowPrivateAddresses: cfg.FederationAllowPrivate,
	}, db)
	if err != nil {
		return nil, err
	}
	fed.SetLocals(federation.Locals{Rooms: rooms, Ephemeral: eph, E2EE: keys, Client: api})
	rooms.SetFederation(fed.Keys, fed.Fetcher())
	api.SetRemote(fed.Remote())
	// Replacing cross-signing keys asks for the same user-interactive auth
	// as the client API's other sensitive requests (password or SSO).
	keys.SetUIA(api.UserInteractiveAuth)
	api.SetRemoteProfile(fed.ProfileForClient)
	if err := fed.Sender.Start(ctx, federation.SenderConfig{}, rooms); err != nil {
		return nil, err
	}
	return &Server{Config: cfg, DB: db, Key: key, Tracker: tracker, Rooms: rooms, Client: api, Sync: syncer, Ephemeral: eph, Media: med, AccountData: acct, E2EE: keys, KeyBackup: keybackup.New(db), Federation: fed}, nil
}

// Handler returns the homeserver's HTTP handler (client API and discovery).
// mounts add the Gitter features' routes (peek, ...) to the root router with
// their full paths; they reach the requester through s.Client.Authenticate.
// This way the homeserver never imports them.
func (s *Server) Handler(mounts ...func(chi.Router)) http.Handler {
	r := chi.NewRouter()
	r.Use(httpapi.CORS)
	r.Use(s.Client.GuestAccess)
	s.Client.Routes(r, s.Sync.Routes, s.Ephemeral.Routes, s.AccountData.Routes, s.E2EE.Routes, s.KeyBackup.Routes)
	for _, m := range mounts {
		m(r)
	}
	s.Media.Routes(r, s.Client.Authenticate)
	// The room directory, this server's or (?server=) another's.
	r.Get("/_matrix/client/v3/publicRooms", s.Federation.ClientPublicRooms)
	r.With(s.Client.Authenticate).Post("/_matrix/client/v3/publicRooms", s.Federation.ClientPublicRooms)
	s.Federation.WellKnownRoutes(r)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Fail(w, r, httpapi.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method %s not allowed here", r.Method))
	})
	return r
}

// FederationHandler returns the handler of the federation listener: the
// key server, the notary and the Server-Server API. mounts add routes, behind
// s.Federation.Authenticate where they need a signed request.
func (s *Server) FederationHandler(mounts ...func(chi.Router)) http.Handler {
	return s.Federation.Handler(append([]func(chi.Router){s.Federation.QueryRoutes, s.Federation.PDURoutes, s.Federation.InviteRoutes}, mounts...)...)
}

// loadOrCreateKey reads the server's signing key, creating it on first start.
func loadOrCreateKey(path string) (signing.Key, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := signing.ParseKeyFile(data)
		if err != nil {
			return signing.Key{}, fmt.Errorf("signing key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return signing.Key{}, fmt.Errorf("reading signing key: %w", err)
	}
	k, err := signing.GenerateKey()
	if err != nil {
		return signing.Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return signing.Key{}, fmt.Errorf("creating data directory: %w", err)
	}
	if err := os.WriteFile(path, k.MarshalKeyFile(), 0o600); err != nil {
		return signing.Key{}, fmt.Errorf("writing signing key: %w", err)
	}
	slog.Info("generated a new server signing key", "path", path, "key_id", k.ID)
	return k, nil
}
