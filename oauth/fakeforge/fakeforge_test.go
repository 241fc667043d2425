package fakeforge_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-github/v60/github"
	"github.com/xanzy/go-gitlab"
	"golang.org/x/oauth2"

	"plaza/oauth/fakeforge"
)

// newForge starts a forge with one org, a public and a private repository.
func newForge(t *testing.T) (*fakeforge.Forge, *httptest.Server) {
	t.Helper()
	f := fakeforge.New(fakeforge.Options{})
	f.AddClient("cid", "secret")
	f.AddUser(fakeforge.User{ID: 1, Login: "Alice", Name: "Alice A", Email: "alice@example.org"})
	f.AddUser(fakeforge.User{ID: 2, Login: "bob", Name: "Bob B"})
	f.AddOrg(fakeforge.Org{ID: 10, Login: "acme", Members: []int64{1}})
	f.AddRepo(fakeforge.Repo{ID: 100, Owner: "acme", Name: "widget", Description: "Widgets", Access: map[int64]string{1: fakeforge.PermAdmin}})
	f.AddRepo(fakeforge.Repo{ID: 101, Owner: "acme", Name: "secret", Private: true, Access: map[int64]string{1: fakeforge.PermWrite}})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// authorize walks the authorization redirect without following it into the
// (absent) client and returns the code.
func authorize(t *testing.T, authURL string) (code, state string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	return loc.Query().Get("code"), loc.Query().Get("state")
}

func TestGitHub(t *testing.T) {
	f, srv := newForge(t)
	f.SignIn(1)
	cfg := oauth2.Config{ClientID: "cid", ClientSecret: "secret", RedirectURL: "http://client.test/cb", Scopes: []string{"read:user", "repo"},
		Endpoint: oauth2.Endpoint{AuthURL: srv.URL + "/github/login/oauth/authorize", TokenURL: srv.URL + "/github/login/oauth/access_token"}}
	verifier := oauth2.GenerateVerifier()
	code, state := authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	if state != "st" || code == "" {
		t.Fatalf("code %q state %q", code, state)
	}
	ctx := context.Background()
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("a code was exchanged twice")
	}
	gh := github.NewClient(cfg.Client(ctx, tok))
	gh.BaseURL, _ = url.Parse(srv.URL + "/github/api/")

	u, _, err := gh.Users.Get(ctx, "")
	if err != nil || u.GetID() != 1 || u.GetLogin() != "Alice" {
		t.Fatalf("user %+v, %v", u, err)
	}
	emails, _, err := gh.Users.ListEmails(ctx, nil)
	if err != nil || len(emails) != 1 || emails[0].GetEmail() != "alice@example.org" {
		t.Fatalf("emails %+v, %v", emails, err)
	}
	orgs, _, err := gh.Organizations.List(ctx, "", nil)
	if err != nil || len(orgs) != 1 || orgs[0].GetLogin() != "acme" {
		t.Fatalf("orgs %+v, %v", orgs, err)
	}
	repo, _, err := gh.Repositories.Get(ctx, "acme", "secret")
	if err != nil || !repo.GetPrivate() || repo.GetID() != 101 {
		t.Fatalf("repo %+v, %v", repo, err)
	}
	perm, _, err := gh.Repositories.GetPermissionLevel(ctx, "acme", "widget", "alice")
	if err != nil || perm.GetPermission() != "admin" {
		t.Fatalf("permission %+v, %v", perm, err)
	}
	perm, _, err = gh.Repositories.GetPermissionLevel(ctx, "acme", "widget", "bob")
	if err != nil || perm.GetPermission() != "read" {
		t.Fatalf("bob's permission %+v, %v", perm, err)
	}
	if _, _, err := gh.Repositories.Get(ctx, "acme", "nope"); err == nil {
		t.Fatal("an unknown repository was found")
	}

	f.Rename(1, "alice2")
	u, _, err = gh.Users.Get(ctx, "")
	if err != nil || u.GetID() != 1 || u.GetLogin() != "alice2" {
		t.Fatalf("renamed user %+v, %v", u, err)
	}
}

