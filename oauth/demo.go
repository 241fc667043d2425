package oauth

import "plaza/oauth/fakeforge"

// The demo forge: an in-process fake GitHub, offered by `plaza serve --demo`
// when no real forge is configured, so a newcomer can try the whole
// sign-in flow offline. Its sign-in page lets anyone pick a demo user.
const (
	demoPrefix       = "/_plaza/demo-forge"
	demoClientID     = "plaza-demo"
	demoClientSecret = "plaza-demo-secret" // not a secret: the forge is local and fake
)

// DemoUsers are the demo forge's logins.
func DemoUsers() []string { return []string{"alice-dev", "bob-dev"} }

func newDemoForge() *fakeforge.Forge {
	f := fakeforge.New(fakeforge.Options{Prefix: demoPrefix, Title: "Demo forge (a local stand-in for GitHub)"})
	f.AddClient(demoClientID, demoClientSecret)
	f.AddUser(fakeforge.User{ID: 1001, Login: "alice-dev", Name: "Alice Developer", Email: "alice-dev@demo.invalid"})
	f.AddUser(fakeforge.User{ID: 1002, Login: "bob-dev", Name: "Bob Developer", Email: "bob-dev@demo.invalid"})
	f.AddOrg(fakeforge.Org{ID: 2001, Login: "acme", Members: []int64{1001, 1002}})
	f.AddRepo(fakeforge.Repo{ID: 3001, Owner: "acme", Name: "widget", Description: "Widgets for everyone",
		Access: map[int64]string{1001: fakeforge.PermAdmin, 1002: fakeforge.PermWrite}})
	f.AddRepo(fakeforge.Repo{ID: 3002, Owner: "acme", Name: "gadget", Description: "Gadgets, privately",
		Private: true, Access: map[int64]string{1001: fakeforge.PermAdmin}})
	// More for rooms on demand: a second org, a repository with an
	// underscore, and one owned by a user.
	f.AddOrg(fakeforge.Org{ID: 2002, Login: "plazaproject", Name: "The Plaza project", Members: []int64{1002}})
	f.AddRepo(fakeforge.Repo{ID: 3003, Owner: "plazaproject", Name: "plaza", Description: "Gitter-style chat that is a Matrix homeserver",
		Access: map[int64]string{1002: fakeforge.PermAdmin, 1001: fakeforge.PermWrite}})
	f.AddRepo(fakeforge.Repo{ID: 3004, Owner: "acme", Name: "docs_site", Description: "The Acme documentation site",
		Access: map[int64]string{1002: fakeforge.PermAdmin}})
	f.AddRepo(fakeforge.Repo{ID: 3005, Owner: "alice-dev", Name: "dotfiles", Description: "Alice's configuration files",
		Access: map[int64]string{1001: fakeforge.PermAdmin}})
	return f
}
