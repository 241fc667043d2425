package oauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Identity providers' icons. The spec's m.login.sso flow lets each
// identity provider carry an icon, an mxc:// URI, which clients show on
// their sign-in buttons (most also know the brands github and gitlab and
// draw their own). Plaza draws a plain badge in each forge's colour (not
// the forges' logos), stores it in its media repository once, and
// remembers the URI in <data_dir>/oauth-icons.json, keyed by the image's
// hash, so restarts reuse it.

const iconsFile = "oauth-icons.json"

// iconColour is a badge's colour by brand ("" for the demo forge).
func iconColour(brand string) color.NRGBA {
	switch brand {
	case "github":
		return color.NRGBA{0x24, 0x29, 0x2f, 0xff}
	case "gitlab":
		return color.NRGBA{0xfc, 0x6d, 0x26, 0xff}
	}
	return color.NRGBA{0x6a, 0x73, 0x7d, 0xff}
}

// drawIcon draws a 64×64 badge: a disc in the brand's colour with a white
// ring, as a PNG.
func drawIcon(brand string) []byte {
	const size = 64
	fill := iconColour(brand)
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	white := color.NRGBA{0xff, 0xff, 0xff, 0xff}
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			dx, dy := float64(x)-31.5, float64(y)-31.5
			switch d := dx*dx + dy*dy; {
			case d > 31.5*31.5:
				// transparent outside the disc
			case d > 17*17 || d < 10*10:
				img.SetNRGBA(x, y, fill)
			default:
				img.SetNRGBA(x, y, white)
			}
		}
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img) // encoding to memory does not fail
	return buf.Bytes()
}

type storedIcon struct {
	SHA256 string `json:"sha256"`
	MXC    string `json:"mxc"`
}

// icon returns the mxc:// URI of brand's badge, storing it in the media
// repository when it is not there yet.
func (s *Service) icon(ctx context.Context, brand string) (string, error) {
	data := drawIcon(brand)
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	key := brand
	if key == "" {
		key = "demo"
	}
	path := filepath.Join(s.cfg.DataDir, iconsFile)
	stored := map[string]storedIcon{}
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		// A damaged file only costs a new upload.
		_ = json.Unmarshal(raw, &stored)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("oauth: reading %s: %w", path, err)
	}
	if ic, ok := stored[key]; ok && ic.SHA256 == hash {
		mediaID := ic.MXC[strings.LastIndex(ic.MXC, "/")+1:]
		if ok, err := s.hs.DB.MediaUploaded(ctx, mediaID); err != nil {
			return "", err
		} else if ok && strings.HasPrefix(ic.MXC, "mxc://"+s.hs.Config.ServerName+"/") {
			return ic.MXC, nil
		}
	}
	mxc, err := s.hs.Media.Store(ctx, "@plaza:"+s.hs.Config.ServerName, "image/png", key+".png", bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("oauth: storing the %s icon: %w", key, err)
	}
	stored[key] = storedIcon{SHA256: hash, MXC: mxc}
	out, err := json.MarshalIndent(stored, "", "  ")
	if err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return "", fmt.Errorf("oauth: writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("oauth: %w", err)
	}
	return mxc, nil
}
