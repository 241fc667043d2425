package community

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/community/forge"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Webhooks. A room admin (power 100 in the room) asks for one:
//
//	POST /_plaza/rooms/{roomID}/webhooks   (Matrix access token)
//	→ {"url": ".../_plaza/webhooks/{id}", "secret": "...", "content_type": "application/json"}
//
// and enters the URL and secret in the forge's webhook settings (GitHub:
// content type application/json, the secret signs deliveries with
// X-Hub-Signature-256; GitLab: the secret is sent as X-Gitlab-Token). The
// secret is shown once and never put in room state. Deliveries:
//
//	POST /_plaza/webhooks/{id}
//
// A room has at most maxWebhooksPerRoom; an admin removes one with
//
//	DELETE /_plaza/rooms/{roomID}/webhooks/{id}
//
// Unsigned or mis-signed deliveries are refused (401, 403) and logged.
// Pushes, issues, pull/merge requests, releases and comments become one
// m.notice each from the service account, and an item of the room's
// activity feed; a redelivery (same delivery id) posts nothing new.
// Deliveries about members and access make the room's members' power
// levels be checked again.

// maxDeliveryBytes bounds a webhook delivery (GitHub caps them at 25 MB;
// the events Plaza reads are far smaller, except pushes of many commits).
const maxDeliveryBytes = 5 << 20

// maxSummary bounds a notice's line.
const maxSummary = 300

// Routes mounts the webhook endpoints on the homeserver's router.
func (s *Service) Routes(r chi.Router) {
	r.With(s.hs.Client.Authenticate).Post("/_plaza/rooms/{roomID}/webhooks", s.createWebhook)
	r.With(s.hs.Client.Authenticate).Delete("/_plaza/rooms/{roomID}/webhooks/{hookID}", s.deleteWebhook)
	r.Post("/_plaza/webhooks/{hookID}", s.deliver)
	r.With(s.optionalAuth).Get("/_plaza/rooms/{roomID}/activity", s.activityFeed)
}

// optionalAuth authenticates requests that carry an access token and lets
// anonymous ones through.
func (s *Service) optionalAuth(next http.Handler) http.Handler {
	authed := s.hs.Client.Authenticate(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.URL.Query().Get("access_token") != "" {
			authed.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// activityFeed serves a room's activity as JSON, to whoever may read the
// room: anyone for a world-readable room, members otherwise.
//
//	GET /_plaza/rooms/{roomID}/activity?limit=20
//	→ {"activity": [{"kind", "actor", "summary", "url", "event_id", "ts"}, ...]}  newest first
func (s *Service) activityFeed(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := httpapi.PathParam(r, "roomID")
	viewer := ""
	if rq := httpapi.RequesterFrom(ctx); rq != nil {
		viewer = rq.UserID
	}
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			httpapi.Fail(w, r, httpapi.InvalidParam("limit must be a positive integer"))
			return
		}
		limit = n
	}
	c, err := s.association(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	vis, err := s.hs.Rooms.VisibilityFor(ctx, roomID, viewer)
	if c == nil || err != nil || !(vis.WorldReadable() || vis.Member() == "join") {
		// Rooms the viewer may not read look like rooms without a feed.
		httpapi.Fail(w, r, httpapi.NotFound("no activity feed for %s", roomID))
		return
	}
	items, err := s.Activity(ctx, roomID, limit)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(items))
	for i, a := range items {
		out[i] = map[string]any{"kind": a.Kind, "actor": a.Actor, "summary": a.Summary, "url": a.URL,
			"event_id": a.EventID, "ts": a.Time.UnixMilli()}
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"activity": out})
}

// maxWebhooksPerRoom bounds the webhooks of one room: a repository needs
// one, a few allow for rotating secrets.
const maxWebhooksPerRoom = 10

