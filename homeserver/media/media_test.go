package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

const testServer = "plaza.test"

// schema returns the homeserver's migrations for a test database:
// storage.Migrations(), in order, numbered without gaps. Parts of Plaza
// number their migrations in ranges of their own (010 for media), but tern
// refuses a gap ("Missing migration 2"); until package storage/migration
// accepts them, the tests apply the same files in the same order this way.
// On a gapless set it changes nothing.
func schema(t testing.TB) fs.FS {
	t.Helper()
	src := storage.Migrations()
	entries, err := fs.ReadDir(src, ".") // sorted: the numbers are zero-padded
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	n := 0
	for _, e := range entries {
		name := e.Name()
		i := strings.IndexByte(name, '_')
		if e.IsDir() || i < 0 || !strings.HasSuffix(name, ".sql") {
			continue
		}
		data, err := fs.ReadFile(src, name)
		if err != nil {
			t.Fatal(err)
		}
		n++
		out[fmt.Sprintf("%03d%s", n, name[i:])] = &fstest.MapFile{Data: data}
	}
	return out
}

// env is a content repository behind a real HTTP server.
type env struct {
	t   testing.TB
	svc *Service
	srv *httptest.Server
	db  *storage.DB
	dir string
}

// testAuthenticate stands in for the client API's token check: the user is
// named by a header, and its absence is a missing token.
func testAuthenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.Header.Get("X-Test-User")
		if user == "" {
			httpapi.Fail(w, r, httpapi.MissingToken())
			return
		}
		req := &httpapi.Requester{UserID: user, DeviceID: "TESTDEVICE", IsGuest: r.Header.Get("X-Test-Guest") != ""}
		next.ServeHTTP(w, r.WithContext(httpapi.WithRequester(r.Context(), req)))
	})
}

func newEnv(t testing.TB, maxUpload int64) *env {
	t.Helper()
	db := storage.New(storagetest.NewDB(t, schema(t)))
	dir := filepath.Join(t.TempDir(), "media")
	svc, err := New(Config{Dir: dir, ServerName: testServer, MaxUploadBytes: maxUpload}, db)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	svc.Routes(r, testAuthenticate)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &env{t: t, svc: svc, srv: srv, db: db, dir: dir}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not JSON: %q", r.status, r.body)
	}
	return m
}

// wantError checks a Matrix error response.
func (r response) wantError(t testing.TB, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if got := r.json(t)["errcode"]; got != code {
		t.Fatalf("errcode %v, want %s (body %s)", got, code, r.body)
	}
}

