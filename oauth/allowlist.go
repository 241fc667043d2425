package oauth

import (
	"fmt"
	"net/url"
	"strings"
)

// allowlist says which SSO redirectUrls may receive a login token, so that
// Plaza never redirects a token to an arbitrary site (an open redirect).
type allowlist struct {
	origins   map[string]bool // scheme://host[:port], lower case
	schemes   map[string]bool // custom schemes of native apps
	localhost bool            // any http(s) origin on localhost (demo mode)
}

// parseAllowlist reads PLAZA_SSO_REDIRECT_ALLOWLIST's entries: origins
// (https://app.element.io, http://localhost:8080) or bare custom schemes
// ending in ':' (im.fluffychat:).
func parseAllowlist(entries []string, demo bool) (allowlist, error) {
	a := allowlist{origins: map[string]bool{}, schemes: map[string]bool{}, localhost: demo}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if scheme, ok := strings.CutSuffix(e, ":"); ok && !strings.Contains(scheme, "/") {
			if scheme == "" || scheme == "http" || scheme == "https" || scheme == "javascript" || scheme == "data" {
				return allowlist{}, fmt.Errorf("oauth: redirect allow-list entry %q: a bare scheme must be a native app's own", e)
			}
			a.schemes[strings.ToLower(scheme)] = true
			continue
		}
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return allowlist{}, fmt.Errorf("oauth: redirect allow-list entry %q is not an origin such as https://app.example.org", e)
		}
		a.origins[origin(u)] = true
	}
	return a, nil
}

func origin(u *url.URL) string {
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

// check parses redirectUrl and reports whether it may receive a login
// token; self is Plaza's own public URL, always allowed.
func (a allowlist) check(raw string, self *url.URL) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.User != nil {
		return nil, false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return u, a.schemes[scheme]
	}
	if u.Host == "" {
		return nil, false
	}
	o := origin(u)
	if o == origin(self) || a.origins[o] {
		return u, true
	}
	host := strings.ToLower(u.Hostname())
	return u, a.localhost && (host == "localhost" || host == "127.0.0.1" || host == "::1")
}

// isSelf reports whether u is on Plaza's own site.
func isSelf(u, self *url.URL) bool {
	return (u.Scheme == "http" || u.Scheme == "https") && origin(u) == origin(self)
}

// withLoginToken adds loginToken to the client's redirectUrl, dropping any
// loginToken already there (spec: "they should be removed before adding the
// new one") and keeping the other parameters as they were.
func withLoginToken(u *url.URL, token string) string {
	var kept []string
	if u.RawQuery != "" {
		for _, part := range strings.Split(u.RawQuery, "&") {
			key, _, _ := strings.Cut(part, "=")
			if k, err := url.QueryUnescape(key); err == nil && k == "loginToken" {
				continue
			}
			kept = append(kept, part)
		}
	}
	kept = append(kept, "loginToken="+url.QueryEscape(token))
	out := *u
	out.RawQuery = strings.Join(kept, "&")
	return out.String()
}

// ValidateRedirectAllowlist checks PLAZA_SSO_REDIRECT_ALLOWLIST's entries
// the way New reads them, so configuration can fail early by name.
func ValidateRedirectAllowlist(entries []string) error {
	_, err := parseAllowlist(entries, false)
	return err
}
