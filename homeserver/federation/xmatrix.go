package federation

import (
	"errors"
	"fmt"
	"strings"

	"plaza/homeserver/id"
)

// XMatrix is the content of an "Authorization: X-Matrix …" header (spec,
// "Request Authentication").
type XMatrix struct {
	Origin      string
	Destination string // empty when an older server left it out
	Key         string // key ID, "ed25519:…"
	Sig         string // unpadded base64
}

// errNotXMatrix means the header uses another authorisation scheme.
var errNotXMatrix = errors.New("not an X-Matrix authorization")

// maxXMatrixLen bounds the header we parse; real ones are a few hundred
// bytes, and net/http bounds headers as a whole anyway.
const maxXMatrixLen = 4096

// ParseXMatrix parses an Authorization header value with the X-Matrix scheme.
// It follows RFC 9110's auth-param grammar as the spec asks — scheme and
// parameter names case-insensitive, any order, optional whitespace around
// commas, quoted values with backslash escapes — and, for older servers,
// accepts unquoted values holding colons (and the other characters of server
// names, key IDs and base64). Unknown parameters are ignored; a parameter
// given twice is an error, since either reading could be the forged one.
func ParseXMatrix(h string) (XMatrix, error) {
	if len(h) > maxXMatrixLen {
		return XMatrix{}, fmt.Errorf("authorization header is longer than %d bytes", maxXMatrixLen)
	}
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return XMatrix{}, errNotXMatrix
	}
	var x XMatrix
	seen := map[string]bool{}
	i := 0
	skipWS := func() {
		for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
			i++
		}
	}
	for {
		skipWS()
		for i < len(rest) && rest[i] == ',' { // empty list elements are allowed
			i++
			skipWS()
		}
		if i == len(rest) {
			break
		}
		start := i
		for i < len(rest) && isTokenChar(rest[i]) {
			i++
		}
		name := strings.ToLower(rest[start:i])
		if name == "" {
			return XMatrix{}, fmt.Errorf("expected a parameter name at offset %d", start)
		}
		skipWS()
		if i == len(rest) || rest[i] != '=' {
			return XMatrix{}, fmt.Errorf("parameter %q has no value", name)
		}
		i++
		skipWS()
		var value string
		if i < len(rest) && rest[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(rest) {
				c := rest[i]
				if c == '\\' {
					if i+1 == len(rest) {
						break
					}
					c = rest[i+1]
					i++
				} else if c == '"' {
					i++
					closed = true
					break
				}
				if c < 0x20 && c != '\t' || c == 0x7f {
					return XMatrix{}, fmt.Errorf("parameter %q holds a control character", name)
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return XMatrix{}, fmt.Errorf("parameter %q has an unterminated quoted value", name)
			}
			value = b.String()
		} else {
			start := i
			for i < len(rest) && isBareValueChar(rest[i]) {
				i++
			}
			value = rest[start:i]
			if value == "" {
				return XMatrix{}, fmt.Errorf("parameter %q has an empty value", name)
			}
		}
		if seen[name] {
			return XMatrix{}, fmt.Errorf("parameter %q is given twice", name)
		}
		seen[name] = true
		switch name {
		case "origin":
			x.Origin = value
		case "destination":
			x.Destination = value
		case "key":
			x.Key = value
		case "sig":
			x.Sig = value
		}
		skipWS()
		if i == len(rest) {
			break
		}
		if rest[i] != ',' {
			return XMatrix{}, fmt.Errorf("expected a comma at offset %d", i)
		}
	}
	switch {
	case x.Origin == "":
		return XMatrix{}, errors.New("origin is missing")
	case !id.ValidServerName(x.Origin):
		return XMatrix{}, fmt.Errorf("origin %q is not a server name", x.Origin)
	case seen["destination"] && !id.ValidServerName(x.Destination):
		return XMatrix{}, fmt.Errorf("destination %q is not a server name", x.Destination)
	case x.Key == "":
		return XMatrix{}, errors.New("key is missing")
	case x.Sig == "":
		return XMatrix{}, errors.New("sig is missing")
	}
	return x, nil
}

// String formats x the way the spec asks senders to, for the widest
// compatibility: one space after the scheme, lower-case names, every value
// quoted, no whitespace around commas.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString("X-Matrix ")
	param := func(name, value string) {
		b.WriteString(name)
		b.WriteString(`="`)
		for i := 0; i < len(value); i++ {
			if value[i] == '"' || value[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(value[i])
		}
		b.WriteByte('"')
	}
	param("origin", x.Origin)
	if x.Destination != "" {
		b.WriteByte(',')
		param("destination", x.Destination)
	}
	b.WriteByte(',')
	param("key", x.Key)
	b.WriteByte(',')
	param("sig", x.Sig)
	return b.String()
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isBareValueChar reports whether c may appear in an unquoted value: a token
// character, or one of the characters older servers send unquoted (colons in
// server names and key IDs, '/' and '=' in base64, brackets of IPv6 literals).
func isBareValueChar(c byte) bool {
	return isTokenChar(c) || c == ':' || c == '/' || c == '=' || c == '[' || c == ']'
}