// do sends a request as user ("" for none). Extra headers come in pairs.
func (e *env) do(method, path, user string, body io.Reader, headers ...string) response {
	e.t.Helper()
	r, err := e.try(method, path, user, body, headers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// try is do for other goroutines than the test's, which must not Fatal.
func (e *env) try(method, path, user string, body io.Reader, headers ...string) (response, error) {
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		return response{}, err
	}
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

const alice = "@alice:plaza.test"

var mxcPattern = regexp.MustCompile(`^mxc://plaza\.test/([A-Za-z0-9]{24})$`)

// upload posts content and returns its media ID.
func (e *env) upload(content []byte, contentType, filename string) string {
	e.t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	var headers []string
	if contentType != "" {
		headers = []string{"Content-Type", contentType}
	}
	r := e.do("POST", path, alice, bytes.NewReader(content), headers...)
	if r.status != http.StatusOK {
		e.t.Fatalf("upload: %d %s", r.status, r.body)
	}
	uri, _ := r.json(e.t)["content_uri"].(string)
	m := mxcPattern.FindStringSubmatch(uri)
	if m == nil {
		e.t.Fatalf("content_uri %q is not an mxc URI of this server with a 24-character ID", uri)
	}
	return m[1]
}

func TestUploadDownloadRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	content := []byte("Hello, Plaza! Ünïcödé text.\n")
	const filename = "résumé ✓ \"final\".txt"
	mediaID := e.upload(content, "text/plain; charset=utf-8", filename)

	for _, route := range []struct {
		path, user string
	}{
		{"/_matrix/media/v3/download/plaza.test/" + mediaID, ""},
		{"/_matrix/client/v1/media/download/plaza.test/" + mediaID, alice},
	} {
		r := e.do("GET", route.path, route.user, nil)
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", route.path, r.status, r.body)
		}
		if !bytes.Equal(r.body, content) {
			t.Errorf("%s: body %q, want %q", route.path, r.body, content)
		}
		if got := r.header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", route.path, got)
		}
		disp, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
		if err != nil || disp != "inline" || params["filename"] != filename {
			t.Errorf("%s: Content-Disposition %q parses as %q %q (%v), want inline with %q",
				route.path, r.header.Get("Content-Disposition"), disp, params, err, filename)
		}
		for name, want := range map[string]string{
			"Content-Security-Policy":      contentSecurityPolicy,
			"X-Content-Type-Options":       "nosniff",
			"Cache-Control":                "public, max-age=31536000, immutable",
			"Cross-Origin-Resource-Policy": "cross-origin",
		} {
			if got := r.header.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", route.path, name, got, want)
			}
		}
	}

	// The file name in the path replaces the stored one.
	r := e.do("GET", "/_matrix/client/v1/media/download/plaza.test/"+mediaID+"/other%20name.txt", alice, nil)
	if _, params, _ := mime.ParseMediaType(r.header.Get("Content-Disposition")); r.status != 200 || params["filename"] != "other name.txt" {
		t.Errorf("override: %d, Content-Disposition %q", r.status, r.header.Get("Content-Disposition"))
	}

	// On disk: sharded, private.
	path := filepath.Join(e.dir, mediaID[0:2], mediaID[2:4], mediaID)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", info.Mode().Perm())
	}

	// No file name: none in the header.
	noName := e.upload([]byte("x"), "text/plain", "")
	r = e.do("GET", "/_matrix/client/v1/media/download/plaza.test/"+noName, alice, nil)
	if got := r.header.Get("Content-Disposition"); got != "inline" {
		t.Errorf("Content-Disposition without a file name: %q", got)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	mediaID := e.upload([]byte("data"), "text/plain", "")
	for _, c := range []struct{ method, path string }{
		{"GET", "/_matrix/client/v1/media/download/plaza.test/" + mediaID},
		{"GET", "/_matrix/client/v1/media/download/plaza.test/" + mediaID + "/x.txt"},
		{"GET", "/_matrix/client/v1/media/thumbnail/plaza.test/" + mediaID + "?width=32&height=32"},
		{"GET", "/_matrix/client/v1/media/config"},
		{"GET", "/_matrix/client/v1/media/preview_url?url=https://example.org"},
		{"GET", "/_matrix/media/v3/config"},
		{"POST", "/_matrix/media/v3/upload"},
		{"POST", "/_matrix/media/v1/create"},
		{"PUT", "/_matrix/media/v3/upload/plaza.test/" + mediaID},
	} {
		e.do(c.method, c.path, "", strings.NewReader("x")).wantError(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	}
	// The legacy download stays open.
	if r := e.do("GET", "/_matrix/media/v3/download/plaza.test/"+mediaID, "", nil); r.status != 200 {
		t.Errorf("legacy download without a token: %d", r.status)
	}
	// Guests may download but not upload.
	e.do("POST", "/_matrix/media/v3/upload", "@guest:plaza.test", strings.NewReader("x"), "X-Test-Guest", "1").
		wantError(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	e.do("POST", "/_matrix/media/v1/create", "@guest:plaza.test", nil, "X-Test-Guest", "1").
		wantError(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	if r := e.do("GET", "/_matrix/client/v1/media/download/plaza.test/"+mediaID, "@guest:plaza.test", nil, "X-Test-Guest", "1"); r.status != 200 {
		t.Errorf("guest download: %d", r.status)
	}
}

// unsized hides its length, so the request goes out chunked and the server
// can only count.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

// layoutFiles lists the regular files under the media directory.
func layoutFiles(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func (e *env) mediaRows() int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM media").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestUploadTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 1024
	e := newEnv(t, limit)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB

	// Streamed without a length: refused once the limit is passed.
	e.do("POST", "/_matrix/media/v3/upload?filename=big.bin", alice, unsized{bytes.NewReader(big)}, "Content-Type", "application/octet-stream").
		wantError(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// With a length: refused before reading.
	e.do("POST", "/_matrix/media/v3/upload", alice, bytes.NewReader(big)).
		wantError(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// One byte over, streamed.
	e.do("POST", "/_matrix/media/v3/upload", alice, unsized{bytes.NewReader(big[:limit+1])}).
		wantError(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// Also for an upload to a reserved ID, which stays open.
	r := e.do("POST", "/_matrix/media/v1/create", alice, nil)
	mediaID := mxcPattern.FindStringSubmatch(r.json(t)["content_uri"].(string))[1]
	e.do("PUT", "/_matrix/media/v3/upload/plaza.test/"+mediaID, alice, unsized{bytes.NewReader(big)}).
		wantError(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")

	if files := layoutFiles(t, e.dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
	if n := e.mediaRows(); n != 1 {
		t.Errorf("%d media rows, want only the reservation", n)
	}

	// Exactly the limit is fine.
	e.upload(big[:limit], "application/octet-stream", "")

	r = e.do("GET", "/_matrix/client/v1/media/config", alice, nil)
	if got := r.json(t)["m.upload.size"]; got != float64(limit) {
		t.Errorf("m.upload.size %v, want %d", got, limit)
	}
}

// testImage is a w×h picture with detail, so that JPEG and scaling do real
// work. With alpha set, its left half is translucent.
func testImage(w, h int, alpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			a := uint8(255)
			if alpha && x < w/2 {
				a = 100
			}
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x ^ y) & 0xFF), a})
		}
	}
	return img
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestContentTypeSniffing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	pngBytes := encodePNG(t, testImage(8, 8, false))
	html := []byte("<!DOCTYPE html><html><body><script>alert(1)</script></body></html>")
	for _, c := range []struct {
		name, declared string
		content        []byte
		wantType       string
		wantInline     bool
	}{
		{"png declared as html", "text/html", pngBytes, "image/png", true},
		{"png declared as png", "image/png", pngBytes, "image/png", true},
		{"png undeclared", "", pngBytes, "image/png", true},
		{"html declared as html", "text/html", html, "text/html", false},
		{"html declared as png", "image/png", html, "text/html; charset=utf-8", false},
		{"html declared as text", "text/plain", html, "text/html; charset=utf-8", false},
		{"binary declared as png", "image/png", []byte{0, 1, 2, 3, 0xFE, 0xFF}, "application/octet-stream", false},
		{"unsniffable type kept", "application/vnd.oasis.opendocument.text", []byte{0, 1, 2, 3}, "application/vnd.oasis.opendocument.text", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			mediaID := e.upload(c.content, c.declared, "file")
			r := e.do("GET", "/_matrix/client/v1/media/download/plaza.test/"+mediaID, alice, nil)
			if got := r.header.Get("Content-Type"); got != c.wantType {
				t.Errorf("Content-Type %q, want %q", got, c.wantType)
			}
			disp, _, _ := mime.ParseMediaType(r.header.Get("Content-Disposition"))
			if (disp == "inline") != c.wantInline {
				t.Errorf("Content-Disposition %q", r.header.Get("Content-Disposition"))
			}
			if strings.HasPrefix(r.header.Get("Content-Type"), "text/html") && disp == "inline" {
				t.Error("HTML served inline")
			}
		})
	}
}

func TestDecideContentType(t *testing.T) {
	t.Parallel()
	gif := []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00")
	zip := []byte("PK\x03\x04\x14\x00\x00\x00")
	for _, c := range []struct {
		declared string
		head     []byte
		want     string
	}{
		{"image/gif", gif, "image/gif"},
		{"image/jpeg", gif, "image/gif"},
		{"IMAGE/GIF", gif, "image/gif"},
		{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", zip, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
		{"text/plain", zip, "application/zip"},
		{"text/markdown; charset=UTF-8; x=y", []byte("# Title\n"), "text/markdown; charset=UTF-8"},
		{"application/json", []byte(`{"a":1}`), "application/json"},
		{"application/json", []byte{0, 0xFF, 0x10}, "application/octet-stream"},
		{"image/svg+xml", []byte(`<?xml version="1.0"?><svg/>`), "image/svg+xml"},
		{"not a type", []byte("hello"), "text/plain; charset=utf-8"},
		{"", []byte{0, 1, 2}, "application/octet-stream"},
		{"audio/mp4", []byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), "audio/mp4"},
	} {
		if got := decideContentType(c.declared, c.head); got != c.want {
			t.Errorf("decideContentType(%q, %q) = %q, want %q", c.declared, c.head, got, c.want)
		}
	}
}

func decodeImage(t testing.TB, r response) (image.Image, string) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("thumbnail: %d %s", r.status, r.body)
	}
	img, format, err := image.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	if ct := r.header.Get("Content-Type"); ct != "image/"+format {
		t.Errorf("Content-Type %q for a %s", ct, format)
	}
	if disp, _, _ := mime.ParseMediaType(r.header.Get("Content-Disposition")); disp != "inline" {
		t.Errorf("Content-Disposition %q", r.header.Get("Content-Disposition"))
	}
	return img, format
}

