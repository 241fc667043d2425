package storage

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OwnKey is one of this server's signing keys as published to other servers.
type OwnKey struct {
	KeyID     string
	Public    []byte
	ExpiredTS int64 // 0 for the current key
}

// RecordOwnKey makes keyID the current signing key and retires every other
// key still marked current, as of nowMS. A key that was retired and is in use
// again becomes current again.
func (db *DB) RecordOwnKey(ctx context.Context, keyID string, public []byte, nowMS int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE federation_own_keys SET expired_ts = $2
			WHERE expired_ts IS NULL AND key_id <> $1`, keyID, nowMS); err != nil {
			return fmt.Errorf("retiring old signing keys: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO federation_own_keys (key_id, public_key, added_ts)
			VALUES ($1, $2, $3)
			ON CONFLICT (key_id) DO UPDATE SET public_key = EXCLUDED.public_key, expired_ts = NULL`,
			keyID, public, nowMS); err != nil {
			return fmt.Errorf("recording the signing key: %w", err)
		}
		return nil
	})
}

// OwnKeys returns every signing key this server has used, current first.
func (db *DB) OwnKeys(ctx context.Context) ([]OwnKey, error) {
	rows, err := db.Pool.Query(ctx, `SELECT key_id, public_key, COALESCE(expired_ts, 0)
		FROM federation_own_keys ORDER BY expired_ts DESC NULLS FIRST, key_id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (OwnKey, error) {
		var k OwnKey
		err := row.Scan(&k.KeyID, &k.Public, &k.ExpiredTS)
		return k, err
	})
}

// ServerKey is another server's verify key with the response it came in.
type ServerKey struct {
	ServerName   string
	KeyID        string
	Public       []byte
	ValidUntilTS int64 // the response's valid_until_ts
	ExpiredTS    int64 // 0 unless the key was listed as old
	FetchedTS    int64
	Response     []byte // the signed key response, canonical JSON
}

// StoreServerKeys records keys from one key response. A key already stored
// from a response valid for longer is kept: an old response relayed by a
// notary must not replace a fresher one.
func (db *DB) StoreServerKeys(ctx context.Context, keys []ServerKey) error {
	if len(keys) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, k := range keys {
		var expired *int64
		if k.ExpiredTS != 0 {
			expired = &k.ExpiredTS
		}
		batch.Queue(`INSERT INTO federation_server_keys
			(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				public_key = EXCLUDED.public_key, valid_until_ts = EXCLUDED.valid_until_ts,
				expired_ts = EXCLUDED.expired_ts, fetched_ts = EXCLUDED.fetched_ts, response = EXCLUDED.response
			WHERE federation_server_keys.valid_until_ts <= EXCLUDED.valid_until_ts`,
			k.ServerName, k.KeyID, k.Public, k.ValidUntilTS, expired, k.FetchedTS, k.Response)
	}
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("storing server keys: %w", err)
		}
		return nil
	})
}

// ServerKeys returns every stored key of serverName.
func (db *DB) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := db.Pool.Query(ctx, `SELECT server_name, key_id, public_key, valid_until_ts,
			COALESCE(expired_ts, 0), fetched_ts, response
		FROM federation_server_keys WHERE server_name = $1 ORDER BY key_id`, serverName)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ServerKey, error) {
		var k ServerKey
		err := row.Scan(&k.ServerName, &k.KeyID, &k.Public, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS, &k.Response)
		return k, err
	})
}
