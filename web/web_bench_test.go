package web_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Figures for the room page's targets (p99 < 20 ms warm, < 150 ms cold) and
// the live stream's idle viewers' memory. Run one at a time, briefly:
//
//	go test ./web -run '^$' -bench RoomPage -benchtime 500x
//	go test ./web -run '^$' -bench IdleViewers -benchtime 1x

// serverTimes serves path n times through the handler directly (no network:
// server time only) and returns the sorted durations.
func serverTimes(b *testing.B, h http.Handler, paths []string) []time.Duration {
	b.Helper()
	out := make([]time.Duration, 0, len(paths))
	for _, p := range paths {
		req := httptest.NewRequest("GET", p, nil)
		req.Header.Set("Accept-Encoding", "gzip") // as browsers ask
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, req)
		out = append(out, time.Since(start))
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d", p, w.Code)
		}
	}
	slices.Sort(out)
	return out
}

func pct(d []time.Duration, p float64) float64 {
	return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
}

func BenchmarkRoomPage(b *testing.B) {
	s := newSite(b, nil)
	alice := s.register("alice")
	rooms := make([]string, 20)
	for i := range rooms {
		rooms[i] = alice.createRoom("", fmt.Sprintf("Room %d", i), "A room for measuring", "world_readable")
		for j := range 50 {
			alice.send(rooms[i], text(fmt.Sprintf("message %d with a link https://example.org/%d and some words", j, j)))
		}
	}
	// Cold: each room's first view loads its snapshot from storage.
	var cold []string
	for _, r := range rooms {
		cold = append(cold, "/room/"+url.PathEscape(r))
	}
	// The rooms were just written, so their snapshots may be warm already:
	// a new site over the same database starts cold.
	h2 := startSite(b, s.pool, nil).handler
	coldTimes := serverTimes(b, h2, cold)
	b.ResetTimer()
	warm := make([]string, b.N)
	for i := range warm {
		warm[i] = cold[i%len(cold)]
	}
	warmTimes := serverTimes(b, h2, warm)
	b.StopTimer()
	b.ReportMetric(pct(warmTimes, 0.5), "warm-p50-ms")
	b.ReportMetric(pct(warmTimes, 0.99), "warm-p99-ms")
	b.ReportMetric(pct(coldTimes, 0.5), "cold-p50-ms")
	b.ReportMetric(pct(coldTimes, 0.99), "cold-p99-ms")
}

func BenchmarkIdleViewers(b *testing.B) {
	s := newSite(b, nil)
	alice := s.register("alice")
	roomID := alice.createRoom("", "Idle", "", "world_readable")
	alice.send(roomID, text("hello"))
	addr := strings.TrimPrefix(s.URL, "http://")
	const viewers = 2000
	open := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "GET /_plaza/rooms/%s/live HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", url.PathEscape(roomID), addr)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, "200") {
			b.Fatalf("live: %q %v", line, err)
		}
		return c
	}
	for range b.N {
		open().Close() // the hub exists before measuring
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, viewers)
		for i := range conns {
			conns[i] = open()
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		per := float64((after.HeapInuse+after.StackInuse)-(before.HeapInuse+before.StackInuse)) / viewers
		b.ReportMetric(per, "bytes/idle-viewer")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/viewers, "stack-bytes/idle-viewer")
		b.ReportMetric(float64(after.NumGC-before.NumGC), "gcs")
		for _, c := range conns {
			c.Close()
		}
	}
}