func TestThumbnails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	photo := e.upload(encodeJPEG(t, testImage(1024, 768, false)), "image/jpeg", "photo.jpg")
	translucent := e.upload(encodePNG(t, testImage(400, 200, true)), "image/png", "logo.png")
	thumb := func(user, mediaID, query string) response {
		prefix := "/_matrix/client/v1/media/thumbnail/"
		if user == "" {
			prefix = "/_matrix/media/v3/thumbnail/"
		}
		return e.do("GET", prefix+"plaza.test/"+mediaID+"?"+query, user, nil)
	}

	for _, c := range []struct {
		mediaID, query string
		w, h           int
		format         string
	}{
		{photo, "width=320&height=320&method=scale", 320, 240, "jpeg"},
		{photo, "width=640&height=480", 640, 480, "jpeg"}, // scale is the default
		{photo, "width=96&height=96&method=crop", 96, 96, "jpeg"},
		{photo, "width=320&height=240&method=crop", 320, 240, "jpeg"},
		{photo, "width=100&height=600&method=crop", 100, 600, "jpeg"},
		{translucent, "width=100&height=100&method=scale", 100, 50, "png"},
		{translucent, "width=32&height=32&method=crop", 32, 32, "png"},
		// Never upscaled: the region of the requested aspect, unscaled.
		{translucent, "width=300&height=300&method=crop", 200, 200, "png"},
	} {
		img, format := decodeImage(t, thumb(alice, c.mediaID, c.query))
		if b := img.Bounds(); b.Dx() != c.w || b.Dy() != c.h || format != c.format {
			t.Errorf("%s: %dx%d %s, want %dx%d %s", c.query, b.Dx(), b.Dy(), format, c.w, c.h, c.format)
		}
	}

	// Smaller than asked: the original itself.
	r := thumb("", translucent, "width=800&height=600&method=scale")
	if r.status != 200 || !bytes.Equal(r.body, encodePNG(t, testImage(400, 200, true))) {
		t.Errorf("thumbnail larger than the original: %d, %d bytes; want the original", r.status, len(r.body))
	}

	// Cached: the same request, and one that comes to the same picture, do
	// not render again.
	before := e.svc.renders.Load()
	r1 := thumb(alice, photo, "width=320&height=320&method=scale")
	r2 := thumb("", photo, "width=320&height=1000&method=scale")
	if n := e.svc.renders.Load(); n != before {
		t.Errorf("%d renders for cached thumbnails", n-before)
	}
	if !bytes.Equal(r1.body, r2.body) {
		t.Error("the cached thumbnail changed")
	}
	if _, err := os.Stat(e.svc.thumbnailPath(photo, geometry{methodScale, 320, 240})); err != nil {
		t.Errorf("thumbnail not cached on disk: %v", err)
	}
	thumb(alice, photo, "width=33&height=33&method=crop")
	if n := e.svc.renders.Load(); n != before+1 {
		t.Errorf("%d renders for a new thumbnail, want 1", n-before)
	}
}

func TestThumbnailCacheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.svc.thumbnailCacheLimit = 2
	photo := e.upload(encodeJPEG(t, testImage(200, 200, false)), "image/jpeg", "")
	get := func(size int) {
		t.Helper()
		q := fmt.Sprintf("?width=%d&height=%d&method=crop", size, size)
		img, _ := decodeImage(t, e.do("GET", "/_matrix/client/v1/media/thumbnail/plaza.test/"+photo+q, alice, nil))
		if b := img.Bounds(); b.Dx() != size || b.Dy() != size {
			t.Errorf("%s: %dx%d", q, b.Dx(), b.Dy())
		}
	}
	for _, size := range []int{10, 20, 30, 30} {
		get(size)
	}
	dir := filepath.Dir(e.svc.thumbnailPath(photo, geometry{methodCrop, 10, 10}))
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 2 {
		t.Errorf("%d cached thumbnails (%v), want the limit of 2", len(entries), err)
	}
	// Past the limit, thumbnails are rendered for every request.
	if n := e.svc.renders.Load(); n != 4 {
		t.Errorf("%d renders, want 4", n)
	}
}

// pngHeader is the start of a PNG that claims w×h pixels: enough for
// DecodeConfig, and all a decompression bomb needs to show.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte{'I', 'H', 'D', 'R', byte(w >> 24), byte(w >> 16), byte(w >> 8), byte(w), byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h), 8, 2, 0, 0, 0}
	b.Write([]byte{0, 0, 0, 13})
	b.Write(ihdr)
	crc := crc32.ChecksumIEEE(ihdr)
	b.Write([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	b.Write(make([]byte, 64))
	return b.Bytes()
}

func TestThumbnailErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	photo := e.upload(encodeJPEG(t, testImage(64, 64, false)), "image/jpeg", "")
	text := e.upload([]byte("not an image"), "text/plain", "")
	bomb := e.upload(pngHeader(10000, 10000), "image/png", "")
	corrupt := e.upload(append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{7}, 100)...), "image/png", "")
	base := "/_matrix/client/v1/media/thumbnail/plaza.test/"
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{base + photo + "?height=32", 400, "M_MISSING_PARAM"},
		{base + photo + "?width=32", 400, "M_MISSING_PARAM"},
		{base + photo + "?width=0&height=32", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=-5&height=32", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=2049&height=32", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=1.5&height=32", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=abc&height=32", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"},
		{base + photo + "?width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"},
		{base + text + "?width=32&height=32", 400, "M_UNKNOWN"},
		{base + corrupt + "?width=32&height=32", 400, "M_UNKNOWN"},
		{base + bomb + "?width=32&height=32", 413, "M_TOO_LARGE"},
		{base + "unknownMediaID000000000?width=32&height=32", 404, "M_NOT_FOUND"},
		{base + "bad.id?width=32&height=32", 400, "M_INVALID_PARAM"},
	} {
		t.Run(c.path[len(base):], func(t *testing.T) {
			e.do("GET", c.path, alice, nil).wantError(t, c.status, c.code)
		})
	}
	// A legal maximum is fine (and returns the small original).
	if r := e.do("GET", base+photo+"?width=2048&height=2048", alice, nil); r.status != 200 {
		t.Errorf("2048x2048: %d %s", r.status, r.body)
	}
}

