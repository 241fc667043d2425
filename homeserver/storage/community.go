package storage

// Queries for rooms on demand (package community): forge associations,
// webhooks and the activity feed.

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CommunityRoom associates a room (or space) with a forge repository (or
// owner).
type CommunityRoom struct {
	RoomID   string
	Forge    string // identity provider id
	Flavour  string // github or gitlab
	Kind     string // repo or owner
	Path     string
	ForgeID  int64
	WebURL   string
	Private  bool
	ParentID string // "" when none
}

const communityRoomColumns = `room_id, forge, flavour, kind, path, forge_id, web_url, private, COALESCE(parent_id, '')`

func scanCommunityRoom(row pgx.Row) (*CommunityRoom, error) {
	var c CommunityRoom
	err := row.Scan(&c.RoomID, &c.Forge, &c.Flavour, &c.Kind, &c.Path, &c.ForgeID, &c.WebURL, &c.Private, &c.ParentID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &c, err
}

// CommunityRoomByPath finds the room of a forge path (compared
// case-insensitively).
func (db *DB) CommunityRoomByPath(ctx context.Context, forge, kind, path string) (*CommunityRoom, error) {
	return scanCommunityRoom(db.Pool.QueryRow(ctx, `SELECT `+communityRoomColumns+` FROM community_rooms
		WHERE forge = $1 AND kind = $2 AND path_key = lower($3) AND NOT starts_with(room_id, 'pending:')`, forge, kind, path))
}

// CommunityRoomByID finds a room's association; ErrNotFound for rooms
// community did not create.
func (db *DB) CommunityRoomByID(ctx context.Context, roomID string) (*CommunityRoom, error) {
	return scanCommunityRoom(db.Pool.QueryRow(ctx, `SELECT `+communityRoomColumns+` FROM community_rooms WHERE room_id = $1`, roomID))
}

// CommunityRoomByForgeID finds the room of a forge id: a repository keeps
// its id when renamed.
func (db *DB) CommunityRoomByForgeID(ctx context.Context, forge, kind string, forgeID int64) (*CommunityRoom, error) {
	return scanCommunityRoom(db.Pool.QueryRow(ctx, `SELECT `+communityRoomColumns+` FROM community_rooms
		WHERE forge = $1 AND kind = $2 AND forge_id = $3 AND NOT starts_with(room_id, 'pending:') ORDER BY created_ts LIMIT 1`, forge, kind, forgeID))
}

// MoveCommunityRoom records a room's new forge path and web URL (a rename
// on the forge). ErrExists: another room has that path.
func (db *DB) MoveCommunityRoom(ctx context.Context, roomID, path, webURL string) error {
	_, err := db.Pool.Exec(ctx, `UPDATE community_rooms SET path = $2, path_key = lower($2), web_url = $3 WHERE room_id = $1`, roomID, path, webURL)
	if isUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// SetCommunityRoomPrivate records that a repository became private or
// public.
func (db *DB) SetCommunityRoomPrivate(ctx context.Context, roomID string, private bool) error {
	_, err := db.Pool.Exec(ctx, `UPDATE community_rooms SET private = $2 WHERE room_id = $1`, roomID, private)
	return err
}

// CountCommunityWebhooks counts a room's webhooks.
func (db *DB) CountCommunityWebhooks(ctx context.Context, roomID string) (int, error) {
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM community_webhooks WHERE room_id = $1`, roomID).Scan(&n)
	return n, err
}

// DeleteCommunityWebhook removes a room's webhook; ErrNotFound if the room
// has no such webhook.
func (db *DB) DeleteCommunityWebhook(ctx context.Context, roomID, hookID string) error {
	tag, err := db.Pool.Exec(ctx, `DELETE FROM community_webhooks WHERE room_id = $1 AND hook_id = $2`, roomID, hookID)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// Claims. A creation first claims its path with a placeholder row whose
// room_id is "pending:<claim id>" (real room IDs start with '!'); the unique
// (forge, kind, path_key) lets one claim win across processes, without
// holding a connection or a lock while the room is made. The winner
// completes the row with the room, or abandons it; a claim older than
// staleBeforeMS (its process died) may be taken over.

const pendingPrefix = "pending:"

// ClaimCommunityRoom claims c's path for a creation. It returns the room
// when the path has one, claimed when the caller won and must create it,
// or neither when another creation is under way (ask again shortly).
func (db *DB) ClaimCommunityRoom(ctx context.Context, c CommunityRoom, claimID string, nowMS, staleBeforeMS int64) (roomID string, claimed bool, err error) {
	_, err = db.Pool.Exec(ctx, `DELETE FROM community_rooms WHERE forge = $1 AND kind = $2 AND path_key = lower($3)
		AND starts_with(room_id, 'pending:') AND created_ts < $4`, c.Forge, c.Kind, c.Path, staleBeforeMS)
	if err != nil {
		return "", false, err
	}
	tag, err := db.Pool.Exec(ctx, `INSERT INTO community_rooms (room_id, forge, flavour, kind, path, path_key, forge_id, web_url, private, created_ts)
		VALUES ($1, $2, $3, $4, $5, lower($5), 0, '', false, $6) ON CONFLICT (forge, kind, path_key) DO NOTHING`,
		pendingPrefix+claimID, c.Forge, c.Flavour, c.Kind, c.Path, nowMS)
	if err != nil {
		return "", false, err
	}
	if tag.RowsAffected() == 1 {
		return "", true, nil
	}
	err = db.Pool.QueryRow(ctx, `SELECT room_id FROM community_rooms WHERE forge = $1 AND kind = $2 AND path_key = lower($3)`,
		c.Forge, c.Kind, c.Path).Scan(&roomID)
	if errors.Is(err, pgx.ErrNoRows) || strings.HasPrefix(roomID, pendingPrefix) {
		return "", false, nil // pending, or abandoned just now
	}
	return roomID, false, err
}

// CompleteCommunityClaim turns a claim into the association of the room
// made. ErrNotFound: the claim was taken over as stale meanwhile.
func (db *DB) CompleteCommunityClaim(ctx context.Context, claimID string, c CommunityRoom) error {
	tag, err := db.Pool.Exec(ctx, `UPDATE community_rooms SET room_id = $2, path = $3, path_key = lower($3), forge_id = $4,
		web_url = $5, private = $6, parent_id = NULLIF($7, '') WHERE room_id = $1`,
		pendingPrefix+claimID, c.RoomID, c.Path, c.ForgeID, c.WebURL, c.Private, c.ParentID)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// AbandonCommunityClaim drops a claim whose creation failed.
func (db *DB) AbandonCommunityClaim(ctx context.Context, claimID string) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM community_rooms WHERE room_id = $1`, pendingPrefix+claimID)
	return err
}

// CommunityWebhook is a webhook set up for a room.
type CommunityWebhook struct {
	HookID    string
	RoomID    string
	Flavour   string
	Secret    string
	CreatedBy string
}

// AddCommunityWebhook records a webhook.
func (db *DB) AddCommunityWebhook(ctx context.Context, h CommunityWebhook, nowMS int64) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO community_webhooks (hook_id, room_id, flavour, secret, created_by, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, h.HookID, h.RoomID, h.Flavour, h.Secret, h.CreatedBy, nowMS)
	return err
}

// CommunityWebhook looks a webhook up by id.
func (db *DB) CommunityWebhook(ctx context.Context, hookID string) (*CommunityWebhook, error) {
	h := CommunityWebhook{HookID: hookID}
	err := db.Pool.QueryRow(ctx, `SELECT room_id, flavour, secret, created_by FROM community_webhooks WHERE hook_id = $1`, hookID).
		Scan(&h.RoomID, &h.Flavour, &h.Secret, &h.CreatedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &h, err
}

// CommunityActivity is one item of a room's activity feed.
type CommunityActivity struct {
	ID         int64
	RoomID     string
	DeliveryID string
	Kind       string
	Actor      string
	Summary    string
	URL        string
	EventID    string
	CreatedTS  int64
}

// AddCommunityActivity records an item; false if the delivery was
// recorded before (a redelivery), in which case nothing changes.
func (db *DB) AddCommunityActivity(ctx context.Context, a CommunityActivity) (int64, bool, error) {
	var id int64
	err := db.Pool.QueryRow(ctx, `INSERT INTO community_activity (room_id, delivery_id, kind, actor, summary, url, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, delivery_id) DO NOTHING RETURNING id`,
		a.RoomID, a.DeliveryID, a.Kind, a.Actor, a.Summary, a.URL, a.CreatedTS).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return id, err == nil, err
}

// SetCommunityActivityEvent records the notice an item was posted as.
func (db *DB) SetCommunityActivityEvent(ctx context.Context, id int64, eventID string) error {
	_, err := db.Pool.Exec(ctx, `UPDATE community_activity SET event_id = $2 WHERE id = $1`, id, eventID)
	return err
}

// DeleteCommunityActivity removes an item whose notice could not be sent,
// so a redelivery may try again.
func (db *DB) DeleteCommunityActivity(ctx context.Context, id int64) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM community_activity WHERE id = $1`, id)
	return err
}

// CommunityActivities lists a room's latest activity, newest first.
func (db *DB) CommunityActivities(ctx context.Context, roomID string, limit int) ([]CommunityActivity, error) {
	rows, err := db.Pool.Query(ctx, `SELECT id, room_id, delivery_id, kind, actor, summary, url, COALESCE(event_id, ''), created_ts
		FROM community_activity WHERE room_id = $1 AND event_id IS NOT NULL ORDER BY id DESC LIMIT $2`, roomID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CommunityActivity, error) {
		var a CommunityActivity
		err := r.Scan(&a.ID, &a.RoomID, &a.DeliveryID, &a.Kind, &a.Actor, &a.Summary, &a.URL, &a.EventID, &a.CreatedTS)
		return a, err
	})
}
