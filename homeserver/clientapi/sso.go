package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/password"
)

// IdentityProvider is one entry of the m.login.sso flow's
// identity_providers list (spec: "m.login.sso flow schema").
type IdentityProvider struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Icon  string `json:"icon,omitempty"`  // an mxc:// URI
	Brand string `json:"brand,omitempty"` // github, gitlab, ...
}

// ssoProviders holds the identity providers GET /login advertises. The
// homeserver does no SSO itself: package oauth serves the redirect and
// callback endpoints and hands the list over here. It is swapped whole, so
// readers need no lock.
type ssoProviders struct {
	list atomic.Pointer[[]IdentityProvider]
	// reauth offers the m.login.sso stage of user-interactive auth (nil:
	// not offered); uia holds the sessions of that auth.
	reauth SSOReauth
	uia    uiaSessions
}

// SetIdentityProviders makes GET /login offer m.login.sso with these
// identity providers; an empty list withdraws it.
func (a *API) SetIdentityProviders(list []IdentityProvider) {
	cp := append([]IdentityProvider(nil), list...)
	a.sso.list.Store(&cp)
}

// ssoFlows returns the m.login.sso flow to add to GET /login, if any.
func (a *API) ssoFlows() []map[string]any {
	p := a.sso.list.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	return []map[string]any{{"type": "m.login.sso", "identity_providers": *p}}
}

// SSOReauth tells user-interactive authentication whether userID can prove
// who they are with single sign-on (the m.login.sso stage): an account made
// by signing in with a forge has no password, so without it such a person
// could never delete a device or deactivate their account. Package oauth
// provides it and serves the stage's fallback page
// (/_matrix/client/v3/auth/m.login.sso/fallback/web), which completes the
// stage with CompleteSSOStage.
type SSOReauth func(ctx context.Context, userID string) (bool, error)

// SetSSOReauth offers the m.login.sso stage to the users f accepts. Set it
// once, before serving.
func (a *API) SetSSOReauth(f SSOReauth) { a.sso.reauth = f }

// UIASession is a pending user-interactive authentication session of a
// signed-in user, as the SSO fallback page shows it.
type UIASession struct {
	UserID string
	// Action says in words what completing it allows ("remove devices
	// from your account"), for the page's warning.
	Action string
}

// UIASession returns the pending session id, if it exists and has not
// expired.
func (a *API) UIASession(id string) (UIASession, bool) {
	s := a.sso.uia.get(id, a.now())
	if s == nil {
		return UIASession{}, false
	}
	return UIASession{UserID: s.userID, Action: uiaAction(s.op)}, true
}

// CompleteSSOStage records that userID re-authenticated with single sign-on
// for the session id. It reports false if there is no such session or it
// belongs to someone else. The client then retries its request with the
// session alone.
func (a *API) CompleteSSOStage(id, userID string) bool {
	return a.sso.uia.completeSSO(id, userID, a.now())
}

// Sessions of user-interactive authentication for signed-in users' sensitive
// requests (password change, deactivation, device deletion). They are kept
// in memory: short-lived, few, and the fallback page that completes them is
// served by the same process. A session is bound to the user and to the
// request (method and path) it was issued for, and is used up by the request
// it authorises.
const (
	uiaLifetime           = 15 * time.Minute
	maxUIASessions        = 10000
	maxUIASessionsPerUser = 10
)

type uiaSession struct {
	userID  string
	op      string // "POST /account/deactivate"
	ssoDone bool
	expires time.Time
}

type uiaSessions struct {
	mu sync.Mutex
	m  map[string]*uiaSession
}

// create starts a session. Expired sessions go; a user keeps at most
// maxUIASessionsPerUser (their oldest goes), so one account cannot push
// others' sessions out; past maxUIASessions in all, the oldest goes.
func (u *uiaSessions) create(userID, op string, now time.Time) string {
	id := randomToken(18)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]*uiaSession{}
	}
	var oldest, usersOldest string
	mine := 0
	for k, s := range u.m {
		switch {
		case now.After(s.expires):
			delete(u.m, k)
			continue
		case s.userID == userID:
			mine++
			if usersOldest == "" || s.expires.Before(u.m[usersOldest].expires) {
				usersOldest = k
			}
		}
		if oldest == "" || s.expires.Before(u.m[oldest].expires) {
			oldest = k
		}
	}
	if mine >= maxUIASessionsPerUser {
		delete(u.m, usersOldest)
	} else if len(u.m) >= maxUIASessions {
		delete(u.m, oldest)
	}
	u.m[id] = &uiaSession{userID: userID, op: op, expires: now.Add(uiaLifetime)}
	return id
}

