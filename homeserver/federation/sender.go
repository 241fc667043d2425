package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Rooms is what the outbound sender needs of the room service: to hear of
// persisted events and to find the servers taking part in a room.
type Rooms interface {
	Subscribe(func(room.Notification))
	// Servers lists the servers with members joined to the room.
	Servers(ctx context.Context, roomID string) ([]string, error)
}

// SenderConfig tunes the outbound sender; zero fields take the defaults.
type SenderConfig struct {
	// MaxPDUs and MaxEDUs bound one transaction (the spec's limits: 50
	// and 100).
	MaxPDUs, MaxEDUs int
	// Concurrency bounds the destinations sent to at once.
	Concurrency int
	// MinBackoff is the wait after a first failure; it doubles with each
	// further failure up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one /send exchange: a slow destination holds a
	// concurrency slot no longer than this.
	Timeout time.Duration
	// TxnRate and TxnBurst pace the transactions to one destination (a
	// token bucket): receivers limit transactions per origin (Plaza: 20/s),
	// and a busy room sent event by event would run into that limit and
	// wait out a 429. Paced, events that arrive meanwhile share the next
	// transaction instead.
	TxnRate  float64
	TxnBurst int
	// RateLimitedWait is the pause after a 429 (not a failure: no backoff
	// grows from it).
	RateLimitedWait time.Duration
	// MaxQueuedPDUs and MaxQueuedEDUs bound a failing destination's queue:
	// past them the oldest items go. A server that comes back after a long
	// absence gets the newest events and fetches the gap before them
	// (get_missing_events), as it would after any loss.
	MaxQueuedPDUs, MaxQueuedEDUs int
}

// Sender defaults.
const (
	defaultMaxPDUs     = 50
	defaultMaxEDUs     = 100
	defaultConcurrency = 32
	defaultMinBackoff  = time.Second
	defaultMaxBackoff  = time.Hour
	defaultSendTimeout = time.Minute
	defaultTxnRate     = 15
	defaultTxnBurst    = 30
	defaultRateLimited = time.Second
	defaultMaxQueued   = 10000
)

// Sender delivers PDUs and EDUs to other servers in /send transactions. Each
// destination has its own queue, persisted in PostgreSQL before anything is
// sent, so a restart resumes delivery; a destination that fails is retried
// with exponential backoff, and at once when it is heard from again. Senders
// of events never wait for it: the room subscriber only hands events over.
type Sender struct {
	origin string
	db     *storage.DB
	client *Client
	cfg    SenderConfig
	now    func() time.Time
	sem    chan struct{} // one token per destination being sent to

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	started bool
	dests   map[string]*destination
	rooms   Rooms
	intake  []room.Notification // handed over by the room writer, not yet queued
	wake    chan struct{}
}

// destination is the in-memory state of one destination's queue.
type destination struct {
	running bool // a goroutine is sending its queue
	again   bool // something was queued while it ran: read the queue again
	// failures in a row, and when to retry; stored is whether the database
	// holds a non-zero count that a success must clear.
	failures int
	retryAt  time.Time
	stored   bool
	timer    *time.Timer
	// The pacing bucket: tokens left as of last.
	tokens float64
	last   time.Time
}

func newSender(origin string, db *storage.DB, client *Client, now func() time.Time) *Sender {
	return &Sender{origin: origin, db: db, client: client, now: now, dests: map[string]*destination{},
		wake: make(chan struct{}, 1)}
}