func TestBadMediaURIs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	mediaID := e.upload([]byte("secret"), "text/plain", "")
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"plaza.test/..%2F..%2Fetc%2Fpasswd", 400, "M_INVALID_PARAM"},
		{"plaza.test/..", 400, "M_INVALID_PARAM"},
		{"plaza.test/abc.def", 400, "M_INVALID_PARAM"},
		{"plaza.test/%E2%9C%93", 400, "M_INVALID_PARAM"},
		{"bad_server!/" + mediaID, 400, "M_INVALID_PARAM"},
		{"..%2F..%2Ftmp/" + mediaID, 400, "M_INVALID_PARAM"},
		{"other.example/" + mediaID, 404, "M_NOT_FOUND"},
		{"plaza.test/AAAAAAAAAAAAAAAAAAAAAAAA", 404, "M_NOT_FOUND"},
		{"plaza.test/ab", 404, "M_NOT_FOUND"},
		{"plaza.test/" + mediaID + "?timeout_ms=soon", 400, "M_INVALID_PARAM"},
	} {
		for _, prefix := range []string{"/_matrix/media/v3/download/", "/_matrix/client/v1/media/download/"} {
			e.do("GET", prefix+c.path, alice, nil).wantError(t, c.status, c.code)
		}
	}
	// A row whose file went missing is not found, not a server error.
	if err := os.Remove(e.svc.originalPath(mediaID)); err != nil {
		t.Fatal(err)
	}
	e.do("GET", "/_matrix/media/v3/download/plaza.test/"+mediaID, "", nil).wantError(t, 404, "M_NOT_FOUND")
	e.do("GET", "/_matrix/media/v3/thumbnail/plaza.test/"+mediaID+"?width=1&height=1", "", nil).wantError(t, 400, "M_UNKNOWN")
	// A control character in the file name.
	e.do("POST", "/_matrix/media/v3/upload?filename=a%0Ab", alice, strings.NewReader("x")).wantError(t, 400, "M_INVALID_PARAM")
}

func TestRangeRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	content := make([]byte, 1000)
	for i := range content {
		content[i] = byte(i)
	}
	mediaID := e.upload(content, "application/octet-stream", "data.bin")
	path := "/_matrix/client/v1/media/download/plaza.test/" + mediaID

	r := e.do("GET", path, alice, nil, "Range", "bytes=100-199")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, content[100:200]) {
		t.Fatalf("range: %d, %d bytes", r.status, len(r.body))
	}
	if got := r.header.Get("Content-Range"); got != "bytes 100-199/1000" {
		t.Errorf("Content-Range %q", got)
	}
	if disp, _, _ := mime.ParseMediaType(r.header.Get("Content-Disposition")); disp != "attachment" {
		t.Errorf("binary served %q", r.header.Get("Content-Disposition"))
	}
	r = e.do("GET", path, alice, nil, "Range", "bytes=900-")
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, content[900:]) {
		t.Errorf("open range: %d, %d bytes", r.status, len(r.body))
	}
	r = e.do("GET", path, alice, nil, "Range", "bytes=5000-6000")
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("unsatisfiable range: %d", r.status)
	}
	if cc := r.header.Get("Cache-Control"); strings.Contains(cc, "immutable") {
		t.Errorf("an error is cached as immutable: %q", cc)
	}
	// Immutable content revalidates by its ETag.
	etag := e.do("GET", path, alice, nil).header.Get("ETag")
	if r := e.do("GET", path, alice, nil, "If-None-Match", etag); etag == "" || r.status != http.StatusNotModified {
		t.Errorf("If-None-Match %q: %d", etag, r.status)
	}
}

func TestAsyncUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	start := time.Now()
	r := e.do("POST", "/_matrix/media/v1/create", alice, strings.NewReader("{}"), "Content-Type", "application/json")
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	m := mxcPattern.FindStringSubmatch(r.json(t)["content_uri"].(string))
	if m == nil {
		t.Fatalf("create: %s", r.body)
	}
	mediaID := m[1]
	expires := time.UnixMilli(int64(r.json(t)["unused_expires_at"].(float64)))
	if d := expires.Sub(start); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("unused_expires_at %v from now, want a day", d)
	}
	download := "/_matrix/client/v1/media/download/plaza.test/" + mediaID
	e.do("GET", download+"?timeout_ms=0", alice, nil).wantError(t, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

	// A download waiting for the upload gets it when it arrives.
	waited := make(chan response, 1)
	go func() {
		r, err := e.try("GET", download+"?timeout_ms=10000", alice, nil)
		if err != nil {
			r = response{body: []byte(err.Error())}
		}
		waited <- r
	}()
	time.Sleep(100 * time.Millisecond)

	upload := "/_matrix/media/v3/upload/plaza.test/" + mediaID
	e.do("PUT", upload, "@mallory:plaza.test", strings.NewReader("evil")).wantError(t, http.StatusForbidden, "M_FORBIDDEN")
	r = e.do("PUT", upload+"?filename=late.txt", alice, strings.NewReader("finally"), "Content-Type", "text/plain")
	if r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	select {
	case got := <-waited:
		if got.status != 200 || string(got.body) != "finally" {
			t.Errorf("waiting download: %d %q", got.status, got.body)
		}
		if _, params, _ := mime.ParseMediaType(got.header.Get("Content-Disposition")); params["filename"] != "late.txt" {
			t.Errorf("Content-Disposition %q", got.header.Get("Content-Disposition"))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting download was not woken by the upload")
	}

	e.do("PUT", upload, alice, strings.NewReader("again")).wantError(t, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
	e.do("PUT", "/_matrix/media/v3/upload/plaza.test/AAAAAAAAAAAAAAAAAAAAAAAA", alice, strings.NewReader("x")).wantError(t, 404, "M_NOT_FOUND")
	e.do("PUT", "/_matrix/media/v3/upload/other.example/"+mediaID, alice, strings.NewReader("x")).wantError(t, 404, "M_NOT_FOUND")
	e.do("PUT", "/_matrix/media/v3/upload/plaza.test/bad.id", alice, strings.NewReader("x")).wantError(t, 400, "M_INVALID_PARAM")
	// Media uploaded directly cannot be overwritten either.
	direct := e.upload([]byte("direct"), "text/plain", "")
	e.do("PUT", "/_matrix/media/v3/upload/plaza.test/"+direct, alice, strings.NewReader("x")).wantError(t, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")

	// Pending reservations are limited per user; an expired one is freed.
	for i := 0; i < maxPendingPerUser; i++ {
		if r := e.do("POST", "/_matrix/media/v1/create", "@bob:plaza.test", nil); r.status != 200 {
			t.Fatalf("create %d: %d %s", i, r.status, r.body)
		}
	}
	e.do("POST", "/_matrix/media/v1/create", "@bob:plaza.test", nil).wantError(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	var expired string
	if err := e.db.Pool.QueryRow(context.Background(),
		`UPDATE media SET expires_ts = 1 WHERE media_id = (SELECT media_id FROM media WHERE uploader = '@bob:plaza.test' LIMIT 1) RETURNING media_id`).Scan(&expired); err != nil {
		t.Fatal(err)
	}
	e.do("PUT", "/_matrix/media/v3/upload/plaza.test/"+expired, "@bob:plaza.test", strings.NewReader("x")).wantError(t, 404, "M_NOT_FOUND")
	e.do("GET", "/_matrix/media/v3/download/plaza.test/"+expired, "", nil).wantError(t, 404, "M_NOT_FOUND")
	if r := e.do("POST", "/_matrix/media/v1/create", "@bob:plaza.test", nil); r.status != 200 {
		t.Errorf("create after an expiry: %d %s", r.status, r.body)
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4096)
	ctx := context.Background()
	avatar := encodePNG(t, testImage(16, 16, false))
	uri, err := e.svc.Store(ctx, "@plaza:plaza.test", "image/png", "avatar.png", bytes.NewReader(avatar))
	if err != nil {
		t.Fatal(err)
	}
	m := mxcPattern.FindStringSubmatch(uri)
	if m == nil {
		t.Fatalf("Store returned %q", uri)
	}
	r := e.do("GET", "/_matrix/media/v3/download/plaza.test/"+m[1], "", nil)
	if r.status != 200 || !bytes.Equal(r.body, avatar) || r.header.Get("Content-Type") != "image/png" {
		t.Errorf("download of stored media: %d %q, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
	}

	_, err = e.svc.Store(ctx, "@plaza:plaza.test", "", "", unsized{bytes.NewReader(make([]byte, 5000))})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Store of too much: %v, want ErrTooLarge", err)
	}
	if _, err := e.svc.Store(ctx, "@plaza:plaza.test", "", "a\x00b", strings.NewReader("x")); err == nil {
		t.Error("Store accepted a file name with a NUL")
	}
	if files := layoutFiles(t, e.dir); len(files) != 1 {
		t.Errorf("files %v, want only the avatar", files)
	}
	if n := e.mediaRows(); n != 1 {
		t.Errorf("%d media rows, want 1", n)
	}
}

func TestConfigAndPreview(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	for _, path := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
		r := e.do("GET", path, alice, nil)
		if got := r.json(t)["m.upload.size"]; r.status != 200 || got != float64(DefaultMaxUploadBytes) {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	for _, path := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"} {
		e.do("GET", path+"?url=https%3A%2F%2Fexample.org", alice, nil).wantError(t, http.StatusForbidden, "M_FORBIDDEN")
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		w, h    int
		req     thumbnailRequest
		out, rg image.Point
		orig    bool
	}{
		{1024, 768, thumbnailRequest{width: 320, height: 240, method: methodScale}, image.Pt(320, 240), image.Pt(1024, 768), false},
		{1024, 768, thumbnailRequest{width: 320, height: 320, method: methodScale}, image.Pt(320, 240), image.Pt(1024, 768), false},
		{768, 1024, thumbnailRequest{width: 320, height: 320, method: methodScale}, image.Pt(240, 320), image.Pt(768, 1024), false},
		{1024, 768, thumbnailRequest{width: 96, height: 96, method: methodCrop}, image.Pt(96, 96), image.Pt(768, 768), false},
		{1024, 768, thumbnailRequest{width: 100, height: 600, method: methodCrop}, image.Pt(100, 600), image.Pt(128, 768), false},
		{100, 500, thumbnailRequest{width: 200, height: 200, method: methodCrop}, image.Pt(100, 100), image.Pt(100, 100), false},
		{100, 500, thumbnailRequest{width: 200, height: 200, method: methodScale}, image.Pt(40, 200), image.Pt(100, 500), false},
		{10000, 1, thumbnailRequest{width: 32, height: 32, method: methodScale}, image.Pt(32, 1), image.Pt(10000, 1), false},
		{64, 64, thumbnailRequest{width: 64, height: 64, method: methodCrop}, image.Pt(64, 64), image.Pt(64, 64), true},
		{50, 40, thumbnailRequest{width: 800, height: 600, method: methodScale}, image.Pt(50, 40), image.Pt(50, 40), true},
	} {
		out, rg, orig := plan(c.w, c.h, c.req)
		if out != c.out || rg != c.rg || orig != c.orig {
			t.Errorf("plan(%dx%d, %+v) = %v %v %v, want %v %v %v", c.w, c.h, c.req, out, rg, orig, c.out, c.rg, c.orig)
		}
		if out.X > c.w || out.Y > c.h {
			t.Errorf("plan(%dx%d, %+v) upscales to %v", c.w, c.h, c.req, out)
		}
	}
}

// withOrientation inserts an EXIF APP1 segment carrying orientation o
// after a JPEG's SOI marker.
func withOrientation(jpg []byte, o byte) []byte {
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, o, 0, 0, 0, 0, 0, 0}
	seg := append([]byte("Exif\x00\x00"), tiff...)
	n := len(seg) + 2
	out := append([]byte{0xFF, 0xD8, 0xFF, 0xE1, byte(n >> 8), byte(n)}, seg...)
	return append(out, jpg[2:]...)
}

func TestThumbnailOrientation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	// Stored 80×40 (landscape) and tagged "rotate 90°": a 40×80 portrait.
	// The stored left half is black, the right half white, so once turned
	// the top is black and the bottom white.
	img := image.NewGray(image.Rect(0, 0, 80, 40))
	for y := 0; y < 40; y++ {
		for x := 40; x < 80; x++ {
			img.Pix[y*img.Stride+x] = 255
		}
	}
	mediaID := e.upload(withOrientation(encodeJPEG(t, img), orientRotate90), "image/jpeg", "")
	if got := jpegOrientation(bytes.NewReader(withOrientation(encodeJPEG(t, img), orientRotate90))); got != orientRotate90 {
		t.Fatalf("orientation read back as %d", got)
	}
	thumb, _ := decodeImage(t, e.do("GET", "/_matrix/media/v3/thumbnail/plaza.test/"+mediaID+"?width=20&height=20&method=scale", "", nil))
	if b := thumb.Bounds(); b.Dx() != 10 || b.Dy() != 20 {
		t.Fatalf("thumbnail %dx%d, want 10x20 (portrait)", b.Dx(), b.Dy())
	}
	top, _, _, _ := thumb.At(5, 2).RGBA()
	bottom, _, _, _ := thumb.At(5, 17).RGBA()
	if top > 0x3000 || bottom < 0xC000 {
		t.Errorf("top %#x, bottom %#x: want black above white", top, bottom)
	}
}

func TestJPEGOrientation(t *testing.T) {
	t.Parallel()
	plain := encodeJPEG(t, image.NewGray(image.Rect(0, 0, 8, 8)))
	littleEndian := append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 34}, "Exif\x00\x00II\x2a\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00"...)
	littleEndian = append(littleEndian, plain[2:]...)
	for _, c := range []struct {
		name string
		data []byte
		want int
	}{
		{"no EXIF", plain, orientNormal},
		{"big-endian 6", withOrientation(plain, 6), 6},
		{"big-endian 8", withOrientation(plain, 8), 8},
		{"little-endian 3", littleEndian, 3},
		{"out of range", withOrientation(plain, 9), orientNormal},
		{"truncated in EXIF", withOrientation(plain, 6)[:20], orientNormal},
		{"not a JPEG", []byte("\x89PNG\r\n\x1a\n"), orientNormal},
		{"empty", nil, orientNormal},
	} {
		if got := jpegOrientation(bytes.NewReader(c.data)); got != c.want {
			t.Errorf("%s: orientation %d, want %d", c.name, got, c.want)
		}
	}
}

