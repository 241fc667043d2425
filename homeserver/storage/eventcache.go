package storage

import (
	"sync"

	"plaza/homeserver/event"
)

// eventCacheSize bounds each generation of the parsed-event cache.
const eventCacheSize = 20_000

// eventCache keeps parsed events by NID. Events never change once stored
// (redaction is recorded beside them), so entries never go stale; the cache
// only saves re-parsing the same event for every client that reads it — the
// fan-out of a busy room. It holds two generations: when the current one is
// full it becomes the previous one, so memory stays bounded and recently
// read events survive.
type eventCache struct {
	mu        sync.Mutex
	cur, prev map[int64]*event.Event
}

func newEventCache() *eventCache {
	return &eventCache{cur: make(map[int64]*event.Event), prev: make(map[int64]*event.Event)}
}

func (c *eventCache) get(nid int64) *event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev, ok := c.cur[nid]; ok {
		return ev
	}
	if ev, ok := c.prev[nid]; ok {
		c.putLocked(nid, ev)
		return ev
	}
	return nil
}

func (c *eventCache) put(nid int64, ev *event.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(nid, ev)
}

func (c *eventCache) putLocked(nid int64, ev *event.Event) {
	if len(c.cur) >= eventCacheSize {
		c.prev, c.cur = c.cur, make(map[int64]*event.Event, eventCacheSize)
	}
	c.cur[nid] = ev
}
