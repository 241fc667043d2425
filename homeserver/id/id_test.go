package id

import (
	"errors"
	"strings"
	"testing"
)

func TestServerNames(t *testing.T) {
	valid := []string{"matrix.org", "matrix.org:8888", "1.2.3.4", "1.2.3.4:1234", "[1234:5678::abcd]",
		"[1234:5678::abcd]:5678", "localhost", "localhost:8008", "a-b.example", "[::1]:8448"}
	invalid := []string{"", ":80", "matrix.org:", "matrix.org:123456", "matrix.org:8a", "ex ample.org", "exa_mple.org",
		"[1234:5678::abcd", "[1234::abcd]8448", "[zz::1]", "256.1.1.1", "[1.2.3.4]", "münchen.de",
		strings.Repeat("a", 256)}
	for _, s := range valid {
		if !ValidServerName(s) {
			t.Errorf("ValidServerName(%q) = false, want true", s)
		}
	}
	for _, s := range invalid {
		if ValidServerName(s) {
			t.Errorf("ValidServerName(%q) = true, want false", s)
		}
	}
}

func TestUserIDs(t *testing.T) {
	u, err := ParseUserID("@alice:example.org:8448")
	if err != nil || u.Localpart != "alice" || u.ServerName != "example.org:8448" || u.String() != "@alice:example.org:8448" {
		t.Fatalf("ParseUserID = %+v, %v", u, err)
	}
	// Historical localparts must be accepted in events, but not minted.
	for _, s := range []string{"@Alice:example.org", "@a b:example.org", "@:example.org", "@é:example.org"} {
		if _, err := ParseUserID(s); err != nil {
			t.Errorf("historical %q rejected: %v", s, err)
		}
		if _, err := ParseStrictUserID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("strict %q accepted", s)
		}
	}
	for _, s := range []string{"alice:example.org", "@alice", "@alice:", "@alice:bad host", "@a\x00b:example.org",
		"@" + strings.Repeat("a", 250) + ":example.org", "@a\xffb:example.org"} {
		if _, err := ParseUserID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseUserID(%q) accepted", s)
		}
	}
	for _, s := range []string{"alice", "a.b_c=d-e/f+g", "0"} {
		if !ValidLocalpart(s) {
			t.Errorf("ValidLocalpart(%q) = false", s)
		}
	}
	if ServerOf("@a:b.org:80") != "b.org:80" || ServerOf("!opaque") != "" {
		t.Errorf("ServerOf wrong")
	}
}

func TestRoomAndEventIDs(t *testing.T) {
	if a, err := ParseRoomAlias("#acme_widget:plaza.example"); err != nil || a.Localpart != "acme_widget" || a.String() != "#acme_widget:plaza.example" {
		t.Fatalf("ParseRoomAlias = %+v, %v", a, err)
	}
	for _, s := range []string{"acme:x", "#acme", "#a:b c", "#a\x00:x"} {
		if _, err := ParseRoomAlias(s); err == nil {
			t.Errorf("alias %q accepted", s)
		}
	}
	for _, s := range []string{"!abc:example.org", "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"} {
		if !ValidRoomID(s) {
			t.Errorf("ValidRoomID(%q) = false", s)
		}
	}
	for _, s := range []string{"", "!", "abc:example.org", "!a:bad host", "!" + strings.Repeat("a", 255)} {
		if ValidRoomID(s) {
			t.Errorf("ValidRoomID(%q) = true", s)
		}
	}
	if !ValidEventID("$abc") || ValidEventID("abc") || ValidEventID("$") {
		t.Errorf("ValidEventID wrong")
	}
}
