// Package media owns the homeserver's content repository: uploads (direct and
// asynchronous, through POST /_matrix/media/v1/create), downloads on the
// legacy unauthenticated and the authenticated routes, thumbnails, and the
// repository's configuration endpoint.
//
// Files live on local disk under Config.Dir in a sharded layout
// (<Dir>/ab/cd/<mediaID>); generated thumbnails are cached beside them under
// <Dir>/thumbnails, and uploads are received into <Dir>/tmp and renamed into
// place, so a file in the layout is always complete. PostgreSQL holds one row
// per media ID (the "media" table of migration 010_media.sql).
//
// Unlike the rest of the homeserver, whose SQL all lives in package storage,
// this package runs its own queries (store.go) on storage.DB's pool: the media
// tables are read and written by nothing else, so keeping their few queries
// beside the only code that uses them is simpler than widening storage's API.
//
// Only local media is served for now. Media of other servers answers 404
// M_NOT_FOUND; fetchRemote is where federation will plug in.
//
// URL previews are disabled: both preview_url endpoints answer 403
// M_FORBIDDEN. Fetching arbitrary URLs on a client's behalf is a server-side
// request forgery surface that needs an allow/deny list and its own review.
package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/sync/singleflight"

	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// DefaultMaxUploadBytes is the upload size limit when Config leaves it zero.
const DefaultMaxUploadBytes = 50 << 20

// ErrTooLarge is returned by Store when the content exceeds the upload size
// limit. Nothing is kept of it.
var ErrTooLarge = errors.New("media: content is larger than the upload size limit")

// Config configures the content repository.
type Config struct {
	// Dir holds the files (<data dir>/media). It is created if missing.
	Dir string
	// ServerName is this homeserver's name: the authority of the mxc:// URIs
	// it hands out and the only one it serves media for, for now.
	ServerName string
	// MaxUploadBytes bounds one upload (0: DefaultMaxUploadBytes).
	MaxUploadBytes int64
}

// Service is the content repository.
type Service struct {
	cfg Config
	db  *storage.DB
	now func() time.Time

	uploads uploadNotifier

	// Thumbnails: one render per (media, geometry) at a time, and at most
	// one per CPU overall, since a decoded original can take hundreds of
	// megabytes.
	renderGroup         singleflight.Group
	renderSlots         chan struct{}
	renders             atomic.Int64 // thumbnails rendered, for tests and metrics
	thumbnailCacheLimit int          // thumbnails kept on disk per media
}

// defaultThumbnailCacheLimit leaves room for the spec's five recommended
// sizes in both methods, and for the odd sizes clients actually ask for.
const defaultThumbnailCacheLimit = 32

// New prepares the content repository: it creates the directory layout and
// removes temporary files that an interrupted upload left behind.
func New(cfg Config, db *storage.DB) (*Service, error) {
	if cfg.Dir == "" {
		return nil, errors.New("media: no directory configured")
	}
	if !id.ValidServerName(cfg.ServerName) {
		return nil, fmt.Errorf("media: invalid server name %q", cfg.ServerName)
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	s := &Service{
		cfg:         cfg,
		db:          db,
		now:         time.Now,
		uploads:     uploadNotifier{waiting: map[string]*uploadWait{}},
		renderSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),

		thumbnailCacheLimit: defaultThumbnailCacheLimit,
	}
	for _, dir := range []string{cfg.Dir, s.tmpDir(), s.thumbnailRoot()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("media: creating %s: %w", dir, err)
		}
	}
	if err := s.removeStaleTemps(); err != nil {
		return nil, err
	}
	return s, nil
}

// Routes mounts the content repository's endpoints, by their full paths, on
// the root router r. authenticate rejects requests without a valid access
// token and puts the requester in the request's context.
//
// The legacy /_matrix/media/v3 download and thumbnail routes stay
// unauthenticated: Plaza's rooms are readable without an account, and their
// images must be too.
func (s *Service) Routes(r chi.Router, authenticate func(http.Handler) http.Handler) {
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}", s.download)
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", s.download)
	r.Get("/_matrix/media/v3/thumbnail/{serverName}/{mediaId}", s.thumbnail)

	r.Group(func(r chi.Router) {
		r.Use(authenticate)
		r.Post("/_matrix/media/v3/upload", s.upload)
		r.Put("/_matrix/media/v3/upload/{serverName}/{mediaId}", s.uploadReserved)
		r.Post("/_matrix/media/v1/create", s.create)
		r.Get("/_matrix/media/v3/config", s.config)
		r.Get("/_matrix/media/v3/preview_url", s.previewURL)

		r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", s.download)
		r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", s.download)
		r.Get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", s.thumbnail)
		r.Get("/_matrix/client/v1/media/config", s.config)
		r.Get("/_matrix/client/v1/media/preview_url", s.previewURL)
	})
}

// Store keeps body as new media uploaded by uploader (a user ID) and returns
// its mxc:// URI. contentType is checked against the content as for an
// upload (empty: detect it); filename may be empty. Content larger than the
// upload limit fails with ErrTooLarge and leaves nothing behind.
func (s *Service) Store(ctx context.Context, uploader, contentType, filename string, body io.Reader) (string, error) {
	if !validFilename(filename) {
		return "", fmt.Errorf("media: invalid file name %q", filename)
	}
	mediaID, err := newMediaID()
	if err != nil {
		return "", err
	}
	if err := s.save(ctx, uploader, mediaID, contentType, filename, body, false); err != nil {
		if errors.Is(err, errTooLarge) {
			return "", ErrTooLarge
		}
		return "", err
	}
	return s.mxc(mediaID), nil
}

func (s *Service) mxc(mediaID string) string {
	return "mxc://" + s.cfg.ServerName + "/" + mediaID
}

func (s *Service) tmpDir() string        { return filepath.Join(s.cfg.Dir, "tmp") }
func (s *Service) thumbnailRoot() string { return filepath.Join(s.cfg.Dir, "thumbnails") }
