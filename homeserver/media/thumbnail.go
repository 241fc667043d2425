package media

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/webp"

	"plaza/homeserver/httpapi"
)

// Thumbnail bounds.
const (
	maxThumbnailSide = 2048
	// maxThumbnailPixels refuses originals whose decoded size alone would
	// be a problem (4 bytes a pixel: 160 MB at the limit). A few kilobytes
	// of PNG or GIF can claim billions of pixels.
	maxThumbnailPixels = 40_000_000
	jpegQuality        = 85
)

const (
	methodScale = "scale"
	methodCrop  = "crop"
)

// thumbnailRequest is a thumbnail request's parameters.
type thumbnailRequest struct {
	width, height int
	method        string
	animated      bool
}

func parseThumbnailRequest(q url.Values) (thumbnailRequest, error) {
	var t thumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &t.width}, {"height", &t.height}} {
		v := q.Get(p.name)
		if v == "" {
			return t, httpapi.MissingParam("%s is required", p.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxThumbnailSide {
			return t, httpapi.InvalidParam("%s must be an integer from 1 to %d", p.name, maxThumbnailSide)
		}
		*p.dst = n
	}
	switch t.method = q.Get("method"); t.method {
	case "":
		t.method = methodScale // what other servers default to
	case methodScale, methodCrop:
	default:
		return t, httpapi.InvalidParam("method must be crop or scale")
	}
	switch q.Get("animated") {
	case "", "false":
	case "true":
		t.animated = true
	default:
		return t, httpapi.InvalidParam("animated must be true or false")
	}
	return t, nil
}

// geometry is a thumbnail's output size and method: its cache key. Keying
// on the output rather than the request lets every box that yields the same
// picture (320×240 and 320×1000 of a 4:3 photo, scaled) share one file.
type geometry struct {
	method        string
	width, height int
}

// plan decides a thumbnail of a w×h original (as displayed) for t: the
// output size, the size of the centred region of the original it shows, and
// whether the original itself is the answer because it is no larger than
// requested. It never upscales.
//
// scale fits the whole original inside the requested box. crop fills the
// box and cuts the overflow evenly from both sides; when the original is
// too small to fill it, it cuts the largest region of the requested aspect
// and shows it unscaled.
func plan(w, h int, t thumbnailRequest) (out, region image.Point, original bool) {
	if w <= t.width && h <= t.height {
		return image.Pt(w, h), image.Pt(w, h), true
	}
	W, H, tw, th := int64(w), int64(h), int64(t.width), int64(t.height)
	if t.method == methodScale {
		if W*th > H*tw { // wider than the box: its width binds
			out = image.Pt(t.width, int(roundDiv(H*tw, W)))
		} else {
			out = image.Pt(int(roundDiv(W*th, H)), t.height)
		}
		return clampPt(out, w, h), image.Pt(w, h), false
	}
	if W*th > H*tw { // wider than the requested aspect: cut the sides
		region = image.Pt(int(roundDiv(H*tw, th)), h)
	} else {
		region = image.Pt(w, int(roundDiv(W*th, tw)))
	}
	region = clampPt(region, w, h)
	if region.X > t.width || region.Y > t.height {
		return image.Pt(t.width, t.height), region, false
	}
	return region, region, false
}

func roundDiv(a, b int64) int64 { return (2*a + b) / (2 * b) }

func clampPt(p image.Point, w, h int) image.Point {
	return image.Pt(min(max(p.X, 1), w), min(max(p.Y, 1), h))
}

// codec decodes one thumbnailable format. The decoders are called
// directly, not through image.Decode, so that a file is only ever decoded as
// the format its stored content type names.
type codec struct {
	ext        string
	config     func(io.Reader) (image.Config, error)
	decode     func(io.Reader) (image.Image, error)
	animatable bool // may hold an animation, which only the original keeps
}

func codecFor(contentType string) (codec, bool) {
	switch baseType(contentType) {
	case "image/jpeg":
		return codec{ext: "jpg", config: jpeg.DecodeConfig, decode: jpeg.Decode}, true
	case "image/png":
		return codec{ext: "png", config: png.DecodeConfig, decode: png.Decode}, true
	case "image/gif":
		// gif.Decode returns the first frame.
		return codec{ext: "gif", config: gif.DecodeConfig, decode: gif.Decode, animatable: true}, true
	case "image/webp":
		return codec{ext: "webp", config: webp.DecodeConfig, decode: webp.Decode, animatable: true}, true
	}
	return codec{}, false
}

func cannotThumbnail() error {
	return httpapi.Unknown("cannot generate thumbnails for the requested content")
}

// thumbnail serves GET …/thumbnail/{serverName}/{mediaId}.
func (s *Service) thumbnail(w http.ResponseWriter, r *http.Request) {
	t, err := parseThumbnailRequest(r.URL.Query())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	m, err := s.lookup(r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	c, ok := codecFor(m.contentType)
	if !ok {
		httpapi.Fail(w, r, cannotThumbnail())
		return
	}
	src, err := s.open(m.mediaID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	defer src.Close()
	info, err := inspect(src, c)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}

	dw, dh := info.width, info.height
	if transposed(info.orientation) {
		dw, dh = dh, dw
	}
	out, region, original := plan(dw, dh, t)
	// The original is the answer when it is small enough, unless it may be
	// animated and the client did not ask for animation.
	if original && (!c.animatable || t.animated) {
		s.serve(w, r, src, m.contentType, contentDisposition("inline", "thumbnail."+c.ext), `"`+m.mediaID+`"`, m)
		return
	}
	g := geometry{method: t.method, width: out.X, height: out.Y}
	path := s.thumbnailPath(m.mediaID, g)
	etag := fmt.Sprintf(`"%s-%s-%dx%d"`, m.mediaID, g.method, g.width, g.height)
	if f, err := os.Open(path); err == nil {
		defer f.Close()
		s.serveThumbnail(w, r, f, etag, m)
		return
	} else if !errors.Is(err, fs.ErrNotExist) {
		httpapi.Fail(w, r, fmt.Errorf("media: opening thumbnail: %w", err))
		return
	}
	// Concurrent requests for one thumbnail share one render.
	v, err, _ := s.renderGroup.Do(path, func() (any, error) {
		if data, err := os.ReadFile(path); err == nil {
			return data, nil // rendered meanwhile, by another process
		}
		data, err := s.render(src, c, info, region, out)
		if err != nil {
			return nil, err
		}
		s.cacheThumbnail(path, data)
		return data, nil
	})
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s.serveThumbnail(w, r, bytes.NewReader(v.([]byte)), etag, m)
}

// serveThumbnail serves a generated thumbnail, whose first bytes tell
// whether it is a PNG or a JPEG.
func (s *Service) serveThumbnail(w http.ResponseWriter, r *http.Request, thumb io.ReadSeeker, etag string, m *record) {
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(thumb, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		httpapi.Fail(w, r, fmt.Errorf("media: reading thumbnail: %w", err))
		return
	}
	ct, ext := "image/jpeg", "jpg"
	if baseType(http.DetectContentType(head[:n])) == "image/png" {
		ct, ext = "image/png", "png"
	}
	s.serve(w, r, thumb, ct, contentDisposition("inline", "thumbnail."+ext), etag, m)
}

// cacheThumbnail keeps a rendered thumbnail on disk, unless the media
// already has thumbnailCacheLimit of them: the sizes a client may ask for
// are many, and each cached one costs disk for as long as the media lives.
// Past the limit thumbnails are still served, rendered each time, at the
// cost of CPU that renderSlots bounds. Failing to cache is not failing the
// request.
func (s *Service) cacheThumbnail(path string, data []byte) {
	if entries, err := os.ReadDir(filepath.Dir(path)); err == nil && len(entries) >= s.thumbnailCacheLimit {
		return
	}
	tmp, err := s.createTemp("thumb-*")
	if err == nil {
		_, err = tmp.Write(data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = install(tmp.Name(), path)
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}
	if err != nil {
		slog.Warn("media: caching a thumbnail", "path", path, "err", err)
	}
}

// imageInfo is what inspect learns from an original's header.
type imageInfo struct {
	width, height int // as stored
	orientation   int
}

// inspect reads an original's dimensions, and refuses it before anything is
// decoded if it is too large to thumbnail.
func inspect(f *os.File, c codec) (imageInfo, error) {
	info := imageInfo{orientation: orientNormal}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return info, fmt.Errorf("media: reading original: %w", err)
	}
	var cfg image.Config
	if err := guard(func() (err error) {
		cfg, err = c.config(bufio.NewReader(f))
		return err
	}); err != nil {
		return info, cannotThumbnail()
	}
	if cfg.Width < 1 || cfg.Height < 1 {
		return info, cannotThumbnail()
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxThumbnailPixels {
		return info, httpapi.TooLarge("content is too large to thumbnail")
	}
	info.width, info.height = cfg.Width, cfg.Height
	if c.ext == "jpg" {
		info.orientation = jpegOrientation(f)
	}
	return info, nil
}

// render makes the thumbnail of src showing its centred region (a size in
// display orientation) at out: PNG if it has any transparency, JPEG
// otherwise.
func (s *Service) render(src *os.File, c codec, info imageInfo, region, out image.Point) ([]byte, error) {
	// Bounded concurrency: each render holds a decoded original.
	s.renderSlots <- struct{}{}
	defer func() { <-s.renderSlots }()

	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("media: reading original: %w", err)
	}
	var img image.Image
	if err := guard(func() (err error) {
		img, err = c.decode(bufio.NewReader(src))
		return err
	}); err != nil {
		return nil, cannotThumbnail()
	}
	// Resized as stored, then turned: turning the small result is cheap.
	if transposed(info.orientation) {
		region.X, region.Y = region.Y, region.X
		out.X, out.Y = out.Y, out.X
	}
	thumb := orient(resize(img, region, out), info.orientation)

	var buf bytes.Buffer
	var err error
	if thumb.Opaque() {
		err = jpeg.Encode(&buf, thumb, &jpeg.Options{Quality: jpegQuality})
	} else {
		err = png.Encode(&buf, thumb)
	}
	if err != nil {
		return nil, fmt.Errorf("media: encoding thumbnail: %w", err)
	}
	s.renders.Add(1)
	return buf.Bytes(), nil
}

// guard runs a decoder on untrusted input, turning a panic into an error:
// the spec warns of files crafted against thumbnailers, and a decoder bug
// should cost the request, not the connection.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("media: decoder panic: %v", p)
		}
	}()
	return f()
}

