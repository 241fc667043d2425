package storage

// Storage of server-side key backups (package keybackup). The schema and its
// reasons are in migrations/140_key_backup.sql.

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrNoKeyBackup is returned for a backup version that does not exist or was
// deleted.
var ErrNoKeyBackup = errors.New("no such key backup version")

// WrongKeyBackupVersionError is returned when keys are written to a version
// that exists but is not the user's current one. Current is the current
// version.
type WrongKeyBackupVersionError struct{ Current int64 }

func (e *WrongKeyBackupVersionError) Error() string {
	return fmt.Sprintf("key backup version is not the current one (%d)", e.Current)
}

// KeyBackupVersion describes one backup version of a user.
type KeyBackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  []byte // as the client sent it
	Etag      int64
	Count     int64 // keys stored in it
}

// BackedUpKey is one session key of a backup.
type BackedUpKey struct {
	RoomID, SessionID string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte // as the client sent it
}

// lockKeyBackups serialises a user's backup writes: creating and deleting
// versions take it exclusively, key writes shared, so keys are never written
// to a version that stopped being current while the write ran.
func lockKeyBackups(ctx context.Context, tx pgx.Tx, userID string, exclusive bool) error {
	q := `SELECT pg_advisory_xact_lock_shared(hashtextextended('plaza.keybackup:' || $1, 0))`
	if exclusive {
		q = `SELECT pg_advisory_xact_lock(hashtextextended('plaza.keybackup:' || $1, 0))`
	}
	if _, err := tx.Exec(ctx, q, userID); err != nil {
		return fmt.Errorf("locking key backups: %w", err)
	}
	return nil
}

// CreateKeyBackup creates a new backup version, which becomes the current
// one, and returns its number.
func (db *DB) CreateKeyBackup(ctx context.Context, userID, algorithm string, authData []byte) (int64, error) {
	var version int64
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lockKeyBackups(ctx, tx, userID, true); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data)
			SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 FROM key_backup_versions WHERE user_id = $1
			RETURNING version`, userID, algorithm, authData).Scan(&version)
	})
	if err != nil {
		return 0, fmt.Errorf("creating key backup: %w", err)
	}
	return version, nil
}

// KeyBackup returns a backup version, or the current one when version is 0.
// A deleted or unknown version is ErrNoKeyBackup.
func (db *DB) KeyBackup(ctx context.Context, userID string, version int64) (*KeyBackupVersion, error) {
	v := &KeyBackupVersion{}
	err := db.Pool.QueryRow(ctx, `SELECT v.version, v.algorithm, v.auth_data, v.etag,
			(SELECT COUNT(*) FROM key_backup_sessions s WHERE s.user_id = v.user_id AND s.version = v.version)
		FROM key_backup_versions v
		WHERE v.user_id = $1 AND NOT v.deleted AND ($2 = 0 OR v.version = $2)
		ORDER BY v.version DESC LIMIT 1`, userID, version).Scan(&v.Version, &v.Algorithm, &v.AuthData, &v.Etag, &v.Count)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoKeyBackup
	}
	if err != nil {
		return nil, fmt.Errorf("reading key backup: %w", err)
	}
	return v, nil
}

// UpdateKeyBackup replaces the auth_data of a backup version. The caller has
// checked that the algorithm is unchanged.
func (db *DB) UpdateKeyBackup(ctx context.Context, userID string, version int64, authData []byte) error {
	tag, err := db.Pool.Exec(ctx, `UPDATE key_backup_versions SET auth_data = $3
		WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version, authData)
	if err != nil {
		return fmt.Errorf("updating key backup: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNoKeyBackup
	}
	return nil
}

// DeleteKeyBackup deletes a backup version and its keys. Its number is kept
// so that it is never reused.
func (db *DB) DeleteKeyBackup(ctx context.Context, userID string, version int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lockKeyBackups(ctx, tx, userID, true); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE key_backup_versions SET deleted = true, auth_data = '\x'
			WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version)
		if err != nil {
			return fmt.Errorf("deleting key backup: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNoKeyBackup
		}
		if _, err := tx.Exec(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return fmt.Errorf("deleting key backup keys: %w", err)
		}
		return nil
	})
}

