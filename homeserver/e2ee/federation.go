package e2ee

import (
	"context"
	"encoding/json"
	"log/slog"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// SetFederation installs the hook to remote servers (server.go wires it
// before serving, as federation is built after this service).
func (s *Service) SetFederation(f Federation) { s.cfg.Federation = f }

// announceRemotely tells other servers sharing a room with a local user
// that the user's devices or keys changed.
func (s *Service) announceRemotely(ctx context.Context, userID string, pos int64) {
	if s.cfg.Federation != nil && s.isLocal(userID) {
		s.cfg.Federation.DeviceListChanged(ctx, userID, pos)
	}
}

// LocalKeys answers another server's /user/keys/query for this server's
// users (user ID → device IDs, empty for all). User-signing keys are never
// shown to other servers; users of other servers are skipped.
func (s *Service) LocalKeys(ctx context.Context, deviceKeys map[string][]string) (*RemoteKeys, error) {
	if len(deviceKeys) > maxQueriedUsers {
		return nil, httpapi.TooLarge("at most %d users per query", maxQueriedUsers)
	}
	var users []string
	for u := range deviceKeys {
		if s.isLocal(u) {
			users = append(users, u)
		}
	}
	resp := &queryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	if err := s.localKeys(ctx, "", users, deviceKeys, resp); err != nil {
		return nil, err
	}
	return &RemoteKeys{DeviceKeys: resp.DeviceKeys, MasterKeys: resp.MasterKeys, SelfSigningKeys: resp.SelfSigningKeys}, nil
}

// ClaimLocalKeys answers another server's /user/keys/claim: one one-time
// (or fallback) key per local device asked (user → device → algorithm).
func (s *Service) ClaimLocalKeys(ctx context.Context, asked map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var claims []storage.KeyClaim
	for u, devices := range asked {
		if !s.isLocal(u) {
			continue
		}
		for dev, alg := range devices {
			if alg == "" {
				return nil, httpapi.InvalidParam("one_time_keys.%s.%s: the algorithm is empty", u, dev)
			}
			claims = append(claims, storage.KeyClaim{UserID: u, DeviceID: dev, Algorithm: alg})
		}
	}
	if len(claims) > maxClaims {
		return nil, httpapi.TooLarge("at most %d keys per claim", maxClaims)
	}
	claimed, err := s.db.ClaimKeys(ctx, claims)
	if err != nil {
		return nil, err
	}
	keys := map[string]map[string]map[string]json.RawMessage{}
	for _, k := range claimed {
		s.forgetCounts(k.UserID, k.DeviceID)
		if keys[k.UserID] == nil {
			keys[k.UserID] = map[string]map[string]json.RawMessage{}
		}
		keys[k.UserID][k.DeviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.JSON}
	}
	return keys, nil
}

// UserDevice is one device of a local user as /user/devices lists it.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys"`
}

// UserDevices answers another server's /user/devices for a local user: the
// devices with identity keys, their cross-signing keys, and the stream
// position the list is current at.
func (s *Service) UserDevices(ctx context.Context, userID string) (devices []UserDevice, master, selfSigning json.RawMessage, streamID int64, err error) {
	streamID = s.tracker.UpTo()
	keys, err := s.LocalKeys(ctx, map[string][]string{userID: nil})
	if err != nil {
		return nil, nil, nil, 0, err
	}
	devices = []UserDevice{}
	for dev, k := range keys.DeviceKeys[userID] {
		var d struct {
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(k, &d) // our own JSON; a missing name is fine
		devices = append(devices, UserDevice{DeviceID: dev, DisplayName: d.Unsigned.Name, Keys: k})
	}
	return devices, keys.MasterKeys[userID], keys.SelfSigningKeys[userID], streamID, nil
}

// ReceiveToDevice delivers to-device messages that sender's server sent
// (user ID → device ID or "*" → content) to this server's users. messageID
// identifies the batch, so a repeated delivery is recognised.
func (s *Service) ReceiveToDevice(ctx context.Context, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error {
	var targets []storage.ToDeviceTarget
	var users []string
	for u, devices := range messages {
		if !s.isLocal(u) {
			continue
		}
		for dev, content := range devices {
			if dev == "" || len(dev) > 255 || len(content) == 0 || content[0] != '{' || len(content) > maxToDeviceContent {
				slog.InfoContext(ctx, "e2ee: dropping a malformed to-device message", "sender", sender, "user", u)
				continue
			}
			targets = append(targets, storage.ToDeviceTarget{UserID: u, DeviceID: dev, Content: content})
		}
		users = append(users, u)
		if len(targets) > maxToDeviceMessages {
			return httpapi.TooLarge("at most %d to-device messages per batch", maxToDeviceMessages)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	if _, err := id.ParseUserID(sender); err != nil {
		return httpapi.InvalidParam("sender %q is not a user ID", sender)
	}
	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	// The remote sender has no device here: the transaction key is the
	// sender with an empty device and the message ID.
	duplicate, err := s.db.SendToDevice(ctx, sender, "", "federation:"+messageID, evType, targets, pos, s.now().UnixMilli())
	if err != nil || duplicate {
		return err
	}
	for _, u := range users {
		s.notifier.NotifyUser(u, pos)
	}
	return nil
}
