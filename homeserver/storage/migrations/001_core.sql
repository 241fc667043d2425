-- The homeserver's core schema: accounts, rooms, the event DAG, room state,
-- and the global stream that /sync and every other consumer follow.
--
-- Every row a client can be told about (timeline events, membership changes,
-- receipts, account data, to-device messages, device list changes, ...) has a
-- stream_pos: one global order, handed out by the stream package, so a sync
-- token is one number. Events fetched from the past (backfill) get negative
-- positions, below every token.

CREATE TABLE accounts (
    user_id        TEXT PRIMARY KEY,
    localpart      TEXT NOT NULL UNIQUE,
    password_hash  TEXT,                -- NULL: no password login (SSO only, guests)
    is_guest       BOOLEAN NOT NULL DEFAULT false,
    is_admin       BOOLEAN NOT NULL DEFAULT false,
    deactivated    BOOLEAN NOT NULL DEFAULT false,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id        TEXT NOT NULL REFERENCES accounts ON DELETE CASCADE,
    device_id      TEXT NOT NULL,
    display_name   TEXT,
    created_ts     BIGINT NOT NULL,
    last_seen_ts   BIGINT,
    last_seen_ip   TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes: a database leak does not leak sessions.
CREATE TABLE access_tokens (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    created_ts     BIGINT NOT NULL,
    expires_ts     BIGINT,               -- NULL: does not expire
    refresh_hash   BYTEA UNIQUE,         -- the refresh token issued with it
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE login_tokens (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES accounts ON DELETE CASCADE,
    expires_ts     BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token          TEXT PRIMARY KEY,
    uses_allowed   INT,                  -- NULL: unlimited
    completed      INT NOT NULL DEFAULT 0,
    expiry_ts      BIGINT
);

CREATE TABLE rooms (
    room_nid       BIGSERIAL PRIMARY KEY,
    room_id        TEXT NOT NULL UNIQUE,
    version        TEXT NOT NULL,
    -- Forward extremities: the events with no known children, the next
    -- local event's prev_events.
    extremities    TEXT[] NOT NULL DEFAULT '{}',
    -- The state after the extremities (resolved), as a state group.
    state_group    BIGINT,
    published      BOOLEAN NOT NULL DEFAULT false,  -- listed in /publicRooms
    created_ts     BIGINT NOT NULL
);

CREATE TABLE room_aliases (
    alias          TEXT PRIMARY KEY,
    room_id        TEXT NOT NULL,
    creator        TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- State groups: a room state is a chain of deltas, each group holding the
-- entries that differ from its prev_group. A message event shares the group
-- of the event before it, so a 20,000-member room does not copy its state per
-- message; chains are cut by writing a full snapshot every so often.
CREATE TABLE state_groups (
    group_nid      BIGSERIAL PRIMARY KEY,
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    prev_group     BIGINT REFERENCES state_groups,
    chain_len      INT NOT NULL          -- deltas between this group and a full snapshot
);

CREATE TABLE state_group_entries (
    group_nid      BIGINT NOT NULL REFERENCES state_groups,
    type           TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    event_nid      BIGINT,               -- NULL: the entry was removed (state resolution)
    PRIMARY KEY (group_nid, type, state_key)
);

CREATE TABLE events (
    event_nid      BIGSERIAL PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    -- Position in the global stream; NULL for outliers (events known only as
    -- auth events, never part of the visible timeline).
    stream_pos     BIGINT UNIQUE,
    depth          BIGINT NOT NULL,
    type           TEXT NOT NULL,
    state_key      TEXT,
    sender         TEXT NOT NULL,
    origin_ts      BIGINT NOT NULL,
    json           BYTEA NOT NULL,       -- canonical PDU, without event_id and unsigned
    state_before   BIGINT REFERENCES state_groups,
    rejected       BOOLEAN NOT NULL DEFAULT false,
    soft_failed    BOOLEAN NOT NULL DEFAULT false,
    redacted_by    TEXT,                 -- ID of the redaction applied to this event
    -- m.relates_to, extracted for /relations, /threads, edits and reactions.
    rel_type       TEXT,
    relates_to     TEXT,
    thread_root    TEXT,
    -- The local sender's transaction, echoed back to that device in unsigned.
    txn_device     TEXT,
    txn_id         TEXT
);
CREATE INDEX events_room_stream ON events (room_nid, stream_pos) WHERE stream_pos IS NOT NULL;
CREATE INDEX events_room_ts ON events (room_nid, origin_ts);
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
CREATE INDEX events_thread ON events (room_nid, thread_root) WHERE thread_root IS NOT NULL;
-- Transaction IDs are scoped per device and endpoint: /send and /redact may
-- reuse each other's IDs, and redactions are the only events /redact makes.
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, (type = 'm.room.redaction'), txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE event_edges (
    event_nid      BIGINT NOT NULL REFERENCES events,
    prev_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);

-- Current state of each room, flattened for the queries that need it fast
-- (membership lists and counts, joined rooms of a user).
CREATE TABLE current_state (
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    type           TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    event_nid      BIGINT NOT NULL REFERENCES events,
    membership     TEXT,                 -- for m.room.member
    PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- Membership changes of local users, in stream order: /sync reads these to
-- know which rooms a user joined, left or was invited to since a token.
CREATE TABLE membership_log (
    stream_pos     BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    membership     TEXT NOT NULL,
    event_nid      BIGINT NOT NULL REFERENCES events,
    PRIMARY KEY (user_id, stream_pos)
);

-- Transaction IDs of /send and other idempotent endpoints.
CREATE TABLE transactions (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    response       BYTEA NOT NULL,
    created_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, endpoint, txn_id)
);

-- Rooms a user has forgotten (after leaving): hidden from their sync.
CREATE TABLE forgotten_rooms (
    user_id        TEXT NOT NULL,
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    PRIMARY KEY (user_id, room_nid)
);

-- Client filters (/user/{userId}/filter).
CREATE TABLE filters (
    filter_id      BIGSERIAL PRIMARY KEY,
    user_id        TEXT NOT NULL,
    filter         BYTEA NOT NULL
);
