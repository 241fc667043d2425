package oauth

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Each sign-in start writes a row that lives ten minutes, so starts are
// limited per client address: enough for a person retrying, too few to
// fill the table.
const (
	startsPerWindow = 30
	startWindow     = time.Minute
	// maxTracked bounds the limiter's memory; past it, counting starts over.
	maxTracked = 100_000
)

// startLimiter counts sign-in starts per client address in fixed windows.
type startLimiter struct {
	mu     sync.Mutex
	window time.Time
	counts map[string]int
}

// allow reports whether r's client may start another sign-in now.
func (l *startLimiter) allow(r *http.Request, now time.Time) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= startWindow || len(l.counts) >= maxTracked {
		l.window, l.counts = now, map[string]int{}
	}
	l.counts[host]++
	return l.counts[host] <= startsPerWindow
}
