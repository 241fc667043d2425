package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/oauth2"

	"plaza/homeserver/storage"
)

// ForgeIdentity is a user's account on one forge, with the access token
// Plaza holds for it, for features that call the forge on the user's
// behalf (rooms on demand, permissions).
type ForgeIdentity struct {
	IDP         string // github, gitlab or demo
	ForgeUserID int64
	Login       string
	Token       *oauth2.Token
	// Scopes the forge granted the token.
	Scopes []string
	// PrivateRepos: the person opted in to Plaza reading their private
	// repositories (the token carries GitHub's repo or GitLab's read_api
	// scope). Without it, treat private repositories as invisible.
	PrivateRepos bool
}

// ForgeIdentity returns userID's identity on the forge idp, with its
// unsealed access token; storage.ErrNotFound if there is none.
func (s *Service) ForgeIdentity(ctx context.Context, userID, idp string) (*ForgeIdentity, error) {
	idents, err := s.hs.DB.OAuthIdentities(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, i := range idents {
		if i.IDP != idp {
			continue
		}
		out := &ForgeIdentity{IDP: i.IDP, ForgeUserID: i.ForgeUserID, Login: i.Login, Scopes: strings.Fields(i.Scopes)}
		if p := s.provider(i.IDP); p != nil {
			out.PrivateRepos = p.hasPrivateScope(i.Scopes)
		}
		if i.AccessToken == nil || s.sealer == nil {
			return out, nil
		}
		raw, err := s.sealer.open(i.AccessToken, i.IDP+":"+strconv.FormatInt(i.ForgeUserID, 10))
		if err != nil {
			return nil, fmt.Errorf("oauth: opening the %s token of %s (was <data_dir>/oauth-token.key replaced?): %w", idp, userID, err)
		}
		out.Token = new(oauth2.Token)
		if err := json.Unmarshal(raw, out.Token); err != nil {
			return nil, fmt.Errorf("oauth: the %s token of %s: %w", idp, userID, err)
		}
		return out, nil
	}
	return nil, storage.ErrNotFound
}

// ForgeAPI is how to call a forge's REST API as sign-in does: for
// community's forge client (community/forge.Config), so that rooms on
// demand ask the same forge people sign in with, the demo forge included.
type ForgeAPI struct {
	// Flavour is github or gitlab (the demo forge is a GitHub).
	Flavour string
	// APIURL is GitHub's REST API base, or GitLab's web base.
	APIURL string
	// HTTP reaches it (the demo forge is served in process).
	HTTP *http.Client
}

// ForgeAPI returns the API of the identity provider idp, if it is offered.
func (s *Service) ForgeAPI(idp string) (ForgeAPI, bool) {
	p := s.provider(idp)
	if p == nil {
		return ForgeAPI{}, false
	}
	return ForgeAPI{Flavour: p.flavour, APIURL: p.apiURL, HTTP: p.client}, true
}
