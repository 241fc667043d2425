package storage

// Storage of the end-to-end encryption service (package e2ee): device and
// cross-signing keys, one-time and fallback keys, signatures, to-device
// messages and the device-list change log. The schema and its reasons are in
// migrations/*_e2ee.sql.

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"plaza/homeserver/canonicaljson"
)

// ErrKeyConflict is returned when an upload reuses a one-time key ID with a
// different key: keys are immutable once published.
var ErrKeyConflict = errors.New("key ID already used for a different key")

// E2EEKey is a one-time or fallback key: its algorithm, its ID (the part of
// "<algorithm>:<id>" after the colon) and its JSON value as uploaded.
type E2EEKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte
}

// KeyUpload is one /keys/upload request, validated.
type KeyUpload struct {
	UserID, DeviceID string
	DeviceKeys       []byte // canonical JSON; nil when the request has none
	OneTimeKeys      []E2EEKey
	FallbackKeys     []E2EEKey // at most one per algorithm
}

// OTKCounts is what a device holds on the server: unclaimed one-time keys per
// algorithm and the algorithms of its unused fallback keys.
type OTKCounts struct {
	OneTime        map[string]int
	UnusedFallback []string
}

// UploadKeys stores a device's keys in one transaction. When its device keys
// are new or differ from those stored, a device-list change for the user is
// logged at pos and changed is true. A one-time key ID already stored with a
// different key fails the whole upload with ErrKeyConflict.
func (db *DB) UploadKeys(ctx context.Context, up KeyUpload, pos int64) (counts OTKCounts, changed bool, err error) {
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		changed = false
		if up.DeviceKeys != nil {
			var err error
			if changed, err = putDeviceKeys(ctx, tx, up.UserID, up.DeviceID, up.DeviceKeys); err != nil {
				return err
			}
			if changed {
				if err := logDeviceListChange(ctx, tx, pos, up.UserID, ""); err != nil {
					return err
				}
			}
		}
		for _, k := range up.OneTimeKeys {
			var stored []byte
			err := tx.QueryRow(ctx, `INSERT INTO e2ee_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, device_id, algorithm, key_id) DO UPDATE SET key_json = e2ee_one_time_keys.key_json
				RETURNING key_json`, up.UserID, up.DeviceID, k.Algorithm, k.KeyID, k.JSON).Scan(&stored)
			if err != nil {
				return fmt.Errorf("one-time key %s:%s: %w", k.Algorithm, k.KeyID, err)
			}
			// A client retrying a lost response uploads the same keys again;
			// only a different key under a used ID is an error.
			if !bytes.Equal(stored, k.JSON) {
				return fmt.Errorf("%w: one-time key %s:%s", ErrKeyConflict, k.Algorithm, k.KeyID)
			}
		}
		for _, k := range up.FallbackKeys {
			// A replaced fallback key is unused again; the same key uploaded
			// again keeps its state.
			if _, err := tx.Exec(ctx, `INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,
					used = e2ee_fallback_keys.used AND e2ee_fallback_keys.key_json = EXCLUDED.key_json`,
				up.UserID, up.DeviceID, k.Algorithm, k.KeyID, k.JSON); err != nil {
				return fmt.Errorf("fallback key %s:%s: %w", k.Algorithm, k.KeyID, err)
			}
		}
		var err error
		counts, err = otkCounts(ctx, tx, up.UserID, up.DeviceID)
		return err
	})
	return counts, changed, err
}

