package oauth

import (
	"html/template"
	"net/http"
	"net/url"

	"plaza/homeserver/storage"
)

// The account page, GET /_plaza/account: who is signed in to the web site,
// the forge accounts linked to them (link the other forge, allow private
// repositories) and sign-out. Signed out, and at GET /_plaza/login?next=…,
// it offers a "Sign in with …" button per forge. The web site's pages link
// here; it is plain HTML that works without JavaScript.

type accountPage struct {
	SignedIn    bool
	UserID      string
	DisplayName string
	Linked      []linkedForge
	Unlinked    []link // forges on offer not linked yet
	SignIn      []link // signed out: a link per forge
	Next        string
	PublicURL   string
}

type linkedForge struct {
	Name, Login  string
	PrivateRepos bool
	AllowPrivate string // the opt-in link, when not allowed yet
}

const accountTemplate = `{{define "account"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{{if .SignedIn}}Your account{{else}}Sign in{{end}} · Plaza</title></head>
<body>
{{if .SignedIn}}<h1>Your account</h1>
<p id="signed-in-user">Signed in as <strong>{{.DisplayName}}</strong> (<code>{{.UserID}}</code>).</p>
<h2>Linked accounts</h2>
<ul>
{{range .Linked}}<li>{{.Name}}: <strong>{{.Login}}</strong>. {{if .PrivateRepos}}Plaza may read your private repositories.{{else}}Plaza sees your public repositories only. <a href="{{.AllowPrivate}}">Allow access to private repositories</a>{{end}}</li>
{{end}}</ul>
{{range .Unlinked}}<p><a href="{{.URL}}">{{.Text}}</a></p>
{{end}}<p>Any Matrix client can sign in to this account too: use the server <code>{{.PublicURL}}</code> and choose single sign-on.</p>
<form method="post" action="/_plaza/logout"><input type="hidden" name="next" value="{{.Next}}"><button type="submit">Sign out</button></form>
{{else}}<h1>Sign in</h1>
{{range .SignIn}}<p><a href="{{.URL}}">{{.Text}}</a></p>
{{else}}<p>This server offers no sign-in with GitHub or GitLab.</p>
{{end}}{{end}}</body></html>
{{end}}`

func parseAccountPage(t *template.Template) error {
	_, err := t.New("account").Parse(accountTemplate)
	return err
}

// loginPicker serves GET /_plaza/login?next=/path: a button per forge.
func (s *Service) loginPicker(w http.ResponseWriter, r *http.Request) {
	next := r.URL.Query().Get("next")
	if !localPath(next) {
		next = "/_plaza/account"
	}
	s.renderAccount(w, r, next)
}

// accountPage serves GET /_plaza/account.
func (s *Service) accountPage(w http.ResponseWriter, r *http.Request) {
	s.renderAccount(w, r, "/_plaza/account")
}

func (s *Service) renderAccount(w http.ResponseWriter, r *http.Request, next string) {
	userID, err := s.SessionUser(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pg := accountPage{Next: next, PublicURL: s.cfg.PublicURL}
	if userID == "" {
		for _, p := range s.providers {
			pg.SignIn = append(pg.SignIn, link{Text: "Sign in with " + p.name, URL: "/_plaza/login/" + url.PathEscape(p.id) + "?next=" + url.QueryEscape(next)})
		}
		setPageHeaders(w, http.StatusOK)
		_ = s.pages.ExecuteTemplate(w, "account", pg)
		return
	}
	acct, err := s.hs.DB.AccountByUserID(r.Context(), userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	idents, err := s.hs.DB.OAuthIdentities(r.Context(), userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pg.SignedIn, pg.UserID, pg.DisplayName = true, userID, acct.DisplayName
	if pg.DisplayName == "" {
		pg.DisplayName = userID
	}
	linked := map[string]storage.OAuthIdentity{}
	for _, i := range idents {
		linked[i.IDP] = i
	}
	back := "&next=" + url.QueryEscape("/_plaza/account")
	for _, p := range s.providers {
		i, ok := linked[p.id]
		if !ok {
			pg.Unlinked = append(pg.Unlinked, link{Text: "Link your " + p.name + " account", URL: "/_plaza/login/" + url.PathEscape(p.id) + "?link=1" + back})
			continue
		}
		pg.Linked = append(pg.Linked, linkedForge{Name: p.name, Login: i.Login, PrivateRepos: p.hasPrivateScope(i.Scopes),
			AllowPrivate: PrivateOptInURL(p.id, "/_plaza/account")})
	}
	setPageHeaders(w, http.StatusOK)
	_ = s.pages.ExecuteTemplate(w, "account", pg)
}
