package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

var (
	// ErrUnknownKey means the server does not publish the key asked for.
	ErrUnknownKey = errors.New("federation: unknown signing key")
	// ErrKeyExpired means the key exists but is not valid at the time asked
	// for: past its valid_until_ts (capped at 7 days after it was fetched),
	// past its expired_ts, or an old key used to sign a request.
	ErrKeyExpired = errors.New("federation: signing key expired")
	// ErrBackingOff means fetching the server's keys failed recently and is
	// not retried yet.
	ErrBackingOff = errors.New("federation: server unreachable, backing off")
)

// Key fetching limits.
const (
	// maxKeyValidity caps how long a fetched key counts as valid, whatever
	// the server says (spec: "the lesser of this field and 7 days").
	maxKeyValidity  = 7 * 24 * time.Hour
	keyFetchTimeout = 20 * time.Second
	// minRefetch stops a stream of requests signed with unknown key IDs
	// from turning into a stream of key fetches.
	minRefetch      = time.Minute
	backoffFirst    = 30 * time.Second
	backoffMax      = time.Hour
	maxKeyResponse  = 256 << 10
	maxKeysPerReply = 64
	maxHealthKept   = 10000
	memoryTTL       = 5 * time.Minute
	maxMemoryKept   = 10000
)

// KeyRing finds other servers' verify keys: from PostgreSQL when cached and
// valid, else from the server itself, else through the configured notaries.
// Fetches are single-flight per server and bounded in time; a server whose
// keys cannot be fetched is left alone for a while, backing off
// exponentially. It is safe for concurrent use.
type KeyRing struct {
	serverName string
	key        signing.Key
	db         *storage.DB
	client     *Client
	notaries   []string
	now        func() time.Time

	mu      sync.Mutex
	flights map[string]*flight
	health  map[string]*serverHealth
	// memory holds recently read keys so that authenticating a request
	// usually costs no database round trip. Entries live briefly: another
	// process may have stored newer keys, and a miss re-reads the database.
	memory map[string]memoryEntry
}

type memoryEntry struct {
	keys    []storage.ServerKey
	expires time.Time
}

type flight struct {
	done chan struct{}
	err  error
}

type serverHealth struct {
	lastOK   time.Time
	failures int
	retryAt  time.Time
	lastErr  error
}

func newKeyRing(serverName string, key signing.Key, db *storage.DB, client *Client, notaries []string, now func() time.Time) *KeyRing {
	return &KeyRing{
		serverName: serverName, key: key, db: db, client: client, notaries: notaries, now: now,
		flights: map[string]*flight{}, health: map[string]*serverHealth{}, memory: map[string]memoryEntry{},
	}
}

// VerifyKey returns the public key keyID of server, valid at time at. For a
// request signature (request true) only a current key will do: old keys
// only verify events signed before they expired.
func (k *KeyRing) VerifyKey(ctx context.Context, server, keyID string, at time.Time, request bool) (ed25519.PublicKey, error) {
	if server == k.serverName {
		return k.ownKey(ctx, keyID, at, request)
	}
	pub, err := k.cachedKey(ctx, server, keyID, at, request, false)
	if errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrKeyExpired) {
		// What memory holds may be older than the database.
		pub, err = k.cachedKey(ctx, server, keyID, at, request, true)
	}
	if err == nil || (!errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrKeyExpired)) {
		return pub, err
	}
	if ferr := k.fetch(ctx, server); ferr != nil {
		return nil, fmt.Errorf("%w (fetching keys of %s: %w)", err, server, ferr)
	}
	return k.cachedKey(ctx, server, keyID, at, request, true)
}

// storedKeys returns server's keys from memory, or from the database when
// fromDB is set or memory has none.
func (k *KeyRing) storedKeys(ctx context.Context, server string, fromDB bool) ([]storage.ServerKey, error) {
	now := k.now()
	if !fromDB {
		k.mu.Lock()
		e, ok := k.memory[server]
		k.mu.Unlock()
		if ok && now.Before(e.expires) {
			return e.keys, nil
		}
	}
	keys, err := k.db.ServerKeys(ctx, server)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.memory) >= maxMemoryKept {
		for s := range k.memory {
			delete(k.memory, s)
			if len(k.memory) < maxMemoryKept/2 {
				break
			}
		}
	}
	k.memory[server] = memoryEntry{keys: keys, expires: now.Add(memoryTTL)}
	return keys, nil
}

