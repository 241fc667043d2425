// Package e2ee owns what the homeserver keeps for end-to-end encryption:
// device identity keys, one-time and fallback keys, cross-signing keys and
// the signatures uploaded for them, send-to-device messages, and the
// device-list change log that tells clients whose keys to fetch again. It
// serves /keys/* and /sendToDevice, and adds to_device, device_lists,
// device_one_time_keys_count and device_unused_fallback_key_types to /sync as
// a sync.Extension.
//
// Everything a /sync must deliver is written at a stream position (reserved
// before the write, completed after), so it is ordered with room events and
// covered by the one sync token:
//
//   - A to-device message is stored per recipient device. /sync returns the
//     oldest pending ones (at most maxToDevicePerSync), notes the response's
//     position on them, and deletes them when the device next syncs from that
//     position or a later one — the spec's acknowledgement.
//   - A device-list change is a row of the change log: keys uploaded, a
//     device deleted or renamed, cross-signing keys or signatures uploaded.
//     /sync reports the users of the log who share a room with the syncing
//     user, plus users who newly share one (from the membership log), and in
//     "left" those who no longer share any.
//
// Devices are deleted by the client API (logout, DELETE /devices, password
// change, deactivation), which knows nothing of this package. The schema
// handles it: keys and inboxes reference the device and go with it in the
// deleting transaction, and a trigger queues the deletion; this service
// announces queued deletions in the change log the next time any client
// syncs or asks for /keys/changes. A deletion is therefore announced within
// one long-poll of any user; it is never lost, because the queue is written
// in the same transaction as the deletion.
//
// Remote users go through the Federation hook (the federation package, set
// with SetFederation): their keys are asked of their servers at each
// /keys/query and /keys/claim (servers that do not answer are listed under
// failures), to-device messages to them are queued as EDUs, and local users'
// device-list changes are announced to the servers they share rooms with.
// Remote users' changes arrive through NoteRemoteDeviceListChange and
// ReceiveToDevice. Without the hook, remote users are unreachable.
package e2ee

import (
	"context"
	"encoding/json"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/id"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
	"plaza/homeserver/sync"
)

// Limits on what one request may carry or one /sync may deliver.
const (
	maxToDevicePerSync   = 100 // the spec's recommendation
	maxToDeviceMessages  = 10000
	maxToDeviceContent   = 64 << 10 // as much as an event may hold
	maxToDeviceBody      = 4 << 20
	maxOneTimeKeysUpload = 1000
	maxKeysBody          = 512 << 10
	maxClaims            = 5000
	maxQueriedUsers      = 5000
	maxPendingAnnounced  = 1000
)

// Notifier wakes a user's /sync long-polls (sync.Service implements it).
type Notifier interface {
	NotifyUser(userID string, pos int64)
	// UserChanged reports whether anything addressed to the user may have
	// changed after since.
	UserChanged(userID string, since int64) bool
	// MembersChanged reports whether a member event may have happened in
	// the rooms after since.
	MembersChanged(rooms []string, since int64) bool
}

// Federation reaches other homeservers' e2ee APIs on behalf of local users.
// It is the hook the federation package will fill; nil means remote users
// cannot be reached.
type Federation interface {
	// QueryKeys asks server for the keys of its users (user ID → device
	// IDs, empty for all).
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*RemoteKeys, error)
	// ClaimKeys claims one-time keys of its users' devices (user ID →
	// device ID → algorithm); the answer is user → device → key ID → key.
	ClaimKeys(ctx context.Context, server string, claims map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// SendToDevice queues to-device messages (user ID → device ID or "*" →
	// content) for server's users.
	SendToDevice(ctx context.Context, server, sender, evType string, messages map[string]map[string]json.RawMessage) error
	// DeviceListChanged tells the servers sharing a room with a local user
	// that the user's devices or keys changed at stream position pos. It
	// queues, never waits for the other servers.
	DeviceListChanged(ctx context.Context, userID string, pos int64)
}

// RemoteKeys is a remote server's answer to a key query.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage
	MasterKeys      map[string]json.RawMessage
	SelfSigningKeys map[string]json.RawMessage
}

// Config configures the service.
type Config struct {
	ServerName string
	// Federation reaches remote users' keys and devices; nil until
	// federation exists.
	Federation Federation
}

// Service serves the e2ee endpoints and the /sync extension.
type Service struct {
	cfg      Config
	db       *storage.DB
	tracker  *stream.Tracker
	notifier Notifier
	now      func() time.Time

	ackMu       gosync.Mutex
	awaitingAck map[string]bool // user + "\x00" + device → delivered, not yet acknowledged
	otk         map[string]cachedCounts
	otkGen      uint64

	seenDeviceChanges int64 // storage's device-change count when the queue was last read
	pendingLooked     bool

	uia UIA // user-interactive auth for key replacement (nil: password only)
}

