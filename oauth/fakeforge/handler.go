package fakeforge

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// codeLifetime is how long an authorization code may wait for its exchange
// (GitHub: 10 minutes).
const codeLifetime = 10 * time.Minute

// ServeHTTP routes a request to the GitHub or GitLab flavour.
func (f *Forge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// go-gitlab escapes a project path's slashes (%2F) in one segment; work
	// on the escaped path so they stay inside their segment.
	escaped := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(escaped, f.opts.Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			segs[i] = u
		}
	}
	switch {
	case len(segs) == 2 && segs[0] == "avatars":
		f.avatar(w, r, strings.TrimSuffix(segs[1], ".png"))
	case len(segs) >= 1 && segs[0] == "github":
		f.github(w, r, segs[1:])
	case len(segs) >= 1 && segs[0] == "gitlab":
		f.gitlab(w, r, segs[1:])
	default:
		http.NotFound(w, r)
	}
}

// base is the forge's external URL, as the request reached it.
func (f *Forge) base(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.URL.Scheme == "https" {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	return scheme + "://" + host + f.opts.Prefix
}

func (f *Forge) avatar(w http.ResponseWriter, r *http.Request, name string) {
	orgText, isOrg := strings.CutPrefix(name, "org-")
	id, err := strconv.ParseInt(orgText, 10, 64)
	f.mu.Lock()
	known := f.users[id] != nil
	if isOrg {
		known = f.orgs[id] != nil
	}
	f.mu.Unlock()
	if err != nil || !known {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	_, _ = w.Write(avatarPNG(id))
}

// ---- OAuth, shared by both flavours ----

// authorizePage is the consent form. It is parsed per request: the fake
// serves a handful of them, and this keeps a bad template an error, not a
// panic at start-up.
const authorizePage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to {{.Title}}</title></head>
<body>
<h1>Sign in to {{.Title}}</h1>
<p>This is a local fake forge for trying Plaza out; it has no passwords.</p>
<form method="post">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}{{range .Users}}<p><button type="submit" name="user" value="{{.ID}}">Continue as {{.Login}}</button></p>
{{end}}<p><button type="submit" name="deny" value="1">Deny access</button></p>
</form>
</body></html>
`

// authorize is the forge's consent screen.
func (f *Forge) authorize(w http.ResponseWriter, r *http.Request, flavour string) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	q := r.Form
	clientID, redirectURI, state := q.Get("client_id"), q.Get("redirect_uri"), q.Get("state")
	f.mu.Lock()
	_, known := f.clients[clientID]
	signedIn := f.signedIn
	users := f.usersSorted()
	f.mu.Unlock()
	if !known {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	target, err := url.Parse(redirectURI)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
		http.Error(w, "only S256 code challenges are supported", http.StatusBadRequest)
		return
	}

	var userID int64
	switch {
	case r.Method == http.MethodPost && q.Get("deny") != "":
		f.redirectBack(w, r, target, url.Values{"error": {"access_denied"},
			"error_description": {"The user has denied your application access."}, "state": {state}})
		return
	case r.Method == http.MethodPost:
		userID, _ = strconv.ParseInt(q.Get("user"), 10, 64)
	case signedIn != 0:
		userID = signedIn
	default:
		params := map[string]string{}
		for _, k := range []string{"client_id", "redirect_uri", "state", "scope", "response_type", "code_challenge", "code_challenge_method"} {
			if v := q.Get(k); v != "" {
				params[k] = v
			}
		}
		page, err := template.New("authorize").Parse(authorizePage)
		if err != nil {
			http.Error(w, "authorize page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]any{"Title": f.opts.Title, "Params": params, "Users": users})
		return
	}

	code := randomString()
	f.mu.Lock()
	_, exists := f.users[userID]
	if exists {
		f.codes[code] = grant{flavour: flavour, clientID: clientID, redirectURI: redirectURI,
			challenge: q.Get("code_challenge"), userID: userID, scope: q.Get("scope"), expires: time.Now().Add(codeLifetime)}
	}
	f.mu.Unlock()
	if !exists {
		http.Error(w, "no such user", http.StatusBadRequest)
		return
	}
	f.redirectBack(w, r, target, url.Values{"code": {code}, "state": {state}})
}

func (f *Forge) redirectBack(w http.ResponseWriter, r *http.Request, target *url.URL, add url.Values) {
	q := target.Query()
	for k, v := range add {
		q[k] = v
	}
	u := *target
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// token exchanges an authorization code for an access token. Client
// credentials may come in the form or as HTTP Basic auth, as both forges
// accept.
func (f *Forge) token(w http.ResponseWriter, r *http.Request, flavour string) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	clientID, secret, ok := r.BasicAuth()
	if !ok {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	code := r.PostForm.Get("code")
	f.mu.Lock()
	want, known := f.clients[clientID]
	g, found := f.codes[code]
	delete(f.codes, code) // single use, even when the exchange fails
	f.mu.Unlock()

	fail := func(errcode, desc string) {
		if flavour == "github" {
			// GitHub answers 200 with an error body.
			f.tokenResponse(w, r, flavour, http.StatusOK, map[string]string{"error": errcode, "error_description": desc})
			return
		}
		f.tokenResponse(w, r, flavour, http.StatusBadRequest, map[string]string{"error": errcode, "error_description": desc})
	}
	switch {
	case !known || secret != want:
		fail("invalid_client", "The client_id and/or client_secret passed are incorrect.")
	case r.PostForm.Get("grant_type") != "" && r.PostForm.Get("grant_type") != "authorization_code":
		fail("unsupported_grant_type", "only authorization_code is supported")
	case !found || g.flavour != flavour || g.clientID != clientID || time.Now().After(g.expires):
		fail("bad_verification_code", "The code passed is incorrect or expired.")
	case (flavour == "gitlab" || r.PostForm.Has("redirect_uri")) && r.PostForm.Get("redirect_uri") != g.redirectURI:
		fail("redirect_uri_mismatch", "The redirect_uri does not match the one used for authorization.")
	case g.challenge != "" && s256(r.PostForm.Get("code_verifier")) != g.challenge:
		fail("invalid_grant", "The code_verifier does not match the code_challenge.")
	default:
		tok := randomString()
		f.mu.Lock()
		f.tokens[tok] = issued{userID: g.userID, scopes: strings.Fields(g.scope)}
		f.mu.Unlock()
		// The granted scopes are those asked for; GitHub lists them with
		// commas, GitLab with spaces.
		scope := g.scope
		if flavour == "github" {
			scope = strings.Join(strings.Fields(scope), ",")
		}
		f.tokenResponse(w, r, flavour, http.StatusOK, map[string]string{"access_token": tok, "token_type": "bearer", "scope": scope})
	}
}

// tokenResponse writes the token endpoint's answer. GitHub answers
// form-encoded unless asked for JSON; GitLab always answers JSON.
func (f *Forge) tokenResponse(w http.ResponseWriter, r *http.Request, flavour string, status int, body map[string]string) {
	if flavour == "github" && !strings.Contains(r.Header.Get("Accept"), "json") {
		v := url.Values{}
		for k, s := range body {
			v.Set(k, s)
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(v.Encode()))
		return
	}
	writeJSON(w, status, body)
}

// caller is who a REST call comes from: the token's user, and whether the
// token's scopes let it see private things (seesPrivate).
type caller struct {
	User
	private bool
}

// caller resolves the request's access token to a user; flavour picks
// which scopes count as private ones.
func (f *Forge) caller(r *http.Request, flavour string) (caller, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(h, "token ")
	}
	if !ok {
		tok = r.Header.Get("Private-Token")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, found := f.tokens[tok]
	if tok == "" || !found {
		return caller{}, false
	}
	u, found := f.users[t.userID]
	if !found {
		return caller{}, false
	}
	return caller{User: *u, private: seesPrivate(flavour, t.scopes)}, true
}

// presentedToken reports whether the request carries a token at all.
func presentedToken(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || r.Header.Get("Private-Token") != ""
}

// readable reports whether the caller may see repo (f.mu held): anyone a
// public one; a private one only someone with access, through a token with
// the private scope.
func readable(repo *Repo, me caller) bool {
	return !repo.Private || (me.private && repo.Access[me.ID] != "")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
