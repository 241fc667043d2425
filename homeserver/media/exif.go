package media

import (
	"encoding/binary"
	"image"
	"io"
)

// EXIF orientations (TIFF tag 0x0112). Phones store photos as the sensor
// saw them and record how to turn them; browsers honour that for the original
// but a re-encoded thumbnail carries no EXIF, so the thumbnailer applies it.
const (
	orientNormal     = 1
	orientFlipH      = 2
	orientRotate180  = 3
	orientFlipV      = 4
	orientTranspose  = 5
	orientRotate90   = 6 // clockwise
	orientTransverse = 7
	orientRotate270  = 8 // clockwise, i.e. 90° counter-clockwise
)

// transposed reports whether an orientation swaps width and height.
func transposed(o int) bool { return o >= orientTranspose && o <= orientRotate270 }

// jpegOrientation reads the EXIF orientation of a JPEG file. It walks the
// segments before the image data, reading only their headers and the start
// of an EXIF segment: the tag sits in the first directory, near its start,
// and this runs on every thumbnail request, cached or not. Anything
// unexpected means "as stored".
func jpegOrientation(r io.ReaderAt) int {
	var hdr [4]byte
	if _, err := r.ReadAt(hdr[:2], 0); err != nil || hdr[0] != 0xFF || hdr[1] != 0xD8 {
		return orientNormal
	}
	p := int64(2)
	for range maxJPEGSegments {
		if _, err := r.ReadAt(hdr[:], p); err != nil || hdr[0] != 0xFF {
			return orientNormal
		}
		marker := hdr[1]
		if marker == 0xFF { // fill byte
			p++
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return orientNormal
		}
		size := int64(binary.BigEndian.Uint16(hdr[2:]))
		if size < 2 {
			return orientNormal
		}
		if marker == 0xE1 && size > 2+6 {
			seg := make([]byte, min(size-2, exifReadLen))
			if n, _ := r.ReadAt(seg, p+4); n > 6 && string(seg[:6]) == "Exif\x00\x00" {
				if o := tiffOrientation(seg[6:n]); o != 0 {
					return o
				}
			}
		}
		p += 2 + size
	}
	return orientNormal
}

// Bounds of jpegOrientation's walk: real files have a handful of segments
// before the image data, and IFD0 within the first few hundred bytes of the
// EXIF segment.
const (
	maxJPEGSegments = 64
	exifReadLen     = 4096
)

// tiffOrientation finds tag 0x0112 in IFD0 of a TIFF structure; 0 if absent.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > int64(len(t)) {
		return 0
	}
	n := int64(bo.Uint16(t[ifd:]))
	for i := int64(0); i < n; i++ {
		e := ifd + 2 + 12*i
		if e+12 > int64(len(t)) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		// A SHORT, stored in the first two bytes of the value field.
		if bo.Uint16(t[e+2:]) != 3 {
			return 0
		}
		if o := int(bo.Uint16(t[e+8:])); o >= orientNormal && o <= orientRotate270 {
			return o
		}
		return 0
	}
	return 0
}

// orient returns img turned as orientation o says it should be displayed.
func orient(img *image.RGBA, o int) *image.RGBA {
	if o <= orientNormal || o > orientRotate270 {
		return img
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if transposed(o) {
		dw, dh = h, w
	}
	out := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for sy := 0; sy < h; sy++ {
		row := img.Pix[(sy)*img.Stride : (sy)*img.Stride+4*w]
		for sx := 0; sx < w; sx++ {
			var dx, dy int
			switch o {
			case orientFlipH:
				dx, dy = w-1-sx, sy
			case orientRotate180:
				dx, dy = w-1-sx, h-1-sy
			case orientFlipV:
				dx, dy = sx, h-1-sy
			case orientTranspose:
				dx, dy = sy, sx
			case orientRotate90:
				dx, dy = h-1-sy, sx
			case orientTransverse:
				dx, dy = h-1-sy, w-1-sx
			case orientRotate270:
				dx, dy = sy, w-1-sx
			}
			copy(out.Pix[dy*out.Stride+4*dx:dy*out.Stride+4*dx+4], row[4*sx:4*sx+4])
		}
	}
	return out
}