// putDeviceKeys stores a device's identity keys, reporting whether they
// changed. Signatures uploaded for the old keys no longer sign anything when
// the signed part changes, so they go.
func putDeviceKeys(ctx context.Context, tx pgx.Tx, userID, deviceID string, keys []byte) (bool, error) {
	var old []byte
	err := tx.QueryRow(ctx, `SELECT key_json FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2 FOR UPDATE`, userID, deviceID).Scan(&old)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("device keys of %s %s: %w", userID, deviceID, err)
	}
	if bytes.Equal(old, keys) {
		return false, nil
	}
	if old != nil {
		oldSigned, err1 := canonicaljson.Delete(old, "signatures", "unsigned")
		newSigned, err2 := canonicaljson.Delete(keys, "signatures", "unsigned")
		if err1 != nil || err2 != nil || !bytes.Equal(oldSigned, newSigned) {
			if _, err := tx.Exec(ctx, `DELETE FROM e2ee_key_signatures WHERE target_user = $1 AND target_key = $2`, userID, deviceID); err != nil {
				return false, fmt.Errorf("signatures of %s %s: %w", userID, deviceID, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO e2ee_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json`, userID, deviceID, keys); err != nil {
		return false, fmt.Errorf("device keys of %s %s: %w", userID, deviceID, err)
	}
	return true, nil
}

func logDeviceListChange(ctx context.Context, q Querier, pos int64, userID, onlyFor string) error {
	_, err := q.Exec(ctx, `INSERT INTO e2ee_device_list_changes (stream_pos, user_id, only_for) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		pos, userID, onlyFor)
	if err != nil {
		return fmt.Errorf("device list change of %s: %w", userID, err)
	}
	return nil
}

// LogDeviceListChange records that a user's device list changed at pos
// (federation reports remote users' changes this way).
func (db *DB) LogDeviceListChange(ctx context.Context, pos int64, userID string) error {
	return logDeviceListChange(ctx, db.Pool, pos, userID, "")
}

func otkCounts(ctx context.Context, q Querier, userID, deviceID string) (OTKCounts, error) {
	rows, err := q.Query(ctx, `
		SELECT algorithm, count(*), false FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL
		SELECT algorithm, 0, true FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
		ORDER BY 1`, userID, deviceID)
	if err != nil {
		return OTKCounts{}, fmt.Errorf("key counts of %s %s: %w", userID, deviceID, err)
	}
	c := OTKCounts{OneTime: map[string]int{}}
	var alg string
	var n int
	var fallback bool
	_, err = pgx.ForEachRow(rows, []any{&alg, &n, &fallback}, func() error {
		if fallback {
			c.UnusedFallback = append(c.UnusedFallback, alg)
		} else {
			c.OneTime[alg] = n
		}
		return nil
	})
	if err != nil {
		return OTKCounts{}, fmt.Errorf("key counts of %s %s: %w", userID, deviceID, err)
	}
	return c, nil
}

// OneTimeKeyCounts returns what a device holds on the server.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (OTKCounts, error) {
	return otkCounts(ctx, db.Pool, userID, deviceID)
}

// DeviceKeys is a device's stored identity keys.
type DeviceKeys struct {
	UserID, DeviceID string
	DisplayName      string
	JSON             []byte
}

// DeviceKeysOf returns the identity keys of every device of the users that
// uploaded some.
func (db *DB) DeviceKeysOf(ctx context.Context, userIDs []string) ([]DeviceKeys, error) {
	rows, err := db.Pool.Query(ctx, `SELECT k.user_id, k.device_id, COALESCE(d.display_name, ''), k.key_json
		FROM e2ee_device_keys k JOIN devices d USING (user_id, device_id) WHERE k.user_id = ANY($1) ORDER BY 1, 2`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("device keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeviceKeys, error) {
		var k DeviceKeys
		err := r.Scan(&k.UserID, &k.DeviceID, &k.DisplayName, &k.JSON)
		return k, err
	})
}

// KeyClaim asks for one key of a device.
type KeyClaim struct {
	UserID, DeviceID, Algorithm string
}

// ClaimedKey is a key handed out by ClaimKeys.
type ClaimedKey struct {
	KeyClaim
	KeyID string
	JSON  []byte
}

// ClaimKeys hands out, for each claim, the device's oldest one-time key of
// the algorithm, deleting it, or else its fallback key, marking it used.
// Claims with neither are left out. Concurrent claimers skip each other's
// locked rows instead of waiting, so no key is ever handed out twice and a
// claimer never waits on another. The claims travel in two round trips
// however many there are: one-time keys, then fallback keys for the rest.
func (db *DB) ClaimKeys(ctx context.Context, claims []KeyClaim) ([]ClaimedKey, error) {
	var out []ClaimedKey
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		keys := make([]ClaimedKey, len(claims))
		found := make([]bool, len(claims))
		queue := func(b *pgx.Batch, i int, sql string) {
			c := claims[i]
			keys[i].KeyClaim = c
			b.Queue(sql, c.UserID, c.DeviceID, c.Algorithm).QueryRow(func(row pgx.Row) error {
				err := row.Scan(&keys[i].KeyID, &keys[i].JSON)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("claiming a key of %s %s: %w", c.UserID, c.DeviceID, err)
				}
				found[i] = true
				return nil
			})
		}
		oneTime := &pgx.Batch{}
		for i := range claims {
			queue(oneTime, i, `DELETE FROM e2ee_one_time_keys WHERE (user_id, device_id, algorithm, key_id) = (
					SELECT user_id, device_id, algorithm, key_id FROM e2ee_one_time_keys
					WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
				RETURNING key_id, key_json`)
		}
		if err := tx.SendBatch(ctx, oneTime).Close(); err != nil {
			return err
		}
		fallback := &pgx.Batch{}
		for i := range claims {
			if !found[i] {
				queue(fallback, i, `UPDATE e2ee_fallback_keys SET used = true WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
					RETURNING key_id, key_json`)
			}
		}
		if fallback.Len() > 0 {
			if err := tx.SendBatch(ctx, fallback).Close(); err != nil {
				return err
			}
		}
		out = out[:0]
		for i, k := range keys {
			if found[i] {
				out = append(out, k)
			}
		}
		return nil
	})
	return out, err
}

