// Package oauth owns signing in with GitHub and GitLab: the Matrix SSO flow
// (m.login.sso, spec "SSO client login/authentication") that any Matrix
// client can use, and the Plaza web site's own sign-in, which ends in a
// session cookie.
//
// Both flows run through a forge's OAuth 2.0 authorization-code grant with a
// state bound to the browser by a cookie and PKCE, then map the forge
// identity, by its immutable numeric id, to one Matrix account (created on
// first sign-in). A Matrix client then receives a single-use, short-lived
// login token on its redirectUrl (after the user confirms the client, unless
// it is the Plaza site itself); the web site receives a session cookie.
//
// Endpoints:
//
//	GET  /_matrix/client/v3/login/sso/redirect[/{idpId}]?redirectUrl=…   start SSO
//	GET  /_plaza/login?next=/path                                        "Sign in with …" buttons
//	GET  /_plaza/login/{idp}?next=/path                                  start web sign-in (link=1: link it; private=1: allow private repos)
//	GET  /_plaza/account                                                 the signed-in person's account page
//	GET  /_plaza/oauth/{idp}/callback                                    the forge's redirect back
//	POST /_plaza/oauth/confirm                                           "Continue to <host>?"
//	GET  /_plaza/session                                                 who is signed in (JSON)
//	POST /_plaza/logout                                                  sign out of the web site
//	GET  /_matrix/client/v3/auth/m.login.sso/fallback/web?session=…      the m.login.sso UIA stage (uia.go)
//	     /_plaza/demo-forge/…                                            the demo forge (demo mode only)
//
// # Accounts
//
// A forge identity (provider id, the forge's numeric user id) maps to one
// Matrix account; a rename on the forge keeps it. A new account's localpart
// is the login mapped with the spec's rules for other character sets
// (lower case; other bytes as =xx). When that is taken, the alternatives
// are tried in order: login-gh (GitHub), login-gl (GitLab) or login-demo
// (the demo forge), then login-gh-2, login-gh-3, … So the same login on
// GitHub and on GitLab gives two accounts, alice and alice-gl, until their
// owner links one forge to the other account from the web site
// (/_plaza/login/{idp}?link=1). Display name and avatar are copied from the
// forge when the account is created, and left to the person afterwards.
// Signing in with a forge creates accounts whatever the registration
// setting, which governs password registration only. Such accounts have no
// password: the homeserver's user-interactive auth offers them the
// m.login.sso stage, which this package serves (uia.go). Sign-in asks the
// forges for minimal scopes; reading private repositories needs one more,
// asked for only when the person opts in (scopes.go).
//
// # Safety
//
//   - state: random, single-use, expires after ten minutes, and bound to
//     the browser that started the flow by an HttpOnly cookie.
//   - PKCE (S256) on every flow, for both forges.
//   - redirectUrl: Plaza's own origin, the configured allow-list
//     (PLAZA_SSO_REDIRECT_ALLOWLIST: origins such as https://app.element.io,
//     or a native app's scheme such as im.fluffychat:), and in demo mode
//     http(s)://localhost. Anything else is refused before any redirect.
//     Other than Plaza's own site, the person confirms the client first.
//   - Login tokens: single-use, valid for DefaultLoginTokenLifetime.
//   - Forge tokens: sealed with AES-256-GCM under <data_dir>/oauth-token.key
//     (created on first start; keep it with the database).
//   - Cookies: HttpOnly, SameSite=Lax, and Secure when Plaza is served over
//     https (its public URL, TLS, or a proxy's X-Forwarded-Proto).
//   - Pages: no framing, no scripts (the UIA completion page allows its one
//     script by hash).
//
// The homeserver knows nothing of forges: it only advertises the identity
// providers this package hands it, and redeems login tokens.
package oauth

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver"
	"plaza/homeserver/clientapi"
	"plaza/oauth/fakeforge"
)