// Start begins delivery: it resumes the queues left by the previous run and,
// if rooms is not nil, queues every event of a local user for the other
// servers of its room. ctx is for reading the queues; delivery goes on
// until Stop.
func (s *Sender) Start(ctx context.Context, cfg SenderConfig, rooms Rooms) error {
	cfg.MaxPDUs = orDefault(cfg.MaxPDUs, defaultMaxPDUs)
	cfg.MaxEDUs = orDefault(cfg.MaxEDUs, defaultMaxEDUs)
	cfg.Concurrency = orDefault(cfg.Concurrency, defaultConcurrency)
	cfg.MinBackoff = orDefault(cfg.MinBackoff, defaultMinBackoff)
	cfg.MaxBackoff = orDefault(cfg.MaxBackoff, defaultMaxBackoff)
	cfg.Timeout = orDefault(cfg.Timeout, defaultSendTimeout)
	cfg.TxnRate = orDefault(cfg.TxnRate, defaultTxnRate)
	cfg.TxnBurst = orDefault(cfg.TxnBurst, defaultTxnBurst)
	cfg.RateLimitedWait = orDefault(cfg.RateLimitedWait, defaultRateLimited)
	cfg.MaxQueuedPDUs = orDefault(cfg.MaxQueuedPDUs, defaultMaxQueued)
	cfg.MaxQueuedEDUs = orDefault(cfg.MaxQueuedEDUs, defaultMaxQueued)
	backoffs, err := s.db.DestinationBackoffs(ctx)
	if err != nil {
		return fmt.Errorf("federation sender: %w", err)
	}
	queued, err := s.db.QueuedDestinations(ctx)
	if err != nil {
		return fmt.Errorf("federation sender: %w", err)
	}

	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return fmt.Errorf("federation sender: already started")
	}
	s.started = true
	s.cfg = cfg
	s.sem = make(chan struct{}, cfg.Concurrency)
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.rooms = rooms
	for dest, b := range backoffs {
		s.dests[dest] = &destination{failures: b.Failures, retryAt: time.UnixMilli(b.RetryAtMS), stored: true}
	}
	s.mu.Unlock()

	for _, dest := range queued {
		s.kick(dest)
	}
	if rooms != nil {
		s.wg.Add(1)
		go s.intakeLoop()
		rooms.Subscribe(s.hear)
	}
	return nil
}

func orDefault[T int | float64 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// Stop ends delivery and waits for sends under way to give up. What is
// still queued stays in the database for the next start.
func (s *Sender) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	for _, d := range s.dests {
		if d.timer != nil {
			d.timer.Stop()
		}
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// hear is the room subscriber. It runs on the room writer's goroutine, so it
// only hands the notification over.
func (s *Sender) hear(n room.Notification) {
	s.mu.Lock()
	s.intake = append(s.intake, n)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Sender) intakeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			// Stopping: what was handed over is still written to the
			// queue, for the next start to send.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), stopDrainTimeout)
			s.intakeRound(ctx)
			cancel()
			return
		case <-s.wake:
		}
		s.intakeRound(s.ctx)
	}
}

// stopDrainTimeout bounds the last intake round at Stop.
const stopDrainTimeout = 5 * time.Second

// intakeRound queues everything handed over since the last round in one
// statement: one database round trip per round, not per event, however
// fast rooms write.
func (s *Sender) intakeRound(ctx context.Context) {
	s.mu.Lock()
	batch := s.intake
	s.intake = nil
	s.mu.Unlock()
	var items []storage.Queued
	for _, n := range batch {
		var err error
		if items, err = s.queueNotification(ctx, n, items); err != nil && ctx.Err() == nil {
			slog.Error("federation: queueing events", "room", n.RoomID, "err", err)
		}
	}
	if err := s.enqueue(ctx, items); err != nil && ctx.Err() == nil {
		slog.Error("federation: queueing events", "events", len(items), "err", err)
	}
}

// queueNotification queues the local users' events of n for the other
// servers of the room, and, for membership events, for the server of the
// user they are about (an invitee's server is not in the room yet, a kicked
// user's server no longer is).
func (s *Sender) queueNotification(ctx context.Context, n room.Notification, items []storage.Queued) ([]storage.Queued, error) {
	for _, se := range n.Events {
		ev := se.Event
		// Delivered: a membership the room's servers got through make_/send_.
		if se.Rejected || n.Delivered || id.ServerOf(ev.Sender()) != s.origin {
			continue
		}
		// The room service keeps the list in memory until membership
		// changes; asking per event is cheap.
		servers, err := s.RoomServers(ctx, n.RoomID)
		if err != nil {
			return items, err
		}
		dests := servers
		if sk := ev.StateKey(); ev.Type() == "m.room.member" && sk != nil {
			if d := id.ServerOf(*sk); d != "" && d != s.origin && !slices.Contains(dests, d) {
				dests = append(slices.Clone(dests), d)
			}
		}
		for _, d := range dests {
			items = append(items, storage.Queued{Destination: d, Body: ev.JSON()})
		}
	}
	return items, nil
}