// resize returns the centred region of img (a size) scaled to out.
//
// Large reductions are done in two steps, as image libraries commonly do: a
// box filter shrinks by the largest integer factor that does not go below
// out, cheaply and without aliasing, and Catmull-Rom, a sharp filter, does
// the remaining factor, less than two. Catmull-Rom alone over a large
// original costs several times the JPEG decoding.
func resize(img image.Image, region, out image.Point) *image.RGBA {
	b := img.Bounds()
	min := b.Min.Add(image.Pt((b.Dx()-region.X)/2, (b.Dy()-region.Y)/2))
	srcRect := image.Rectangle{Min: min, Max: min.Add(region)}
	dst := image.NewRGBA(image.Rect(0, 0, out.X, out.Y))
	if region == out {
		draw.Draw(dst, dst.Bounds(), img, srcRect.Min, draw.Src)
		return dst
	}
	var src image.Image = img
	if k := boxFactor(region, out); k >= 2 {
		shrunk := boxShrink(img, srcRect, k)
		src, srcRect = shrunk, shrunk.Bounds()
	}
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src, srcRect, xdraw.Src, nil)
	return dst
}

// boxFactor is the integer factor by which region can shrink while staying
// at least out on both sides.
func boxFactor(region, out image.Point) int {
	return min(region.X/out.X, region.Y/out.Y)
}

