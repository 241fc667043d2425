package main

import (
	"fmt"
	"log/slog"
	"strings"

	"plaza/homeserver"
	"plaza/oauth"
)

// Forges' default addresses, used when a forge is configured without one.
const (
	defaultGitHubURL    = "https://github.com"
	defaultGitHubAPIURL = "https://api.github.com/"
	defaultGitLabURL    = "https://gitlab.com"
)

// ssoConfig is sign-in with GitHub and GitLab (package oauth). A forge is
// offered when its client id is set; its URLs get their defaults then, and
// stay empty otherwise.
type ssoConfig struct {
	GitHubClientID, GitHubClientSecret, GitHubURL, GitHubAPIURL string
	GitLabClientID, GitLabClientSecret, GitLabURL               string
	// RedirectAllowlist is comma-separated: origins and native apps'
	// schemes that may receive SSO login tokens.
	RedirectAllowlist string
}

func ssoSettings() []setting {
	return []setting{
		{key: "github_client_id", env: "PLAZA_GITHUB_CLIENT_ID", def: "",
			help:  "GitHub OAuth app's client id; empty: no GitHub sign-in",
			field: func(c *Config) any { return &c.SSO.GitHubClientID }},
		{key: "github_client_secret", env: "PLAZA_GITHUB_CLIENT_SECRET", def: "", secret: true,
			help:  "GitHub OAuth app's client secret",
			field: func(c *Config) any { return &c.SSO.GitHubClientSecret }},
		{key: "github_url", env: "PLAZA_GITHUB_URL", def: "",
			help:  "GitHub's web URL; empty: " + defaultGitHubURL,
			field: func(c *Config) any { return &c.SSO.GitHubURL }},
		{key: "github_api_url", env: "PLAZA_GITHUB_API_URL", def: "",
			help:  "GitHub's REST API URL; empty: " + defaultGitHubAPIURL,
			field: func(c *Config) any { return &c.SSO.GitHubAPIURL }},
		{key: "gitlab_client_id", env: "PLAZA_GITLAB_CLIENT_ID", def: "",
			help:  "GitLab application id; empty: no GitLab sign-in",
			field: func(c *Config) any { return &c.SSO.GitLabClientID }},
		{key: "gitlab_client_secret", env: "PLAZA_GITLAB_CLIENT_SECRET", def: "", secret: true,
			help:  "GitLab application secret",
			field: func(c *Config) any { return &c.SSO.GitLabClientSecret }},
		{key: "gitlab_url", env: "PLAZA_GITLAB_URL", def: "",
			help:  "GitLab's URL (gitlab.com or self-hosted); empty: " + defaultGitLabURL,
			field: func(c *Config) any { return &c.SSO.GitLabURL }},
		{key: "sso_redirect_allowlist", env: "PLAZA_SSO_REDIRECT_ALLOWLIST", def: "",
			help:  "comma-separated origins (https://app.element.io) or app schemes (im.fluffychat:) that may receive SSO logins",
			field: func(c *Config) any { return &c.SSO.RedirectAllowlist }},
	}
}

// validateSSO checks the forge settings and fills in the default URLs of
// the forges that are configured.
func (c *Config) validateSSO(fail func(key, value, problem string) error) error {
	type forge struct {
		name                 string
		id, secret           *string
		idKey, secretKey     string
		urls                 []*string
		urlKeys, urlDefaults []string
	}
	s := &c.SSO
	for _, f := range []forge{
		{"GitHub", &s.GitHubClientID, &s.GitHubClientSecret, "github_client_id", "github_client_secret",
			[]*string{&s.GitHubURL, &s.GitHubAPIURL}, []string{"github_url", "github_api_url"}, []string{defaultGitHubURL, defaultGitHubAPIURL}},
		{"GitLab", &s.GitLabClientID, &s.GitLabClientSecret, "gitlab_client_id", "gitlab_client_secret",
			[]*string{&s.GitLabURL}, []string{"gitlab_url"}, []string{defaultGitLabURL}},
	} {
		// The environment variable is named along with the key: the
		// operator may be using either.
		named := func(key string) string { return key + " (PLAZA_" + strings.ToUpper(key) + ")" }
		switch {
		case *f.id == "" && *f.secret != "":
			return fail(f.secretKey, *f.secret, "needs "+named(f.idKey)+" too")
		case *f.id != "" && *f.secret == "":
			return fail(f.idKey, *f.id, "needs "+named(f.secretKey)+" too")
		}
		for i, u := range f.urls {
			switch {
			case *f.id == "" && *u != "":
				return fail(f.urlKeys[i], *u, "is set but "+named(f.idKey)+" is not: "+f.name+" sign-in is off")
			case *f.id == "":
			case *u == "":
				*u = f.urlDefaults[i]
			default:
				if err := validPublicURL(*u); err != nil {
					return fail(f.urlKeys[i], *u, err.Error())
				}
			}
		}
	}
	var entries []string
	for _, e := range strings.Split(s.RedirectAllowlist, ",") {
		if e = strings.TrimSpace(e); e != "" {
			entries = append(entries, e)
		}
	}
	if err := oauth.ValidateRedirectAllowlist(entries); err != nil {
		return fail("sso_redirect_allowlist", s.RedirectAllowlist, strings.TrimPrefix(err.Error(), "oauth: "))
	}
	return nil
}

// newSignIn sets up sign-in with the configured forges, or with the demo
// forge in demo mode when none is configured.
func newSignIn(cfg Config, demo bool, hs *homeserver.Server, log *slog.Logger) (*oauth.Service, error) {
	s := cfg.SSO
	oc := oauth.Config{PublicURL: cfg.PublicURL, DataDir: cfg.DataDir, Demo: demo}
	for _, e := range strings.Split(s.RedirectAllowlist, ",") {
		if e = strings.TrimSpace(e); e != "" {
			oc.RedirectAllowlist = append(oc.RedirectAllowlist, e)
		}
	}
	if s.GitHubClientID != "" {
		oc.GitHub = &oauth.ForgeConfig{ClientID: s.GitHubClientID, ClientSecret: s.GitHubClientSecret, URL: s.GitHubURL, APIURL: s.GitHubAPIURL}
	}
	if s.GitLabClientID != "" {
		oc.GitLab = &oauth.ForgeConfig{ClientID: s.GitLabClientID, ClientSecret: s.GitLabClientSecret, URL: s.GitLabURL}
	}
	svc, err := oauth.New(oc, hs)
	if err != nil {
		return nil, err
	}
	switch p := svc.Providers(); {
	case len(p) == 0:
		log.Info("sign-in with GitHub or GitLab is off: set PLAZA_GITHUB_CLIENT_ID/SECRET or PLAZA_GITLAB_CLIENT_ID/SECRET")
	case oc.GitHub == nil && oc.GitLab == nil:
		log.Info(fmt.Sprintf("demo: any Matrix client at %s can also sign in with the \"Demo forge (not GitHub)\" as %s",
			cfg.PublicURL, strings.Join(oauth.DemoUsers(), " or ")))
	default:
		log.Info("sign-in offered", "providers", strings.Join(p, ","),
			"callbacks", cfg.PublicURL+"/_plaza/oauth/<provider>/callback")
	}
	return svc, nil
}
