-- The content repository's local media (package homeserver/media, which runs
-- its own queries on this table). One row per media ID this server handed
-- out, whether by an upload or by POST /_matrix/media/v1/create; the bytes
-- are files under the media directory, named by the ID. Media of other
-- servers, once federation caches it, gets a table of its own.
CREATE TABLE media (
    media_id      TEXT PRIMARY KEY,
    uploader      TEXT NOT NULL,          -- user ID
    content_type  TEXT,                   -- as served; NULL until uploaded
    upload_name   TEXT,                   -- the upload's filename, if it gave one
    size_bytes    BIGINT,                 -- NULL until uploaded
    created_ts    BIGINT NOT NULL,        -- when the ID was handed out
    uploaded_ts   BIGINT,                 -- NULL: reserved, content not uploaded yet
    expires_ts    BIGINT,                 -- a reservation's deadline; NULL once uploaded
    CHECK ((uploaded_ts IS NULL) = (size_bytes IS NULL)),
    CHECK ((uploaded_ts IS NULL) = (content_type IS NULL))
);

-- A user's media: pending reservations are counted per user, and quotas and
-- admin listings will want the same order.
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
