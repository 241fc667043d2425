package oauth

import (
	"net/url"
	"testing"

	"plaza/homeserver/id"
)

func TestMapLocalpart(t *testing.T) {
	for _, tc := range []struct{ login, want string }{
		{"alice", "alice"},
		{"Alice-Dev", "alice-dev"},
		{"john.doe_42", "john.doe_42"},
		{"a=b", "a=3db"},
		{"josé", "jos=c3=a9"},
		{"x y#", "x=20y=23"},
	} {
		got := mapLocalpart(tc.login)
		if got != tc.want || !id.ValidLocalpart(got) {
			t.Errorf("mapLocalpart(%q) = %q, want %q (valid: %v)", tc.login, got, tc.want, id.ValidLocalpart(got))
		}
	}
}

func TestLocalpartCandidates(t *testing.T) {
	want := []string{"alice", "alice-gl", "alice-gl-2", "alice-gl-3"}
	for n, w := range want {
		if got := localpartCandidate("Alice", "gl", n); got != w {
			t.Errorf("candidate %d = %q, want %q", n, got, w)
		}
	}
}

func TestAllowlist(t *testing.T) {
	self, _ := url.Parse("https://plaza.example")
	a, err := parseAllowlist([]string{"https://app.element.io", " im.fluffychat: ", ""}, false)
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]bool{
		"https://plaza.example/app":          true,
		"https://app.element.io/#/login":     true, // the token goes in the query, before the fragment
		"https://app.element.io/?x=1":        true,
		"https://APP.element.io/":            true,
		"http://app.element.io/":             false,
		"https://app.element.io.evil.com/":   false,
		"https://app.element.io:444/":        false,
		"im.fluffychat://login":              true,
		"javascript:alert(1)":                false,
		"https://user@app.element.io/":       false,
		"http://localhost:8080/":             false,
		"/relative":                          false,
		"https://evil.example/?https://plaz": false,
	} {
		if _, got := a.check(raw, self); got != want {
			t.Errorf("check(%q) = %v, want %v", raw, got, want)
		}
	}
	demo, _ := parseAllowlist(nil, true)
	if _, ok := demo.check("http://localhost:8080/", self); !ok {
		t.Error("demo mode refuses localhost")
	}
	for _, bad := range []string{"https://x.example/path", "ftp://x.example", "javascript:", "http:"} {
		if _, err := parseAllowlist([]string{bad}, false); err == nil {
			t.Errorf("allow-list entry %q accepted", bad)
		}
	}
}

func TestWithLoginToken(t *testing.T) {
	u, _ := url.Parse("https://c.example/cb?loginToken=old&a=1&loginToken=older&b=%20")
	if got := withLoginToken(u, "new"); got != "https://c.example/cb?a=1&b=%20&loginToken=new" {
		t.Fatal(got)
	}
	u, _ = url.Parse("https://app.element.io/#/login")
	if got := withLoginToken(u, "t"); got != "https://app.element.io/?loginToken=t#/login" {
		t.Fatal(got)
	}
}

func TestSealer(t *testing.T) {
	path := t.TempDir() + "/k"
	s, err := loadOrCreateSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed := s.seal([]byte("token"), "github:1")
	again, err := loadOrCreateSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.open(sealed, "github:1"); err != nil || string(got) != "token" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := again.open(sealed, "github:2"); err == nil {
		t.Fatal("a token opened under another identity")
	}
}
