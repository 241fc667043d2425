package storage

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Receipt is a read receipt or read marker.
type Receipt struct {
	RoomID, UserID, Type, ThreadID, EventID string
	EventPos, TS, StreamPos                 int64
}

// PutReceipt records a receipt, replacing the user's previous one of the
// same type and thread. A receipt never moves backwards: an older event than
// the one already read leaves it unchanged (and returns false).
func (db *DB) PutReceipt(ctx context.Context, roomNID int64, r Receipt) (bool, error) {
	tag, err := db.Pool.Exec(ctx, `
		INSERT INTO receipts (room_nid, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_nid, user_id, receipt_type, thread_id) DO UPDATE
		SET event_id = EXCLUDED.event_id, event_pos = EXCLUDED.event_pos, ts = EXCLUDED.ts, stream_pos = EXCLUDED.stream_pos
		WHERE receipts.event_pos < EXCLUDED.event_pos`,
		roomNID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventPos, r.TS, r.StreamPos)
	return tag.RowsAffected() == 1, err
}

// ReceiptsSince returns receipts of the given rooms that changed in (from, to].
func (db *DB) ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]Receipt, error) {
	rows, err := db.Pool.Query(ctx, `SELECT r.room_id, x.user_id, x.receipt_type, x.thread_id, x.event_id, x.event_pos, x.ts, x.stream_pos
		FROM receipts x JOIN rooms r USING (room_nid)
		WHERE r.room_id = ANY($1) AND x.stream_pos > $2 AND x.stream_pos <= $3 ORDER BY x.stream_pos`, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Receipt, error) {
		var r Receipt
		err := row.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos)
		return r, err
	})
}

// ReadUpTo returns the stream position of the latest event a user has read
// in each room (from m.read and m.read.private), 0 if none.
func (db *DB) ReadUpTo(ctx context.Context, userID string, roomIDs []string) (map[string]int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT r.room_id, max(x.event_pos) FROM receipts x JOIN rooms r USING (room_nid)
		WHERE x.user_id = $1 AND r.room_id = ANY($2) AND x.receipt_type IN ('m.read', 'm.read.private') GROUP BY r.room_id`, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return nil, err
		}
		out[id] = pos
	}
	return out, rows.Err()
}

// UnreadEvents returns up to limit timeline events of a room in (after,
// upto], not sent by userID, oldest first: the candidates for unread counts,
// which push rules then judge.
func (db *DB) UnreadEvents(ctx context.Context, roomNID, after, upto int64, userID string, limit int) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.room_nid = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3 AND e.sender <> $4 AND NOT e.rejected AND NOT e.soft_failed
		ORDER BY e.stream_pos LIMIT $5`, roomNID, after, upto, userID, limit)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// StreamPosOf returns an event's stream position (0 for outliers).
func (db *DB) StreamPosOf(ctx context.Context, eventID string) (int64, string, error) {
	var pos int64
	var roomID string
	err := db.Pool.QueryRow(ctx, `SELECT COALESCE(e.stream_pos, 0), r.room_id FROM events e JOIN rooms r USING (room_nid) WHERE e.event_id = $1`, eventID).Scan(&pos, &roomID)
	if err == pgx.ErrNoRows {
		return 0, "", ErrNotFound
	}
	return pos, roomID, err
}
