package media

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// mediaIDLength is the length of the IDs this server hands out: 24 characters
// of [A-Za-z0-9] carry 142 bits, unguessable, since knowing an ID is enough
// to download its content on the legacy routes.
const mediaIDLength = 24

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns a random media ID.
func newMediaID() (string, error) {
	var out [mediaIDLength]byte
	var buf [64]byte
	n := 0
	for n < len(out) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("media: generating an ID: %w", err)
		}
		for _, b := range buf {
			// Rejection sampling keeps the distribution uniform: 248 is the
			// largest multiple of 62 that fits in a byte.
			if b >= 248 {
				continue
			}
			out[n] = idAlphabet[b%62]
			n++
			if n == len(out) {
				break
			}
		}
	}
	return string(out[:]), nil
}

// validMediaID applies the spec's media ID grammar: only [A-Za-z0-9_-]. It
// is a whitelist, not a blacklist of "." and "/", because it is what keeps a
// media ID from ever naming a path outside the layout.
func validMediaID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validFilename accepts what can be put in a Content-Disposition header
// safely: UTF-8 without control characters, of a sane length. Empty means
// "no name".
func validFilename(s string) bool {
	if len(s) > 1024 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// shard returns the two directory levels for a media ID. IDs this server
// hands out are random, so two characters per level spread files evenly.
// Shorter IDs (allowed by the grammar, never issued here) are padded.
func shard(mediaID string) (string, string) {
	p := mediaID
	for len(p) < 4 {
		p += "_"
	}
	return p[0:2], p[2:4]
}

// originalPath is where an upload's bytes live. mediaID must be valid.
func (s *Service) originalPath(mediaID string) string {
	a, b := shard(mediaID)
	return filepath.Join(s.cfg.Dir, a, b, mediaID)
}

// thumbnailPath is where a generated thumbnail is cached: one directory per
// media ID, one file per geometry.
func (s *Service) thumbnailPath(mediaID string, g geometry) string {
	a, b := shard(mediaID)
	name := g.method + "-" + strconv.Itoa(g.width) + "x" + strconv.Itoa(g.height)
	return filepath.Join(s.thumbnailRoot(), a, b, mediaID, name)
}

// createTemp opens a new temporary file on the same file system as the
// layout, so that the finished file can be renamed into place atomically.
// os.CreateTemp makes it 0600.
func (s *Service) createTemp(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(s.tmpDir(), pattern)
	if err != nil {
		return nil, fmt.Errorf("media: creating a temporary file: %w", err)
	}
	return f, nil
}

// install moves a finished temporary file to path, creating its directories.
func install(tmp, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("media: creating %s: %w", filepath.Dir(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("media: installing %s: %w", path, err)
	}
	return nil
}

// staleTempAge is how old a temporary file must be for New to remove it: old
// enough that no upload of a process still running can own it.
const staleTempAge = 24 * time.Hour

// removeStaleTemps deletes temporary files left by uploads and renders that
// a crash interrupted.
func (s *Service) removeStaleTemps() error {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("media: reading %s: %w", s.tmpDir(), err)
	}
	cutoff := time.Now().Add(-staleTempAge)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		p := filepath.Join(s.tmpDir(), e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("media: removing a stale temporary file", "path", p, "err", err)
		}
	}
	return nil
}
