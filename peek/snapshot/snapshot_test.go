package snapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestRenderHook: the web page's rendering is made once per event state (as
// loaded, as it arrives, when redacted or edited), kept with the event and
// counted in the cache's bytes.
func TestRenderHook(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Render")
	ctx := context.Background()
	first := send(t, hs, roomID, alice, "before load")
	calls := map[string]int{}
	var mu sync.Mutex
	render := func(e *snapshot.Event) []byte {
		mu.Lock()
		defer mu.Unlock()
		calls[e.Event.ID()]++
		var c struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(e.Event.Content(), &c)
		if e.Edit != nil {
			_ = json.Unmarshal(e.Edit.Content(), &struct {
				New *struct {
					Body *string `json:"body"`
				} `json:"m.new_content"`
			}{New: &struct {
				Body *string `json:"body"`
			}{Body: &c.Body}})
		}
		if e.Redacted {
			c.Body = "" // Event is the event as sent: the hook must hide it
		}
		return fmt.Appendf(nil, "<p data-redacted=%v>%s</p>", e.Redacted, c.Body)
	}
	plain := snapshot.New(snapshot.Config{}, hs.DB, hs.Rooms, hs.Tracker)
	c := snapshot.New(snapshot.Config{Render: render}, hs.DB, hs.Rooms, hs.Tracker)
	s, err := c.Get(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Get(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	find := func(s *snapshot.Snapshot, id string) *snapshot.Event {
		for _, e := range s.Events {
			if e.Event.ID() == id {
				return e
			}
		}
		t.Fatalf("event %s not in the snapshot", id)
		return nil
	}
	if got := string(find(s, first.Event.ID()).HTML); got != "<p data-redacted=false>before load</p>" {
		t.Fatalf("loaded event HTML = %q", got)
	}
	second := send(t, hs, roomID, alice, "after load")
	s, _ = c.Get(ctx, roomID)
	if got := string(find(s, second.Event.ID()).HTML); got != "<p data-redacted=false>after load</p>" {
		t.Fatalf("streamed event HTML = %q", got)
	}
	// Reading it again renders nothing.
	s, _ = c.Get(ctx, roomID)
	_ = find(s, second.Event.ID()).HTML
	if calls[second.Event.ID()] != 1 {
		t.Fatalf("event rendered %d times", calls[second.Event.ID()])
	}
	if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: "m.room.message",
		Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"* edited","m.new_content":{"msgtype":"m.text","body":"edited"},"m.relates_to":{"rel_type":"m.replace","event_id":%q}}`, second.Event.ID()))}); err != nil {
		t.Fatal(err)
	}
	s, _ = c.Get(ctx, roomID)
	if got := string(find(s, second.Event.ID()).HTML); got != "<p data-redacted=false>edited</p>" {
		t.Fatalf("edited event HTML = %q", got)
	}
	if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: event.TypeRedaction,
		Redacts: first.Event.ID(), Content: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	s, _ = c.Get(ctx, roomID)
	if got := string(find(s, first.Event.ID()).HTML); got != "<p data-redacted=true></p>" {
		t.Fatalf("redacted event HTML = %q", got)
	}
	// Both caches count the same memberships once each has read them
	// (a cold load reads them after serving).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, readC := c.Membership(roomID, alice)
		_, readPlain := plain.Membership(roomID, alice)
		if readC && readPlain {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("memberships never read")
		}
	}
	_, withHTML := c.Len()
	ps, _ := plain.Get(ctx, roomID)
	html := 0
	for _, e := range s.Events {
		html += len(e.HTML)
	}
	if _, without := plain.Len(); withHTML-without != int64(html) || len(ps.Events) != len(s.Events) {
		t.Fatalf("cache bytes with HTML %d, without %d, HTML %d", withHTML, without, html)
	}
}

// TestColdLoadReadsOnlyWhatItShows: a cold load (of a room the room service
// has not loaded either) counts members exactly from their memberships
// alone, and a sender who joined before the load, outside the window, gets
// their member event in the snapshot once it is read.
func TestColdLoadReadsOnlyWhatItShows(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Cold")
	ctx := context.Background()
	bob, carol := "@bob:plaza.test", "@carol:plaza.test"
	for _, u := range []string{bob, carol} {
		if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: u, Type: event.TypeMember, StateKey: &u,
			Content: json.RawMessage(`{"membership":"join","displayname":"` + u[1:4] + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: carol, Type: event.TypeMember, StateKey: &carol,
		Content: json.RawMessage(`{"membership":"leave"}`)}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		send(t, hs, roomID, alice, fmt.Sprint("alice ", i))
	}
	// A fresh room service over the same database: nothing loaded.
	hs2, err := homeserver.New(ctx, homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(), BcryptCost: bcrypt.MinCost}, hs.DB)
	if err != nil {
		t.Fatal(err)
	}
	c := snapshot.New(snapshot.Config{Events: 2}, hs2.DB, hs2.Rooms, hs2.Tracker)
	s, err := c.Get(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Summary.JoinedMembers != 2 || s.Summary.Name != "Cold" || len(s.Members) != 1 || s.Members[alice] == nil {
		t.Fatalf("cold snapshot: %+v, members %v", s.Summary, len(s.Members))
	}
	// Bob, who joined before the load, talks: his member event follows.
	if _, err := hs2.Rooms.Send(ctx, roomID, room.Request{Sender: bob, Type: "m.room.message",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		s, _ = c.Get(ctx, roomID)
		if s.Members[bob] != nil {
			break
		}
		select {
		case <-s.Changed():
		case <-deadline:
			t.Fatal("bob's member event never reached the snapshot")
		}
	}
	if !strings.Contains(string(s.Members[bob]), `"displayname":"bob"`) {
		t.Fatalf("bob's member event: %s", s.Members[bob])
	}
	// Counts stay exact through joins and leaves from the stream.
	if _, err := hs2.Rooms.Send(ctx, roomID, room.Request{Sender: carol, Type: event.TypeMember, StateKey: &carol,
		Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := hs2.Rooms.Send(ctx, roomID, room.Request{Sender: bob, Type: event.TypeMember, StateKey: &bob,
		Content: json.RawMessage(`{"membership":"leave"}`)}); err != nil {
		t.Fatal(err)
	}
	nid, _ := hs2.DB.RoomNID(ctx, roomID)
	joined, _, err := hs2.DB.MemberCounts(ctx, nid)
	if err != nil {
		t.Fatal(err)
	}
	// Exact once the memberships are read (a cold load counts first and
	// reads every membership after serving).
	deadline = time.After(10 * time.Second)
	for {
		s, _ := c.Get(ctx, roomID)
		_, read := c.Membership(roomID, alice)
		if s.Summary.JoinedMembers == joined && joined == 2 && read {
			break
		}
		// Reading the memberships signals no change when the count was
		// already right, hence the poll.
		select {
		case <-s.Changed():
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("joined: snapshot %d, storage %d, memberships read: %v", s.Summary.JoinedMembers, joined, read)
		}
	}
	// Memberships are answered from memory once read.
	for user, want := range map[string]string{bob: "leave", carol: "join", alice: "join", "@nobody:plaza.test": ""} {
		if m, ok := c.Membership(roomID, user); !ok || m != want {
			t.Errorf("Membership(%s) = %q, %v; want %q", user, m, ok, want)
		}
	}
	if _, ok := c.Membership("!notcached:plaza.test", alice); ok {
		t.Error("Membership answered for a room the cache does not hold")
	}
}

// TestColdLoadFollowsHistoryVisibility: a cold load judges each event by the
// history visibility in force when it was sent, however often it changed.
func TestColdLoadFollowsHistoryVisibility(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Changing")
	ctx := context.Background()
	setHV := func(v string) {
		if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: event.TypeHistoryVisibility, StateKey: sk(""),
			Content: json.RawMessage(`{"history_visibility":"` + v + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	send(t, hs, roomID, alice, "open 1")
	setHV("shared")
	send(t, hs, roomID, alice, "closed 1")
	setHV("joined")
	send(t, hs, roomID, alice, "closed 2")
	setHV("world_readable")
	send(t, hs, roomID, alice, "open 2")
	c := snapshot.New(snapshot.Config{}, hs.DB, hs.Rooms, hs.Tracker)
	s, err := c.Get(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, e := range s.Events {
		var ct struct{ Body string }
		_ = json.Unmarshal(e.Event.Content(), &ct)
		if ct.Body != "" {
			bodies = append(bodies, ct.Body)
		}
	}
	if strings.Join(bodies, ",") != "open 1,open 2" || s.Summary.HistoryVisibility != "world_readable" {
		t.Fatalf("cold snapshot shows %v (history visibility %q)", bodies, s.Summary.HistoryVisibility)
	}
}

// TestColdLoadIsSingleFlight: readers arriving together at a cold room share
// one load (each event is rendered once, not once per reader).
func TestColdLoadIsSingleFlight(t *testing.T) {
	hs := newHomeserver(t)
	roomID := newRoom(t, hs, "Crowd")
	for i := range 3 {
		send(t, hs, roomID, alice, fmt.Sprint("m", i))
	}
	var mu sync.Mutex
	renders := map[string]int{}
	c := snapshot.New(snapshot.Config{Render: func(e *snapshot.Event) []byte {
		mu.Lock()
		defer mu.Unlock()
		renders[e.Event.ID()]++
		return []byte("x")
	}}, hs.DB, hs.Rooms, hs.Tracker)
	var wg sync.WaitGroup
	snaps := make([]*snapshot.Snapshot, 16)
	for i := range snaps {
		wg.Go(func() {
			s, err := c.Get(context.Background(), roomID)
			if err != nil {
				t.Error(err)
			}
			snaps[i] = s
		})
	}
	wg.Wait()
	for i, s := range snaps {
		if s != snaps[0] {
			t.Fatalf("reader %d got another snapshot", i)
		}
	}
	if len(renders) == 0 {
		t.Fatal("nothing rendered")
	}
	for id, n := range renders {
		if n != 1 {
			t.Errorf("event %s rendered %d times", id, n)
		}
	}
}
