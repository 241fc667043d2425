package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHS is just enough of a homeserver for short runs of the scenarios:
// registration (with a user-interactive dummy stage) and login, rooms, joins
// and leaves, sends with transaction IDs, state for the seed marker, /sync
// long polls over one global stream, and /messages for backfilling limited
// timelines. Stream tokens are positions. No auth rules, no state
// resolution, no room history visibility.
type fakeHS struct {
	mu       sync.Mutex
	users    map[string]bool   // user IDs
	tokens   map[string]string // access token → user ID
	members  map[string]map[string]bool
	state    map[string]json.RawMessage // room|type|key → content
	events   []fakeEvent                // the stream; an event's position is its index + 1
	txns     map[string]string
	wake     chan struct{} // closed and replaced on every new event
	throttle int           // answer this many sends with 429 first
	limited  int           // 429 answers given
}

type fakeEvent struct {
	Room    string          `json:"-"`
	EventID string          `json:"event_id"`
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

func newFakeHS(throttle int) *fakeHS {
	return &fakeHS{
		users: map[string]bool{}, tokens: map[string]string{}, members: map[string]map[string]bool{}, state: map[string]json.RawMessage{},
		txns: map[string]string{}, wake: make(chan struct{}), throttle: throttle,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func matrixErr(w http.ResponseWriter, status int, errcode string) {
	writeJSON(w, status, map[string]string{"errcode": errcode, "error": errcode})
}

// appendLocked adds an event to the stream; f.mu must be held.
func (f *fakeHS) appendLocked(room, typ, sender string, content any) string {
	raw, _ := json.Marshal(content)
	id := fmt.Sprintf("$e%d", len(f.events)+1)
	f.events = append(f.events, fakeEvent{Room: room, EventID: id, Type: typ, Sender: sender, Content: raw})
	close(f.wake)
	f.wake = make(chan struct{})
	return id
}

func (f *fakeHS) handler() http.Handler {
	mux := http.NewServeMux()
	const p = "/_matrix/client/v3"
	auth := func(h func(w http.ResponseWriter, r *http.Request, user string)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			user, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
			f.mu.Unlock()
			if !ok {
				matrixErr(w, 401, "M_UNKNOWN_TOKEN")
				return
			}
			h(w, r, user)
		}
	}
	mux.HandleFunc("GET /_matrix/client/versions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"versions": []string{"v1.11"}})
	})
	mux.HandleFunc("POST "+p+"/register", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Username string `json:"username"`
			Auth     struct {
				Session string `json:"session"`
			} `json:"auth"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Auth.Session != "uia" {
			writeJSON(w, 401, map[string]any{"session": "uia", "flows": []any{map[string]any{"stages": []string{"m.login.dummy"}}}})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		user := "@" + req.Username + ":fake"
		if f.users[user] {
			matrixErr(w, 400, "M_USER_IN_USE")
			return
		}
		f.users[user] = true
		token := fmt.Sprintf("tok%d", len(f.tokens))
		f.tokens[token] = user
		writeJSON(w, 200, map[string]string{"user_id": user, "access_token": token, "device_id": "D"})
	})
	mux.HandleFunc("POST "+p+"/login", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Identifier struct {
				User string `json:"user"`
			} `json:"identifier"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		user := "@" + req.Identifier.User + ":fake"
		if !f.users[user] {
			matrixErr(w, 403, "M_FORBIDDEN")
			return
		}
		token := fmt.Sprintf("tok%d", len(f.tokens))
		f.tokens[token] = user
		writeJSON(w, 200, map[string]string{"user_id": user, "access_token": token, "device_id": "D"})
	})
	mux.HandleFunc("POST "+p+"/createRoom", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		room := fmt.Sprintf("!r%d:fake", len(f.members))
		f.members[room] = map[string]bool{user: true}
		f.appendLocked(room, "m.room.create", user, map[string]string{"creator": user})
		writeJSON(w, 200, map[string]string{"room_id": room})
	}))
	mux.HandleFunc("POST "+p+"/rooms/{room}/join", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		room := r.PathValue("room")
		if f.members[room] == nil {
			matrixErr(w, 404, "M_NOT_FOUND")
			return
		}
		f.members[room][user] = true
		f.appendLocked(room, "m.room.member", user, map[string]string{"membership": "join"})
		writeJSON(w, 200, map[string]string{"room_id": room})
	}))
	mux.HandleFunc("POST "+p+"/rooms/{room}/leave", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.members[r.PathValue("room")], user)
		writeJSON(w, 200, map[string]any{})
	}))
	mux.HandleFunc("GET "+p+"/joined_rooms", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		rooms := []string{}
		for room, m := range f.members {
			if m[user] {
				rooms = append(rooms, room)
			}
		}
		writeJSON(w, 200, map[string]any{"joined_rooms": rooms})
	}))
	mux.HandleFunc("PUT "+p+"/rooms/{room}/state/{type}/{key}", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		var content json.RawMessage
		json.NewDecoder(r.Body).Decode(&content)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.state[r.PathValue("room")+"|"+r.PathValue("type")+"|"+r.PathValue("key")] = content
		writeJSON(w, 200, map[string]string{"event_id": f.appendLocked(r.PathValue("room"), r.PathValue("type"), user, content)})
	}))
	mux.HandleFunc("GET "+p+"/rooms/{room}/state/{type}/{key}", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		content, ok := f.state[r.PathValue("room")+"|"+r.PathValue("type")+"|"+r.PathValue("key")]
		if !ok {
			matrixErr(w, 404, "M_NOT_FOUND")
			return
		}
		writeJSON(w, 200, content)
	}))
	mux.HandleFunc("PUT "+p+"/rooms/{room}/send/{type}/{txn}", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		var content map[string]any
		if err := json.NewDecoder(r.Body).Decode(&content); err != nil {
			matrixErr(w, 400, "M_NOT_JSON")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.limited < f.throttle {
			f.limited++
			writeJSON(w, 429, map[string]any{"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 5})
			return
		}
		room := r.PathValue("room")
		if !f.members[room][user] {
			matrixErr(w, 403, "M_FORBIDDEN")
			return
		}
		key := user + "|" + r.PathValue("txn")
		id, ok := f.txns[key]
		if !ok {
			id = f.appendLocked(room, r.PathValue("type"), user, content)
			f.txns[key] = id
		}
		writeJSON(w, 200, map[string]string{"event_id": id})
	}))
	mux.HandleFunc("GET "+p+"/sync", auth(f.sync))
	mux.HandleFunc("GET "+p+"/rooms/{room}/messages", auth(func(w http.ResponseWriter, r *http.Request, user string) {
		q := r.URL.Query()
		from, _ := strconv.Atoi(q.Get("from"))
		to, _ := strconv.Atoi(q.Get("to"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		if q.Get("dir") != "b" {
			matrixErr(w, 400, "M_INVALID_PARAM")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		chunk := []fakeEvent{}
		pos := min(from, len(f.events))
		for ; pos > to && len(chunk) < limit; pos-- {
			if ev := f.events[pos-1]; ev.Room == r.PathValue("room") {
				chunk = append(chunk, ev)
			}
		}
		out := map[string]any{"chunk": chunk, "start": strconv.Itoa(from)}
		if pos > to {
			out["end"] = strconv.Itoa(pos)
		}
		writeJSON(w, 200, out)
	}))
	return mux
}

// sync answers from the stream after since. A long poll returns once new
// events have piled up for a moment, so that a small timeline limit leaves
// gaps for the client to backfill.
func (f *fakeHS) sync(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	since, _ := strconv.Atoi(q.Get("since"))
	timeout, _ := strconv.Atoi(q.Get("timeout"))
	var filter struct {
		Room struct {
			Rooms    []string `json:"rooms"`
			Timeline struct {
				Limit int `json:"limit"`
			} `json:"timeline"`
		} `json:"room"`
	}
	if s := q.Get("filter"); s != "" {
		if err := json.Unmarshal([]byte(s), &filter); err != nil {
			matrixErr(w, 400, "M_INVALID_PARAM")
			return
		}
	}
	limit := filter.Room.Timeline.Limit
	if limit <= 0 {
		limit = 10
	}
	visible := func(ev fakeEvent) bool {
		if len(filter.Room.Rooms) > 0 && !containsString(filter.Room.Rooms, ev.Room) {
			return false
		}
		return f.members[ev.Room][user]
	}
	deadline := time.After(time.Duration(timeout) * time.Millisecond)
	for settled := false; ; {
		f.mu.Lock()
		fresh := false
		for _, ev := range f.events[min(since, len(f.events)):] {
			fresh = fresh || visible(ev)
		}
		wake := f.wake
		f.mu.Unlock()
		if fresh && settled || since == 0 || timeout == 0 {
			break
		}
		if fresh {
			settled = true
			time.Sleep(20 * time.Millisecond)
			continue
		}
		select {
		case <-wake:
		case <-deadline:
			settled, timeout = true, 0
		case <-r.Context().Done():
			return
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	type timeline struct {
		Events    []fakeEvent `json:"events"`
		Limited   bool        `json:"limited"`
		PrevBatch string      `json:"prev_batch"`
	}
	byRoom := map[string][]int{} // positions
	for pos := since + 1; pos <= len(f.events); pos++ {
		if ev := f.events[pos-1]; visible(ev) {
			byRoom[ev.Room] = append(byRoom[ev.Room], pos)
		}
	}
	join := map[string]any{}
	for room, positions := range byRoom {
		tl := timeline{Limited: len(positions) > limit}
		positions = positions[max(0, len(positions)-limit):]
		tl.PrevBatch = strconv.Itoa(positions[0] - 1)
		for _, pos := range positions {
			tl.Events = append(tl.Events, f.events[pos-1])
		}
		join[room] = map[string]any{"timeline": tl}
	}
	writeJSON(w, 200, map[string]any{"next_batch": strconv.Itoa(len(f.events)), "rooms": map[string]any{"join": join}})
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestScenariosAgainstFakeHomeserver runs short send and deliver scenarios
// end to end through run, as the command would, and reads the JSON report.
func TestScenariosAgainstFakeHomeserver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scenarios for a few seconds")
	}
	hs := newFakeHS(3)
	srv := httptest.NewServer(hs.handler())
	defer srv.Close()

	runJSON := func(t *testing.T, args ...string) (*report, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"--url", srv.URL, "--users-prefix", "t", "--json", "--timeout", "10s", "--max-time", "2m"}, args...)
		code := run(t.Context(), args, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("plaza-bench %v: exit %d\nstderr:\n%s", args, code, stderr.String())
		}
		var rep report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout.String())
		}
		return &rep, stderr.String()
	}

	t.Run("send", func(t *testing.T) {
		rep, stderr := runJSON(t, "send", "--senders", "1,3", "--rooms", "1,4", "--events", "30")
		if len(rep.Scenarios) != 1 || rep.Scenarios[0].Name != "send" {
			t.Fatalf("scenarios = %+v", rep.Scenarios)
		}
		s := rep.Scenarios[0]
		if len(s.Send) != 4 {
			t.Fatalf("want 4 combinations, got %+v", s.Send)
		}
		for _, r := range s.Send {
			if r.Events != 30 || r.Latency.Count != 30 || r.EventsPerSec <= 0 || r.Latency.MaxMS < r.Latency.P50MS {
				t.Errorf("combination %+v", r)
			}
		}
		if s.RateLimited != 3 {
			t.Errorf("rate_limited = %d, want the fake's 3", s.RateLimited)
		}
		if rep.Machine.NumCPU == 0 || rep.Machine.GoVersion == "" || !rep.Machine.ServerLocal {
			t.Errorf("machine = %+v", rep.Machine)
		}
		for _, want := range []string{"senders", "events/s", "p99 ms", "GOMAXPROCS="} {
			if !strings.Contains(stderr, want) {
				t.Errorf("the table on stderr lacks %q:\n%s", want, stderr)
			}
		}
		// Each combination used fresh rooms and every sent event landed once.
		hs.mu.Lock()
		defer hs.mu.Unlock()
		msgs := 0
		for _, ev := range hs.events {
			if ev.Type == "m.room.message" {
				msgs++
			}
		}
		if msgs != 4*30 {
			t.Errorf("server holds %d messages, want 120", msgs)
		}
	})

	t.Run("send open loop", func(t *testing.T) {
		rep, _ := runJSON(t, "send", "--senders", "2", "--rooms", "1", "--rate", "200", "--duration", "250ms")
		r := rep.Scenarios[0].Send[0]
		if r.Events != 50 || r.TargetRate != 200 {
			t.Errorf("open-loop combination %+v, want 50 events at 200/s", r)
		}
	})

	t.Run("deliver", func(t *testing.T) {
		// This test process is the fake server, so it can sample itself.
		rep, stderr := runJSON(t, "--pid", strconv.Itoa(os.Getpid()), "deliver", "--clients", "5", "--rate", "100", "--duration", "500ms", "--timeline-limit", "2", "--drain", "10s")
		d := rep.Scenarios[0].Deliver
		if d == nil {
			t.Fatalf("no deliver result: %+v", rep.Scenarios[0])
		}
		if d.Sent != 50 || d.Expected != 250 || d.Delivered != 250 || d.Missed != 0 || d.Duplicated != 0 || d.Unexpected != 0 {
			t.Errorf("deliver = %+v", d)
		}
		if d.Latency.Count != 250 || d.Latency.MinMS <= 0 {
			t.Errorf("latency = %+v", d.Latency)
		}
		t.Logf("limited timelines backfilled: %d", d.Gaps)
		if rss := rep.Scenarios[0].RSS; rss == nil || rss.IdleBeforeKB <= 0 || rss.PeakKB < rss.IdleBeforeKB || rss.AfterKB <= 0 || rss.Samples < 2 {
			t.Errorf("rss = %+v", rss)
		}
		if !strings.Contains(stderr, "missed 0, duplicated 0") {
			t.Errorf("table lacks the loss verdict:\n%s", stderr)
		}
	})

	t.Run("initial-sync seeds, then reuses", func(t *testing.T) {
		args := []string{"initial-sync", "--rooms", "3", "--messages", "20", "--iterations", "2", "--seeders", "2", "--lazy-limit", "4"}
		messages := func() int {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			n := 0
			for _, ev := range hs.events {
				if ev.Type == "m.room.message" {
					n++
				}
			}
			return n
		}
		before := messages()
		for i, tc := range []struct {
			reuse      bool
			wantSeeded bool
		}{{true, true}, {true, false}, {false, true}} {
			a := args
			if tc.reuse {
				a = append(a, "--reuse")
			}
			rep, _ := runJSON(t, a...)
			r := rep.Scenarios[0].InitialSync
			if r == nil || r.Seeded != tc.wantSeeded || len(r.Variants) != 2 {
				t.Fatalf("run %d: result %+v, want seeded=%v and two filters", i, r, tc.wantSeeded)
			}
			for _, v := range r.Variants {
				// Earlier seeds were left, so the user is in exactly 3 rooms.
				if v.Calls != 2 || v.RoomsSeen != 3 || v.MedianBytes <= 0 || v.MedianMS <= 0 {
					t.Errorf("run %d: variant %+v", i, v)
				}
			}
		}
		if got := messages() - before; got != 2*3*20 {
			t.Errorf("seeded %d messages over three runs, want 120 (two seeds)", got)
		}
	})

	t.Run("table output", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), []string{"--url", srv.URL, "--users-prefix", "t", "--quiet", "send", "--senders", "1", "--rooms", "1", "--events", "5"}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("--quiet still wrote progress: %s", stderr.String())
		}
		if !strings.Contains(stdout.String(), "## send") || !strings.Contains(stdout.String(), "caveat:") {
			t.Errorf("table output:\n%s", stdout.String())
		}
	})
}