// CrossSigningKey is one of a user's master, self-signing and user-signing
// keys.
type CrossSigningKey struct {
	UserID    string
	Usage     string // master, self_signing or user_signing
	PublicKey string
	JSON      []byte
}

// CrossSigningKeysOf returns the users' cross-signing keys.
func (db *DB) CrossSigningKeysOf(ctx context.Context, userIDs []string) ([]CrossSigningKey, error) {
	rows, err := db.Pool.Query(ctx, `SELECT user_id, usage, public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id = ANY($1) ORDER BY 1, 2`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("cross-signing keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CrossSigningKey, error) {
		var k CrossSigningKey
		err := r.Scan(&k.UserID, &k.Usage, &k.PublicKey, &k.JSON)
		return k, err
	})
}

// SetCrossSigningKeys stores a user's new cross-signing keys and logs a
// device-list change at pos. A replaced key takes the signatures made of it
// and by it along: they were about, or made with, a key the user abandoned.
func (db *DB) SetCrossSigningKeys(ctx context.Context, userID string, keys []CrossSigningKey, pos int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		for _, k := range keys {
			var old string
			err := tx.QueryRow(ctx, `SELECT public_key FROM e2ee_cross_signing_keys WHERE user_id = $1 AND usage = $2 FOR UPDATE`, userID, k.Usage).Scan(&old)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%s key of %s: %w", k.Usage, userID, err)
			}
			if old != "" && old != k.PublicKey {
				if _, err := tx.Exec(ctx, `DELETE FROM e2ee_key_signatures WHERE (target_user = $1 AND target_key = $2) OR (signer_user = $1 AND signer_key = $3)`,
					userID, old, "ed25519:"+old); err != nil {
					return fmt.Errorf("signatures of the old %s key of %s: %w", k.Usage, userID, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO e2ee_cross_signing_keys (user_id, usage, public_key, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, usage) DO UPDATE SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json`,
				userID, k.Usage, k.PublicKey, k.JSON); err != nil {
				return fmt.Errorf("%s key of %s: %w", k.Usage, userID, err)
			}
		}
		return logDeviceListChange(ctx, tx, pos, userID, "")
	})
}

// KeySignature is a signature of a device key or cross-signing key uploaded
// after the key itself.
type KeySignature struct {
	TargetUser, TargetKey string // the signed key: a device ID or a cross-signing public key
	SignerUser, SignerKey string // SignerKey is "ed25519:<device ID or public key>"
	Signature             string
}

// DeviceListChange is an entry of the device-list change log; OnlyFor, when
// set, is the one user who may learn of it.
type DeviceListChange struct {
	UserID, OnlyFor string
}

// AddKeySignatures stores signatures and logs the changes they make to what
// /keys/query returns at pos, in one transaction.
func (db *DB) AddKeySignatures(ctx context.Context, sigs []KeySignature, changes []DeviceListChange, pos int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		for _, s := range sigs {
			if _, err := tx.Exec(ctx, `INSERT INTO e2ee_key_signatures (target_user, target_key, signer_user, signer_key, signature) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (target_user, target_key, signer_user, signer_key) DO UPDATE SET signature = EXCLUDED.signature`,
				s.TargetUser, s.TargetKey, s.SignerUser, s.SignerKey, s.Signature); err != nil {
				return fmt.Errorf("signature of %s %s: %w", s.TargetUser, s.TargetKey, err)
			}
		}
		for _, c := range changes {
			if err := logDeviceListChange(ctx, tx, pos, c.UserID, c.OnlyFor); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeySignaturesOf returns the uploaded signatures of the users' keys that
// viewer may see: those by the key's owner and those by viewer. (The spec
// keeps signatures by other users' user-signing keys private to them.)
func (db *DB) KeySignaturesOf(ctx context.Context, userIDs []string, viewer string) ([]KeySignature, error) {
	rows, err := db.Pool.Query(ctx, `SELECT target_user, target_key, signer_user, signer_key, signature FROM e2ee_key_signatures
		WHERE target_user = ANY($1) AND (signer_user = target_user OR signer_user = $2) ORDER BY 1, 2, 3, 4`, userIDs, viewer)
	if err != nil {
		return nil, fmt.Errorf("key signatures: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeySignature, error) {
		var s KeySignature
		err := r.Scan(&s.TargetUser, &s.TargetKey, &s.SignerUser, &s.SignerKey, &s.Signature)
		return s, err
	})
}

// ToDeviceTarget is one message of a /sendToDevice request: DeviceID "*"
// means every device of the user.
type ToDeviceTarget struct {
	UserID, DeviceID string
	Content          []byte
}

// SendToDevice stores a /sendToDevice request's messages for local devices
// at pos, with the transaction that makes the request idempotent. Messages
// to devices that do not exist are dropped; a message addressed to a device
// both by its ID and by "*" is stored once, the one addressed by ID.
// duplicate is true, and nothing is stored, if the transaction was seen
// before.
func (db *DB) SendToDevice(ctx context.Context, sender, senderDevice, txnID, evType string, msgs []ToDeviceTarget, pos, nowMS int64) (duplicate bool, err error) {
	users := make([]string, len(msgs))
	devices := make([]string, len(msgs))
	contents := make([][]byte, len(msgs))
	for i, m := range msgs {
		users[i], devices[i], contents[i] = m.UserID, m.DeviceID, m.Content
	}
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO transactions (user_id, device_id, endpoint, txn_id, response, created_ts) VALUES ($1, $2, 'sendToDevice', $3, '{}', $4)
			ON CONFLICT DO NOTHING`, sender, senderDevice, txnID, nowMS)
		if err != nil {
			return fmt.Errorf("to-device transaction: %w", err)
		}
		if duplicate = tag.RowsAffected() == 0; duplicate {
			return nil
		}
		// Named devices first, so that they win over "*".
		for _, wildcard := range []bool{false, true} {
			if _, err := tx.Exec(ctx, `INSERT INTO e2ee_to_device (user_id, device_id, stream_pos, sender, type, content)
				SELECT d.user_id, d.device_id, $1, $2, $3, t.content
				FROM unnest($4::text[], $5::text[], $6::bytea[]) AS t(user_id, device_id, content)
				JOIN devices d ON d.user_id = t.user_id AND (d.device_id = t.device_id OR t.device_id = '*')
				WHERE (t.device_id = '*') = $7
				ON CONFLICT DO NOTHING`, pos, sender, evType, users, devices, contents, wildcard); err != nil {
				return fmt.Errorf("to-device messages: %w", err)
			}
		}
		return nil
	})
	return duplicate, err
}

