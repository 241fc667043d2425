package homeserver_test

import (
	"context"
	"net/url"
	"testing"
)

// publicRoomIDs lists the room IDs /publicRooms shows.
func publicRoomIDs(c *client) map[string]bool {
	c.t.Helper()
	r := c.must("GET", "/_matrix/client/v3/publicRooms", nil)
	out := map[string]bool{}
	chunk, _ := r.Body["chunk"].([]any)
	for _, e := range chunk {
		out[e.(map[string]any)["room_id"].(string)] = true
	}
	return out
}

// TestDirectoryVisibility: a room's moderators (and nobody else) publish and
// unpublish it, /publicRooms follows, and a private repository's room is
// never published.
func TestDirectoryVisibility(t *testing.T) {
	s := newServer(t)
	alice, bob := s.register("alice"), s.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	path := "/_matrix/client/v3/directory/list/room/" + url.PathEscape(roomID)
	anon := s.anon()

	if r := anon.must("GET", path, nil); r.str("visibility") != "private" {
		t.Fatalf("new room visibility = %s", r.Raw)
	}
	anon.fails(404, "M_NOT_FOUND", "GET", "/_matrix/client/v3/directory/list/room/"+url.PathEscape("!nope:plaza.test"), nil)
	anon.fails(401, "M_MISSING_TOKEN", "PUT", path, map[string]any{"visibility": "public"})
	alice.fails(400, "M_INVALID_PARAM", "PUT", path, map[string]any{"visibility": "secret"})
	alice.fails(400, "M_BAD_JSON", "PUT", path, map[string]any{"visibility": 1})
	alice.fails(404, "M_NOT_FOUND", "PUT", "/_matrix/client/v3/directory/list/room/"+url.PathEscape("!nope:plaza.test"), map[string]any{"visibility": "public"})

	// Not a member, then a member without power: refused, nothing changes.
	bob.fails(403, "M_FORBIDDEN", "PUT", path, map[string]any{"visibility": "public"})
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	bob.fails(403, "M_FORBIDDEN", "PUT", path, map[string]any{"visibility": "public"})
	if publicRoomIDs(anon)[roomID] {
		t.Fatal("refused request published the room")
	}

	alice.must("PUT", path, map[string]any{"visibility": "public"})
	if r := anon.must("GET", path, nil); r.str("visibility") != "public" || !publicRoomIDs(anon)[roomID] {
		t.Fatalf("after publishing: %s, directory %v", r.Raw, publicRoomIDs(anon))
	}
	// A moderator may unpublish it; the spec's default is public.
	pl := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels", nil).Body
	pl["users"].(map[string]any)[bob.UserID] = 50
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels", pl)
	bob.must("PUT", path, map[string]any{"visibility": "private"})
	if r := anon.must("GET", path, nil); r.str("visibility") != "private" || publicRoomIDs(anon)[roomID] {
		t.Fatalf("after unpublishing: %s", r.Raw)
	}
	bob.must("PUT", path, map[string]any{})
	if !publicRoomIDs(anon)[roomID] {
		t.Fatal("an absent visibility did not publish")
	}
	bob.must("PUT", path, map[string]any{"visibility": "private"})

	// A private repository's room stays out of the directory.
	if _, err := s.hs.DB.Pool.Exec(context.Background(), `INSERT INTO community_rooms (room_id, forge, flavour, kind, path, path_key, forge_id, web_url, private, created_ts)
		VALUES ($1, 'github', 'github', 'repo', 'o/secret', 'o/secret', 1, '', true, 0)`, roomID); err != nil {
		t.Fatal(err)
	}
	alice.fails(403, "M_FORBIDDEN", "PUT", path, map[string]any{"visibility": "public"})
	alice.must("PUT", path, map[string]any{"visibility": "private"})
	if publicRoomIDs(anon)[roomID] {
		t.Fatal("private repository's room published")
	}
}