// roomAdmin checks that the requester administers a repository's room, and
// returns its association.
func (s *Service) roomAdmin(ctx context.Context, roomID, userID string) (*storage.CommunityRoom, error) {
	c, err := s.association(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if c == nil || c.Kind != kindRepo {
		return nil, httpapi.NotFound("%s is not the room of a repository", roomID)
	}
	if m, err := s.hs.Rooms.Membership(ctx, roomID, userID); err != nil || m != "join" {
		return nil, httpapi.Forbidden("you are not in this room")
	}
	pl, err := s.hs.Rooms.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if pl.UserLevel(userID) < levelAdmin {
		return nil, httpapi.Forbidden("only room admins (power %d) may manage webhooks", levelAdmin)
	}
	return c, nil
}

func (s *Service) createWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID := httpapi.PathParam(r, "roomID")
	c, err := s.roomAdmin(ctx, roomID, rq.UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if n, err := s.hs.DB.CountCommunityWebhooks(ctx, roomID); err != nil {
		httpapi.Fail(w, r, err)
		return
	} else if n >= maxWebhooksPerRoom {
		httpapi.Fail(w, r, httpapi.Forbidden("a room has at most %d webhooks; delete one first", maxWebhooksPerRoom))
		return
	}
	h := storage.CommunityWebhook{HookID: randomToken(16), RoomID: roomID, Flavour: c.Flavour, Secret: randomToken(32), CreatedBy: rq.UserID}
	if err := s.hs.DB.AddCommunityWebhook(ctx, h, s.nowMS()); err != nil {
		httpapi.Fail(w, r, fmt.Errorf("community: recording a webhook: %w", err))
		return
	}
	s.log.Info("webhook set up", "room_id", roomID, "by", rq.UserID, "hook_id", h.HookID)
	httpapi.Respond(w, http.StatusOK, map[string]any{
		"hook_id": h.HookID, "url": s.cfg.PublicURL + "/_plaza/webhooks/" + h.HookID,
		"secret": h.Secret, "content_type": "application/json", "flavour": h.Flavour,
	})
}

func (s *Service) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	roomID, hookID := httpapi.PathParam(r, "roomID"), httpapi.PathParam(r, "hookID")
	if _, err := s.roomAdmin(ctx, roomID, rq.UserID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	err := s.hs.DB.DeleteCommunityWebhook(ctx, roomID, hookID)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("no such webhook in this room"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.log.Info("webhook deleted", "room_id", roomID, "by", rq.UserID, "hook_id", hookID)
	httpapi.Respond(w, http.StatusOK, map[string]any{})
}

func (s *Service) deliver(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	hookID := httpapi.PathParam(r, "hookID")
	h, err := s.hs.DB.CommunityWebhook(ctx, hookID)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("no such webhook"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	body, err := httpapi.ReadBody(r, maxDeliveryBytes)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := verify(h, r.Header, body); err != nil {
		s.log.Warn("webhook delivery refused", "hook_id", hookID, "room_id", h.RoomID, "remote", r.RemoteAddr, "reason", err.Msg)
		httpapi.Fail(w, r, err)
		return
	}
	c, err := s.association(ctx, h.RoomID)
	if err != nil || c == nil {
		httpapi.Fail(w, r, httpapi.NotFound("the webhook's room is gone"))
		return
	}
	var kind, delivery string
	if h.Flavour == forge.GitHub {
		kind, delivery = r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
	} else {
		kind, delivery = r.Header.Get("X-Gitlab-Event"), r.Header.Get("X-Gitlab-Event-UUID")
	}
	if delivery == "" {
		sum := sha256.Sum256(body)
		delivery = "sha256:" + hex.EncodeToString(sum[:])
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		httpapi.Fail(w, r, httpapi.BadJSON("the delivery is not JSON: %v", err))
		return
	}
	if id := p.repoID(); id != 0 && id != c.ForgeID {
		httpapi.Fail(w, r, httpapi.InvalidParam("the delivery is about another repository (id %d)", id))
		return
	}
	var item *activity
	if h.Flavour == forge.GitHub {
		item = githubActivity(kind, &p)
	} else {
		item = gitlabActivity(kind, &p)
	}
	if h.Flavour == forge.GitHub && kind == "repository" {
		// Signed by the forge: the repository's new name and visibility
		// can be taken from the delivery itself.
		if err := s.followRepository(ctx, c, &p); err != nil {
			s.log.Error("following a repository change", "room_id", c.RoomID, "err", err)
			httpapi.Fail(w, r, httpapi.Custom(http.StatusServiceUnavailable, "M_UNKNOWN", "could not apply the change; redeliver later"))
			return
		}
	}
	if accessEvent(h.Flavour, kind) {
		s.scheduleResync(c.RoomID)
	}
	if item == nil {
		httpapi.Respond(w, http.StatusOK, map[string]any{"posted": false})
		return
	}
	eventID, posted, err := s.post(ctx, c.RoomID, delivery, item)
	if err != nil {
		s.log.Error("posting webhook activity", "room_id", c.RoomID, "err", err)
		// 503 makes the forge redeliver later.
		httpapi.Fail(w, r, httpapi.Custom(http.StatusServiceUnavailable, "M_UNKNOWN", "could not post the activity; redeliver later"))
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"posted": posted, "event_id": eventID})
}

// scheduleResync re-checks a room's members in the background: the forge
// should not wait for it, nor cancel it by hanging up. One run per room at a
// time; deliveries during a run make it run once more, so a change the
// forge reported while members were being checked is not missed.
func (s *Service) scheduleResync(roomID string) {
	s.resyncs.mu.Lock()
	defer s.resyncs.mu.Unlock()
	if s.resyncs.running == nil {
		s.resyncs.running = map[string]bool{}
	}
	if again, running := s.resyncs.running[roomID]; running {
		if !again {
			s.resyncs.running[roomID] = true
		}
		return
	}
	s.resyncs.running[roomID] = false
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			s.resync(ctx, roomID)
			cancel()
			s.resyncs.mu.Lock()
			if !s.resyncs.running[roomID] {
				delete(s.resyncs.running, roomID)
				s.resyncs.mu.Unlock()
				return
			}
			s.resyncs.running[roomID] = false
			s.resyncs.mu.Unlock()
		}
	}()
}