func TestGitLabPKCE(t *testing.T) {
	f, srv := newForge(t)
	f.SignIn(2)
	cfg := oauth2.Config{ClientID: "cid", ClientSecret: "secret", RedirectURL: "http://client.test/cb", Scopes: []string{"read_user", "read_api"},
		Endpoint: oauth2.Endpoint{AuthURL: srv.URL + "/gitlab/oauth/authorize", TokenURL: srv.URL + "/gitlab/oauth/token"}}
	ctx := context.Background()

	verifier := oauth2.GenerateVerifier()
	code, _ := authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
		t.Fatal("a wrong PKCE verifier was accepted")
	}

	code, _ = authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 DESIGN.md names xanzy/go-gitlab (deprecated only for its new module path)
	gl, err := gitlab.NewOAuthClient(tok.AccessToken, gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := gl.Users.CurrentUser()
	if err != nil || u.ID != 2 || u.Username != "bob" {
		t.Fatalf("user %+v, %v", u, err)
	}
	p, _, err := gl.Projects.GetProject("acme/widget", nil)
	if err != nil || p.ID != 100 || p.PathWithNamespace != "acme/widget" {
		t.Fatalf("project %+v, %v", p, err)
	}
	if _, _, err := gl.Projects.GetProject("acme/secret", nil); err == nil {
		t.Fatal("bob can see a private project he has no access to")
	}
	if _, _, err := gl.ProjectMembers.GetInheritedProjectMember(100, 2); err == nil {
		t.Fatal("bob is a member of acme/widget")
	}
	f.SignIn(1)
	cfg.Scopes = []string{"read_user", "read_api"}
	code, _ = authorize(t, cfg.AuthCodeURL("st"))
	tok, err = cfg.Exchange(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 as above
	gl, _ = gitlab.NewOAuthClient(tok.AccessToken, gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
	m, _, err := gl.ProjectMembers.GetInheritedProjectMember(101, 1)
	if err != nil || m.AccessLevel != gitlab.DeveloperPermissions {
		t.Fatalf("member %+v, %v", m, err)
	}
}

func TestConsentForm(t *testing.T) {
	_, srv := newForge(t)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{"client_id": {"cid"}, "redirect_uri": {"http://client.test/cb"}, "state": {"s"}, "deny": {"1"}}
	resp, err := c.PostForm(srv.URL+"/github/login/oauth/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "s" {
		t.Fatalf("deny redirected to %s", loc)
	}
	resp, err = c.Get(srv.URL + "/github/login/oauth/authorize?client_id=cid&redirect_uri=http://client.test/cb&state=s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with no one signed in the form should show; got %d", resp.StatusCode)
	}
}

func TestTransport(t *testing.T) {
	f := fakeforge.New(fakeforge.Options{Prefix: "/forge"})
	f.AddUser(fakeforge.User{ID: 7, Login: "x"})
	c := &http.Client{Transport: f.Transport()}
	resp, err := c.Get("http://anywhere.invalid/forge/avatars/7.png")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("avatar: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestPublicReadsAndOwners covers what rooms on demand ask: anonymous reads
// of public things, owners, GitLab groups and permissions, IssueToken and
// SetDown.
func TestPublicReadsAndOwners(t *testing.T) {
	f, srv := newForge(t)
	f.AddOrg(fakeforge.Org{ID: 11, Login: "acme/sub", Private: true, Members: []int64{1}})
	f.AddRepo(fakeforge.Repo{ID: 102, Owner: "acme/sub", Name: "deep", Private: true, Access: map[int64]string{1: fakeforge.PermAdmin}})
	ctx := context.Background()
	anon := github.NewClient(nil)
	anon.BaseURL, _ = url.Parse(srv.URL + "/github/api/")
	if r, _, err := anon.Repositories.Get(ctx, "acme", "widget"); err != nil || r.GetID() != 100 || r.GetPermissions()["push"] {
		t.Fatalf("anonymous read of a public repo: %+v %v", r, err)
	}
	if _, resp, err := anon.Repositories.Get(ctx, "acme", "secret"); err == nil || resp.StatusCode != 404 {
		t.Fatal("an anonymous read found a private repo")
	}
	if _, resp, err := anon.Users.Get(ctx, ""); err == nil || resp.StatusCode != 401 {
		t.Fatal("/user answered without a token")
	}
	if o, _, err := anon.Users.Get(ctx, "acme"); err != nil || o.GetType() != "Organization" || o.GetAvatarURL() == "" {
		t.Fatalf("org as a user: %+v %v", o, err)
	}
	bad := github.NewClient(nil).WithAuthToken("nope")
	bad.BaseURL = anon.BaseURL
	if _, resp, err := bad.Repositories.Get(ctx, "acme", "widget"); err == nil || resp.StatusCode != 401 {
		t.Fatal("a bad token was not refused")
	}
	alice := github.NewClient(nil).WithAuthToken(f.IssueToken(1))
	alice.BaseURL = anon.BaseURL
	if r, _, err := alice.Repositories.Get(ctx, "acme", "widget"); err != nil || !r.GetPermissions()["admin"] {
		t.Fatalf("alice's permissions: %+v %v", r, err)
	}

	//lint:ignore SA1019 DESIGN.md names xanzy/go-gitlab (deprecated only for its new module path)
	gl, _ := gitlab.NewOAuthClient(f.IssueToken(1), gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
	p, _, err := gl.Projects.GetProject("acme/sub/deep", nil)
	if err != nil || p.Namespace.FullPath != "acme/sub" || p.Permissions.ProjectAccess.AccessLevel != gitlab.OwnerPermissions {
		t.Fatalf("nested project: %+v %v", p, err)
	}
	g, _, err := gl.Groups.GetGroup("acme/sub", nil)
	if err != nil || g.ID != 11 || g.Visibility != gitlab.PrivateVisibility {
		t.Fatalf("subgroup: %+v %v", g, err)
	}
	//lint:ignore SA1019 as above
	glBob, _ := gitlab.NewOAuthClient(f.IssueToken(2), gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
	if _, _, err := glBob.Groups.GetGroup("acme/sub", nil); err == nil {
		t.Fatal("bob sees a private group he is not in")
	}
	users, _, err := glBob.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("alice")})
	if err != nil || len(users) != 1 || users[0].ID != 1 {
		t.Fatalf("users by name: %+v %v", users, err)
	}

	f.SetDown(true)
	if _, resp, err := alice.Repositories.Get(ctx, "acme", "widget"); err == nil || resp.StatusCode != 503 {
		t.Fatal("a forge that is down answered")
	}
	f.SetDown(false)
	if _, _, err := alice.Repositories.Get(ctx, "acme", "widget"); err != nil {
		t.Fatalf("the forge is back: %v", err)
	}
}

// TestScopes: a GitHub token without the repo scope sees private
// repositories as 404 — on repository lookups and on the permission
// endpoint — even for a collaborator, and public ones as before; a GitLab
// token without read_api or api reads /user and /users only, and gets 403
// insufficient_scope for projects and groups, public or not, as the real
// forges answer. A token granted the scope through the OAuth flow sees
// what its holder may.
func TestScopes(t *testing.T) {
	f, srv := newForge(t)
	f.SignIn(1)
	f.AddOrg(fakeforge.Org{ID: 11, Login: "acme/sub", Private: true, Members: []int64{1}})
	ctx := context.Background()
	flow := func(t *testing.T, flavour string, scopes ...string) *oauth2.Token {
		t.Helper()
		ep := oauth2.Endpoint{AuthURL: srv.URL + "/github/login/oauth/authorize", TokenURL: srv.URL + "/github/login/oauth/access_token"}
		if flavour == "gitlab" {
			ep = oauth2.Endpoint{AuthURL: srv.URL + "/gitlab/oauth/authorize", TokenURL: srv.URL + "/gitlab/oauth/token"}
		}
		cfg := oauth2.Config{ClientID: "cid", ClientSecret: "secret", RedirectURL: "http://client.test/cb", Endpoint: ep, Scopes: scopes}
		code, _ := authorize(t, cfg.AuthCodeURL("st"))
		tok, err := cfg.Exchange(ctx, code)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t.Run("github", func(t *testing.T) {
		cases := []struct {
			name    string
			token   string
			private bool
		}{
			{"sign-in scopes", flow(t, "github", "read:user", "user:email", "read:org").AccessToken, false},
			{"public_repo", f.IssueToken(1, "public_repo"), false},
			{"opted in", flow(t, "github", "read:user", "user:email", "read:org", "repo").AccessToken, true},
			{"full token", f.IssueToken(1), true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				gh := github.NewClient(nil).WithAuthToken(c.token)
				gh.BaseURL, _ = url.Parse(srv.URL + "/github/api/")
				if r, _, err := gh.Repositories.Get(ctx, "acme", "widget"); err != nil || !r.GetPermissions()["admin"] {
					t.Fatalf("public repository: %+v %v", r, err)
				}
				r, resp, err := gh.Repositories.Get(ctx, "acme", "secret")
				if c.private && (err != nil || r.GetID() != 101 || !r.GetPermissions()["push"]) {
					t.Fatalf("private repository with the repo scope: %+v %v", r, err)
				}
				if !c.private && (err == nil || resp.StatusCode != 404) {
					t.Fatalf("private repository without the repo scope: %+v %v", r, err)
				}
				p, resp, err := gh.Repositories.GetPermissionLevel(ctx, "acme", "secret", "alice")
				if c.private && (err != nil || p.GetPermission() != "write") {
					t.Fatalf("permission on the private repository with the repo scope: %+v %v", p, err)
				}
				if !c.private && (err == nil || resp.StatusCode != 404) {
					t.Fatalf("permission on the private repository without the repo scope: %+v %v", p, err)
				}
			})
		}
	})

	t.Run("gitlab", func(t *testing.T) {
		cases := []struct {
			name    string
			token   string
			private bool
		}{
			{"sign-in scopes", flow(t, "gitlab", "read_user", "openid").AccessToken, false},
			{"read_repository", f.IssueToken(1, "read_user", "read_repository"), false},
			{"opted in", flow(t, "gitlab", "read_user", "openid", "read_api").AccessToken, true},
			{"api", f.IssueToken(1, "api"), true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				//lint:ignore SA1019 DESIGN.md names xanzy/go-gitlab (deprecated only for its new module path)
				gl, _ := gitlab.NewOAuthClient(c.token, gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
				if u, _, err := gl.Users.CurrentUser(); err != nil || u.ID != 1 {
					t.Fatalf("/user: %+v %v", u, err)
				}
				if users, _, err := gl.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("bob")}); err != nil || len(users) != 1 {
					t.Fatalf("/users: %+v %v", users, err)
				}
				// insufficient is GitLab's answer to a token whose scopes do
				// not reach the API.
				insufficient := func(what string, resp *gitlab.Response, err error) {
					t.Helper()
					var er *gitlab.ErrorResponse
					if err == nil || resp == nil || resp.StatusCode != 403 || !errors.As(err, &er) ||
						!strings.Contains(string(er.Body), `"insufficient_scope"`) || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_scope") {
						t.Fatalf("%s without read_api: %v, want 403 insufficient_scope", what, err)
					}
				}
				p, resp, err := gl.Projects.GetProject("acme/widget", nil)
				if c.private && (err != nil || p.ID != 100) {
					t.Fatalf("public project: %+v %v", p, err)
				}
				if !c.private {
					insufficient("public project", resp, err)
				}
				p, resp, err = gl.Projects.GetProject("acme/secret", nil)
				if c.private && (err != nil || p.ID != 101 || p.Permissions.ProjectAccess.AccessLevel != gitlab.DeveloperPermissions) {
					t.Fatalf("private project with read_api: %+v %v", p, err)
				}
				if !c.private {
					insufficient("private project", resp, err)
				}
				m, resp, err := gl.ProjectMembers.GetInheritedProjectMember(101, 1)
				if c.private && (err != nil || m.AccessLevel != gitlab.DeveloperPermissions) {
					t.Fatalf("member of the private project with read_api: %+v %v", m, err)
				}
				if !c.private {
					insufficient("project member", resp, err)
				}
				g, resp, err := gl.Groups.GetGroup("acme/sub", nil)
				if c.private && (err != nil || g.ID != 11) {
					t.Fatalf("private group with read_api: %+v %v", g, err)
				}
				if !c.private {
					insufficient("private group", resp, err)
				}
			})
		}
		// Without a token, as before: public projects read, private ones 404.
		//lint:ignore SA1019 as above
		anon, _ := gitlab.NewClient("", gitlab.WithBaseURL(srv.URL+"/gitlab"), gitlab.WithoutRetries())
		if p, _, err := anon.Projects.GetProject("acme/widget", nil); err != nil || p.ID != 100 {
			t.Fatalf("anonymous read of a public project: %+v %v", p, err)
		}
		if _, resp, err := anon.Projects.GetProject("acme/secret", nil); err == nil || resp.StatusCode != 404 {
			t.Fatalf("anonymous read of a private project: %v", err)
		}
	})
}
