package federation

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"plaza/homeserver/room"
)

// A room's server ACL covers its EDUs (spec, Server ACLs): typing and
// receipts from a denied server are ignored in that room, while the same
// server's EDUs for a room that does not deny it still arrive.
func TestInboundEDUsServerACL(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	alice := a.user(t, "alice", "ADEV")
	bob := "@bob:" + b.name
	denied := a.sharedRoom(t, alice, bob)
	open := a.sharedRoom(t, alice, bob)
	// ACLs match the host without its port; a's host is the same, but only
	// the origin of an EDU is checked.
	host, _, _ := strings.Cut(b.name, ":")
	acl := `{"allow":["*"],"deny":["` + host + `"],"allow_ip_literals":true}`
	msg, err := a.rooms.Send(ctx, denied, room.Request{Sender: alice, Type: "m.room.server_acl", StateKey: new(""), Content: json.RawMessage(acl)})
	if err != nil {
		t.Fatal(err)
	}

	send := func(typ string, content any) {
		t.Helper()
		if err := b.svc.Sender.QueueEDU(ctx, []string{a.name}, typ, content); err != nil {
			t.Fatal(err)
		}
	}
	receipt := func(roomID string) map[string]any {
		return map[string]any{roomID: map[string]any{"m.read": map[string]any{
			bob: map[string]any{"data": map[string]any{"ts": 1000}, "event_ids": []string{msg.Event.ID()}}}}}
	}
	send("m.typing", map[string]any{"room_id": denied, "user_id": bob, "typing": true})
	send("m.receipt", receipt(denied))
	send("m.typing", map[string]any{"room_id": open, "user_id": bob, "typing": true})
	waitFor(t, "delivery to a", func() bool {
		return len(a.received("m.typing")) == 2 && len(a.received("m.receipt")) == 1
	})

	resp := a.syncOf(t, alice, "ADEV", denied, open)
	typing := map[string]int{}
	for roomID, jr := range resp.Rooms.Join {
		for _, e := range jr.Ephemeral.Events {
			if m := e.(map[string]any); m["type"] == "m.typing" {
				typing[roomID] = len(m["content"].(map[string]any)["user_ids"].([]string))
			}
		}
	}
	if typing[denied] != 0 {
		t.Errorf("typing from a denied server shown in the room: %v", typing)
	}
	if typing[open] != 1 {
		t.Errorf("typing in the room without an ACL: %v, want bob's", typing)
	}
	receipts, err := a.db.ReceiptsSince(ctx, []string{denied}, 0, a.tracker.UpTo())
	if err != nil {
		t.Fatal(err)
	}
	if len(receipts) != 0 {
		t.Errorf("receipts from a denied server stored: %+v", receipts)
	}
}
