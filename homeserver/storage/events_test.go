package storage_test

import (
	"context"
	"encoding/json"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// A batch of messages goes in one pipeline; a failure in it must leave
// nothing behind (PostgreSQL runs the pipeline as one implicit transaction).
func TestMessageBatchIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	db := storage.New(storagetest.NewDB(t, storage.Migrations()))
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	v := event.MustVersion("11")
	sk := ""
	create, err := (&event.Proto{Type: event.TypeCreate, StateKey: &sk, Sender: "@a:example.org", RoomID: "!r:example.org",
		Content: json.RawMessage(`{"room_version":"11"}`), Depth: 1}).Build(v, "example.org", key)
	if err != nil {
		t.Fatal(err)
	}
	room := &storage.Room{RoomID: "!r:example.org", Version: v}
	if _, err := db.PersistEvents(ctx, room, []storage.NewEvent{{Event: create, StreamPos: 1}}, 0, []string{create.ID()}); err != nil {
		t.Fatal(err)
	}
	msg := func(body string, depth int64) *event.Event {
		ev, err := (&event.Proto{Type: "m.room.message", Sender: "@a:example.org", RoomID: "!r:example.org",
			Content: json.RawMessage(`{"body":"` + body + `"}`), PrevEvents: []string{create.ID()}, AuthEvents: []string{create.ID()}, Depth: depth}).Build(v, "example.org", key)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	first, dup := msg("one", 2), msg("two", 3)
	// The same event twice: the second insert violates the unique event ID.
	_, err = db.PersistEvents(ctx, room, []storage.NewEvent{{Event: first, StreamPos: 2}, {Event: dup, StreamPos: 3}, {Event: dup, StreamPos: 4}}, 0, []string{dup.ID()})
	if err == nil {
		t.Fatal("a batch with a duplicate event was accepted")
	}
	if _, err := db.EventByID(ctx, first.ID()); err != storage.ErrNotFound {
		t.Fatalf("the failed batch left its first event behind: %v", err)
	}
	if r, err := db.Room(ctx, "!r:example.org"); err != nil || len(r.Extremities) != 1 || r.Extremities[0] != create.ID() {
		t.Fatalf("the failed batch moved the extremities: %+v, %v", r, err)
	}
	// The same batch without the duplicate goes in whole.
	if _, err := db.PersistEvents(ctx, room, []storage.NewEvent{{Event: first, StreamPos: 5}, {Event: dup, StreamPos: 6}}, 0, []string{dup.ID()}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []*event.Event{first, dup} {
		if _, err := db.EventByID(ctx, ev.ID()); err != nil {
			t.Fatalf("event %s missing: %v", ev.ID(), err)
		}
	}
}
