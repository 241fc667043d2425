package homeserver_test

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"
)

// Three servers whose users all talk at once: every message makes a fork
// that the next ones close, events arrive before their prev events, and
// get_missing_events runs while transactions are still being placed. No
// honest event may be rejected or soft-failed anywhere, and every server
// must end with every message and the same state.
func TestFederationConcurrentForks(t *testing.T) {
	ca := newFedCA(t)
	a, b, c := newFedServer(t, ca), newFedServer(t, ca), newFedServer(t, ca)
	alice, bob, carol := a.register("alice"), b.register("bob"), c.register("carol")
	roomID := carol.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "busy"}).str("room_id")
	alias := url.PathEscape("#busy:" + c.name)
	alice.must("POST", "/_matrix/client/v3/join/"+alias, map[string]any{})
	bob.must("POST", "/_matrix/client/v3/join/"+alias, map[string]any{})
	ctx := context.Background()
	servers := []*fedServer{a, b, c}
	for _, s := range servers {
		for _, u := range []string{alice.UserID, bob.UserID, carol.UserID} {
			deadline := time.Now().Add(60 * time.Second)
			for {
				m, _ := s.hs.Rooms.Membership(ctx, roomID, u)
				if m == "join" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never saw %s join (%q)", s.name, u, m)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	const rounds = 8
	var want []string
	var wg sync.WaitGroup
	errs := make(chan string, 3*rounds)
	for _, cl := range []*client{alice, bob, carol} {
		for i := range rounds {
			want = append(want, fmt.Sprintf("%s %d", cl.UserID, i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/fork-%d", url.PathEscape(roomID), i)
				if r := cl.do("PUT", path, text(fmt.Sprintf("%s %d", cl.UserID, i))); r.Status != 200 {
					errs <- fmt.Sprintf("%s's message %d: %d %s", cl.UserID, i, r.Status, r.Raw)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	// One more message from each closes the forks everywhere.
	for _, cl := range []*client{alice, bob, carol} {
		body := cl.UserID + " last"
		want = append(want, body)
		cl.send(roomID, text(body))
	}
	hasAll := func(got []string) bool {
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}
	for _, cl := range []*client{alice, bob, carol} {
		waitFor(t, cl, roomID, hasAll)
	}
	for _, s := range servers {
		var rejected, softFailed int
		if err := s.hs.DB.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE rejected), count(*) FILTER (WHERE soft_failed)
			FROM events JOIN rooms USING (room_nid) WHERE rooms.room_id = $1`, roomID).Scan(&rejected, &softFailed); err != nil {
			t.Fatal(err)
		}
		if rejected != 0 || softFailed != 0 {
			t.Errorf("%s rejected %d and soft-failed %d honest events", s.name, rejected, softFailed)
		}
	}
	want0 := currentState(t, a, roomID)
	for _, s := range servers[1:] {
		if got := currentState(t, s, roomID); !maps.Equal(got, want0) {
			t.Errorf("%s's state differs from %s's:\n%v\n%v", s.name, a.name, got, want0)
		}
	}
}
