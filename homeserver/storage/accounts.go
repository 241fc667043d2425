package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrExists is returned when creating something whose key is taken.
var ErrExists = errors.New("already exists")

// Account is a local user.
type Account struct {
	UserID       string
	Localpart    string
	PasswordHash string
	IsGuest      bool
	IsAdmin      bool
	Deactivated  bool
	DisplayName  string
	AvatarURL    string
}

// HashToken is how tokens are stored: a SHA-256, so the table holds nothing a
// thief could use.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateAccount inserts an account; ErrExists if the localpart is taken.
func (db *DB) CreateAccount(ctx context.Context, a Account, nowMS int64) error {
	var pw *string
	if a.PasswordHash != "" {
		pw = &a.PasswordHash
	}
	_, err := db.Pool.Exec(ctx, `INSERT INTO accounts (user_id, localpart, password_hash, is_guest, is_admin, displayname, avatar_url, created_ts)
		VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), NULLIF($7, ''), $8)`,
		a.UserID, a.Localpart, pw, a.IsGuest, a.IsAdmin, a.DisplayName, a.AvatarURL, nowMS)
	if isUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// AccountByUserID loads an account.
func (db *DB) AccountByUserID(ctx context.Context, userID string) (*Account, error) {
	var a Account
	err := db.Pool.QueryRow(ctx, `SELECT user_id, localpart, COALESCE(password_hash, ''), is_guest, is_admin, deactivated,
		COALESCE(displayname, ''), COALESCE(avatar_url, '') FROM accounts WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.Localpart, &a.PasswordHash, &a.IsGuest, &a.IsAdmin, &a.Deactivated, &a.DisplayName, &a.AvatarURL)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &a, err
}

// LocalpartTaken reports whether a localpart is in use.
func (db *DB) LocalpartTaken(ctx context.Context, localpart string) (bool, error) {
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE localpart = $1`, localpart).Scan(&n)
	return n > 0, err
}

// SetPassword replaces an account's password hash.
func (db *DB) SetPassword(ctx context.Context, userID, hash string) error {
	_, err := db.Pool.Exec(ctx, `UPDATE accounts SET password_hash = $2 WHERE user_id = $1`, userID, hash)
	return err
}

// Deactivate marks an account deactivated and removes its password, devices
// and tokens.
func (db *DB) Deactivate(ctx context.Context, userID string) error {
	defer db.deviceChanges.Add(1)
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET deactivated = true, password_hash = NULL WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM devices WHERE user_id = $1`, userID)
		return err
	})
}

// SetProfile updates display name and avatar (nil leaves a field as is).
func (db *DB) SetProfile(ctx context.Context, userID string, displayName, avatarURL *string) error {
	_, err := db.Pool.Exec(ctx, `UPDATE accounts SET
		displayname = CASE WHEN $2::boolean THEN NULLIF($3, '') ELSE displayname END,
		avatar_url = CASE WHEN $4::boolean THEN NULLIF($5, '') ELSE avatar_url END
		WHERE user_id = $1`, userID, displayName != nil, deref(displayName), avatarURL != nil, deref(avatarURL))
	return err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Device is a user's device.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenTS  int64
	LastSeenIP  string
}

// Session is what an access token stands for.
type Session struct {
	UserID    string
	DeviceID  string
	IsGuest   bool
	IsAdmin   bool
	ExpiresTS int64 // 0: never
}

// CreateSession creates (or reuses) a device and issues an access token for
// it, with an optional refresh token and expiry.
func (db *DB) CreateSession(ctx context.Context, userID, deviceID, displayName, accessToken, refreshToken string, expiresTS, nowMS int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, NULLIF($3, ''), $4, $4)
			ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name)`,
			userID, deviceID, displayName, nowMS); err != nil {
			return fmt.Errorf("device: %w", err)
		}
		// Logging in again with an existing device ID replaces its tokens.
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return err
		}
		var refresh []byte
		if refreshToken != "" {
			refresh = HashToken(refreshToken)
		}
		var exp *int64
		if expiresTS > 0 {
			exp = &expiresTS
		}
		_, err := tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)`,
			HashToken(accessToken), userID, deviceID, nowMS, exp, refresh)
		return err
	})
}

// SessionByToken resolves an access token.
func (db *DB) SessionByToken(ctx context.Context, accessToken string) (*Session, error) {
	var s Session
	var exp *int64
	err := db.Pool.QueryRow(ctx, `SELECT t.user_id, t.device_id, a.is_guest, a.is_admin, t.expires_ts
		FROM access_tokens t JOIN accounts a USING (user_id) WHERE t.token_hash = $1 AND NOT a.deactivated`, HashToken(accessToken)).
		Scan(&s.UserID, &s.DeviceID, &s.IsGuest, &s.IsAdmin, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if exp != nil {
		s.ExpiresTS = *exp
	}
	return &s, err
}

// Refresh swaps a refresh token for a new access/refresh pair on the same
// device. The old pair stops working.
func (db *DB) Refresh(ctx context.Context, refreshToken, newAccess, newRefresh string, expiresTS, nowMS int64) (userID, deviceID string, err error) {
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1 RETURNING user_id, device_id`, HashToken(refreshToken)).Scan(&userID, &deviceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)`,
			HashToken(newAccess), userID, deviceID, nowMS, expiresTS, HashToken(newRefresh))
		return err
	})
	return userID, deviceID, err
}

// DeleteDevices removes devices and their tokens; with no device IDs, all of
// the user's devices.
func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	defer db.deviceChanges.Add(1)
	if deviceIDs == nil {
		_, err := db.Pool.Exec(ctx, `DELETE FROM devices WHERE user_id = $1`, userID)
		return err
	}
	_, err := db.Pool.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)`, userID, deviceIDs)
	return err
}

