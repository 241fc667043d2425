-- A user's account data (package homeserver/accountdata): global data has
-- room_id '', room data the room's ID (not a reference to rooms: a client may
-- tag a room this server has not seen yet). One row per (user, room, type);
-- a change replaces the row and takes a new stream position, so /sync
-- delivers only what changed.
CREATE TABLE account_data (
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL,
    content     TEXT NOT NULL,           -- a JSON object, as the client sent it (compacted)
    stream_pos  BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
-- A user's rows are few and found by the primary key's prefix; this index
-- serves the stream's start-up scan for the highest position.
CREATE INDEX account_data_stream ON account_data (stream_pos);

-- What a user changed in their push rules: their own rules and their changes
-- to server-default rules (enabled, actions), one JSON document per user.
-- The effective ruleset merges it over the defaults of the running server,
-- so a server upgrade brings new default rules to everyone.
CREATE TABLE push_rules (
    user_id     TEXT PRIMARY KEY,
    rules       TEXT NOT NULL,           -- JSON, see accountdata.userRules
    stream_pos  BIGINT NOT NULL
);
CREATE INDEX push_rules_stream ON push_rules (stream_pos);
