package clientapi

import (
	"context"
	"sync"
	"time"

	"plaza/homeserver/storage"
)

// sessionTTL bounds how long a resolved access token is trusted without
// asking the database. Logouts in this process invalidate at once; the TTL
// bounds staleness only for changes made by another process.
const sessionTTL = 30 * time.Second

// maxCachedSessions bounds the cache; past it, the cache starts over.
const maxCachedSessions = 100_000

// sessionCache remembers resolved access tokens: every authenticated request
// needs one, and a database round trip per request is the largest cost of a
// small request.
type sessionCache struct {
	mu      sync.Mutex
	entries map[string]cachedSession // by token hash
}

type cachedSession struct {
	s       *storage.Session
	fetched time.Time
}

func (c *sessionCache) lookup(ctx context.Context, db *storage.DB, token string, now time.Time) (*storage.Session, error) {
	key := string(storage.HashToken(token))
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Sub(e.fetched) < sessionTTL {
		return e.s, nil
	}
	s, err := db.SessionByToken(ctx, token)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= maxCachedSessions {
		c.entries = map[string]cachedSession{}
	}
	c.entries[key] = cachedSession{s: s, fetched: now}
	c.mu.Unlock()
	return s, nil
}

// forgetUser drops a user's cached sessions (logout, device deletion,
// password change, deactivation).
func (c *sessionCache) forgetUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.s.UserID == userID {
			delete(c.entries, k)
		}
	}
}
