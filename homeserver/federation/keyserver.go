package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// Notary limits: one query may not make us contact an unbounded number of
// servers, nor take unbounded time.
const (
	maxNotaryServers    = 100
	notaryParallelism   = 8
	notaryTimeout       = 25 * time.Second
	maxNotaryQueryBytes = 64 << 10
	ownKeyRefresh       = time.Hour
)

// ownKeyResponse returns our signed key response, made afresh at most every
// ownKeyRefresh (or half the key validity, if shorter): our keys change only
// at start-up, and a flood of key requests should cost neither a database
// query nor a signature each.
func (s *Service) ownKeyResponse(ctx context.Context) ([]byte, error) {
	now := s.cfg.Now()
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	if s.ownBody != nil && now.Sub(s.ownMade) < min(ownKeyRefresh, s.cfg.KeyValidity/2) && !now.Before(s.ownMade) {
		return s.ownBody, nil
	}
	body, err := s.makeOwnKeyResponse(ctx, now)
	if err != nil {
		return nil, err
	}
	s.ownBody, s.ownMade = body, now
	return body, nil
}

// makeOwnKeyResponse signs our key response: the current key under
// verify_keys, the keys it replaced under old_verify_keys.
func (s *Service) makeOwnKeyResponse(ctx context.Context, now time.Time) ([]byte, error) {
	own, err := s.db.OwnKeys(ctx)
	if err != nil {
		return nil, err
	}
	type oldKey struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	}
	old := map[string]oldKey{}
	for _, k := range own {
		if k.ExpiredTS != 0 && k.KeyID != s.cfg.Key.ID {
			old[k.KeyID] = oldKey{Key: signing.EncodeBase64(k.Public), ExpiredTS: k.ExpiredTS}
		}
	}
	body, err := json.Marshal(map[string]any{
		"server_name":     s.cfg.ServerName,
		"verify_keys":     map[string]any{s.cfg.Key.ID: map[string]string{"key": signing.EncodeBase64(s.cfg.Key.Public())}},
		"old_verify_keys": old,
		"valid_until_ts":  now.Add(s.cfg.KeyValidity).UnixMilli(),
	})
	if err != nil {
		return nil, err
	}
	return signing.SignJSON(body, s.cfg.ServerName, s.cfg.Key)
}

func (s *Service) serveKeys(w http.ResponseWriter, r *http.Request) {
	body, err := s.ownKeyResponse(r.Context())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.RespondRaw(w, http.StatusOK, body)
}

// keyCriteria is what a notary query asks of one server's keys.
type keyCriteria struct {
	keyIDs        []string
	minValidUntil int64
}

func (s *Service) serveKeyQueryOne(w http.ResponseWriter, r *http.Request) {
	server := chi.URLParam(r, "serverName")
	c := keyCriteria{minValidUntil: s.cfg.Now().UnixMilli()}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("minimum_valid_until_ts must be an integer"))
			return
		}
		c.minValidUntil = ts
	}
	s.answerKeyQuery(w, r, map[string]keyCriteria{server: c})
}

func (s *Service) serveKeyQuery(w http.ResponseWriter, r *http.Request) {
	var q struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httpapi.DecodeLimit(r, &q, maxNotaryQueryBytes); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if q.ServerKeys == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("server_keys is required"))
		return
	}
	if len(q.ServerKeys) > maxNotaryServers {
		httpapi.Fail(w, r, httpapi.InvalidParam("at most %d servers per query", maxNotaryServers))
		return
	}
	now := s.cfg.Now().UnixMilli()
	criteria := map[string]keyCriteria{}
	for server, ids := range q.ServerKeys {
		c := keyCriteria{minValidUntil: now}
		for keyID, crit := range ids {
			c.keyIDs = append(c.keyIDs, keyID)
			if crit.MinimumValidUntilTS != nil {
				c.minValidUntil = max(c.minValidUntil, *crit.MinimumValidUntilTS)
			}
		}
		criteria[server] = c
	}
	s.answerKeyQuery(w, r, criteria)
}

// answerKeyQuery returns, for each server asked about, the key responses we
// hold — refreshed from the server when they do not meet the criteria, and
// stale ones when it cannot be reached, as the spec asks of notaries — each
// countersigned by us.
func (s *Service) answerKeyQuery(w http.ResponseWriter, r *http.Request, criteria map[string]keyCriteria) {
	ctx, cancel := context.WithTimeout(r.Context(), notaryTimeout)
	defer cancel()
	var (
		mu      sync.Mutex
		answers = []json.RawMessage{}
		wg      sync.WaitGroup
		sem     = make(chan struct{}, notaryParallelism)
	)
	for server, c := range criteria {
		if !id.ValidServerName(server) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			responses := s.keyResponsesFor(ctx, server, c)
			mu.Lock()
			answers = append(answers, responses...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if r.Context().Err() != nil {
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"server_keys": answers})
}

// keyResponsesFor returns server's key responses signed by us; none when we
// have none and cannot get any.
func (s *Service) keyResponsesFor(ctx context.Context, server string, c keyCriteria) []json.RawMessage {
	if server == s.cfg.ServerName {
		own, err := s.ownKeyResponse(ctx)
		if err != nil {
			return nil
		}
		return []json.RawMessage{own}
	}
	keys, err := s.db.ServerKeys(ctx, server)
	if err != nil {
		return nil
	}
	if !s.fresh(keys, c) {
		// A failure leaves us with what we had, which is what we return.
		_ = s.Keys.fetch(ctx, server)
		if keys, err = s.db.ServerKeys(ctx, server); err != nil {
			return nil
		}
	}
	var out []json.RawMessage
	var seen [][]byte
	for _, k := range keys {
		if slices.ContainsFunc(seen, func(b []byte) bool { return bytes.Equal(b, k.Response) }) {
			continue
		}
		seen = append(seen, k.Response)
		signed, err := signing.SignJSON(k.Response, s.cfg.ServerName, s.cfg.Key)
		if err != nil {
			continue
		}
		out = append(out, signed)
	}
	return out
}

// fresh reports whether cached keys answer a query without asking the
// server again: every key asked for is there, and a response is valid long
// enough and younger than half its lifetime (the spec's advice to notaries).
func (s *Service) fresh(keys []storage.ServerKey, c keyCriteria) bool {
	for _, want := range c.keyIDs {
		if !slices.ContainsFunc(keys, func(k storage.ServerKey) bool { return k.KeyID == want }) {
			return false
		}
	}
	now := s.cfg.Now().UnixMilli()
	return slices.ContainsFunc(keys, func(k storage.ServerKey) bool {
		return k.ExpiredTS == 0 && k.ValidUntilTS >= c.minValidUntil && now < k.FetchedTS+(k.ValidUntilTS-k.FetchedTS)/2
	})
}
