package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

func TestKeyServerPublishesCurrentAndOldKeys(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	old := a.rotate()

	var raw json.RawMessage
	if code := get(t, ca.client(), a.ts.URL+"/_matrix/key/v2/server", &raw); code != 200 {
		t.Fatalf("status %d", code)
	}
	var resp keyResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ServerName != a.name {
		t.Errorf("server_name %q, want %q", resp.ServerName, a.name)
	}
	if got := resp.VerifyKeys[a.cfg.Key.ID].Key; got != signing.EncodeBase64(a.cfg.Key.Public()) || len(resp.VerifyKeys) != 1 {
		t.Errorf("verify_keys = %v, want only the current key", resp.VerifyKeys)
	}
	ok, found := resp.OldVerifyKeys[old.ID]
	if !found || ok.Key != signing.EncodeBase64(old.Public()) || ok.ExpiredTS <= 0 || ok.ExpiredTS > time.Now().UnixMilli() {
		t.Errorf("old_verify_keys = %v, want %s with an expiry in the past", resp.OldVerifyKeys, old.ID)
	}
	if d := time.Until(time.UnixMilli(resp.ValidUntilTS)); d < 6*24*time.Hour || d > 7*24*time.Hour {
		t.Errorf("valid_until_ts is %v from now, want about 7 days", d)
	}
	if err := signing.VerifyJSON(raw, a.name, a.cfg.Key.ID, a.cfg.Key.Public()); err != nil {
		t.Errorf("self-signature: %v", err)
	}
	// The parser that other Plaza servers use accepts it.
	keys, err := parseKeyResponse(raw, a.name, time.Now())
	if err != nil || len(keys) != 2 {
		t.Errorf("parseKeyResponse = %d keys, %v", len(keys), err)
	}
}

func TestVersion(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	var v struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	if code := get(t, ca.client(), a.ts.URL+"/_matrix/federation/v1/version", &v); code != 200 || v.Server.Name != "Plaza" || v.Server.Version != "test" {
		t.Errorf("version = %d %+v", code, v)
	}
	var e struct{ ErrCode string }
	if code := get(t, ca.client(), a.ts.URL+"/_matrix/federation/v1/nope", &e); code != 404 || e.ErrCode != "M_UNRECOGNIZED" {
		t.Errorf("unknown endpoint = %d %s", code, e.ErrCode)
	}
}

func TestKeyFetchVerifiesAndCaches(t *testing.T) {
	ca := newCA(t)
	a, b := newFed(t, ca), newFed(t, ca)
	ctx := context.Background()

	for range 2 {
		pub, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now(), true)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pub, b.cfg.Key.Public()) {
			t.Fatal("fetched the wrong key")
		}
	}
	if n := b.hitCount("/_matrix/key/v2/server"); n != 1 {
		t.Errorf("B's key server was asked %d times, want 1", n)
	}
	// The cache is in PostgreSQL: a restarted A still needs no request.
	a.start()
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now(), true); err != nil {
		t.Fatal(err)
	}
	if n := b.hitCount("/_matrix/key/v2/server"); n != 1 {
		t.Errorf("after a restart, B's key server was asked %d times, want 1", n)
	}
	// A key B does not have is unknown, after one more look.
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, "ed25519:nope", time.Now(), true); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
}

func TestKeyFetchIsSingleFlight(t *testing.T) {
	ca := newCA(t)
	a, b := newFed(t, ca), newFed(t, ca)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := a.svc.Keys.VerifyKey(context.Background(), b.name, b.cfg.Key.ID, time.Now(), true)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := b.hitCount("/_matrix/key/v2/server"); n != 1 {
		t.Errorf("20 concurrent lookups made %d fetches, want 1", n)
	}
}

func TestOldKeysVerifyOnlyEventsBeforeExpiry(t *testing.T) {
	ca := newCA(t)
	a, b := newFed(t, ca), newFed(t, ca)
	old := b.rotate()
	ctx := context.Background()
	before := time.Now().Add(-time.Hour)

	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, old.ID, time.Now(), true); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("old key for a request: %v, want ErrKeyExpired", err)
	}
	pub, err := a.svc.Keys.VerifyKey(ctx, b.name, old.ID, before, false)
	if err != nil || !bytes.Equal(pub, old.Public()) {
		t.Errorf("old key for an event signed before it expired: %v", err)
	}
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, old.ID, time.Now().Add(time.Hour), false); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("old key after its expiry: %v, want ErrKeyExpired", err)
	}
	// Our own keys go through the same rules.
	if _, err := b.svc.Keys.VerifyKey(ctx, b.name, old.ID, before, false); err != nil {
		t.Errorf("own old key: %v", err)
	}
	if _, err := b.svc.Keys.VerifyKey(ctx, b.name, old.ID, time.Now(), true); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("own old key for a request: %v", err)
	}
}

