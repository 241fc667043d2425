package main

import (
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

func TestLoadConfigSSO(t *testing.T) {
	load := func(env map[string]string) (Config, error) {
		return LoadConfig("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}

	// Off by default: no URLs filled in.
	cfg, err := load(nil)
	if err != nil || cfg.SSO != (ssoConfig{}) {
		t.Fatalf("defaults: %+v, %v", cfg.SSO, err)
	}

	// A configured forge gets its default URLs.
	cfg, err = load(map[string]string{
		"PLAZA_GITHUB_CLIENT_ID": "id", "PLAZA_GITHUB_CLIENT_SECRET": "s",
		"PLAZA_GITLAB_CLIENT_ID": "lid", "PLAZA_GITLAB_CLIENT_SECRET": "ls", "PLAZA_GITLAB_URL": "https://gitlab.example.org",
		"PLAZA_SSO_REDIRECT_ALLOWLIST": "https://app.element.io, im.fluffychat:",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := ssoConfig{GitHubClientID: "id", GitHubClientSecret: "s", GitHubURL: "https://github.com", GitHubAPIURL: "https://api.github.com/",
		GitLabClientID: "lid", GitLabClientSecret: "ls", GitLabURL: "https://gitlab.example.org",
		RedirectAllowlist: "https://app.element.io, im.fluffychat:"}
	if cfg.SSO != want {
		t.Fatalf("got %+v\nwant %+v", cfg.SSO, want)
	}

	for _, tc := range []struct {
		env    map[string]string
		want   []string
		hidden string
	}{
		{env: map[string]string{"PLAZA_GITHUB_CLIENT_ID": "id"},
			want: []string{`PLAZA_GITHUB_CLIENT_ID="id"`, "needs github_client_secret (PLAZA_GITHUB_CLIENT_SECRET)"}},
		{env: map[string]string{"PLAZA_GITLAB_CLIENT_SECRET": "hunter2"},
			want: []string{"PLAZA_GITLAB_CLIENT_SECRET (value hidden)", "needs gitlab_client_id (PLAZA_GITLAB_CLIENT_ID)"}, hidden: "hunter2"},
		{env: map[string]string{"PLAZA_GITLAB_URL": "https://gitlab.example.org"},
			want: []string{`PLAZA_GITLAB_URL="https://gitlab.example.org"`, "GitLab sign-in is off"}},
		{env: map[string]string{"PLAZA_GITHUB_CLIENT_ID": "id", "PLAZA_GITHUB_CLIENT_SECRET": "s", "PLAZA_GITHUB_API_URL": "api.github.com"},
			want: []string{`PLAZA_GITHUB_API_URL="api.github.com"`, "absolute http:// or https:// URL"}},
		{env: map[string]string{"PLAZA_SSO_REDIRECT_ALLOWLIST": "https://app.element.io/login"},
			want: []string{`PLAZA_SSO_REDIRECT_ALLOWLIST="https://app.element.io/login"`, "not an origin"}},
		{env: map[string]string{"PLAZA_SSO_REDIRECT_ALLOWLIST": "javascript:"},
			want: []string{"PLAZA_SSO_REDIRECT_ALLOWLIST", "native app"}},
	} {
		_, err := load(tc.env)
		if err == nil {
			t.Errorf("%v: accepted", tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.env, err, w)
			}
		}
		if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
			t.Errorf("error %q shows a secret", err)
		}
	}
}

// TestDemoSignIn runs `plaza serve --demo` with no forge configured and
// signs in as a Matrix client would, through the demo forge: GET /login
// offers it, the browser picks a demo user on the forge's page, and the
// login token the client receives logs it in.
func TestDemoSignIn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	// The public URL must be where the server listens: the browser is sent
	// to the demo forge under it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := startServe(t, bin, []string{
		"PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=" + addr, "PLAZA_PUBLIC_URL=http://" + addr,
		"PLAZA_SERVER_NAME=plaza.test", "PLAZA_RATE_LIMIT=false",
	}, "--demo")
	hs := homeserverClient{t: t, base: srv.url}

	var flows struct {
		Flows []struct {
			Type string `json:"type"`
			IdPs []struct {
				ID, Name string
			} `json:"identity_providers"`
		} `json:"flows"`
	}
	hs.do("GET", "/_matrix/client/v3/login", "", nil, http.StatusOK, &flows)
	var idps []string
	for _, f := range flows.Flows {
		if f.Type == "m.login.sso" {
			for _, p := range f.IdPs {
				idps = append(idps, p.ID+"="+p.Name)
			}
		}
	}
	if strings.Join(idps, ",") != "demo=Demo forge (not GitHub)" {
		t.Fatalf("identity providers %v", idps)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) *http.Response {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// The client's own page is on the server itself: no confirmation.
	resp := get(srv.url + "/_matrix/client/v3/login/sso/redirect/demo?redirectUrl=" + url.QueryEscape(srv.url+"/client/"))
	authorize, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(authorize.String(), "http://"+addr+"/_plaza/demo-forge/github/login/oauth/authorize?") {
		t.Fatalf("redirected to %q", resp.Header.Get("Location"))
	}
	// On the forge's page, continue as bob-dev (id 1002).
	form := authorize.Query()
	form.Set("user", "1002")
	resp, err = browser.PostForm("http://"+addr+authorize.Path, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp = get(resp.Header.Get("Location")) // Plaza's callback
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || back.Path != "/client/" || back.Query().Get("loginToken") == "" {
		t.Fatalf("callback sent the browser to %q (%d)", resp.Header.Get("Location"), resp.StatusCode)
	}
	var login struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	hs.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": back.Query().Get("loginToken")}, http.StatusOK, &login)
	if login.UserID != "@bob-dev:plaza.test" {
		t.Fatalf("signed in as %q", login.UserID)
	}
	var profile struct {
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	hs.do("GET", "/_matrix/client/v3/profile/@bob-dev:plaza.test", login.AccessToken, nil, http.StatusOK, &profile)
	if profile.DisplayName != "Bob Developer" || !strings.HasPrefix(profile.AvatarURL, "mxc://plaza.test/") {
		t.Errorf("profile %+v", profile)
	}
	srv.stop(t)
}
