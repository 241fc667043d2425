package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const clientAPI = "/_matrix/client/v3"

// Bounds on rate-limit retries, so a server that keeps answering 429 cannot
// stall a run forever.
const (
	defaultMaxRetries   = 50
	defaultRetryWait    = time.Second // when the server names no wait
	defaultMaxRetryWait = 30 * time.Second
)

// apiError is a non-2xx answer from the homeserver, with the Matrix errcode
// and message when the body carried them.
type apiError struct {
	Method   string
	Path     string
	Status   int
	Errcode  string
	Message  string
	Location string // for redirects, which are never followed
	Body     string // the start of a body that was not a Matrix error
	raw      []byte // the whole body, for callers that read more fields
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: HTTP %d", e.Method, e.Path, e.Status)
	if e.Errcode != "" {
		fmt.Fprintf(&b, " %s", e.Errcode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Location != "" {
		fmt.Fprintf(&b, " (redirect to %s not followed: point --url at the homeserver itself)", e.Location)
	}
	if e.Errcode == "" && e.Message == "" && e.Body != "" {
		fmt.Fprintf(&b, ": %q", e.Body)
	}
	return b.String()
}

// isErrcode reports whether err is a Matrix error with the given errcode.
func isErrcode(err error, errcode string) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Errcode == errcode
}

// client talks to one homeserver and nothing else: it uses no proxy, follows
// no redirects and does no .well-known discovery.
type client struct {
	base    string // scheme://host[:port][/prefix], no trailing slash
	http    *http.Client
	timeout time.Duration // per request attempt, on top of any long-poll time

	maxRetries   int
	maxRetryWait time.Duration
	sleep        func(ctx context.Context, d time.Duration) error

	requests    atomic.Int64
	rateLimited atomic.Int64 // 429 answers, each followed by a retry
	retryWaitNS atomic.Int64
}

func newClient(base *url.URL, timeout time.Duration) *client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &client{
		base: strings.TrimSuffix(base.String(), "/"),
		http: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		timeout:      timeout,
		maxRetries:   defaultMaxRetries,
		maxRetryWait: defaultMaxRetryWait,
		sleep:        sleepCtx,
	}
}

func (c *client) close() {
	c.http.CloseIdleConnections()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request is one Client-Server API call.
type request struct {
	method string
	path   string // starting with /_matrix/
	query  url.Values
	token  string // access token, if the call is authenticated
	body   any    // marshalled as JSON when not nil
	// extra time allowed on top of the client's timeout, for long polls
	extra time.Duration
}

// response is a successful (2xx) answer.
type response struct {
	status int
	header http.Header
	body   []byte
	// received is when the whole body had arrived, before any decoding.
	received time.Time
}

// do sends r, waiting and retrying while the server answers 429, and returns
// the first 2xx answer. Anything else is an *apiError.
func (c *client) do(ctx context.Context, r request) (*response, error) {
	var payload []byte
	if r.body != nil {
		var err error
		if payload, err = json.Marshal(r.body); err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", r.method, r.path, err)
		}
	}
	for attempt := 0; ; attempt++ {
		resp, err := c.once(ctx, r, payload)
		if err != nil {
			return nil, err
		}
		if resp.status == http.StatusTooManyRequests && attempt < c.maxRetries {
			wait := retryAfter(resp.header, resp.body, c.maxRetryWait)
			c.rateLimited.Add(1)
			c.retryWaitNS.Add(int64(wait))
			if err := c.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("%s %s: waiting out rate limit: %w", r.method, r.path, err)
			}
			continue
		}
		if resp.status/100 != 2 {
			return nil, newAPIError(r, resp)
		}
		return resp, nil
	}
}

func (c *client) once(ctx context.Context, r request, payload []byte) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+r.extra)
	defer cancel()
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	c.requests.Add(1)
	hr, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, unwrapURLError(err))
	}
	defer hr.Body.Close()
	data, err := io.ReadAll(hr.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", r.method, r.path, err)
	}
	return &response{status: hr.StatusCode, header: hr.Header, body: data, received: time.Now()}, nil
}

// unwrapURLError drops net/http's "Get "http://…": " wrapper, which would
// repeat the method and path already in our message.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func newAPIError(r request, resp *response) *apiError {
	e := &apiError{Method: r.method, Path: r.path, Status: resp.status, raw: resp.body}
	var m struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(resp.body, &m) == nil && (m.Errcode != "" || m.Error != "") {
		e.Errcode, e.Message = m.Errcode, m.Error
	} else {
		e.Body = string(resp.body[:min(len(resp.body), 200)])
	}
	if resp.status/100 == 3 {
		e.Location = resp.header.Get("Location")
	}
	return e
}

// retryAfter is how long a 429 answer asks us to wait: retry_after_ms from
// the body, else the Retry-After header (seconds), else a default; never more
// than limit, so one bad answer cannot stall a run.
func retryAfter(h http.Header, body []byte, limit time.Duration) time.Duration {
	wait := defaultRetryWait
	var m struct {
		RetryAfterMS *int64 `json:"retry_after_ms"`
	}
	if json.Unmarshal(body, &m) == nil && m.RetryAfterMS != nil && *m.RetryAfterMS >= 0 {
		wait = time.Duration(*m.RetryAfterMS) * time.Millisecond
	} else if s, err := strconv.ParseInt(strings.TrimSpace(h.Get("Retry-After")), 10, 64); err == nil && s >= 0 {
		wait = time.Duration(s) * time.Second
	}
	return min(wait, limit)
}

// doJSON is do, decoding a 2xx body into out (when not nil).
func (c *client) doJSON(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", r.method, r.path, err)
	}
	return nil
}

// serverInfo is what the homeserver says about itself, for the report.
type serverInfo struct {
	Versions     []string `json:"versions,omitempty"`
	ServerHeader string   `json:"server_header,omitempty"`
	Name         string   `json:"name,omitempty"`
	Version      string   `json:"version,omitempty"`
}

// probe checks that the homeserver answers, and asks what it is.
func (c *client) probe(ctx context.Context) (serverInfo, error) {
	var info serverInfo
	resp, err := c.do(ctx, request{method: "GET", path: "/_matrix/client/versions"})
	if err != nil {
		return info, fmt.Errorf("cannot reach the homeserver at %s (is it running? set --url): %w", c.base, err)
	}
	var v struct {
		Versions []string `json:"versions"`
	}
	if err := json.Unmarshal(resp.body, &v); err != nil {
		return info, fmt.Errorf("%s does not look like a Matrix homeserver: /_matrix/client/versions: %w", c.base, err)
	}
	info.Versions = v.Versions
	info.ServerHeader = resp.header.Get("Server")
	// The federation version endpoint names the implementation; many
	// deployments serve it on the same listener, others do not.
	var fv struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if c.doJSON(ctx, request{method: "GET", path: "/_matrix/federation/v1/version"}, &fv) == nil {
		info.Name, info.Version = fv.Server.Name, fv.Server.Version
	}
	return info, nil
}
