package homeserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"plaza/homeserver"
)

// gateway is a push gateway recording what it is sent; it rejects the push
// keys in reject.
type gateway struct {
	*httptest.Server
	got    chan map[string]any
	reject string
}

func newGateway(t *testing.T, reject string) *gateway {
	g := &gateway{got: make(chan map[string]any, 100), reject: reject}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if r.URL.Path != "/_matrix/push/v1/notify" || json.Unmarshal(raw, &body) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		n, _ := body["notification"].(map[string]any)
		g.got <- n
		rejected := []string{}
		for _, d := range n["devices"].([]any) {
			if k := d.(map[string]any)["pushkey"].(string); k == g.reject {
				rejected = append(rejected, k)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.Close)
	return g
}

// next waits for the next notification the gateway receives.
func (g *gateway) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case n := <-g.got:
		return n
	case <-time.After(30 * time.Second):
		t.Fatal("no notification reached the gateway")
		return nil
	}
}

// TestPushGateway: an event that notifies a user by their push rules
// reaches their pusher's gateway in the Push Gateway API's form; their own
// events do not; event_id_only leaves the event out; a rejected push key
// loses its pusher.
func TestPushGateway(t *testing.T) {
	s := newServer(t, func(c *homeserver.Config) { c.PushAllowPrivate = true })
	alice, bob := s.register("alice"), s.register("bob")
	g := newGateway(t, "rejected-key")
	pusher := httpPusher("org.example.app", "alice-key", "phone")
	pusher["data"] = map[string]any{"url": g.URL + "/_matrix/push/v1/notify", "custom": "kept"}
	alice.must("POST", "/_matrix/client/v3/pushers/set", pusher)

	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	// Alice's own message notifies nobody; Bob's does (a two-person room:
	// .m.rule.room_one_to_one). The gateway hears them in order, so the
	// first it hears is Bob's.
	alice.send(roomID, text("my own"))
	eventID := bob.send(roomID, text("hello alice"))
	n := g.next(t)
	if n["event_id"] != eventID || n["room_id"] != roomID || n["type"] != "m.room.message" || n["sender"] != bob.UserID {
		t.Fatalf("notification = %v", n)
	}
	if c, _ := n["content"].(map[string]any); c["body"] != "hello alice" {
		t.Fatalf("content = %v", n["content"])
	}
	devs, _ := n["devices"].([]any)
	if len(devs) != 1 {
		t.Fatalf("devices = %v", n["devices"])
	}
	d := devs[0].(map[string]any)
	if d["pushkey"] != "alice-key" || d["app_id"] != "org.example.app" || jsonString(d["data"]) != `{"custom":"kept"}` {
		t.Fatalf("device = %v", d)
	}

	// Bob's pusher is event_id_only and its key is rejected by the gateway.
	bobPusher := httpPusher("org.example.app", "rejected-key", "bob's phone")
	bobPusher["data"] = map[string]any{"url": g.URL + "/_matrix/push/v1/notify", "format": "event_id_only"}
	bob.must("POST", "/_matrix/client/v3/pushers/set", bobPusher)
	eventID = alice.send(roomID, text("hello bob"))
	n = g.next(t)
	if n["event_id"] != eventID || n["content"] != nil || n["sender"] != nil {
		t.Fatalf("event_id_only notification = %v", n)
	}
	for i := 0; len(pushersOf(bob)) != 0; i++ {
		if i == 300 {
			t.Fatalf("rejected pusher kept: %v", pushersOf(bob))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(pushersOf(alice)) != 1 {
		t.Fatal("alice's pusher went with bob's")
	}
}
