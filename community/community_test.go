package community_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"plaza/community"
	"plaza/community/forge"
	"plaza/homeserver"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/oauth"
	"plaza/oauth/fakeforge"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

const server = "plaza.test"

// Forge users and repositories of the tests.
const (
	alice, bob, dave   int64 = 1, 2, 4 // dave: admin of widget, used once the forge is down
	acmeID                   = 10
	widgetID, secretID       = 100, 101
)

// identities hands out forge tokens the fake forge issued, as package
// oauth would after a sign-in.
type identities struct {
	mu   sync.Mutex
	idp  string
	byID map[string]*oauth.ForgeIdentity
}

func (i *identities) ForgeIdentity(_ context.Context, userID, idp string) (*oauth.ForgeIdentity, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if id, ok := i.byID[userID]; ok && idp == i.idp {
		return id, nil
	}
	return nil, storage.ErrNotFound
}

type env struct {
	t      *testing.T
	URL    string
	hs     *homeserver.Server
	svc    *community.Service
	forge  *fakeforge.Forge
	fsrv   *httptest.Server
	idents *identities
}

// newEnv starts a fake forge (over real HTTP) and a homeserver with rooms
// on demand for its flavour.
func newEnv(t *testing.T, flavour string) *env {
	t.Helper()
	f := fakeforge.New(fakeforge.Options{})
	f.AddUser(fakeforge.User{ID: alice, Login: "alice"})
	f.AddUser(fakeforge.User{ID: bob, Login: "bob"})
	f.AddUser(fakeforge.User{ID: dave, Login: "dave"})
	f.AddOrg(fakeforge.Org{ID: acmeID, Login: "acme", Name: "Acme Inc", Members: []int64{alice, bob}})
	f.AddRepo(fakeforge.Repo{ID: widgetID, Owner: "acme", Name: "widget", Description: "Widgets for all",
		Access: map[int64]string{alice: fakeforge.PermAdmin, bob: fakeforge.PermWrite, dave: fakeforge.PermAdmin}})
	f.AddRepo(fakeforge.Repo{ID: secretID, Owner: "acme", Name: "secret", Private: true,
		Access: map[int64]string{alice: fakeforge.PermWrite}})
	fsrv := httptest.NewServer(f)
	t.Cleanup(fsrv.Close)

	pool := storagetest.NewDB(t, storage.Migrations())
	hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: server, DataDir: t.TempDir(),
		Registration: "open", BcryptCost: bcrypt.MinCost}, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	api := fsrv.URL + "/github/api/"
	if flavour == forge.GitLab {
		api = fsrv.URL + "/gitlab"
	}
	fc, err := forge.New(flavour, forge.Config{APIURL: api})
	if err != nil {
		t.Fatal(err)
	}
	ids := &identities{idp: flavour, byID: map[string]*oauth.ForgeIdentity{}}
	ts := httptest.NewUnstartedServer(nil)
	svc, err := community.New(context.Background(), community.Config{Forge: fc, IDP: flavour, Identities: ids,
		PublicURL: "http://" + ts.Listener.Addr().String()}, hs)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = hs.Handler(svc.Routes)
	ts.Start()
	t.Cleanup(ts.Close)
	return &env{t: t, URL: ts.URL, hs: hs, svc: svc, forge: f, fsrv: fsrv, idents: ids}
}

// link gives a Matrix user the forge identity of a forge user, opted in
// to private repositories (its token carries every scope).
func (e *env) link(c *client, forgeUser int64) {
	e.idents.mu.Lock()
	defer e.idents.mu.Unlock()
	e.idents.byID[c.UserID] = &oauth.ForgeIdentity{IDP: e.idents.idp, ForgeUserID: forgeUser,
		Token: &oauth2.Token{AccessToken: e.forge.IssueToken(forgeUser)}, PrivateRepos: true}
}

