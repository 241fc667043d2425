// Package fakeforge is a small, local stand-in for GitHub and GitLab: the
// subset of their OAuth 2.0 and REST APIs that Plaza uses, served by one
// http.Handler over users, organisations and repositories configured in Go.
//
// It exists so that Plaza's tests, and `plaza serve --demo`'s offline "Demo
// forge" provider, run the real client libraries (golang.org/x/oauth2,
// go-github, go-gitlab) against something that behaves like a forge, without
// reaching the internet. It is a real package, not a _test file, because the
// demo server mounts it too.
//
// One Forge serves both flavours from the same data, under two prefixes:
//
//	<base>/github/login/oauth/authorize     GitHub's web OAuth endpoints
//	<base>/github/login/oauth/access_token
//	<base>/github/api/                       GitHub's REST API (go-github's BaseURL)
//	<base>/gitlab/oauth/authorize            GitLab's OAuth endpoints
//	<base>/gitlab/oauth/token
//	<base>/gitlab/api/v4/                    GitLab's REST API
//	<base>/avatars/<user id>.png             users' avatars
//
// The REST APIs answer what sign-in and rooms on demand (package community)
// ask: the signed-in user, their e-mails and orgs; GitHub repositories (with
// the caller's permissions), collaborator permissions and users/orgs by
// login; GitLab projects by id or nested path (with the caller's
// permissions), project members, groups by id or full path, and users by
// username. Public things are readable without a token, as on the real
// forges; a token that is sent must be valid. IssueToken hands out tokens
// without the OAuth dance, and SetDown makes the APIs answer 503.
//
// Tokens carry scopes, as on the real forges: the scopes the OAuth flow
// asked for, or those given to IssueToken. Private repositories (and
// private GitLab groups) are visible only to tokens with the forge's
// private scope — GitHub's repo, GitLab's read_api or api. On GitHub a
// token without it sees them as 404, exactly like repositories that do
// not exist, even for a collaborator, and reads public ones as before. On
// GitLab the same scope is what reaches the API at all: a token without it
// (read_user, openid, read_repository: Plaza's sign-in scopes) reads /user
// and /users, and gets 403 insufficient_scope for every project and group,
// public ones included, as GitLab answers; without a token, private
// projects are 404.
//
// Users have immutable numeric ids, as on the real forges, so a test can
// rename one (Rename) and check that whoever keys accounts by id follows.
// The authorization page approves the user marked with SignIn at once (a
// browser already signed in at the forge); with no one signed in it shows a
// tiny form to pick a user or deny access.
package fakeforge

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// User is an account on the forge.
type User struct {
	ID    int64 // immutable, as the real forges' numeric ids
	Login string
	Name  string
	Email string
}

// Org is an organisation (GitHub) or group (GitLab). A GitLab subgroup's
// Login is its full path ("group/sub").
type Org struct {
	ID      int64
	Login   string
	Name    string  // display name; "" shows the login
	Members []int64 // user ids
	// Private hides a GitLab group from non-members.
	Private bool
}

// Permission levels on a repository, as GitHub names them.
const (
	PermAdmin = "admin"
	PermWrite = "write"
	PermRead  = "read"
)

// Repo is a repository (GitHub) or project (GitLab), owned by an org or a
// user login.
type Repo struct {
	ID          int64
	Owner       string // org or user login
	Name        string
	Description string
	Private     bool
	// Access gives users (by id) a permission level: PermAdmin, PermWrite
	// or PermRead. Anyone may read a public repository.
	Access map[int64]string
}

// FullName is owner/name.
func (r Repo) FullName() string { return r.Owner + "/" + r.Name }

// Options configure a Forge.
type Options struct {
	// Prefix is the path the handler is mounted under ("" at the root,
	// "/_plaza/demo-forge" in the demo). URLs the forge hands out (avatars,
	// web links) carry it.
	Prefix string
	// Title names the forge on its sign-in page.
	Title string
}

// Forge is the fake forge. It is safe for concurrent use.
type Forge struct {
	opts Options

	mu       sync.Mutex
	users    map[int64]*User
	orgs     map[int64]*Org
	repos    map[int64]*Repo
	clients  map[string]string // OAuth client id → secret
	signedIn int64             // user approved without a form; 0: show the form
	codes    map[string]grant  // authorization codes, single-use
	tokens   map[string]issued // access token → whom, with what scopes
	down     bool              // the REST APIs answer 503 (SetDown)
}

// issued is what an access token stands for.
type issued struct {
	userID int64
	scopes []string
}

