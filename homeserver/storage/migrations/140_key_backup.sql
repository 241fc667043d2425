-- Server-side key backups (client-server API "Server-side key backups").
--
-- Versions are numbered per user, 1, 2, ...; a deleted version keeps its row
-- (deleted = true) so its number is never handed out again: a client still
-- holding it must get M_NOT_FOUND, not somebody else's newer backup. The
-- current version is the user's highest one not deleted. auth_data is kept
-- as the bytes the client sent, since clients check signatures over it.
-- etag changes whenever the keys of a version do, so clients can tell
-- whether another device wrote to the backup.
CREATE TABLE key_backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data BYTEA NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, version)
);

-- One backed-up megolm session key per room and session. The metadata the
-- spec's replacement rule compares is in columns; session_data (encrypted by
-- the client) is kept as sent.
CREATE TABLE key_backup_sessions (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        BYTEA NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES key_backup_versions (user_id, version) ON DELETE CASCADE
);