// DeleteOtherSessions removes every device of the user but one (password change).
func (db *DB) DeleteOtherSessions(ctx context.Context, userID, keepDevice string) error {
	defer db.deviceChanges.Add(1)
	_, err := db.Pool.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2`, userID, keepDevice)
	return err
}

// Devices lists a user's devices.
func (db *DB) Devices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := db.Pool.Query(ctx, `SELECT user_id, device_id, COALESCE(display_name, ''), COALESCE(last_seen_ts, 0), COALESCE(last_seen_ip, '')
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) {
		var d Device
		err := r.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP)
		return d, err
	})
}

// RenameDevice sets a device's display name; ErrNotFound if it does not exist.
func (db *DB) RenameDevice(ctx context.Context, userID, deviceID, name string) error {
	defer db.deviceChanges.Add(1)
	tag, err := db.Pool.Exec(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// TouchDevice records when and from where a device was last seen.
func (db *DB) TouchDevice(ctx context.Context, userID, deviceID, ip string, nowMS int64) error {
	_, err := db.Pool.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, nowMS, ip)
	return err
}

// CreateLoginToken stores a single-use login token (m.login.token).
func (db *DB) CreateLoginToken(ctx context.Context, token, userID string, expiresTS int64) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`, HashToken(token), userID, expiresTS)
	return err
}

// UseLoginToken consumes a login token, returning its user if it was valid.
func (db *DB) UseLoginToken(ctx context.Context, token string, nowMS int64) (string, error) {
	var userID string
	var exp int64
	err := db.Pool.QueryRow(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, HashToken(token)).Scan(&userID, &exp)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && exp < nowMS) {
		return "", ErrNotFound
	}
	return userID, err
}

// UseRegistrationToken consumes one use of a registration token.
func (db *DB) UseRegistrationToken(ctx context.Context, token string, nowMS int64) (bool, error) {
	tag, err := db.Pool.Exec(ctx, `UPDATE registration_tokens SET completed = completed + 1
		WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, nowMS)
	return err == nil && tag.RowsAffected() == 1, err
}

// RegistrationTokenValid reports whether a registration token can be used.
func (db *DB) RegistrationTokenValid(ctx context.Context, token string, nowMS int64) (bool, error) {
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM registration_tokens
		WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, nowMS).Scan(&n)
	return n > 0, err
}

// CreateRegistrationToken adds a registration token (admin).
func (db *DB) CreateRegistrationToken(ctx context.Context, token string, usesAllowed *int, expiryTS *int64) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)`, token, usesAllowed, expiryTS)
	if isUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// SearchUsers finds local users whose ID or display name contains term,
// among those the searcher shares a room with or who are in a published
// room (the user directory's usual scope).
func (db *DB) SearchUsers(ctx context.Context, searcher, term string, limit int) ([]Account, error) {
	pattern := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(term)) + "%"
	rows, err := db.Pool.Query(ctx, `
		SELECT a.user_id, COALESCE(a.displayname, ''), COALESCE(a.avatar_url, '') FROM accounts a
		WHERE NOT a.deactivated AND NOT a.is_guest
		  AND (lower(a.user_id) LIKE $2 OR lower(COALESCE(a.displayname, '')) LIKE $2)
		  AND (a.user_id = $1 OR EXISTS (
			SELECT 1 FROM current_state c
			WHERE c.type = 'm.room.member' AND c.state_key = a.user_id AND c.membership = 'join'
			  AND (c.room_nid IN (SELECT room_nid FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join')
			       OR c.room_nid IN (SELECT room_nid FROM rooms WHERE published))))
		ORDER BY (lower(COALESCE(a.displayname, '')) LIKE $2) DESC, a.user_id LIMIT $3`, searcher, pattern, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) {
		var a Account
		err := r.Scan(&a.UserID, &a.DisplayName, &a.AvatarURL)
		return a, err
	})
}

// DeviceChanges counts device deletions and renames made through this
// process: readers of the queue the database fills on those (package e2ee)
// skip looking at it while the count has not moved.
func (db *DB) DeviceChanges() int64 { return db.deviceChanges.Load() }