// communityRooms counts the associations of a kind.
func (e *env) communityRooms(kind string) int {
	var n int
	if err := e.hs.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM community_rooms WHERE kind = $1`, kind).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// ---- a small Matrix client ----

type client struct {
	t      *testing.T
	base   string
	token  string
	UserID string
}

type response struct {
	Status int
	Body   map[string]any
	Raw    []byte
}

func (r response) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

func (c *client) do(method, path string, body any, hdr ...string) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Errorf("%s %s: %v", method, path, err)
		return response{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func (c *client) must(method, path string, body any) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != 200 {
		c.t.Fatalf("%s %s = %d %s", method, path, r.Status, r.Raw)
	}
	return r
}

func (c *client) fails(status int, errcode, method, path string, body any) {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != status || r.str("errcode") != errcode {
		c.t.Fatalf("%s %s = %d %s, want %d %s", method, path, r.Status, r.Raw, status, errcode)
	}
}

func (e *env) anon() *client { return &client{t: e.t, base: e.URL} }

func (e *env) register(name string) *client {
	e.t.Helper()
	c := e.anon()
	r := c.must("POST", "/_matrix/client/v3/register", map[string]any{
		"username": name, "password": "secret-" + name, "auth": map[string]any{"type": "m.login.dummy"}})
	c.token, c.UserID = r.str("access_token"), r.str("user_id")
	return c
}

func (c *client) join(idOrAlias string) response {
	c.t.Helper()
	return c.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(idOrAlias), map[string]any{})
}

func (c *client) state(roomID, typ, sk string) map[string]any {
	c.t.Helper()
	return c.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(sk), nil).Body
}

func levels(c *client, roomID string) map[string]any {
	users, _ := c.state(roomID, "m.room.power_levels", "")["users"].(map[string]any)
	return users
}

// ---- tests ----

func TestJoinByAliasCreatesOneRoom(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.register(fmt.Sprintf("user%d", i))
	}
	e.link(clients[0], alice)
	e.link(clients[1], bob)

	rooms := make([]string, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.join("#acme_widget:" + server)
			if r.Status != 200 {
				t.Errorf("join %d: %d %s", i, r.Status, r.Raw)
			}
			rooms[i] = r.str("room_id")
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, r := range rooms {
		if r != rooms[0] || r == "" {
			t.Fatalf("join %d got room %q, join 0 %q", i, r, rooms[0])
		}
	}
	if got := e.communityRooms("repo"); got != 1 {
		t.Fatalf("%d repository rooms, want 1", got)
	}
	if got := e.communityRooms("owner"); got != 1 {
		t.Fatalf("%d owner spaces, want 1", got)
	}
	roomID, c := rooms[0], clients[2]
	widgetURL := e.fsrv.URL + "/github/acme/widget"
	if got := c.state(roomID, "m.room.name", "")["name"]; got != "acme/widget" {
		t.Errorf("name %v", got)
	}
	if got := c.state(roomID, "m.room.topic", "")["topic"]; got != "Widgets for all — "+widgetURL {
		t.Errorf("topic %v", got)
	}
	assoc := c.state(roomID, community.StateTypeForge, "")
	if assoc["path"] != "acme/widget" || assoc["id"] != float64(widgetID) || assoc["kind"] != "repo" ||
		assoc["forge"] != "github" || assoc["web_url"] != widgetURL {
		t.Errorf("association %v", assoc)
	}
	for typ, want := range map[string][2]string{
		"m.room.join_rules": {"join_rule", "public"}, "m.room.history_visibility": {"history_visibility", "world_readable"},
		"m.room.guest_access": {"guest_access", "can_join"}, "m.room.canonical_alias": {"alias", "#acme_widget:" + server},
	} {
		if got := c.state(roomID, typ, "")[want[0]]; got != want[1] {
			t.Errorf("%s: %v, want %s", typ, got, want[1])
		}
	}
	// The space: the org's, with the room as its child and the owner's avatar.
	spaceID := c.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme:"+server), nil).str("room_id")
	if spaceID == "" {
		t.Fatal("no space for acme")
	}
	if _, ok := c.state(roomID, "m.space.parent", spaceID)["via"]; !ok {
		t.Error("the room has no m.space.parent naming the space")
	}
	if _, ok := c.state(spaceID, "m.space.child", roomID)["via"]; !ok {
		t.Error("the space has no m.space.child naming the room")
	}
	if got := c.state(spaceID, "m.room.name", "")["name"]; got != "Acme Inc" {
		t.Errorf("space name %v", got)
	}
	create := c.state(spaceID, "m.room.create", "")
	if create["type"] != "m.space" {
		t.Errorf("space create %v", create)
	}
	if a, _ := c.state(roomID, "m.room.avatar", "")["url"].(string); !strings.HasPrefix(a, "mxc://"+server+"/") {
		t.Errorf("room avatar %q", a)
	}
	// Power: the forge's admins 100, pushers 50, nobody else; the service
	// account created the room, not the first joiner.
	users := levels(c, roomID)
	if users[clients[0].UserID] != float64(100) || users[clients[1].UserID] != float64(50) {
		t.Errorf("levels %v", users)
	}
	for _, cl := range clients[2:] {
		if _, ok := users[cl.UserID]; ok {
			t.Errorf("%s has a level: %v", cl.UserID, users)
		}
	}
	if sender := createSender(t, c, roomID); sender != e.svc.ServiceAccount() {
		t.Errorf("room created by %s", sender)
	}
	// Listed in the directory.
	var published bool
	if err := e.hs.DB.Pool.QueryRow(context.Background(), `SELECT published FROM rooms WHERE room_id = $1`, roomID).Scan(&published); err != nil || !published {
		t.Errorf("the room is not published in the directory (%v)", err)
	}
	// Another join, by the other alias spelling, finds the same room.
	if r := clients[3].join("#acme_Widget:" + server); r.str("room_id") != roomID {
		t.Errorf("mixed-case alias: %d %s", r.Status, r.Raw)
	}
}

// createSender reads the create event's sender from /state.
func createSender(t *testing.T, c *client, roomID string) string {
	t.Helper()
	r := c.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	var evs []map[string]any
	if err := json.Unmarshal(r.Raw, &evs); err != nil {
		t.Fatalf("state: %s", r.Raw)
	}
	for _, ev := range evs {
		if ev["type"] == "m.room.create" {
			s, _ := ev["sender"].(string)
			return s
		}
	}
	return ""
}

func TestUnknownRepoNotFound(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	c := e.register("carol")
	c.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_nope:"+server), map[string]any{})
	c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#nobody_nothing:"+server), nil)
	c.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#not=zz_valid:"+server), nil)
	if n := e.communityRooms("repo") + e.communityRooms("owner"); n != 0 {
		t.Fatalf("%d rooms created for unknown repositories", n)
	}
	if _, err := e.svc.RepoRoom(context.Background(), "acme/nope", c.UserID); !errors.Is(err, community.ErrNoSuchRepo) {
		t.Fatalf("RepoRoom of an unknown repo: %v", err)
	}
}

func TestAnonymousVisitCreatesNothing(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	ctx := context.Background()
	if _, err := e.svc.RepoRoom(ctx, "acme/widget", ""); !errors.Is(err, community.ErrRoomNotCreated) {
		t.Fatalf("anonymous RepoRoom: %v, want ErrRoomNotCreated", err)
	}
	if _, err := e.svc.RepoRoom(ctx, "acme/nope", ""); !errors.Is(err, community.ErrNoSuchRepo) {
		t.Fatalf("anonymous RepoRoom of an unknown repo: %v", err)
	}
	if _, err := e.svc.RepoRoom(ctx, "acme/secret", ""); !errors.Is(err, community.ErrNoSuchRepo) {
		t.Fatalf("anonymous RepoRoom of a private repo: %v", err)
	}
	if n := e.communityRooms("repo") + e.communityRooms("owner"); n != 0 {
		t.Fatalf("an anonymous visit created %d rooms", n)
	}
	c := e.register("carol")
	roomID, err := e.svc.RepoRoom(ctx, "/acme/widget", c.UserID)
	if err != nil || roomID == "" {
		t.Fatalf("signed-in RepoRoom: %q %v", roomID, err)
	}
	if again, err := e.svc.RepoRoom(ctx, "acme/widget", ""); again != roomID || err != nil {
		t.Fatalf("anonymous RepoRoom once it exists: %q %v", again, err)
	}
	if space, err := e.svc.RepoRoom(ctx, "acme", ""); err != nil || space == "" || space == roomID {
		t.Fatalf("RepoRoom of the org: %q %v", space, err)
	}
}

func TestPrivateRepoRoom(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, b, carol := e.register("alice"), e.register("bob"), e.register("carol")
	e.link(a, alice)
	e.link(b, bob)
	alias := "#acme_secret:" + server
	// Nobody without access learns that it exists.
	e.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil)
	b.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{})
	if n := e.communityRooms("repo"); n != 0 {
		t.Fatalf("%d rooms after refused lookups", n)
	}
	r := a.join(alias)
	if r.Status != 200 {
		t.Fatalf("alice joins: %d %s", r.Status, r.Raw)
	}
	roomID := r.str("room_id")
	if got := a.state(roomID, "m.room.join_rules", "")["join_rule"]; got != "invite" {
		t.Errorf("join rule %v", got)
	}
	if got := levels(a, roomID)[a.UserID]; got != float64(50) {
		t.Errorf("alice (push access) has level %v", got)
	}
	// The public org space does not list it; the room names its space.
	space, _ := e.svc.RepoRoom(context.Background(), "acme", "")
	carol.join(space)
	if r := carol.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(space)+"/state", nil); strings.Contains(string(r.Raw), roomID) || !strings.Contains(string(r.Raw), "m.space") {
		t.Error("the public space lists the private repository's room")
	}
	if _, ok := a.state(roomID, "m.space.parent", space)["via"]; !ok {
		t.Error("the private room does not name its space")
	}
	// Still hidden from those without access, and the room refuses them.
	e.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil)
	b.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
	e.anon().fails(404, "M_NOT_FOUND", "GET", "/_plaza/rooms/"+url.PathEscape(roomID)+"/activity", nil)
	b.fails(404, "M_NOT_FOUND", "GET", "/_plaza/rooms/"+url.PathEscape(roomID)+"/activity", nil)
	a.must("GET", "/_plaza/rooms/"+url.PathEscape(roomID)+"/activity", nil)
	carol.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
	if _, err := e.svc.RepoRoom(context.Background(), "acme/secret", b.UserID); !errors.Is(err, community.ErrNoSuchRepo) {
		t.Errorf("RepoRoom for bob: %v", err)
	}
	// Once the forge grants bob read access, he may join.
	e.forge.AddRepo(fakeforge.Repo{ID: secretID, Owner: "acme", Name: "secret", Private: true,
		Access: map[int64]string{alice: fakeforge.PermWrite, bob: fakeforge.PermRead}})
	e.svc.ForgetAccess(roomID)
	if r := b.join(alias); r.Status != 200 || r.str("room_id") != roomID {
		t.Fatalf("bob with access joins: %d %s", r.Status, r.Raw)
	}
	if _, ok := levels(a, roomID)[b.UserID]; ok {
		t.Errorf("bob (read access) got a level")
	}
}

func TestPowerLevelsWhenForgeIsDown(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, d := e.register("alice"), e.register("dave")
	e.link(a, alice)
	e.link(d, dave)
	r := a.join("#acme_widget:" + server)
	if r.Status != 200 {
		t.Fatalf("alice joins: %d %s", r.Status, r.Raw)
	}
	roomID := r.str("room_id")

	e.forge.SetDown(true)
	// The room stays readable and joinable; dave, an admin on the forge,
	// gains nothing while the forge cannot confirm it.
	guest := e.anon()
	g := guest.must("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{})
	guest.token = g.str("access_token")
	guest.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b", nil)
	if r := d.join("#acme_widget:" + server); r.Status != 200 {
		t.Fatalf("dave joins while the forge is down: %d %s", r.Status, r.Raw)
	}
	if got, ok := levels(a, roomID)[d.UserID]; ok {
		t.Fatalf("dave gained level %v while the forge was down", got)
	}
	// A room that does not exist yet cannot be made.
	r = d.join("#acme_other:" + server)
	if r.Status == 200 || r.str("errcode") == "" {
		t.Fatalf("creation while the forge is down: %d %s", r.Status, r.Raw)
	}

	e.forge.SetDown(false)
	d.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
	if r := d.join(roomID); r.Status != 200 {
		t.Fatalf("dave rejoins: %d %s", r.Status, r.Raw)
	}
	if got := levels(a, roomID)[d.UserID]; got != float64(100) {
		t.Fatalf("dave's level once the forge is back: %v", got)
	}
}

func TestForgeWebhookResyncsLevels(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, b := e.register("alice"), e.register("bob")
	e.link(a, alice)
	e.link(b, bob)
	roomID := a.join("#acme_widget:" + server).str("room_id")
	b.join(roomID)
	hook := a.must("POST", "/_plaza/rooms/"+url.PathEscape(roomID)+"/webhooks", map[string]any{})
	// bob becomes an admin on the forge; a "member" delivery re-checks.
	e.forge.AddRepo(fakeforge.Repo{ID: widgetID, Owner: "acme", Name: "widget",
		Access: map[int64]string{alice: fakeforge.PermAdmin, bob: fakeforge.PermAdmin}})
	body := []byte(fmt.Sprintf(`{"action":"edited","repository":{"id":%d},"sender":{"login":"alice"}}`, widgetID))
	r := deliverGitHub(t, hook, "member", "d-member", body, sign(hook.str("secret"), body))
	if r.Status != 200 || r.Body["posted"] != false {
		t.Fatalf("member delivery: %d %s", r.Status, r.Raw)
	}
	waitFor(t, "bob's level to follow the forge", func() bool { return levels(a, roomID)[b.UserID] == float64(100) })
}

// waitFor polls cond until it holds (the re-check runs in the background).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// deliverGitHub posts a delivery to a webhook the way GitHub does.
func deliverGitHub(t *testing.T, hook response, event, delivery string, body []byte, signature string) response {
	t.Helper()
	u, _ := url.Parse(hook.str("url"))
	c := &client{t: t, base: u.Scheme + "://" + u.Host}
	hdr := []string{"X-GitHub-Event", event, "X-GitHub-Delivery", delivery}
	if signature != "" {
		hdr = append(hdr, "X-Hub-Signature-256", signature)
	}
	return c.do("POST", u.Path, body, hdr...)
}

// notices lists the m.notice bodies in a room, oldest first.
func notices(t *testing.T, c *client, roomID string) []string {
	t.Helper()
	r := c.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=100", nil)
	chunk, _ := r.Body["chunk"].([]any)
	var out []string
	for i := len(chunk) - 1; i >= 0; i-- {
		ev := chunk[i].(map[string]any)
		content, _ := ev["content"].(map[string]any)
		if ev["type"] == "m.room.message" && content["msgtype"] == "m.notice" {
			out = append(out, ev["sender"].(string)+": "+content["body"].(string))
		}
	}
	return out
}

func TestGitHubWebhook(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, b := e.register("alice"), e.register("bob")
	e.link(a, alice)
	e.link(b, bob)
	roomID := a.join("#acme_widget:" + server).str("room_id")
	b.join(roomID)
	path := "/_plaza/rooms/" + url.PathEscape(roomID) + "/webhooks"
	b.fails(403, "M_FORBIDDEN", "POST", path, map[string]any{})
	e.anon().fails(401, "M_MISSING_TOKEN", "POST", path, map[string]any{})
	space, _ := e.svc.RepoRoom(context.Background(), "acme", "")
	a.fails(404, "M_NOT_FOUND", "POST", "/_plaza/rooms/"+url.PathEscape(space)+"/webhooks", map[string]any{})
	hook := a.must("POST", path, map[string]any{})
	secret := hook.str("secret")
	if secret == "" || !strings.Contains(hook.str("url"), "/_plaza/webhooks/") {
		t.Fatalf("webhook: %s", hook.Raw)
	}
	if st := a.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil); strings.Contains(string(st.Raw), secret) {
		t.Fatal("the secret is in room state")
	}

	push := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","compare":"https://forge.test/acme/widget/compare/a...b",
		"pusher":{"name":"alice"},"sender":{"login":"alice"},"repository":{"id":%d,"full_name":"acme/widget"},
		"commits":[{"message":"Fix the frobnicator\n\nLong text","url":"https://forge.test/c/1"}]}`, widgetID))
	// Unsigned, mis-signed, signed with another secret: refused, nothing posted.
	if r := deliverGitHub(t, hook, "push", "d1", push, ""); r.Status != 401 {
		t.Errorf("unsigned delivery: %d %s", r.Status, r.Raw)
	}
	if r := deliverGitHub(t, hook, "push", "d1", push, "sha256=00"); r.Status != 403 {
		t.Errorf("mis-signed delivery: %d %s", r.Status, r.Raw)
	}
	if r := deliverGitHub(t, hook, "push", "d1", push, sign("other", push)); r.Status != 403 {
		t.Errorf("delivery signed with another secret: %d %s", r.Status, r.Raw)
	}
	tampered := bytes.Replace(push, []byte("frobnicator"), []byte("FROBNICATOR"), 1)
	if r := deliverGitHub(t, hook, "push", "d1", tampered, sign(secret, push)); r.Status != 403 {
		t.Errorf("tampered delivery: %d %s", r.Status, r.Raw)
	}
	if got := notices(t, a, roomID); len(got) != 0 {
		t.Fatalf("refused deliveries posted %v", got)
	}
	if items, _ := e.svc.Activity(context.Background(), roomID, 10); len(items) != 0 {
		t.Fatalf("refused deliveries recorded %v", items)
	}

	// A good one posts a notice from the service account and an activity item.
	r := deliverGitHub(t, hook, "push", "d1", push, sign(secret, push))
	if r.Status != 200 || r.Body["posted"] != true {
		t.Fatalf("good delivery: %d %s", r.Status, r.Raw)
	}
	want := e.svc.ServiceAccount() + ": alice pushed 1 commit to main: Fix the frobnicator https://forge.test/acme/widget/compare/a...b"
	if got := notices(t, a, roomID); len(got) != 1 || got[0] != want {
		t.Fatalf("notices %q, want %q", got, want)
	}
	// A redelivery posts nothing new.
	if r := deliverGitHub(t, hook, "push", "d1", push, sign(secret, push)); r.Status != 200 || r.Body["posted"] != false {
		t.Fatalf("redelivery: %d %s", r.Status, r.Raw)
	}
	issue := []byte(fmt.Sprintf(`{"action":"opened","sender":{"login":"bob"},"repository":{"id":%d},
		"issue":{"number":7,"title":"It breaks","html_url":"https://forge.test/acme/widget/issues/7"}}`, widgetID))
	deliverGitHub(t, hook, "issues", "d2", issue, sign(secret, issue))
	items, err := e.svc.Activity(context.Background(), roomID, 10)
	if err != nil || len(items) != 2 {
		t.Fatalf("activity %v %v", items, err)
	}
	if items[0].Kind != "issue" || items[0].Summary != "bob opened issue #7: It breaks" || items[0].EventID == "" ||
		items[1].Kind != "push" || items[1].Actor != "alice" {
		t.Errorf("activity %+v", items)
	}
	// Deliveries about another repository, or that are not JSON, are refused.
	other := []byte(`{"action":"opened","repository":{"id":999},"issue":{"number":1,"title":"x"}}`)
	if r := deliverGitHub(t, hook, "issues", "d3", other, sign(secret, other)); r.Status != 400 {
		t.Errorf("delivery for another repository: %d %s", r.Status, r.Raw)
	}
	junk := []byte(`{not json`)
	if r := deliverGitHub(t, hook, "push", "d4", junk, sign(secret, junk)); r.Status != 400 || r.str("errcode") != "M_BAD_JSON" {
		t.Errorf("junk delivery: %d %s", r.Status, r.Raw)
	}
	if r := deliverGitHub(t, response{Body: map[string]any{"url": e.URL + "/_plaza/webhooks/nope"}}, "push", "d5", push, sign(secret, push)); r.Status != 404 {
		t.Errorf("unknown hook: %d %s", r.Status, r.Raw)
	}
	if got := notices(t, a, roomID); len(got) != 2 {
		t.Fatalf("notices %q", got)
	}
	// The feed over HTTP: anyone may read a world-readable room's.
	feed := e.anon().must("GET", "/_plaza/rooms/"+url.PathEscape(roomID)+"/activity?limit=1", nil)
	list, _ := feed.Body["activity"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["summary"] != "bob opened issue #7: It breaks" {
		t.Errorf("feed %s", feed.Raw)
	}
	e.anon().fails(400, "M_INVALID_PARAM", "GET", "/_plaza/rooms/"+url.PathEscape(roomID)+"/activity?limit=x", nil)
	e.anon().fails(404, "M_NOT_FOUND", "GET", "/_plaza/rooms/"+url.PathEscape("!nope:"+server)+"/activity", nil)
}