// get returns a copy of a live session.
func (u *uiaSessions) get(id string, now time.Time) *uiaSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.m[id]
	if s == nil || now.After(s.expires) {
		return nil
	}
	c := *s
	return &c
}

func (u *uiaSessions) completeSSO(id, userID string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.m[id]
	if s == nil || now.After(s.expires) || s.userID != userID {
		return false
	}
	s.ssoDone = true
	return true
}

func (u *uiaSessions) delete(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, id)
}

// uiaOperation names the request a session is for: its method and its path
// without the API version prefix.
func uiaOperation(r *http.Request) string {
	p := r.URL.Path
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			p = rest
			break
		}
	}
	return r.Method + " " + p
}

// uiaAction words an operation for the person asked to confirm it.
func uiaAction(op string) string {
	method, path, _ := strings.Cut(op, " ")
	switch {
	case path == "/account/deactivate":
		return "deactivate your account"
	case path == "/account/password":
		return "change your password"
	case path == "/delete_devices", method == http.MethodDelete && strings.HasPrefix(path, "/devices/"):
		return "remove devices from your account"
	case path == "/keys/device_signing/upload":
		return "replace your cross-signing keys"
	}
	return "make a sensitive change to your account"
}

// checkUserUIA runs user-interactive authentication for a signed-in user's
// sensitive request and returns nil when the request may go ahead. It
// offers m.login.password to accounts with a password and m.login.sso to
// those SSOReauth accepts (each a flow of its own); the first 401 carries no
// errcode, as the spec's examples.
func (a *API) checkUserUIA(r *http.Request, rq *httpapi.Requester, auth *authDict) error {
	ctx := r.Context()
	acct, err := a.db.AccountByUserID(ctx, rq.UserID)
	if err != nil {
		return err
	}
	var flows [][]string
	if acct.PasswordHash != "" {
		flows = append(flows, []string{"m.login.password"})
	}
	if a.sso.reauth != nil {
		ok, err := a.sso.reauth(ctx, rq.UserID)
		if err != nil {
			return err
		}
		if ok {
			flows = append(flows, []string{"m.login.sso"})
		}
	}
	if len(flows) == 0 {
		// No way to prove anything; say what would work once a password
		// is set (by an administrator).
		flows = [][]string{{"m.login.password"}}
	}
	offered := func(stage string) bool {
		for _, f := range flows {
			if f[0] == stage {
				return true
			}
		}
		return false
	}

	now, op := a.now(), uiaOperation(r)
	var session string
	if auth != nil && auth.Session != "" {
		// A session of another user or for another request is no
		// session: a new one is issued.
		if s := a.sso.uia.get(auth.Session, now); s != nil && s.userID == rq.UserID && s.op == op {
			session = auth.Session
		}
	}
	if session == "" {
		session = a.sso.uia.create(rq.UserID, op, now)
	}
	challenge := func(e *httpapi.Error) error { return uiaChallenge(session, flows, nil, e) }

	switch {
	case auth == nil || (auth.Type == "" && session != auth.Session):
		return challenge(nil)
	case auth.Type == "" || auth.Type == "m.login.sso":
		// The fallback page completed the stage, or has not yet.
		if s := a.sso.uia.get(session, now); s != nil && s.ssoDone && offered("m.login.sso") {
			a.sso.uia.delete(session)
			return nil
		}
		if auth.Type == "" {
			return challenge(nil)
		}
		return challenge(httpapi.Forbidden("single sign-on has not been completed for this session"))
	case auth.Type == "m.login.password" && offered("m.login.password"):
		uid, merr := a.userIDFrom(auth.Identifier, auth.User)
		if merr != nil || uid != rq.UserID || !password.Check(acct.PasswordHash, auth.Password) {
			return challenge(httpapi.Forbidden("invalid password"))
		}
		a.sso.uia.delete(session)
		return nil
	}
	return challenge(httpapi.Forbidden("unsupported auth type %q", auth.Type))
}

// UserInteractiveAuth runs the user-interactive auth of checkUserUIA for
// another package's sensitive request of userID (e2ee's replacement of
// cross-signing keys); auth is the request's "auth" member, JSON or null.
func (a *API) UserInteractiveAuth(r *http.Request, userID string, auth json.RawMessage) error {
	var d *authDict
	if len(auth) > 0 && string(auth) != "null" {
		d = new(authDict)
		if err := json.Unmarshal(auth, d); err != nil {
			return httpapi.BadJSON("auth: %v", err)
		}
	}
	return a.checkUserUIA(r, &httpapi.Requester{UserID: userID}, d)
}
