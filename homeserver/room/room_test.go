package room

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/homeserver/stream"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

func newService(t testing.TB) (*Service, *storage.DB) {
	t.Helper()
	db := storage.New(storagetest.NewDB(t, storage.Migrations()))
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return New(db, stream.NewTracker(0, 0), "example.org", key), db
}

func strp(s string) *string { return &s }

// publicRoom creates a public room with n joined members besides its creator.
func publicRoom(t testing.TB, s *Service, n int) (string, []string) {
	t.Helper()
	creator := "@creator:example.org"
	initial := []Request{
		{Sender: creator, Type: event.TypeMember, StateKey: strp(creator), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: creator, Type: event.TypeJoinRules, StateKey: strp(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
	}
	roomID, err := s.CreateRoom(context.Background(), event.MustVersion("12"), creator, json.RawMessage(`{"room_version":"12"}`), initial)
	if err != nil {
		t.Fatal(err)
	}
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("@u%d:example.org", i)
		if _, err := s.Send(context.Background(), roomID, Request{Sender: users[i], Type: event.TypeMember, StateKey: strp(users[i]), Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	return roomID, users
}

// Concurrent senders into one room: every request gets its own event, the
// DAG stays a single chain (each event's only parent is the one before it),
// depths increase by one and stream positions are unique and dense.
func TestConcurrentSendsFormOneChain(t *testing.T) {
	s, db := newService(t)
	roomID, users := publicRoom(t, s, 8)
	var mu sync.Mutex
	results := map[string]Result{}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				res, err := s.Send(context.Background(), roomID, Request{Sender: u, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"body":"%s %d"}`, u, i))})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				results[res.Event.ID()] = res
				mu.Unlock()
			}
		}(u)
	}
	wg.Wait()
	if len(results) != 200 {
		t.Fatalf("%d distinct events for 200 sends", len(results))
	}
	nid, err := db.RoomNID(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := db.RoomEvents(context.Background(), nid, 0, 0, false, 1000, storage.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		prev, cur := evs[i-1], evs[i]
		if p := cur.Event.PrevEventIDs(); len(p) != 1 || p[0] != prev.Event.ID() {
			t.Fatalf("event %d's parents %v, want [%s]", i, p, prev.Event.ID())
		}
		if cur.Event.Depth() != prev.Event.Depth()+1 || cur.StreamPos <= prev.StreamPos {
			t.Fatalf("event %d: depth %d after %d, position %d after %d", i, cur.Event.Depth(), prev.Event.Depth(), cur.StreamPos, prev.StreamPos)
		}
	}
	// A fresh service loading the room from the database sees the same state.
	s2 := New(db, stream.NewTracker(evs[len(evs)-1].StreamPos, 0), "example.org", s.key)
	for _, u := range users {
		if m, err := s2.Membership(context.Background(), roomID, u); err != nil || m != "join" {
			t.Fatalf("reloaded membership of %s = %q, %v", u, m, err)
		}
	}
	if id, _ := s2.LatestEventID(context.Background(), roomID); id != evs[len(evs)-1].Event.ID() {
		t.Fatalf("reloaded extremity %s, want %s", id, evs[len(evs)-1].Event.ID())
	}
}

// A refused event in a batch does not take the others down with it.
func TestForbiddenEventInBatchFailsAlone(t *testing.T) {
	s, _ := newService(t)
	roomID, users := publicRoom(t, s, 2)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sender := users[i%2]
			if i == 5 {
				sender = "@outsider:example.org"
			}
			_, errs[i] = s.Send(context.Background(), roomID, Request{Sender: sender, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`)})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 5) != (err != nil) {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}

func benchmarkSend(b *testing.B, senders int) {
	s, _ := newService(b)
	roomID, users := publicRoom(b, s, senders)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/senders + 1
	for _, u := range users {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := s.Send(context.Background(), roomID, Request{Sender: u, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"benchmark message"}`)}); err != nil {
					b.Error(err)
					return
				}
			}
		}(u)
	}
	wg.Wait()
	b.ReportMetric(float64(per*senders)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSendOneRoom measures the writer alone (no HTTP) with 1, 8 and 32
// concurrent senders into one room.
func BenchmarkSendOneRoom(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("senders=%d", n), func(b *testing.B) { benchmarkSend(b, n) })
	}
}

func TestJoinedCountFollowsMembership(t *testing.T) {
	s, db := newService(t)
	roomID, users := publicRoom(t, s, 5)
	if n, _ := s.JoinedCount(context.Background(), roomID); n != 6 {
		t.Fatalf("joined = %d, want 6", n)
	}
	for _, u := range users[:2] {
		if _, err := s.Send(context.Background(), roomID, Request{Sender: u, Type: event.TypeMember, StateKey: strp(u), Content: json.RawMessage(`{"membership":"leave"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// A display name change is still a join: the count does not move.
	if _, err := s.Send(context.Background(), roomID, Request{Sender: users[2], Type: event.TypeMember, StateKey: strp(users[2]), Content: json.RawMessage(`{"membership":"join","displayname":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.JoinedCount(context.Background(), roomID); n != 4 {
		t.Fatalf("joined after two leaves = %d, want 4", n)
	}
	reloaded := New(db, stream.NewTracker(1000, 0), "example.org", s.key)
	if n, _ := reloaded.JoinedCount(context.Background(), roomID); n != 4 {
		t.Fatalf("joined after reload = %d, want 4", n)
	}
}
