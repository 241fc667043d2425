package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// AccountData is one piece of a user's account data; RoomID is "" for
// global data.
type AccountData struct {
	RoomID, Type string
	Content      []byte // a JSON object
	StreamPos    int64
}

// errInsertRace makes an update retry when another writer created the row
// between our look-up and our insert.
var errInsertRace = errors.New("row created concurrently")

// PutAccountData sets a piece of account data (roomID "" for global).
func (db *DB) PutAccountData(ctx context.Context, userID, roomID, typ string, content []byte, pos int64) error {
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_pos = EXCLUDED.stream_pos`,
		userID, roomID, typ, string(content), pos)
	if err != nil {
		return fmt.Errorf("storing account data %s: %w", typ, err)
	}
	return nil
}

// GetAccountData returns a piece of account data, or ErrNotFound.
func (db *DB) GetAccountData(ctx context.Context, userID, roomID, typ string) ([]byte, error) {
	var content string
	err := db.Pool.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, typ).Scan(&content)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading account data %s: %w", typ, err)
	}
	return []byte(content), nil
}

// UpdateAccountData changes a piece of account data with f, which gets the
// current content (nil if unset) and returns the new one. The row is locked
// meanwhile, so concurrent read-modify-write updates (room tags) lose
// nothing. If f fails nothing is written; if it returns nil or the content
// unchanged, nothing is written either and changed is false.
func (db *DB) UpdateAccountData(ctx context.Context, userID, roomID, typ string, pos int64, f func(old []byte) ([]byte, error)) (bool, error) {
	changed, err := db.lockedUpdate(ctx,
		func(tx pgx.Tx) (string, error) {
			var s string
			err := tx.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3 FOR UPDATE`,
				userID, roomID, typ).Scan(&s)
			return s, err
		},
		func(tx pgx.Tx, content string, exists bool) error {
			if exists {
				_, err := tx.Exec(ctx, `UPDATE account_data SET content = $4, stream_pos = $5 WHERE user_id = $1 AND room_id = $2 AND type = $3`,
					userID, roomID, typ, content, pos)
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT DO NOTHING`, userID, roomID, typ, content, pos)
			if err == nil && tag.RowsAffected() == 0 {
				return errInsertRace
			}
			return err
		}, f)
	if err != nil {
		return false, fmt.Errorf("updating account data %s: %w", typ, err)
	}
	return changed, nil
}

// lockedUpdate runs a read-modify-write of one row in a transaction: read
// locks and returns the row (pgx.ErrNoRows if absent), f computes the new
// value, write stores it. A concurrent creation of the same row makes write
// return errInsertRace, and the whole update runs again on the row that now
// exists.
func (db *DB) lockedUpdate(ctx context.Context, read func(pgx.Tx) (string, error), write func(tx pgx.Tx, v string, exists bool) error,
	f func(old []byte) ([]byte, error)) (bool, error) {
	for {
		changed := false
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			old, err := read(tx)
			exists := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			var oldBytes []byte
			if exists {
				oldBytes = []byte(old)
			}
			v, err := f(oldBytes)
			if err != nil {
				return err
			}
			if v == nil || exists && string(v) == old {
				return nil
			}
			if err := write(tx, string(v), exists); err != nil {
				return err
			}
			changed = true
			return nil
		})
		if !errors.Is(err, errInsertRace) {
			return changed && err == nil, err
		}
	}
}

// AccountDataSince returns a user's account data that changed in (from,
// to], in stream order: global data if global is set, and the data of the
// given rooms.
func (db *DB) AccountDataSince(ctx context.Context, userID string, global bool, roomIDs []string, from, to int64) ([]AccountData, error) {
	if !global && len(roomIDs) == 0 {
		return nil, nil
	}
	rows, err := db.Pool.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND (($4 AND room_id = '') OR room_id = ANY($5))
		ORDER BY stream_pos`, userID, from, to, global, roomIDs)
	if err != nil {
		return nil, fmt.Errorf("reading account data: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccountData, error) {
		var a AccountData
		var content string
		err := row.Scan(&a.RoomID, &a.Type, &content, &a.StreamPos)
		a.Content = []byte(content)
		return a, err
	})
}

// PushRules returns a user's stored push rule changes and their stream
// position; nil and 0 if the user never changed anything.
func (db *DB) PushRules(ctx context.Context, userID string) ([]byte, int64, error) {
	var rules string
	var pos int64
	err := db.Pool.QueryRow(ctx, `SELECT rules, stream_pos FROM push_rules WHERE user_id = $1`, userID).Scan(&rules, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading push rules: %w", err)
	}
	return []byte(rules), pos, nil
}

// UpdatePushRules changes a user's stored push rule changes with f, as
// UpdateAccountData does for account data.
func (db *DB) UpdatePushRules(ctx context.Context, userID string, pos int64, f func(old []byte) ([]byte, error)) (bool, error) {
	changed, err := db.lockedUpdate(ctx,
		func(tx pgx.Tx) (string, error) {
			var s string
			err := tx.QueryRow(ctx, `SELECT rules FROM push_rules WHERE user_id = $1 FOR UPDATE`, userID).Scan(&s)
			return s, err
		},
		func(tx pgx.Tx, rules string, exists bool) error {
			if exists {
				_, err := tx.Exec(ctx, `UPDATE push_rules SET rules = $2, stream_pos = $3 WHERE user_id = $1`, userID, rules, pos)
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO push_rules (user_id, rules, stream_pos) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				userID, rules, pos)
			if err == nil && tag.RowsAffected() == 0 {
				return errInsertRace
			}
			return err
		}, f)
	if err != nil {
		return false, fmt.Errorf("updating push rules: %w", err)
	}
	return changed, nil
}

// FullyRead returns the event a user's m.fully_read marker points at in a
// room, or ErrNotFound.
func (db *DB) FullyRead(ctx context.Context, userID, roomID string) (string, error) {
	var eventID string
	err := db.Pool.QueryRow(ctx, `SELECT x.event_id FROM receipts x JOIN rooms r USING (room_nid)
		WHERE r.room_id = $1 AND x.user_id = $2 AND x.receipt_type = 'm.fully_read' AND x.thread_id = ''`,
		roomID, userID).Scan(&eventID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("reading the fully read marker: %w", err)
	}
	return eventID, nil
}
