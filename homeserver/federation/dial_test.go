package federation

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

func TestIsPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"1.1.1.1":            true,
		"8.8.8.8":            true,
		"2001:4860::8888":    true,
		"127.0.0.1":          false,
		"127.1.2.3":          false,
		"10.0.0.1":           false,
		"172.16.5.4":         false,
		"172.32.0.1":         true,
		"192.168.1.1":        false,
		"169.254.169.254":    false,
		"100.64.0.1":         false,
		"0.0.0.0":            false,
		"224.0.0.1":          false,
		"255.255.255.255":    false,
		"::1":                false,
		"::":                 false,
		"::ffff:127.0.0.1":   false,
		"::ffff:8.8.8.8":     true,
		"fd00::1":            false,
		"fe80::1":            false,
		"ff02::1":            false,
		"2a00:1450:4001::1":  true,
		"64:ff9b:1::a00:0:1": false,
	} {
		if got := isPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("isPublic(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestPrivateAddressesRefused checks that, by default, a server name that
// leads to a loopback address is not contacted, for keys or .well-known.
func TestPrivateAddressesRefused(t *testing.T) {
	ca := newCA(t)
	b := newFed(t, ca)
	a := newFed(t, ca, func(c *Config) { c.AllowPrivateAddresses = false })
	_, err := a.svc.Keys.VerifyKey(context.Background(), b.name, b.cfg.Key.ID, time.Now(), true)
	if !errors.Is(err, errPrivateAddress) {
		t.Errorf("key fetch from a loopback address: %v, want errPrivateAddress", err)
	}
	if n := b.hitCount("/_matrix/key/v2/server"); n != 0 {
		t.Errorf("B was contacted %d times", n)
	}
	// The .well-known client is guarded too.
	_, _, err = a.svc.Resolver.fetchWellKnown(context.Background(), "localhost")
	if !errors.Is(err, errPrivateAddress) {
		t.Errorf(".well-known from localhost: %v, want errPrivateAddress", err)
	}
}

func TestWellKnownRedirectsStayOnHTTPS(t *testing.T) {
	mk := func(u string) *http.Request {
		r, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := httpsRedirectsOnly(mk("https://b.example/.well-known/matrix/server"), []*http.Request{mk("https://a.example/")}); err != nil {
		t.Errorf("HTTPS redirect refused: %v", err)
	}
	if err := httpsRedirectsOnly(mk("http://b.example/.well-known/matrix/server"), []*http.Request{mk("https://a.example/")}); err == nil {
		t.Error("redirect to plain HTTP followed")
	}
	via := make([]*http.Request, maxWellKnownRedirects)
	if err := httpsRedirectsOnly(mk("https://b.example/"), via); err == nil {
		t.Error("endless redirects followed")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"no key":          {ServerName: "a.example"},
		"bad server name": {ServerName: "a b", Key: key},
		"bad delegate":    {ServerName: "a.example", Key: key, Delegate: "https://x"},
		"bad notary":      {ServerName: "a.example", Key: key, Notaries: []string{"not a name"}},
	} {
		if _, err := New(context.Background(), cfg, nil); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