func TestOrientAllEight(t *testing.T) {
	t.Parallel()
	// A 3×2 image whose pixels are numbered 0…5 row by row.
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i := 0; i < 6; i++ {
		src.Pix[4*i] = byte(i)
	}
	for o, want := range map[int][]byte{
		orientNormal:     {0, 1, 2, 3, 4, 5},
		orientFlipH:      {2, 1, 0, 5, 4, 3},
		orientRotate180:  {5, 4, 3, 2, 1, 0},
		orientFlipV:      {3, 4, 5, 0, 1, 2},
		orientTranspose:  {0, 3, 1, 4, 2, 5},
		orientRotate90:   {3, 0, 4, 1, 5, 2},
		orientTransverse: {5, 2, 4, 1, 3, 0},
		orientRotate270:  {2, 5, 1, 4, 0, 3},
	} {
		out := orient(src, o)
		var got []byte
		for i := 0; i < len(out.Pix); i += 4 {
			got = append(got, out.Pix[i])
		}
		if !bytes.Equal(got, want) {
			t.Errorf("orientation %d: %v, want %v", o, got, want)
		}
	}
}

func TestNewRemovesStaleTemporaryFiles(t *testing.T) {
	t.Parallel()
	db := storage.New(storagetest.NewDB(t, schema(t)))
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(dir, "tmp", "upload-1"), filepath.Join(dir, "tmp", "upload-2")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir, ServerName: testServer}, db); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	if _, err := New(Config{Dir: dir, ServerName: "bad server"}, db); err == nil {
		t.Error("New accepted an invalid server name")
	}
}

