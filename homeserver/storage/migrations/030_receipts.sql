-- Read receipts and read markers (m.read, m.read.private, m.fully_read), one
-- row per (room, user, type, thread): a new receipt replaces the old one and
-- takes a new stream position, so /sync delivers only changes.
CREATE TABLE receipts (
    room_nid       BIGINT NOT NULL REFERENCES rooms,
    user_id        TEXT NOT NULL,
    receipt_type   TEXT NOT NULL,
    thread_id      TEXT NOT NULL DEFAULT '',   -- '' = unthreaded
    event_id       TEXT NOT NULL,
    event_pos      BIGINT NOT NULL,            -- stream position of the event read
    ts             BIGINT NOT NULL,
    stream_pos     BIGINT NOT NULL,
    PRIMARY KEY (room_nid, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);
