// Package httpapi owns the HTTP conventions every Matrix API of Plaza shares:
// the standard error JSON and its status codes, bounded JSON body decoding
// that turns bad input into M_NOT_JSON / M_BAD_JSON / M_TOO_LARGE, JSON
// responses, CORS, and the authenticated requester carried in a request's
// context.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"
)

// Error is a Matrix API error: {"errcode": ..., "error": ...} plus extra fields.
type Error struct {
	Status int
	Code   string
	Msg    string
	Extra  map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// MarshalJSON renders the spec's error object.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := map[string]any{"error": e.Msg}
	if e.Code != "" {
		m["errcode"] = e.Code
	}
	for k, v := range e.Extra {
		m[k] = v
	}
	return json.Marshal(m)
}

func newErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Constructors for the errors the spec defines, with the spec's status codes.
func Forbidden(format string, args ...any) *Error {
	return newErr(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return newErr(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func BadJSON(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}
func Unknown(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNKNOWN", format, args...)
}
func Unrecognized(format string, args ...any) *Error {
	return newErr(http.StatusNotFound, "M_UNRECOGNIZED", format, args...)
}
func MissingToken() *Error {
	return newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token")
}
func UnknownToken(softLogout bool) *Error {
	e := newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown or expired access token")
	if softLogout {
		e.Extra = map[string]any{"soft_logout": true}
	}
	return e
}
func LimitExceeded(retryAfterMS int64) *Error {
	e := newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many requests")
	e.Extra = map[string]any{"retry_after_ms": retryAfterMS}
	return e
}
func GuestAccessForbidden() *Error {
	return newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guests cannot use this endpoint")
}
func UserInUse() *Error {
	return newErr(http.StatusBadRequest, "M_USER_IN_USE", "that user ID is taken")
}
func InvalidUsername(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_USERNAME", format, args...)
}
func UnsupportedRoomVersion(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", format, args...)
}
func RoomInUse(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_ROOM_IN_USE", format, args...)
}
func Custom(status int, code, format string, args ...any) *Error {
	return newErr(status, code, format, args...)
}

// Respond writes v as JSON with status.
func Respond(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"errcode":"M_UNKNOWN","error":"internal error encoding the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// RespondRaw writes pre-encoded JSON.
func RespondRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Fail writes err: a *Error as itself, anything else as a logged 500 that
// reveals nothing internal.
func Fail(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	if errors.As(err, &me) {
		Respond(w, me.Status, me)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	Respond(w, http.StatusInternalServerError, newErr(http.StatusInternalServerError, "M_UNKNOWN", "internal server error"))
}

// DefaultMaxBody bounds request bodies of JSON endpoints: an event is at most
// 64 KiB, so a little more than that leaves room for envelopes.
const DefaultMaxBody = 128 << 10

// Decode reads a JSON object body into v. An empty body decodes as {}:
// several endpoints make their body optional.
func Decode(r *http.Request, v any) error {
	return DecodeLimit(r, v, DefaultMaxBody)
}

// DecodeLimit is Decode with an explicit size limit.
func DecodeLimit(r *http.Request, v any, limit int64) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// ReadBody reads a request body of at most limit bytes.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, TooLarge("request body is larger than %d bytes", limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, Unknown("reading request body: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, TooLarge("request body is larger than %d bytes", limit)
	}
	return body, nil
}

// Unmarshal decodes a JSON object, mapping failures to the spec's errors:
// M_NOT_JSON for syntax, M_BAD_JSON for wrong shapes or types.
func Unmarshal(body []byte, v any) error {
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		trimmed = "{}"
	}
	if !json.Valid([]byte(trimmed)) {
		return NotJSON("request body is not valid JSON")
	}
	if trimmed[0] != '{' {
		return BadJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal([]byte(trimmed), v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return BadJSON("field %q has the wrong type: expected %s", te.Field, te.Type)
		}
		return BadJSON("%v", err)
	}
	return nil
}

// CORS adds the headers the client-server spec requires on every response
// and answers preflight requests.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Requester is the authenticated user behind a request.
type Requester struct {
	UserID   string
	DeviceID string
	IsGuest  bool
	IsAdmin  bool
}

type requesterKey struct{}

// WithRequester returns a context carrying the requester.
func WithRequester(ctx context.Context, r *Requester) context.Context {
	return context.WithValue(ctx, requesterKey{}, r)
}

// RequesterFrom returns the requester of an authenticated request, or nil.
func RequesterFrom(ctx context.Context) *Requester {
	r, _ := ctx.Value(requesterKey{}).(*Requester)
	return r
}

// PathParam returns a URL path parameter decoded. Clients percent-encode
// identifiers in paths ("@" as %40, ":" as %3A, "$" as %24); when they do,
// routing runs on the raw path (so an encoded "/" inside a state key does not
// split it) and the router hands parameters over still encoded.
func PathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" || !strings.Contains(v, "%") {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}