// ToDeviceMessage is a pending to-device message.
type ToDeviceMessage struct {
	StreamPos    int64
	Sender, Type string
	Content      []byte
}

// ToDeviceInbox serves a device's to-device messages to a /sync from since
// up to upto: it deletes the messages that an earlier response with a
// next_batch at or before since delivered (the client acknowledged them by
// syncing from that token), returns the oldest pending messages at or below
// upto, at most limit, and records that a response at upto carries them
// (unless an earlier one did). more is true if further messages wait.
func (db *DB) ToDeviceInbox(ctx context.Context, userID, deviceID string, since, upto int64, limit int) (msgs []ToDeviceMessage, more bool, err error) {
	// One statement acknowledges and reads: the SELECT sees the rows as they
	// were before the DELETE in the WITH, hence the filter repeating it.
	rows, err := db.Pool.Query(ctx, `
		WITH acked AS (
			DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND delivered_at <= $3 RETURNING stream_pos),
		mark AS (
			INSERT INTO e2ee_stream_marks (user_id, stream_pos) SELECT $1, max(stream_pos) FROM acked HAVING count(*) > 0
			ON CONFLICT (user_id) DO UPDATE SET stream_pos = GREATEST(e2ee_stream_marks.stream_pos, EXCLUDED.stream_pos))
		SELECT stream_pos, sender, type, content FROM e2ee_to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $4 AND (delivered_at IS NULL OR delivered_at > $3)
		ORDER BY stream_pos LIMIT $5`, userID, deviceID, since, upto, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("to-device messages of %s %s: %w", userID, deviceID, err)
	}
	msgs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ToDeviceMessage, error) {
		var m ToDeviceMessage
		err := r.Scan(&m.StreamPos, &m.Sender, &m.Type, &m.Content)
		return m, err
	})
	if err != nil {
		return nil, false, fmt.Errorf("to-device messages of %s %s: %w", userID, deviceID, err)
	}
	if more = len(msgs) > limit; more {
		msgs = msgs[:limit]
	}
	if len(msgs) == 0 {
		return msgs, more, nil
	}
	// The first response that carried a message is the one whose token
	// acknowledges it: a retried sync delivers it again but must not
	// postpone its acknowledgement.
	if _, err := db.Pool.Exec(ctx, `UPDATE e2ee_to_device SET delivered_at = LEAST(COALESCE(delivered_at, $4), $4)
		WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, msgs[len(msgs)-1].StreamPos, upto); err != nil {
		return nil, false, fmt.Errorf("marking to-device messages of %s %s delivered: %w", userID, deviceID, err)
	}
	return msgs, more, nil
}

// RaiseStreamMark records that the stream handed out pos for a user with no
// row to show for it, so that a restart never starts the stream below it.
func (db *DB) RaiseStreamMark(ctx context.Context, userID string, pos int64) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO e2ee_stream_marks (user_id, stream_pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = GREATEST(e2ee_stream_marks.stream_pos, EXCLUDED.stream_pos)`, userID, pos)
	if err != nil {
		return fmt.Errorf("stream mark of %s: %w", userID, err)
	}
	return nil
}

