package fakeforge

import (
	"net/http"
	"slices"
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
	api := segs[2:]
	if f.isDown() {
		gitlabError(w, http.StatusServiceUnavailable, "503 Service Unavailable")
		return
	}
	// Public things are readable without a token, as on GitLab; a token
	// that is sent must be valid, and /user needs one.
	me, ok := f.caller(r, "gitlab")
	if !ok && (presentedToken(r) || (len(api) == 1 && api[0] == "user")) {
		gitlabError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	// A token's scopes must reach the API: GitLab's read_user (with
	// openid, Plaza's sign-in scopes) reads /user and /users only, and
	// elsewhere — public projects included — gets 403 insufficient_scope.
	if ok && !me.private && len(api) > 0 && api[0] != "user" && api[0] != "users" {
		const desc = "The request requires higher privileges than provided by the access token."
		w.Header().Set("WWW-Authenticate", `Bearer realm="Protected by OAuth 2.0", error="insufficient_scope", error_description="`+desc+`", scope="api read_api"`)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "insufficient_scope", "error_description": desc, "scope": "api read_api"})
		return
	}
	base := f.base(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case len(api) == 1 && api[0] == "user":
		writeJSON(w, http.StatusOK, f.gitlabUser(base, me.User))
	case len(api) == 2 && api[0] == "projects":
		repo := f.project(api[1])
		if repo == nil || !readable(repo, me) {
			gitlabError(w, http.StatusNotFound, "404 Project Not Found")
			return
		}
		visibility := "public"
		if repo.Private {
			visibility = "private"
		}
		kind, nsID, avatar := "user", int64(0), ""
		if o := f.orgByLogin(repo.Owner); o != nil {
			kind, nsID, avatar = "group", o.ID, base+"/avatars/org-"+strconv.FormatInt(o.ID, 10)+".png"
		} else if u := f.userByLogin(repo.Owner); u != nil {
			nsID, avatar = u.ID, base+"/avatars/"+strconv.FormatInt(u.ID, 10)+".png"
		}
		nsPath := repo.Owner[strings.LastIndex(repo.Owner, "/")+1:]
		project := map[string]any{
			"id": repo.ID, "name": repo.Name, "path": repo.Name, "path_with_namespace": repo.FullName(),
			"description": repo.Description, "visibility": visibility,
			"web_url": base + "/gitlab/" + repo.FullName(),
			"namespace": map[string]any{"id": nsID, "name": nsPath, "path": nsPath, "full_path": repo.Owner, "kind": kind,
				"avatar_url": avatar, "web_url": base + "/gitlab/" + repo.Owner},
		}
		// permissions describe the caller, as GitLab's do.
		if ok {
			var access any
			if level := gitlabLevel(repo.Access[me.ID]); level > 0 {
				access = map[string]any{"access_level": level, "notification_level": 3}
			}
			project["permissions"] = map[string]any{"project_access": access, "group_access": nil}
		}
		writeJSON(w, http.StatusOK, project)
	case len(api) == 2 && api[0] == "groups":
		o := f.orgByLogin(api[1])
		if id, err := strconv.ParseInt(api[1], 10, 64); err == nil {
			o = f.orgs[id]
		}
		if o == nil || (o.Private && !(me.private && slices.Contains(o.Members, me.ID))) {
			gitlabError(w, http.StatusNotFound, "404 Group Not Found")
			return
		}
		visibility := "public"
		if o.Private {
			visibility = "private"
		}
		name := o.Name
		if name == "" {
			name = o.Login[strings.LastIndex(o.Login, "/")+1:]
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": o.ID, "name": name, "path": o.Login[strings.LastIndex(o.Login, "/")+1:], "full_path": o.Login,
			"visibility": visibility, "web_url": base + "/gitlab/groups/" + o.Login,
			"avatar_url": base + "/avatars/org-" + strconv.FormatInt(o.ID, 10) + ".png",
		})
	case len(api) == 1 && api[0] == "users":
		var out []map[string]any
		if u := f.userByLogin(r.URL.Query().Get("username")); u != nil {
			out = append(out, f.gitlabUser(base, *u))
		}
		writeJSON(w, http.StatusOK, orEmpty(out))
	case len(api) == 5 && api[0] == "projects" && api[2] == "members" && api[3] == "all":
		repo := f.project(api[1])
		if repo == nil || !readable(repo, me) {
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
	// Nested groups: the project is the last segment.
	i := strings.LastIndex(idOrPath, "/")
	if i < 0 {
		return nil
	}
	return f.repoByName(idOrPath[:i], idOrPath[i+1:])
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
