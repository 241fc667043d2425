package forge

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/xanzy/go-gitlab"
	"golang.org/x/oauth2"
)

// GitLab access levels (Developer pushes, Owner administers).
const (
	gitlabDeveloper = 30
	gitlabOwner     = 50
)

type gitlabClient struct {
	cfg  Config
	anon *http.Client // cfg.HTTP without GitLab's empty token header
}

func newGitLab(cfg Config) (*gitlabClient, error) {
	if !strings.HasPrefix(cfg.APIURL, "http://") && !strings.HasPrefix(cfg.APIURL, "https://") {
		return nil, fmt.Errorf("forge: GitLab URL %q is not an absolute URL", cfg.APIURL)
	}
	anon := *cfg.HTTP
	next := anon.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	anon.Transport = stripEmptyToken{next}
	return &gitlabClient{cfg: cfg, anon: &anon}, nil
}

// stripEmptyToken drops the empty PRIVATE-TOKEN header go-gitlab sends for
// an anonymous client, which GitLab would refuse as a bad token.
type stripEmptyToken struct{ next http.RoundTripper }

func (s stripEmptyToken) RoundTrip(r *http.Request) (*http.Response, error) {
	if v, ok := r.Header["Private-Token"]; ok && (len(v) == 0 || v[0] == "") {
		r = r.Clone(r.Context())
		r.Header.Del("Private-Token")
	}
	return s.next.RoundTrip(r)
}

func (c *gitlabClient) Flavour() string          { return GitLab }
func (c *gitlabClient) HTTPClient() *http.Client { return c.cfg.HTTP }

// DESIGN.md names github.com/xanzy/go-gitlab; its successor,
// gitlab.com/gitlab-org/api/client-go, is the same API under a new path.
//
//lint:ignore SA1019 the module is deprecated for its new path, not for what it does
func (c *gitlabClient) client(token *oauth2.Token) (*gitlab.Client, error) {
	opts := []gitlab.ClientOptionFunc{gitlab.WithBaseURL(c.cfg.APIURL), gitlab.WithoutRetries()}
	switch {
	case token != nil && token.AccessToken != "":
		//lint:ignore SA1019 see above
		return gitlab.NewOAuthClient(token.AccessToken, append(opts, gitlab.WithHTTPClient(c.cfg.HTTP))...)
	case c.cfg.ServiceToken != "":
		//lint:ignore SA1019 see above
		return gitlab.NewClient(c.cfg.ServiceToken, append(opts, gitlab.WithHTTPClient(c.cfg.HTTP))...)
	}
	//lint:ignore SA1019 see above
	return gitlab.NewClient("", append(opts, gitlab.WithHTTPClient(c.anon))...)
}

func (c *gitlabClient) Repo(ctx context.Context, path string, token *oauth2.Token) (*Repo, error) {
	if !strings.Contains(path, "/") {
		return nil, ErrNotFound
	}
	gl, err := c.client(token)
	if err != nil {
		return nil, fmt.Errorf("forge: GitLab client: %w", err)
	}
	p, resp, err := gl.Projects.GetProject(path, nil, gitlab.WithContext(ctx))
	if err != nil {
		return nil, gitlabErr(resp, err)
	}
	out := &Repo{ID: int64(p.ID), Path: p.PathWithNamespace, Name: p.Name, Description: p.Description,
		WebURL: p.WebURL, Private: p.Visibility != gitlab.PublicVisibility, Access: AccessRead}
	if ns := p.Namespace; ns != nil {
		kind := "group"
		if ns.Kind == "user" {
			kind = "user"
		}
		out.Owner = Owner{ID: int64(ns.ID), Path: ns.FullPath, Name: ns.Name, Kind: kind, WebURL: ns.WebURL, AvatarURL: ns.AvatarURL}
	}
	if token != nil && p.Permissions != nil {
		level := 0
		if a := p.Permissions.ProjectAccess; a != nil {
			level = int(a.AccessLevel)
		}
		if a := p.Permissions.GroupAccess; a != nil && int(a.AccessLevel) > level {
			level = int(a.AccessLevel)
		}
		switch {
		case level >= gitlabOwner:
			out.Access = AccessAdmin
		case level >= gitlabDeveloper:
			out.Access = AccessWrite
		}
	}
	return out, nil
}

// Owner looks up a group (nested paths allowed) or, for a single segment
// that is no group, a user.
func (c *gitlabClient) Owner(ctx context.Context, path string, token *oauth2.Token) (*Owner, error) {
	gl, err := c.client(token)
	if err != nil {
		return nil, fmt.Errorf("forge: GitLab client: %w", err)
	}
	g, resp, err := gl.Groups.GetGroup(path, &gitlab.GetGroupOptions{WithProjects: gitlab.Ptr(false)}, gitlab.WithContext(ctx))
	if err == nil {
		return &Owner{ID: int64(g.ID), Path: g.FullPath, Name: g.Name, Kind: "group", WebURL: g.WebURL,
			AvatarURL: g.AvatarURL, Private: g.Visibility != gitlab.PublicVisibility}, nil
	}
	if cerr := gitlabErr(resp, err); !strings.Contains(path, "/") && isNotFound(cerr) {
		users, resp, err := gl.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr(path)}, gitlab.WithContext(ctx))
		if err != nil {
			return nil, gitlabErr(resp, err)
		}
		if len(users) == 0 {
			return nil, ErrNotFound
		}
		u := users[0]
		return &Owner{ID: int64(u.ID), Path: u.Username, Name: u.Name, Kind: "user", WebURL: u.WebURL, AvatarURL: u.AvatarURL}, nil
	} else {
		return nil, cerr
	}
}

func gitlabErr(resp *gitlab.Response, err error) error {
	if resp == nil || resp.Response == nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if resp.StatusCode == http.StatusForbidden && strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_scope") {
		// The token's scopes do not reach the API (read_user, Plaza's
		// sign-in scope, reads /user only; read_api is asked for only
		// when the person opts in to private repositories): it tells
		// nothing about the project, which may well be public.
		return fmt.Errorf("%w: GitLab answered 403 insufficient_scope", ErrTokenRefused)
	}
	return fmt.Errorf("%w: GitLab answered %d", classify(resp.StatusCode), resp.StatusCode)
}
