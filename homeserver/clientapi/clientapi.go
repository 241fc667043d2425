// Package clientapi owns the Matrix Client-Server API endpoints (except
// /sync and media, which have packages of their own): discovery, accounts,
// sessions and devices, profiles, rooms, membership, state, messages and
// relations. Handlers validate input, call the room service or storage, and
// answer with the spec's JSON and errors.
package clientapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/sync/singleflight"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Registration modes.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Config is what the client API needs to know about the deployment.
type Config struct {
	ServerName   string
	PublicURL    string // base URL clients use, for .well-known
	Registration string // open, token or closed
	// BcryptCost is the password hashing cost (tests lower it).
	BcryptCost int
	// AccessTokenLifetime, when set, makes access tokens expire and issues
	// refresh tokens to clients that ask for them.
	AccessTokenLifetime time.Duration
	// RateLimit turns per-user/IP rate limits on.
	RateLimit bool
	// RegistrationSharedSecret enables /_synapse/admin/v1/register
	// (admin_register.go); empty: the endpoint does not exist.
	RegistrationSharedSecret string
}

// API serves the client-server endpoints.
type API struct {
	cfg     Config
	db      *storage.DB
	rooms   *room.Service
	now     func() time.Time
	limiter *limiter
	txns    singleflight.Group
	tokens  sessionCache
	sso     ssoProviders

	registerNonces nonceStore

	aliasResolver AliasResolver
	joinGate      JoinGate
	remote        Remote
	remoteProfile RemoteProfile // nil: remote profiles are not found
}

// New builds the API.
func New(cfg Config, db *storage.DB, rooms *room.Service) *API {
	return &API{cfg: cfg, db: db, rooms: rooms, now: time.Now, limiter: newLimiter(cfg.RateLimit)}
}

// Routes mounts the endpoints on r (the root router). Other packages' routes
// that live under /_matrix/client/v3 behind an access token (sync, ...) are
// added through authed.
func (a *API) Routes(r chi.Router, authed ...func(chi.Router)) {
	r.Get("/.well-known/matrix/client", a.wellKnown)
	a.adminRegisterRoutes(r)
	r.Route("/_matrix/client", func(r chi.Router) {
		r.Get("/versions", a.versions)
		r.Route("/v1", func(r chi.Router) {
			r.Use(a.Authenticate)
			a.V1Routes(r)
		})
		for _, prefix := range []string{"/v3", "/r0"} {
			r.Route(prefix, func(r chi.Router) {
				a.accountRoutes(r)
				a.publicRoutes(r)
				a.directoryVisibilityRoutes(r)
				r.Group(func(r chi.Router) {
					r.Use(a.Authenticate)
					a.authedRoutes(r)
					for _, f := range authed {
						f(r)
					}
				})
			})
		}
	})
}

func (a *API) authedRoutes(r chi.Router) {
	r.Get("/capabilities", a.capabilities)
	a.sessionRoutes(r)
	a.authedProfileRoutes(r)
	a.roomRoutes(r)
	a.messageRoutes(r)
}

func (a *API) wellKnown(w http.ResponseWriter, r *http.Request) {
	base := a.cfg.PublicURL
	if base == "" {
		base = "http://" + a.cfg.ServerName
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": strings.TrimRight(base, "/")}})
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	httpapi.Respond(w, http.StatusOK, map[string]any{
		"versions": []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
			"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19"},
		"unstable_features": map[string]bool{"org.matrix.msc2753": true},
	})
}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request) {
	available := map[string]string{}
	for _, v := range event.SupportedVersions() {
		available[v] = "stable"
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.room_versions":                      map[string]any{"default": event.DefaultRoomVersion, "available": available},
		"m.change_password":                    map[string]bool{"enabled": true},
		"m.set_displayname":                    map[string]bool{"enabled": true},
		"m.set_avatar_url":                     map[string]bool{"enabled": true},
		"m.3pid_changes":                       map[string]bool{"enabled": false},
		"m.get_login_token":                    map[string]bool{"enabled": false},
		"m.profile_fields":                     map[string]any{"enabled": false},
		"org.matrix.msc3244.room_capabilities": map[string]any{},
	}})
}

// accessToken reads the access token from the header or query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimPrefix(h, "Bearer ")
	}
	return r.URL.Query().Get("access_token")
}

// optionalRequester resolves a valid access token on a public endpoint;
// without one (or with a bad one) the request is anonymous.
func (a *API) optionalRequester(r *http.Request) (*httpapi.Requester, bool) {
	token := accessToken(r)
	if token == "" {
		return nil, false
	}
	s, err := a.tokens.lookup(r.Context(), a.db, token, a.now())
	if err != nil || (s.ExpiresTS != 0 && s.ExpiresTS < a.now().UnixMilli()) {
		return nil, false
	}
	return &httpapi.Requester{UserID: s.UserID, DeviceID: s.DeviceID, IsGuest: s.IsGuest, IsAdmin: s.IsAdmin}, true
}

// Authenticate resolves the access token (header or query parameter) into a
// requester, or answers 401.
func (a *API) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := accessToken(r)
		if token == "" {
			httpapi.Fail(w, r, httpapi.MissingToken())
			return
		}
		s, err := a.tokens.lookup(r.Context(), a.db, token, a.now())
		if errors.Is(err, storage.ErrNotFound) {
			httpapi.Fail(w, r, httpapi.UnknownToken(false))
			return
		}
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if s.ExpiresTS != 0 && s.ExpiresTS < a.now().UnixMilli() {
			httpapi.Fail(w, r, httpapi.UnknownToken(true))
			return
		}
		ctx := httpapi.WithRequester(r.Context(), &httpapi.Requester{UserID: s.UserID, DeviceID: s.DeviceID, IsGuest: s.IsGuest, IsAdmin: s.IsAdmin})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// requester returns the authenticated requester (routes behind Authenticate).
func requester(r *http.Request) *httpapi.Requester { return httpapi.RequesterFrom(r.Context()) }

// clientIP is the remote address without port, for rate limits and devices.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// randomToken returns n random bytes as URL-safe base64.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// guestOnly refuses guests (spec "Guest access": they get a fixed set of
// endpoints).
func guestOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rq := requester(r); rq != nil && rq.IsGuest {
			httpapi.Fail(w, r, httpapi.GuestAccessForbidden())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// noGuests wraps handlers guests may not use.
func noGuests(h http.HandlerFunc) http.HandlerFunc {
	return guestOnly(h).ServeHTTP
}