// boxShrink averages k×k blocks of r in img. It converts r to RGBA one strip
// of k rows at a time (draw.Draw has fast paths for the decoders' image
// types), so it needs no full-size copy of a possibly huge original. The few
// pixels of r past a multiple of k are left out: less than one output pixel.
func boxShrink(img image.Image, r image.Rectangle, k int) *image.RGBA {
	ow, oh := r.Dx()/k, r.Dy()/k
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	strip := image.NewRGBA(image.Rect(0, 0, ow*k, k))
	sums := make([]uint32, 4*ow)
	area := uint32(k * k)
	for y := 0; y < oh; y++ {
		draw.Draw(strip, strip.Bounds(), img, image.Pt(r.Min.X, r.Min.Y+y*k), draw.Src)
		clear(sums)
		for row := 0; row < k; row++ {
			pix := strip.Pix[row*strip.Stride : row*strip.Stride+4*ow*k]
			for x := 0; x < ow; x++ {
				block := pix[4*k*x : 4*k*(x+1)]
				s := sums[4*x : 4*x+4]
				for i := 0; i < len(block); i += 4 {
					s[0] += uint32(block[i])
					s[1] += uint32(block[i+1])
					s[2] += uint32(block[i+2])
					s[3] += uint32(block[i+3])
				}
			}
		}
		out := dst.Pix[y*dst.Stride : y*dst.Stride+4*ow]
		for i, v := range sums {
			// Premultiplied RGBA averages correctly channel by channel.
			out[i] = uint8((v + area/2) / area)
		}
	}
	return dst
}

// open opens an original for reading; a missing file is a 404.
func (s *Service) open(mediaID string) (*os.File, error) {
	f, err := os.Open(s.originalPath(mediaID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missingFile(s.originalPath(mediaID))
	}
	if err != nil {
		return nil, fmt.Errorf("media: opening original: %w", err)
	}
	return f, nil
}
