package clientapi

import "sync/atomic"

// IdentityProvider is one entry of the m.login.sso flow's
// identity_providers list (spec: "m.login.sso flow schema").
type IdentityProvider struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Icon  string `json:"icon,omitempty"`  // an mxc:// URI
	Brand string `json:"brand,omitempty"` // github, gitlab, ...
}

// ssoProviders holds the identity providers GET /login advertises. The
// homeserver does no SSO itself: package oauth serves the redirect and
// callback endpoints and hands the list over here. It is swapped whole, so
// readers need no lock.
type ssoProviders struct {
	list atomic.Pointer[[]IdentityProvider]
}

// SetIdentityProviders makes GET /login offer m.login.sso with these
// identity providers; an empty list withdraws it.
func (a *API) SetIdentityProviders(list []IdentityProvider) {
	cp := append([]IdentityProvider(nil), list...)
	a.sso.list.Store(&cp)
}

// ssoFlows returns the m.login.sso flow to add to GET /login, if any.
func (a *API) ssoFlows() []map[string]any {
	p := a.sso.list.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	return []map[string]any{{"type": "m.login.sso", "identity_providers": *p}}
}
