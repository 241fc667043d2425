package storage

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// QueuedItem is a PDU or EDU waiting in the outbound federation queue.
type QueuedItem struct {
	Seq  int64
	Body []byte
}

// Queued is one item to add to a destination's outbound queue.
type Queued struct {
	Destination string
	IsEDU       bool
	Body        []byte
}

// Enqueue adds items to the outbound queues in one statement: all are
// queued or none, each destination's in the order given.
func (db *DB) Enqueue(ctx context.Context, items []Queued) error {
	if len(items) == 0 {
		return nil
	}
	dests := make([]string, len(items))
	edus := make([]bool, len(items))
	bodies := make([][]byte, len(items))
	for i, it := range items {
		dests[i], edus[i], bodies[i] = it.Destination, it.IsEDU, it.Body
	}
	// ORDER BY the ordinality: sequence numbers follow the given order.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO federation_queue (destination, is_edu, body)
		SELECT d, e, b FROM unnest($1::text[], $2::bool[], $3::bytea[]) WITH ORDINALITY AS t(d, e, b, n) ORDER BY n`,
		dests, edus, bodies); err != nil {
		return fmt.Errorf("queueing for federation: %w", err)
	}
	return nil
}

// QueuedBatch returns the oldest maxPDUs PDUs and maxEDUs EDUs queued for
// destination.
func (db *DB) QueuedBatch(ctx context.Context, destination string, maxPDUs, maxEDUs int) (pdus, edus []QueuedItem, err error) {
	rows, err := db.Pool.Query(ctx, `
		(SELECT seq, is_edu, body FROM federation_queue WHERE destination = $1 AND NOT is_edu ORDER BY seq LIMIT $2)
		UNION ALL
		(SELECT seq, is_edu, body FROM federation_queue WHERE destination = $1 AND is_edu ORDER BY seq LIMIT $3)
		ORDER BY seq`, destination, maxPDUs, maxEDUs)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the federation queue: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var it QueuedItem
		var isEDU bool
		if err := rows.Scan(&it.Seq, &isEDU, &it.Body); err != nil {
			return nil, nil, fmt.Errorf("reading the federation queue: %w", err)
		}
		if isEDU {
			edus = append(edus, it)
		} else {
			pdus = append(pdus, it)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading the federation queue: %w", err)
	}
	return pdus, edus, nil
}

// Dequeue removes sent items from destination's queue.
func (db *DB) Dequeue(ctx context.Context, destination string, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	if _, err := db.Pool.Exec(ctx, `DELETE FROM federation_queue WHERE destination = $1 AND seq = ANY($2)`, destination, seqs); err != nil {
		return fmt.Errorf("dequeueing sent federation items: %w", err)
	}
	return nil
}

// QueuedDestinations returns the destinations with something queued.
func (db *DB) QueuedDestinations(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT destination FROM federation_queue`)
	if err != nil {
		return nil, fmt.Errorf("listing federation destinations: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DestinationBackoff is a failing destination's retry state.
type DestinationBackoff struct {
	Failures  int
	RetryAtMS int64
}

// DestinationBackoffs returns the retry state of every failing destination.
func (db *DB) DestinationBackoffs(ctx context.Context) (map[string]DestinationBackoff, error) {
	rows, err := db.Pool.Query(ctx, `SELECT destination, failures, retry_at_ms FROM federation_destinations`)
	if err != nil {
		return nil, fmt.Errorf("reading federation backoffs: %w", err)
	}
	defer rows.Close()
	out := map[string]DestinationBackoff{}
	for rows.Next() {
		var d string
		var b DestinationBackoff
		if err := rows.Scan(&d, &b.Failures, &b.RetryAtMS); err != nil {
			return nil, fmt.Errorf("reading federation backoffs: %w", err)
		}
		out[d] = b
	}
	return out, rows.Err()
}

// SetDestinationBackoff records a failing destination's retry state, or,
// with zero failures, forgets it.
func (db *DB) SetDestinationBackoff(ctx context.Context, destination string, b DestinationBackoff) error {
	var err error
	if b.Failures == 0 {
		_, err = db.Pool.Exec(ctx, `DELETE FROM federation_destinations WHERE destination = $1`, destination)
	} else {
		_, err = db.Pool.Exec(ctx, `INSERT INTO federation_destinations (destination, failures, retry_at_ms) VALUES ($1, $2, $3)
			ON CONFLICT (destination) DO UPDATE SET failures = EXCLUDED.failures, retry_at_ms = EXCLUDED.retry_at_ms`,
			destination, b.Failures, b.RetryAtMS)
	}
	if err != nil {
		return fmt.Errorf("recording federation backoff: %w", err)
	}
	return nil
}

// PublishedRoomIDs returns the rooms listed in the public room directory.
func (db *DB) PublishedRoomIDs(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id FROM rooms WHERE published ORDER BY room_nid`)
	if err != nil {
		return nil, fmt.Errorf("published rooms: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// TrimQueue keeps only the newest maxPDUs PDUs and maxEDUs EDUs queued for
// destination and returns how many items went.
func (db *DB) TrimQueue(ctx context.Context, destination string, maxPDUs, maxEDUs int) (int64, error) {
	tag, err := db.Pool.Exec(ctx, `DELETE FROM federation_queue q WHERE destination = $1 AND (
		(NOT is_edu AND seq < (SELECT seq FROM federation_queue WHERE destination = $1 AND NOT is_edu ORDER BY seq DESC OFFSET $2 - 1 LIMIT 1))
		OR (is_edu AND seq < (SELECT seq FROM federation_queue WHERE destination = $1 AND is_edu ORDER BY seq DESC OFFSET $3 - 1 LIMIT 1)))`,
		destination, maxPDUs, maxEDUs)
	if err != nil {
		return 0, fmt.Errorf("trimming the federation queue: %w", err)
	}
	return tag.RowsAffected(), nil
}