// checkCurrentKeyBackup fails unless version is the user's current backup:
// ErrNoKeyBackup when it does not exist, *WrongKeyBackupVersionError when a
// newer one does.
func checkCurrentKeyBackup(ctx context.Context, tx pgx.Tx, userID string, version int64) error {
	var current int64
	var exists bool
	err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0), bool_or(version = $2) FROM key_backup_versions
		WHERE user_id = $1 AND NOT deleted`, userID, version).Scan(&current, &exists)
	if err != nil {
		return fmt.Errorf("reading current key backup: %w", err)
	}
	if !exists {
		return ErrNoKeyBackup
	}
	if current != version {
		return &WrongKeyBackupVersionError{Current: current}
	}
	return nil
}

// PutBackupKeys stores keys in the user's current backup version, keeping for
// each session whichever of the stored and the new key the spec prefers:
// the verified one, then the one with the lower first_message_index, then
// the one forwarded fewer times (an equal key keeps the stored one). It
// returns the version's etag and key count afterwards; the etag moves only
// if a key was written.
func (db *DB) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackedUpKey) (etag, count int64, err error) {
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lockKeyBackups(ctx, tx, userID, false); err != nil {
			return err
		}
		if err := checkCurrentKeyBackup(ctx, tx, userID, version); err != nil {
			return err
		}
		var b pgx.Batch
		for _, k := range keys {
			b.Queue(`INSERT INTO key_backup_sessions AS s (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
					first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
					is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data
				WHERE (EXCLUDED.is_verified AND NOT s.is_verified)
					OR (EXCLUDED.is_verified = s.is_verified AND (EXCLUDED.first_message_index < s.first_message_index
						OR (EXCLUDED.first_message_index = s.first_message_index AND EXCLUDED.forwarded_count < s.forwarded_count)))`,
				userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, k.SessionData)
		}
		written := false
		if len(keys) > 0 {
			res := tx.SendBatch(ctx, &b)
			for range keys {
				tag, err := res.Exec()
				if err != nil {
					_ = res.Close()
					return fmt.Errorf("storing backed-up key: %w", err)
				}
				written = written || tag.RowsAffected() > 0
			}
			if err := res.Close(); err != nil {
				return fmt.Errorf("storing backed-up keys: %w", err)
			}
		}
		return versionCounts(ctx, tx, userID, version, written, &etag, &count)
	})
	return etag, count, err
}

// versionCounts reads a version's etag, bumping it first if bump, and its
// key count.
func versionCounts(ctx context.Context, tx pgx.Tx, userID string, version int64, bump bool, etag, count *int64) error {
	err := tx.QueryRow(ctx, `UPDATE key_backup_versions SET etag = etag + CASE WHEN $3 THEN 1 ELSE 0 END
		WHERE user_id = $1 AND version = $2
		RETURNING etag, (SELECT COUNT(*) FROM key_backup_sessions WHERE user_id = $1 AND version = $2)`,
		userID, version, bump).Scan(etag, count)
	if err != nil {
		return fmt.Errorf("reading key backup etag: %w", err)
	}
	return nil
}

// BackupKeys returns the keys of a backup version (which need not be the
// current one), all of them, a room's (roomID set) or one session's (both
// set). A deleted or unknown version is ErrNoKeyBackup.
func (db *DB) BackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackedUpKey, error) {
	var keys []BackedUpKey
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted)`,
			userID, version).Scan(&exists); err != nil {
			return fmt.Errorf("reading key backup: %w", err)
		}
		if !exists {
			return ErrNoKeyBackup
		}
		rows, err := tx.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
			FROM key_backup_sessions
			WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
			ORDER BY room_id, session_id`, userID, version, roomID, sessionID)
		if err != nil {
			return fmt.Errorf("reading backed-up keys: %w", err)
		}
		keys, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (BackedUpKey, error) {
			var k BackedUpKey
			err := row.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &k.SessionData)
			return k, err
		})
		if err != nil {
			return fmt.Errorf("reading backed-up keys: %w", err)
		}
		return nil
	})
	return keys, err
}

// DeleteBackupKeys deletes keys of a backup version: all, a room's (roomID
// set) or one session's (both set). It returns the version's etag and key
// count afterwards. A deleted or unknown version is ErrNoKeyBackup.
func (db *DB) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (etag, count int64, err error) {
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lockKeyBackups(ctx, tx, userID, false); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted)`,
			userID, version).Scan(&exists); err != nil {
			return fmt.Errorf("reading key backup: %w", err)
		}
		if !exists {
			return ErrNoKeyBackup
		}
		tag, err := tx.Exec(ctx, `DELETE FROM key_backup_sessions
			WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
			userID, version, roomID, sessionID)
		if err != nil {
			return fmt.Errorf("deleting backed-up keys: %w", err)
		}
		return versionCounts(ctx, tx, userID, version, tag.RowsAffected() > 0, &etag, &count)
	})
	return etag, count, err
}
