package clientapi

import (
	"net/http"
	"strings"

	"plaza/homeserver/httpapi"
)

// guestEndpoints is the spec's "Guest access" list (client behaviour), plus
// what a guest session needs to keep working that the list takes for
// granted: logging out, sync filters, capabilities, reading push rules and
// profiles, resolving an alias and joining by it (the same as
// /rooms/{id}/join), upgrading the account through /register, and room
// previews (room_summary, MSC2753 peeking). Paths are relative to the
// version prefix; "*" is one segment, a trailing "**" any rest.
func guestEndpoints() []guestEndpoint {
	return []guestEndpoint{
		// Retrieving events and media.
		{"GET", "rooms/*/state"},
		{"GET", "rooms/*/state/**"},
		{"GET", "rooms/*/context/*"},
		{"GET", "rooms/*/event/*"},
		{"GET", "rooms/*/messages"},
		{"GET", "rooms/*/members"},
		{"GET", "rooms/*/initialSync"},
		{"GET", "sync"},
		{"GET", "events"},
		{"GET", "media/download/**"},
		{"GET", "media/thumbnail/**"},
		{"GET", "download/**"},
		{"GET", "thumbnail/**"},
		// Sending events.
		{"POST", "rooms/*/join"},
		{"POST", "rooms/*/leave"},
		{"PUT", "rooms/*/send/*/*"},
		{"PUT", "rooms/*/state/**"},
		{"PUT", "sendToDevice/*/*"},
		// Account maintenance.
		{"PUT", "profile/*/displayname"},
		{"DELETE", "profile/*/displayname"},
		{"GET", "devices"},
		{"GET", "devices/*"},
		{"PUT", "devices/*"},
		{"GET", "account/whoami"},
		// End-to-end encryption.
		{"POST", "keys/upload"},
		{"POST", "keys/query"},
		{"POST", "keys/claim"},
		// Plaza's additions (see above).
		{"POST", "logout"},
		{"POST", "register"},
		{"GET", "capabilities"},
		{"POST", "user/*/filter"},
		{"GET", "user/*/filter/*"},
		{"GET", "pushrules/**"},
		{"GET", "profile/**"},
		{"GET", "directory/room/*"},
		{"POST", "join/*"},
		{"GET", "room_summary/*"},
		{"POST", "peek/*"},
		{"POST", "unpeek/*"},
	}
}

type guestEndpoint struct{ method, path string }

// GuestAccess keeps guest accounts to the spec's guest endpoint set: any
// other client or media endpoint answers M_GUEST_ACCESS_FORBIDDEN. Requests
// without a token, or with a non-guest one, pass untouched (the route's own
// authentication judges them). It goes on the root router, in front of every
// route, so endpoints added later are closed to guests until listed here.
func (a *API) GuestAccess(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := versionedPath(r.URL.Path)
		if !ok || r.Method == http.MethodOptions || guestAllowed(r.Method, rest) {
			next.ServeHTTP(w, r)
			return
		}
		token := ""
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			token = strings.TrimPrefix(h, "Bearer ")
		} else {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			next.ServeHTTP(w, r)
			return
		}
		if s, err := a.tokens.lookup(r.Context(), a.db, token, a.now()); err == nil && s.IsGuest {
			httpapi.Fail(w, r, httpapi.GuestAccessForbidden())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// versionedPath strips /_matrix/client/<version>/ (or the media API's, or an
// unstable feature's prefix) from p.
func versionedPath(p string) (string, bool) {
	var rest string
	switch {
	case strings.HasPrefix(p, "/_matrix/client/"):
		rest = strings.TrimPrefix(p, "/_matrix/client/")
	case strings.HasPrefix(p, "/_matrix/media/"):
		rest = strings.TrimPrefix(p, "/_matrix/media/")
	default:
		return "", false
	}
	rest = strings.TrimPrefix(rest, "unstable/")
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		// /versions and the like: no version segment, nothing to guard.
		return "", false
	}
	return rest[i+1:], true
}

func guestAllowed(method, rest string) bool {
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	for _, e := range guestEndpoints() {
		if e.method == method && pathMatches(strings.Split(e.path, "/"), segs) {
			return true
		}
	}
	return false
}

func pathMatches(pattern, segs []string) bool {
	for i, p := range pattern {
		if p == "**" {
			return len(segs) > i
		}
		if i >= len(segs) || (p != "*" && p != segs[i]) {
			return false
		}
	}
	return len(pattern) == len(segs)
}
