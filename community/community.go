// Package community owns Plaza's Gitter domain: a room for every forge
// repository and a space for every owner (organisation, user, GitLab
// group), created on demand, with power levels that follow the forge and
// the repository's activity (webhooks) posted into the room.
//
// # Names
//
// One forge hosts rooms on demand per server (Config.Forge; see naming.go
// for the alias mapping). A repository acme/widget is the room
// #acme_widget:SERVER and the web page /acme/widget; its owner acme is the
// space #acme:SERVER and /acme, and the room is the space's child
// (m.space.child in the space, m.space.parent in the room).
//
// # Creation
//
// A room is created the first time a signed-in person opens its page
// (RepoRoom), anyone joins or looks up its alias (the client API's alias
// resolver; federation's /query/directory asks the same way), but only if
// the forge says the repository exists and the asker may see it. An
// anonymous page visit creates nothing (ErrRoomNotCreated). Creation is
// idempotent: one in-process flight per path, and across processes a claim
// on the path in the database that one creation wins (the others wait for
// its room). Creations are limited per user (CreatePerWindow per
// CreateWindow).
//
// The service account (@plaza:SERVER by default) creates every room and
// space, so it is the room's creator: in room version 12 creators rank
// above every power level, so it can always apply the forge's levels. It
// also posts the webhooks' notices. The person whose request caused the
// creation gains nothing by it.
//
// A public repository's room is public, world_readable, guest-joinable,
// published in the room directory, and has the alias. A private
// repository's room is invite-only and has no published alias: the alias
// resolves only for people the forge says may read the repository, and the
// join gate has the service account invite them as they join.
//
// The association is the room state event dev.plaza.forge (state key ""):
// {"forge", "flavour", "kind", "path", "id", "web_url"}; only power 100 may
// change it.
//
// # Private repositories
//
// Plaza reads private repositories only for people who opted in (package
// oauth: the forge token then carries GitHub's repo or GitLab's read_api
// scope, oauth.ForgeIdentity.PrivateRepos). For everyone else a private
// repository is absent, whether or not the forge would show it to their
// token: no room is created for them, its alias does not resolve
// (M_NOT_FOUND), and its page is the plain not-found page — the answers a
// repository that does not exist gets, so nothing tells whether it exists.
// The one difference is for signed-in viewers who have not opted in:
// RepoRoom says ErrMaybePrivate, so that the page can offer the opt-in,
// and it says so for every repository they cannot see, existing or not.
// A room that exists already and that a viewer may not enter refuses a
// join by room ID with M_FORBIDDEN (whoever has the room ID knows the room
// exists); finding it by path or alias still says M_NOT_FOUND. Once they
// opt in (a new token, with the scope, through the forge's authorization),
// the forge is asked again and they can join.
//
// # Power
//
// On every local join the forge is asked (with the joiner's own forge
// token, held by package oauth) what they may do: administrators get 100,
// people with push access (GitLab: Developer and up) 50, others 0. The
// answers are cached for PermissionTTL. Webhook deliveries about members
// drop a room's cache and re-check its members. Users with no identity on
// the forge (password accounts, other servers' users) keep whatever level
// room admins gave them, and so do GitLab users who have not opted in to
// private repositories: their sign-in token (read_user) reaches no project
// (GitLab answers 403 insufficient_scope), so it tells nothing. When the
// forge cannot be reached, public rooms stay joinable, private rooms
// refuse joins that cannot be checked, and no level changes.
//
// # Forge changes
//
// A repository renamed on the forge keeps its room: it is found by the
// forge's numeric id and takes the new name and alias. A GitHub
// "repository" delivery applies renames and visibility changes: a
// repository made private closes its room and removes members the forge
// does not vouch for.
//
// # Webhooks and activity
//
// See webhook.go: room admins set webhooks up, deliveries are verified
// (X-Hub-Signature-256, X-Gitlab-Token) and become m.notice events and
// items of the room's activity feed (Activity, and GET
// /_plaza/rooms/{roomID}/activity).
package community

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"plaza/community/forge"
	"plaza/homeserver"
	"plaza/homeserver/clientapi"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
	"plaza/oauth"
)

