package oauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-github/v60/github"
	"github.com/xanzy/go-gitlab"
	"golang.org/x/oauth2"
)

// provider is one identity provider: a forge's OAuth application and how to
// ask the forge who signed in.
type provider struct {
	id, name, brand string
	flavour         string // github or gitlab: which API the forge speaks
	// suffix tells this forge's accounts apart when a localpart is taken
	// (see localpartCandidates).
	suffix string
	oauth  oauth2.Config
	client *http.Client
	// identity fetches the signed-in user with an access token.
	identity func(ctx context.Context, p *provider, tok *oauth2.Token) (forgeUser, error)
	apiURL   string // GitHub's API base, or GitLab's web base (go-gitlab appends /api/v4)
	// privateScope is the extra scope that lets Plaza read private
	// repositories, asked for only after the user opts in (scopes.go).
	privateScope string
}

// forgeUser is who signed in, as the forge describes them.
type forgeUser struct {
	ID        int64 // immutable
	Login     string
	Name      string
	AvatarURL string
}

func newGitHub(id, name, brand, suffix string, c ForgeConfig, client *http.Client, callback string) *provider {
	web := strings.TrimRight(c.URL, "/")
	api := c.APIURL
	if !strings.HasSuffix(api, "/") {
		api += "/"
	}
	return &provider{id: id, name: name, brand: brand, flavour: "github", suffix: suffix, client: client, apiURL: api,
		oauth: oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: callback, Scopes: githubScopes(),
			Endpoint: oauth2.Endpoint{AuthURL: web + "/login/oauth/authorize", TokenURL: web + "/login/oauth/access_token", AuthStyle: oauth2.AuthStyleInParams}},
		identity: githubUser, privateScope: "repo"}
}

func newGitLab(id, name, brand, suffix string, c ForgeConfig, client *http.Client, callback string) *provider {
	web := strings.TrimRight(c.URL, "/")
	return &provider{id: id, name: name, brand: brand, flavour: "gitlab", suffix: suffix, client: client, apiURL: web,
		oauth: oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: callback, Scopes: gitlabScopes(),
			Endpoint: oauth2.Endpoint{AuthURL: web + "/oauth/authorize", TokenURL: web + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}},
		identity: gitlabUser, privateScope: "read_api"}
}

// exchange redeems an authorization code, proving the PKCE verifier.
func (p *provider) exchange(ctx context.Context, code, verifier string) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, p.client)
	return p.oauth.Exchange(ctx, code, oauth2.VerifierOption(verifier))
}

func githubUser(ctx context.Context, p *provider, tok *oauth2.Token) (forgeUser, error) {
	gh := github.NewClient(p.client).WithAuthToken(tok.AccessToken)
	base, err := url.Parse(p.apiURL)
	if err != nil {
		return forgeUser{}, fmt.Errorf("GitHub API URL: %w", err)
	}
	gh.BaseURL = base
	u, _, err := gh.Users.Get(ctx, "")
	if err != nil {
		return forgeUser{}, fmt.Errorf("GitHub: who signed in: %w", err)
	}
	if u.GetID() <= 0 || u.GetLogin() == "" {
		return forgeUser{}, fmt.Errorf("GitHub: the user has no id or login")
	}
	return forgeUser{ID: u.GetID(), Login: u.GetLogin(), Name: u.GetName(), AvatarURL: u.GetAvatarURL()}, nil
}

func gitlabUser(ctx context.Context, p *provider, tok *oauth2.Token) (forgeUser, error) {
	// DESIGN.md names github.com/xanzy/go-gitlab; its successor,
	// gitlab.com/gitlab-org/api/client-go, is the same API under a new path.
	//lint:ignore SA1019 the module is deprecated for its new path, not for NewOAuthClient
	gl, err := gitlab.NewOAuthClient(tok.AccessToken, gitlab.WithBaseURL(p.apiURL), gitlab.WithHTTPClient(p.client), gitlab.WithoutRetries())
	if err != nil {
		return forgeUser{}, fmt.Errorf("GitLab client: %w", err)
	}
	u, _, err := gl.Users.CurrentUser(gitlab.WithContext(ctx))
	if err != nil {
		return forgeUser{}, fmt.Errorf("GitLab: who signed in: %w", err)
	}
	if u.ID <= 0 || u.Username == "" {
		return forgeUser{}, fmt.Errorf("GitLab: the user has no id or username")
	}
	return forgeUser{ID: int64(u.ID), Login: u.Username, Name: u.Name, AvatarURL: u.AvatarURL}, nil
}

// Scopes are minimal: reading the profile (and, on GitHub, e-mail and
// organisation membership, which the community features use). Private
// repositories need more, asked for only when a user opts in.
func githubScopes() []string { return []string{"read:user", "user:email", "read:org"} }

func gitlabScopes() []string { return []string{"read_user", "openid"} }
