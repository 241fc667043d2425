package oauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"plaza/homeserver/storage"
)

// sessionCookie holds the web site's session token. HttpOnly keeps it from
// scripts; SameSite=Lax keeps it off cross-site POSTs (so sign-out and
// later state-changing forms need no separate CSRF token) while still
// sending it when someone follows a link to Plaza.
const sessionCookie = "plaza_session"

// startSession signs the browser in to the web site, ending the session it
// had, if any (signing in as someone else replaces it).
func (s *Service) startSession(w http.ResponseWriter, r *http.Request, userID string) error {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if err := s.hs.DB.DeleteWebSession(r.Context(), c.Value); err != nil {
			return err
		}
	}
	token := randomToken()
	expires := s.cfg.Now().Add(s.cfg.SessionLifetime)
	if err := s.hs.DB.CreateWebSession(r.Context(), token, userID, expires.UnixMilli(), s.nowMS()); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", MaxAge: int(s.cfg.SessionLifetime.Seconds()),
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
	return nil
}

// SessionUser returns the user signed in to the web site with r's cookie,
// or "" if none. The web pages use it.
func (s *Service) SessionUser(r *http.Request) (string, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", nil
	}
	userID, err := s.hs.DB.WebSession(r.Context(), c.Value, s.nowMS())
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	return userID, err
}

type identityJSON struct {
	IDP   string `json:"idp"`
	Login string `json:"login"`
}

type sessionJSON struct {
	SignedIn    bool           `json:"signed_in"`
	UserID      string         `json:"user_id,omitempty"`
	DisplayName string         `json:"displayname,omitempty"`
	AvatarURL   string         `json:"avatar_url,omitempty"`
	Identities  []identityJSON `json:"identities,omitempty"`
	// Providers lists where one can sign in, for the site's buttons.
	Providers []providerJSON `json:"providers"`
}

type providerJSON struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Brand string `json:"brand,omitempty"`
	Login string `json:"login_url"`
}

// session answers GET /_plaza/session: who is signed in to the web site.
func (s *Service) session(w http.ResponseWriter, r *http.Request) {
	out := sessionJSON{Providers: []providerJSON{}}
	for _, p := range s.providers {
		out.Providers = append(out.Providers, providerJSON{ID: p.id, Name: p.name, Brand: p.brand, Login: "/_plaza/login/" + p.id})
	}
	userID, err := s.SessionUser(r)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": "internal error"})
		s.log.Error("reading a web session", "err", err)
		return
	}
	if userID != "" {
		acct, err := s.hs.DB.AccountByUserID(r.Context(), userID)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": "internal error"})
			s.log.Error("reading a web session's account", "err", err)
			return
		}
		idents, err := s.hs.DB.OAuthIdentities(r.Context(), userID)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": "internal error"})
			s.log.Error("reading a web session's identities", "err", err)
			return
		}
		out.SignedIn, out.UserID, out.DisplayName, out.AvatarURL = true, userID, acct.DisplayName, acct.AvatarURL
		for _, i := range idents {
			out.Identities = append(out.Identities, identityJSON{IDP: i.IDP, Login: i.Login})
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

// logout answers POST /_plaza/logout: the session ends and its cookie is
// cleared. A plain form post returns to its next field (a local path) or
// the home page; a script gets JSON.
func (s *Service) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if err := s.hs.DB.DeleteWebSession(r.Context(), c.Value); err != nil {
			s.log.Error("ending a web session", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": "internal error"})
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		next := "/"
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if err := r.ParseForm(); err == nil && localPath(r.PostForm.Get("next")) {
			next = r.PostForm.Get("next")
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