// HasPendingDeviceChanges reports whether device deletions or renames wait
// to be announced (see AnnouncePendingDeviceChanges).
func (db *DB) HasPendingDeviceChanges(ctx context.Context) (bool, error) {
	var pending bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM e2ee_device_list_pending)`).Scan(&pending); err != nil {
		return false, fmt.Errorf("pending device changes: %w", err)
	}
	return pending, nil
}

// AnnouncePendingDeviceChanges turns up to limit device changes queued by
// the database triggers (a device deleted or renamed outside the e2ee
// service) into device-list changes at pos, and returns the users concerned.
// Signatures of deleted devices' keys go with them. Concurrent callers take
// disjoint rows.
func (db *DB) AnnouncePendingDeviceChanges(ctx context.Context, pos int64, limit int) ([]string, error) {
	var users []string
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM e2ee_device_list_pending WHERE id IN (
			SELECT id FROM e2ee_device_list_pending ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING user_id, device_id`, limit)
		if err != nil {
			return fmt.Errorf("pending device changes: %w", err)
		}
		var us, ds []string
		var u, d string
		if _, err := pgx.ForEachRow(rows, []any{&u, &d}, func() error {
			us, ds = append(us, u), append(ds, d)
			return nil
		}); err != nil {
			return fmt.Errorf("pending device changes: %w", err)
		}
		if len(us) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM e2ee_key_signatures s USING unnest($1::text[], $2::text[]) AS g(user_id, device_id)
			WHERE s.target_user = g.user_id AND s.target_key = g.device_id
			AND NOT EXISTS (SELECT 1 FROM e2ee_device_keys k WHERE k.user_id = g.user_id AND k.device_id = g.device_id)`, us, ds); err != nil {
			return fmt.Errorf("signatures of deleted devices: %w", err)
		}
		seen := map[string]bool{}
		users = users[:0]
		for _, u := range us {
			if seen[u] {
				continue
			}
			seen[u] = true
			users = append(users, u)
			if err := logDeviceListChange(ctx, tx, pos, u, ""); err != nil {
				return err
			}
		}
		return nil
	})
	return users, err
}

// UsersSharingRoomsWith returns the users joined to a room userID is joined
// to, userID included if it is joined anywhere.
func (db *DB) UsersSharingRoomsWith(ctx context.Context, userID string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT o.state_key FROM current_state m
		JOIN current_state o ON o.room_nid = m.room_nid AND o.type = 'm.room.member' AND o.membership = 'join'
		WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("users sharing rooms with %s: %w", userID, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DeviceListChanges computes the device_lists section of a /sync (and
// /keys/changes) for userID over the window (from, to], given the rooms the
// user is joined to now, in one query.
//
// changed: users sharing a room with userID now (or userID) whose device list
// changed in the window, users who joined one of those rooms in the window,
// and everyone in a room userID joined in the window. left: users who left or
// were removed from a room userID is in, or was in and left in the window,
// and who share no room with userID now.
func (db *DB) DeviceListChanges(ctx context.Context, userID string, joinedRooms []string, from, to int64) (changed, left []string, err error) {
	if joinedRooms == nil {
		joinedRooms = []string{}
	}
	rows, err := db.Pool.Query(ctx, `
		WITH my_rooms AS (SELECT room_nid FROM rooms WHERE room_id = ANY($4)),
		-- userID's last membership, per room, among its changes in the
		-- window: the rooms it joined or left in it.
		mine AS (
			SELECT DISTINCT ON (room_nid) room_nid, membership FROM membership_log
			WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY room_nid, stream_pos DESC),
		changed AS (
			SELECT c.user_id FROM e2ee_device_list_changes c
			WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND c.only_for IN ('', $1)
			UNION
			SELECT m.user_id FROM membership_log m
			WHERE m.room_nid IN (SELECT room_nid FROM my_rooms) AND m.stream_pos > $2 AND m.stream_pos <= $3
			AND m.membership = 'join' AND m.user_id <> $1
			UNION
			SELECT cs.state_key FROM current_state cs JOIN mine USING (room_nid)
			WHERE mine.membership = 'join' AND cs.type = 'm.room.member' AND cs.membership = 'join' AND cs.state_key <> $1),
		gone AS (
			SELECT m.user_id FROM membership_log m
			WHERE (m.room_nid IN (SELECT room_nid FROM my_rooms) OR m.room_nid IN (SELECT room_nid FROM mine WHERE membership IN ('leave', 'ban')))
			AND m.stream_pos > $2 AND m.stream_pos <= $3 AND m.membership IN ('leave', 'ban') AND m.user_id <> $1
			UNION
			SELECT cs.state_key FROM current_state cs JOIN mine USING (room_nid)
			WHERE mine.membership IN ('leave', 'ban') AND cs.type = 'm.room.member' AND cs.membership = 'join' AND cs.state_key <> $1),
		sharing AS (
			SELECT DISTINCT s.state_key AS user_id FROM current_state s
			WHERE s.room_nid IN (SELECT room_nid FROM my_rooms) AND s.type = 'm.room.member' AND s.membership = 'join'
			AND (s.state_key IN (SELECT user_id FROM changed) OR s.state_key IN (SELECT user_id FROM gone)))
		SELECT false, user_id FROM changed WHERE user_id = $1 OR user_id IN (SELECT user_id FROM sharing)
		UNION ALL
		SELECT true, user_id FROM gone WHERE user_id NOT IN (SELECT user_id FROM sharing)
		ORDER BY 1, 2`,
		userID, from, to, joinedRooms)
	if err != nil {
		return nil, nil, fmt.Errorf("device list changes of %s: %w", userID, err)
	}
	var isLeft bool
	var u string
	if _, err := pgx.ForEachRow(rows, []any{&isLeft, &u}, func() error {
		if isLeft {
			left = append(left, u)
		} else {
			changed = append(changed, u)
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("device list changes of %s: %w", userID, err)
	}
	return changed, left, nil
}
