package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"plaza/homeserver/httpapi"
)

// Reservations made by POST /_matrix/media/v1/create.
const (
	// reservationLifetime is the spec's recommended default: a day leaves
	// a user on a poor connection time to find a better one.
	reservationLifetime = 24 * time.Hour
	// maxPendingPerUser bounds a user's live reservations, as the spec asks,
	// so that IDs cannot be hoarded.
	maxPendingPerUser = 16
)

// errTooLarge is save's signal that the body went past the limit.
var errTooLarge = errors.New("media: upload too large")

// bodyError marks a failure to read the request body (a client that went
// away or sent a broken chunked body): the client's fault, not a 500.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the upload: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

// uploaderOf returns the requester's user ID, refusing guests: the spec's list
// of endpoints open to guests has the downloads but not the uploads.
func uploaderOf(r *http.Request) (string, error) {
	req := httpapi.RequesterFrom(r.Context())
	if req == nil {
		return "", httpapi.MissingToken()
	}
	if req.IsGuest {
		return "", httpapi.GuestAccessForbidden()
	}
	return req.UserID, nil
}

// uploadParams reads what both upload endpoints take besides the body.
func (s *Service) uploadParams(r *http.Request) (filename string, err error) {
	filename = r.URL.Query().Get("filename")
	if !validFilename(filename) {
		return "", httpapi.InvalidParam("filename must be UTF-8 text without control characters, at most 1024 bytes")
	}
	// Refuse early what will not fit; a body without a length is counted
	// as it streams.
	if r.ContentLength > s.cfg.MaxUploadBytes {
		return "", s.tooLarge()
	}
	return filename, nil
}

func (s *Service) tooLarge() error {
	return httpapi.TooLarge("the upload is larger than the limit of %d bytes", s.cfg.MaxUploadBytes)
}