// Errors of RepoRoom.
var (
	// ErrRoomNotCreated: the repository exists but has no room yet, and the
	// anonymous viewer may not cause its creation.
	ErrRoomNotCreated = errors.New("community: the repository has no room yet")
	// ErrNoSuchRepo: the forge knows no such repository, or will not show
	// it to the viewer.
	ErrNoSuchRepo = errors.New("community: no such repository")
	// ErrMaybePrivate is ErrNoSuchRepo (errors.Is holds) for a viewer who
	// signed in with the forge but has not let Plaza read their private
	// repositories: the repository may be a private one they could see
	// after opting in (PrivateOptInURL). It is returned for every
	// repository such a viewer cannot see, whether it exists or not, so it
	// tells nothing about private repositories.
	ErrMaybePrivate = fmt.Errorf("%w (if it is private, allow Plaza to read your private repositories)", ErrNoSuchRepo)
	// ErrForgeUnavailable: the forge could not be asked.
	ErrForgeUnavailable = errors.New("community: the forge cannot be reached")
	// ErrRateLimited: the viewer created too many rooms lately.
	ErrRateLimited = errors.New("community: too many rooms created; try again later")
)

// StateTypeForge is the state event recording a room's forge association.
const StateTypeForge = "dev.plaza.forge"

// Defaults of Config.
const (
	DefaultServiceLocalpart = "plaza"
	DefaultPermissionTTL    = 10 * time.Minute
	DefaultCreatePerWindow  = 20
	DefaultCreateWindow     = time.Hour
	// maxConcurrentCreations bounds the rooms one process creates at once.
	maxConcurrentCreations = 8
)

// Identities hands out users' forge identities and tokens
// (*oauth.Service does).
type Identities interface {
	ForgeIdentity(ctx context.Context, userID, idp string) (*oauth.ForgeIdentity, error)
}