// grant is an authorization code waiting to be exchanged.
type grant struct {
	flavour     string // github or gitlab
	clientID    string
	redirectURI string
	challenge   string // PKCE S256 challenge, "" if none was sent
	scope       string // the scopes asked for, granted as they are
	userID      int64
	expires     time.Time
}

// New returns an empty forge.
func New(opts Options) *Forge {
	if opts.Title == "" {
		opts.Title = "Fake forge"
	}
	opts.Prefix = strings.TrimRight(opts.Prefix, "/")
	return &Forge{
		opts: opts, users: map[int64]*User{}, orgs: map[int64]*Org{}, repos: map[int64]*Repo{},
		clients: map[string]string{}, codes: map[string]grant{}, tokens: map[string]issued{},
	}
}

// AddClient registers an OAuth application.
func (f *Forge) AddClient(id, secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clients[id] = secret
}

// AddUser adds or replaces a user.
func (f *Forge) AddUser(u User) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[u.ID] = &u
}

// AddOrg adds or replaces an organisation.
func (f *Forge) AddOrg(o Org) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orgs[o.ID] = &o
}

// AddRepo adds or replaces a repository.
func (f *Forge) AddRepo(r Repo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.repos[r.ID] = &r
}

// Rename changes a user's login, keeping the id.
func (f *Forge) Rename(id int64, login string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u := f.users[id]; u != nil {
		u.Login = login
	}
}

// IssueToken hands out an access token for a user without the OAuth dance,
// for tests and demos that hold a forge identity already. The token carries
// scopes; with none given it carries every scope the forge knows, private
// ones included, as a personal access token with full access would.
func (f *Forge) IssueToken(userID int64, scopes ...string) string {
	if len(scopes) == 0 {
		scopes = []string{ScopeGitHubPrivate, ScopeGitLabAPI, ScopeGitLabReadAPI}
	}
	tok := randomString()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = issued{userID: userID, scopes: slices.Clone(scopes)}
	return tok
}

// Scopes that let a token see private repositories.
const (
	ScopeGitHubPrivate = "repo"     // GitHub: full control of private repositories
	ScopeGitLabReadAPI = "read_api" // GitLab: read the whole API
	ScopeGitLabAPI     = "api"      // GitLab: read and write the whole API
)

// seesPrivate reports whether a token with scopes may see private things
// on the given flavour of forge (GitHub's public_repo, GitLab's read_user
// and read_repository do not count: their holders get 404).
func seesPrivate(flavour string, scopes []string) bool {
	if flavour == "github" {
		return slices.Contains(scopes, ScopeGitHubPrivate)
	}
	return slices.Contains(scopes, ScopeGitLabReadAPI) || slices.Contains(scopes, ScopeGitLabAPI)
}

// SetDown makes the REST APIs answer 503 Service Unavailable (true) or
// serve again (false), to test how callers cope with an unreachable forge.
func (f *Forge) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *Forge) isDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

// SignIn marks the user the authorization page approves without asking; 0
// makes it show the form.
func (f *Forge) SignIn(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signedIn = id
}

// usersSorted lists the users by id, for the sign-in form (f.mu held).
func (f *Forge) usersSorted() []User {
	out := make([]User, 0, len(f.users))
	for _, u := range f.users {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b User) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Transport serves requests with the forge's handler in process, whatever
// the request's host: the demo server's OAuth and API clients use it so that
// the server never has to reach itself over the network.
func (f *Forge) Transport() http.RoundTripper { return inProcess{f} }

type inProcess struct{ f *Forge }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	// The handler may read the body after RoundTrip's caller closes it;
	// read it here, as a real transport would have sent it already.
	if r.Body != nil {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(r.Body); err != nil {
			return nil, fmt.Errorf("fakeforge: reading request body: %w", err)
		}
		_ = r.Body.Close()
		r = r.Clone(r.Context())
		r.Body = ioNopCloser{&buf}
	}
	t.f.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

type ioNopCloser struct{ *bytes.Buffer }

func (ioNopCloser) Close() error { return nil }

// randomString returns a fresh random token.
func randomString() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// s256 is PKCE's S256 transform of a verifier.
func s256(verifier string) string {
	h := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// avatarPNG draws a small square in a colour derived from the user id, so
// each user's avatar differs.
func avatarPNG(id int64) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	c := color.RGBA{R: uint8(id * 97), G: uint8(id * 57), B: uint8(id * 23), A: 255}
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img) // cannot fail writing to memory
	return buf.Bytes()
}
