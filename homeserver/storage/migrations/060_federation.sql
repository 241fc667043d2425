-- Our own signing keys, current and retired. The current key lives in the
-- signing.key file; this table remembers the keys it replaced, so that
-- /_matrix/key/v2/server can keep publishing them as old_verify_keys and
-- events we signed with them stay verifiable. expired_ts is NULL for the
-- current key.
CREATE TABLE federation_own_keys (
    key_id      TEXT PRIMARY KEY,
    public_key  BYTEA NOT NULL,
    added_ts    BIGINT NOT NULL,
    expired_ts  BIGINT
);

-- Other servers' verify keys, fetched from them or through notaries. Each
-- row keeps the signed key response it came from, so that Plaza can act as a
-- notary and hand the origin's own signed statement on. valid_until_ts is
-- the response's, uncapped (the 7-day cap is applied when a key is used);
-- expired_ts is set for keys listed under old_verify_keys.
CREATE TABLE federation_server_keys (
    server_name     TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    public_key      BYTEA NOT NULL,
    valid_until_ts  BIGINT NOT NULL,
    expired_ts      BIGINT,
    fetched_ts      BIGINT NOT NULL,
    response        BYTEA NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
