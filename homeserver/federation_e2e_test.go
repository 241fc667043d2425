package homeserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

// fedCA is a test certificate authority: every federating test server
// gets a certificate for 127.0.0.1 from it, and trusts it.
type fedCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
}

func newFedCA(t *testing.T) *fedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Plaza federation test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fedCA{cert: cert, key: key, pemPath: path}
}

func (ca *fedCA) leaf(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "plaza test server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fedServer is a homeserver named after its federation listener
// ("127.0.0.1:port"), with its client API on another port.
type fedServer struct {
	*testServer
	name string
}

func newFedServer(t *testing.T, ca *fedCA) *fedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := ln.Addr().String()
	pool := storagetest.NewDB(t, storage.Migrations())
	cfg := homeserver.Config{ServerName: name, DataDir: t.TempDir(), Registration: "open", BcryptCost: bcrypt.MinCost,
		FederationCAFile: ca.pemPath, FederationAllowPrivate: true}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	fs := &http.Server{Handler: hs.FederationHandler(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.leaf(t)}}}
	go func() { _ = fs.ServeTLS(ln, "", "") }()
	ts := httptest.NewServer(hs.Handler())
	t.Cleanup(func() {
		ts.Close()
		_ = fs.Close()
		hs.Federation.Close()
	})
	return &fedServer{testServer: &testServer{t: t, URL: ts.URL, hs: hs}, name: name}
}

// waitFor polls sync until cond holds for the room's timeline bodies; the
// deadline only ends a test that would otherwise hang.
func waitFor(t *testing.T, c *client, roomID string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil)
		chunk, _ := r.Body["chunk"].([]any)
		var got []string
		for i := len(chunk) - 1; i >= 0; i-- {
			ev, _ := chunk[i].(map[string]any)
			if c, ok := ev["content"].(map[string]any); ok {
				if b, ok := c["body"].(string); ok {
					got = append(got, b)
				}
			}
		}
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("room %s never got there; it has %q", roomID, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFederationJoinByAliasAndTalk(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "lobby"}).str("room_id")
	alice.send(roomID, text("before bob"))

	alias := "#lobby:" + a.name
	r := bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{})
	if r.str("room_id") != roomID {
		t.Fatalf("joined %s, want %s", r.str("room_id"), roomID)
	}
	// bob's server has the room now, with both members joined.
	members := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
	joined, _ := members.Body["joined"].(map[string]any)
	if _, ok := joined[alice.UserID]; !ok || joined[bob.UserID] == nil {
		t.Fatalf("joined members on bob's server: %s", members.Raw)
	}
	bob.send(roomID, text("hello from b"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "hello from b") })
	alice.send(roomID, text("hello from a"))
	got := waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "hello from a") })
	if strings.Join(got, "|") != "hello from b|hello from a" && !slices.Contains(got, "hello from b") {
		t.Fatalf("bob sees %q", got)
	}
}
