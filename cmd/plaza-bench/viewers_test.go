package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// peekHandler adds to the fake homeserver what the peek and viewers
// scenarios read: guest registration, initialSync, room_summary, a room page
// and a live SSE stream of the room's events from the moment of connection.
// dropEvery > 0 makes every dropEvery-th stream miss the room's messages.
func (f *fakeHS) peekHandler(dropEvery int) http.Handler {
	base := f.handler()
	mux := http.NewServeMux()
	mux.Handle("/", base)
	mux.HandleFunc("POST /_matrix/client/v3/register", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("kind") != "guest" {
			base.ServeHTTP(w, r)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		token := fmt.Sprintf("guest%d", len(f.tokens))
		f.tokens[token] = "@" + token + ":fake"
		writeJSON(w, 200, map[string]string{"user_id": f.tokens[token], "access_token": token, "device_id": "G"})
	})
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{room}/initialSync", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		_, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		f.mu.Unlock()
		if !ok {
			matrixErr(w, 401, "M_MISSING_TOKEN")
			return
		}
		writeJSON(w, 200, map[string]any{"room_id": r.PathValue("room"), "messages": map[string]any{"chunk": []any{}}})
	})
	mux.HandleFunc("GET /_matrix/client/v1/room_summary/{room}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"room_id": r.PathValue("room"), "num_joined_members": 1})
	})
	mux.HandleFunc("GET /room/{room}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>" + r.PathValue("room") + "</html>"))
	})
	streams := 0
	mux.HandleFunc("GET /_plaza/rooms/{room}/live", func(w http.ResponseWriter, r *http.Request) {
		room := r.PathValue("room")
		f.mu.Lock()
		next := len(f.events)
		streams++
		drops := dropEvery > 0 && streams%dropEvery == 0
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			f.mu.Lock()
			wake := f.wake
			var out bytes.Buffer
			for ; next < len(f.events); next++ {
				ev := f.events[next]
				if ev.Room != room || (drops && ev.Type == "m.room.message") {
					continue
				}
				// Long lines, as rendered HTML makes them: the reader
				// must cope with lines longer than its buffer.
				b, _ := json.Marshal(map[string]any{"event_id": ev.EventID, "html": strings.Repeat("x", 6000), "event": ev})
				fmt.Fprintf(&out, "id: %d\ndata: %s\n\n", next+1, b)
			}
			f.mu.Unlock()
			if out.Len() > 0 {
				if _, err := w.Write(out.Bytes()); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			select {
			case <-wake:
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

func TestPeekAndViewersAgainstFakeHomeserver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scenarios for a few seconds")
	}
	run1 := func(t *testing.T, srv *httptest.Server, args ...string) (*report, int, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"--url", srv.URL, "--users-prefix", "t", "--json", "--timeout", "10s", "--max-time", "1m"}, args...)
		code := run(t.Context(), args, &stdout, &stderr)
		var rep report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not a JSON report: %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
		return &rep, code, stderr.String()
	}
	newRoom := func(t *testing.T, hs *fakeHS) string {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		room := fmt.Sprintf("!r%d:fake", len(hs.members))
		hs.members[room] = map[string]bool{}
		return room
	}

	t.Run("viewers", func(t *testing.T) {
		hs := newFakeHS(0)
		srv := httptest.NewServer(hs.peekHandler(0))
		defer srv.Close()
		room := newRoom(t, hs)
		rep, code, stderr := run1(t, srv, "viewers", "--room", room, "--viewers", "20", "--rate", "20", "--duration", "500ms")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		v := rep.Scenarios[0].Viewers
		if v == nil || v.Connected != 20 || v.Sent != 10 || v.Expected != 200 || v.Delivered != 200 || v.Missed != 0 ||
			v.Latency.Count != 200 || v.Latency.P99MS <= 0 || v.Latency.P99MS < v.Latency.P50MS {
			t.Fatalf("viewers result %+v", v)
		}
	})

	t.Run("viewers count misses", func(t *testing.T) {
		hs := newFakeHS(0)
		srv := httptest.NewServer(hs.peekHandler(5))
		defer srv.Close()
		room := newRoom(t, hs)
		rep, code, _ := run1(t, srv, "viewers", "--room", room, "--viewers", "10", "--rate", "20", "--duration", "250ms")
		v := rep.Scenarios[0].Viewers
		if code != 1 || v == nil || v.Sent != 5 || v.Missed != 2*5 || v.Delivered != 8*5 {
			t.Fatalf("exit %d, result %+v: want exit 1 and 10 misses", code, v)
		}
	})

	t.Run("idle-viewers", func(t *testing.T) {
		hs := newFakeHS(0)
		srv := httptest.NewServer(hs.peekHandler(0))
		defer srv.Close()
		room := newRoom(t, hs)
		rep, code, stderr := run1(t, srv, "idle-viewers", "--room", room, "--viewers", "50", "--hold", "100ms")
		if code != 0 || rep.Scenarios[0].Viewers == nil || rep.Scenarios[0].Viewers.Connected != 50 || rep.Scenarios[0].Viewers.Dropped != 0 {
			t.Fatalf("exit %d %s: %+v", code, stderr, rep.Scenarios[0].Viewers)
		}
	})

	t.Run("peek", func(t *testing.T) {
		hs := newFakeHS(0)
		srv := httptest.NewServer(hs.peekHandler(0))
		defer srv.Close()
		room := newRoom(t, hs)
		rep, code, stderr := run1(t, srv, "peek", "--room", room, "--iterations", "20", "--page", "/room/{room}",
			"--restart", "true", "--cold-runs", "2")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		p := rep.Scenarios[0].Peek
		if p == nil || len(p.Endpoints) != 3 {
			t.Fatalf("peek result %+v", p)
		}
		for _, e := range p.Endpoints {
			if e.Warm.Count != 20 || e.Cold.Count != 2 || e.Bytes == 0 {
				t.Errorf("endpoint %+v", e)
			}
		}
	})
}
