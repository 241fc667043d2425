-- Sign-in with GitHub and GitLab (package oauth).
--
-- A forge identity maps to one Matrix account, keyed by the forge's
-- immutable numeric user id, never by its login: a rename on the forge keeps
-- the account. An account may hold identities on several forges.
CREATE TABLE oauth_identities (
    idp            TEXT NOT NULL,        -- the identity provider's id: github, gitlab, demo
    forge_user_id  BIGINT NOT NULL,
    user_id        TEXT NOT NULL REFERENCES accounts ON DELETE CASCADE,
    login          TEXT NOT NULL,        -- the login as last seen, for display only
    -- The forge access token, sealed with AES-GCM under a key kept in the
    -- data directory (not in the database), so a database dump alone does
    -- not hand out forge access. NULL: none kept.
    access_token   BYTEA,
    scopes         TEXT NOT NULL DEFAULT '',
    created_ts     BIGINT NOT NULL,
    updated_ts     BIGINT NOT NULL,
    PRIMARY KEY (idp, forge_user_id)
);
CREATE INDEX oauth_identities_user ON oauth_identities (user_id);

-- Sign-in flows in progress: "authorize" rows wait for the forge's callback
-- (keyed by the OAuth state), "confirm" rows wait for the user to approve
-- sending a login token to a client (keyed by a form nonce). Both are bound
-- to the browser that started them (the hash of a cookie) and are deleted
-- when used, so each works once. They live here rather than in memory so
-- that any of several Plaza processes can finish a flow another began.
CREATE TABLE oauth_pending (
    key_hash       BYTEA PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('authorize', 'confirm')),
    browser_hash   BYTEA NOT NULL,
    idp            TEXT NOT NULL,
    verifier       TEXT NOT NULL DEFAULT '',  -- PKCE code verifier
    redirect_url   TEXT NOT NULL DEFAULT '',  -- SSO: the client's redirectUrl; web: the local path to return to
    purpose        TEXT NOT NULL CHECK (purpose IN ('sso', 'web')),
    user_id        TEXT,                      -- confirm rows: who signed in
    expires_ts     BIGINT NOT NULL
);
CREATE INDEX oauth_pending_expiry ON oauth_pending (expires_ts);

-- The web site's sessions (a cookie), separate from Matrix access tokens:
-- the site signs people in without a Matrix device. Tokens are stored hashed.
CREATE TABLE web_sessions (
    token_hash     BYTEA PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES accounts ON DELETE CASCADE,
    created_ts     BIGINT NOT NULL,
    expires_ts     BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_ts);
