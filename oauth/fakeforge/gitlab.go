package fakeforge

import (
	"net/http"
	"strconv"
	"strings"
)

// gitlabLevel is GitLab's access level (Reporter, Developer, Owner) for a
// permission level repositories are configured with; 0 for none.
func gitlabLevel(perm string) int {
	switch perm {
	case PermRead:
		return 20
	case PermWrite:
		return 30
	case PermAdmin:
		return 50
	}
	return 0
}

// gitlab serves the GitLab flavour; segs follow "/gitlab".
func (f *Forge) gitlab(w http.ResponseWriter, r *http.Request, segs []string) {
	path := strings.Join(segs, "/")
	switch {
	case path == "oauth/authorize":
		f.authorize(w, r, "gitlab")
		return
	case path == "oauth/token":
		f.token(w, r, "gitlab")
		return
	case len(segs) < 2 || segs[0] != "api" || segs[1] != "v4":
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		gitlabError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	me, ok := f.caller(r)
	if !ok {
		gitlabError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	api := segs[2:]
	base := f.base(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case len(api) == 1 && api[0] == "user":
		writeJSON(w, http.StatusOK, f.gitlabUser(base, me))
	case len(api) == 2 && api[0] == "projects":
		repo := f.project(api[1])
		if repo == nil || !readable(repo, me.ID) {
			gitlabError(w, http.StatusNotFound, "404 Project Not Found")
			return
		}
		visibility := "public"
		if repo.Private {
			visibility = "private"
		}
		kind, nsID := "user", int64(0)
		for _, o := range f.orgs {
			if strings.EqualFold(o.Login, repo.Owner) {
				kind, nsID = "group", o.ID
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": repo.ID, "name": repo.Name, "path": repo.Name, "path_with_namespace": repo.FullName(),
			"description": repo.Description, "visibility": visibility,
			"web_url":   base + "/gitlab/" + repo.FullName(),
			"namespace": map[string]any{"id": nsID, "name": repo.Owner, "path": repo.Owner, "full_path": repo.Owner, "kind": kind},
		})
	case len(api) == 5 && api[0] == "projects" && api[2] == "members" && api[3] == "all":
		repo := f.project(api[1])
		if repo == nil || !readable(repo, me.ID) {
			gitlabError(w, http.StatusNotFound, "404 Project Not Found")
			return
		}
		uid, _ := strconv.ParseInt(api[4], 10, 64)
		u, level := f.users[uid], gitlabLevel(repo.Access[uid])
		if u == nil || level == 0 {
			gitlabError(w, http.StatusNotFound, "404 Not found")
			return
		}
		m := f.gitlabUser(base, *u)
		m["access_level"] = level
		writeJSON(w, http.StatusOK, m)
	default:
		gitlabError(w, http.StatusNotFound, "404 Not Found")
	}
}

// project finds a project by numeric id or by its path with namespace (f.mu
// held).
func (f *Forge) project(idOrPath string) *Repo {
	if id, err := strconv.ParseInt(idOrPath, 10, 64); err == nil {
		return f.repos[id]
	}
	owner, name, ok := strings.Cut(idOrPath, "/")
	if !ok {
		return nil
	}
	return f.repoByName(owner, name)
}

func (f *Forge) gitlabUser(base string, u User) map[string]any {
	out := map[string]any{
		"id": u.ID, "username": u.Login, "name": u.Name, "state": "active",
		"avatar_url": base + "/avatars/" + strconv.FormatInt(u.ID, 10) + ".png",
		"web_url":    base + "/gitlab/" + u.Login,
	}
	if u.Email != "" {
		out["email"] = u.Email
	}
	return out
}

func gitlabError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}
