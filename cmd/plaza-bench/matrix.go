package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// deviceID is reused by every bench login so that repeated runs do not pile
// up devices on the server. Transaction IDs carry the run ID, so reusing the
// device never makes the server treat a new send as a retransmission.
const deviceID = "PLAZABENCH"

// session is one logged-in user and device.
type session struct {
	c        *client
	UserID   string
	DeviceID string
	token    string

	txnPrefix string
	txn       atomic.Int64
}

type loginResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

func (c *client) newSession(lr loginResponse, runID string) (*session, error) {
	if lr.AccessToken == "" || lr.UserID == "" {
		return nil, fmt.Errorf("the server returned no user_id or access_token")
	}
	return &session{c: c, UserID: lr.UserID, DeviceID: lr.DeviceID, token: lr.AccessToken, txnPrefix: runID}, nil
}

// account registers localpart (with m.login.dummy auth), or logs in when
// registration is off or the user exists already.
func (c *client) account(ctx context.Context, localpart, password string, register bool, runID string) (*session, error) {
	if register {
		s, err := c.register(ctx, localpart, password, runID)
		if err == nil || !isErrcode(err, "M_USER_IN_USE") {
			return s, err
		}
	}
	return c.login(ctx, localpart, password, runID)
}

func (c *client) register(ctx context.Context, localpart, password, runID string) (*session, error) {
	body := map[string]any{
		"username":                    localpart,
		"password":                    password,
		"device_id":                   deviceID,
		"initial_device_display_name": "plaza-bench",
		"auth":                        map[string]any{"type": "m.login.dummy"},
	}
	var lr loginResponse
	r := request{method: "POST", path: clientAPI + "/register", query: url.Values{"kind": {"user"}}, body: body}
	err := c.doJSON(ctx, r, &lr)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		// User-interactive auth: the 401 hands out a session, and the dummy
		// stage must be completed inside it.
		session, flows, uerr := parseUIA(ae.raw)
		if uerr != nil {
			return nil, fmt.Errorf("register %s: %w", localpart, err)
		}
		if !dummyOnly(flows) {
			return nil, fmt.Errorf("register %s: the server requires auth flows %v, not just m.login.dummy; create the users yourself and run with --register=false", localpart, flows)
		}
		if session == "" {
			return nil, fmt.Errorf("register %s: %w (no user-interactive auth session to complete)", localpart, err)
		}
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
		err = c.doJSON(ctx, r, &lr)
	}
	if err != nil {
		if isErrcode(err, "M_FORBIDDEN") {
			return nil, fmt.Errorf("register %s: %w (registration looks closed; create the users yourself and run with --register=false)", localpart, err)
		}
		if isErrcode(err, "M_USER_IN_USE") {
			return nil, err
		}
		return nil, fmt.Errorf("register %s: %w", localpart, err)
	}
	return c.newSession(lr, runID)
}

// parseUIA reads the session and flows of a user-interactive auth answer.
func parseUIA(body []byte) (string, [][]string, error) {
	var uia struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	if err := json.Unmarshal(body, &uia); err != nil {
		return "", nil, err
	}
	var flows [][]string
	for _, f := range uia.Flows {
		flows = append(flows, f.Stages)
	}
	return uia.Session, flows, nil
}

func dummyOnly(flows [][]string) bool {
	for _, f := range flows {
		if len(f) == 1 && f[0] == "m.login.dummy" {
			return true
		}
	}
	return false
}

func (c *client) login(ctx context.Context, localpart, password, runID string) (*session, error) {
	body := map[string]any{
		"type":                        "m.login.password",
		"identifier":                  map[string]any{"type": "m.id.user", "user": localpart},
		"password":                    password,
		"device_id":                   deviceID,
		"initial_device_display_name": "plaza-bench",
	}
	var lr loginResponse
	if err := c.doJSON(ctx, request{method: "POST", path: clientAPI + "/login", body: body}, &lr); err != nil {
		return nil, fmt.Errorf("log in as %s: %w", localpart, err)
	}
	return c.newSession(lr, runID)
}

func (s *session) req(method, path string, body any) request {
	return request{method: method, path: clientAPI + path, token: s.token, body: body}
}

func (s *session) createRoom(ctx context.Context, name string) (string, error) {
	body := map[string]any{
		"preset":     "public_chat",
		"visibility": "private", // not listed in the room directory
		"name":       name,
	}
	var out struct {
		RoomID string `json:"room_id"`
	}
	if err := s.c.doJSON(ctx, s.req("POST", "/createRoom", body), &out); err != nil {
		return "", fmt.Errorf("%s: create room: %w", s.UserID, err)
	}
	if out.RoomID == "" {
		return "", fmt.Errorf("%s: create room: no room_id in the response", s.UserID)
	}
	return out.RoomID, nil
}

