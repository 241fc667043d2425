package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/signing"
)

type originKey struct{}

// Origin returns the server that signed an authenticated request, or "".
func Origin(ctx context.Context) string {
	o, _ := ctx.Value(originKey{}).(string)
	return o
}

// Authenticate lets a request through only if it carries a valid X-Matrix
// signature by its origin over method, target, destination and body, made
// with one of the origin's current keys, and addressed to us. The origin is
// then in the request's context (Origin) and the body, read to verify it,
// is replayed to the handler. Every authentication failure is a 401
// M_UNAUTHORIZED, including a key we cannot fetch: the request is not
// authenticated, whatever the reason.
func (s *Service) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin, body, err := s.authenticate(r)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		s.Sender.Heard(origin) // it is up: deliver what waits for it now
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
	})
}

func (s *Service) authenticate(r *http.Request) (string, []byte, error) {
	var headers []XMatrix
	for _, h := range r.Header.Values("Authorization") {
		x, err := ParseXMatrix(h)
		if errors.Is(err, errNotXMatrix) {
			continue
		}
		if err != nil {
			return "", nil, errUnauthorized("malformed X-Matrix authorization: %v", err)
		}
		headers = append(headers, x)
	}
	if len(headers) == 0 {
		return "", nil, errUnauthorized("missing X-Matrix authorization")
	}
	origin := headers[0].Origin
	for _, x := range headers {
		if x.Origin != origin {
			return "", nil, errUnauthorized("X-Matrix authorizations name different origins")
		}
		if x.Destination != "" && x.Destination != s.cfg.ServerName {
			return "", nil, errUnauthorized("request is addressed to %s, not to this server", x.Destination)
		}
	}

	body, err := httpapi.ReadBody(r, s.cfg.MaxBodyBytes)
	if err != nil {
		return "", nil, err
	}
	var content []byte
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return "", nil, httpapi.NotJSON("request body is not valid JSON")
		}
		content = body
	}
	uri := r.RequestURI
	if uri == "" || !strings.HasPrefix(uri, "/") { // a handler called directly, or an absolute-form target
		uri = r.URL.RequestURI()
	}

	// Any one valid signature will do; several headers let a server sign
	// with more than one key during a rotation.
	var errs []error
	for _, x := range headers {
		signed, err := requestSigningBytes(r.Method, uri, origin, x.Destination, content)
		if err != nil {
			return "", nil, httpapi.BadJSON("request body: %v", err)
		}
		pub, err := s.Keys.VerifyKey(r.Context(), origin, x.Key, s.cfg.Now(), true)
		if err == nil {
			err = signing.VerifyBytes(signed, x.Sig, pub)
		}
		if err == nil {
			return origin, body, nil
		}
		if r.Context().Err() != nil {
			return "", nil, r.Context().Err()
		}
		errs = append(errs, err)
	}
	return "", nil, errUnauthorized("X-Matrix signature of %s not valid: %v", origin, errors.Join(errs...))
}
