package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/stream"
)

// txnRecord is a transaction a fake destination received.
type txnRecord struct {
	ID     string
	Origin string // the authenticated X-Matrix origin
	Body   struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
}

// fakeDest is a federation server whose /send answers as its mode says.
// Requests are authenticated for real (X-Matrix, keys fetched from the
// sender).
type fakeDest struct {
	*testFed
	mu       sync.Mutex
	mode     string // "ok", "500", "garbage", "slow"
	attempts []string
	accepted []txnRecord
	seen     map[string]bool
	release  chan struct{} // closed to end "slow" requests
}

func newFakeDest(t *testing.T, ca *testCA) *fakeDest {
	t.Helper()
	d := &fakeDest{testFed: newFed(t, ca), mode: "ok", seen: map[string]bool{}, release: make(chan struct{})}
	t.Cleanup(func() { d.setMode("ok") })
	var h http.Handler = d.svc.Handler(func(r chi.Router) {
		r.With(d.svc.Authenticate).Put("/_matrix/federation/v1/send/{txnID}", d.serveSend)
	})
	d.handler.Store(&h)
	return d
}

func (d *fakeDest) setMode(m string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode == "slow" && m != "slow" {
		close(d.release)
		d.release = make(chan struct{})
	}
	d.mode = m
}

func (d *fakeDest) serveSend(w http.ResponseWriter, r *http.Request) {
	txn := txnRecord{ID: chi.URLParam(r, "txnID"), Origin: Origin(r.Context())}
	if err := httpapi.Decode(r, &txn.Body); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	d.mu.Lock()
	mode, release := d.mode, d.release
	d.attempts = append(d.attempts, txn.ID)
	d.mu.Unlock()
	switch mode {
	case "500":
		httpapi.Fail(w, r, fmt.Errorf("down for maintenance"))
		return
	case "429":
		httpapi.Fail(w, r, httpapi.LimitExceeded(10))
		return
	case "400":
		httpapi.Fail(w, r, httpapi.BadJSON("we do not like this transaction"))
		return
	case "garbage":
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("<html>not json"))
		return
	case "slow":
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return
	}
	d.mu.Lock()
	if !d.seen[txn.ID] { // the spec's deduplication by transaction ID
		d.seen[txn.ID] = true
		d.accepted = append(d.accepted, txn)
	}
	d.mu.Unlock()
	httpapi.Respond(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
}

// received returns the PDUs and EDUs accepted so far, in order.
func (d *fakeDest) received() (pdus, edus []string, txns []txnRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.accepted {
		for _, p := range t.Body.PDUs {
			pdus = append(pdus, string(p))
		}
		for _, e := range t.Body.EDUs {
			edus = append(edus, string(e))
		}
	}
	return pdus, edus, slices.Clone(d.accepted)
}

func (d *fakeDest) attemptCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.attempts)
}

// waitFor polls cond until it holds; the deadline only keeps a broken test
// from hanging.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pdu(i int) []byte     { return []byte(fmt.Sprintf(`{"n":%d}`, i)) }
func testEDU(i int) []byte { return []byte(fmt.Sprintf(`{"edu_type":"m.test","content":{"n":%d}}`, i)) }

var fastRetries = SenderConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Timeout: 2 * time.Second}

func startSender(t *testing.T, f *testFed, cfg SenderConfig, rooms Rooms) *Sender {
	t.Helper()
	if err := f.svc.Sender.Start(context.Background(), cfg, rooms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.svc.Sender.Stop)
	return f.svc.Sender
}

