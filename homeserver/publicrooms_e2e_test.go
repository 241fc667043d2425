package homeserver_test

import (
	"net/url"
	"testing"

	"plaza/homeserver/spectest"
)

// GET and POST /publicRooms list the rooms created with visibility public,
// in the spec's shape; another server that cannot be reached is a 502, a
// bad server name a 400.
func TestPublicRoomsDirectory(t *testing.T) {
	s := newServer(t)
	alice := s.register("alice")
	public := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"visibility": "public", "name": "Town square", "topic": "all welcome"}).str("room_id")
	alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Back office"})
	spec := spectest.ForTest(t)

	r := s.anon().must("GET", "/_matrix/client/v3/publicRooms", nil)
	if err := spec.Validate("GET", "/_matrix/client/v3/publicRooms", 200, r.Raw); err != nil {
		t.Error(err)
	}
	chunk, _ := r.Body["chunk"].([]any)
	if len(chunk) != 1 || chunk[0].(map[string]any)["room_id"] != public || chunk[0].(map[string]any)["name"] != "Town square" {
		t.Fatalf("directory: %s", r.Raw)
	}
	r = alice.must("POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "nothing like it"}})
	if err := spec.Validate("POST", "/_matrix/client/v3/publicRooms", 200, r.Raw); err != nil {
		t.Error(err)
	}
	if chunk, _ := r.Body["chunk"].([]any); len(chunk) != 0 {
		t.Errorf("search for nothing: %s", r.Raw)
	}
	s.anon().fails(401, "M_MISSING_TOKEN", "POST", "/_matrix/client/v3/publicRooms", map[string]any{})
	s.anon().fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape("not a server!"), nil)
	s.anon().fails(400, "M_INVALID_PARAM", "GET", "/_matrix/client/v3/publicRooms?since=zzz", nil)
	s.anon().fails(502, "M_UNKNOWN", "GET", "/_matrix/client/v3/publicRooms?server=127.0.0.1:1", nil)
}
