package snapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/event"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/peek/snapshot"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

const alice = "@alice:plaza.test"

func newHomeserver(t *testing.T) *homeserver.Server {
	t.Helper()
	hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(),
		BcryptCost: bcrypt.MinCost}, storage.New(storagetest.NewDB(t, storage.Migrations())))
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func sk(s string) *string { return &s }

// newRoom creates a public room whose history is world_readable.
func newRoom(t *testing.T, hs *homeserver.Server, name string) string {
	t.Helper()
	v, _ := event.Version(event.DefaultRoomVersion)
	roomID, err := hs.Rooms.CreateRoom(context.Background(), v, alice, json.RawMessage(`{}`), []room.Request{
		{Sender: alice, Type: event.TypeMember, StateKey: sk(alice), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: alice, Type: event.TypePowerLevels, StateKey: sk(""), Content: json.RawMessage(`{}`)},
		{Sender: alice, Type: event.TypeJoinRules, StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
		{Sender: alice, Type: event.TypeHistoryVisibility, StateKey: sk(""), Content: json.RawMessage(`{"history_visibility":"world_readable"}`)},
		{Sender: alice, Type: "m.room.name", StateKey: sk(""), Content: json.RawMessage(fmt.Sprintf(`{"name":%q}`, name))},
	})
	if err != nil {
		t.Fatal(err)
	}
	return roomID
}

func send(t *testing.T, hs *homeserver.Server, roomID, sender, body string) room.Result {
	t.Helper()
	res, err := hs.Rooms.Send(context.Background(), roomID, room.Request{Sender: sender, Type: "m.room.message",
		Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))})
	if err != nil {
		t.Error(err)
	}
	return res
}

func TestWindowAndSince(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Window")
	c := snapshot.New(snapshot.Config{Events: 5}, hs.DB, hs.Rooms, hs.Tracker)
	ctx := context.Background()
	cold, err := c.Get(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if cold.Floor != 0 || cold.Summary.Name != "Window" || cold.Summary.JoinedMembers != 1 || !cold.Summary.WorldReadable() {
		t.Fatalf("cold snapshot: %+v", cold)
	}
	var results []room.Result
	for i := range 10 {
		results = append(results, send(t, hs, roomID, alice, fmt.Sprint("m", i)))
	}
	select {
	case <-cold.Changed():
	default:
		t.Fatal("the old snapshot was not told of the change")
	}
	warm, _ := c.Get(ctx, roomID)
	if len(warm.Events) != 5 || warm.Events[4].Event.ID() != results[9].Event.ID() {
		t.Fatalf("window: %d events", len(warm.Events))
	}
	if _, ok := warm.Since(results[2].StreamPos); ok {
		t.Fatal("Since claims events trimmed from the window")
	}
	if evs, ok := warm.Since(results[8].StreamPos); !ok || len(evs) != 1 || evs[0].Event.ID() != results[9].Event.ID() {
		t.Fatalf("Since(last-1) = %d, %v", len(evs), ok)
	}
	// Joins count, without a database query.
	bob := "@bob:plaza.test"
	if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: bob, Type: event.TypeMember, StateKey: &bob,
		Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Get(ctx, roomID); s.Summary.JoinedMembers != 2 {
		t.Fatalf("joined members = %d", s.Summary.JoinedMembers)
	}
	if _, err := c.Get(ctx, "!nosuchroom"); err != snapshot.ErrNotFound {
		t.Fatalf("missing room: %v", err)
	}
}

func TestLRUBoundsMemory(t *testing.T) {
	hs := newHomeserver(t)
	c := snapshot.New(snapshot.Config{MaxBytes: 1}, hs.DB, hs.Rooms, hs.Tracker)
	var rooms []string
	for i := range 3 {
		rooms = append(rooms, newRoom(t, hs, fmt.Sprint("room ", i)))
	}
	for _, r := range rooms {
		if _, err := c.Get(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.Len(); n != 1 {
		t.Fatalf("cache over its bound keeps %d rooms", n)
	}
	// The evicted rooms load again.
	if s, err := c.Get(context.Background(), rooms[0]); err != nil || s.Summary.Name != "room 0" {
		t.Fatalf("reload: %v %+v", err, s)
	}
}

// TestLoadsRaceTheStream: loads of a room while it is written to end up with
// exactly what storage has, and concurrent loads of a cold room share one.
func TestLoadsRaceTheStream(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Busy")
	ctx := context.Background()
	for round := range 5 {
		c := snapshot.New(snapshot.Config{Events: 1000}, hs.DB, hs.Rooms, hs.Tracker)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 10 {
					send(t, hs, roomID, alice, fmt.Sprintf("r%d w%d m%d", round, w, i))
				}
			})
		}
		snaps := make([]*snapshot.Snapshot, 8)
		for i := range snaps {
			wg.Go(func() {
				s, err := c.Get(ctx, roomID)
				if err != nil {
					t.Error(err)
				}
				snaps[i] = s
			})
		}
		wg.Wait()
		s, _ := c.Get(ctx, roomID)
		nid, _ := hs.DB.RoomNID(ctx, roomID)
		all, err := hs.DB.RoomEvents(ctx, nid, hs.Rooms.UpTo(), 0, true, 1000, storage.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		vis, err := hs.Rooms.VisibilityFor(ctx, roomID, "")
		if err != nil {
			t.Fatal(err)
		}
		var stored []*storage.StoredEvent
		for _, e := range all {
			if vis.CanSee(e.StreamPos) {
				stored = append(stored, e)
			}
		}
		if len(stored) != len(s.Events) {
			t.Fatalf("round %d: snapshot has %d events, storage %d", round, len(s.Events), len(stored))
		}
		for i, e := range s.Events {
			if want := stored[len(stored)-1-i].Event.ID(); e.Event.ID() != want {
				t.Fatalf("round %d: event %d is %s, storage has %s", round, i, e.Event.ID(), want)
			}
		}
	}
}
