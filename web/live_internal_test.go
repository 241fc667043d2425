package web

import (
	"fmt"
	"testing"
)

// A viewer that stops reading is dropped once its buffer is full; the others
// keep receiving everything, and the broadcast never blocks.
func TestSlowViewersAreDroppedNotTheRoom(t *testing.T) {
	hs := &hubs{rooms: map[string]*hub{}}
	h := &hub{roomID: "!r:plaza.test", done: make(chan struct{}), viewers: map[*viewer]struct{}{}}
	hs.rooms[h.roomID] = h
	slow := &viewer{ch: make(chan liveMsg, viewerBuffer)}
	fast := &viewer{ch: make(chan liveMsg, viewerBuffer)}
	h.viewers[slow], h.viewers[fast] = struct{}{}, struct{}{}

	var got []int64
	for i := range 3 * viewerBuffer {
		h.broadcast(nil, liveMsg{pos: int64(i + 1), data: []byte(fmt.Sprintf("id: %d\n\n", i+1))})
		for len(fast.ch) > 0 {
			got = append(got, (<-fast.ch).pos)
		}
	}
	if len(got) != 3*viewerBuffer || got[len(got)-1] != int64(3*viewerBuffer) {
		t.Errorf("the reading viewer got %d messages, want %d", len(got), 3*viewerBuffer)
	}
	if _, ok := h.viewers[slow]; ok {
		t.Error("the slow viewer is still registered")
	}
	n := 0
	for range slow.ch { // closed after what it buffered
		n++
	}
	if n != viewerBuffer {
		t.Errorf("the slow viewer's buffer held %d messages, want %d", n, viewerBuffer)
	}
	// Leaving after being dropped is harmless; the last viewer stops the hub.
	hs.leave(h, slow)
	hs.leave(h, fast)
	select {
	case <-h.done:
	default:
		t.Error("the hub did not stop when its last viewer left")
	}
	if len(hs.rooms) != 0 {
		t.Error("the stopped hub is still listed")
	}
}