// RoomServers returns the servers other than ours with members joined to
// the room.
func (s *Sender) RoomServers(ctx context.Context, roomID string) ([]string, error) {
	if s.rooms == nil {
		return nil, nil
	}
	all, err := s.rooms.Servers(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("servers of %s: %w", roomID, err)
	}
	return slices.DeleteFunc(slices.Clone(all), func(d string) bool { return d == s.origin }), nil
}

// Queue persists PDUs and EDUs for the destinations and starts delivering
// them. Our own name among the destinations is skipped.
func (s *Sender) Queue(ctx context.Context, destinations []string, pdus, edus [][]byte) error {
	var items []storage.Queued
	for _, d := range destinations {
		if d == s.origin || d == "" {
			continue
		}
		for _, p := range pdus {
			items = append(items, storage.Queued{Destination: d, Body: p})
		}
		for _, e := range edus {
			items = append(items, storage.Queued{Destination: d, IsEDU: true, Body: e})
		}
	}
	return s.enqueue(ctx, items)
}

// enqueue persists items and starts delivering them.
func (s *Sender) enqueue(ctx context.Context, items []storage.Queued) error {
	if err := s.db.Enqueue(ctx, items); err != nil {
		return err
	}
	var kicked []string
	for _, it := range items {
		if !slices.Contains(kicked, it.Destination) {
			kicked = append(kicked, it.Destination)
			s.kick(it.Destination)
		}
	}
	return nil
}

// Relay queues an event that another server gave only to us for the other
// servers of its room, origin excepted: a join, leave or knock made through
// us (send_join, send_leave, send_knock) reaches the rest of the room this
// way. The room subscription does not send such events, since their sender
// is not ours.
func (s *Sender) Relay(ctx context.Context, roomID, origin string, pdu []byte) error {
	servers, err := s.RoomServers(ctx, roomID)
	if err != nil {
		return err
	}
	dests := make([]string, 0, len(servers))
	for _, d := range servers {
		if d != origin {
			dests = append(dests, d)
		}
	}
	return s.Queue(ctx, dests, [][]byte{pdu}, nil)
}

// QueueEDU queues one EDU of the given type for the destinations.
func (s *Sender) QueueEDU(ctx context.Context, destinations []string, eduType string, content any) error {
	if eduType == "m.typing" || eduType == "m.presence" {
		// Worthless by the time a failing server is retried: not queued
		// for it, so a server that is down does not pile them up.
		destinations = slices.DeleteFunc(slices.Clone(destinations), s.backingOff)
	}
	if len(destinations) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return fmt.Errorf("EDU %s: %w", eduType, err)
	}
	return s.Queue(ctx, destinations, nil, [][]byte{body})
}

// backingOff reports whether dest failed last time and waits for a retry.
func (s *Sender) backingOff(dest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dests[dest]
	return d != nil && d.failures > 0
}

// kick starts sending dest's queue unless that is under way or dest is
// backing off.
func (s *Sender) kick(dest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.ctx.Err() != nil {
		return
	}
	d := s.dests[dest]
	if d == nil {
		d = &destination{}
		s.dests[dest] = d
	}
	if d.running {
		d.again = true
		return
	}
	if wait := d.retryAt.Sub(s.now()); wait > 0 { // backing off, or paused by a 429
		if d.timer == nil {
			d.timer = time.AfterFunc(wait, func() { s.retry(dest) })
		}
		return
	}
	d.running = true
	s.wg.Add(1)
	go s.run(dest)
}

func (s *Sender) retry(dest string) {
	s.mu.Lock()
	if d := s.dests[dest]; d != nil {
		d.timer = nil
	}
	s.mu.Unlock()
	s.kick(dest)
}

