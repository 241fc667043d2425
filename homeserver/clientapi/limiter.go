package clientapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"plaza/homeserver/httpapi"
)

// limiter keeps a token bucket per (action, key): key is a user ID for
// authenticated actions and an IP address otherwise.
type limiter struct {
	enabled bool
	mu      sync.Mutex
	buckets map[string]*bucket
	last    time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

// limits per action: sustained rate per second and burst.
var limits = map[string]struct {
	perSecond float64
	burst     int
}{
	"register": {0.2, 5},
	"login":    {0.5, 10},
	"send":     {10, 100},
	"create":   {1, 10},
	"join":     {2, 20},
}

func newLimiter(enabled bool) *limiter {
	return &limiter{enabled: enabled, buckets: map[string]*bucket{}}
}

// allow takes a token for the action, or returns M_LIMIT_EXCEEDED with the
// time until one is available.
func (l *limiter) allow(action, key string) error {
	if !l.enabled {
		return nil
	}
	cfg, ok := limits[action]
	if !ok {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) > time.Minute {
		// Forget idle buckets so memory follows active clients only.
		for k, b := range l.buckets {
			if now.Sub(b.used) > 10*time.Minute {
				delete(l.buckets, k)
			}
		}
		l.last = now
	}
	k := action + "\x00" + key
	b := l.buckets[k]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(cfg.perSecond), cfg.burst)}
		l.buckets[k] = b
	}
	b.used = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return httpapi.LimitExceeded(max(d.Milliseconds(), 1))
	}
	return nil
}
