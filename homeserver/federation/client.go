package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/signing"
)

// Outbound limits. A remote server that is slow or sends too much must not
// hold resources for long.
const (
	dialTimeout     = 10 * time.Second
	tlsTimeout      = 10 * time.Second
	responseTimeout = 30 * time.Second
	// requestTimeout bounds a whole exchange, body included, when the
	// caller set no deadline of its own.
	requestTimeout     = 2 * time.Minute
	maxResponseBody    = 16 << 20
	maxTransports      = 1024
	idleConnsPerServer = 4
)

// LoadRootCAs returns the system's trusted roots plus the certificates in
// the PEM file caFile (if not empty). Extra roots exist for tests and private
// federations; there is deliberately no way to skip verification.
func LoadRootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots: only the configured ones
	}
	if caFile == "" {
		return pool, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// Client sends requests to other homeservers: it resolves their server
// names, verifies their TLS certificates, and signs requests with X-Matrix
// authorization. It is safe for concurrent use.
type Client struct {
	origin   string
	key      signing.Key
	resolver *Resolver
	roots    *x509.CertPool
	dialer   *net.Dialer

	mu         sync.Mutex
	transports map[string]*http.Transport // by destination (addresses and TLS name)
}

// NewClient returns a client signing as origin with key. Unless
// allowPrivate is set, it refuses to connect to loopback, private and other
// non-public addresses.
func NewClient(origin string, key signing.Key, resolver *Resolver, roots *x509.CertPool, allowPrivate bool) *Client {
	return &Client{origin: origin, key: key, resolver: resolver, roots: roots, dialer: newDialer(allowPrivate), transports: map[string]*http.Transport{}}
}

// RemoteError is a non-2xx answer from another server.
type RemoteError struct {
	Status  int
	ErrCode string
	Message string
}

func (e *RemoteError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("remote server answered %d %s: %s", e.Status, e.ErrCode, e.Message)
	}
	return fmt.Sprintf("remote server answered %d", e.Status)
}

// transport returns the pooled transport for d. One transport per
// destination lets each dial its own resolved addresses and check its own
// TLS name while reusing connections; the map is bounded, dropping idle
// transports when full.
func (c *Client) transport(d Destination) *http.Transport {
	key := d.TLSName + "|" + strings.Join(d.Addrs, ",")
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[key]; ok {
		return t
	}
	if len(c.transports) >= maxTransports {
		for k, t := range c.transports {
			t.CloseIdleConnections()
			delete(c.transports, k)
			if len(c.transports) < maxTransports/2 {
				break
			}
		}
	}
	addrs, dialer := d.Addrs, c.dialer
	t := &http.Transport{
		// The URL's host is only the Host header; connections go to the
		// addresses discovery found, tried in order.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for _, a := range addrs {
				conn, err := dialer.DialContext(ctx, network, a)
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig: &tls.Config{
			// crypto/tls sends no SNI when ServerName is an IP address, as
			// the spec asks, and then checks the certificate's IP SANs.
			ServerName: d.TLSName,
			RootCAs:    c.roots,
			MinVersion: tls.VersionTLS12,
		},
		TLSHandshakeTimeout:   tlsTimeout,
		ResponseHeaderTimeout: responseTimeout,
		MaxIdleConnsPerHost:   idleConnsPerServer,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	c.transports[key] = t
	return t
}

// Close drops idle connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
}

// Do sends a request to the server named destination. uri is the request
// target, path and query ("/_matrix/federation/v1/…?…"), already escaped.
// body, when not nil, must be a JSON object. signed adds X-Matrix
// authorization; only the key endpoints are fetched unsigned. The caller
// closes the response body.
func (c *Client) Do(ctx context.Context, destination, method, uri string, body []byte, signed bool) (*http.Response, error) {
	d, err := c.resolver.Resolve(ctx, destination)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", destination, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+d.Host+uri, rd)
	if err != nil {
		return nil, fmt.Errorf("request to %s: %w", destination, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if signed {
		// Sign exactly the target that goes on the wire, which net/http
		// writes as RequestURI.
		auth, err := SignRequest(c.origin, destination, method, req.URL.RequestURI(), body, c.key)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Transport: c.transport(d), CheckRedirect: noRedirects}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", destination, uri, err)
	}
	return resp, nil
}

// noRedirects: federation APIs do not redirect, and following one would
// send a signed request somewhere the signature was not meant for.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// DoJSON sends a request and decodes a 200 answer's JSON into out (which may
// be nil, or a *json.RawMessage / *[]byte to get the raw body). reqBody is
// marshalled unless it is already []byte.
func (c *Client) DoJSON(ctx context.Context, destination, method, uri string, reqBody, out any, signed bool) error {
	return c.doJSON(ctx, destination, method, uri, reqBody, out, signed, maxResponseBody)
}

// doJSON is DoJSON with a response size limit.
func (c *Client) doJSON(ctx context.Context, destination, method, uri string, reqBody, out any, signed bool, limit int64) error {
	var body []byte
	switch b := reqBody.(type) {
	case nil:
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			return fmt.Errorf("encoding request to %s: %w", destination, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	if body == nil && (method == http.MethodPost || method == http.MethodPut) {
		body = []byte("{}") // the spec requires a JSON object on POST and PUT
	}
	resp, err := c.Do(ctx, destination, method, uri, body, signed)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w", destination, uri, err)
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("%s %s: response larger than %d bytes", destination, uri, limit)
	}
	if resp.StatusCode/100 != 2 {
		re := &RemoteError{Status: resp.StatusCode}
		var e struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil {
			re.ErrCode, re.Message = e.ErrCode, e.Error
		}
		return fmt.Errorf("%s %s: %w", destination, uri, re)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = raw
		return nil
	default:
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", destination, uri, err)
		}
		return nil
	}
}

// requestSigningBytes returns the canonical JSON a request signature covers
// (spec, "Request Authentication"): method, uri, origin, destination, and the
// body as content when there is one. destination is left out when empty,
// for requests from older servers that did not name it.
func requestSigningBytes(method, uri, origin, destination string, content []byte) ([]byte, error) {
	obj := struct {
		Method      string          `json:"method"`
		URI         string          `json:"uri"`
		Origin      string          `json:"origin"`
		Destination string          `json:"destination,omitempty"`
		Content     json.RawMessage `json:"content,omitempty"`
	}{method, uri, origin, destination, content}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("request content: %w", err)
	}
	return canonicaljson.Canonicalize(raw)
}

// SignRequest returns the Authorization header value for a request from
// origin to destination.
func SignRequest(origin, destination, method, uri string, content []byte, key signing.Key) (string, error) {
	if len(content) == 0 {
		content = nil
	}
	signed, err := requestSigningBytes(method, uri, origin, destination, content)
	if err != nil {
		return "", err
	}
	return XMatrix{Origin: origin, Destination: destination, Key: key.ID, Sig: signing.SignBytes(signed, key)}.String(), nil
}
