package peek

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"plaza/homeserver/event"
	"plaza/homeserver/room"
)

// Guest accounts' user IDs: registration hands guests this localpart prefix
// and refuses it to everyone else, so it narrows a 20,000-member room to its
// few guests before the account table confirms them.
const guestPrefix = "@guest-"

// watchGuestAccess enforces the spec's "Guest access" server behaviour: when
// a room's m.room.guest_access stops being can_join, the guests in it leave.
// It runs on the writer's goroutine, so the leaving happens on another.
func (s *Service) watchGuestAccess(n room.Notification) {
	for _, e := range n.Events {
		if e.Event.Type() == "m.room.guest_access" && e.Event.StateKeyEquals("") && !canJoin(e.Event) {
			go s.removeGuests(n.RoomID)
			return
		}
	}
}

func canJoin(ev *event.Event) bool {
	var c struct {
		GuestAccess string `json:"guest_access"`
	}
	return ev != nil && json.Unmarshal(ev.Content(), &c) == nil && c.GuestAccess == "can_join"
}

// removeGuests makes every local guest joined to the room leave it, each as
// themselves (a user may always leave, so no power is needed).
func (s *Service) removeGuests(roomID string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The setting may have changed back meanwhile.
	if ga, err := s.hs.Rooms.StateEvent(ctx, roomID, "m.room.guest_access", ""); err != nil || canJoin(ga) {
		return
	}
	state, err := s.hs.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		slog.Error("removing guests: reading room state", "room", roomID, "err", err)
		return
	}
	suffix := ":" + s.hs.Config.ServerName
	for _, ev := range state {
		if ev.Type() != event.TypeMember {
			continue
		}
		user := *ev.StateKey()
		if !strings.HasPrefix(user, guestPrefix) || !strings.HasSuffix(user, suffix) || room.MembershipOf(ev) != "join" {
			continue
		}
		acct, err := s.hs.DB.AccountByUserID(ctx, user)
		if err != nil || !acct.IsGuest {
			continue // gone, or upgraded to a full account
		}
		if _, err := s.hs.Rooms.Send(ctx, roomID, room.Request{Sender: user, Type: event.TypeMember, StateKey: &user,
			Content: json.RawMessage(`{"membership":"leave","reason":"guest access was turned off"}`)}); err != nil {
			slog.Error("removing a guest from a room", "room", roomID, "user", user, "err", err)
		}
	}
}
