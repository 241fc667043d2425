package main

import (
	"net/http"
	"net/url"
	"testing"
)

// TestRoomsOnDemandDemo runs plaza serve --demo, as make run does, and
// joins a demo forge repository's room by its alias: rooms on demand work
// offline against the demo forge.
func TestRoomsOnDemandDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	srv := startServe(t, bin, []string{
		"PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=127.0.0.1:0",
		"PLAZA_SERVER_NAME=plaza.test", "PLAZA_REGISTRATION=open", "PLAZA_RATE_LIMIT=false",
	}, "--demo")
	defer srv.stop(t)
	hs := homeserverClient{t: t, base: srv.url}
	token := hs.login(demoUsers()[0].localpart, demoPassword)

	var joined struct {
		RoomID string `json:"room_id"`
	}
	hs.do("POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_widget:plaza.test"), token, map[string]any{}, http.StatusOK, &joined)
	var name struct{ Name string }
	hs.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(joined.RoomID)+"/state/m.room.name/", token, nil, http.StatusOK, &name)
	if name.Name != "acme/widget" {
		t.Errorf("room name %q", name.Name)
	}
	var forge struct {
		Forge, Path string
	}
	hs.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(joined.RoomID)+"/state/dev.plaza.forge/", token, nil, http.StatusOK, &forge)
	if forge.Forge != "demo" || forge.Path != "acme/widget" {
		t.Errorf("association %+v", forge)
	}
	// The same room again; an unknown repository is not found; the
	// private one is hidden from alice, who has no forge identity.
	var again struct {
		RoomID string `json:"room_id"`
	}
	hs.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_widget:plaza.test"), "", nil, http.StatusOK, &again)
	if again.RoomID != joined.RoomID {
		t.Errorf("alias resolves to %s, joined %s", again.RoomID, joined.RoomID)
	}
	hs.do("POST", "/_matrix/client/v3/join/"+url.PathEscape("#acme_nope:plaza.test"), token, map[string]any{}, http.StatusNotFound, nil)
	hs.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#acme_gadget:plaza.test"), "", nil, http.StatusNotFound, nil)
	// The room's web page is there for anonymous visitors now.
	resp, err := http.Get(srv.url + "/acme/widget")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /acme/widget: %d", resp.StatusCode)
	}
}
