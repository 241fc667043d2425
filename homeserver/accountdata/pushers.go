package accountdata

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
)

// Pushers are stored and listed here; package push delivers notifications
// to the http pushers' gateways.

// Limits the spec sets on a pusher's identifiers, and one of ours on the
// strings it leaves open.
const (
	maxAppIDLength   = 64
	maxPushkeyLength = 512
	maxPusherString  = 1024
	pushGatewayPath  = "/_matrix/push/v1/notify"
)

func (s *Service) pusherRoutes(r chi.Router) {
	r.Get("/pushers", s.getPushers)
	r.Post("/pushers/set", s.setPusher)
}

// pusherBody is the body of POST /pushers/set. kind is raw to tell an absent
// kind (an error) from a null one (a deletion).
type pusherBody struct {
	Kind              json.RawMessage `json:"kind"`
	AppID             *string         `json:"app_id"`
	Pushkey           *string         `json:"pushkey"`
	AppDisplayName    *string         `json:"app_display_name"`
	DeviceDisplayName *string         `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              *string         `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// pusherData is what the server reads of a pusher's data.
type pusherData struct {
	URL    *string `json:"url"`
	Format *string `json:"format"`
}

func (s *Service) setPusher(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	var b pusherBody
	if err := httpapi.Decode(r, &b); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if len(b.Kind) == 0 {
		httpapi.Fail(w, r, httpapi.MissingParam("kind is required"))
		return
	}
	if b.AppID == nil || b.Pushkey == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("app_id and pushkey are required"))
		return
	}
	if *b.AppID == "" || len(*b.AppID) > maxAppIDLength || !utf8.ValidString(*b.AppID) {
		httpapi.Fail(w, r, httpapi.InvalidParam("app_id must be 1 to %d characters", maxAppIDLength))
		return
	}
	if *b.Pushkey == "" || len(*b.Pushkey) > maxPushkeyLength || !utf8.ValidString(*b.Pushkey) {
		httpapi.Fail(w, r, httpapi.InvalidParam("pushkey must be 1 to %d bytes", maxPushkeyLength))
		return
	}
	if string(b.Kind) == "null" {
		if err := s.db.DeletePusher(r.Context(), rq.UserID, *b.AppID, *b.Pushkey); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		httpapi.Respond(w, http.StatusOK, map[string]any{})
		return
	}
	p, err := validatePusher(rq.UserID, &b)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	p.DeviceID = rq.DeviceID
	if err := s.db.SetPusher(r.Context(), p, b.Append); err != nil {
		if errors.Is(err, storage.ErrTooManyPushers) {
			err = httpapi.Custom(http.StatusBadRequest, "M_RESOURCE_LIMIT_EXCEEDED", "too many pushers; delete some first")
		}
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{})
}

// validatePusher checks a pusher to create or update.
func validatePusher(userID string, b *pusherBody) (storage.Pusher, error) {
	var kind string
	if err := json.Unmarshal(b.Kind, &kind); err != nil {
		return storage.Pusher{}, httpapi.InvalidParam("kind must be a string or null")
	}
	for name, v := range map[string]*string{"app_display_name": b.AppDisplayName, "device_display_name": b.DeviceDisplayName, "lang": b.Lang} {
		if v == nil {
			return storage.Pusher{}, httpapi.MissingParam("%s is required", name)
		}
		if len(*v) > maxPusherString || !utf8.ValidString(*v) {
			return storage.Pusher{}, httpapi.InvalidParam("%s is too long", name)
		}
	}
	if len(b.ProfileTag) > maxPusherString {
		return storage.Pusher{}, httpapi.InvalidParam("profile_tag is too long")
	}
	if len(b.Data) == 0 || string(b.Data) == "null" {
		return storage.Pusher{}, httpapi.MissingParam("data is required")
	}
	var data pusherData
	if b.Data[0] != '{' || json.Unmarshal(b.Data, &data) != nil {
		return storage.Pusher{}, httpapi.InvalidParam("data must be an object, with string url and format")
	}
	if data.Format != nil && *data.Format != "event_id_only" {
		return storage.Pusher{}, httpapi.InvalidParam("unknown data.format %q", *data.Format)
	}
	switch kind {
	case "http":
		if data.URL == nil {
			return storage.Pusher{}, httpapi.MissingParam("data.url is required for an http pusher")
		}
		// The spec wants HTTPS; plain HTTP is let through, as Synapse does,
		// for gateways on a private network.
		u, err := url.Parse(*data.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != pushGatewayPath {
			return storage.Pusher{}, httpapi.InvalidParam("data.url must be an HTTPS URL with the path %s", pushGatewayPath)
		}
	case "email":
		// An email pusher's push key must be an address bound to the
		// account; Plaza binds none (no third-party identifiers).
		return storage.Pusher{}, httpapi.Custom(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "no email address is bound to this account")
	default:
		return storage.Pusher{}, httpapi.InvalidParam("unknown pusher kind %q", kind)
	}
	return storage.Pusher{UserID: userID, AppID: *b.AppID, Pushkey: *b.Pushkey, Kind: kind,
		AppDisplayName: *b.AppDisplayName, DeviceDisplayName: *b.DeviceDisplayName, ProfileTag: b.ProfileTag,
		Lang: *b.Lang, Data: b.Data}, nil
}

func (s *Service) getPushers(w http.ResponseWriter, r *http.Request) {
	ps, err := s.db.Pushers(r.Context(), httpapi.RequesterFrom(r.Context()).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		m := map[string]any{"pushkey": p.Pushkey, "kind": p.Kind, "app_id": p.AppID, "app_display_name": p.AppDisplayName,
			"device_display_name": p.DeviceDisplayName, "lang": p.Lang, "data": json.RawMessage(p.Data)}
		if p.ProfileTag != "" {
			m["profile_tag"] = p.ProfileTag
		}
		out = append(out, m)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"pushers": out})
}
