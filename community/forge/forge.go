// Package forge is community's narrow view of GitHub and GitLab: does a
// repository (project) or an owner (organisation, user, group) exist, what
// does it look like, and what may the person holding a token do with it.
// It speaks to the forges through go-github and go-gitlab, so tests and the
// demo run the same code against oauth/fakeforge.
package forge

import (
	"context"
	"errors"
	"net/http"

	"golang.org/x/oauth2"
)

// Errors of every Client.
var (
	// ErrNotFound: the forge has no such thing, or will not show it to the
	// token's holder (both forges answer 404 for private things).
	ErrNotFound = errors.New("forge: not found")
	// ErrTokenRefused: the forge refused the token itself (revoked,
	// expired), or its scopes do not reach the API (GitLab's
	// insufficient_scope for a token without read_api): nothing is known
	// about its holder's access.
	ErrTokenRefused = errors.New("forge: token refused")
	// ErrUnavailable: the forge could not be asked (network, 5xx, rate
	// limit). Callers keep public rooms usable and grant no power.
	ErrUnavailable = errors.New("forge: unavailable")
)

// Flavours of forge.
const (
	GitHub = "github"
	GitLab = "gitlab"
)

// Access is what a token's holder may do with a repository.
type Access int

// Access levels, in order.
const (
	AccessNone  Access = iota // may not read it (private) or unknown
	AccessRead                // may read (anyone, for a public repository)
	AccessWrite               // may push (GitHub push, GitLab Developer and Maintainer)
	AccessAdmin               // administers it (GitHub admin, GitLab Owner)
)

// Repo is a repository (GitHub) or project (GitLab).
type Repo struct {
	ID          int64
	Path        string // owner/name, or group/sub/project: as the forge spells it
	Name        string
	Description string
	WebURL      string
	Private     bool
	Owner       Owner
	// Access is the token holder's access (AccessRead for anonymous
	// readers of a public repository).
	Access Access
}

// Owner is an organisation, a user or a (sub)group.
type Owner struct {
	ID        int64
	Path      string // login, or a group's full path
	Name      string
	Kind      string // org, user or group
	WebURL    string
	AvatarURL string
	Private   bool // a private GitLab group
}

// Client asks one forge. token is the asker's OAuth token, or nil to ask
// with the client's own credentials (anonymously, or the configured
// service token).
type Client interface {
	Flavour() string
	Repo(ctx context.Context, path string, token *oauth2.Token) (*Repo, error)
	Owner(ctx context.Context, path string, token *oauth2.Token) (*Owner, error)
	// HTTPClient fetches the forge's other URLs (avatars).
	HTTPClient() *http.Client
}

// Config configures a Client.
type Config struct {
	// APIURL is GitHub's REST API base (https://api.github.com/) or
	// GitLab's web base (https://gitlab.com; go-gitlab appends /api/v4).
	APIURL string
	// ServiceToken, if set, is used when no user token is given: a
	// GitHub token or GitLab personal access token with read access to
	// public repositories, for a higher rate limit than anonymous calls.
	ServiceToken string
	// HTTP makes the calls (nil: a client with a timeout).
	HTTP *http.Client
}

// New returns a Client of flavour GitHub or GitLab.
func New(flavour string, cfg Config) (Client, error) {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: defaultTimeout}
	}
	switch flavour {
	case GitHub:
		return newGitHub(cfg)
	case GitLab:
		return newGitLab(cfg)
	}
	return nil, errors.New("forge: unknown flavour " + flavour)
}

// classify turns a failed call's HTTP status into ErrNotFound,
// ErrTokenRefused or ErrUnavailable. A 403 counts as "cannot see" (GitLab
// answers it for things the token may not read). Rate-limit answers are
// told apart before this, by the client libraries' own error types.
func classify(status int) error {
	switch status {
	case http.StatusNotFound, http.StatusForbidden:
		return ErrNotFound
	case http.StatusUnauthorized:
		return ErrTokenRefused
	}
	return ErrUnavailable
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
