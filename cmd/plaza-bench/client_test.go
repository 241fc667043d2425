package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClient points a client at srv and records the waits it would sleep.
func testClient(t *testing.T, srv *httptest.Server) (*client, *[]time.Duration) {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(u, 5*time.Second)
	t.Cleanup(c.close)
	var mu sync.Mutex
	waits := &[]time.Duration{}
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		*waits = append(*waits, d)
		return ctx.Err()
	}
	return c, waits
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header string
		body   string
		want   time.Duration
	}{
		{"retry_after_ms", "", `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}`, 1500 * time.Millisecond},
		{"body wins over header", "7", `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":250}`, 250 * time.Millisecond},
		{"Retry-After seconds", "2", `{"errcode":"M_LIMIT_EXCEEDED"}`, 2 * time.Second},
		{"no hint", "", `{"errcode":"M_LIMIT_EXCEEDED"}`, defaultRetryWait},
		{"not JSON", "", `slow down`, defaultRetryWait},
		{"zero", "", `{"retry_after_ms":0}`, 0},
		{"capped", "", `{"retry_after_ms":3600000}`, 10 * time.Second},
		{"negative ignored", "", `{"retry_after_ms":-5}`, defaultRetryWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("Retry-After", tt.header)
			}
			if got := retryAfter(h, []byte(tt.body), 10*time.Second); got != tt.want {
				t.Errorf("retryAfter = %v, want %v", got, tt.want)
			}
		})
	}
}

// The client waits out 429 answers as told, resends the same request, counts
// the rate limiting, and returns the eventual success.
func TestClientRetriesRateLimited(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		switch n {
		case 1:
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":1500}`)
		case 2:
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests"}`)
		default:
			io.WriteString(w, `{"event_id":"$abc"}`)
		}
	}))
	defer srv.Close()
	c, waits := testClient(t, srv)

	var out struct {
		EventID string `json:"event_id"`
	}
	err := c.doJSON(context.Background(), request{method: "PUT", path: "/_matrix/client/v3/rooms/x/send/m.room.message/t1", body: map[string]string{"body": "hi"}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.EventID != "$abc" {
		t.Errorf("event_id = %q", out.EventID)
	}
	if got, want := *waits, []time.Duration{1500 * time.Millisecond, 3 * time.Second}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("waits = %v, want %v", got, want)
	}
	if got := c.rateLimited.Load(); got != 2 {
		t.Errorf("rateLimited = %d, want 2", got)
	}
	if got := c.requests.Load(); got != 3 {
		t.Errorf("requests = %d, want 3", got)
	}
	for _, b := range bodies {
		if b != `{"body":"hi"}` {
			t.Errorf("a retry sent body %q", b)
		}
	}
}

func TestClientGivesUpAfterMaxRetries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":10}`)
	}))
	defer srv.Close()
	c, waits := testClient(t, srv)
	c.maxRetries = 3
	err := c.doJSON(context.Background(), request{method: "GET", path: "/_matrix/client/v3/sync"}, nil)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != 429 || ae.Errcode != "M_LIMIT_EXCEEDED" {
		t.Fatalf("err = %v, want a 429 M_LIMIT_EXCEEDED apiError", err)
	}
	if len(*waits) != 3 || c.rateLimited.Load() != 3 {
		t.Errorf("waited %d times, counted %d; want 3 and 3", len(*waits), c.rateLimited.Load())
	}
}

func TestClientWaitStopsOnCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":60000}`)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := newClient(u, 5*time.Second) // the real sleep
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.doJSON(ctx, request{method: "GET", path: "/_matrix/client/v3/sync"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Error("the rate-limit wait ignored cancellation")
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		want   []string
	}{
		{"matrix error", 403, nil, `{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}`,
			[]string{"PUT /_matrix/client/v3/x: HTTP 403 M_FORBIDDEN: You are not invited to this room."}},
		{"plain body", 502, nil, `Bad Gateway`, []string{"HTTP 502", `"Bad Gateway"`}},
		{"redirect not followed", 302, map[string]string{"Location": "https://elsewhere.example/"}, ``,
			[]string{"HTTP 302", "https://elsewhere.example/", "not followed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c, _ := testClient(t, srv)
			err := c.doJSON(context.Background(), request{method: "PUT", path: "/_matrix/client/v3/x", body: map[string]any{}}, nil)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if c.rateLimited.Load() != 0 {
				t.Error("a non-429 error was counted as rate limiting")
			}
		})
	}
}

// Registration completes the dummy stage inside the session the server's
// 401 hands out, and falls back to login for an existing user.
func TestAccountRegistersOrLogsIn(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		mu.Lock()
		calls = append(calls, r.URL.Path)
		mu.Unlock()
		switch {
		case r.URL.Path == "/_matrix/client/v3/register" && strings.Contains(body, `"taken"`):
			w.WriteHeader(400)
			io.WriteString(w, `{"errcode":"M_USER_IN_USE","error":"User ID already taken."}`)
		case r.URL.Path == "/_matrix/client/v3/register" && !strings.Contains(body, `"session":"S1"`):
			w.WriteHeader(401)
			io.WriteString(w, `{"session":"S1","flows":[{"stages":["m.login.dummy"]}],"params":{}}`)
		case r.URL.Path == "/_matrix/client/v3/register":
			io.WriteString(w, `{"user_id":"@new:hs","access_token":"tok1","device_id":"PLAZABENCH"}`)
		case r.URL.Path == "/_matrix/client/v3/login" && strings.Contains(body, `"m.login.password"`):
			io.WriteString(w, `{"user_id":"@taken:hs","access_token":"tok2","device_id":"PLAZABENCH"}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"no"}`)
		}
	}))
	defer srv.Close()
	c, _ := testClient(t, srv)
	ctx := context.Background()

	s, err := c.account(ctx, "new", "pw", true, "run1")
	if err != nil || s.UserID != "@new:hs" || s.token != "tok1" {
		t.Fatalf("register new: %v, %+v", err, s)
	}
	s, err = c.account(ctx, "taken", "pw", true, "run1")
	if err != nil || s.UserID != "@taken:hs" || s.token != "tok2" {
		t.Fatalf("register taken: %v, %+v", err, s)
	}
	mu.Lock()
	calls = nil
	mu.Unlock()
	if _, err := c.account(ctx, "taken", "pw", false, "run1"); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != "/_matrix/client/v3/login" {
		t.Errorf("--register=false made calls %v, want only /login", calls)
	}
	if got, want := s.nextTxnID(), "run1.1"; got != want {
		t.Errorf("first txn ID = %q, want %q", got, want)
	}
}

func TestRegisterExplainsUnsupportedFlows(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		io.WriteString(w, `{"session":"S","flows":[{"stages":["m.login.recaptcha","m.login.email.identity"]}]}`)
	}))
	defer srv.Close()
	c, _ := testClient(t, srv)
	_, err := c.account(context.Background(), "u", "pw", true, "r")
	if err == nil || !strings.Contains(err.Error(), "--register=false") || !strings.Contains(err.Error(), "m.login.recaptcha") {
		t.Errorf("err = %v, want a hint naming the flows and --register=false", err)
	}
}
