// Package federation owns Plaza's side of the Server-Server API. So far that
// is identity and transport: publishing our signing keys
// (/_matrix/key/v2/server) and acting as a notary for others'
// (/_matrix/key/v2/query), fetching and caching other servers' keys,
// resolving server names (.well-known, SRV, port 8448), signing outbound
// requests with X-Matrix authorization over verified TLS, and authenticating
// inbound ones. Joins, transactions and the rest of the federation API build
// on Service.Authenticate and Service.Client.
//
// Outbound, Sender (sender.go) delivers PDUs and EDUs in /send transactions
// from per-destination queues kept in PostgreSQL, with backoff for servers
// that fail. EDUs both ways are in edus.go: inbound ones are checked against
// their origin and handed to the ephemeral and e2ee services, which hand
// local changes back to the sender. query.go and query_directory.go answer
// other servers' profile, alias, device, key, directory and hierarchy
// queries, and ask theirs for local clients.
package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// Config configures federation.
type Config struct {
	ServerName string
	Key        signing.Key
	// Version is reported by /_matrix/federation/v1/version; empty: the
	// module version from the build information.
	Version string
	// RootCAs verifies other servers' certificates; nil: the system roots.
	RootCAs *x509.CertPool
	// Notaries are servers asked for keys that cannot be fetched from their
	// owner. Their own keys are fetched from them directly.
	Notaries []string
	// Delegate, if set, is served as m.server at /.well-known/matrix/server.
	Delegate string
	// KeyValidity is how long the keys we publish stay valid (default 7
	// days, the most other servers will honour).
	KeyValidity time.Duration
	// MaxBodyBytes bounds inbound request bodies (default 8 MiB).
	MaxBodyBytes int64
	// AllowPrivateAddresses lets outbound federation connect to loopback,
	// private and other non-public addresses: for tests and private
	// federations. Off, a server name leading there is unreachable.
	AllowPrivateAddresses bool
	// DNS looks up SRV records; nil: net.DefaultResolver.
	DNS DNS
	// WellKnownClient fetches /.well-known/matrix/server; nil: a client
	// trusting RootCAs.
	WellKnownClient *http.Client
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Defaults.
const (
	defaultKeyValidity  = 7 * 24 * time.Hour
	defaultMaxBodyBytes = 8 << 20
)

// Service is the federation side of the homeserver.
type Service struct {
	cfg      Config
	db       *storage.DB
	Resolver *Resolver
	Client   *Client
	Keys     *KeyRing
	// Sender delivers PDUs and EDUs to other servers once started.
	Sender *Sender
	locals Locals // set by SetLocals
	// inbound holds /send's rate limits and transaction answers.
	inbound inbound

	ownMu   sync.Mutex
	ownBody []byte // our signed key response, see ownKeyResponse
	ownMade time.Time
}

// New sets up federation and records the current signing key, retiring the
// keys it replaced (they stay published as old_verify_keys).
func New(ctx context.Context, cfg Config, db *storage.DB) (*Service, error) {
	if !id.ValidServerName(cfg.ServerName) {
		return nil, fmt.Errorf("federation: invalid server name %q", cfg.ServerName)
	}
	if len(cfg.Key.Private) != ed25519.PrivateKeySize {
		return nil, errors.New("federation: no valid signing key")
	}
	if cfg.Delegate != "" && !id.ValidServerName(cfg.Delegate) {
		return nil, fmt.Errorf("federation: delegated name %q is not a server name", cfg.Delegate)
	}
	for _, n := range cfg.Notaries {
		if !id.ValidServerName(n) {
			return nil, fmt.Errorf("federation: notary %q is not a server name", n)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeyValidity <= 0 {
		cfg.KeyValidity = defaultKeyValidity
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = defaultMaxBodyBytes
	}
	if cfg.Version == "" {
		cfg.Version = buildVersion()
	}
	if cfg.RootCAs == nil {
		roots, err := LoadRootCAs("")
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = roots
	}
	if cfg.DNS == nil {
		cfg.DNS = net.DefaultResolver
	}
	if cfg.WellKnownClient == nil {
		cfg.WellKnownClient = wellKnownClient(cfg.RootCAs, newDialer(cfg.AllowPrivateAddresses))
	}
	if err := db.RecordOwnKey(ctx, cfg.Key.ID, cfg.Key.Public(), cfg.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	resolver := NewResolver(cfg.DNS, cfg.WellKnownClient, cfg.Now)
	client := NewClient(cfg.ServerName, cfg.Key, resolver, cfg.RootCAs, cfg.AllowPrivateAddresses)
	keys := newKeyRing(cfg.ServerName, cfg.Key, db, client, cfg.Notaries, cfg.Now)
	return &Service{cfg: cfg, db: db, Resolver: resolver, Client: client, Keys: keys,
		Sender: newSender(cfg.ServerName, db, client, cfg.Now)}, nil
}

// maxWellKnownRedirects bounds redirect chains, which also ends loops.
const maxWellKnownRedirects = 10

// wellKnownClient fetches .well-known over ordinary HTTPS, following
// redirects as the spec asks, but only to HTTPS: a redirect to plain HTTP
// would let anyone on the path choose where we send federation traffic.
func wellKnownClient(roots *x509.CertPool, dialer *net.Dialer) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // a proxy would dial for us, past the dialer's address check
	t.DialContext = dialer.DialContext
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	t.ResponseHeaderTimeout = wellKnownTimeout
	return &http.Client{Transport: t, Timeout: wellKnownTimeout, CheckRedirect: httpsRedirectsOnly}
}

func httpsRedirectsOnly(req *http.Request, via []*http.Request) error {
	if len(via) >= maxWellKnownRedirects {
		return fmt.Errorf("well-known: more than %d redirects", maxWellKnownRedirects)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("well-known: redirect to %s, which is not HTTPS", req.URL.Redacted())
	}
	return nil
}

func buildVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// Handler serves the federation listener: the key server and notary, the
// version endpoint and .well-known, plus whatever mount adds (later
// federation endpoints, or a test's), typically behind Authenticate.
func (s *Service) Handler(mount ...func(chi.Router)) http.Handler {
	r := chi.NewRouter()
	s.Routes(r)
	for _, m := range mount {
		m(r)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Fail(w, r, httpapi.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method %s not allowed here", r.Method))
	})
	return r
}

// Routes adds the unauthenticated federation routes to r.
func (s *Service) Routes(r chi.Router) {
	r.Get("/_matrix/key/v2/server", s.serveKeys)
	r.Get("/_matrix/key/v2/server/{keyID}", s.serveKeys) // deprecated form, still requested by some servers
	r.Post("/_matrix/key/v2/query", s.serveKeyQuery)
	r.Get("/_matrix/key/v2/query/{serverName}", s.serveKeyQueryOne)
	r.Get("/_matrix/federation/v1/version", s.serveVersion)
	s.WellKnownRoutes(r)
}

// WellKnownRoutes serves /.well-known/matrix/server when a delegated name is
// configured. It belongs on whatever answers https://<server name>/, which is
// usually the client listener behind a reverse proxy.
func (s *Service) WellKnownRoutes(r chi.Router) {
	if s.cfg.Delegate == "" {
		return
	}
	r.Get("/.well-known/matrix/server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=86400")
		httpapi.Respond(w, http.StatusOK, map[string]string{"m.server": s.cfg.Delegate})
	})
}

func (s *Service) serveVersion(w http.ResponseWriter, r *http.Request) {
	httpapi.Respond(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Plaza", "version": s.cfg.Version}})
}

// ServerName is the name we federate as.
func (s *Service) ServerName() string { return s.cfg.ServerName }

// Close releases idle outbound connections.
func (s *Service) Close() {
	s.Sender.Stop()
	s.Client.Close()
}

// errUnauthorized is the spec's 401 for requests whose signature fails.
func errUnauthorized(format string, args ...any) error {
	return httpapi.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}
