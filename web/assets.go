package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var staticFS embed.FS

// asset is one embedded static file served under a fingerprinted name
// (app.3f2a9c1b.css): the name changes with the content, so it is cached
// for a year and never revalidated.
type asset struct {
	data, gzipped []byte
	contentType   string
}

// assets maps fingerprinted names to files, and plain names to
// fingerprinted URLs.
type assets struct {
	byName map[string]asset
	urls   map[string]string
}

const staticPrefix = "/_plaza/static/"

func loadAssets() (*assets, error) {
	a := &assets{byName: map[string]asset{}, urls: map[string]string{}}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		base := path.Base(p)
		ext := path.Ext(base)
		name := strings.TrimSuffix(base, ext) + "." + hex.EncodeToString(sum[:5]) + ext
		ct := "application/octet-stream"
		switch ext {
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // a valid level never fails
		if _, err := zw.Write(data); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		a.byName[name] = asset{data: data, gzipped: gz.Bytes(), contentType: ct}
		a.urls[base] = staticPrefix + name
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading the web assets: %w", err)
	}
	return a, nil
}

// url is the fingerprinted URL of a static file.
func (a *assets) url(name string) string { return a.urls[name] }

func (a *assets) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := a.byName[path.Base(r.URL.Path)]
	if !ok || !strings.HasPrefix(r.URL.Path, staticPrefix) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(f.gzipped)
		return
	}
	_, _ = w.Write(f.data)
}
