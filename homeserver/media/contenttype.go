package media

import (
	"mime"
	"net/http"
	"strings"
)

// sniffLen is how much of the content http.DetectContentType looks at.
const sniffLen = 512

const octetStream = "application/octet-stream"

// decideContentType returns the content type to store for an upload whose
// client declared declared and whose content starts with head.
//
// The client's type is kept when the content does not contradict it, so that
// types the sniffer cannot recognise (documents, archives of all kinds,
// audio and video containers) keep their names. When the two disagree the
// sniffer wins: it only names a type when it has seen the format's signature,
// or, for text, when there is nothing binary in the head; and when it has
// seen neither, a declared type that it would have recognised is a lie, and
// the content becomes application/octet-stream. An HTML page declared as
// image/png is stored as text/html and a PNG declared as text/html as
// image/png; neither is then served inline as HTML, since text/html is not on
// the inline list.
func decideContentType(declared string, head []byte) string {
	sniffedFull := http.DetectContentType(head)
	sniffed := baseType(sniffedFull)
	dtype, dparams, err := mime.ParseMediaType(declared)
	if declared == "" || err != nil || !strings.Contains(dtype, "/") {
		// No usable declaration: the spec's default is
		// application/octet-stream, but what the content shows is closer.
		return sniffedFull
	}
	if consistent(dtype, sniffed) {
		// Keep only the charset: other parameters are of no use to a
		// downloader and could carry anything.
		if cs, ok := dparams["charset"]; ok && strings.HasPrefix(dtype, "text/") {
			if s := mime.FormatMediaType(dtype, map[string]string{"charset": cs}); s != "" {
				return s
			}
		}
		return dtype
	}
	return sniffedFull
}

// baseType is a media type without parameters, lower case.
func baseType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// consistent reports whether a declared type (lower case, no parameters) is
// compatible with what http.DetectContentType saw.
func consistent(declared, sniffed string) bool {
	if declared == sniffed {
		return true
	}
	switch sniffed {
	case octetStream:
		// Binary without a signature the sniffer knows: any type it cannot
		// recognise may be right; textual types and ones it would have
		// recognised are not.
		return !recognisable(declared) && !textual(declared)
	case "text/plain":
		// Text without markup the sniffer knows. Any type it would not have
		// recognised may be right: text formats it has no rule for (HTML
		// that does not start with a tag, subtitles, patches, …), and even a
		// binary type, which is harmless, since it is served as declared
		// with nosniff and a browser just fails to decode it.
		return !recognisable(declared)
	case "text/html":
		return false // only text/html itself, matched above
	case "text/xml":
		return declared == "application/xml" || strings.HasSuffix(declared, "+xml")
	}
	// A signature was seen: only the format's own aliases and the formats
	// built on the same container agree with it.
	return sameFormat(declared, sniffed)
}

// textual reports whether a declared type names text, as opposed to binary.
func textual(t string) bool {
	if strings.HasPrefix(t, "text/") {
		return true
	}
	switch t {
	case "application/json", "application/ld+json", "application/xml", "application/javascript",
		"application/ecmascript", "application/x-sh", "application/x-yaml", "application/yaml",
		"application/toml", "application/sql", "application/x-tex", "application/rtf", "image/svg+xml":
		return true
	}
	return strings.HasSuffix(t, "+json") || strings.HasSuffix(t, "+xml")
}

// recognisable reports whether http.DetectContentType knows a signature for
// the type that every file of the type starts with, so content of that type
// that it did not recognise is not of that type. Formats whose signature is
// optional or varies (MP3 without ID3, MP4 brands, HTML) are left out.
func recognisable(t string) bool {
	switch t {
	case "image/png", "image/apng", "image/jpeg", "image/jpg", "image/pjpeg", "image/gif", "image/webp",
		"image/bmp", "image/x-icon", "image/vnd.microsoft.icon",
		"application/pdf", "application/postscript", "application/zip", "application/gzip",
		"application/x-gzip", "application/x-rar-compressed", "application/vnd.rar", "application/wasm":
		return true
	}
	return false
}

// sameFormat lists the declared types that agree with a sniffed signature:
// spellings of the same format, and formats in the same container.
func sameFormat(declared, sniffed string) bool {
	switch sniffed {
	case "image/png":
		return declared == "image/apng"
	case "image/jpeg":
		return declared == "image/jpg" || declared == "image/pjpeg"
	case "image/x-icon":
		return declared == "image/vnd.microsoft.icon"
	case "application/zip":
		// Office documents, e-books, Java and Android archives, … are zips.
		return strings.HasPrefix(declared, "application/") && !textual(declared) && !recognisable(declared) ||
			declared == "application/zip" || declared == "application/x-zip-compressed"
	case "application/x-gzip":
		return declared == "application/gzip" || declared == "application/x-tar" || declared == "application/x-compressed-tar"
	case "application/x-rar-compressed":
		return declared == "application/vnd.rar"
	case "video/mp4":
		return declared == "audio/mp4" || declared == "audio/x-m4a" || declared == "audio/m4a" ||
			declared == "video/quicktime" || declared == "video/x-m4v" || declared == "audio/aac" ||
			declared == "image/avif" || declared == "image/heic" || declared == "image/heif"
	case "video/webm":
		return declared == "audio/webm" || declared == "video/x-matroska" || declared == "audio/x-matroska"
	case "application/ogg":
		return declared == "audio/ogg" || declared == "video/ogg" || declared == "audio/opus" || declared == "audio/vorbis"
	case "audio/wave":
		return declared == "audio/wav" || declared == "audio/x-wav" || declared == "audio/x-pn-wav" || declared == "audio/vnd.wave"
	case "audio/mpeg":
		return declared == "audio/mp3" || declared == "audio/x-mp3" || declared == "audio/mpeg3"
	case "audio/aiff":
		return declared == "audio/x-aiff"
	case "audio/midi":
		return declared == "audio/x-midi"
	case "video/avi":
		return declared == "video/x-msvideo" || declared == "video/msvideo"
	case "application/vnd.ms-fontobject", "font/ttf", "font/otf", "font/collection", "font/woff", "font/woff2":
		return strings.HasPrefix(declared, "font/") || strings.HasPrefix(declared, "application/font-") ||
			strings.HasPrefix(declared, "application/x-font-")
	}
	return false
}

// inlineSafe is the spec's list of content types that may be served with
// Content-Disposition: inline; anything else is served as an attachment.
func inlineSafe(contentType string) bool {
	switch baseType(contentType) {
	case "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
		"image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
		"video/mp4", "video/webm", "video/ogg", "video/quicktime",
		"audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
		"audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac":
		return true
	}
	return false
}

// contentDisposition renders the header for disposition ("inline" or
// "attachment") and an optional file name, encoded per RFC 6266: a quoted
// string for ASCII names, an RFC 8187 filename* (UTF-8, percent-encoded)
// otherwise.
func contentDisposition(disposition, filename string) string {
	if filename == "" {
		return disposition
	}
	if v := mime.FormatMediaType(disposition, map[string]string{"filename": filename}); v != "" {
		return v
	}
	return disposition
}
