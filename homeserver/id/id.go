// Package id owns the grammar of Matrix identifiers: server names, user IDs,
// room IDs, room aliases and event IDs (spec appendices, "Identifier Grammar").
//
// Two strictness levels exist for user IDs: the current grammar, which Plaza
// uses when it mints new IDs, and the historical one, which must still be
// accepted in events received from other servers.
package id

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxLength is the byte limit shared by user IDs, room IDs, aliases and event IDs.
const MaxLength = 255

// ErrInvalid is wrapped by every error this package returns.
var ErrInvalid = errors.New("invalid identifier")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidServerName reports whether s follows the server_name grammar:
// a DNS name, an IPv4 literal or a bracketed IPv6 literal, with an optional port.
func ValidServerName(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
			if port == "" {
				return false
			}
		}
		inner := host[1 : len(host)-1]
		if len(inner) < 2 || len(inner) > 45 {
			return false
		}
		a, err := netip.ParseAddr(inner)
		if err != nil || !a.Is6() {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if port == "" {
				return false
			}
		}
		if host == "" || len(host) > 255 {
			return false
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return false
			}
		}
		if looksIPv4(host) {
			if _, err := netip.ParseAddr(host); err != nil {
				return false
			}
		}
	}
	if port != "" {
		if len(port) > 5 {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	return true
}

// looksIPv4 reports whether host is made only of digits and dots, which the
// grammar then requires to be a valid dotted quad.
func looksIPv4(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] != '.' && (host[i] < '0' || host[i] > '9') {
			return false
		}
	}
	return strings.Count(host, ".") == 3
}

// splitSigil checks the sigil and length and splits "Xlocal:domain".
func splitSigil(s string, sigil byte, what string) (local, domain string, err error) {
	if len(s) == 0 || s[0] != sigil {
		return "", "", invalid("%s must start with %q", what, sigil)
	}
	if len(s) > MaxLength {
		return "", "", invalid("%s is longer than %d bytes", what, MaxLength)
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", invalid("%s %q has no server name", what, s)
	}
	local, domain = s[1:i], s[i+1:]
	if !ValidServerName(domain) {
		return "", "", invalid("%s %q has an invalid server name", what, s)
	}
	return local, domain, nil
}

// UserID is a parsed user ID.
type UserID struct {
	Localpart  string
	ServerName string
}

// String renders the user ID.
func (u UserID) String() string { return "@" + u.Localpart + ":" + u.ServerName }

// ParseUserID accepts the historical grammar (any code point but ':' and NUL
// in the localpart), as servers must for events over federation.
func ParseUserID(s string) (UserID, error) {
	local, domain, err := splitSigil(s, '@', "user ID")
	if err != nil {
		return UserID{}, err
	}
	if !utf8.ValidString(local) || strings.IndexByte(local, 0) >= 0 {
		return UserID{}, invalid("user ID %q has an invalid localpart", s)
	}
	return UserID{Localpart: local, ServerName: domain}, nil
}

// ValidLocalpart reports whether local follows the current user ID grammar,
// which Plaza enforces for the accounts it creates.
func ValidLocalpart(local string) bool {
	if local == "" {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-.=_/+", c) >= 0) {
			return false
		}
	}
	return true
}

// ParseStrictUserID parses a user ID and requires the current localpart grammar.
func ParseStrictUserID(s string) (UserID, error) {
	u, err := ParseUserID(s)
	if err != nil {
		return u, err
	}
	if !ValidLocalpart(u.Localpart) {
		return UserID{}, invalid("user ID %q: localparts may only contain a-z, 0-9 and -.=_/+", s)
	}
	return u, nil
}

// ServerOf returns the server name of a user ID, room alias or domain-carrying
// room ID, or "" when there is none.
func ServerOf(s string) string {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return ""
	}
	return s[i+1:]
}

// RoomAlias is a parsed room alias.
type RoomAlias struct {
	Localpart  string
	ServerName string
}

// String renders the alias.
func (a RoomAlias) String() string { return "#" + a.Localpart + ":" + a.ServerName }

// ParseRoomAlias parses "#local:domain".
func ParseRoomAlias(s string) (RoomAlias, error) {
	local, domain, err := splitSigil(s, '#', "room alias")
	if err != nil {
		return RoomAlias{}, err
	}
	if !utf8.ValidString(local) || strings.IndexByte(local, 0) >= 0 {
		return RoomAlias{}, invalid("room alias %q has an invalid localpart", s)
	}
	return RoomAlias{Localpart: local, ServerName: domain}, nil
}

// ValidRoomID reports whether s is a room ID of either shape: "!opaque:domain"
// (room versions up to 11) or "!hash" (version 12, the create event's ID).
func ValidRoomID(s string) bool {
	if len(s) < 2 || s[0] != '!' || len(s) > MaxLength || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return false
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return ValidServerName(s[i+1:])
	}
	return true
}

// ValidEventID reports whether s looks like an event ID ("$opaque", possibly
// with a domain in very old versions).
func ValidEventID(s string) bool {
	return len(s) >= 2 && s[0] == '$' && len(s) <= MaxLength && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}