// Config configures the service.
type Config struct {
	// Forge is the forge whose repositories get rooms, and IDP the id of
	// its identity provider in package oauth (github, gitlab or demo),
	// which keys the association and finds users' tokens.
	Forge forge.Client
	IDP   string
	// Identities gives users' forge tokens (nil: no one has any).
	Identities Identities
	// PublicURL is Plaza's base URL, for webhook delivery URLs.
	PublicURL string
	// ServiceLocalpart names the service account (DefaultServiceLocalpart).
	ServiceLocalpart string
	// PermissionTTL bounds how long a forge answer about a user's access is
	// trusted (DefaultPermissionTTL).
	PermissionTTL time.Duration
	// CreatePerWindow rooms may be created per user per CreateWindow;
	// anonymous and remote askers share one allowance of the same size.
	CreatePerWindow int
	CreateWindow    time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Service runs rooms on demand.
type Service struct {
	cfg    Config
	hs     *homeserver.Server
	bot    string
	flight singleflight.Group
	perms  permCache
	limit  createLimiter
	misses missCache
	// creating bounds the creations running at once.
	creating chan struct{}
	// resyncs maps rooms whose members are being re-checked to whether
	// another run was asked for meanwhile.
	resyncs struct {
		mu      sync.Mutex
		running map[string]bool
	}
	rooms  sync.Map // room ID → *storage.CommunityRoom (associations never change)
	plLock [64]sync.Mutex
	log    *slog.Logger
}

// New sets rooms on demand up on a homeserver: it makes sure the service
// account exists and installs the client API's alias resolver and join
// gate. Mount Routes for the webhook endpoints.
func New(ctx context.Context, cfg Config, hs *homeserver.Server) (*Service, error) {
	if cfg.Forge == nil {
		return nil, errors.New("community: no forge configured")
	}
	if cfg.IDP == "" {
		cfg.IDP = cfg.Forge.Flavour()
	}
	if cfg.ServiceLocalpart == "" {
		cfg.ServiceLocalpart = DefaultServiceLocalpart
	}
	if cfg.PermissionTTL <= 0 {
		cfg.PermissionTTL = DefaultPermissionTTL
	}
	if cfg.CreatePerWindow <= 0 {
		cfg.CreatePerWindow = DefaultCreatePerWindow
	}
	if cfg.CreateWindow <= 0 {
		cfg.CreateWindow = DefaultCreateWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	s := &Service{cfg: cfg, hs: hs, bot: "@" + cfg.ServiceLocalpart + ":" + hs.Config.ServerName,
		log: slog.Default().With("component", "community")}
	s.perms.entries = map[permKey]permEntry{}
	s.creating = make(chan struct{}, maxConcurrentCreations)
	if err := s.ensureServiceAccount(ctx); err != nil {
		return nil, err
	}
	hs.Client.SetAliasResolver(s.resolveAlias)
	hs.Client.SetJoinGate(s.GateJoin)
	return s, nil
}

// ensureServiceAccount creates the service account, without a password so
// that nobody logs in as it. An account of that name that someone can log
// in to (a password, a forge identity) is refused: its owner would command
// every room.
func (s *Service) ensureServiceAccount(ctx context.Context) error {
	err := s.hs.DB.CreateAccount(ctx, storage.Account{UserID: s.bot, Localpart: s.cfg.ServiceLocalpart, DisplayName: "Plaza"}, s.nowMS())
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("community: creating the service account %s: %w", s.bot, err)
	}
	acct, err := s.hs.DB.AccountByUserID(ctx, s.bot)
	if err != nil {
		return fmt.Errorf("community: the service account %s: %w", s.bot, err)
	}
	idents, err := s.hs.DB.OAuthIdentities(ctx, s.bot)
	if err != nil {
		return fmt.Errorf("community: the service account %s: %w", s.bot, err)
	}
	if acct.PasswordHash != "" || len(idents) > 0 {
		return fmt.Errorf("community: %s, the service account, is someone's account (it has a password or a forge sign-in); "+
			"deactivate it or choose another service localpart", s.bot)
	}
	return nil
}

// ServiceAccount is the user ID that creates the rooms and posts notices.
func (s *Service) ServiceAccount() string { return s.bot }

// Alias returns the alias of a forge path ("acme/widget").
func (s *Service) Alias(forgePath string) string {
	return "#" + aliasLocalpart(s.cfg.Forge.Flavour(), forgePath) + ":" + s.hs.Config.ServerName
}

// RepoRoom returns the room of a forge path — the web path without its
// leading slash: "org/repo", a GitLab "group/sub/project", or an owner
// "org" (its space) — creating it when the forge says it exists and viewer
// (a signed-in Matrix user ID) may see it. For an anonymous viewer ("") it
// creates nothing: ErrRoomNotCreated if the repository exists with no room
// yet. ErrNoSuchRepo when the forge says no, or the viewer may not see it.
func (s *Service) RepoRoom(ctx context.Context, forgePath, viewer string) (string, error) {
	forgePath = strings.Trim(forgePath, "/")
	if !validPath(s.cfg.Forge.Flavour(), forgePath) {
		return "", ErrNoSuchRepo
	}
	return s.roomFor(ctx, forgePath, viewer, viewer != "")
}

// ActivityItem is one entry of a room's activity feed.
type ActivityItem struct {
	Kind    string // push, issue, pull_request, release, comment
	Actor   string // the forge login of who did it
	Summary string // one line, as posted in the notice
	URL     string // the forge page of the change
	EventID string // the room's m.notice
	Time    time.Time
}

// Activity returns a room's latest activity, newest first (limit: 1 to
// 100; others are clamped).
func (s *Service) Activity(ctx context.Context, roomID string, limit int) ([]ActivityItem, error) {
	limit = max(1, min(limit, 100))
	rows, err := s.hs.DB.CommunityActivities(ctx, roomID, limit)
	if err != nil {
		return nil, fmt.Errorf("community: activity of %s: %w", roomID, err)
	}
	out := make([]ActivityItem, len(rows))
	for i, a := range rows {
		out[i] = ActivityItem{Kind: a.Kind, Actor: a.Actor, Summary: a.Summary, URL: a.URL, EventID: a.EventID, Time: time.UnixMilli(a.CreatedTS)}
	}
	return out, nil
}

// resolveAlias is the client API's alias resolver: aliases naming forge
// paths get their room, created on demand.
func (s *Service) resolveAlias(ctx context.Context, alias, requester string) (string, error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !ok || server != s.hs.Config.ServerName {
		return "", clientapi.ErrNoSuchAlias
	}
	path, ok := pathOfLocalpart(s.cfg.Forge.Flavour(), local)
	if !ok {
		return "", clientapi.ErrNoSuchAlias
	}
	roomID, err := s.roomFor(ctx, path, requester, true)
	switch {
	case errors.Is(err, ErrNoSuchRepo):
		return "", clientapi.ErrNoSuchAlias
	case errors.Is(err, ErrForgeUnavailable):
		return "", httpapi.Custom(502, "M_UNKNOWN", "the forge cannot be reached to look %s up; try again later", alias)
	case errors.Is(err, ErrRateLimited):
		return "", httpapi.LimitExceeded(s.cfg.CreateWindow.Milliseconds() / int64(s.cfg.CreatePerWindow))
	}
	return roomID, err
}

// roomFor finds or (when create) creates the room of a path.
func (s *Service) roomFor(ctx context.Context, path, viewer string, create bool) (string, error) {
	// An existing room first: no forge call for public ones.
	for _, kind := range kindsOf(s.cfg.Forge.Flavour(), path) {
		c, err := s.hs.DB.CommunityRoomByPath(ctx, s.cfg.IDP, kind, path)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("community: looking %s up: %w", path, err)
		}
		if c.Private {
			who, err := s.asker(ctx, viewer)
			if err != nil {
				return "", err
			}
			access, _, err := s.access(ctx, c, viewer)
			if err != nil {
				return "", err
			}
			if access < forge.AccessRead {
				return "", s.absent(ctx, path, who)
			}
		}
		return c.RoomID, nil
	}
	who, err := s.asker(ctx, viewer)
	if err != nil {
		return "", err
	}
	for _, kind := range kindsOf(s.cfg.Forge.Flavour(), path) {
		var roomID string
		if kind == kindRepo {
			roomID, err = s.repoRoom(ctx, path, viewer, who, create)
		} else {
			roomID, err = s.ownerSpace(ctx, path, viewer, who, create)
		}
		if !errors.Is(err, ErrNoSuchRepo) {
			return roomID, err
		}
	}
	return "", who.notFound()
}