// otkCountsTTL bounds how long a device's key counts are reused. Uploads and
// claims through this process drop them at once; the TTL covers what this
// process does not see (a device deleted and recreated under the same ID).
const otkCountsTTL = time.Second

type cachedCounts struct {
	counts storage.OTKCounts
	at     time.Time
}

// otkCounts returns a device's key counts, cached briefly: every sync of
// every device needs them.
func (s *Service) otkCounts(ctx context.Context, userID, deviceID string) (storage.OTKCounts, error) {
	key := userID + "\x00" + deviceID
	now := s.now()
	s.ackMu.Lock()
	c, ok := s.otk[key]
	gen := s.otkGen
	s.ackMu.Unlock()
	if ok && now.Sub(c.at) < otkCountsTTL {
		return c.counts, nil
	}
	counts, err := s.db.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return storage.OTKCounts{}, err
	}
	s.ackMu.Lock()
	if s.otkGen == gen {
		if len(s.otk) >= maxAwaitingAck {
			clear(s.otk)
		}
		s.otk[key] = cachedCounts{counts: counts, at: now}
	}
	s.ackMu.Unlock()
	return counts, nil
}

// forgetCounts drops cached key counts after an upload or a claim. Any
// concurrent load is discarded too (the generation moves on).
func (s *Service) forgetCounts(userID, deviceID string) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.otkGen++
	delete(s.otk, userID+"\x00"+deviceID)
}

// maxAwaitingAck bounds awaitingAck.
const maxAwaitingAck = 1_000_000

// New returns the service. Register it with the sync service
// (AddExtension) and mount Routes behind authentication.
func New(cfg Config, db *storage.DB, tracker *stream.Tracker, notifier Notifier) *Service {
	return &Service{cfg: cfg, db: db, tracker: tracker, notifier: notifier, now: time.Now, awaitingAck: map[string]bool{},
		otk: map[string]cachedCounts{}}
}

// Routes mounts the endpoints on the authenticated /_matrix/client/v3 router.
func (s *Service) Routes(r chi.Router) {
	r.Post("/keys/upload", s.uploadKeys)
	r.Post("/keys/query", s.queryKeys)
	r.Post("/keys/claim", s.claimKeys)
	r.Get("/keys/changes", s.keyChanges)
	r.Post("/keys/device_signing/upload", s.uploadCrossSigningKeys)
	r.Post("/keys/signatures/upload", s.uploadSignatures)
	r.Put("/sendToDevice/{eventType}/{txnID}", s.sendToDevice)
}

// isLocal reports whether a user ID belongs to this server.
func (s *Service) isLocal(userID string) bool {
	u, err := id.ParseUserID(userID)
	return err == nil && u.ServerName == s.cfg.ServerName
}

// announce wakes whoever a device-list change of userID at pos concerns:
// userID's own devices and the local users sharing a room with them. It
// runs after the change committed and before pos is completed, so a
// long-poll woken by the completion finds it. A failure here loses wake-ups,
// not data (the change is read from the log at the next sync), so it is
// logged rather than failing a request whose write succeeded.
func (s *Service) announce(ctx context.Context, userID string, pos int64) {
	if s.isLocal(userID) {
		s.notifier.NotifyUser(userID, pos)
		s.announceRemotely(ctx, userID, pos)
	}
	users, err := s.db.UsersSharingRoomsWith(ctx, userID)
	if err != nil {
		slog.ErrorContext(ctx, "e2ee: finding whom to tell of a device list change", "user", userID, "err", err)
		return
	}
	for _, u := range users {
		if u != userID && s.isLocal(u) {
			s.notifier.NotifyUser(u, pos)
		}
	}
}

// announcePending turns device deletions and renames queued by the database
// into device-list changes (see the package comment).
func (s *Service) announcePending(ctx context.Context) error {
	// Every sync calls this, but the queue only fills when a device is
	// deleted or renamed; storage counts those, so the query runs only when
	// the count moved (and once after start, for what an earlier run left).
	changes := s.db.DeviceChanges()
	s.ackMu.Lock()
	if s.seenDeviceChanges == changes && s.pendingLooked {
		s.ackMu.Unlock()
		return nil
	}
	s.seenDeviceChanges, s.pendingLooked = changes, true
	s.ackMu.Unlock()
	pending, err := s.db.HasPendingDeviceChanges(ctx)
	if err != nil || !pending {
		return err
	}
	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	users, err := s.db.AnnouncePendingDeviceChanges(ctx, pos, maxPendingAnnounced)
	if err != nil {
		return err
	}
	for _, u := range users {
		s.announce(ctx, u, pos)
	}
	return nil
}

