-- The outbound federation queue: PDUs and EDUs waiting to be sent to another
-- server in a /send transaction. Rows are written before anything is sent and
-- deleted once the destination has accepted the transaction holding them, so
-- a restart resumes where it stopped. seq orders each destination's queue and
-- is never reused, which makes it a stable basis for transaction IDs.
CREATE TABLE federation_queue (
    seq          BIGSERIAL PRIMARY KEY,
    destination  TEXT NOT NULL,
    is_edu       BOOLEAN NOT NULL,
    body         BYTEA NOT NULL
);
CREATE INDEX federation_queue_destination ON federation_queue (destination, is_edu, seq);

-- Destinations that failed: how many times in a row and when to try again
-- (exponential backoff). A row is deleted when the destination answers again.
CREATE TABLE federation_destinations (
    destination  TEXT PRIMARY KEY,
    failures     INT NOT NULL,
    retry_at_ms  BIGINT NOT NULL
);
