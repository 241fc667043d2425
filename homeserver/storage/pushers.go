package storage

// Storage of pushers (package accountdata). The schema and its reasons are in
// migrations/150_pushers.sql.

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Pusher is one of a user's pushers.
type Pusher struct {
	UserID, AppID, Pushkey, Kind      string
	AppDisplayName, DeviceDisplayName string
	ProfileTag, Lang                  string
	Data                              []byte // the client's JSON object
	DeviceID                          string // the device that set it
}

// maxPushersPerUser bounds a user's pushers; a client that sets a new one at
// every start without removing the old one would otherwise grow the table
// without end.
const maxPushersPerUser = 100

// ErrTooManyPushers is returned when a user already has maxPushersPerUser
// pushers and sets a new one.
var ErrTooManyPushers = fmt.Errorf("more than %d pushers", maxPushersPerUser)

// SetPusher creates or replaces the user's pusher of p's app ID and push key.
// Unless appendOthers, other users' pushers of the same app ID and push key
// are removed.
func (db *DB) SetPusher(ctx context.Context, p Pusher, appendOthers bool) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		// Serialise the user's pusher writes so the count check holds.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('plaza.pushers:' || $1, 0))`, p.UserID); err != nil {
			return fmt.Errorf("locking pushers: %w", err)
		}
		// A pusher lives as long as the device that set it (Synapse removes
		// it at logout); the devices' owners delete devices without knowing
		// of pushers, so pushers of deleted devices are ignored by the
		// readers below and cleared here.
		if _, err := tx.Exec(ctx, `DELETE FROM pushers p WHERE p.user_id = $1
			AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = p.user_id AND d.device_id = p.device_id)`, p.UserID); err != nil {
			return fmt.Errorf("clearing pushers of deleted devices: %w", err)
		}
		if !appendOthers {
			if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`,
				p.AppID, p.Pushkey, p.UserID); err != nil {
				return fmt.Errorf("removing other users' pushers: %w", err)
			}
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM pushers WHERE user_id = $1 AND NOT (app_id = $2 AND pushkey = $3)`,
			p.UserID, p.AppID, p.Pushkey).Scan(&n); err != nil {
			return fmt.Errorf("counting pushers: %w", err)
		}
		if n >= maxPushersPerUser {
			return ErrTooManyPushers
		}
		_, err := tx.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = EXCLUDED.kind, app_display_name = EXCLUDED.app_display_name,
				device_display_name = EXCLUDED.device_display_name, profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang,
				data = EXCLUDED.data, device_id = EXCLUDED.device_id`,
			p.UserID, p.AppID, p.Pushkey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, p.Data, p.DeviceID)
		if err != nil {
			return fmt.Errorf("storing pusher: %w", err)
		}
		return nil
	})
}

// DeletePusher removes the user's pusher of an app ID and push key, if any.
func (db *DB) DeletePusher(ctx context.Context, userID, appID, pushkey string) error {
	if _, err := db.Pool.Exec(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushkey); err != nil {
		return fmt.Errorf("deleting pusher: %w", err)
	}
	return nil
}

// liveDevice is the condition on pushers p that the device that set the
// pusher still exists (see SetPusher).
const liveDevice = `EXISTS (SELECT 1 FROM devices d WHERE d.user_id = p.user_id AND d.device_id = p.device_id)`

// Pushers returns a user's pushers, oldest first.
func (db *DB) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := db.Pool.Query(ctx, `SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id
		FROM pushers p WHERE user_id = $1 AND `+liveDevice+`
		ORDER BY created_at, app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("reading pushers: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Pusher, error) {
		var p Pusher
		err := row.Scan(&p.UserID, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &p.Data, &p.DeviceID)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading pushers: %w", err)
	}
	return ps, nil
}

// RoomPushers returns the http pushers of the users joined to a room, the
// users whose notifications an event of the room may have to be pushed to.
func (db *DB) RoomPushers(ctx context.Context, roomID string) ([]Pusher, error) {
	rows, err := db.Pool.Query(ctx, `SELECT p.user_id, p.app_id, p.pushkey, p.kind, p.app_display_name, p.device_display_name, p.profile_tag, p.lang, p.data, p.device_id
		FROM pushers p
		JOIN current_state c ON c.type = 'm.room.member' AND c.state_key = p.user_id AND c.membership = 'join'
		JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.room_id = $1 AND p.kind = 'http' AND `+liveDevice+`
		ORDER BY p.user_id, p.created_at`, roomID)
	if err != nil {
		return nil, fmt.Errorf("pushers of room %s: %w", roomID, err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Pusher, error) {
		var p Pusher
		err := row.Scan(&p.UserID, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &p.Data, &p.DeviceID)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("pushers of room %s: %w", roomID, err)
	}
	return ps, nil
}
