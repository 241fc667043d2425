package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Queries for room previews (peek/snapshot): the first screen of a room
// without loading its whole state — a 20,000-member room's member events
// are megabytes to read and parse, and a preview needs only a handful.

// StateWithoutMembers returns the room's current state events other than
// m.room.member (name, topic, join rules, ...).
func (db *DB) StateWithoutMembers(ctx context.Context, roomNID int64) ([]*StoredEvent, error) {
	// Two ranges of the primary key around the member rows, rather than a
	// filter over all of them.
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM current_state c JOIN events e ON e.event_nid = c.event_nid
		JOIN rooms r ON r.room_nid = e.room_nid
		WHERE c.room_nid = $1 AND (c.type < 'm.room.member' OR c.type > 'm.room.member')`, roomNID)
	if err != nil {
		return nil, fmt.Errorf("state of room %d: %w", roomNID, err)
	}
	return db.scanEvents(rows)
}

// Memberships returns every user's current membership in the room.
func (db *DB) Memberships(ctx context.Context, roomNID int64) (map[string]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT state_key, COALESCE(membership, '') FROM current_state
		WHERE room_nid = $1 AND type = 'm.room.member'`, roomNID)
	if err != nil {
		return nil, fmt.Errorf("memberships of room %d: %w", roomNID, err)
	}
	defer rows.Close()
	out := map[string]string{}
	var user, m string
	for rows.Next() {
		if err := rows.Scan(&user, &m); err != nil {
			return nil, err
		}
		out[user] = m
	}
	return out, rows.Err()
}

// MemberEvents returns the current member events of the given users (those
// with none are left out).
func (db *DB) MemberEvents(ctx context.Context, roomNID int64, users []string) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM current_state c JOIN events e ON e.event_nid = c.event_nid
		JOIN rooms r ON r.room_nid = e.room_nid
		WHERE c.room_nid = $1 AND c.type = 'm.room.member' AND c.state_key = ANY($2)`, roomNID, users)
	if err != nil {
		return nil, fmt.Errorf("member events of room %d: %w", roomNID, err)
	}
	return db.scanEvents(rows)
}

// RoomMembership returns a user's current membership in a room ("" if
// none), and ErrNotFound if the room does not exist: one query where the
// room service would load the room's whole state to answer.
func (db *DB) RoomMembership(ctx context.Context, roomID, userID string) (string, error) {
	var m *string
	err := db.Pool.QueryRow(ctx, `SELECT (SELECT COALESCE(c.membership, '') FROM current_state c
		WHERE c.room_nid = r.room_nid AND c.type = 'm.room.member' AND c.state_key = $2)
		FROM rooms r WHERE r.room_id = $1`, roomID, userID).Scan(&m)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	if m == nil {
		return "", nil
	}
	return *m, nil
}
