package oauth

import (
	"html/template"
	"net/http"
)

// The few pages sign-in needs. They are plain HTML that works without
// JavaScript; the web site's own pages come later and may restyle them.

type link struct{ Text, URL string }

type page struct {
	Title   string
	Message string
	Links   []link
}

type confirmPage struct {
	Host   string // where the login token would go
	UserID string
	Nonce  string
}

// parsePages parses the pages (once, in New).
func parsePages() (*template.Template, error) {
	t, err := template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{{.Title}} · Plaza</title></head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{range .Links}}<p><a href="{{.URL}}">{{.Text}}</a></p>
{{end}}</body></html>
{{define "confirm"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>Continue to {{.Host}}? · Plaza</title></head>
<body>
<h1>Continue to {{.Host}}?</h1>
<p>You are signed in as <strong>{{.UserID}}</strong>.
Continuing gives the app at <strong>{{.Host}}</strong> access to your Matrix account.
Only continue if you were signing in to that app yourself.</p>
<form method="post" action="/_plaza/oauth/confirm">
<input type="hidden" name="nonce" value="{{.Nonce}}">
<button type="submit" name="continue" value="1">Continue to {{.Host}}</button>
<button type="submit" name="cancel" value="1">Cancel</button>
</form>
</body></html>
{{end}}
{{define "done"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>Confirmed · Plaza</title></head>
<body>
<h1>Confirmed</h1>
<p>Thank you. You can close this page and return to your app.</p>
<script>{{.}}</script>
</body></html>
{{end}}`)
	if err != nil {
		return nil, err
	}
	if err := parseAccountPage(t); err != nil {
		return nil, err
	}
	return t, nil
}

// setPageHeaders sets a page's headers; extraCSP adds directives to its
// Content-Security-Policy (which otherwise allows no script at all).
func setPageHeaders(w http.ResponseWriter, status int, extraCSP ...string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The confirmation page must not be framed: a hidden frame could click
	// "Continue" for the person (clickjacking).
	h.Set("X-Frame-Options", "DENY")
	csp := "default-src 'none'; frame-ancestors 'none'"
	for _, d := range extraCSP {
		csp += "; " + d
	}
	h.Set("Content-Security-Policy", csp)
	w.WriteHeader(status)
}

func (s *Service) renderPage(w http.ResponseWriter, status int, p page) {
	setPageHeaders(w, status)
	_ = s.pages.Execute(w, p)
}

// renderDone is the UIA fallback's completion page: the spec's script tells
// the client (onAuthDone in an embedded browser, or a message to the window
// that opened it) to retry its request.
func (s *Service) renderDone(w http.ResponseWriter) {
	setPageHeaders(w, http.StatusOK, "script-src "+authDoneScriptHash())
	_ = s.pages.ExecuteTemplate(w, "done", template.JS(authDoneScript))
}

func (s *Service) renderConfirm(w http.ResponseWriter, p confirmPage) {
	setPageHeaders(w, http.StatusOK)
	_ = s.pages.ExecuteTemplate(w, "confirm", p)
}
