package ephemeral

import (
	"context"
	"errors"
	"slices"
	"time"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
)

// Outbound sends EDUs about local users to the other servers of rooms. The
// federation package implements it; it must queue, not wait for delivery.
type Outbound interface {
	ToRooms(ctx context.Context, roomIDs []string, eduType string, content any)
}

// SetFederation installs the outbound side (server.go wires it before
// serving). Without it, typing, receipts and presence stay local.
func (s *Service) SetFederation(out Outbound) { s.out = out }

// federate hands an EDU about a local user's change to federation.
func (s *Service) federate(ctx context.Context, roomIDs []string, eduType string, content any) {
	if s.out != nil && len(roomIDs) > 0 {
		s.out.ToRooms(ctx, roomIDs, eduType, content)
	}
}

func (s *Service) setPresence(userID string, p presenceState, rooms []string) {
	s.bump(func(pos int64) {
		s.presence[userID] = p
		s.presencePos[userID] = pos
	}, func(pos int64) {
		s.syncer.NotifyUser(userID, pos)
		for _, roomID := range rooms {
			s.syncer.NotifyRoom(roomID, pos)
		}
	})
}

func receiptEDU(roomID, userID, threadID, eventID string, ts int64) map[string]any {
	data := map[string]any{"ts": ts}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	return map[string]any{roomID: map[string]any{"m.read": map[string]any{
		userID: map[string]any{"data": data, "event_ids": []string{eventID}}}}}
}

func presenceEDU(userID string, p presenceState) map[string]any {
	out := map[string]any{"user_id": userID, "presence": p.Presence, "currently_active": p.Presence == "online",
		"last_active_ago": max(time.Now().UnixMilli()-p.LastActive, 0)}
	if p.StatusMsg != "" {
		out["status_msg"] = p.StatusMsg
	}
	return out
}

// remoteTypingTimeout is how long a remote user's typing lasts without a
// renewal: their server tells us when they stop, but may never do so if it
// goes away.
const remoteTypingTimeout = 30 * time.Second

// errNotMember refuses an EDU about a user not joined to the room.
var errNotMember = errors.New("the user is not joined to the room")

// remoteMember checks that a remote user of origin is joined to roomID.
func (s *Service) remoteMember(ctx context.Context, origin, roomID, userID string) error {
	if id.ServerOf(userID) != origin {
		return httpapi.Forbidden("%s cannot speak for %s", origin, userID)
	}
	m, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return errNotMember
	}
	return nil
}

// RemoteTyping applies an m.typing EDU from origin.
func (s *Service) RemoteTyping(ctx context.Context, origin, roomID, userID string, typing bool) error {
	if err := s.remoteMember(ctx, origin, roomID, userID); err != nil {
		return err
	}
	s.setTyping(roomID, userID, typing, remoteTypingTimeout)
	return nil
}

// RemoteReceipt applies one receipt of an m.receipt EDU from origin. Only
// public read receipts travel between servers.
func (s *Service) RemoteReceipt(ctx context.Context, origin, roomID, userID, threadID, eventID string, ts int64) error {
	if err := s.remoteMember(ctx, origin, roomID, userID); err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	if ts <= 0 || ts > now {
		ts = now
	}
	return s.storeReceipt(ctx, roomID, userID, "m.read", threadID, eventID, ts)
}

// RemotePresence applies one update of an m.presence EDU from origin, for a
// user who shares a room with this server's users.
func (s *Service) RemotePresence(ctx context.Context, origin, userID, presence, statusMsg string, lastActiveAgo int64) error {
	if id.ServerOf(userID) != origin {
		return httpapi.Forbidden("%s cannot speak for %s", origin, userID)
	}
	if !slices.Contains(validPresence, presence) {
		return httpapi.InvalidParam("unknown presence %q", presence)
	}
	if len(statusMsg) > 1024 {
		return httpapi.TooLarge("status_msg is too long")
	}
	rooms, err := s.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return err
	}
	if len(rooms) == 0 {
		return errNotMember
	}
	p := presenceState{Presence: presence, StatusMsg: statusMsg, LastActive: time.Now().UnixMilli() - max(lastActiveAgo, 0)}
	s.setPresence(userID, p, rooms)
	return nil
}
