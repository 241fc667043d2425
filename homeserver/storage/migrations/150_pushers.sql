-- Pushers (client-server API "Push notifications"): where a user's
-- notifications are to be sent. One per user, app ID and push key, as the
-- spec identifies them; the same app ID and push key under several users only
-- when a client asked to append. data is kept as the client sent it, since
-- the spec has the server forward it to the push gateway.
CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT NOT NULL DEFAULT '',
    lang                TEXT NOT NULL,
    data                BYTEA NOT NULL,
    device_id           TEXT NOT NULL DEFAULT '',
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app_id, pushkey)
);

-- Setting a pusher without append removes other users' pushers of the same
-- app ID and push key (a phone that changed hands).
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
