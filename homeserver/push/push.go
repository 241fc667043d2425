// Package push delivers notifications to push gateways (Push Gateway API,
// POST /_matrix/push/v1/notify) for the http pushers users set through
// /pushers/set (package accountdata keeps them).
//
// It hears every new event of the room service, and for each local user
// joined to the event's room who has a pusher, runs the user's push rules
// (accountdata.Evaluate, the same evaluation /sync's unread counts use);
// an event that notifies is sent to each of the user's pushers. A gateway
// that answers a push key as rejected loses that pusher, as the spec asks.
//
// Delivery is best effort: one attempt per notification, with a timeout; a
// failed attempt is logged and not retried, and when events arrive faster
// than the gateways take them, the excess is dropped rather than holding up
// the room writers. Clients still learn of everything at their next /sync.
// Unread counts are not sent (the gateway API makes them optional).
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"plaza/homeserver/accountdata"
	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Config configures delivery.
type Config struct {
	// AllowPrivateAddresses lets gateways be reached on loopback and private
	// networks. Off, a pusher cannot make the server call into its own
	// network.
	AllowPrivateAddresses bool
	// Timeout bounds one gateway request (default 10 s).
	Timeout time.Duration
}

// Limits of the delivery machinery.
const (
	queueLength    = 1024 // room notifications waiting to be evaluated
	maxConcurrent  = 8    // gateway requests in flight
	maxEventAge    = 10 * time.Minute
	maxGatewayBody = 64 << 10
	defaultTimeout = 10 * time.Second
)

// Service pushes notifications.
type Service struct {
	cfg    Config
	db     *storage.DB
	rooms  *room.Service
	acct   *accountdata.Service
	client *http.Client
	queue  chan room.Notification
	sem    chan struct{}
}

// New returns the service; Start begins delivery.
func New(cfg Config, db *storage.DB, rooms *room.Service, acct *accountdata.Service) *Service {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	if !cfg.AllowPrivateAddresses {
		dialer.Control = refusePrivate
	}
	transport := &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: cfg.Timeout, MaxIdleConnsPerHost: maxConcurrent}
	return &Service{cfg: cfg, db: db, rooms: rooms, acct: acct,
		client: &http.Client{Transport: transport, Timeout: cfg.Timeout,
			// A gateway that redirects could lead the server anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		queue: make(chan room.Notification, queueLength), sem: make(chan struct{}, maxConcurrent)}
}

// refusePrivate refuses connections to addresses that are not public, after
// name resolution (so a public name resolving to a private address is
// refused too).
func refusePrivate(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip) {
		return fmt.Errorf("push gateway address %s is not public", ip)
	}
	return nil
}

// Start subscribes to the room service and delivers until ctx ends.
func (s *Service) Start(ctx context.Context) {
	s.rooms.Subscribe(s.hear)
	go s.run(ctx)
}

// hear runs on the room writer's goroutine: it only queues.
func (s *Service) hear(n room.Notification) {
	select {
	case s.queue <- n:
	default:
		slog.Warn("push: queue full, notifications of an event batch dropped", "room", n.RoomID, "events", len(n.Events))
	}
}

func (s *Service) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-s.queue:
			if err := s.handle(ctx, n); err != nil && ctx.Err() == nil {
				slog.Error("push: evaluating notifications", "room", n.RoomID, "err", err)
			}
		}
	}
}

// pushable reports whether an event is news worth a push: accepted, in the
// timeline, and recent (history fetched from other servers is not news).
func pushable(e *storage.StoredEvent, now time.Time) bool {
	return e.StreamPos > 0 && !e.Rejected && !e.SoftFailed && e.RedactedBy == "" &&
		now.Sub(time.UnixMilli(e.Event.OriginServerTS())) < maxEventAge
}

