package web

import (
	"fmt"
	"strings"
	"testing"
)

// A viewer that stops reading is dropped once its queue is full; the others
// keep receiving everything, and the broadcast never blocks.
func TestSlowViewersAreDroppedNotTheRoom(t *testing.T) {
	hs := newHubs(nil)
	h := &hub{roomID: "!r:plaza.test", done: make(chan struct{}), viewers: map[*viewer]struct{}{}}
	hs.rooms[h.roomID] = h
	var got strings.Builder
	fast := &viewer{gone: make(chan struct{}), wake: make(chan struct{}, 1),
		write: func(b []byte) error { got.Write(b); return nil }}
	slow := &viewer{gone: make(chan struct{}), wake: make(chan struct{}, 1),
		write: func([]byte) error { t.Error("the slow viewer was written to"); return nil }}
	h.viewers[slow], h.viewers[fast] = struct{}{}, struct{}{}

	const n = 3 * viewerBuffer
	for i := range n {
		hs.broadcast(h, nil, liveMsg{pos: int64(i + 1), data: fmt.Appendf(nil, "id: %d\n\n", i+1)})
		if !fast.flush() { // what the fast viewer's handler does when woken
			t.Fatal("the fast viewer's flush failed")
		}
	}
	if c := strings.Count(got.String(), "id: "); c != n || !strings.HasSuffix(got.String(), fmt.Sprintf("id: %d\n\n", n)) {
		t.Errorf("the reading viewer got %d messages, want %d", c, n)
	}
	if _, ok := h.viewers[slow]; ok {
		t.Error("the slow viewer is still registered")
	}
	select {
	case <-slow.gone:
	default:
		t.Error("the slow viewer's stream was not ended")
	}
	// The last viewer leaving stops the hub.
	hs.remove(h, fast)
	select {
	case <-h.done:
	default:
		t.Error("the hub did not stop when its last viewer left")
	}
	if len(hs.rooms) != 0 {
		t.Error("the stopped hub is still listed")
	}
}
