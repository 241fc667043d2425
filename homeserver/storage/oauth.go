package storage

// Queries for sign-in with GitHub and GitLab (package oauth): forge
// identities, sign-in flows in progress and the web site's sessions.

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrIdentityExists is returned when a forge identity is already mapped to
// an account.
var ErrIdentityExists = errors.New("forge identity already mapped")

// OAuthIdentity is a forge account mapped to a Matrix account.
type OAuthIdentity struct {
	IDP         string
	ForgeUserID int64
	UserID      string
	Login       string
	AccessToken []byte // sealed by the caller; nil: none kept
	Scopes      string
}

// OAuthIdentity looks up the account a forge identity maps to.
func (db *DB) OAuthIdentity(ctx context.Context, idp string, forgeUserID int64) (*OAuthIdentity, error) {
	i := OAuthIdentity{IDP: idp, ForgeUserID: forgeUserID}
	err := db.Pool.QueryRow(ctx, `SELECT user_id, login, access_token, scopes FROM oauth_identities WHERE idp = $1 AND forge_user_id = $2`,
		idp, forgeUserID).Scan(&i.UserID, &i.Login, &i.AccessToken, &i.Scopes)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &i, err
}

// OAuthIdentities lists the forge identities of an account, by idp.
func (db *DB) OAuthIdentities(ctx context.Context, userID string) ([]OAuthIdentity, error) {
	rows, err := db.Pool.Query(ctx, `SELECT idp, forge_user_id, user_id, login, access_token, scopes
		FROM oauth_identities WHERE user_id = $1 ORDER BY idp, forge_user_id`, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (OAuthIdentity, error) {
		var i OAuthIdentity
		err := r.Scan(&i.IDP, &i.ForgeUserID, &i.UserID, &i.Login, &i.AccessToken, &i.Scopes)
		return i, err
	})
}

// UpdateOAuthIdentity records a new sign-in of a mapped identity: its
// current login and a fresh access token.
func (db *DB) UpdateOAuthIdentity(ctx context.Context, i OAuthIdentity, nowMS int64) error {
	tag, err := db.Pool.Exec(ctx, `UPDATE oauth_identities SET login = $3, access_token = $4, scopes = $5, updated_ts = $6
		WHERE idp = $1 AND forge_user_id = $2`, i.IDP, i.ForgeUserID, i.Login, i.AccessToken, i.Scopes, nowMS)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// CreateOAuthAccount creates an account and maps a forge identity to it in
// one transaction. ErrExists: the localpart is taken (try another).
// ErrIdentityExists: the identity was mapped meanwhile (a concurrent first
// sign-in); nothing is created.
func (db *DB) CreateOAuthAccount(ctx context.Context, a Account, i OAuthIdentity, nowMS int64) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO accounts (user_id, localpart, displayname, avatar_url, created_ts)
			VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5)`, a.UserID, a.Localpart, a.DisplayName, a.AvatarURL, nowMS)
		if isUniqueViolation(err) {
			return ErrExists
		}
		if err != nil {
			return err
		}
		return insertIdentity(ctx, tx, i, a.UserID, nowMS)
	})
}

// LinkOAuthIdentity maps a forge identity to an existing account.
// ErrIdentityExists: it is mapped already.
func (db *DB) LinkOAuthIdentity(ctx context.Context, i OAuthIdentity, nowMS int64) error {
	return insertIdentity(ctx, db.Pool, i, i.UserID, nowMS)
}

func insertIdentity(ctx context.Context, q Querier, i OAuthIdentity, userID string, nowMS int64) error {
	_, err := q.Exec(ctx, `INSERT INTO oauth_identities (idp, forge_user_id, user_id, login, access_token, scopes, created_ts, updated_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, i.IDP, i.ForgeUserID, userID, i.Login, i.AccessToken, i.Scopes, nowMS)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return ErrIdentityExists
	}
	return err
}

// OAuthPending is a sign-in flow in progress (see migration 070).
type OAuthPending struct {
	Kind        string // authorize or confirm
	IDP         string
	Verifier    string
	RedirectURL string
	Purpose     string // sso or web
	UserID      string
	ExpiresTS   int64
}

// CreateOAuthPending stores a flow step under key, bound to browser (both
// stored hashed), and clears out steps that expired unused.
func (db *DB) CreateOAuthPending(ctx context.Context, key, browser string, p OAuthPending, nowMS int64) error {
	if _, err := db.Pool.Exec(ctx, `DELETE FROM oauth_pending WHERE expires_ts < $1`, nowMS); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `INSERT INTO oauth_pending (key_hash, kind, browser_hash, idp, verifier, redirect_url, purpose, user_id, expires_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''), $9)`,
		HashToken(key), p.Kind, HashToken(browser), p.IDP, p.Verifier, p.RedirectURL, p.Purpose, p.UserID, p.ExpiresTS)
	return err
}

// TakeOAuthPending consumes a flow step: it must exist under key with this
// kind, belong to browser and not have expired. ErrNotFound otherwise. A
// step is consumed by a successful take only, so a stranger who guesses
// nothing cannot spoil someone else's flow.
func (db *DB) TakeOAuthPending(ctx context.Context, kind, key, browser string, nowMS int64) (*OAuthPending, error) {
	p := OAuthPending{Kind: kind}
	var user *string
	err := db.Pool.QueryRow(ctx, `DELETE FROM oauth_pending WHERE key_hash = $1 AND kind = $2 AND browser_hash = $3
		RETURNING idp, verifier, redirect_url, purpose, user_id, expires_ts`, HashToken(key), kind, HashToken(browser)).
		Scan(&p.IDP, &p.Verifier, &p.RedirectURL, &p.Purpose, &user, &p.ExpiresTS)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && p.ExpiresTS < nowMS) {
		return nil, ErrNotFound
	}
	if user != nil {
		p.UserID = *user
	}
	return &p, err
}

// CreateWebSession stores a web site session (the token is stored hashed)
// and clears out expired ones.
func (db *DB) CreateWebSession(ctx context.Context, token, userID string, expiresTS, nowMS int64) error {
	if _, err := db.Pool.Exec(ctx, `DELETE FROM web_sessions WHERE expires_ts < $1`, nowMS); err != nil {
		return err
	}
	_, err := db.Pool.Exec(ctx, `INSERT INTO web_sessions (token_hash, user_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
		HashToken(token), userID, nowMS, expiresTS)
	return err
}

// WebSession resolves a web session token to its user; ErrNotFound if it is
// unknown, expired or its account deactivated.
func (db *DB) WebSession(ctx context.Context, token string, nowMS int64) (string, error) {
	var userID string
	err := db.Pool.QueryRow(ctx, `SELECT s.user_id FROM web_sessions s JOIN accounts a USING (user_id)
		WHERE s.token_hash = $1 AND s.expires_ts >= $2 AND NOT a.deactivated`, HashToken(token), nowMS).Scan(&userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return userID, err
}

// DeleteWebSession ends a web session (sign-out).
func (db *DB) DeleteWebSession(ctx context.Context, token string) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM web_sessions WHERE token_hash = $1`, HashToken(token))
	return err
}

// MediaUploaded reports whether the media mediaID exists with its content
// (sign-in checks that the identity providers' icons it stored once are
// still there, for instance after the database was replaced).
func (db *DB) MediaUploaded(ctx context.Context, mediaID string) (bool, error) {
	var ok bool
	err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media WHERE media_id = $1 AND uploaded_ts IS NOT NULL)`, mediaID).Scan(&ok)
	return ok, err
}