// verify checks a delivery's signature (GitHub) or token (GitLab) against
// the hook's secret, in constant time.
func verify(h *storage.CommunityWebhook, hdr http.Header, body []byte) *httpapi.Error {
	if h.Flavour == forge.GitHub {
		sig := hdr.Get("X-Hub-Signature-256")
		if sig == "" {
			return httpapi.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", "missing X-Hub-Signature-256")
		}
		got, err := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
		mac := hmac.New(sha256.New, []byte(h.Secret))
		mac.Write(body)
		if err != nil || !strings.HasPrefix(sig, "sha256=") || !hmac.Equal(got, mac.Sum(nil)) {
			return httpapi.Forbidden("bad X-Hub-Signature-256")
		}
		return nil
	}
	tok := hdr.Get("X-Gitlab-Token")
	if tok == "" {
		return httpapi.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", "missing X-Gitlab-Token")
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(h.Secret)) != 1 {
		return httpapi.Forbidden("bad X-Gitlab-Token")
	}
	return nil
}

// accessEvent reports whether a delivery may change who has which access.
func accessEvent(flavour, kind string) bool {
	if flavour == forge.GitHub {
		switch kind {
		case "member", "membership", "organization", "team", "team_add", "repository":
			return true
		}
		return false
	}
	return kind == "Member Hook" || kind == "Subgroup Hook"
}

// post records an item and sends its notice. posted is false for a
// delivery seen before.
func (s *Service) post(ctx context.Context, roomID, delivery string, a *activity) (string, bool, error) {
	if len(a.summary) > maxSummary {
		a.summary = truncate(a.summary, maxSummary)
	}
	id, fresh, err := s.hs.DB.AddCommunityActivity(ctx, storage.CommunityActivity{RoomID: roomID, DeliveryID: delivery,
		Kind: a.kind, Actor: a.actor, Summary: a.summary, URL: a.url, CreatedTS: s.nowMS()})
	if err != nil || !fresh {
		return "", false, err
	}
	body := a.summary
	if a.url != "" {
		body += " " + a.url
	}
	content := map[string]any{"msgtype": "m.notice", "body": body,
		"dev.plaza.activity": map[string]any{"kind": a.kind, "actor": a.actor, "url": a.url}}
	res, err := s.hs.Rooms.Send(ctx, roomID, room.Request{Sender: s.bot, Type: "m.room.message", Content: mustJSON(content)})
	if err != nil {
		// Forget the item, so the redelivery the error asks for posts it.
		_ = s.hs.DB.DeleteCommunityActivity(context.WithoutCancel(ctx), id)
		return "", false, err
	}
	if err := s.hs.DB.SetCommunityActivityEvent(ctx, id, res.Event.ID()); err != nil {
		return "", false, err
	}
	return res.Event.ID(), true, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 1
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut-- // not inside a UTF-8 sequence
	}
	return s[:cut] + "…"
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
