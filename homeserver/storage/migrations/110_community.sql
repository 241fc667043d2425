-- Rooms on demand (package community): which rooms and spaces stand for
-- which forge repositories and owners, the webhooks that feed them, and
-- the activity those webhooks reported.
--
-- One row per room community created. (forge, kind, path_key) is unique:
-- it is what makes "create once" hold across processes: a creation first
-- inserts a claim (room_id 'pending:<id>'), then completes it with the room.
CREATE TABLE community_rooms (
    room_id     TEXT PRIMARY KEY,
    forge       TEXT NOT NULL,         -- the identity provider's id: github, gitlab, demo
    flavour     TEXT NOT NULL CHECK (flavour IN ('github', 'gitlab')),
    kind        TEXT NOT NULL CHECK (kind IN ('repo', 'owner')),  -- a repository's room or an owner's space
    path        TEXT NOT NULL,         -- as the forge spells it: acme/widget, group/sub/project
    path_key    TEXT NOT NULL,         -- lower(path): both forges compare paths case-insensitively
    forge_id    BIGINT NOT NULL,       -- the forge's immutable numeric id
    web_url     TEXT NOT NULL,
    private     BOOLEAN NOT NULL,
    parent_id   TEXT,                  -- the space this room is a child of
    created_ts  BIGINT NOT NULL,
    UNIQUE (forge, kind, path_key)
);

-- Webhooks a room admin set up. The secret is kept in clear: verifying a
-- GitHub signature needs it (HMAC), and it only guards what the room shows.
CREATE TABLE community_webhooks (
    hook_id     TEXT PRIMARY KEY,      -- random, the last segment of the delivery URL
    room_id     TEXT NOT NULL REFERENCES community_rooms ON DELETE CASCADE,
    flavour     TEXT NOT NULL CHECK (flavour IN ('github', 'gitlab')),
    secret      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX community_webhooks_room ON community_webhooks (room_id);

-- The activity feed: one row per notice posted from a delivery. A delivery
-- id seen twice (forges redeliver) posts nothing the second time.
CREATE TABLE community_activity (
    id          BIGSERIAL PRIMARY KEY,
    room_id     TEXT NOT NULL REFERENCES community_rooms ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    kind        TEXT NOT NULL,         -- push, issue, pull_request, release, comment
    actor       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    url         TEXT NOT NULL,
    event_id    TEXT,                  -- the m.notice, once sent
    created_ts  BIGINT NOT NULL,
    UNIQUE (room_id, delivery_id)
);
CREATE INDEX community_activity_room ON community_activity (room_id, id DESC);