func BenchmarkThumbnail(b *testing.B) {
	jpg := encodeJPEG(b, testImage(1024, 768, false))
	req := thumbnailRequest{width: 320, height: 240, method: methodCrop}

	// render: read the header of the 1024×768 JPEG, decode it, crop-scale
	// it to 320×240 and encode the JPEG: the work of an uncached thumbnail
	// request.
	b.Run("render", func(b *testing.B) {
		s := &Service{cfg: Config{Dir: b.TempDir()}, renderSlots: make(chan struct{}, 1)}
		if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
			b.Fatal(err)
		}
		src := filepath.Join(s.cfg.Dir, "original")
		if err := os.WriteFile(src, jpg, 0o600); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		c, _ := codecFor("image/jpeg")
		b.SetBytes(int64(len(jpg)))
		b.ReportAllocs()
		for b.Loop() {
			info, err := inspect(f, c)
			if err != nil {
				b.Fatal(err)
			}
			o, region, _ := plan(info.width, info.height, req)
			if _, err := s.render(f, c, info, region, o); err != nil {
				b.Fatal(err)
			}
		}
	})

	// cached: the same request over HTTP once the thumbnail is on disk
	// (database lookup, header inspection, file serving).
	b.Run("cached", func(b *testing.B) {
		e := newEnv(b, 0)
		mediaID := e.upload(jpg, "image/jpeg", "")
		path := e.srv.URL + "/_matrix/media/v3/thumbnail/plaza.test/" + mediaID + "?width=320&height=240&method=crop"
		client := e.srv.Client()
		get := func() {
			resp, err := client.Get(path)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		get()
		b.ReportAllocs()
		for b.Loop() {
			get()
		}
		if n := e.svc.renders.Load(); n != 1 {
			b.Errorf("%d renders, want 1", n)
		}
	})
}

func FuzzJPEGOrientation(f *testing.F) {
	plain := encodeJPEG(f, image.NewGray(image.Rect(0, 0, 8, 8)))
	f.Add(plain)
	f.Add(withOrientation(plain, 6))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 10, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := jpegOrientation(bytes.NewReader(data)); o < orientNormal || o > orientRotate270 {
			t.Fatalf("orientation %d", o)
		}
	})
}

func FuzzDecideContentType(f *testing.F) {
	f.Add("text/html", []byte("<html>"))
	f.Add("image/png", []byte("\x89PNG\r\n\x1a\n"))
	f.Add("", []byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, declared string, head []byte) {
		ct := decideContentType(declared, head)
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			t.Fatalf("decideContentType(%q, %q) = %q, not a media type: %v", declared, head, ct, err)
		}
		// Content the sniffer calls HTML is never stored as a type that
		// is served inline.
		if baseType(http.DetectContentType(head)) == "text/html" && inlineSafe(ct) {
			t.Fatalf("HTML stored as %q, which is served inline", ct)
		}
	})
}