// handle evaluates a batch of a room's events for the room's users with
// pushers.
func (s *Service) handle(ctx context.Context, n room.Notification) error {
	now := time.Now()
	var evs []*storage.StoredEvent
	for _, e := range n.Events {
		if pushable(e, now) {
			evs = append(evs, e)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	pushers, err := s.db.RoomPushers(ctx, n.RoomID)
	if err != nil || len(pushers) == 0 {
		return err
	}
	byUser := map[string][]storage.Pusher{}
	var users []string
	for _, p := range pushers {
		if byUser[p.UserID] == nil {
			users = append(users, p.UserID)
		}
		byUser[p.UserID] = append(byUser[p.UserID], p)
	}
	state := func(typ, sk string) *event.Event {
		ev, _ := s.rooms.StateEvent(ctx, n.RoomID, typ, sk)
		return ev
	}
	joined, err := s.rooms.JoinedCount(ctx, n.RoomID)
	if err != nil {
		return err
	}
	pl, plErr := auth.PowerLevelsFor(state)
	for _, user := range users {
		rules, _, err := s.acct.RulesetVersion(ctx, user)
		if err != nil {
			return err
		}
		view := accountdata.EventView{UserID: user, MemberCount: joined}
		if me := state(event.TypeMember, user); me != nil {
			var c struct {
				DisplayName string `json:"displayname"`
			}
			_ = json.Unmarshal(me.Content(), &c)
			view.DisplayName = c.DisplayName
		}
		if plErr == nil {
			view.NotificationPowerLevels = pl.Notifications
		}
		for _, e := range evs {
			view.Event = e.Event.ClientMap()
			if plErr == nil {
				view.SenderPowerLevel = pl.UserLevel(e.Event.Sender())
			}
			notify, highlight, sound := accountdata.Evaluate(rules, view)
			if !notify {
				continue
			}
			senderName := ""
			if m := state(event.TypeMember, e.Event.Sender()); m != nil {
				var c struct {
					DisplayName string `json:"displayname"`
				}
				_ = json.Unmarshal(m.Content(), &c)
				senderName = c.DisplayName
			}
			for _, p := range byUser[user] {
				s.send(ctx, p, e.Event, senderName, highlight, sound)
			}
		}
	}
	return nil
}

// send posts one notification to a pusher's gateway in the background
// (at most maxConcurrent at once; past that, the caller waits).
func (s *Service) send(ctx context.Context, p storage.Pusher, ev *event.Event, senderName string, highlight bool, sound string) {
	body, url, err := notification(p, ev, senderName, highlight, sound)
	if err != nil {
		slog.Warn("push: unusable pusher", "user", p.UserID, "app_id", p.AppID, "err", err)
		return
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	go func() {
		defer func() { <-s.sem }()
		if err := s.post(ctx, p, url, body); err != nil && ctx.Err() == nil {
			slog.Warn("push: gateway did not take a notification", "user", p.UserID, "app_id", p.AppID, "event", ev.ID(), "err", err)
		}
	}()
}

// notification builds the request body of the Push Gateway API for one
// pusher, and returns the gateway URL.
func notification(p storage.Pusher, ev *event.Event, senderName string, highlight bool, sound string) ([]byte, string, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(p.Data, &data); err != nil {
		return nil, "", err
	}
	var url, format string
	if err := json.Unmarshal(data["url"], &url); err != nil {
		return nil, "", fmt.Errorf("data.url: %w", err)
	}
	if f, ok := data["format"]; ok {
		_ = json.Unmarshal(f, &format)
	}
	// The gateway gets the pusher's data without the URL (the spec).
	delete(data, "url")
	tweaks := map[string]any{}
	if highlight {
		tweaks["highlight"] = true
	}
	if sound != "" {
		tweaks["sound"] = sound
	}
	prio := "low"
	if highlight || sound != "" {
		prio = "high"
	}
	n := map[string]any{
		"event_id": ev.ID(),
		"room_id":  ev.RoomID(),
		"prio":     prio,
		"devices": []map[string]any{{
			"app_id": p.AppID, "pushkey": p.Pushkey, "data": data, "tweaks": tweaks,
		}},
	}
	if format != "event_id_only" {
		n["type"] = ev.Type()
		n["sender"] = ev.Sender()
		n["content"] = json.RawMessage(ev.Content())
		if senderName != "" {
			n["sender_display_name"] = senderName
		}
		if sk := ev.StateKey(); sk != nil && ev.Type() == event.TypeMember {
			n["user_is_target"] = *sk == p.UserID
		}
	}
	body, err := json.Marshal(map[string]any{"notification": n})
	return body, url, err
}

// post sends a notification and drops the pusher if the gateway rejects its
// push key.
func (s *Service) post(ctx context.Context, p storage.Pusher, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxGatewayBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	var answer struct {
		Rejected []string `json:"rejected"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return errors.New("gateway answered no JSON")
	}
	for _, k := range answer.Rejected {
		if k == p.Pushkey {
			slog.Info("push: gateway rejected a push key; pusher removed", "user", p.UserID, "app_id", p.AppID)
			return s.db.DeletePusher(context.WithoutCancel(ctx), p.UserID, p.AppID, p.Pushkey)
		}
	}
	return nil
}
