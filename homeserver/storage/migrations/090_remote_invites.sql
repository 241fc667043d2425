-- Invites from other servers to rooms this server is not in (and knocks
-- of our users on such rooms). The invite
-- event itself is an outlier in events (with a current_state row and a
-- membership_log entry, so /sync shows it like any invite); this keeps what
-- only the invite brought: the stripped room state shown to the invitee and
-- the server to answer (reject or join) through.
CREATE TABLE remote_invites (
    user_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    inviter_server TEXT NOT NULL,
    invite_state   BYTEA NOT NULL,      -- JSON array of stripped state events
    PRIMARY KEY (user_id, room_id)
);