// upload is POST /_matrix/media/v3/upload.
func (s *Service) upload(w http.ResponseWriter, r *http.Request) {
	user, err := uploaderOf(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	filename, err := s.uploadParams(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	mediaID, err := newMediaID()
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.save(r.Context(), user, mediaID, r.Header.Get("Content-Type"), filename, bodyReader{r.Body}, false); err != nil {
		s.failUpload(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"content_uri": s.mxc(mediaID)})
}

// uploadReserved is PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: the
// content of an ID reserved by create.
func (s *Service) uploadReserved(w http.ResponseWriter, r *http.Request) {
	user, err := uploaderOf(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	serverName, mediaID := httpapi.PathParam(r, "serverName"), httpapi.PathParam(r, "mediaId")
	if err := s.checkMXC(serverName, mediaID); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if serverName != s.cfg.ServerName {
		httpapi.Fail(w, r, httpapi.NotFound("media IDs of other servers cannot be uploaded to here"))
		return
	}
	filename, err := s.uploadParams(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// Checked before the body is received, so that a doomed upload is not
	// read; checked again, under a lock, before it is recorded.
	state, err := s.peekReservation(r.Context(), mediaID, user)
	if err == nil {
		err = reservationError(state)
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := s.save(r.Context(), user, mediaID, r.Header.Get("Content-Type"), filename, bodyReader{r.Body}, true); err != nil {
		s.failUpload(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func reservationError(state reservationState) error {
	switch state {
	case reservationMissing:
		return httpapi.NotFound("unknown or expired media ID: create one with POST /_matrix/media/v1/create")
	case reservationNotYours:
		return httpapi.Forbidden("this media ID was created by another user")
	case reservationCompleted:
		return httpapi.Custom(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
	}
	return nil
}

func (s *Service) failUpload(w http.ResponseWriter, r *http.Request, err error) {
	var be *bodyError
	switch {
	case errors.Is(err, errTooLarge):
		err = s.tooLarge()
	case errors.As(err, &be):
		err = httpapi.Unknown("%v", be)
	}
	httpapi.Fail(w, r, err)
}

// create is POST /_matrix/media/v1/create.
func (s *Service) create(w http.ResponseWriter, r *http.Request) {
	user, err := uploaderOf(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	mediaID, err := newMediaID()
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	now := s.now()
	expires := now.Add(reservationLifetime)
	if err := s.reserve(r.Context(), mediaID, user, now, expires, maxPendingPerUser); err != nil {
		if errors.Is(err, errTooManyPending) {
			// The spec asks for a rate-limit error here, with no useful
			// retry time to give: one comes free when an upload completes.
			err = httpapi.Custom(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED",
				"too many pending uploads: complete some before creating more media IDs")
		}
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{
		"content_uri":       s.mxc(mediaID),
		"unused_expires_at": expires.UnixMilli(),
	})
}

// config is GET /_matrix/client/v1/media/config (and its legacy twin).
func (s *Service) config(w http.ResponseWriter, r *http.Request) {
	httpapi.Respond(w, http.StatusOK, map[string]int64{"m.upload.size": s.cfg.MaxUploadBytes})
}

// previewURL answers the URL preview endpoints: previews are disabled (see
// the package doc). 403 M_FORBIDDEN is what clients already meet on servers
// that turn previews off, and they stop asking.
func (s *Service) previewURL(w http.ResponseWriter, r *http.Request) {
	httpapi.Fail(w, r, httpapi.Forbidden("URL previews are disabled on this server"))
}

// save receives body into a temporary file, decides its content type, and
// records it under mediaID: a new row, or the content of the caller's
// reservation when reserved is set. On any failure nothing is left behind.
func (s *Service) save(ctx context.Context, uploader, mediaID, declaredType, filename string, body io.Reader, reserved bool) error {
	tmp, size, contentType, err := s.receive(body, declaredType)
	if err != nil {
		return err
	}
	installed := false
	defer func() {
		if !installed {
			_ = os.Remove(tmp)
		}
	}()

	now := s.now()
	m := &record{
		mediaID: mediaID, uploader: uploader, contentType: contentType, filename: filename,
		size: size, created: now, uploaded: now,
	}
	path := s.originalPath(mediaID)
	// The file is renamed into place inside the transaction, after the row
	// is written and before the commit: a reader that sees the row finds the
	// file. If the commit then fails, the file is removed again; if the
	// process dies in between, an unreferenced file remains, which nothing
	// serves.
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if reserved {
			state, err := lockReservation(ctx, tx, mediaID, uploader, now)
			if err != nil {
				return err
			}
			if err := reservationError(state); err != nil {
				return err
			}
			if err := completeReservation(ctx, tx, m); err != nil {
				return err
			}
		} else if err := insertUploaded(ctx, tx, m); err != nil {
			return err
		}
		if err := install(tmp, path); err != nil {
			return err
		}
		installed = true
		return nil
	})
	if err != nil {
		if installed {
			_ = os.Remove(path)
		}
		return err
	}
	s.uploads.done(mediaID)
	return nil
}

// receive streams body into a new temporary file, never holding more than a
// buffer of it in memory, and stops as soon as it passes the upload limit.
// It returns the file's path, its size and the content type to store.
func (s *Service) receive(body io.Reader, declaredType string) (tmp string, size int64, contentType string, err error) {
	f, err := s.createTemp("upload-*")
	if err != nil {
		return "", 0, "", err
	}
	name := f.Name() // tmp is cleared by the error returns before this runs
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(name)
		}
	}()

	limited := io.LimitReader(body, s.cfg.MaxUploadBytes+1)
	// The head of the content is read first, for the content type check.
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(limited, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", 0, "", err
	}
	head = head[:n]
	if _, err := f.Write(head); err != nil {
		return "", 0, "", fmt.Errorf("media: writing %s: %w", name, err)
	}
	rest, err := io.Copy(f, limited)
	if err != nil {
		var be *bodyError
		if !errors.As(err, &be) {
			err = fmt.Errorf("media: writing %s: %w", name, err)
		}
		return "", 0, "", err
	}
	size = int64(n) + rest
	if size > s.cfg.MaxUploadBytes {
		return "", 0, "", errTooLarge
	}
	// Synced before it is recorded: a row must never point at a file that
	// a crash could leave truncated.
	if err := f.Sync(); err != nil {
		return "", 0, "", fmt.Errorf("media: syncing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return "", 0, "", fmt.Errorf("media: closing %s: %w", name, err)
	}
	return name, size, decideContentType(declaredType, head), nil
}