func (k *KeyRing) cachedKey(ctx context.Context, server, keyID string, at time.Time, request, fromDB bool) (ed25519.PublicKey, error) {
	keys, err := k.storedKeys(ctx, server, fromDB)
	if err != nil {
		return nil, fmt.Errorf("reading cached keys of %s: %w", server, err)
	}
	i := slices.IndexFunc(keys, func(sk storage.ServerKey) bool { return sk.KeyID == keyID })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s has no key %s", ErrUnknownKey, server, keyID)
	}
	sk := keys[i]
	atMS := at.UnixMilli()
	switch {
	case sk.ExpiredTS != 0 && request:
		return nil, fmt.Errorf("%w: %s %s is an old key, which may not sign requests", ErrKeyExpired, server, keyID)
	case sk.ExpiredTS != 0 && atMS >= sk.ExpiredTS:
		return nil, fmt.Errorf("%w: %s %s expired at %d", ErrKeyExpired, server, keyID, sk.ExpiredTS)
	case sk.ExpiredTS == 0 && atMS > min(sk.ValidUntilTS, sk.FetchedTS+maxKeyValidity.Milliseconds()):
		return nil, fmt.Errorf("%w: %s %s was valid until %d", ErrKeyExpired, server, keyID, min(sk.ValidUntilTS, sk.FetchedTS+maxKeyValidity.Milliseconds()))
	}
	return ed25519.PublicKey(sk.Public), nil
}

func (k *KeyRing) ownKey(ctx context.Context, keyID string, at time.Time, request bool) (ed25519.PublicKey, error) {
	if keyID == k.key.ID {
		return k.key.Public(), nil
	}
	own, err := k.db.OwnKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading our old keys: %w", err)
	}
	for _, o := range own {
		if o.KeyID != keyID {
			continue
		}
		if o.ExpiredTS != 0 && (request || at.UnixMilli() >= o.ExpiredTS) {
			return nil, fmt.Errorf("%w: our key %s expired at %d", ErrKeyExpired, keyID, o.ExpiredTS)
		}
		return ed25519.PublicKey(o.Public), nil
	}
	return nil, fmt.Errorf("%w: we have no key %s", ErrUnknownKey, keyID)
}

// fetch refreshes the cached keys of server, joining a fetch already under
// way. It returns at once, without error, when the keys were fetched less
// than minRefetch ago, and with ErrBackingOff while a failed server waits for
// its next attempt.
func (k *KeyRing) fetch(ctx context.Context, server string) error {
	now := k.now()
	k.mu.Lock()
	if h := k.health[server]; h != nil {
		if h.failures > 0 && now.Before(h.retryAt) {
			k.mu.Unlock()
			return fmt.Errorf("%w until %s: %w", ErrBackingOff, h.retryAt.UTC().Format(time.RFC3339), h.lastErr)
		}
		if h.failures == 0 && now.Sub(h.lastOK) < minRefetch {
			k.mu.Unlock()
			return nil
		}
	}
	f := k.flights[server]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		k.flights[server] = f
		// The fetch runs on its own deadline, not the caller's: other
		// callers may be waiting on it, and a fetched key is worth keeping
		// even if the first caller has gone.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
		go func() {
			defer cancel()
			err := k.fetchNow(fctx, server)
			k.recordOutcome(server, err)
			f.err = err
			close(f.done)
		}()
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *KeyRing) recordOutcome(server string, err error) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.flights, server)
	h := k.health[server]
	if h == nil {
		if len(k.health) >= maxHealthKept {
			for s, old := range k.health {
				if old.failures == 0 || now.After(old.retryAt) {
					delete(k.health, s)
				}
			}
		}
		h = &serverHealth{}
		k.health[server] = h
	}
	if err == nil {
		*h = serverHealth{lastOK: now}
		return
	}
	h.failures++
	h.retryAt = now.Add(min(backoffFirst<<min(h.failures-1, 16), backoffMax))
	h.lastErr = err
}

// fetchNow asks server itself, then each notary in turn.
func (k *KeyRing) fetchNow(ctx context.Context, server string) error {
	keys, err := k.fetchDirect(ctx, server)
	if err == nil {
		return k.db.StoreServerKeys(ctx, keys)
	}
	errs := []error{fmt.Errorf("direct: %w", err)}
	if slices.Contains(k.notaries, server) {
		// A notary's own keys come only from itself: asking another
		// notary, or itself, about it would be circular.
		return errors.Join(errs...)
	}
	for _, n := range k.notaries {
		if n == k.serverName {
			continue
		}
		keys, err := k.fetchFromNotary(ctx, n, server)
		if err == nil && len(keys) == 0 {
			err = errors.New("no keys returned")
		}
		if err == nil {
			return k.db.StoreServerKeys(ctx, keys)
		}
		errs = append(errs, fmt.Errorf("notary %s: %w", n, err))
	}
	return errors.Join(errs...)
}

func (k *KeyRing) fetchDirect(ctx context.Context, server string) ([]storage.ServerKey, error) {
	var raw []byte
	if err := k.client.doJSON(ctx, server, http.MethodGet, "/_matrix/key/v2/server", nil, &raw, false, maxKeyResponse); err != nil {
		return nil, err
	}
	return parseKeyResponse(raw, server, k.now())
}

