package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/password"
	"plaza/homeserver/storage"
)

// Shared-secret registration is Synapse's admin API for creating accounts
// without user-interactive auth: GET a nonce, then POST the account with
// mac = hex(HMAC-SHA1(secret, nonce \0 username \0 password \0 admin|notadmin
// [\0 user_type])). Tools (register_new_matrix_user, Complement's admin
// tests, provisioning scripts) speak it, so Plaza offers the same wire
// format when a secret is configured; without one the routes do not exist.
const (
	// A nonce is good once, for this long (Synapse's figure).
	registerNonceTTL = time.Minute
	// At most this many nonces wait at once: each GET makes one, and the
	// endpoint needs no authentication.
	maxRegisterNonces = 10_000
)

// nonceStore holds the nonces handed out and not yet used. The zero value is
// ready. Nonces live in this process only: with several processes behind a
// load balancer, the POST must reach the process that answered the GET
// (DESIGN's multi-process plan would keep them in PostgreSQL).
type nonceStore struct {
	mu     sync.Mutex
	issued map[string]time.Time // nonce → expiry
}

func (s *nonceStore) add(nonce string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.issued == nil {
		s.issued = map[string]time.Time{}
	}
	if len(s.issued) >= maxRegisterNonces {
		for n, exp := range s.issued {
			if !now.Before(exp) {
				delete(s.issued, n)
			}
		}
		if len(s.issued) >= maxRegisterNonces {
			return false
		}
	}
	s.issued[nonce] = now.Add(registerNonceTTL)
	return true
}

// take consumes nonce, reporting whether it was issued and is unexpired.
func (s *nonceStore) take(nonce string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.issued[nonce]
	if ok {
		delete(s.issued, nonce)
	}
	return ok && now.Before(exp)
}

// adminRegisterRoutes mounts /_synapse/admin/v1/register on the root router
// when a shared secret is configured.
func (a *API) adminRegisterRoutes(r chi.Router) {
	if a.cfg.RegistrationSharedSecret == "" {
		return
	}
	r.Get("/_synapse/admin/v1/register", a.registerNonce)
	r.Post("/_synapse/admin/v1/register", a.registerWithSharedSecret)
}

func (a *API) registerNonce(w http.ResponseWriter, r *http.Request) {
	nonce := randomToken(24)
	if !a.registerNonces.add(nonce, a.now()) {
		httpapi.Fail(w, r, httpapi.LimitExceeded(registerNonceTTL.Milliseconds()))
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"nonce": nonce})
}

type sharedSecretRegisterRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// sharedSecretMAC is the expected mac of req under secret.
func sharedSecretMAC(secret string, req sharedSecretRegisterRequest) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(req.Nonce))
	m.Write([]byte{0})
	m.Write([]byte(req.Username))
	m.Write([]byte{0})
	m.Write([]byte(req.Password))
	m.Write([]byte{0})
	if req.Admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if req.UserType != "" {
		m.Write([]byte{0})
		m.Write([]byte(req.UserType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (a *API) registerWithSharedSecret(w http.ResponseWriter, r *http.Request) {
	var req sharedSecretRegisterRequest
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	switch {
	case req.Nonce == "":
		httpapi.Fail(w, r, httpapi.MissingParam("nonce is required (GET this endpoint for one)"))
		return
	case req.Username == "" || req.Password == "" || req.MAC == "":
		httpapi.Fail(w, r, httpapi.MissingParam("username, password and mac are required"))
		return
	case strings.ContainsRune(req.Username, 0) || strings.ContainsRune(req.Password, 0) || strings.ContainsRune(req.UserType, 0):
		// A NUL would let one field's bytes pass for another's in the MAC.
		httpapi.Fail(w, r, httpapi.InvalidParam("username, password and user_type must not contain NUL"))
		return
	case len(req.Password) > password.MaxLength:
		httpapi.Fail(w, r, httpapi.InvalidParam("password is longer than %d bytes", password.MaxLength))
		return
	}
	// The nonce is spent whatever happens next, so a wrong MAC cannot be
	// retried against it.
	if !a.registerNonces.take(req.Nonce, a.now()) {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusBadRequest, "M_UNKNOWN", "unrecognised or expired nonce"))
		return
	}
	got, err := hex.DecodeString(req.MAC)
	want, _ := hex.DecodeString(sharedSecretMAC(a.cfg.RegistrationSharedSecret, req))
	if err != nil || !hmac.Equal(got, want) {
		httpapi.Fail(w, r, httpapi.Forbidden("HMAC incorrect"))
		return
	}

	// Synapse lowercases the name after checking the MAC over it as sent.
	localpart := strings.ToLower(strings.TrimPrefix(req.Username, "@"))
	if err := a.checkNewLocalpart(r, localpart); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	hash, err := password.Hash(req.Password, a.cfg.BcryptCost)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	displayName := req.DisplayName
	if displayName == "" {
		displayName = localpart
	}
	userID := "@" + localpart + ":" + a.cfg.ServerName
	err = a.db.CreateAccount(r.Context(), storage.Account{
		UserID: userID, Localpart: localpart, PasswordHash: hash, IsAdmin: req.Admin, DisplayName: displayName,
	}, a.now().UnixMilli())
	if errors.Is(err, storage.ErrExists) {
		httpapi.Fail(w, r, httpapi.UserInUse())
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	resp, err := a.newSession(r, userID, "", "", false)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, resp)
}
