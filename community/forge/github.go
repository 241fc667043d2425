package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
	"golang.org/x/oauth2"
)

// defaultTimeout bounds every call to a forge.
const defaultTimeout = 10 * time.Second

type githubClient struct {
	cfg  Config
	base *url.URL
}

func newGitHub(cfg Config) (*githubClient, error) {
	api := cfg.APIURL
	if !strings.HasSuffix(api, "/") {
		api += "/"
	}
	base, err := url.Parse(api)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("forge: GitHub API URL %q is not an absolute URL", cfg.APIURL)
	}
	return &githubClient{cfg: cfg, base: base}, nil
}

func (c *githubClient) Flavour() string          { return GitHub }
func (c *githubClient) HTTPClient() *http.Client { return c.cfg.HTTP }

func (c *githubClient) client(token *oauth2.Token) *github.Client {
	gh := github.NewClient(c.cfg.HTTP)
	switch {
	case token != nil && token.AccessToken != "":
		gh = gh.WithAuthToken(token.AccessToken)
	case c.cfg.ServiceToken != "":
		gh = gh.WithAuthToken(c.cfg.ServiceToken)
	}
	gh.BaseURL = c.base
	return gh
}

func (c *githubClient) Repo(ctx context.Context, path string, token *oauth2.Token) (*Repo, error) {
	owner, name, ok := strings.Cut(path, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, ErrNotFound
	}
	r, resp, err := c.client(token).Repositories.Get(ctx, owner, name)
	if err != nil {
		return nil, githubErr(resp, err)
	}
	out := &Repo{ID: r.GetID(), Path: r.GetFullName(), Name: r.GetName(), Description: r.GetDescription(),
		WebURL: r.GetHTMLURL(), Private: r.GetPrivate(), Access: AccessRead}
	if o := r.GetOwner(); o != nil {
		out.Owner = Owner{ID: o.GetID(), Path: o.GetLogin(), Name: o.GetLogin(), Kind: githubKind(o.GetType()),
			WebURL: o.GetHTMLURL(), AvatarURL: o.GetAvatarURL()}
	}
	// permissions describe the token's holder; without a user token
	// they describe the service token or nobody, which grants nothing.
	if token != nil {
		p := r.GetPermissions()
		switch {
		case p["admin"]:
			out.Access = AccessAdmin
		case p["push"]:
			out.Access = AccessWrite
		}
	}
	return out, nil
}

func (c *githubClient) Owner(ctx context.Context, path string, token *oauth2.Token) (*Owner, error) {
	if path == "" || strings.Contains(path, "/") {
		return nil, ErrNotFound
	}
	u, resp, err := c.client(token).Users.Get(ctx, path)
	if err != nil {
		return nil, githubErr(resp, err)
	}
	return &Owner{ID: u.GetID(), Path: u.GetLogin(), Name: u.GetName(), Kind: githubKind(u.GetType()),
		WebURL: u.GetHTMLURL(), AvatarURL: u.GetAvatarURL()}, nil
}

func githubKind(t string) string {
	if t == "Organization" {
		return "org"
	}
	return "user"
}

// githubErr classifies a failed call; rate limits are unavailability, not
// refusals.
func githubErr(resp *github.Response, err error) error {
	var rl *github.RateLimitError
	var abuse *github.AbuseRateLimitError
	if errors.As(err, &rl) || errors.As(err, &abuse) || resp == nil || resp.Response == nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("%w: GitHub answered %d", classify(resp.StatusCode), resp.StatusCode)
}