// NoteRemoteDeviceListChange records that a remote user's device list
// changed (the federation package calls it for m.device_list_update), so
// local users sharing a room with them hear of it.
func (s *Service) NoteRemoteDeviceListChange(ctx context.Context, userID string) error {
	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	if err := s.db.LogDeviceListChange(ctx, pos, userID); err != nil {
		return err
	}
	s.announce(ctx, userID, pos)
	return nil
}

// AddToSync adds the device's to-device messages, the device-list changes
// (incremental syncs only, as the spec says) and the device's key counts.
func (s *Service) AddToSync(ctx context.Context, req *sync.Request, resp *sync.Response) error {
	if err := s.announcePending(ctx); err != nil {
		return err
	}

	// A to-device message wakes its recipient with NotifyUser, so when
	// nothing addressed to the user changed since the token, and the device
	// has no delivered message waiting for its acknowledgement, the inbox
	// query has nothing to do.
	var msgs []storage.ToDeviceMessage
	var more bool
	device := req.UserID + "\x00" + req.DeviceID
	s.ackMu.Lock()
	awaiting := s.awaitingAck[device]
	s.ackMu.Unlock()
	if req.Since == 0 || awaiting || s.notifier.UserChanged(req.UserID, req.Since) {
		var err error
		if msgs, more, err = s.db.ToDeviceInbox(ctx, req.UserID, req.DeviceID, req.Since, req.UpTo, maxToDevicePerSync); err != nil {
			return err
		}
		s.ackMu.Lock()
		if len(msgs) > 0 {
			if len(s.awaitingAck) >= maxAwaitingAck {
				// Forgetting costs only queries: an unknown device is
				// treated as having nothing pending, and the next message
				// addressed to it runs the query (which acknowledges).
				clear(s.awaitingAck)
			}
			s.awaitingAck[device] = true
		} else {
			delete(s.awaitingAck, device)
		}
		s.ackMu.Unlock()
	}
	events := make([]any, len(msgs))
	for i, m := range msgs {
		events[i] = toDeviceEvent{Sender: m.Sender, Type: m.Type, Content: m.Content}
	}
	resp.ToDevice = &sync.EventList{Events: events}
	if more {
		if err := s.flagBacklog(ctx, req.UserID); err != nil {
			return err
		}
	}

	// Device lists change when someone sharing a room changes keys (announce
	// wakes every such user with NotifyUser) or when membership in the
	// user's rooms changes (their own, or others joining and leaving); with
	// neither since the token there is nothing to compute.
	if req.Since > 0 && (s.notifier.UserChanged(req.UserID, req.Since) || s.notifier.MembersChanged(req.JoinedRooms, req.Since)) {
		changed, left, err := s.db.DeviceListChanges(ctx, req.UserID, req.JoinedRooms, req.Since, req.UpTo)
		if err != nil {
			return err
		}
		if len(changed) > 0 || len(left) > 0 {
			resp.DeviceLists = &sync.DeviceLists{Changed: changed, Left: left}
		}
	}

	counts, err := s.otkCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	resp.OTKCounts = otkCountsJSON(counts)
	resp.Fallback = counts.UnusedFallback
	if resp.Fallback == nil {
		resp.Fallback = []string{}
	}
	return nil
}

type toDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// flagBacklog makes the client's next /sync return at once when its inbox
// holds more than one response's share: the response's token is the stream
// position it was computed at, which the waiting messages are below, so
// without something new after it the next long-poll would sleep. A fresh
// position, marked for the user, is that something; it is recorded so that a
// restart never starts the stream below a token handed out.
func (s *Service) flagBacklog(ctx context.Context, userID string) error {
	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	if err := s.db.RaiseStreamMark(ctx, userID, pos); err != nil {
		return err
	}
	s.notifier.NotifyUser(userID, pos)
	return nil
}

// otkCountsJSON is the device_one_time_keys_count / one_time_key_counts
// map. signed_curve25519 is always present, zero or not: older clients only
// top their one-time keys up when they see a count for it.
func otkCountsJSON(c storage.OTKCounts) map[string]int {
	out := map[string]int{"signed_curve25519": 0}
	for alg, n := range c.OneTime {
		out[alg] = n
	}
	return out
}
