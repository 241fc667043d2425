package main

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
)

// TestRoomsOnDemandOverFederation runs two servers: hs1 with rooms on
// demand over the demo forge (--demo), hs2 plain. A user of hs2 joins
// #acme_widget:hs1, a room that does not exist yet: hs2 asks hs1
// (/query/directory), hs1 creates the room, and the user joins it over
// federation. The private repository's alias stays unknown to hs2.
func TestRoomsOnDemandOverFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two servers with PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	ca := writeRSACA(t, t.TempDir())
	ports := freePorts(t, 2)
	servers := make([]*fedServer, 2)
	for i := range servers {
		name := "localhost:" + strconv.Itoa(ports[i])
		servers[i] = &fedServer{name: name, bin: bin, env: []string{
			"PLAZA_SERVER_NAME=" + name, "PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=127.0.0.1:0",
			"PLAZA_FEDERATION_LISTEN=127.0.0.1:" + strconv.Itoa(ports[i]),
			"PLAZA_TLS_CA_CERT=" + ca.cert, "PLAZA_TLS_CA_KEY=" + ca.key, "PLAZA_FEDERATION_CA_FILE=" + ca.cert,
			"PLAZA_FEDERATION_ALLOW_PRIVATE=true", "PLAZA_REGISTRATION=open", "PLAZA_RATE_LIMIT=false",
		}}
	}
	hs1, hs2 := servers[0], servers[1]
	hs1.srv = startServe(t, bin, hs1.env, "--demo")
	defer hs1.stop(t)
	hs2.srv = startServe(t, bin, hs2.env)
	defer hs2.stop(t)

	bob := hs2.register(t, "remotebob")
	alias := "#acme_widget:" + hs1.name
	var resolved struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	bob.must(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil, &resolved)
	if resolved.RoomID == "" || !slices.Contains(resolved.Servers, hs1.name) {
		t.Fatalf("remote lookup of %s: %+v", alias, resolved)
	}
	var joined struct {
		RoomID string `json:"room_id"`
	}
	bob.must(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{}, &joined)
	if joined.RoomID != resolved.RoomID {
		t.Fatalf("joined %s, the alias names %s", joined.RoomID, resolved.RoomID)
	}
	var name struct{ Name string }
	bob.must(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(joined.RoomID)+"/state/m.room.name/", nil, &name)
	if name.Name != "acme/widget" {
		t.Errorf("room name seen from hs2: %q", name.Name)
	}
	if status, body := bob.request(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_gadget:"+hs1.name), nil); status != http.StatusNotFound {
		t.Errorf("remote lookup of the private repository: %d %s", status, body)
	}
	if status, body := bob.request(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_nothing:"+hs1.name), nil); status != http.StatusNotFound {
		t.Errorf("remote lookup of an unknown repository: %d %s", status, body)
	}
}