func (s *session) join(ctx context.Context, roomID string) error {
	if err := s.c.doJSON(ctx, s.req("POST", "/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{}), nil); err != nil {
		return fmt.Errorf("%s: join %s: %w", s.UserID, roomID, err)
	}
	return nil
}

func (s *session) leave(ctx context.Context, roomID string) error {
	if err := s.c.doJSON(ctx, s.req("POST", "/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{}), nil); err != nil {
		return fmt.Errorf("%s: leave %s: %w", s.UserID, roomID, err)
	}
	return nil
}

func (s *session) joinedRooms(ctx context.Context) ([]string, error) {
	var out struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	if err := s.c.doJSON(ctx, s.req("GET", "/joined_rooms", nil), &out); err != nil {
		return nil, fmt.Errorf("%s: joined rooms: %w", s.UserID, err)
	}
	return out.JoinedRooms, nil
}

// nextTxnID is unique per device across runs: the run ID plus a counter.
func (s *session) nextTxnID() string {
	return s.txnPrefix + "." + strconv.FormatInt(s.txn.Add(1), 10)
}

func (s *session) sendMessage(ctx context.Context, roomID string, content any) (string, error) {
	path := "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(s.nextTxnID())
	var out struct {
		EventID string `json:"event_id"`
	}
	if err := s.c.doJSON(ctx, s.req("PUT", path, content), &out); err != nil {
		return "", fmt.Errorf("%s: send to %s: %w", s.UserID, roomID, err)
	}
	return out.EventID, nil
}

func statePath(roomID, eventType, stateKey string) string {
	return "/rooms/" + url.PathEscape(roomID) + "/state/" + url.PathEscape(eventType) + "/" + url.PathEscape(stateKey)
}

func (s *session) putState(ctx context.Context, roomID, eventType, stateKey string, content any) error {
	if err := s.c.doJSON(ctx, s.req("PUT", statePath(roomID, eventType, stateKey), content), nil); err != nil {
		return fmt.Errorf("%s: set %s state in %s: %w", s.UserID, eventType, roomID, err)
	}
	return nil
}

// getState fetches one state event's content; found is false on 404.
func (s *session) getState(ctx context.Context, roomID, eventType, stateKey string, out any) (found bool, err error) {
	err = s.c.doJSON(ctx, s.req("GET", statePath(roomID, eventType, stateKey), nil), out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: get %s state in %s: %w", s.UserID, eventType, roomID, err)
	}
	return true, nil
}

// syncParams are the query parameters of one /sync call.
type syncParams struct {
	since   string
	filter  string // inline filter JSON, or empty for the server default
	timeout time.Duration
}

// sync returns the raw /sync answer; callers decode only what they need.
func (s *session) sync(ctx context.Context, p syncParams) (*response, error) {
	q := url.Values{}
	if p.since != "" {
		q.Set("since", p.since)
	}
	if p.filter != "" {
		q.Set("filter", p.filter)
	}
	q.Set("timeout", strconv.FormatInt(p.timeout.Milliseconds(), 10))
	r := s.req("GET", "/sync", nil)
	r.query, r.extra = q, p.timeout
	resp, err := s.c.do(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("%s: sync: %w", s.UserID, err)
	}
	return resp, nil
}

// messagesPage is one page of /rooms/{roomId}/messages.
type messagesPage struct {
	Chunk []syncEvent `json:"chunk"`
	Start string      `json:"start"`
	End   string      `json:"end"`
}

func (s *session) messages(ctx context.Context, roomID, from, to, dir string, limit int, filter string) (*messagesPage, error) {
	q := url.Values{"dir": {dir}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	r := s.req("GET", "/rooms/"+url.PathEscape(roomID)+"/messages", nil)
	r.query = q
	var page messagesPage
	if err := s.c.doJSON(ctx, r, &page); err != nil {
		return nil, fmt.Errorf("%s: messages in %s: %w", s.UserID, roomID, err)
	}
	return &page, nil
}

// syncResponse is the part of a /sync answer the scenarios read.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events    []syncEvent `json:"events"`
				Limited   bool        `json:"limited"`
				PrevBatch string      `json:"prev_batch"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type syncEvent struct {
	EventID string       `json:"event_id"`
	Type    string       `json:"type"`
	Sender  string       `json:"sender"`
	Content benchContent `json:"content"`
}

// benchContent is the content of a message plaza-bench sends. The bench_*
// fields let receivers recognise the run's messages and time their delivery.
type benchContent struct {
	MsgType string `json:"msgtype"`
	Body    string `json:"body"`
	Run     string `json:"bench_run,omitempty"`
	Seq     *int64 `json:"bench_seq,omitempty"`
	// TS is when the send request was issued, in nanoseconds on the
	// process's monotonic clock (meaningful only inside the same run).
	TS int64 `json:"bench_ts,omitempty"`
}