func TestGitLabNestedGroups(t *testing.T) {
	e := newEnv(t, forge.GitLab)
	e.forge.AddOrg(fakeforge.Org{ID: 20, Login: "grp", Members: []int64{alice}})
	e.forge.AddOrg(fakeforge.Org{ID: 21, Login: "grp/sub_team", Members: []int64{alice}})
	e.forge.AddRepo(fakeforge.Repo{ID: 200, Owner: "grp/sub_team", Name: "my_proj", Description: "Nested",
		Access: map[int64]string{alice: fakeforge.PermAdmin, bob: fakeforge.PermWrite}})
	a, b := e.register("alice"), e.register("bob")
	e.link(a, alice)
	e.link(b, bob)
	alias := "#grp_sub=5fteam_my=5fproj:" + server
	if got := e.svc.Alias("grp/sub_team/my_proj"); got != alias {
		t.Fatalf("alias %s, want %s", got, alias)
	}
	r := a.join(alias)
	if r.Status != 200 {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
	roomID := r.str("room_id")
	b.join(alias)
	if users := levels(a, roomID); users[a.UserID] != float64(100) || users[b.UserID] != float64(50) {
		t.Errorf("levels %v", users)
	}
	sub, err := e.svc.RepoRoom(context.Background(), "grp/sub_team", "")
	if err != nil {
		t.Fatal(err)
	}
	top, err := e.svc.RepoRoom(context.Background(), "grp", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.state(roomID, "m.space.parent", sub)["via"]; !ok {
		t.Error("the project's room is not a child of its subgroup's space")
	}
	if _, ok := a.state(sub, "m.space.parent", top)["via"]; !ok {
		t.Error("the subgroup's space is not a child of its group's space")
	}
	if _, ok := a.state(top, "m.space.child", sub)["via"]; !ok {
		t.Error("the group's space does not list the subgroup's")
	}
	if got := a.state(roomID, community.StateTypeForge, "")["flavour"]; got != "gitlab" {
		t.Errorf("flavour %v", got)
	}

	hook := a.must("POST", "/_plaza/rooms/"+url.PathEscape(roomID)+"/webhooks", map[string]any{})
	u, _ := url.Parse(hook.str("url"))
	mr := []byte(`{"object_kind":"merge_request","user":{"username":"alice"},"project":{"id":200},
		"object_attributes":{"iid":3,"title":"Add it","action":"merge","url":"https://gl.test/mr/3"}}`)
	hc := &client{t: t, base: e.URL}
	if r := hc.do("POST", u.Path, mr, "X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", "wrong"); r.Status != 403 {
		t.Errorf("wrong token: %d %s", r.Status, r.Raw)
	}
	if r := hc.do("POST", u.Path, mr, "X-Gitlab-Event", "Merge Request Hook"); r.Status != 401 {
		t.Errorf("no token: %d %s", r.Status, r.Raw)
	}
	if r := hc.do("POST", u.Path, mr, "X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", hook.str("secret")); r.Status != 200 || r.Body["posted"] != true {
		t.Fatalf("good delivery: %d %s", r.Status, r.Raw)
	}
	want := e.svc.ServiceAccount() + ": alice merged merge request !3: Add it https://gl.test/mr/3"
	if got := notices(t, a, roomID); len(got) != 1 || got[0] != want {
		t.Fatalf("notices %q, want %q", got, want)
	}

	// A private project: alice (Reporter) may join, with no level; bob may not.
	e.forge.AddRepo(fakeforge.Repo{ID: 201, Owner: "grp", Name: "hidden", Private: true,
		Access: map[int64]string{alice: fakeforge.PermRead}})
	hidden := "#grp_hidden:" + server
	b.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/join/"+url.PathEscape(hidden), map[string]any{})
	r = a.join(hidden)
	if r.Status != 200 {
		t.Fatalf("alice joins the private project's room: %d %s", r.Status, r.Raw)
	}
	if _, ok := levels(a, r.str("room_id"))[a.UserID]; ok {
		t.Error("a Reporter got a level")
	}
	b.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(r.str("room_id"))+"/join", map[string]any{})
}

func TestCreationRateLimit(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	for i := 0; i < 30; i++ {
		e.forge.AddRepo(fakeforge.Repo{ID: int64(1000 + i), Owner: "acme", Name: fmt.Sprintf("r%d", i)})
	}
	c := e.register("carol")
	limited := false
	for i := 0; i < 30 && !limited; i++ {
		r := c.join(fmt.Sprintf("#acme_r%d:%s", i, server))
		switch {
		case r.Status == 429 && r.str("errcode") == "M_LIMIT_EXCEEDED":
			limited = true
		case r.Status != 200:
			t.Fatalf("join %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if !limited {
		t.Fatal("30 creations by one user were not limited")
	}
	// Rooms that exist stay joinable.
	if r := c.join("#acme_r0:" + server); r.Status != 200 {
		t.Fatalf("joining an existing room after the limit: %d %s", r.Status, r.Raw)
	}
}

func TestRemoteLookupAndStaleTokens(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	ctx := context.Background()
	e.forge.AddRepo(fakeforge.Repo{ID: 300, Owner: "alice", Name: "dotfiles", Description: "Config"})
	// Another server asking (/query/directory) creates a public repository's
	// room, with the user's space as its parent, but never a private one's.
	roomID, err := e.hs.Client.ResolveLocalAlias(ctx, "#alice_dotfiles:"+server, "")
	if err != nil || roomID == "" {
		t.Fatalf("remote lookup: %q %v", roomID, err)
	}
	space, err := e.svc.RepoRoom(ctx, "alice", "")
	if err != nil {
		t.Fatalf("the user's space: %v", err)
	}
	c := e.register("carol")
	if _, ok := c.state(roomID, "m.space.parent", space)["via"]; !ok {
		t.Error("a user's repository is not a child of the user's space")
	}
	if _, err := e.hs.Client.ResolveLocalAlias(ctx, "#acme_secret:"+server, ""); err == nil {
		t.Fatal("a remote lookup found a private repository")
	}
	if n := e.communityRooms("repo"); n != 1 {
		t.Fatalf("%d repository rooms", n)
	}
	// A token the forge refuses (revoked) neither blocks a public room nor
	// changes levels.
	e.idents.mu.Lock()
	e.idents.byID[c.UserID] = &oauth.ForgeIdentity{IDP: "github", ForgeUserID: alice, Token: &oauth2.Token{AccessToken: "revoked"}}
	e.idents.mu.Unlock()
	r := c.join("#acme_widget:" + server)
	if r.Status != 200 {
		t.Fatalf("join with a revoked token: %d %s", r.Status, r.Raw)
	}
	if got, ok := levels(c, r.str("room_id"))[c.UserID]; ok {
		t.Errorf("a revoked token gave level %v", got)
	}
	c.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_secret:"+server), map[string]any{})
}

func TestServiceAccountMustBeOurs(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	ctx := context.Background()
	fc, _ := forge.New(forge.GitHub, forge.Config{APIURL: e.fsrv.URL + "/github/api/"})
	// Starting again with the account in place is fine.
	if _, err := community.New(ctx, community.Config{Forge: fc}, e.hs); err != nil {
		t.Fatalf("second start: %v", err)
	}
	// An account someone can log in to is never taken over.
	if err := e.hs.DB.CreateAccount(ctx, storage.Account{UserID: "@bot:" + server, Localpart: "bot", PasswordHash: "$2a$04$x"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := community.New(ctx, community.Config{Forge: fc, ServiceLocalpart: "bot"}, e.hs); err == nil {
		t.Fatal("community took over an account with a password")
	}
}

func TestRenamedRepositoryKeepsItsRoom(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a := e.register("alice")
	e.link(a, alice)
	roomID := a.join("#acme_widget:" + server).str("room_id")
	e.forge.AddRepo(fakeforge.Repo{ID: widgetID, Owner: "acme", Name: "gizmo", Description: "Renamed",
		Access: map[int64]string{alice: fakeforge.PermAdmin}})
	r := a.join("#acme_gizmo:" + server)
	if r.Status != 200 || r.str("room_id") != roomID {
		t.Fatalf("join by the new name: %d %s, want room %s", r.Status, r.Raw, roomID)
	}
	if n := e.communityRooms("repo"); n != 1 {
		t.Fatalf("%d repository rooms after a rename", n)
	}
	if got := a.state(roomID, "m.room.name", "")["name"]; got != "acme/gizmo" {
		t.Errorf("name %v", got)
	}
	if got := a.state(roomID, community.StateTypeForge, "")["path"]; got != "acme/gizmo" {
		t.Errorf("association path %v", got)
	}
	if got := a.state(roomID, "m.room.canonical_alias", "")["alias"]; got != "#acme_gizmo:"+server {
		t.Errorf("canonical alias %v", got)
	}
	if got, err := e.svc.RepoRoom(context.Background(), "acme/gizmo", ""); got != roomID || err != nil {
		t.Errorf("RepoRoom of the new name: %q %v", got, err)
	}
	// The old alias still leads to the room.
	old := a.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_widget:"+server), nil)
	if old.str("room_id") != roomID {
		t.Errorf("old alias: %s", old.Raw)
	}
	// Levels still follow the forge through the new path.
	if got := levels(a, roomID)[a.UserID]; got != float64(100) {
		t.Errorf("alice's level %v", got)
	}
}

func TestWebhookManagement(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, b := e.register("alice"), e.register("bob")
	e.link(a, alice)
	e.link(b, bob)
	roomID := a.join("#acme_widget:" + server).str("room_id")
	b.join(roomID)
	base := "/_plaza/rooms/" + url.PathEscape(roomID) + "/webhooks"
	var first response
	for i := 0; i < 10; i++ {
		r := a.must("POST", base, map[string]any{})
		if i == 0 {
			first = r
		}
	}
	a.fails(403, "M_FORBIDDEN", "POST", base, map[string]any{})
	b.fails(403, "M_FORBIDDEN", "DELETE", base+"/"+first.str("hook_id"), nil)
	a.must("DELETE", base+"/"+first.str("hook_id"), nil)
	a.fails(404, "M_NOT_FOUND", "DELETE", base+"/"+first.str("hook_id"), nil)
	// A deleted hook takes no deliveries.
	body := []byte(fmt.Sprintf(`{"action":"opened","repository":{"id":%d},"issue":{"number":1,"title":"x"}}`, widgetID))
	if r := deliverGitHub(t, first, "issues", "x1", body, sign(first.str("secret"), body)); r.Status != 404 {
		t.Errorf("delivery to a deleted hook: %d %s", r.Status, r.Raw)
	}
	a.must("POST", base, map[string]any{})
}

func TestRepositoryMadePrivate(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	a, b, carol := e.register("alice"), e.register("bob"), e.register("carol")
	e.link(a, alice)
	e.link(b, bob)
	alias := "#acme_widget:" + server
	roomID := a.join(alias).str("room_id")
	b.join(roomID)
	carol.join(roomID)
	hook := a.must("POST", "/_plaza/rooms/"+url.PathEscape(roomID)+"/webhooks", map[string]any{})
	// widget goes private; only alice keeps access.
	e.forge.AddRepo(fakeforge.Repo{ID: widgetID, Owner: "acme", Name: "widget", Private: true,
		Access: map[int64]string{alice: fakeforge.PermAdmin}})
	body := []byte(fmt.Sprintf(`{"action":"privatized","repository":{"id":%d,"full_name":"acme/widget","private":true},"sender":{"login":"alice"}}`, widgetID))
	if r := deliverGitHub(t, hook, "repository", "p1", body, sign(hook.str("secret"), body)); r.Status != 200 {
		t.Fatalf("repository delivery: %d %s", r.Status, r.Raw)
	}
	if got := a.state(roomID, "m.room.join_rules", "")["join_rule"]; got != "invite" {
		t.Errorf("join rule %v", got)
	}
	if got := a.state(roomID, "m.room.history_visibility", "")["history_visibility"]; got != "shared" {
		t.Errorf("history visibility %v", got)
	}
	e.anon().fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil)
	var published bool
	if err := e.hs.DB.Pool.QueryRow(context.Background(), `SELECT published FROM rooms WHERE room_id = $1`, roomID).Scan(&published); err != nil || published {
		t.Errorf("still in the directory (%v)", err)
	}
	membership := func(c *client) string {
		r := a.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(c.UserID), nil)
		return r.str("membership")
	}
	space, _ := e.svc.RepoRoom(context.Background(), "acme", "")
	a.join(space)
	if got := a.state(space, "m.space.child", roomID); len(got) != 0 {
		t.Errorf("the space still lists the room: %v", got)
	}
	waitFor(t, "bob and carol to be removed", func() bool { return membership(b) == "leave" && membership(carol) == "leave" })
	if membership(a) != "join" {
		t.Errorf("alice, who has access, was removed")
	}
	b.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
}

func TestManyRoomsOfANewOrgAtOnce(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	e.forge.AddOrg(fakeforge.Org{ID: 50, Login: "bigco"})
	const n = 30
	clients := make([]*client, n)
	for i := range clients {
		e.forge.AddRepo(fakeforge.Repo{ID: int64(5000 + i), Owner: "bigco", Name: fmt.Sprintf("r%d", i)})
		clients[i] = e.register(fmt.Sprintf("u%d", i))
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := c.join(fmt.Sprintf("#bigco_r%d:%s", i, server)); r.Status != 200 {
				t.Errorf("join %d: %d %s", i, r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	if got := e.communityRooms("repo"); got != n {
		t.Errorf("%d repository rooms, want %d", got, n)
	}
	if got := e.communityRooms("owner"); got != 1 {
		t.Errorf("%d spaces, want 1", got)
	}
	space, _ := e.svc.RepoRoom(context.Background(), "bigco", "")
	var children int
	if err := e.hs.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM community_rooms WHERE parent_id = $1`, space).Scan(&children); err != nil || children != n {
		t.Errorf("%d children of the space (%v)", children, err)
	}
}

// TestCreationAcrossServices runs two services on one database, as two
// processes would: their creations of one path meet at the claim.
func TestCreationAcrossServices(t *testing.T) {
	e := newEnv(t, forge.GitHub)
	ctx := context.Background()
	fc, _ := forge.New(forge.GitHub, forge.Config{APIURL: e.fsrv.URL + "/github/api/"})
	other, err := community.New(ctx, community.Config{Forge: fc, IDP: "github", Identities: e.idents}, e.hs)
	if err != nil {
		t.Fatal(err)
	}
	c := e.register("carol")
	rooms := make([]string, 20)
	var wg sync.WaitGroup
	for i := range rooms {
		svc := e.svc
		if i%2 == 1 {
			svc = other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := svc.RepoRoom(ctx, "acme/widget", c.UserID)
			if err != nil {
				t.Errorf("RepoRoom %d: %v", i, err)
			}
			rooms[i] = id
		}()
	}
	wg.Wait()
	for i, r := range rooms {
		if r != rooms[0] || r == "" {
			t.Fatalf("creation %d got %q, creation 0 %q", i, r, rooms[0])
		}
	}
	if n := e.communityRooms("repo"); n != 1 {
		t.Fatalf("%d repository rooms", n)
	}

	// A claim left by a process that died is taken over once stale.
	_, err = e.hs.DB.Pool.Exec(ctx, `INSERT INTO community_rooms (room_id, forge, flavour, kind, path, path_key, forge_id, web_url, private, created_ts)
		VALUES ('pending:dead', 'github', 'github', 'repo', 'acme/secret', 'acme/secret', 0, '', false, 0)`)
	if err != nil {
		t.Fatal(err)
	}
	a := e.register("alice")
	e.link(a, alice)
	if _, err := e.svc.RepoRoom(ctx, "acme/secret", ""); !errors.Is(err, community.ErrNoSuchRepo) {
		t.Fatalf("a pending claim is visible: %v", err)
	}
	if id, err := e.svc.RepoRoom(ctx, "acme/secret", a.UserID); err != nil || id == "" {
		t.Fatalf("creation over a stale claim: %q %v", id, err)
	}
}

// signIn gives a Matrix user the forge identity of a forge user through
// the fake forge's OAuth flow, as package oauth runs it: the minimal
// sign-in scopes, plus the private scope (GitHub repo, GitLab read_api)
// when optIn. The granted scopes decide what the token may see.
func (e *env) signIn(c *client, forgeUser int64, optIn bool) {
	e.t.Helper()
	flavour := e.idents.idp
	scopes, private := []string{"read:user", "user:email", "read:org"}, "repo"
	ep := oauth2.Endpoint{AuthURL: e.fsrv.URL + "/github/login/oauth/authorize", TokenURL: e.fsrv.URL + "/github/login/oauth/access_token"}
	if flavour == forge.GitLab {
		scopes, private = []string{"read_user", "openid"}, "read_api"
		ep = oauth2.Endpoint{AuthURL: e.fsrv.URL + "/gitlab/oauth/authorize", TokenURL: e.fsrv.URL + "/gitlab/oauth/token"}
	}
	if optIn {
		scopes = append(scopes, private)
	}
	e.forge.AddClient("plaza", "plaza-secret")
	e.forge.SignIn(forgeUser)
	cfg := oauth2.Config{ClientID: "plaza", ClientSecret: "plaza-secret", RedirectURL: "http://plaza.test/cb", Endpoint: ep, Scopes: scopes}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(cfg.AuthCodeURL("st"))
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil {
		e.t.Fatal(err)
	}
	granted := strings.FieldsFunc(fmt.Sprint(tok.Extra("scope")), func(r rune) bool { return r == ',' || r == ' ' })
	e.idents.mu.Lock()
	defer e.idents.mu.Unlock()
	e.idents.byID[c.UserID] = &oauth.ForgeIdentity{IDP: flavour, ForgeUserID: forgeUser, Token: tok, Scopes: granted,
		PrivateRepos: slices.Contains(granted, private)}
}

// TestPrivateReposNeedOptIn: a private repository is absent to people who
// have not let Plaza read their private repositories — even its
// collaborators, whose minimal-scope tokens the forge answers 404 — with
// the same answers as a repository that does not exist; public ones are
// unaffected; after opting in (a new token with the private scope) they
// get the room, restricted, and join it.
func TestPrivateReposNeedOptIn(t *testing.T) {
	for _, flavour := range []string{forge.GitHub, forge.GitLab} {
		t.Run(flavour, func(t *testing.T) {
			e := newEnv(t, flavour)
			ctx := context.Background()
			e.forge.AddRepo(fakeforge.Repo{ID: secretID, Owner: "acme", Name: "secret", Private: true,
				Access: map[int64]string{alice: fakeforge.PermWrite, bob: fakeforge.PermRead}})
			a, b, carol := e.register("alice"), e.register("bob"), e.register("carol")
			e.signIn(a, alice, false)
			e.signIn(b, bob, false)
			alias := "#acme_secret:" + server
			join := "/_matrix/client/v3/join/" + url.PathEscape(alias)
			lookup := "/_matrix/client/v3/directory/room/" + url.PathEscape(alias)

			// Not opted in: the same answers as for a repository that does
			// not exist, and nothing created.
			for _, path := range []string{"acme/secret", "acme/nope"} {
				_, err := e.svc.RepoRoom(ctx, path, a.UserID)
				if !errors.Is(err, community.ErrMaybePrivate) || !errors.Is(err, community.ErrNoSuchRepo) {
					t.Fatalf("RepoRoom(%s) for alice, not opted in: %v, want ErrMaybePrivate", path, err)
				}
				// Without a forge identity, opting in is no help: nothing hints at it.
				if _, err := e.svc.RepoRoom(ctx, path, carol.UserID); !errors.Is(err, community.ErrNoSuchRepo) || errors.Is(err, community.ErrMaybePrivate) {
					t.Fatalf("RepoRoom(%s) for carol: %v, want ErrNoSuchRepo only", path, err)
				}
			}
			a.fails(404, "M_NOT_FOUND", "POST", join, map[string]any{})
			a.fails(404, "M_NOT_FOUND", "GET", lookup, nil)
			a.fails(404, "M_NOT_FOUND", "POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_nope:"+server), map[string]any{})
			if n := e.communityRooms("repo"); n != 0 {
				t.Fatalf("%d repository rooms created for someone who has not opted in", n)
			}
			// A token that could see it (GitLab's api scope, say) does not
			// stand for an opt-in the person did not make.
			e.link(a, alice)
			e.idents.byID[a.UserID].PrivateRepos = false
			if _, err := e.svc.RepoRoom(ctx, "acme/secret", a.UserID); !errors.Is(err, community.ErrMaybePrivate) {
				t.Fatalf("RepoRoom for alice with a full token, not opted in: %v", err)
			}
			if n := e.communityRooms("repo"); n != 0 {
				t.Fatalf("%d repository rooms created for someone who has not opted in", n)
			}
			e.signIn(a, alice, false)
			if got := e.svc.PrivateOptInURL("/acme/secret"); got != "/_plaza/login/"+flavour+"?private=1&next=%2Facme%2Fsecret" {
				t.Errorf("opt-in URL %q", got)
			}

			// Public repositories are unaffected. On GitHub the minimal
			// token reads her permissions; on GitLab read_user reaches no
			// project (403 insufficient_scope), so the project is read
			// anonymously and her level is left alone, as for someone
			// without a forge identity.
			r := a.join("#acme_widget:" + server)
			if r.Status != 200 {
				t.Fatalf("alice joins the public room: %d %s", r.Status, r.Raw)
			}
			level, set := levels(a, r.str("room_id"))[a.UserID]
			if flavour == forge.GitHub && level != float64(100) {
				t.Errorf("alice (admin of widget), not opted in, has level %v in its room", level)
			}
			if flavour == forge.GitLab && set {
				t.Errorf("alice's level came from a GitLab token that cannot read projects: %v", level)
			}

			// Alice opts in: the room is created, restricted, and she joins.
			e.signIn(a, alice, true)
			r = a.join(alias)
			if r.Status != 200 {
				t.Fatalf("alice, opted in, joins: %d %s", r.Status, r.Raw)
			}
			roomID := r.str("room_id")
			if got := a.state(roomID, "m.room.join_rules", "")["join_rule"]; got != "invite" {
				t.Errorf("join rule %v", got)
			}
			if got := levels(a, roomID)[a.UserID]; got != float64(50) {
				t.Errorf("alice (push access) has level %v", got)
			}
			// Her opted-in token reads her permissions on either forge.
			widget := a.join("#acme_widget:" + server).str("room_id")
			if got := levels(a, widget)[a.UserID]; got != float64(100) {
				t.Errorf("alice (admin of widget), opted in, has level %v in its room", got)
			}

			// Bob, a collaborator who has not opted in, cannot join the
			// existing room: its alias and page are still absent to him,
			// and a join by room ID is refused.
			b.fails(404, "M_NOT_FOUND", "POST", join, map[string]any{})
			b.fails(404, "M_NOT_FOUND", "GET", lookup, nil)
			b.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
			if r := b.join(roomID); !strings.Contains(r.str("error"), "allow it on your account page") {
				t.Errorf("the refusal does not point bob at the opt-in: %s", r.Raw)
			}
			if _, err := e.svc.RepoRoom(ctx, "acme/secret", b.UserID); !errors.Is(err, community.ErrMaybePrivate) {
				t.Errorf("RepoRoom for bob, not opted in, once the room exists: %v", err)
			}
			// With the forge down, the existing room reads as any other
			// path does (the forge cannot say), for him and for anonymous
			// visitors alike.
			e.forge.SetDown(true)
			for _, path := range []string{"acme/secret", "acme/nope"} {
				if _, err := e.svc.RepoRoom(ctx, path, b.UserID); !errors.Is(err, community.ErrForgeUnavailable) {
					t.Errorf("RepoRoom(%s) for bob with the forge down: %v, want ErrForgeUnavailable", path, err)
				}
			}
			// (Anonymous askers were told both are absent a moment ago,
			// which is remembered for a while; either way, alike.)
			_, errSecret := e.svc.RepoRoom(ctx, "acme/secret", "")
			_, errNope := e.svc.RepoRoom(ctx, "acme/nope", "")
			if errSecret == nil || errNope == nil || errSecret.Error() != errNope.Error() {
				t.Errorf("anonymous RepoRoom with the forge down: %v for the private room, %v for nothing", errSecret, errNope)
			}
			for _, a := range []string{alias, "#acme_nope:" + server} {
				if r := b.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(a), map[string]any{}); r.Status != 502 {
					t.Errorf("join %s with the forge down: %d %s", a, r.Status, r.Raw)
				}
			}
			e.forge.SetDown(false)
			// Once he opts in he may, at once (no cached refusal).
			e.signIn(b, bob, true)
			if r := b.join(alias); r.Status != 200 || r.str("room_id") != roomID {
				t.Fatalf("bob, opted in, joins: %d %s", r.Status, r.Raw)
			}
			if got, err := e.svc.RepoRoom(ctx, "acme/secret", b.UserID); err != nil || got != roomID {
				t.Errorf("RepoRoom for bob, opted in: %q %v", got, err)
			}
		})
	}
}
