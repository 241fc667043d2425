package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestEndReadsOnShutdown(t *testing.T) {
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	// The handler behaves like a /sync long-poll: it waits and, when its
	// context ends, returns without answering.
	h := endReadsOnShutdown(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
			w.WriteHeader(http.StatusNoContent)
		}
	}), stopping)

	results := map[string]chan int{http.MethodGet: make(chan int, 1), http.MethodPost: make(chan int, 1)}
	for method, result := range results {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, "/", nil))
			result <- rec.Code
		}()
	}
	<-entered
	<-entered
	stop()
	// The read ends at once, with a 503 that clients retry.
	if code := <-results[http.MethodGet]; code != http.StatusServiceUnavailable {
		t.Errorf("GET during shutdown: status %d, want 503", code)
	}
	// The write is left to finish.
	select {
	case code := <-results[http.MethodPost]:
		t.Fatalf("POST ended (status %d) before its handler was done", code)
	default:
	}
	close(release)
	if code := <-results[http.MethodPost]; code != http.StatusNoContent {
		t.Errorf("POST during shutdown: status %d, want 204", code)
	}
}

func TestBrowserURL(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:8008":   "http://localhost:8008",
		"[::]:8008":      "http://localhost:8008",
		"127.0.0.1:9000": "http://127.0.0.1:9000",
		"[::1]:9000":     "http://[::1]:9000",
	} {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := browserURL(tcp); got != want {
			t.Errorf("browserURL(%s) = %s, want %s", addr, got, want)
		}
	}
}
