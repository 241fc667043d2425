package oauth

import (
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"plaza/homeserver/storage"
)

// Scopes. Sign-in asks for the minimum (provider.go: githubScopes,
// gitlabScopes). Reading private repositories needs one more scope on each
// forge (GitHub: repo, GitLab: read_api), and is asked for only when the
// signed-in person opts in from their account page
// (/_plaza/login/{idp}?private=1), which runs the forge's authorization
// again with it. The scopes the forge granted are kept with the identity;
// ForgeIdentity.PrivateRepos reports the opt-in.

// PrivateOptInURL is the web path that opts the signed-in person in to
// private repositories on the forge idp (the account page's "Allow access
// to private repositories"), returning to next, a path on this site.
func PrivateOptInURL(idp, next string) string {
	return "/_plaza/login/" + url.PathEscape(idp) + "?private=1&next=" + url.QueryEscape(next)
}

// withPrivateScope returns p's sign-in scopes plus its private-repository
// scope.
func (p *provider) withPrivateScope() []string {
	return append(slices.Clone(p.oauth.Scopes), p.privateScope)
}

// hasPrivateScope reports whether scopes (space-separated) include p's
// private-repository scope.
func (p *provider) hasPrivateScope(scopes string) bool {
	return slices.Contains(strings.Fields(scopes), p.privateScope)
}

// grantedScopes returns the scopes the forge says the token carries, space
// separated and sorted (GitHub lists them with commas, GitLab with spaces),
// or requested when the forge did not say.
func grantedScopes(tok *oauth2.Token, requested []string) string {
	raw, _ := tok.Extra("scope").(string)
	list := strings.FieldsFunc(raw, func(r rune) bool { return r == ',' || r == ' ' })
	if len(list) == 0 {
		list = slices.Clone(requested)
	}
	slices.Sort(list)
	return strings.Join(slices.Compact(list), " ")
}

// keepPrivateToken keeps the stored token of an identity that opted in to
// private repositories when a plain sign-in (which asks for the minimal
// scopes) brings a narrower one: the opt-in is the person's choice, not the
// last flow's.
func keepPrivateToken(p *provider, existing *storage.OAuthIdentity, fresh *storage.OAuthIdentity) {
	if p.hasPrivateScope(existing.Scopes) && !p.hasPrivateScope(fresh.Scopes) {
		fresh.AccessToken, fresh.Scopes = existing.AccessToken, existing.Scopes
	}
}
