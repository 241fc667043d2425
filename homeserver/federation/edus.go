package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"

	"plaza/homeserver/clientapi"
	"plaza/homeserver/e2ee"
	"plaza/homeserver/ephemeral"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
)

// Locals are the homeserver services that EDUs and queries from other
// servers reach, and that hand local changes to the sender.
type Locals struct {
	Rooms     *room.Service
	Ephemeral *ephemeral.Service
	E2EE      *e2ee.Service
	Client    *clientapi.API
}

// SetLocals connects federation to the local services, both ways: inbound
// EDUs and queries are served by them, and their local changes (typing,
// receipts, presence, to-device messages, device lists) are queued for
// other servers. server.go calls it once, before serving.
func (s *Service) SetLocals(l Locals) {
	s.locals = l
	hooks := outbound{s}
	if l.Ephemeral != nil {
		l.Ephemeral.SetFederation(hooks)
	}
	if l.E2EE != nil {
		l.E2EE.SetFederation(hooks)
	}
}

// Bounds on what one transaction's EDUs may make us do. The spec caps a
// transaction at 100 EDUs; the others are ours.
const (
	maxEDUsPerTxn = 100
	// maxUpdatesPerTxn bounds the receipts and presence updates of one
	// transaction's EDUs together: each costs a database write or a wake-up.
	maxUpdatesPerTxn = 1000
)

// edu is the envelope of every EDU.
type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// receiveEDUs handles the EDUs of an inbound transaction from origin. EDUs
// carry no guarantee of delivery, so a bad one is dropped, never failing the
// transaction it came in; and each is checked against origin: a server only
// speaks for its own users, about rooms they are joined to.
func (s *Service) receiveEDUs(ctx context.Context, origin string, edus []json.RawMessage) {
	budget := maxUpdatesPerTxn
	for i, raw := range edus {
		if i == maxEDUsPerTxn {
			slog.InfoContext(ctx, "federation: transaction with too many EDUs, rest dropped", "origin", origin, "count", len(edus))
			return
		}
		var e edu
		if err := json.Unmarshal(raw, &e); err != nil {
			slog.InfoContext(ctx, "federation: malformed EDU dropped", "origin", origin, "err", err)
			continue
		}
		if err := s.receiveEDU(ctx, origin, e, &budget); err != nil {
			if ctx.Err() != nil {
				return
			}
			slog.InfoContext(ctx, "federation: EDU dropped", "origin", origin, "type", e.Type, "err", err)
		}
	}
}

// receiveEDU handles one EDU, spending budget on its updates.
func (s *Service) receiveEDU(ctx context.Context, origin string, e edu, budget *int) error {
	l := s.locals
	switch e.Type {
	case "m.typing":
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if l.Ephemeral == nil {
			return nil
		}
		// The spec's server ACLs cover the EDUs of one room: a denied
		// server's typing is ignored (the error only gets it logged).
		if err := s.aclAllows(ctx, c.RoomID, origin); err != nil {
			return err
		}
		return l.Ephemeral.RemoteTyping(ctx, origin, c.RoomID, c.UserID, c.Typing)

	case "m.receipt":
		// room → receipt type → user → receipt
		var c map[string]map[string]map[string]struct {
			Data struct {
				TS       int64  `json:"ts"`
				ThreadID string `json:"thread_id"`
			} `json:"data"`
			EventIDs []string `json:"event_ids"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if l.Ephemeral == nil {
			return nil
		}
		var errs []error
		for roomID, types := range c {
			// All receipts of a room whose ACL denies the origin are ignored.
			if err := s.aclAllows(ctx, roomID, origin); err != nil {
				errs = append(errs, err)
				continue
			}
			for user, r := range types["m.read"] {
				for _, eventID := range r.EventIDs {
					if *budget--; *budget < 0 {
						return errors.Join(append(errs, errors.New("too many receipts in the transaction"))...)
					}
					if err := l.Ephemeral.RemoteReceipt(ctx, origin, roomID, user, r.Data.ThreadID, eventID, r.Data.TS); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		return errors.Join(errs...)

	case "m.presence":
		var c struct {
			Push []struct {
				UserID        string `json:"user_id"`
				Presence      string `json:"presence"`
				StatusMsg     string `json:"status_msg"`
				LastActiveAgo int64  `json:"last_active_ago"`
			} `json:"push"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if l.Ephemeral == nil {
			return nil
		}
		var errs []error
		for _, p := range c.Push {
			if *budget--; *budget < 0 {
				return errors.Join(append(errs, errors.New("too many presence updates in the transaction"))...)
			}
			if err := l.Ephemeral.RemotePresence(ctx, origin, p.UserID, p.Presence, p.StatusMsg, p.LastActiveAgo); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)

	case "m.device_list_update", "m.signing_key_update":
		var c struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if err := s.sharedUser(ctx, origin, c.UserID); err != nil || l.E2EE == nil {
			return err
		}
		// Keys of remote users are asked for afresh at every /keys/query,
		// so the change only needs announcing to local users.
		return l.E2EE.NoteRemoteDeviceListChange(ctx, c.UserID)

	case "m.direct_to_device":
		var c struct {
			Sender    string                                `json:"sender"`
			Type      string                                `json:"type"`
			MessageID string                                `json:"message_id"`
			Messages  map[string]map[string]json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return err
		}
		if id.ServerOf(c.Sender) != origin {
			return errors.New("sender is not a user of the origin")
		}
		if c.Type == "" || len(c.Type) > 255 || c.MessageID == "" || len(c.MessageID) > 255 {
			return errors.New("type and message_id must be 1 to 255 bytes")
		}
		if l.E2EE == nil {
			return nil
		}
		return l.E2EE.ReceiveToDevice(ctx, c.Sender, c.Type, c.MessageID, c.Messages)
	}
	return nil // unknown EDU types are ignored, as the spec asks
}

// sharedUser checks that userID belongs to origin and shares a room with
// this server (we hold their membership only for rooms we are in).
func (s *Service) sharedUser(ctx context.Context, origin, userID string) error {
	if id.ServerOf(userID) != origin {
		return errors.New("the user is not of the origin server")
	}
	rooms, err := s.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return err
	}
	if len(rooms) == 0 {
		return errors.New("the user shares no room with this server")
	}
	return nil
}

