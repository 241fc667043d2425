package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"plaza/homeserver/storage"
)

// The m.login.sso stage of user-interactive authentication (spec: "SSO
// during User-Interactive Authentication"). An account made by signing in
// with a forge has no password; when a client asks to delete a device,
// deactivate the account or the like, the homeserver offers this stage and
// the client opens the fallback page:
//
//	GET /_matrix/client/v3/auth/m.login.sso/fallback/web?session=…
//
// It says what the client is trying to do and offers to confirm by signing
// in again at a forge linked to the account (the spec's "confirming the
// operation", before the redirect). The forge sends the browser back to the
// usual callback; if the forge account is the one mapped to the session's
// user, the stage is complete and the page tells the client (the spec's
// onAuthDone / postMessage script), which retries its request with the
// session.
//
// The flows are kept in memory, beside the homeserver's own UIA sessions,
// which are in memory too: both are short-lived, and the page, the forge's
// callback and the client's retry reach the same process.

// maxReauthFlows bounds the pending re-authentications kept in memory.
const maxReauthFlows = 10000

// reauthFlow is a re-authentication under way at a forge.
type reauthFlow struct {
	browser  string // the browser cookie it is bound to
	session  string // the UIA session it completes
	userID   string // who must sign in
	idp      string
	verifier string // PKCE
	expires  time.Time
}

// reauthFlows are the flows under way, by OAuth state.
type reauthFlows struct {
	mu sync.Mutex
	m  map[string]reauthFlow
}

func (f *reauthFlows) put(state string, fl reauthFlow, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]reauthFlow{}
	}
	if len(f.m) >= maxReauthFlows {
		for k, v := range f.m {
			if now.After(v.expires) {
				delete(f.m, k)
			}
		}
		if len(f.m) >= maxReauthFlows {
			return false
		}
	}
	f.m[state] = fl
	return true
}

// take removes and returns the flow of state, if it is live and bound to
// browser. A state presented by another browser stays for its own.
func (f *reauthFlows) take(state, browser string, now time.Time) (reauthFlow, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl, ok := f.m[state]
	if !ok || fl.browser != browser {
		return reauthFlow{}, false
	}
	delete(f.m, state)
	return fl, !now.After(fl.expires)
}

// authDoneScript is the spec's completion script for fallback pages. The
// page's Content-Security-Policy allows this script only, by its hash.
const authDoneScript = `
if (window.onAuthDone) {
    window.onAuthDone();
} else if (window.opener && window.opener.postMessage) {
    window.opener.postMessage("authDone", "*");
}
`

func authDoneScriptHash() string {
	sum := sha256.Sum256([]byte(authDoneScript))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// canReauthenticate is the homeserver's SSOReauth: whether userID has an
// identity at a forge on offer.
func (s *Service) canReauthenticate(ctx context.Context, userID string) (bool, error) {
	idents, err := s.hs.DB.OAuthIdentities(ctx, userID)
	if err != nil {
		return false, err
	}
	for _, i := range idents {
		if s.provider(i.IDP) != nil {
			return true, nil
		}
	}
	return false, nil
}

// uiaFallback serves GET /_matrix/client/v3/auth/m.login.sso/fallback/web:
// the warning and a button per forge linked to the account, or, with idp,
// the start of the re-authentication there.
func (s *Service) uiaFallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	session := q.Get("session")
	uia, ok := s.hs.Client.UIASession(session)
	if session == "" || !ok {
		s.fail(w, r, flowError(http.StatusBadRequest, "This confirmation request is unknown or has expired. Return to your app and try again."))
		return
	}
	idents, err := s.hs.DB.OAuthIdentities(r.Context(), uia.UserID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var offered []*provider
	for _, i := range idents {
		if p := s.provider(i.IDP); p != nil {
			offered = append(offered, p)
		}
	}
	if len(offered) == 0 {
		s.fail(w, r, flowError(http.StatusForbidden, "The account %s cannot confirm with single sign-on: it has no GitHub or GitLab account linked on this server.", uia.UserID))
		return
	}
	if idp := q.Get("idp"); idp != "" {
		for _, p := range offered {
			if p.id == idp {
				s.startReauth(w, r, p, session, uia.UserID)
				return
			}
		}
		s.fail(w, r, flowError(http.StatusBadRequest, "The account %s is not linked to %q.", uia.UserID, idp))
		return
	}
	var links []link
	for _, p := range offered {
		links = append(links, link{Text: "Confirm with " + p.name,
			URL: r.URL.Path + "?session=" + url.QueryEscape(session) + "&idp=" + url.QueryEscape(p.id)})
	}
	s.renderPage(w, http.StatusOK, page{Title: "Confirm it is you",
		Message: fmt.Sprintf("An app signed in as %s is trying to %s. To allow it, sign in again below. "+
			"If you did not ask for this just now, do not continue: someone else may have access to your account.", uia.UserID, uia.Action),
		Links: links})
}

// startReauth sends the browser to the forge to confirm the UIA session.
func (s *Service) startReauth(w http.ResponseWriter, r *http.Request, p *provider, session, userID string) {
	now := s.cfg.Now()
	if !s.starts.allow(r, now) {
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, flowError(http.StatusTooManyRequests, "Too many sign-in attempts from your address. Please wait a minute."))
		return
	}
	state, verifier := randomToken(), oauth2.GenerateVerifier()
	fl := reauthFlow{browser: s.browserID(w, r), session: session, userID: userID, idp: p.id, verifier: verifier, expires: now.Add(flowLifetime)}
	if !s.reauth.put(state, fl, now) {
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, flowError(http.StatusServiceUnavailable, "Too many confirmations are under way. Please try again in a minute."))
		return
	}
	http.Redirect(w, r, p.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

// finishReauth completes a UIA session when the forge says the right
// person signed in.
func (s *Service) finishReauth(w http.ResponseWriter, r *http.Request, p *provider, fl reauthFlow) {
	ctx := r.Context()
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		s.fail(w, r, flowError(http.StatusForbidden, "%s did not confirm it is you (%s). Nothing was changed.", p.name, e))
		return
	}
	tok, err := p.exchange(ctx, q.Get("code"), fl.verifier)
	if q.Get("code") == "" || err != nil {
		s.log.Warn("forge refused the authorization code", "idp", p.id, "purpose", "uia", "err", err)
		s.fail(w, r, flowError(http.StatusBadGateway, "%s did not accept this sign-in. Please start again from your app.", p.name))
		return
	}
	fu, err := p.identity(ctx, p, tok)
	if err != nil {
		s.log.Warn("asking the forge who signed in", "idp", p.id, "err", err)
		s.fail(w, r, flowError(http.StatusBadGateway, "%s could not be reached. Please try again.", p.name))
		return
	}
	existing, err := s.hs.DB.OAuthIdentity(ctx, p.id, fu.ID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && existing.UserID != fl.userID) {
		s.fail(w, r, flowError(http.StatusForbidden, "You signed in to %s as %s, which is not the account linked to %s. Nothing was changed.", p.name, fu.Login, fl.userID))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The fresh token replaces the kept one, unless that one can read
	// private repositories and this one cannot.
	ident, err := s.identity(p, fu, tok, p.oauth.Scopes)
	if err == nil {
		keepPrivateToken(p, existing, &ident)
		err = s.hs.DB.UpdateOAuthIdentity(ctx, ident, s.nowMS())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.hs.Client.CompleteSSOStage(fl.session, fl.userID) {
		s.fail(w, r, flowError(http.StatusBadRequest, "This confirmation request has expired. Return to your app and try again."))
		return
	}
	s.renderDone(w)
}
