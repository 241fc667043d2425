-- End-to-end encryption support (package homeserver/e2ee): device identity
-- keys, one-time and fallback keys, cross-signing keys and the signatures
-- uploaded for them, to-device messages, and the device-list change log that
-- /sync and /keys/changes read.
--
-- Keys and pending to-device messages belong to a device: they reference
-- devices with ON DELETE CASCADE, so whatever deletes a device (logout,
-- DELETE /devices, a password change, deactivation) takes its keys and its
-- inbox in the same transaction. The triggers at the end queue such
-- deletions for the e2ee service, which announces them in the change log.

CREATE TABLE e2ee_device_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    key_json       BYTEA NOT NULL,       -- canonical JSON as uploaded, with the device's own signatures
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys are handed out oldest first (the spec asks for upload
-- order), hence seq; each is deleted as it is claimed.
CREATE TABLE e2ee_one_time_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    key_json       BYTEA NOT NULL,
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2ee_one_time_keys_claim ON e2ee_one_time_keys (user_id, device_id, algorithm, seq);

-- At most one fallback key per device and algorithm; claiming one marks it
-- used instead of deleting it.
CREATE TABLE e2ee_fallback_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    key_json       BYTEA NOT NULL,
    used           BOOLEAN NOT NULL DEFAULT false,
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- A user's master, self-signing and user-signing keys. They belong to the
-- user, not to a device, and outlive every device.
CREATE TABLE e2ee_cross_signing_keys (
    user_id        TEXT NOT NULL,
    usage          TEXT NOT NULL CHECK (usage IN ('master', 'self_signing', 'user_signing')),
    public_key     TEXT NOT NULL,        -- unpadded base64, also the key's ID after "ed25519:"
    key_json       BYTEA NOT NULL,       -- canonical JSON as uploaded
    PRIMARY KEY (user_id, usage)
);

-- Signatures uploaded with /keys/signatures/upload, merged into the signed
-- key's "signatures" when it is served. target_key is a device ID or a
-- cross-signing public key. Who may see a signature is decided when serving
-- (signatures by other users' user-signing keys stay private to them).
CREATE TABLE e2ee_key_signatures (
    target_user    TEXT NOT NULL,
    target_key     TEXT NOT NULL,
    signer_user    TEXT NOT NULL,
    signer_key     TEXT NOT NULL,        -- "ed25519:<device ID or public key>"
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);

-- Pending to-device messages. One request writes all its messages at one
-- stream position. delivered_at is the position (next_batch) of the first
-- /sync response that carried the message: a /sync with a since at or past
-- it acknowledges the message, which is then deleted.
CREATE TABLE e2ee_to_device (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    stream_pos     BIGINT NOT NULL,
    sender         TEXT NOT NULL,
    type           TEXT NOT NULL,
    content        BYTEA NOT NULL,
    delivered_at   BIGINT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE,
    PRIMARY KEY (user_id, device_id, stream_pos)
);
CREATE INDEX e2ee_to_device_stream ON e2ee_to_device (stream_pos);

-- Delivered to-device messages are deleted, so their positions could be the
-- highest the stream ever handed out. The stream tracker is seeded from the
-- highest stream_pos in the stream tables at start-up; this keeps, per user,
-- the highest position removed from their inboxes, so that a sync token a
-- client holds never lies ahead of the restarted stream.
CREATE TABLE e2ee_stream_marks (
    user_id        TEXT PRIMARY KEY,
    stream_pos     BIGINT NOT NULL
);

-- The device-list change log: user_id's devices, device keys or
-- cross-signing keys changed at stream_pos. only_for, when not '', limits the
-- entry to one user (a signature by that user's user-signing key, which only
-- they can see).
CREATE TABLE e2ee_device_list_changes (
    stream_pos     BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    only_for       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (stream_pos, user_id, only_for)
);

-- Device changes made outside the e2ee service (deletions, renames), queued
-- by the triggers below in the deleting transaction and announced by the e2ee
-- service, which owns stream positions, the next time it looks.
CREATE TABLE e2ee_device_list_pending (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL
);

-- /sync finds the users who joined or left a user's rooms since a token.
CREATE INDEX e2ee_membership_log_room ON membership_log (room_nid, stream_pos);

-- BEFORE DELETE, so the device's keys and inbox are still there to look at
-- before the cascade removes them. Devices that never uploaded keys are of
-- no interest to anyone's device list.
CREATE FUNCTION e2ee_device_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM e2ee_device_keys WHERE user_id = OLD.user_id AND device_id = OLD.device_id) THEN
        INSERT INTO e2ee_device_list_pending (user_id, device_id) VALUES (OLD.user_id, OLD.device_id);
    END IF;
    INSERT INTO e2ee_stream_marks (user_id, stream_pos)
        SELECT OLD.user_id, max(stream_pos) FROM e2ee_to_device
        WHERE user_id = OLD.user_id AND device_id = OLD.device_id HAVING count(*) > 0
        ON CONFLICT (user_id) DO UPDATE SET stream_pos = GREATEST(e2ee_stream_marks.stream_pos, EXCLUDED.stream_pos);
    RETURN OLD;
END
$$;
CREATE TRIGGER e2ee_device_deleted BEFORE DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION e2ee_device_deleted();

-- A device's display name is part of /keys/query's answer.
CREATE FUNCTION e2ee_device_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM e2ee_device_keys WHERE user_id = NEW.user_id AND device_id = NEW.device_id) THEN
        INSERT INTO e2ee_device_list_pending (user_id, device_id) VALUES (NEW.user_id, NEW.device_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER e2ee_device_renamed AFTER UPDATE OF display_name ON devices
    FOR EACH ROW WHEN (OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION e2ee_device_renamed();
