package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
)

// The composer and the join button post forms with the session cookie.
// CSRF: the cookie is SameSite=Lax, so browsers leave it off cross-site
// POSTs, and every POST must also carry an Origin (or, from browsers that
// omit it, a Referer) naming this site's host: a form on another site is
// refused even from a browser that sends the cookie.

// maxMessageBytes bounds one composed message (the form's whole body is
// bounded a little above it).
const maxMessageBytes = 16 << 10

// sameOrigin reports whether a state-changing request comes from a page of
// this site.
func sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// wantsJSON reports whether the caller is the page's script (which asks for
// JSON) rather than a plain form post (which gets a redirect).
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

// member checks a web POST to a room: same origin, signed in. It answers the
// request itself when not.
func (s *Service) poster(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !sameOrigin(r) {
		httpapi.Fail(w, r, httpapi.Forbidden("cross-site request refused"))
		return "", false
	}
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return "", false
	}
	if user == "" {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusUnauthorized, "M_MISSING_TOKEN", "sign in first"))
		return "", false
	}
	return user, true
}

// back answers a successful post: JSON for the script, a redirect to the
// room page for a plain form.
func back(w http.ResponseWriter, r *http.Request, roomID string, v any) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	to := "/room/" + url.PathEscape(roomID)
	// Back to the page the form was on, when it is on this site; "//host"
	// and "/\\host" paths would leave it.
	if ref, err := url.Parse(r.Header.Get("Referer")); err == nil && strings.EqualFold(ref.Host, r.Host) &&
		strings.HasPrefix(ref.Path, "/") && !strings.HasPrefix(ref.Path, "//") && !strings.HasPrefix(ref.Path, "/\\") {
		to = ref.EscapedPath()
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// roomFail maps the room service's refusals to Matrix errors.
func (s *Service) roomFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, room.ErrForbidden):
		httpapi.Fail(w, r, httpapi.Forbidden("you may not do that in this room"))
	case errors.Is(err, room.ErrNotFound):
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
	default:
		s.log.Error("web post failed", "path", r.URL.Path, "err", err)
		httpapi.Fail(w, r, err)
	}
}

// send serves POST /_plaza/rooms/{roomID}/send: a signed-in member's
// message, from the form field body.
func (s *Service) send(w http.ResponseWriter, r *http.Request) {
	user, ok := s.poster(w, r)
	if !ok {
		return
	}
	roomID := pathParam(r, "roomID")
	r.Body = http.MaxBytesReader(w, r.Body, maxMessageBytes+1024)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpapi.Fail(w, r, httpapi.TooLarge("the message is too long"))
			return
		}
		httpapi.Fail(w, r, httpapi.BadJSON("the form cannot be read"))
		return
	}
	body := strings.TrimSpace(strings.ReplaceAll(r.PostForm.Get("body"), "\r\n", "\n"))
	switch {
	case body == "":
		httpapi.Fail(w, r, httpapi.InvalidParam("the message is empty"))
		return
	case len(body) > maxMessageBytes:
		httpapi.Fail(w, r, httpapi.TooLarge("the message is too long"))
		return
	case !utf8.ValidString(body):
		httpapi.Fail(w, r, httpapi.InvalidParam("the message is not UTF-8"))
		return
	}
	m, err := s.hs.Rooms.Membership(r.Context(), roomID, user)
	if err != nil && !errors.Is(err, room.ErrNotFound) {
		s.roomFail(w, r, err)
		return
	}
	if m != "join" {
		// The same answer whether or not the room exists.
		httpapi.Fail(w, r, httpapi.Forbidden("join the room first"))
		return
	}
	msg := map[string]string{"msgtype": "m.text", "body": body}
	if f := s.render.markdown(body); f != "" {
		msg["format"], msg["formatted_body"] = "org.matrix.custom.html", f
	}
	content, err := json.Marshal(msg)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.hs.Rooms.Send(r.Context(), roomID, room.Request{Sender: user, Type: "m.room.message", Content: content})
	if err != nil {
		s.roomFail(w, r, err)
		return
	}
	back(w, r, roomID, map[string]string{"event_id": res.Event.ID()})
}

// join serves POST /_plaza/rooms/{roomID}/join: a signed-in visitor joins a
// public room (the authorization rules refuse any other).
func (s *Service) join(w http.ResponseWriter, r *http.Request) {
	user, ok := s.poster(w, r)
	if !ok {
		return
	}
	roomID := pathParam(r, "roomID")
	snap, err := s.cache.Get(r.Context(), roomID)
	open := err == nil && snap.Summary.WorldReadable() && snap.Summary.JoinRule == "public"
	if err != nil || !open && s.cfg.JoinGate == nil {
		// Only rooms the page shows can be joined from it; others are
		// joined through a Matrix client, which applies the join gates.
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
		return
	}
	if gate := s.cfg.JoinGate; gate != nil {
		if err := gate(r.Context(), roomID, user); err != nil && !open {
			// A private repository's room is joined from its page by
			// those the forge vouches for (the gate invites them); to
			// anyone else it does not exist.
			httpapi.Fail(w, r, httpapi.NotFound("room not found"))
			return
		} else if err != nil {
			var herr *httpapi.Error
			if errors.As(err, &herr) {
				httpapi.Fail(w, r, herr)
				return
			}
			s.roomFail(w, r, err)
			return
		}
	}
	c := map[string]string{"membership": "join"}
	if acct, err := s.hs.DB.AccountByUserID(r.Context(), user); err == nil {
		if acct.DisplayName != "" {
			c["displayname"] = acct.DisplayName
		}
		if acct.AvatarURL != "" {
			c["avatar_url"] = acct.AvatarURL
		}
	}
	content, err := json.Marshal(c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.hs.Rooms.Send(r.Context(), roomID, room.Request{Sender: user, Type: event.TypeMember, StateKey: &user, Content: content})
	if err != nil && !open && errors.Is(err, room.ErrForbidden) {
		httpapi.Fail(w, r, httpapi.NotFound("room not found")) // a room one may not join does not exist here
		return
	}
	if err != nil {
		s.roomFail(w, r, err)
		return
	}
	back(w, r, roomID, map[string]string{"event_id": res.Event.ID()})
}