func TestKeyValidityIsCappedAtSevenDays(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFed(t, ca, func(c *Config) { c.KeyValidity = 30 * 24 * time.Hour })
	ctx := context.Background()
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now().Add(6*24*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now().Add(8*24*time.Hour), false); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("a key claimed valid for 30 days, used in 8: %v, want ErrKeyExpired", err)
	}
}

func TestUnreachableServerBacksOff(t *testing.T) {
	ca := newCA(t)
	a, b := newFed(t, ca), newFed(t, ca)
	b.ts.Close()
	ctx := context.Background()
	_, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now(), true)
	if err == nil || errors.Is(err, ErrBackingOff) {
		t.Fatalf("first lookup: %v, want a fetch error", err)
	}
	start := time.Now()
	if _, err := a.svc.Keys.VerifyKey(ctx, b.name, b.cfg.Key.ID, time.Now(), true); !errors.Is(err, ErrBackingOff) {
		t.Fatalf("second lookup: %v, want ErrBackingOff", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a backed-off lookup took %v", d)
	}
}

func TestNotary(t *testing.T) {
	ca := newCA(t)
	b := newFed(t, ca)
	n := newFed(t, ca)
	a := newFed(t, ca, func(c *Config) { c.Notaries = []string{n.name} })
	client := ca.client()

	checkEntry := func(entry json.RawMessage) {
		t.Helper()
		if err := signing.VerifyJSON(entry, b.name, b.cfg.Key.ID, b.cfg.Key.Public()); err != nil {
			t.Errorf("origin signature: %v", err)
		}
		if err := signing.VerifyJSON(entry, n.name, n.cfg.Key.ID, n.cfg.Key.Public()); err != nil {
			t.Errorf("notary signature: %v", err)
		}
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	body := `{"server_keys":{"` + b.name + `":{"` + b.cfg.Key.ID + `":{"minimum_valid_until_ts":0}}, "not a name!":{}}}`
	r, err := client.Post(n.ts.URL+"/_matrix/key/v2/query", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(r.Body).Decode(&resp); err != nil || r.StatusCode != 200 {
		t.Fatalf("POST query: %d %v", r.StatusCode, err)
	}
	r.Body.Close()
	if len(resp.ServerKeys) != 1 {
		t.Fatalf("POST query returned %d responses, want 1", len(resp.ServerKeys))
	}
	checkEntry(resp.ServerKeys[0])

	// The GET form answers from the notary's cache.
	if code := get(t, client, n.ts.URL+"/_matrix/key/v2/query/"+b.name, &resp); code != 200 || len(resp.ServerKeys) != 1 {
		t.Fatalf("GET query: %d, %d responses", code, len(resp.ServerKeys))
	}
	checkEntry(resp.ServerKeys[0])
	if n := b.hitCount("/_matrix/key/v2/server"); n != 1 {
		t.Errorf("the notary fetched B's keys %d times, want 1", n)
	}
	// A notary vouches for itself too.
	if code := get(t, client, n.ts.URL+"/_matrix/key/v2/query/"+n.name, &resp); code != 200 || len(resp.ServerKeys) != 1 {
		t.Fatalf("GET query for the notary itself: %d, %d responses", code, len(resp.ServerKeys))
	}

	// B goes away; A still gets its keys, through the notary, which serves
	// what it cached.
	b.ts.Close()
	pub, err := a.svc.Keys.VerifyKey(context.Background(), b.name, b.cfg.Key.ID, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, b.cfg.Key.Public()) {
		t.Fatal("wrong key through the notary")
	}
	if n.hitCount("/_matrix/key/v2/query") != 2 {
		t.Errorf("notary queried %d times, want 2 (our POST and A's)", n.hitCount("/_matrix/key/v2/query"))
	}
}

func TestNotaryQueryLimits(t *testing.T) {
	ca := newCA(t)
	n := newFed(t, ca)
	client := ca.client()
	post := func(body string) (int, string) {
		r, err := client.Post(n.ts.URL+"/_matrix/key/v2/query", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.NewDecoder(r.Body).Decode(&e)
		return r.StatusCode, e.ErrCode
	}
	if code, ec := post(`not json`); code != 400 || ec != "M_NOT_JSON" {
		t.Errorf("not JSON: %d %s", code, ec)
	}
	if code, ec := post(`{}`); code != 400 || ec != "M_MISSING_PARAM" {
		t.Errorf("no server_keys: %d %s", code, ec)
	}
	if code, _ := post(`{"server_keys":{}}`); code != 200 {
		t.Errorf("empty server_keys: %d", code)
	}
	many := map[string]any{}
	for i := range maxNotaryServers + 1 {
		many[fmt.Sprintf("s%d.example", i)] = map[string]any{}
	}
	raw, _ := json.Marshal(map[string]any{"server_keys": many})
	if code, ec := post(string(raw)); code != 400 || ec != "M_INVALID_PARAM" {
		t.Errorf("too many servers: %d %s", code, ec)
	}
}

func TestParseKeyResponseRejectsForgeries(t *testing.T) {
	key, _ := signing.GenerateKey()
	other, _ := signing.GenerateKey()
	build := func(server string, pub ed25519.PublicKey, signer signing.Key, validUntil int64) []byte {
		body, _ := json.Marshal(map[string]any{
			"server_name":    server,
			"verify_keys":    map[string]any{key.ID: map[string]string{"key": signing.EncodeBase64(pub)}},
			"valid_until_ts": validUntil,
		})
		signed, err := signing.SignJSON(body, server, signer)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	future := time.Now().Add(time.Hour).UnixMilli()
	other.ID = key.ID // same key ID, different key: a forged signature
	tests := []struct {
		name string
		raw  []byte
		ok   bool
	}{
		{"genuine", build("b.example", key.Public(), key, future), true},
		{"signed by another key", build("b.example", key.Public(), other, future), false},
		{"for another server", build("c.example", key.Public(), key, future), false},
		{"no valid_until_ts", build("b.example", key.Public(), key, 0), false},
		{"unsigned", []byte(`{"server_name":"b.example","valid_until_ts":1,"verify_keys":{"` + key.ID + `":{"key":"` + signing.EncodeBase64(key.Public()) + `"}}}`), false},
		{"not JSON", []byte(`{`), false},
	}
	for _, tt := range tests {
		_, err := parseKeyResponse(tt.raw, "b.example", time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

func TestWellKnownDelegation(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca, func(c *Config) { c.Delegate = "matrix.example.org:443" })
	var wk map[string]string
	if code := get(t, ca.client(), a.ts.URL+"/.well-known/matrix/server", &wk); code != http.StatusOK || wk["m.server"] != "matrix.example.org:443" {
		t.Errorf("well-known = %d %v", code, wk)
	}
	b := newFed(t, ca)
	if code := get(t, ca.client(), b.ts.URL+"/.well-known/matrix/server", nil); code != http.StatusNotFound {
		t.Errorf("well-known without a delegate = %d, want 404", code)
	}
}

// TestNotaryWithoutValidSignatureIsNotTrusted checks that keys relayed by a
// notary count only when the notary's own signature on them verifies.
func TestNotaryWithoutValidSignatureIsNotTrusted(t *testing.T) {
	ca := newCA(t)
	b := newFed(t, ca)
	n := newFed(t, ca)
	a := newFed(t, ca, func(c *Config) { c.Notaries = []string{n.name} })
	var bResponse json.RawMessage
	if code := get(t, ca.client(), b.ts.URL+"/_matrix/key/v2/server", &bResponse); code != 200 {
		t.Fatal(code)
	}
	b.ts.Close()

	forger, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forger.ID = n.cfg.Key.ID // the notary's key ID, someone else's key
	genuine := n.svc.Handler()
	var relay http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/query" {
			genuine.ServeHTTP(w, r)
			return
		}
		signed, err := signing.SignJSON(bResponse, n.name, forger)
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"server_keys":[` + string(signed) + `]}`))
	})
	n.handler.Store(&relay)

	_, err = a.svc.Keys.VerifyKey(context.Background(), b.name, b.cfg.Key.ID, time.Now(), true)
	if err == nil || !errors.Is(err, signing.ErrBadSignature) {
		t.Errorf("keys relayed with a forged notary signature: %v, want a signature error", err)
	}
	if n.hitCount("/_matrix/key/v2/query") != 1 {
		t.Errorf("notary asked %d times, want 1", n.hitCount("/_matrix/key/v2/query"))
	}
}