func (k *KeyRing) fetchFromNotary(ctx context.Context, notary, server string) ([]storage.ServerKey, error) {
	query := map[string]any{"server_keys": map[string]any{server: map[string]any{}}}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := k.client.doJSON(ctx, notary, http.MethodPost, "/_matrix/key/v2/query", query, &resp, false, maxKeyResponse); err != nil {
		return nil, err
	}
	var keys []storage.ServerKey
	for _, entry := range resp.ServerKeys {
		var head struct {
			ServerName string                       `json:"server_name"`
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if json.Unmarshal(entry, &head) != nil || head.ServerName != server {
			continue // not what we asked for: ignore rather than trust
		}
		if err := k.checkNotarySignature(ctx, entry, notary, head.Signatures[notary]); err != nil {
			return nil, err
		}
		got, err := parseKeyResponse(entry, server, k.now())
		if err != nil {
			return nil, err
		}
		keys = append(keys, got...)
	}
	return keys, nil
}

// checkNotarySignature requires at least one valid signature by the notary
// on a relayed key response; signatures by keys we cannot get are skipped.
func (k *KeyRing) checkNotarySignature(ctx context.Context, entry []byte, notary string, sigs map[string]string) error {
	var errs []error
	for keyID := range sigs {
		pub, err := k.VerifyKey(ctx, notary, keyID, k.now(), true)
		if err == nil {
			err = signing.VerifyJSON(entry, notary, keyID, pub)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return fmt.Errorf("response for another server is not signed by notary %s", notary)
	}
	return fmt.Errorf("notary signature: %w", errors.Join(errs...))
}

// keyResponse is the body of /_matrix/key/v2/server.
type keyResponse struct {
	ServerName string `json:"server_name"`
	VerifyKeys map[string]struct {
		Key string `json:"key"`
	} `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	} `json:"old_verify_keys"`
	ValidUntilTS int64 `json:"valid_until_ts"`
}

// parseKeyResponse checks a key response from or about server — its name, its
// keys, and the server's own signature — and returns its keys for storage.
// Every signature the server made with one of its verify_keys must verify,
// and there must be at least one.
func parseKeyResponse(raw []byte, server string, now time.Time) ([]storage.ServerKey, error) {
	canonical, err := canonicaljson.Canonicalize(raw)
	if err != nil {
		return nil, fmt.Errorf("key response is not JSON: %w", err)
	}
	var r keyResponse
	if err := json.Unmarshal(canonical, &r); err != nil {
		return nil, fmt.Errorf("key response: %w", err)
	}
	switch {
	case r.ServerName != server:
		return nil, fmt.Errorf("key response is for %q, not %q", r.ServerName, server)
	case r.ValidUntilTS <= 0:
		return nil, errors.New("key response has no valid_until_ts")
	case len(r.VerifyKeys) == 0:
		return nil, errors.New("key response has no verify_keys")
	case len(r.VerifyKeys)+len(r.OldVerifyKeys) > maxKeysPerReply:
		return nil, fmt.Errorf("key response lists more than %d keys", maxKeysPerReply)
	}
	decode := func(keyID, b64 string) ([]byte, error) {
		pub, err := signing.DecodeBase64(b64)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %s is not a base64 ed25519 public key", keyID)
		}
		return pub, nil
	}
	var keys []storage.ServerKey
	signed := 0
	for keyID, vk := range r.VerifyKeys {
		pub, err := decode(keyID, vk.Key)
		if err != nil {
			return nil, err
		}
		switch err := signing.VerifyJSON(canonical, server, keyID, pub); {
		case err == nil:
			signed++
		case !errors.Is(err, signing.ErrMissingSignature):
			return nil, fmt.Errorf("self-signature: %w", err)
		}
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: keyID, Public: pub,
			ValidUntilTS: r.ValidUntilTS, FetchedTS: now.UnixMilli(), Response: canonical})
	}
	if signed == 0 {
		return nil, fmt.Errorf("key response is not signed by any of %s's verify keys", server)
	}
	for keyID, ok := range r.OldVerifyKeys {
		if _, current := r.VerifyKeys[keyID]; current {
			continue
		}
		pub, err := decode(keyID, ok.Key)
		if err != nil {
			return nil, err
		}
		if ok.ExpiredTS <= 0 {
			return nil, fmt.Errorf("old key %s has no expired_ts", keyID)
		}
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: keyID, Public: pub,
			ValidUntilTS: r.ValidUntilTS, ExpiredTS: ok.ExpiredTS, FetchedTS: now.UnixMilli(), Response: canonical})
	}
	return keys, nil
}
