package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"golang.org/x/oauth2"

	"plaza/homeserver/storage"
)

// browserCookie binds a sign-in flow to the browser that started it: the
// callback and the confirmation only succeed with the cookie that was set
// when the flow began, so a state or a confirmation form lured into another
// browser (login CSRF) is refused.
const browserCookie = "plaza_oauth_browser"

// maxAvatarBytes bounds the avatar copied from a forge.
const maxAvatarBytes = 1 << 20

// randomToken returns 32 random bytes, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// browserID returns the browser's flow cookie, setting a new one if it has
// none. Flows in two tabs share it.
func (s *Service) browserID(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(browserCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	v := randomToken()
	http.SetCookie(w, &http.Cookie{Name: browserCookie, Value: v, Path: "/_plaza/oauth/", MaxAge: int(flowLifetime.Seconds()) * 6,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
	return v
}

// ssoRedirect starts Matrix SSO: GET /login/sso/redirect[/{idp}].
func (s *Service) ssoRedirect(w http.ResponseWriter, r *http.Request) {
	redirectURL := r.URL.Query().Get("redirectUrl")
	if redirectURL == "" {
		s.fail(w, r, flowError(http.StatusBadRequest, "The app that sent you here did not say where to return (redirectUrl is missing)."))
		return
	}
	target, ok := s.allow.check(redirectURL, s.public)
	if !ok {
		s.fail(w, r, flowError(http.StatusBadRequest,
			"The app that sent you here asked to receive your sign-in at an address this server does not allow. You have not been signed in anywhere."))
		return
	}
	idp := chi.URLParam(r, "idp")
	if idp == "" {
		switch len(s.providers) {
		case 0:
			s.fail(w, r, flowError(http.StatusNotFound, "This server offers no single sign-on."))
			return
		case 1:
			idp = s.providers[0].id
		default:
			s.pickProvider(w, r, target)
			return
		}
	}
	s.startFlow(w, r, idp, "sso", target.String(), "", nil)
}

// pickProvider shows a button per identity provider, as the spec allows
// when no IdP is named.
func (s *Service) pickProvider(w http.ResponseWriter, r *http.Request, target *url.URL) {
	var links []link
	for _, p := range s.providers {
		links = append(links, link{Text: "Continue with " + p.name,
			URL: r.URL.Path + "/" + url.PathEscape(p.id) + "?redirectUrl=" + url.QueryEscape(target.String())})
	}
	s.renderPage(w, http.StatusOK, page{Title: "Sign in", Message: "Choose how to sign in.", Links: links})
}

// webLogin starts the web site's sign-in: GET /_plaza/login/{idp}?next=/path.
// With link=1, a signed-in person adds this forge to their account instead
// (so one account can sign in with both GitHub and GitLab).
func (s *Service) webLogin(w http.ResponseWriter, r *http.Request) {
	next := r.URL.Query().Get("next")
	if !localPath(next) {
		next = "/"
	}
	linkTo, private := "", r.URL.Query().Get("private") != ""
	if r.URL.Query().Get("link") != "" || private {
		userID, err := s.SessionUser(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if userID == "" {
			s.fail(w, r, flowError(http.StatusUnauthorized, "Sign in first, then link another account to it."))
			return
		}
		linkTo = userID
	}
	var scopes []string
	if p := s.provider(chi.URLParam(r, "idp")); p != nil && private {
		// Opting in to private repositories: the forge is asked again,
		// with the extra scope, for the account already linked (or
		// linked now).
		scopes = p.withPrivateScope()
	}
	s.startFlow(w, r, chi.URLParam(r, "idp"), "web", next, linkTo, scopes)
}

// localPath reports whether p is a path on this site, so that returning to
// it after sign-in is no open redirect: it starts with a single '/' and
// holds no backslash (some browsers read "/\evil" as "//evil").
func localPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") && !strings.ContainsAny(p, "\\\r\n")
}

// startFlow records the flow and sends the browser to the forge. linkTo,
// if set, is the signed-in account the forge identity is to be linked to;
// scopes, if set, replace the provider's sign-in scopes.
func (s *Service) startFlow(w http.ResponseWriter, r *http.Request, idp, purpose, returnTo, linkTo string, scopes []string) {
	p := s.provider(idp)
	if p == nil {
		s.fail(w, r, flowError(http.StatusNotFound, "This server does not offer signing in with %q.", idp))
		return
	}
	if !s.starts.allow(r, s.cfg.Now()) {
		w.Header().Set("Retry-After", "60")
		s.fail(w, r, flowError(http.StatusTooManyRequests, "Too many sign-in attempts from your address. Please wait a minute."))
		return
	}
	browser := s.browserID(w, r)
	state, verifier := randomToken(), oauth2.GenerateVerifier()
	err := s.hs.DB.CreateOAuthPending(r.Context(), state, browser, storage.OAuthPending{
		Kind: "authorize", IDP: p.id, Verifier: verifier, RedirectURL: returnTo, Purpose: purpose, UserID: linkTo,
		ExpiresTS: s.cfg.Now().Add(flowLifetime).UnixMilli(),
	}, s.nowMS())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// PKCE even where the client secret already authenticates Plaza: it
	// also stops a code stolen on its way back from being redeemed.
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if scopes != nil {
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(scopes, " ")))
	}
	http.Redirect(w, r, p.oauth.AuthCodeURL(state, opts...), http.StatusFound)
}

// callback is where the forge sends the browser back.
func (s *Service) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := s.provider(chi.URLParam(r, "idp"))
	if p == nil {
		s.fail(w, r, flowError(http.StatusNotFound, "Unknown sign-in provider."))
		return
	}
	q := r.URL.Query()
	c, err := r.Cookie(browserCookie)
	if err != nil || q.Get("state") == "" {
		s.fail(w, r, flowError(http.StatusBadRequest, "This sign-in did not start in this browser. Please start again."))
		return
	}
	if fl, ok := s.reauth.take(q.Get("state"), c.Value, s.cfg.Now()); ok && fl.idp == p.id {
		s.finishReauth(w, r, p, fl)
		return
	}
	pending, err := s.hs.DB.TakeOAuthPending(ctx, "authorize", q.Get("state"), c.Value, s.nowMS())
	if errors.Is(err, storage.ErrNotFound) || (err == nil && pending.IDP != p.id) {
		s.fail(w, r, flowError(http.StatusBadRequest, "This sign-in link has expired, was already used, or did not start in this browser. Please start again."))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if e := q.Get("error"); e != "" {
		msg := fmt.Sprintf("%s did not sign you in (%s).", p.name, e)
		if e == "access_denied" {
			msg = fmt.Sprintf("You declined to sign in with %s.", p.name)
		}
		s.fail(w, r, flowError(http.StatusForbidden, "%s", msg))
		return
	}
	if q.Get("code") == "" {
		s.fail(w, r, flowError(http.StatusBadRequest, "%s sent no authorization code.", p.name))
		return
	}
	tok, err := p.exchange(ctx, q.Get("code"), pending.Verifier)
	if err != nil {
		s.log.Warn("forge refused the authorization code", "idp", p.id, "err", err)
		s.fail(w, r, flowError(http.StatusBadGateway, "%s did not accept this sign-in. Please start again.", p.name))
		return
	}
	fu, err := p.identity(ctx, p, tok)
	if err != nil {
		s.log.Warn("asking the forge who signed in", "idp", p.id, "err", err)
		s.fail(w, r, flowError(http.StatusBadGateway, "%s could not be reached to finish signing you in. Please try again.", p.name))
		return
	}
	if pending.UserID != "" {
		if err := s.link(ctx, p, fu, tok, pending.UserID); err != nil {
			s.fail(w, r, err)
			return
		}
		http.Redirect(w, r, pending.RedirectURL, http.StatusSeeOther)
		return
	}
	userID, err := s.account(ctx, p, fu, tok)
	if err != nil {
		s.fail(w, r, err)
		return
	}

	if pending.Purpose == "web" {
		if err := s.startSession(w, r, userID); err != nil {
			s.fail(w, r, err)
			return
		}
		http.Redirect(w, r, pending.RedirectURL, http.StatusSeeOther)
		return
	}
	target, err := url.Parse(pending.RedirectURL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if isSelf(target, s.public) {
		s.sendLoginToken(w, r, userID, target)
		return
	}
	// Anti-phishing (spec, SSO "Security considerations"): a link can send
	// anyone here with an attacker's redirectUrl, so the person confirms
	// which app receives access to their account.
	nonce := randomToken()
	err = s.hs.DB.CreateOAuthPending(ctx, nonce, c.Value, storage.OAuthPending{
		Kind: "confirm", IDP: p.id, RedirectURL: pending.RedirectURL, Purpose: "sso", UserID: userID,
		ExpiresTS: s.cfg.Now().Add(flowLifetime).UnixMilli(),
	}, s.nowMS())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	host := target.Host
	if host == "" {
		host = target.Scheme + ":"
	}
	s.renderConfirm(w, confirmPage{Host: host, UserID: userID, Nonce: nonce})
}

// confirm handles the answer on the confirmation page.
func (s *Service) confirm(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(browserCookie)
	if err != nil {
		s.fail(w, r, flowError(http.StatusBadRequest, "This sign-in did not start in this browser. Please start again."))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, flowError(http.StatusBadRequest, "Bad form."))
		return
	}
	pending, err := s.hs.DB.TakeOAuthPending(r.Context(), "confirm", r.PostForm.Get("nonce"), c.Value, s.nowMS())
	if errors.Is(err, storage.ErrNotFound) {
		s.fail(w, r, flowError(http.StatusBadRequest, "This confirmation has expired or was already used. Please start again."))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if r.PostForm.Get("cancel") != "" {
		s.renderPage(w, http.StatusOK, page{Title: "Cancelled", Message: "You have not been signed in. You can close this page."})
		return
	}
	target, err := url.Parse(pending.RedirectURL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.sendLoginToken(w, r, pending.UserID, target)
}

// sendLoginToken redirects the browser to the client with a fresh login
// token, which POST /login m.login.token redeems once.
func (s *Service) sendLoginToken(w http.ResponseWriter, r *http.Request, userID string, target *url.URL) {
	token := randomToken()
	if err := s.hs.DB.CreateLoginToken(r.Context(), token, userID, s.cfg.Now().Add(s.cfg.LoginTokenLifetime).UnixMilli()); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, withLoginToken(target, token), http.StatusSeeOther)
}

// identity is the row that maps a forge user, with the forge's token
// sealed for the community features' later calls.
// Its scopes are those the forge granted, or requested if it did not say.
func (s *Service) identity(p *provider, fu forgeUser, tok *oauth2.Token, requested []string) (storage.OAuthIdentity, error) {
	ident := storage.OAuthIdentity{IDP: p.id, ForgeUserID: fu.ID, Login: fu.Login, Scopes: grantedScopes(tok, requested)}
	raw, err := json.Marshal(tok)
	if err != nil {
		return ident, err
	}
	ident.AccessToken = s.sealer.seal(raw, p.id+":"+strconv.FormatInt(fu.ID, 10))
	return ident, nil
}

// link adds a forge identity to a signed-in account. An identity already
// mapped elsewhere stays where it is, and an account keeps one identity per
// forge: moving either silently would hand one person's account to another.
func (s *Service) link(ctx context.Context, p *provider, fu forgeUser, tok *oauth2.Token, userID string) error {
	ident, err := s.identity(p, fu, tok, p.oauth.Scopes)
	if err != nil {
		return err
	}
	ident.UserID = userID
	existing, err := s.hs.DB.OAuthIdentity(ctx, p.id, fu.ID)
	switch {
	case err == nil && existing.UserID == userID:
		keepPrivateToken(p, existing, &ident)
		return s.hs.DB.UpdateOAuthIdentity(ctx, ident, s.nowMS())
	case err == nil:
		return flowError(http.StatusConflict, "The %s account %s already signs in to another account (%s).", p.name, fu.Login, existing.UserID)
	case !errors.Is(err, storage.ErrNotFound):
		return err
	}
	idents, err := s.hs.DB.OAuthIdentities(ctx, userID)
	if err != nil {
		return err
	}
	for _, i := range idents {
		if i.IDP == p.id {
			return flowError(http.StatusConflict, "Your account is already linked to the %s account %s.", p.name, i.Login)
		}
	}
	err = s.hs.DB.LinkOAuthIdentity(ctx, ident, s.nowMS())
	if errors.Is(err, storage.ErrIdentityExists) {
		return flowError(http.StatusConflict, "The %s account %s already signs in to another account.", p.name, fu.Login)
	}
	if err == nil {
		s.log.Info("linked a forge identity", "user_id", userID, "idp", p.id, "login", fu.Login)
	}
	return err
}

// account returns the Matrix account of a forge user, creating it on first
// sign-in, and keeps the forge's access token (sealed) for later calls.
func (s *Service) account(ctx context.Context, p *provider, fu forgeUser, tok *oauth2.Token) (string, error) {
	db := s.hs.DB
	ident, err := s.identity(p, fu, tok, p.oauth.Scopes)
	if err != nil {
		return "", err
	}

	existing, err := db.OAuthIdentity(ctx, p.id, fu.ID)
	if err == nil {
		acct, err := db.AccountByUserID(ctx, existing.UserID)
		if err != nil {
			return "", err
		}
		if acct.Deactivated {
			return "", flowError(http.StatusForbidden, "The account %s has been deactivated.", acct.UserID)
		}
		// A plain sign-in asks for the minimal scopes; where the person
		// opted in to private repositories, the token that can read them
		// is kept rather than replaced by a narrower one.
		keepPrivateToken(p, existing, &ident)
		// The login may have changed (a rename); the account stays.
		return existing.UserID, db.UpdateOAuthIdentity(ctx, ident, s.nowMS())
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}

	name := fu.Name
	if name == "" {
		name = fu.Login
	}
	for n := 0; n < 100; n++ {
		lp := localpartCandidate(fu.Login, p.suffix, n)
		userID := "@" + lp + ":" + s.hs.Config.ServerName
		err := db.CreateOAuthAccount(ctx, storage.Account{UserID: userID, Localpart: lp, DisplayName: name}, ident, s.nowMS())
		switch {
		case errors.Is(err, storage.ErrExists):
			continue
		case errors.Is(err, storage.ErrIdentityExists):
			// A concurrent first sign-in of the same person won.
			existing, err := db.OAuthIdentity(ctx, p.id, fu.ID)
			if err != nil {
				return "", err
			}
			return existing.UserID, nil
		case err != nil:
			return "", err
		}
		s.log.Info("created an account on first sign-in", "user_id", userID, "idp", p.id, "login", fu.Login)
		s.copyAvatar(ctx, p, userID, fu.AvatarURL)
		return userID, nil
	}
	return "", fmt.Errorf("no free localpart for %s login %q", p.id, fu.Login)
}

// copyAvatar copies the forge's avatar into the media repository and makes
// it the new account's avatar. A failure only costs the avatar.
func (s *Service) copyAvatar(ctx context.Context, p *provider, userID, avatarURL string) {
	u, err := url.Parse(avatarURL)
	if avatarURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, avatarURL, nil)
	if err != nil {
		return
	}
	resp, err := p.client.Do(req)
	if err != nil {
		s.log.Warn("fetching a forge avatar", "url", avatarURL, "err", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.log.Warn("fetching a forge avatar", "url", avatarURL, "status", resp.StatusCode)
		return
	}
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "image/") {
		ct = ""
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAvatarBytes+1))
	if err != nil || len(data) > maxAvatarBytes {
		s.log.Warn("fetching a forge avatar: unreadable or too large", "url", avatarURL, "err", err)
		return
	}
	mxc, err := s.hs.Media.Store(ctx, userID, ct, "", bytes.NewReader(data))
	if err != nil {
		s.log.Warn("storing a forge avatar", "url", avatarURL, "err", err)
		return
	}
	if err := s.hs.DB.SetProfile(ctx, userID, nil, &mxc); err != nil {
		s.log.Warn("setting the avatar", "user_id", userID, "err", err)
	}
}
