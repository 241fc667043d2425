package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"plaza/homeserver/event"
	"plaza/homeserver/storage"
)

// StoreInvite records an invite (already checked and countersigned by us)
// of a local user to a room on other servers. When we are in the room the
// invite reaches us again through /send like any event, so nothing is done
// here; otherwise it is kept out of any timeline, with the stripped state
// it came with, and shows in the invitee's /sync.
func (s *Service) StoreInvite(ctx context.Context, v *event.RoomVersion, ev *event.Event, inviter string, inviteState json.RawMessage) error {
	if _, err := s.load(ctx, ev.RoomID()); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if len(inviteState) == 0 {
		inviteState = json.RawMessage("[]")
	}
	return s.storeOutOfRoom(ctx, v, ev, func(row *storage.Room, pos int64) (int64, error) {
		return s.db.StoreRemoteInvite(ctx, row, ev, pos, inviter, inviteState)
	})
}

// StoreOwnOutOfRoom records a local user's own membership event (a
// rejected invite, a knock) in a room we are not in, once server, the
// room's, accepted it. A knock keeps the stripped state server answered.
func (s *Service) StoreOwnOutOfRoom(ctx context.Context, v *event.RoomVersion, ev *event.Event, server string, knockState json.RawMessage) error {
	if _, err := s.load(ctx, ev.RoomID()); err == nil {
		return nil // we are in the room: it comes back through /send
	}
	var keep []byte
	if MembershipOf(ev) == "knock" {
		keep = knockState
		if len(keep) == 0 {
			keep = []byte("[]")
		}
	}
	return s.storeOutOfRoom(ctx, v, ev, func(row *storage.Room, pos int64) (int64, error) {
		return s.db.SetOutOfRoomMembership(ctx, row, ev, MembershipOf(ev), pos, keep, server)
	})
}

func (s *Service) storeOutOfRoom(ctx context.Context, v *event.RoomVersion, ev *event.Event, write func(*storage.Room, int64) (int64, error)) error {
	row := &storage.Room{RoomID: ev.RoomID(), Version: v}
	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	nid, err := write(row, pos)
	if err != nil {
		return fmt.Errorf("storing %s: %w", ev.ID(), err)
	}
	s.notify(Notification{RoomID: ev.RoomID(), Events: []*storage.StoredEvent{{NID: nid, StreamPos: pos, Event: ev}}, Delivered: true})
	return nil
}

// RemoteInvite returns the stripped state to show with a local user's
// invite to (or knock on) a room we are not in, its membership event last,
// and the server it came from or went to; ok is false when there is none.
func (s *Service) RemoteInvite(ctx context.Context, roomID, userID string) (state []any, inviter string, ok bool, err error) {
	ri, err := s.db.RemoteInviteFor(ctx, userID, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	var stripped []json.RawMessage
	_ = json.Unmarshal(ri.InviteState, &stripped)
	for _, st := range stripped {
		state = append(state, st)
	}
	if se, err := s.db.EventByID(ctx, ri.EventID); err == nil {
		state = append(state, se.Event.Client())
	}
	return state, ri.InviterServer, true, nil
}