// outbound is federation as the local services see it: it queues EDUs
// about local users for the other servers concerned, and asks other
// servers for their users' keys.
type outbound struct{ s *Service }

// ToRooms queues an EDU for the other servers of the rooms.
func (o outbound) ToRooms(ctx context.Context, roomIDs []string, eduType string, content any) {
	ctx = context.WithoutCancel(ctx) // the client may hang up; the EDU still goes
	var dests []string
	for _, roomID := range roomIDs {
		servers, err := o.s.Sender.RoomServers(ctx, roomID)
		if err != nil {
			slog.WarnContext(ctx, "federation: servers of a room", "room", roomID, "err", err)
			continue
		}
		for _, d := range servers {
			if !slices.Contains(dests, d) {
				dests = append(dests, d)
			}
		}
	}
	if err := o.s.Sender.QueueEDU(ctx, dests, eduType, content); err != nil {
		slog.ErrorContext(ctx, "federation: queueing an EDU", "type", eduType, "err", err)
	}
}

// SendToDevice queues an m.direct_to_device EDU for server.
func (o outbound) SendToDevice(ctx context.Context, server, sender, evType string, messages map[string]map[string]json.RawMessage) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return o.s.Sender.QueueEDU(context.WithoutCancel(ctx), []string{server}, "m.direct_to_device", map[string]any{
		"sender": sender, "type": evType, "message_id": hex.EncodeToString(b[:]), "messages": messages})
}

// DeviceListChanged queues m.device_list_update EDUs, one per device the
// user has now, for the servers sharing a room with the user. Receivers
// see no prev_id they know and fetch the whole list (/user/devices), which
// also covers devices that were deleted.
func (o outbound) DeviceListChanged(ctx context.Context, userID string, pos int64) {
	ctx = context.WithoutCancel(ctx)
	l := o.s.locals
	rooms, err := o.s.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil || len(rooms) == 0 || l.E2EE == nil {
		return
	}
	var dests []string
	for _, roomID := range rooms {
		servers, err := o.s.Sender.RoomServers(ctx, roomID)
		if err != nil {
			continue
		}
		for _, d := range servers {
			if !slices.Contains(dests, d) {
				dests = append(dests, d)
			}
		}
	}
	if len(dests) == 0 {
		return
	}
	devices, master, selfSigning, _, err := l.E2EE.UserDevices(ctx, userID)
	if err != nil {
		slog.ErrorContext(ctx, "federation: devices for a device list update", "user", userID, "err", err)
		return
	}
	var edus [][]byte
	add := func(typ string, content map[string]any) {
		b, err := json.Marshal(map[string]any{"edu_type": typ, "content": content})
		if err == nil {
			edus = append(edus, b)
		}
	}
	if master != nil {
		// The change may be of the cross-signing keys (the caller does
		// not say): receivers get those as they are now.
		c := map[string]any{"user_id": userID, "master_key": master}
		if selfSigning != nil {
			c["self_signing_key"] = selfSigning
		}
		add("m.signing_key_update", c)
	}
	for _, d := range devices {
		add("m.device_list_update", map[string]any{"user_id": userID, "device_id": d.DeviceID, "stream_id": pos, "prev_id": []int64{}, "keys": d.Keys})
	}
	if len(devices) == 0 { // the last device went: still say so
		add("m.device_list_update", map[string]any{"user_id": userID, "device_id": "", "stream_id": pos, "prev_id": []int64{}, "deleted": true})
	}
	if err := o.s.Sender.Queue(ctx, dests, nil, edus); err != nil {
		slog.ErrorContext(ctx, "federation: queueing device list updates", "user", userID, "err", err)
	}
}