// Defaults for Config's durations.
const (
	// DefaultLoginTokenLifetime bounds how long a login token handed to a
	// client may wait to be redeemed. The spec suggests "around five
	// seconds"; a little more allows for a slow phone switching apps.
	DefaultLoginTokenLifetime = 10 * time.Second
	// flowLifetime bounds the time spent at the forge and on the
	// confirmation page.
	flowLifetime = 10 * time.Minute
	// DefaultSessionLifetime is how long a web session lasts.
	DefaultSessionLifetime = 30 * 24 * time.Hour
	// forgeTimeout bounds every call to a forge.
	forgeTimeout = 15 * time.Second
)

// ForgeConfig configures one forge's OAuth application.
type ForgeConfig struct {
	ClientID     string
	ClientSecret string
	// URL is the forge's web address (https://github.com, https://gitlab.com
	// or a self-hosted GitLab).
	URL string
	// APIURL is GitHub's REST API base (https://api.github.com/); GitLab's
	// API lives under URL.
	APIURL string
}

// Config configures sign-in.
type Config struct {
	// PublicURL is Plaza's base URL, as browsers reach it: callbacks are
	// registered under it, and redirect URLs on it are "the Plaza site
	// itself", which needs no confirmation.
	PublicURL string
	// DataDir holds the key that seals forge access tokens at rest.
	DataDir string
	// GitHub and GitLab are offered when not nil.
	GitHub *ForgeConfig
	GitLab *ForgeConfig
	// Demo offers the in-process demo forge when neither forge is
	// configured, and lets redirect URLs on localhost through.
	Demo bool
	// RedirectAllowlist lists what SSO redirectUrls may point at besides
	// PublicURL: origins (https://app.element.io) or, for native apps, a
	// bare scheme ending in ':' (im.fluffychat:).
	RedirectAllowlist []string
	// HTTPClient makes the calls to the forges (nil: a client with a
	// timeout). Tests point it at a fake forge.
	HTTPClient *http.Client
	// LoginTokenLifetime and SessionLifetime (0: the defaults).
	LoginTokenLifetime time.Duration
	SessionLifetime    time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Service serves sign-in.
type Service struct {
	cfg       Config
	hs        *homeserver.Server
	public    *url.URL
	providers []*provider
	sealer    *sealer
	allow     allowlist
	demo      *fakeforge.Forge // nil unless the demo forge is offered
	pages     *template.Template
	starts    startLimiter
	reauth    reauthFlows // m.login.sso UIA flows under way (uia.go)
	log       *slog.Logger
}

// New sets sign-in up on a homeserver and registers its identity providers
// with the client API's GET /login.
func New(cfg Config, hs *homeserver.Server) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LoginTokenLifetime == 0 {
		cfg.LoginTokenLifetime = DefaultLoginTokenLifetime
	}
	if cfg.SessionLifetime == 0 {
		cfg.SessionLifetime = DefaultSessionLifetime
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: forgeTimeout}
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	public, err := url.Parse(cfg.PublicURL)
	if err != nil || (public.Scheme != "http" && public.Scheme != "https") || public.Host == "" {
		return nil, fmt.Errorf("oauth: public URL %q is not an absolute http(s) URL", cfg.PublicURL)
	}
	allow, err := parseAllowlist(cfg.RedirectAllowlist, cfg.Demo)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("oauth: pages: %w", err)
	}
	s := &Service{cfg: cfg, hs: hs, public: public, allow: allow, pages: pages, log: slog.Default().With("component", "oauth")}
	if cfg.GitHub != nil {
		s.providers = append(s.providers, newGitHub("github", "GitHub", "github", "gh", *cfg.GitHub, cfg.HTTPClient, s.callbackURL("github")))
	}
	if cfg.GitLab != nil {
		s.providers = append(s.providers, newGitLab("gitlab", "GitLab", "gitlab", "gl", *cfg.GitLab, cfg.HTTPClient, s.callbackURL("gitlab")))
	}
	if len(s.providers) == 0 && cfg.Demo {
		s.demo = newDemoForge()
		base := cfg.PublicURL + demoPrefix
		s.providers = append(s.providers, newGitHub("demo", "Demo forge (not GitHub)", "", "demo",
			ForgeConfig{ClientID: demoClientID, ClientSecret: demoClientSecret, URL: base + "/github", APIURL: base + "/github/api/"},
			&http.Client{Timeout: forgeTimeout, Transport: s.demo.Transport()}, s.callbackURL("demo")))
	}
	if len(s.providers) > 0 {
		s.sealer, err = loadOrCreateSealer(filepath.Join(cfg.DataDir, "oauth-token.key"))
		if err != nil {
			return nil, err
		}
	}
	idps := make([]clientapi.IdentityProvider, len(s.providers))
	ctx, cancel := context.WithTimeout(context.Background(), forgeTimeout)
	defer cancel()
	for i, p := range s.providers {
		idps[i] = clientapi.IdentityProvider{ID: p.id, Name: p.name, Brand: p.brand}
		// Without its icon a provider is still offered: clients show the
		// name (and most know the brand).
		if icon, err := s.icon(ctx, p.brand); err != nil {
			s.log.Warn("no icon for an identity provider", "idp", p.id, "err", err)
		} else {
			idps[i].Icon = icon
		}
	}
	hs.Client.SetIdentityProviders(idps)
	if len(s.providers) > 0 {
		hs.Client.SetSSOReauth(s.canReauthenticate)
	}
	return s, nil
}