// absent answers someone who may not see an existing private room as a
// path without a room is answered when the forge shows nothing: the forge
// is asked the same questions, so that an unreachable forge (an error, not
// a 404) or a slow one reads the same whether or not the room exists.
func (s *Service) absent(ctx context.Context, path string, who asker) error {
	for _, kind := range kindsOf(s.cfg.Forge.Flavour(), path) {
		key := kind + ":" + path
		if who.token == nil && s.misses.has(key, s.cfg.Now()) {
			continue
		}
		lookup := func(token *oauth2.Token) error {
			if kind == kindRepo {
				_, err := s.cfg.Forge.Repo(ctx, path, token)
				return err
			}
			_, err := s.cfg.Forge.Owner(ctx, path, token)
			return err
		}
		err, token := lookup(who.token), who.token
		if errors.Is(err, forge.ErrTokenRefused) && token != nil {
			token = nil
			err = lookup(nil)
		}
		switch {
		case err == nil:
			// The forge shows it to the token, but the room's own check
			// (the opt-in, the cached access, the repository's id) said
			// no: absent all the same.
			return who.notFound()
		case errors.Is(err, forge.ErrNotFound):
			if token == nil {
				s.misses.add(key, s.cfg.Now().Add(missTTL))
			}
		default:
			return forgeErr(err)
		}
	}
	return who.notFound()
}

// PrivateOptInURL is the page where a signed-in person lets Plaza read
// their private repositories on this forge (their account page's "Allow
// access to private repositories"), coming back to next (a local path).
func (s *Service) PrivateOptInURL(next string) string {
	return oauth.PrivateOptInURL(s.cfg.IDP, next)
}

// Kinds of association.
const (
	kindRepo  = "repo"
	kindOwner = "owner"
)

// kindsOf lists what a path may name, in the order to try: on GitLab a
// path of two or more segments is a project or a subgroup (GitLab never
// lets both have the same path).
func kindsOf(flavour, path string) []string {
	switch n := strings.Count(path, "/") + 1; {
	case n == 1:
		return []string{kindOwner}
	case flavour == forge.GitLab:
		return []string{kindRepo, kindOwner}
	}
	return []string{kindRepo}
}

// asker is how the forge is asked on someone's behalf.
type asker struct {
	// token is theirs (nil: anonymous, remote, or no identity on the
	// forge; the forge is asked with the service token or anonymously).
	token *oauth2.Token
	// private: they opted in to Plaza reading their private repositories.
	// Without it private repositories and groups are absent to them, even
	// if the token could see them (a GitLab token with the api scope, a
	// forge that ignores scopes): the opt-in is the person's choice.
	private bool
}

// notFound is the answer to someone who cannot see a path (see "Private
// repositories" in the package doc).
func (a asker) notFound() error {
	if a.token != nil && !a.private {
		return ErrMaybePrivate
	}
	return ErrNoSuchRepo
}

// asker returns how to ask the forge for viewer.
func (s *Service) asker(ctx context.Context, viewer string) (asker, error) {
	if viewer == "" || s.cfg.Identities == nil {
		return asker{}, nil
	}
	ident, err := s.cfg.Identities.ForgeIdentity(ctx, viewer, s.cfg.IDP)
	if errors.Is(err, storage.ErrNotFound) {
		return asker{}, nil
	}
	if err != nil {
		return asker{}, fmt.Errorf("community: the forge identity of %s: %w", viewer, err)
	}
	if ident.Token == nil {
		return asker{}, nil
	}
	return asker{token: ident.Token, private: ident.PrivateRepos}, nil
}

// forgeErr maps a forge client's error to the package's.
func forgeErr(err error) error {
	switch {
	case errors.Is(err, forge.ErrNotFound):
		return ErrNoSuchRepo
	case errors.Is(err, forge.ErrUnavailable), errors.Is(err, forge.ErrTokenRefused):
		// Only the service token is left to refuse: a misconfiguration,
		// which looks to users like an unreachable forge.
		return fmt.Errorf("%w: %w", ErrForgeUnavailable, err)
	}
	return err
}

func (s *Service) nowMS() int64 { return s.cfg.Now().UnixMilli() }