// Heard tells the sender that origin sent us a request: it is up, so
// anything waiting for it goes now instead of at the end of its backoff.
func (s *Sender) Heard(origin string) {
	s.mu.Lock()
	d := s.dests[origin]
	backingOff := d != nil && d.failures > 0
	if backingOff {
		d.failures = 0
		d.retryAt = time.Time{}
		if d.timer != nil {
			d.timer.Stop()
			d.timer = nil
		}
	}
	s.mu.Unlock()
	if backingOff {
		s.kick(origin)
	}
}

// run sends dest's queue until it is empty or a transaction fails.
func (s *Sender) run(dest string) {
	defer s.wg.Done()
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		s.finish(dest, nil)
		return
	}
	defer func() { <-s.sem }()
	for {
		if !s.pace(dest) {
			s.finish(dest, nil)
			return
		}
		more, err := s.sendBatch(dest)
		if err != nil || !more && !s.takeAgain(dest) {
			s.finish(dest, err)
			return
		}
	}
}

// pace waits for dest's next transaction token; false if stopping.
func (s *Sender) pace(dest string) bool {
	s.mu.Lock()
	d := s.dests[dest]
	now := s.now()
	if d.last.IsZero() {
		d.tokens = float64(s.cfg.TxnBurst)
	} else {
		d.tokens = min(float64(s.cfg.TxnBurst), d.tokens+now.Sub(d.last).Seconds()*s.cfg.TxnRate)
	}
	d.last = now
	var wait time.Duration
	if d.tokens < 1 {
		wait = time.Duration((1 - d.tokens) / s.cfg.TxnRate * float64(time.Second))
	}
	d.tokens-- // may go below zero: the wait below pays it back
	s.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// takeAgain reports, and clears, whether something was queued for dest
// since its queue was last read.
func (s *Sender) takeAgain(dest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dests[dest]
	again := d.again
	d.again = false
	return again
}

// finish ends a run: after a failure, dest backs off.
func (s *Sender) finish(dest string, err error) {
	s.mu.Lock()
	d := s.dests[dest]
	d.running = false
	if err == nil || s.ctx.Err() != nil {
		again := d.again && s.ctx.Err() == nil
		d.again = false
		s.mu.Unlock()
		if again {
			s.kick(dest)
		}
		return
	}
	var re *RemoteError
	if errors.As(err, &re) && re.Status == http.StatusTooManyRequests {
		// Up, but asking us to slow down: a pause, not a failure.
		d.retryAt = s.now().Add(s.cfg.RateLimitedWait)
		if d.timer != nil {
			d.timer.Stop()
		}
		d.timer = time.AfterFunc(s.cfg.RateLimitedWait, func() { s.retry(dest) })
		s.mu.Unlock()
		slog.Info("federation: rate limited by the destination", "destination", dest, "pause", s.cfg.RateLimitedWait)
		return
	}
	d.failures++
	delay := s.backoff(d.failures)
	d.retryAt = s.now().Add(delay)
	d.stored = true
	b := storage.DestinationBackoff{Failures: d.failures, RetryAtMS: d.retryAt.UnixMilli()}
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timer = time.AfterFunc(delay, func() { s.retry(dest) })
	s.mu.Unlock()
	slog.Warn("federation: sending failed, backing off", "destination", dest, "failures", b.Failures, "retry_in", delay, "err", err)
	if err := s.db.SetDestinationBackoff(s.ctx, dest, b); err != nil && s.ctx.Err() == nil {
		slog.Error("federation: recording backoff", "destination", dest, "err", err)
	}
	if n, err := s.db.TrimQueue(s.ctx, dest, s.cfg.MaxQueuedPDUs, s.cfg.MaxQueuedEDUs); err != nil && s.ctx.Err() == nil {
		slog.Error("federation: trimming a queue", "destination", dest, "err", err)
	} else if n > 0 {
		slog.Warn("federation: oldest queued items dropped for a failing destination", "destination", dest, "dropped", n)
	}
}

// backoff is the wait after the n-th failure in a row: MinBackoff doubled
// n-1 times, capped at MaxBackoff, less up to a fifth at random so that
// servers that failed together do not all retry together.
func (s *Sender) backoff(n int) time.Duration {
	d := s.cfg.MaxBackoff
	if n-1 < 40 {
		if b := s.cfg.MinBackoff << (n - 1); b > 0 && b < d {
			d = b
		}
	}
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// sendResponse is a /send answer: per-PDU results, errors among them.
type sendResponse struct {
	PDUs map[string]struct {
		Error string `json:"error"`
	} `json:"pdus"`
}

// sendBatch sends one transaction of dest's oldest queued items and reports
// whether more may be waiting.
func (s *Sender) sendBatch(dest string) (more bool, err error) {
	pdus, edus, err := s.db.QueuedBatch(s.ctx, dest, s.cfg.MaxPDUs, s.cfg.MaxEDUs)
	if err != nil || len(pdus)+len(edus) == 0 {
		return false, err
	}
	txn := struct {
		Origin         string            `json:"origin"`
		OriginServerTS int64             `json:"origin_server_ts"`
		PDUs           []json.RawMessage `json:"pdus"`
		EDUs           []json.RawMessage `json:"edus,omitempty"`
	}{Origin: s.origin, OriginServerTS: s.now().UnixMilli(), PDUs: []json.RawMessage{}}
	seqs := make([]int64, 0, len(pdus)+len(edus))
	for _, p := range pdus {
		txn.PDUs = append(txn.PDUs, p.Body)
		seqs = append(seqs, p.Seq)
	}
	for _, e := range edus {
		txn.EDUs = append(txn.EDUs, e.Body)
		seqs = append(seqs, e.Seq)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	var resp sendResponse
	uri := "/_matrix/federation/v1/send/" + url.PathEscape(txnID(pdus, edus))
	err = s.client.DoJSON(ctx, dest, "PUT", uri, txn, &resp, true)
	var re *RemoteError
	if errors.As(err, &re) && (re.Status == http.StatusBadRequest || re.Status == http.StatusRequestEntityTooLarge) {
		// The destination refuses the transaction for what it holds:
		// sent again it would be refused again, and hold up everything
		// queued behind it for good. It is dropped.
		slog.Error("federation: destination refused a transaction, dropped", "destination", dest,
			"pdus", len(pdus), "edus", len(edus), "err", err)
	} else if err != nil {
		return false, fmt.Errorf("transaction to %s: %w", dest, err)
	}
	// Per-PDU errors are the destination's verdict on the events; sending
	// them again would get the same answer.
	for evID, r := range resp.PDUs {
		if r.Error != "" {
			slog.Info("federation: destination refused an event", "destination", dest, "event", evID, "error", r.Error)
		}
	}
	if err := s.db.Dequeue(s.ctx, dest, seqs); err != nil {
		return false, err
	}
	if err := s.succeeded(dest); err != nil {
		return false, err
	}
	return len(pdus) == s.cfg.MaxPDUs || len(edus) == s.cfg.MaxEDUs, nil
}

// succeeded clears a destination's recorded failures.
func (s *Sender) succeeded(dest string) error {
	s.mu.Lock()
	d := s.dests[dest]
	stored := d.stored
	d.failures, d.retryAt, d.stored = 0, time.Time{}, false
	s.mu.Unlock()
	if !stored {
		return nil
	}
	return s.db.SetDestinationBackoff(s.ctx, dest, storage.DestinationBackoff{})
}

// txnID names a transaction by the queue sequence numbers it holds. The
// same batch sent again (after a failure whose answer was lost) keeps its ID,
// so the destination can recognise the repeat; a different batch never
// reuses one, because sequence numbers are never reused and a batch is
// always the oldest items, fixed by its first and last.
func txnID(pdus, edus []storage.QueuedItem) string {
	var pf, pl, ef, el int64
	if len(pdus) > 0 {
		pf, pl = pdus[0].Seq, pdus[len(pdus)-1].Seq
	}
	if len(edus) > 0 {
		ef, el = edus[0].Seq, edus[len(edus)-1].Seq
	}
	return fmt.Sprintf("%x.%x.%x.%x", pf, pl, ef, el)
}
