package e2ee

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// PUT /sendToDevice/{eventType}/{txnID}
//
// All messages of a request share one stream position, written in one
// transaction together with the transaction ID, so a retried request is
// recognised however the first attempt ended, and no recipient sees half a
// request.
func (s *Service) sendToDevice(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	evType, txnID := httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "txnID")
	if evType == "" || len(evType) > 255 {
		httpapi.Fail(w, r, httpapi.InvalidParam("the event type must be 1 to 255 bytes"))
		return
	}
	if txnID == "" || len(txnID) > 255 {
		httpapi.Fail(w, r, httpapi.InvalidParam("the transaction ID must be 1 to 255 bytes"))
		return
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpapi.DecodeLimit(r, &req, maxToDeviceBody); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.Messages == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("messages is required"))
		return
	}
	var local []storage.ToDeviceTarget
	var localUsers []string
	remote := map[string]map[string]map[string]json.RawMessage{}
	n := 0
	for u, devices := range req.Messages {
		uid, err := id.ParseUserID(u)
		if err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("messages: %q is not a user ID", u))
			return
		}
		if n += len(devices); n > maxToDeviceMessages {
			httpapi.Fail(w, r, httpapi.TooLarge("at most %d messages per request", maxToDeviceMessages))
			return
		}
		for dev, content := range devices {
			if dev == "" || len(dev) > 255 {
				httpapi.Fail(w, r, httpapi.InvalidParam("messages.%s: device IDs are 1 to 255 bytes, or *", u))
				return
			}
			if len(content) == 0 || content[0] != '{' {
				httpapi.Fail(w, r, httpapi.BadJSON("messages.%s.%s must be an object", u, dev))
				return
			}
			if len(content) > maxToDeviceContent {
				httpapi.Fail(w, r, httpapi.TooLarge("messages.%s.%s is larger than %d bytes", u, dev, maxToDeviceContent))
				return
			}
			if s.isLocal(u) {
				local = append(local, storage.ToDeviceTarget{UserID: u, DeviceID: dev, Content: content})
				continue
			}
			if remote[uid.ServerName] == nil {
				remote[uid.ServerName] = map[string]map[string]json.RawMessage{}
			}
			if remote[uid.ServerName][u] == nil {
				remote[uid.ServerName][u] = map[string]json.RawMessage{}
			}
			remote[uid.ServerName][u][dev] = content
		}
		if s.isLocal(u) && len(devices) > 0 {
			localUsers = append(localUsers, u)
		}
	}

	pos := s.tracker.Reserve()
	defer s.tracker.Complete(pos)
	duplicate, err := s.db.SendToDevice(ctx, rq.UserID, rq.DeviceID, txnID, evType, local, pos, s.now().UnixMilli())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if duplicate {
		httpapi.Respond(w, http.StatusOK, struct{}{})
		return
	}
	for _, u := range localUsers {
		s.notifier.NotifyUser(u, pos)
	}
	// Remote recipients are best effort until federation queues exist:
	// the request has succeeded for the local ones either way.
	for server, msgs := range remote {
		if s.cfg.Federation == nil {
			slog.DebugContext(ctx, "e2ee: dropping to-device messages to a remote server (no federation)", "server", server)
			continue
		}
		if err := s.cfg.Federation.SendToDevice(ctx, server, rq.UserID, evType, msgs); err != nil {
			slog.WarnContext(ctx, "e2ee: queueing to-device messages for a remote server", "server", server, "err", err)
		}
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}
