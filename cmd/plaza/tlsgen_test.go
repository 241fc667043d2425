package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a CA written the way Complement writes /complement/ca: a
// self-signed certificate and its RSA key in PKCS#1 PEM.
type testCA struct {
	cert, key string // file paths
	pool      *x509.CertPool
}

func writeRSACA(t testing.TB, dir string) testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := testCA{cert: filepath.Join(dir, "ca.crt"), key: filepath.Join(dir, "ca.key"), pool: x509.NewCertPool()}
	writePEM(t, ca.cert, "CERTIFICATE", der)
	writePEM(t, ca.key, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	parsed, _ := x509.ParseCertificate(der)
	ca.pool.AddCert(parsed)
	return ca
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestIssueCertificateFromCA(t *testing.T) {
	ca := writeRSACA(t, t.TempDir())
	authority, err := loadCertAuthority(ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		serverName string
		verifyAs   string // the name a client checks
	}{
		{"hs1", "hs1"}, // Complement's names: no dot, no port
		{"hs1.test:8448", "hs1.test"},
		{"127.0.0.1:8448", "127.0.0.1"},
		{"[::1]:8448", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.serverName, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data", "tls")
			certFile, keyFile, err := authority.issue(tt.serverName, dir, now)
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key file %v mode %v, want 0600", err, fi.Mode())
			}
			if fi, err := os.Stat(filepath.Dir(dir)); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("data directory mode %v (%v), want 0755 so the cluster's account can enter it", fi.Mode(), err)
			}
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(pair.Certificate) != 2 {
				t.Errorf("chain has %d certificates, want the leaf and the CA", len(pair.Certificate))
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tt.verifyAs, Roots: ca.pool, CurrentTime: now}); err != nil {
				t.Errorf("leaf does not verify as %s: %v", tt.verifyAs, err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: ca.pool, CurrentTime: now}); err == nil {
				t.Errorf("leaf verifies for other.test too")
			}
			if leaf.NotAfter.After(authority.cert.NotAfter) {
				t.Errorf("leaf outlives its CA: %v > %v", leaf.NotAfter, authority.cert.NotAfter)
			}
			// A real handshake, as a federation peer trusting the CA would
			// make it.
			tlsHandshake(t, pair, ca.pool, tt.verifyAs)
		})
	}

	// Each start issues a fresh key; the files are replaced in place.
	dir := filepath.Join(t.TempDir(), "tls")
	_, key1, err := authority.issue("hs1", dir, now)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(key1)
	if _, _, err := authority.issue("hs1", dir, now); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(key1)
	if string(first) == string(second) {
		t.Errorf("a second issue kept the same key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("tls directory holds %d files, want server.crt and server.key only", len(entries))
	}
}

func tlsHandshake(t *testing.T, pair tls.Certificate, roots *x509.CertPool, name string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "ok")
		c.Close()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		t.Fatalf("TLS handshake as %s: %v", name, err)
	}
	defer conn.Close()
	if b, _ := io.ReadAll(conn); string(b) != "ok" {
		t.Errorf("read %q over TLS", b)
	}
}

func TestLoadCertAuthorityRejects(t *testing.T) {
	dir := t.TempDir()
	ca := writeRSACA(t, dir)
	other := writeRSACA(t, t.TempDir())
	leaf := writeTestCerts(t) // an ECDSA CA with a server certificate it signed

	// An EC key in SEC 1 form after "EC PARAMETERS", as `openssl ecparam
	// -genkey` writes it, is read.
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	ecTmpl := &x509.Certificate{SerialNumber: big.NewInt(3), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	ecDER, _ := x509.CreateCertificate(rand.Reader, ecTmpl, ecTmpl, &ecKey.PublicKey, ecKey)
	ecCert, ecKeyFile := filepath.Join(dir, "ec.crt"), filepath.Join(dir, "ec.key")
	writePEM(t, ecCert, "CERTIFICATE", ecDER)
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})
	if err := os.WriteFile(ecKeyFile, append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCertAuthority(ecCert, ecKeyFile); err != nil {
		t.Errorf("EC CA with parameters block: %v", err)
	}
	// PKCS#8 keys (what writeTestCerts makes) are read.
	if _, err := loadCertAuthority(leaf.ca, leaf.caKey); err != nil {
		t.Errorf("PKCS#8 CA key: %v", err)
	}

	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not pem"), 0o600)
	tests := []struct {
		name, cert, key, want string
	}{
		{"key of another CA", ca.cert, other.key, "does not belong"},
		{"not a CA", leaf.cert, leaf.key, "not a CA certificate"},
		{"garbage key", ca.cert, garbage, "no PEM private key"},
		{"garbage certificate", garbage, ca.key, "no PEM certificate"},
		{"missing key", ca.cert, filepath.Join(dir, "absent.key"), "absent.key"},
		{"missing certificate", filepath.Join(dir, "absent.crt"), ca.key, "absent.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadCertAuthority(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadCertAuthority = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadConfigIssuedTLS(t *testing.T) {
	ca := writeRSACA(t, t.TempDir())
	certs := writeTestCerts(t)
	ok := map[string]string{"PLAZA_TLS_CA_CERT": ca.cert, "PLAZA_TLS_CA_KEY": ca.key, "PLAZA_SERVER_NAME": "hs1",
		"PLAZA_DATA_DIR": filepath.Join(t.TempDir(), "data")}
	cfg, err := LoadConfig("", fakeEnv(ok))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.FederationEnabled() || cfg.TLSCert != "" {
		t.Fatalf("LoadConfig = %+v: want federation on, the certificate not issued yet", cfg)
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		t.Errorf("loading the configuration created the data directory")
	}
	issued, err := issueTLS(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if issued.TLSCert != filepath.Join(cfg.DataDir, "tls", "server.crt") || issued.TLSKey != filepath.Join(cfg.DataDir, "tls", "server.key") {
		t.Errorf("issued files %s %s", issued.TLSCert, issued.TLSKey)
	}
	if _, err := tls.LoadX509KeyPair(issued.TLSCert, issued.TLSKey); err != nil {
		t.Error(err)
	}

	with := func(kv ...string) map[string]string {
		env := map[string]string{"PLAZA_TLS_CA_CERT": ca.cert, "PLAZA_TLS_CA_KEY": ca.key}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return env
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"CA without key", with("PLAZA_TLS_CA_KEY", ""), []string{"PLAZA_TLS_CA_CERT=", "needs tls_ca_key"}},
		{"key without CA", with("PLAZA_TLS_CA_CERT", ""), []string{"PLAZA_TLS_CA_KEY=", "needs tls_ca_cert"}},
		{"both ways", with("PLAZA_TLS_CERT", certs.cert, "PLAZA_TLS_KEY", certs.key), []string{"PLAZA_TLS_CA_CERT=", "not both"}},
		{"key of another CA", with("PLAZA_TLS_CA_KEY", certs.caKey), []string{"PLAZA_TLS_CA_CERT=", "does not belong"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig("", fakeEnv(tt.env))
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestServerHost(t *testing.T) {
	for name, want := range map[string]string{
		"hs1": "hs1", "example.org:8448": "example.org", "1.2.3.4": "1.2.3.4", "1.2.3.4:80": "1.2.3.4",
		"[::1]": "::1", "[2001:db8::1]:8448": "2001:db8::1",
	} {
		if got := serverHost(name); got != want {
			t.Errorf("serverHost(%q) = %q, want %q", name, got, want)
		}
	}
	if ip := net.ParseIP(serverHost("[::1]:8448")); ip == nil {
		t.Errorf("IPv6 host does not parse")
	}
}