// Providers lists the ids of the identity providers on offer.
func (s *Service) Providers() []string {
	out := make([]string, len(s.providers))
	for i, p := range s.providers {
		out[i] = p.id
	}
	return out
}

// Handler serves sign-in's endpoints and hands every other request to next
// (the homeserver).
func (s *Service) Handler(next http.Handler) http.Handler {
	r := chi.NewRouter()
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		r.Get(prefix+"/login/sso/redirect", s.ssoRedirect)
		r.Get(prefix+"/login/sso/redirect/{idp}", s.ssoRedirect)
		r.Get(prefix+"/auth/m.login.sso/fallback/web", s.uiaFallback)
	}
	r.Get("/_plaza/login", s.loginPicker)
	r.Get("/_plaza/login/{idp}", s.webLogin)
	r.Get("/_plaza/account", s.accountPage)
	r.Get("/_plaza/oauth/{idp}/callback", s.callback)
	r.Post("/_plaza/oauth/confirm", s.confirm)
	r.Get("/_plaza/session", s.session)
	r.Post("/_plaza/logout", s.logout)
	if s.demo != nil {
		r.Handle(demoPrefix+"/*", s.demo)
	}
	r.NotFound(next.ServeHTTP)
	r.MethodNotAllowed(next.ServeHTTP)
	return r
}

func (s *Service) provider(id string) *provider {
	for _, p := range s.providers {
		if p.id == id {
			return p
		}
	}
	return nil
}

func (s *Service) callbackURL(idp string) string {
	return s.cfg.PublicURL + "/_plaza/oauth/" + idp + "/callback"
}

// secure reports whether cookies must be Secure: when Plaza is served over
// https, by its public URL, by the connection, or by a TLS-terminating
// proxy's X-Forwarded-Proto. The header is not trusted for anything else:
// a forged one can only make a browser keep the cookie off plain http.
func (s *Service) secure(r *http.Request) bool {
	return s.public.Scheme == "https" || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (s *Service) nowMS() int64 { return s.cfg.Now().UnixMilli() }

// errFlow is a sign-in failure to show the person in the browser.
type errFlow struct {
	status int
	msg    string
}

func (e *errFlow) Error() string { return e.msg }

func flowError(status int, format string, args ...any) error {
	return &errFlow{status: status, msg: fmt.Sprintf(format, args...)}
}

// fail renders a sign-in error page. Unexpected errors are logged and shown
// as a generic failure.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *errFlow
	if !errors.As(err, &fe) {
		s.log.Error("sign-in failed", "path", r.URL.Path, "err", err)
		fe = &errFlow{status: http.StatusInternalServerError, msg: "Something went wrong while signing you in. Please try again."}
	}
	s.renderPage(w, fe.status, page{Title: "Sign-in failed", Message: fe.msg})
}
