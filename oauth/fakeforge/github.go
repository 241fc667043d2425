package fakeforge

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// github serves the GitHub flavour; segs follow "/github".
func (f *Forge) github(w http.ResponseWriter, r *http.Request, segs []string) {
	path := strings.Join(segs, "/")
	switch {
	case path == "login/oauth/authorize":
		f.authorize(w, r, "github")
		return
	case path == "login/oauth/access_token":
		f.token(w, r, "github")
		return
	case len(segs) == 0 || segs[0] != "api":
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		githubError(w, http.StatusNotFound, "Not Found")
		return
	}
	api := segs[1:]
	if f.isDown() {
		githubError(w, http.StatusServiceUnavailable, "Service Unavailable")
		return
	}
	// Public things are readable without a token, as on GitHub; a token
	// that is sent must be valid, and /user needs one.
	me, ok := f.caller(r, "github")
	if !ok && (presentedToken(r) || (len(api) > 0 && api[0] == "user")) {
		githubError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	base := f.base(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case len(api) == 1 && api[0] == "user":
		writeJSON(w, http.StatusOK, f.githubUser(base, me.User))
	case len(api) == 2 && api[0] == "user" && api[1] == "emails":
		var out []map[string]any
		if me.Email != "" {
			out = append(out, map[string]any{"email": me.Email, "primary": true, "verified": true, "visibility": "private"})
		}
		writeJSON(w, http.StatusOK, orEmpty(out))
	case len(api) == 2 && api[0] == "user" && api[1] == "orgs":
		var out []map[string]any
		for _, o := range f.sortedOrgs() {
			for _, m := range o.Members {
				if m == me.ID {
					out = append(out, map[string]any{"login": o.Login, "id": o.ID, "avatar_url": base + "/avatars/org-" + strconv.FormatInt(o.ID, 10) + ".png"})
				}
			}
		}
		writeJSON(w, http.StatusOK, orEmpty(out))
	case len(api) == 3 && api[0] == "repos":
		repo := f.repoByName(api[1], api[2])
		if repo == nil || !readable(repo, me) {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		perm := repo.Access[me.ID]
		visibility := "public"
		if repo.Private {
			visibility = "private"
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": repo.ID, "name": repo.Name, "full_name": repo.FullName(), "private": repo.Private,
			"visibility": visibility, "description": repo.Description,
			"html_url": base + "/github/" + repo.FullName(),
			"owner":    f.githubOwner(base, repo.Owner),
			"permissions": map[string]bool{
				"admin": perm == PermAdmin, "push": perm == PermAdmin || perm == PermWrite, "pull": true,
			},
		})
	case len(api) == 6 && api[0] == "repos" && api[3] == "collaborators" && api[5] == "permission":
		repo := f.repoByName(api[1], api[2])
		if repo == nil || !readable(repo, me) {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		u := f.userByLogin(api[4])
		if u == nil {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		perm := repo.Access[u.ID]
		if perm == "" {
			perm = "none"
			if !repo.Private {
				perm = PermRead
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"permission": perm, "role_name": perm, "user": f.githubUser(base, *u)})
	case len(api) == 2 && api[0] == "users":
		if u := f.userByLogin(api[1]); u != nil {
			writeJSON(w, http.StatusOK, f.githubUser(base, *u))
			return
		}
		if o := f.orgByLogin(api[1]); o != nil {
			writeJSON(w, http.StatusOK, f.githubOwner(base, o.Login))
			return
		}
		githubError(w, http.StatusNotFound, "Not Found")
	default:
		githubError(w, http.StatusNotFound, "Not Found")
	}
}

func (f *Forge) githubUser(base string, u User) map[string]any {
	out := map[string]any{
		"login": u.Login, "id": u.ID, "type": "User", "name": u.Name,
		"avatar_url": base + "/avatars/" + strconv.FormatInt(u.ID, 10) + ".png",
		"html_url":   base + "/github/" + u.Login,
	}
	if u.Email != "" {
		out["email"] = u.Email
	}
	return out
}

func (f *Forge) githubOwner(base, login string) map[string]any {
	for _, o := range f.orgs {
		if strings.EqualFold(o.Login, login) {
			return map[string]any{"login": o.Login, "id": o.ID, "type": "Organization", "name": o.Name,
				"avatar_url": base + "/avatars/org-" + strconv.FormatInt(o.ID, 10) + ".png",
				"html_url":   base + "/github/" + o.Login}
		}
	}
	if u := f.userByLogin(login); u != nil {
		return map[string]any{"login": u.Login, "id": u.ID, "type": "User", "avatar_url": base + "/avatars/" + strconv.FormatInt(u.ID, 10) + ".png"}
	}
	return map[string]any{"login": login}
}

func githubError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// The lookups below hold f.mu. Logins compare case-insensitively, as on
// both forges.

func (f *Forge) userByLogin(login string) *User {
	for _, u := range f.users {
		if strings.EqualFold(u.Login, login) {
			return u
		}
	}
	return nil
}

func (f *Forge) orgByLogin(login string) *Org {
	for _, o := range f.orgs {
		if strings.EqualFold(o.Login, login) {
			return o
		}
	}
	return nil
}

func (f *Forge) repoByName(owner, name string) *Repo {
	for _, r := range f.repos {
		if strings.EqualFold(r.Owner, owner) && strings.EqualFold(r.Name, name) {
			return r
		}
	}
	return nil
}

func (f *Forge) sortedOrgs() []*Org {
	out := make([]*Org, 0, len(f.orgs))
	for _, o := range f.orgs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *Org) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// orEmpty makes a nil list encode as [] rather than null.
func orEmpty(v []map[string]any) []map[string]any {
	if v == nil {
		return []map[string]any{}
	}
	return v
}