// Everything queued arrives once, in order, in transactions within the
// spec's limits, signed by the origin.
func TestSenderBatchesInOrder(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	b.setMode("500") // hold delivery until all is queued, so batches fill up
	s := startSender(t, a, SenderConfig{MinBackoff: time.Hour}, nil)
	ctx := context.Background()
	for i := range 120 {
		if err := s.Queue(ctx, []string{b.name, a.name}, [][]byte{pdu(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		if err := s.Queue(ctx, []string{b.name}, nil, [][]byte{testEDU(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the first attempt", func() bool { return b.attemptCount() > 0 })
	b.setMode("ok")
	// b is backing off for an hour; any request from it ends that.
	if err := b.svc.Client.DoJSON(ctx, a.name, "GET", "/_matrix/federation/v1/test/echo", nil, nil, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", func() bool { p, e, _ := b.received(); return len(p) == 120 && len(e) == 150 })
	pdus, edus, txns := b.received()
	for i := range pdus {
		if pdus[i] != string(pdu(i)) {
			t.Fatalf("PDU %d is %s", i, pdus[i])
		}
	}
	for i := range edus {
		if edus[i] != string(testEDU(i)) {
			t.Fatalf("EDU %d is %s", i, edus[i])
		}
	}
	for _, tx := range txns {
		if len(tx.Body.PDUs) > 50 || len(tx.Body.EDUs) > 100 {
			t.Errorf("transaction %s holds %d PDUs, %d EDUs", tx.ID, len(tx.Body.PDUs), len(tx.Body.EDUs))
		}
		if tx.Origin != a.name || tx.Body.Origin != a.name {
			t.Errorf("transaction from %q/%q, want %q", tx.Origin, tx.Body.Origin, a.name)
		}
	}
	if len(txns) != 3 {
		t.Errorf("%d transactions, want 3 (50+100, 50+50, 20)", len(txns))
	}
	// Delivered items leave the queue once the answer is in.
	waitFor(t, "an empty queue", func() bool {
		dests, err := a.db.QueuedDestinations(ctx)
		return err == nil && len(dests) == 0
	})
}

// A destination answering 500, garbage, or nothing in time is retried until
// it accepts; the batch keeps its transaction ID across the retries.
func TestSenderRetriesFailures(t *testing.T) {
	for _, mode := range []string{"500", "garbage", "slow"} {
		t.Run(mode, func(t *testing.T) {
			ca := newCA(t)
			a := newFed(t, ca)
			b := newFakeDest(t, ca)
			b.setMode(mode)
			cfg := fastRetries
			if mode == "slow" {
				cfg.Timeout = 50 * time.Millisecond
			}
			s := startSender(t, a, cfg, nil)
			if err := s.Queue(context.Background(), []string{b.name}, [][]byte{pdu(1)}, [][]byte{testEDU(1)}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "three failed attempts", func() bool { return b.attemptCount() >= 3 })
			b.setMode("ok")
			waitFor(t, "delivery", func() bool { p, _, _ := b.received(); return len(p) == 1 })
			b.mu.Lock()
			attempts := slices.Compact(slices.Clone(b.attempts))
			b.mu.Unlock()
			if len(attempts) != 1 {
				t.Errorf("the one batch was sent under several transaction IDs: %v", attempts)
			}
			_, edus, _ := b.received()
			if len(edus) != 1 {
				t.Errorf("EDUs delivered: %v", edus)
			}
		})
	}
}

// A destination that cannot be reached at all backs off, and does not hold
// up delivery to the others.
func TestSenderUnreachableDoesNotBlockOthers(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	slow := newFakeDest(t, ca)
	slow.setMode("slow")
	s := startSender(t, a, SenderConfig{Concurrency: 2, MinBackoff: time.Hour, Timeout: time.Minute}, nil)
	ctx := context.Background()
	dead := "127.0.0.1:1"
	if err := s.Queue(ctx, []string{dead, slow.name}, [][]byte{pdu(0)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead destination to back off", func() bool {
		b, err := a.db.DestinationBackoffs(ctx)
		return err == nil && b[dead].Failures == 1
	})
	for i := range 3 {
		if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(i)}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "delivery to the healthy destination", func() bool { p, _, _ := b.received(); return len(p) == i+1 })
	}
}

// The queue and the backoff survive a restart; the restarted sender resumes
// once the destination is heard from.
func TestSenderResumesAfterRestart(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	b.setMode("500")
	s := startSender(t, a, SenderConfig{MinBackoff: time.Hour}, nil)
	ctx := context.Background()
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(7)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failure recorded", func() bool {
		bo, err := a.db.DestinationBackoffs(ctx)
		return err == nil && bo[b.name].Failures == 1
	})
	// While b backs off, typing is not queued for it; to-device messages are.
	if err := s.QueueEDU(ctx, []string{b.name}, "m.typing", map[string]any{"typing": true}); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueEDU(ctx, []string{b.name}, "m.direct_to_device", map[string]any{"message_id": "m1"}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	b.setMode("ok")

	a.start() // a new Service and Sender on the same database
	s2 := startSender(t, a, SenderConfig{MinBackoff: time.Hour}, nil)
	if n := b.attemptCount(); n != 1 {
		t.Fatalf("%d attempts before b was heard from; the restart forgot the backoff", n)
	}
	if err := b.svc.Client.DoJSON(ctx, a.name, "GET", "/_matrix/federation/v1/test/echo", nil, nil, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after restart", func() bool { p, _, _ := b.received(); return len(p) == 1 })
	if p, e, _ := b.received(); p[0] != string(pdu(7)) || len(e) != 1 || !strings.Contains(e[0], "m.direct_to_device") {
		t.Errorf("delivered %s and EDUs %v, want the PDU and the to-device EDU only", p[0], e)
	}
	waitFor(t, "the backoff cleared", func() bool {
		bo, err := a.db.DestinationBackoffs(ctx)
		return err == nil && len(bo) == 0
	})
	_ = s2
}

func TestSenderBackoffGrowsToCap(t *testing.T) {
	s := &Sender{cfg: SenderConfig{MinBackoff: time.Second, MaxBackoff: time.Hour}}
	prev := time.Duration(0)
	for n := 1; n <= 100; n++ {
		d := s.backoff(n)
		if d > time.Hour || d < time.Second*4/5 {
			t.Fatalf("backoff(%d) = %v", n, d)
		}
		if n <= 12 && d < prev*3/2 { // doubling, less at most a fifth
			t.Errorf("backoff(%d) = %v after %v", n, d, prev)
		}
		prev = d
	}
	if d := s.backoff(100); d < time.Hour*4/5 {
		t.Errorf("backoff(100) = %v, want near the cap", d)
	}
}

// Local events are queued for the servers of the room's joined members and
// for an invitee's server; other servers' events are not sent back.
func TestSenderQueuesLocalEvents(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	c := newFakeDest(t, ca)
	rooms := room.New(a.db, stream.NewTracker(0, 0), a.name, a.cfg.Key)
	startSender(t, a, fastRetries, rooms)
	ctx := context.Background()
	alice := "@alice:" + a.name
	strp := func(s string) *string { return &s }
	roomID, err := rooms.CreateRoom(ctx, event.MustVersion("12"), alice, json.RawMessage(`{"room_version":"12"}`), []room.Request{
		{Sender: alice, Type: "m.room.member", StateKey: strp(alice), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: alice, Type: "m.room.join_rules", StateKey: strp(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	bob := "@bob:" + b.name
	if _, err := rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: "m.room.member", StateKey: strp(bob), Content: json.RawMessage(`{"membership":"invite"}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invite at the invitee's server", func() bool { p, _, _ := b.received(); return len(p) == 1 })
	// bob's join stands in for one received over federation: his server's
	// event, which must not be sent back to it.
	if _, err := rooms.Send(ctx, roomID, room.Request{Sender: bob, Type: "m.room.member", StateKey: strp(bob), Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
		t.Fatal(err)
	}
	res, err := rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi"}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message at the joined server", func() bool { p, _, _ := b.received(); return len(p) == 2 })
	pdus, _, _ := b.received()
	var got struct {
		Sender  string `json:"sender"`
		Type    string `json:"type"`
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	}
	if err := json.Unmarshal([]byte(pdus[1]), &got); err != nil || got.Type != "m.room.message" || got.Content.Body != "hi" || got.Sender != alice {
		t.Errorf("second PDU %s (%v); want the message %s", pdus[1], err, res.Event.ID())
	}
	if n := c.attemptCount(); n != 0 {
		t.Errorf("a server with no member got %d transactions", n)
	}

	// carol joins through us (send_join): her join is relayed to b, not
	// back to her own server.
	carol := "@carol:" + c.name
	join, err := rooms.Send(ctx, roomID, room.Request{Sender: carol, Type: "m.room.member", StateKey: strp(carol), Content: json.RawMessage(`{"membership":"join"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.svc.Sender.Relay(ctx, roomID, c.name, join.Event.JSON()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relayed join at b", func() bool { p, _, _ := b.received(); return len(p) == 3 })
	if pdus, _, _ := b.received(); !strings.Contains(pdus[2], carol) {
		t.Errorf("relayed %s, want carol's join", pdus[2])
	}
	if n := c.attemptCount(); n != 0 {
		t.Errorf("the joiner's server got its own join back (%d transactions)", n)
	}
}

// At most Concurrency destinations are sent to at once: with one slot, a
// destination that holds its transaction keeps the next one waiting.
func TestSenderConcurrencyIsBounded(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b, c := newFakeDest(t, ca), newFakeDest(t, ca)
	b.setMode("slow")
	c.setMode("slow")
	s := startSender(t, a, SenderConfig{Concurrency: 1, Timeout: time.Minute}, nil)
	ctx := context.Background()
	if err := s.Queue(ctx, []string{b.name, c.name}, [][]byte{pdu(1)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one transaction in flight", func() bool { return b.attemptCount()+c.attemptCount() == 1 })
	first, second := b, c
	if c.attemptCount() == 1 {
		first, second = c, b
	}
	// The slot is taken until first answers; second must not have been tried.
	time.Sleep(50 * time.Millisecond) // gives a wrongly started second send the time to show; passing does not depend on it
	if n := second.attemptCount(); n != 0 {
		t.Fatalf("%d transactions to a second destination while the only slot was taken", n)
	}
	first.setMode("ok")
	waitFor(t, "the second destination's turn", func() bool { return second.attemptCount() == 1 })
	second.setMode("ok")
	waitFor(t, "both delivered", func() bool {
		p1, _, _ := first.received()
		p2, _, _ := second.received()
		return len(p1) == 1 && len(p2) == 1
	})
}

// A transaction the destination refuses as bad (400) is dropped, not
// retried forever ahead of everything queued after it.
func TestSenderDropsRefusedTransactions(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	b.setMode("400")
	s := startSender(t, a, SenderConfig{MinBackoff: time.Hour}, nil)
	ctx := context.Background()
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(1)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused batch gone", func() bool {
		dests, err := a.db.QueuedDestinations(ctx)
		return err == nil && len(dests) == 0 && b.attemptCount() == 1
	})
	b.setMode("ok")
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(2)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next one delivered", func() bool { p, _, _ := b.received(); return len(p) == 1 })
	if p, _, _ := b.received(); p[0] != string(pdu(2)) {
		t.Errorf("delivered %s", p[0])
	}
	if bo, err := a.db.DestinationBackoffs(ctx); err != nil || len(bo) != 0 {
		t.Errorf("a refusal counted as a failure: %v %v", bo, err)
	}
}

// A 429 is a pause, not a failure: no backoff grows or is recorded, and
// delivery goes on after the pause.
func TestSenderPausesWhenRateLimited(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	b.setMode("429")
	s := startSender(t, a, SenderConfig{MinBackoff: time.Hour, RateLimitedWait: 10 * time.Millisecond}, nil)
	ctx := context.Background()
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(1)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a few rate-limited attempts", func() bool { return b.attemptCount() >= 3 })
	if bo, err := a.db.DestinationBackoffs(ctx); err != nil || len(bo) != 0 {
		t.Errorf("429 recorded as a failure: %v %v", bo, err)
	}
	b.setMode("ok")
	waitFor(t, "delivery after the pause", func() bool { p, _, _ := b.received(); return len(p) == 1 })
}

// Transactions to a destination are paced: events queued while the bucket
// is empty share the next transaction instead of one each.
func TestSenderPacesTransactions(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	s := startSender(t, a, SenderConfig{TxnRate: 1, TxnBurst: 1}, nil)
	ctx := context.Background()
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(0)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first transaction", func() bool { return b.attemptCount() == 1 })
	for i := 1; i <= 5; i++ {
		if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all delivered", func() bool { p, _, _ := b.received(); return len(p) == 6 })
	if _, _, txns := b.received(); len(txns) > 3 {
		t.Errorf("%d transactions for 6 events queued within a second at 1 transaction/s", len(txns))
	}
}

// A failing destination's queue keeps only the newest items.
func TestSenderTrimsFailingQueues(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFakeDest(t, ca)
	b.setMode("500")
	s := startSender(t, a, SenderConfig{MinBackoff: time.Hour, MaxQueuedPDUs: 10, MaxQueuedEDUs: 3}, nil)
	ctx := context.Background()
	b.setMode("slow") // holds the first transaction while the rest is queued
	if err := s.Queue(ctx, []string{b.name}, [][]byte{pdu(0)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first transaction", func() bool { return b.attemptCount() == 1 })
	var pdus, edus [][]byte
	for i := 1; i < 30; i++ {
		pdus = append(pdus, pdu(i))
		edus = append(edus, testEDU(i))
	}
	if err := s.Queue(ctx, []string{b.name}, pdus, edus); err != nil {
		t.Fatal(err)
	}
	b.setMode("500")
	waitFor(t, "a failure recorded", func() bool {
		bo, err := a.db.DestinationBackoffs(ctx)
		return err == nil && bo[b.name].Failures == 1
	})
	waitFor(t, "the queue trimmed", func() bool {
		p, e, err := a.db.QueuedBatch(ctx, b.name, 100, 100)
		return err == nil && len(p) == 10 && len(e) == 3
	})
	p, e, _ := a.db.QueuedBatch(ctx, b.name, 100, 100)
	if string(p[0].Body) != string(pdu(20)) || string(p[9].Body) != string(pdu(29)) || string(e[0].Body) != string(testEDU(27)) {
		t.Errorf("kept PDUs %s..%s and EDUs from %s, want the newest", p[0].Body, p[9].Body, e[0].Body)
	}
}
