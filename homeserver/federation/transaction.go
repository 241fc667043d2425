package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
)

// The spec's bounds on one transaction.
const (
	maxPDUsPerTxn = 50
	// txnRate and txnBurst bound the transactions one origin may send: a
	// flooding server is slowed down, others are not.
	txnRate  = 20 // per second
	txnBurst = 100
	// maxTxnCache bounds the remembered answers to transactions.
	maxTxnCache = 10000
)

// inbound is the state /send keeps across requests: per-origin rate limits
// and the answers to recent transactions (a retried transaction gets the
// same answer and is not processed twice).
type inbound struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	done    map[string]json.RawMessage // origin + "\x00" + txnID → answer
	running map[string]chan struct{}
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (in *inbound) allow(origin string, now time.Time) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.buckets == nil {
		in.buckets = map[string]*bucket{}
	}
	b := in.buckets[origin]
	if b == nil {
		if len(in.buckets) > maxTxnCache {
			clear(in.buckets)
		}
		b = &bucket{tokens: txnBurst, last: now}
		in.buckets[origin] = b
	}
	b.tokens = min(txnBurst, b.tokens+now.Sub(b.last).Seconds()*txnRate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// transaction is the body of /send.
type transaction struct {
	Origin string            `json:"origin"`
	PDUs   []json.RawMessage `json:"pdus"`
	EDUs   []json.RawMessage `json:"edus"`
}

// parseTransaction decodes a /send body from origin and applies the spec's
// limits; its errors are the Matrix errors to answer with.
func parseTransaction(body []byte, origin string) (*transaction, error) {
	var txn transaction
	if err := httpapi.Unmarshal(body, &txn); err != nil {
		return nil, err
	}
	switch {
	case txn.Origin != "" && txn.Origin != origin:
		return nil, httpapi.Forbidden("transaction origin %q is not the signing server %s", txn.Origin, origin)
	case len(txn.PDUs) > maxPDUsPerTxn:
		return nil, httpapi.TooLarge("a transaction holds at most %d PDUs", maxPDUsPerTxn)
	case len(txn.EDUs) > maxEDUsPerTxn:
		return nil, httpapi.TooLarge("a transaction holds at most %d EDUs", maxEDUsPerTxn)
	}
	return &txn, nil
}

// PUT /send/{txnID}
func (s *Service) serveSend(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := Origin(ctx)
	txnID := httpapi.PathParam(r, "txnID")
	if !s.inbound.allow(origin, s.cfg.Now()) {
		httpapi.Fail(w, r, httpapi.LimitExceeded(1000))
		return
	}
	body, err := httpapi.ReadBody(r, s.cfg.MaxBodyBytes)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	txn, err := parseTransaction(body, origin)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	key := origin + "\x00" + txnID
	for {
		s.inbound.mu.Lock()
		if ans, ok := s.inbound.done[key]; ok {
			s.inbound.mu.Unlock()
			httpapi.RespondRaw(w, http.StatusOK, ans)
			return
		}
		wait, busy := s.inbound.running[key]
		if !busy {
			if s.inbound.running == nil {
				s.inbound.running = map[string]chan struct{}{}
			}
			wait = make(chan struct{})
			s.inbound.running[key] = wait
			s.inbound.mu.Unlock()
			defer func() {
				s.inbound.mu.Lock()
				delete(s.inbound.running, key)
				s.inbound.mu.Unlock()
				close(wait)
			}()
			break
		}
		s.inbound.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return
		}
	}
	// The PDUs are processed even if the sender hangs up: what was
	// accepted stays accepted, and the retry finds the answer.
	pctx := context.WithoutCancel(ctx)
	// The PDUs commit without waiting for the disk, one by one, and one
	// flush makes them all durable before the answer: the answer is the
	// promise, and a commit per PDU capped a busy room near 125 events/s.
	results := s.receivePDUs(room.DeferDurability(pctx), origin, txn.PDUs)
	if len(txn.PDUs) > 0 && s.locals.Rooms != nil {
		if err := s.locals.Rooms.FlushWAL(pctx); err != nil {
			// Unanswered, the sender retries; what is stored is skipped.
			httpapi.Fail(w, r, fmt.Errorf("making the transaction durable: %w", err))
			return
		}
	}
	s.receiveEDUs(pctx, origin, txn.EDUs)
	ans, _ := json.Marshal(map[string]any{"pdus": results})
	s.inbound.mu.Lock()
	if s.inbound.done == nil || len(s.inbound.done) > maxTxnCache {
		s.inbound.done = map[string]json.RawMessage{}
	}
	s.inbound.done[key] = ans
	s.inbound.mu.Unlock()
	httpapi.RespondRaw(w, http.StatusOK, ans)
}

// receivePDUs places a transaction's PDUs: in order within each room, the
// rooms side by side, so one room's slow gap filling does not hold up the
// others.
func (s *Service) receivePDUs(ctx context.Context, origin string, raws []json.RawMessage) map[string]any {
	byRoom := map[string][]json.RawMessage{}
	var order []string
	for _, raw := range raws {
		var head struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(raw, &head)
		if _, ok := byRoom[head.RoomID]; !ok {
			order = append(order, head.RoomID)
		}
		byRoom[head.RoomID] = append(byRoom[head.RoomID], raw)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	results := map[string]any{}
	for _, roomID := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func(pdus []json.RawMessage) {
			defer func() { <-sem; wg.Done() }()
			for _, raw := range pdus {
				evID, err := s.receivePDU(ctx, origin, raw)
				if evID == "" {
					continue // not even an event ID to answer about
				}
				res := s.pduResult(ctx, origin, evID, err)
				mu.Lock()
				results[evID] = res
				mu.Unlock()
			}
		}(byRoom[roomID])
	}
	wg.Wait()
	return results
}

// pduResult is the answer about one PDU.
func (s *Service) pduResult(ctx context.Context, origin, evID string, err error) any {
	switch {
	case errors.Is(err, room.ErrRejected):
		// Processed: stored as rejected. Like Synapse, the answer reports
		// errors only for PDUs that could not be processed.
		slog.InfoContext(ctx, "federation: PDU rejected", "origin", origin, "event", evID, "err", err)
		return map[string]any{}
	case err != nil:
		slog.InfoContext(ctx, "federation: PDU refused", "origin", origin, "event", evID, "err", err)
		return map[string]string{"error": err.Error()}
	}
	return map[string]any{}
}

// receivePDU places one PDU of a transaction. It returns the event's ID
// ("" when the PDU is too broken to have one).
func (s *Service) receivePDU(ctx context.Context, origin string, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if json.Unmarshal(raw, &head) != nil || !id.ValidRoomID(head.RoomID) || s.locals.Rooms == nil {
		return "", errors.New("not a PDU of a known room")
	}
	v, err := s.locals.Rooms.Version(ctx, head.RoomID)
	if err != nil {
		return "", err
	}
	// Parsed once, here; ReceiveEvent checks signatures and hashes.
	ev, err := event.Parse(v, raw)
	if err != nil {
		return "", err
	}
	if ev.RoomID() != head.RoomID {
		return ev.ID(), errors.New("room_id mismatch")
	}
	if err := s.aclAllows(ctx, head.RoomID, origin); err != nil {
		return ev.ID(), err
	}
	return ev.ID(), s.locals.Rooms.ReceiveEvent(ctx, origin, head.RoomID, ev)
}
