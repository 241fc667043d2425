package media

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
)

// The headers every piece of content is served with. The CSP is the spec's
// recommended policy: whatever the content turns out to be, a browser that
// opens it directly runs no script and loads nothing.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// timeout_ms, for content reserved but not uploaded yet: the spec's default,
// and the cap it asks servers to impose.
const (
	defaultUploadWait = 20 * time.Second
	maxUploadWait     = 60 * time.Second
)

// checkMXC validates the two parts of an mxc:// URI taken from a path. These
// whitelists, not a search for "..", are what keep a request from naming a
// file outside the layout.
func (s *Service) checkMXC(serverName, mediaID string) error {
	if !id.ValidServerName(serverName) {
		return httpapi.InvalidParam("invalid server name in the media URI")
	}
	if !validMediaID(mediaID) {
		return httpapi.InvalidParam("invalid media ID: only A-Z, a-z, 0-9, _ and - are allowed")
	}
	return nil
}

// pathParam returns a path parameter decoded. chi matches on the escaped
// path when it differs from the decoded one (a %2F, say), and then hands
// parameters over still escaped.
func pathParam(r *http.Request, name string) (string, error) {
	v := httpapi.PathParam(r, name)
	if r.URL.RawPath == "" {
		return v, nil
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return "", httpapi.InvalidParam("invalid escaping in %s", name)
	}
	return d, nil
}

// lookup finds uploaded media, waiting up to timeout_ms for content that was
// reserved but not uploaded yet.
func (s *Service) lookup(r *http.Request) (*record, error) {
	serverName, err := pathParam(r, "serverName")
	if err != nil {
		return nil, err
	}
	mediaID, err := pathParam(r, "mediaId")
	if err != nil {
		return nil, err
	}
	if err := s.checkMXC(serverName, mediaID); err != nil {
		return nil, err
	}
	wait := defaultUploadWait
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, httpapi.InvalidParam("timeout_ms must be a non-negative integer")
		}
		wait = time.Duration(min(n, maxUploadWait.Milliseconds())) * time.Millisecond
	}
	if serverName != s.cfg.ServerName {
		return s.fetchRemote(r.Context(), serverName, mediaID)
	}
	return s.awaitUpload(r.Context(), mediaID, wait)
}

// fetchRemote is the hook for media of other servers: federation will fetch
// it from its origin (GET /_matrix/federation/v1/media/download), cache it,
// and return its record here. Until then, it is not found.
func (s *Service) fetchRemote(_ context.Context, serverName, mediaID string) (*record, error) {
	return nil, httpapi.NotFound("media of other servers is not available here yet")
}

// awaitUpload returns local media, waiting up to wait if it is reserved but
// not uploaded yet. An upload in this process wakes the wait at once; one in
// another process is seen by the periodic re-read.
func (s *Service) awaitUpload(ctx context.Context, mediaID string, wait time.Duration) (*record, error) {
	m, err := s.localRecord(ctx, mediaID)
	if err != nil || !m.pending() {
		return m, err
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		woken, leave := s.uploads.wait(mediaID)
		// Read again once registered, so that an upload completing just
		// before cannot be missed.
		m, err := s.localRecord(ctx, mediaID)
		if err != nil || !m.pending() {
			leave()
			return m, err
		}
		select {
		case <-woken:
		case <-poll.C:
		case <-deadline.C:
			leave()
			return nil, httpapi.Custom(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "content has not yet been uploaded")
		case <-ctx.Done():
			leave()
			return nil, ctx.Err()
		}
		leave()
	}
}

// localRecord returns local media, uploaded or pending; unknown IDs and
// expired reservations are not found.
func (s *Service) localRecord(ctx context.Context, mediaID string) (*record, error) {
	m, err := s.getRecord(ctx, mediaID)
	if err != nil {
		return nil, err
	}
	if m == nil || m.pending() && !m.expires.After(s.now()) {
		return nil, httpapi.NotFound("media not found")
	}
	return m, nil
}

// download serves GET …/download/{serverName}/{mediaId}[/{fileName}], on the
// legacy and the authenticated routes alike.
func (s *Service) download(w http.ResponseWriter, r *http.Request) {
	m, err := s.lookup(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	filename := m.filename
	if httpapi.PathParam(r, "fileName") != "" {
		if filename, err = pathParam(r, "fileName"); err == nil && !validFilename(filename) {
			err = httpapi.InvalidParam("invalid file name")
		}
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	disposition := "attachment"
	if inlineSafe(m.contentType) {
		disposition = "inline"
	}
	f, err := s.open(m.mediaID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	defer f.Close()
	s.serve(w, r, f, m.contentType, contentDisposition(disposition, filename), `"`+m.mediaID+`"`, m)
}

// missingFile is the answer when a row exists but its file does not: lost,
// or removed by an operator. Either way, for the client the media is gone.
func missingFile(path string) error {
	slog.Warn("media: file missing", "path", path)
	return httpapi.NotFound("media not found")
}

// serve sends content belonging to m (the original or a thumbnail) with
// the content repository's headers. Range and conditional requests are
// handled by http.ServeContent.
func (s *Service) serve(w http.ResponseWriter, r *http.Request, content io.ReadSeeker, contentType, disposition, etag string, m *record) {
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		httpapi.Fail(w, r, fmt.Errorf("media: reading %s: %w", m.mediaID, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("ETag", etag)
	http.ServeContent(&cacheOnSuccess{ResponseWriter: w}, r, "", m.uploaded, content)
}

// cacheOnSuccess adds the immutable caching header to successful responses
// only: content under an mxc:// URI never changes, but an error about it (a
// 416 for a bad range, say) must not be cached for a year.
type cacheOnSuccess struct {
	http.ResponseWriter
	wroteHeader bool
}

func (c *cacheOnSuccess) WriteHeader(status int) {
	if c.wroteHeader {
		return
	}
	c.wroteHeader = true
	if status < 400 {
		c.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// ServeContent's error bodies are text/plain; the content's
		// headers do not describe them.
		c.Header().Del("Content-Disposition")
		c.Header().Del("ETag")
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cacheOnSuccess) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return c.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's sendfile path, which a wrapper
// would otherwise hide from ServeContent's io.Copy.
func (c *cacheOnSuccess) ReadFrom(r io.Reader) (int64, error) {
	c.WriteHeader(http.StatusOK)
	return io.Copy(c.ResponseWriter, r)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *cacheOnSuccess) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// uploadNotifier wakes requests waiting for the content of a reserved media
// ID when it is uploaded in this process.
type uploadNotifier struct {
	mu      sync.Mutex
	waiting map[string]*uploadWait
}

type uploadWait struct {
	ch      chan struct{}
	waiters int
}

// wait returns a channel closed when mediaID's content is uploaded, and a
// function to call once no longer waiting.
func (n *uploadNotifier) wait(mediaID string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.waiting[mediaID]
	if w == nil {
		w = &uploadWait{ch: make(chan struct{})}
		n.waiting[mediaID] = w
	}
	w.waiters++
	return w.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		w.waiters--
		if w.waiters == 0 && n.waiting[mediaID] == w {
			delete(n.waiting, mediaID)
		}
	}
}

// done wakes the waiters of mediaID.
func (n *uploadNotifier) done(mediaID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.waiting[mediaID]; w != nil {
		close(w.ch)
		delete(n.waiting, mediaID)
	}
}
