package sync

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"plaza/homeserver/clientapi"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
)

// Filter is the spec's sync filter.
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence"`
	AccountData EventFilter `json:"account_data"`
	Room        RoomFilter  `json:"room"`
}

// EventFilter filters non-room events.
type EventFilter struct {
	Limit      int      `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomFilter filters the rooms section.
type RoomFilter struct {
	Rooms        []string                  `json:"rooms,omitempty"`
	NotRooms     []string                  `json:"not_rooms,omitempty"`
	IncludeLeave bool                      `json:"include_leave,omitempty"`
	Timeline     clientapi.RoomEventFilter `json:"timeline"`
	State        clientapi.RoomEventFilter `json:"state"`
	Ephemeral    clientapi.RoomEventFilter `json:"ephemeral"`
	AccountData  clientapi.RoomEventFilter `json:"account_data"`
}

// maxFilterSize bounds stored filters.
const maxFilterSize = 64 << 10

// parseFilter validates a filter definition.
func parseFilter(data []byte) (*Filter, error) {
	f := &Filter{}
	if err := httpapi.Unmarshal(data, f); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, httpapi.BadJSON("event_format must be client or federation")
	}
	for _, lim := range []int{f.Room.Timeline.Limit, f.Room.State.Limit, f.Presence.Limit, f.AccountData.Limit} {
		if lim < 0 {
			return nil, httpapi.BadJSON("limits must not be negative")
		}
	}
	return f, nil
}

// loadFilter resolves the sync filter parameter: a stored filter ID or an
// inline JSON definition.
//
// Parsed filters are cached by user and parameter: clients send the same one
// with every sync, and stored filters never change. Cached filters are
// shared and must not be modified.
func (s *Service) loadFilter(ctx context.Context, userID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	key := userID + "\x00" + param
	s.mu.Lock()
	f, ok := s.filters[key]
	s.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := s.parseFilterParam(ctx, userID, param)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.filters) >= maxCachedFilters {
		clear(s.filters)
	}
	s.filters[key] = f
	s.mu.Unlock()
	return f, nil
}

// maxCachedFilters bounds the parsed-filter cache; past it, it starts over.
const maxCachedFilters = 100_000

func (s *Service) parseFilterParam(ctx context.Context, userID, param string) (*Filter, error) {
	if strings.HasPrefix(param, "{") {
		return parseFilter([]byte(param))
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, httpapi.InvalidParam("filter must be a filter ID or a JSON filter")
	}
	data, err := s.db.Filter(ctx, userID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no such filter")
	}
	if err != nil {
		return nil, err
	}
	return parseFilter(data)
}

func (s *Service) createFilter(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	if httpapi.PathParam(r, "userID") != rq.UserID {
		httpapi.Fail(w, r, httpapi.Forbidden("you can only create filters for yourself"))
		return
	}
	body, err := httpapi.ReadBody(r, maxFilterSize)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if _, err := parseFilter(body); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	id, err := s.db.CreateFilter(r.Context(), rq.UserID, body)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"filter_id": strconv.FormatInt(id, 10)})
}

func (s *Service) getFilter(w http.ResponseWriter, r *http.Request) {
	rq := httpapi.RequesterFrom(r.Context())
	if httpapi.PathParam(r, "userID") != rq.UserID {
		httpapi.Fail(w, r, httpapi.Forbidden("you can only read your own filters"))
		return
	}
	id, err := strconv.ParseInt(httpapi.PathParam(r, "filterID"), 10, 64)
	if err != nil {
		httpapi.Fail(w, r, httpapi.NotFound("no such filter"))
		return
	}
	data, err := s.db.Filter(r.Context(), rq.UserID, id)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("no such filter"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.RespondRaw(w, http.StatusOK, json.RawMessage(data))
}
