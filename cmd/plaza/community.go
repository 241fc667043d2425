package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"plaza/community"
	"plaza/community/forge"
	"plaza/homeserver"
	"plaza/oauth"
	"plaza/web"
)

// communityConfig is rooms on demand (package community).
type communityConfig struct {
	// Forge is github, gitlab, off, or "" for the first configured of
	// GitHub, GitLab and (in demo mode) the demo forge.
	Forge string
	// Token is a forge token used for lookups no signed-in user makes
	// (anonymous visitors, other servers): a higher rate limit than
	// anonymous calls.
	Token string
}

func communitySettings() []setting {
	return []setting{
		{key: "community_forge", env: "PLAZA_COMMUNITY_FORGE", def: "",
			help:  "the forge whose repositories get rooms on demand: github, gitlab or off; empty: the first configured (demo: the demo forge)",
			field: func(c *Config) any { return &c.Community.Forge }},
		{key: "community_forge_token", env: "PLAZA_COMMUNITY_FORGE_TOKEN", def: "", secret: true,
			help:  "forge token for lookups no signed-in user makes (anonymous visits, other servers); empty: anonymous calls",
			field: func(c *Config) any { return &c.Community.Token }},
	}
}

// validateCommunity checks that the chosen forge is configured.
func (c *Config) validateCommunity(fail func(key, value, problem string) error) error {
	switch f := c.Community.Forge; f {
	case "", "off":
	case "github":
		if c.SSO.GitHubClientID == "" {
			return fail("community_forge", f, "needs GitHub sign-in (github_client_id) configured")
		}
	case "gitlab":
		if c.SSO.GitLabClientID == "" {
			return fail("community_forge", f, "needs GitLab sign-in (gitlab_client_id) configured")
		}
	default:
		return fail("community_forge", f, "must be github, gitlab, off or empty")
	}
	return nil
}

// newCommunity sets rooms on demand up for the configured forge, or the
// demo forge when sign-in offers it; nil when there is no forge.
func newCommunity(ctx context.Context, cfg Config, hs *homeserver.Server, signIn *oauth.Service, log *slog.Logger) (*community.Service, error) {
	c := cfg.Community
	if c.Forge == "off" {
		log.Info("rooms on demand are off (community_forge = off)")
		return nil, nil
	}
	idp := ""
	switch {
	case c.Forge == "github" || (c.Forge == "" && cfg.SSO.GitHubClientID != ""):
		idp = "github"
	case c.Forge == "gitlab" || (c.Forge == "" && cfg.SSO.GitLabClientID != ""):
		idp = "gitlab"
	default:
		idp = "demo" // offered by sign-in only in demo mode with no forge configured
	}
	// Sign-in knows the forge's API address and how to reach it (the demo
	// forge answers in process).
	api, ok := signIn.ForgeAPI(idp)
	if !ok {
		log.Info("rooms on demand are off: no forge is configured (PLAZA_GITHUB_CLIENT_ID or PLAZA_GITLAB_CLIENT_ID)")
		return nil, nil
	}
	flavour, fc := api.Flavour, forge.Config{APIURL: api.APIURL, HTTP: api.HTTP, ServiceToken: c.Token}
	client, err := forge.New(flavour, fc)
	if err != nil {
		return nil, err
	}
	svc, err := community.New(ctx, community.Config{Forge: client, IDP: idp, Identities: signIn, PublicURL: cfg.PublicURL}, hs)
	if err != nil {
		return nil, err
	}
	log.Info(fmt.Sprintf("rooms on demand for %s repositories: join %s or open %s/org/repo", idp, svc.Alias("org/repo"), cfg.PublicURL),
		"service_account", svc.ServiceAccount())
	return svc, nil
}

// webRepos lets the web site's room pages (/org/repo) find and create rooms
// through community, with the errors the web package knows.
type webRepos struct{ svc *community.Service }

func (r webRepos) RepoRoom(ctx context.Context, forgePath, viewer string) (string, error) {
	roomID, err := r.svc.RepoRoom(ctx, forgePath, viewer)
	switch {
	case errors.Is(err, community.ErrRoomNotCreated):
		return "", web.ErrRoomNotCreated
	case errors.Is(err, community.ErrMaybePrivate):
		return "", &web.MaybePrivateError{OptInURL: r.svc.PrivateOptInURL("/" + forgePath)}
	case errors.Is(err, community.ErrNoSuchRepo):
		return "", web.ErrNoSuchRepo
	}
	return roomID, err
}

// repoRooms is the web site's Config.Repos: nil without rooms on demand.
// joinGate is community's join gate for the web site's join button (nil
// without rooms on demand).
func joinGate(svc *community.Service) func(ctx context.Context, roomID, userID string) error {
	if svc == nil {
		return nil
	}
	return svc.GateJoin
}

func repoRooms(svc *community.Service) web.RepoRooms {
	if svc == nil {
		return nil
	}
	return webRepos{svc}
}
