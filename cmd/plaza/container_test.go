package main

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestContainerEntrypoint runs the container image's entry point
// (docker/entrypoint.sh) outside Docker, the way Complement starts the
// image: SERVER_NAME set, a CA in the CA directory (an RSA key in PKCS#1, as
// Complement writes it), and nothing else. Only the ports and the data
// directory are moved, so that the test runs beside other servers. It checks
// each point of the contract the image promises, then a stop and a restart
// on the same data, which is what a committed container does.
func TestContainerEntrypoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	entrypoint, err := filepath.Abs("../../docker/entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	caDir := t.TempDir()
	ca := writeRSACA(t, caDir)
	data := reachableTempDir(t)
	env := []string{
		"PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"SERVER_NAME=hs1",
		"PLAZA_COMPLEMENT_CA_DIR=" + caDir,
		"PLAZA_DATA_DIR=" + data,
		"PLAZA_LISTEN=127.0.0.1:0",
		"PLAZA_FEDERATION_LISTEN=127.0.0.1:0",
	}
	srv := startServe(t, entrypoint, env)
	hs := homeserverClient{t: t, base: srv.url}

	var versions struct{ Versions []string }
	hs.do("GET", "/_matrix/client/versions", "", nil, http.StatusOK, &versions)
	if len(versions.Versions) == 0 {
		t.Errorf("/versions lists no versions")
	}

	// Open registration with m.login.dummy, under SERVER_NAME.
	var reg struct {
		UserID string `json:"user_id"`
	}
	hs.do("POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": "alice", "password": "alice-password", "auth": map[string]any{"type": "m.login.dummy"},
	}, http.StatusOK, &reg)
	if reg.UserID != "@alice:hs1" {
		t.Errorf("registered %q, want @alice:hs1", reg.UserID)
	}

	// No rate limits: more failed logins than the login limiter's burst
	// all get their 403.
	for range 15 {
		hs.do("POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong",
		}, http.StatusForbidden, nil)
	}
	hs.login("alice", "alice-password")

	// Shared-secret registration with Complement's secret.
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	hs.do("GET", "/_synapse/admin/v1/register", "", nil, http.StatusOK, &nonce)
	hs.do("POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce.Nonce, "username": "admin", "password": "admin-password", "admin": true,
		"mac": sharedSecretMACHex("complement", nonce.Nonce, "admin", "admin-password", true),
	}, http.StatusOK, &reg)
	if reg.UserID != "@admin:hs1" {
		t.Errorf("shared-secret registration made %q, want @admin:hs1", reg.UserID)
	}

	// Federation over TLS with a certificate for hs1 that the CA signed.
	firstCert := checkFederationTLS(t, srv, ca.pool, "hs1")
	srv.stop(t)

	// A restart on the same data: accounts kept, a new certificate issued.
	srv = startServe(t, entrypoint, env)
	hs.base = srv.url
	hs.login("alice", "alice-password")
	if second := checkFederationTLS(t, srv, ca.pool, "hs1"); second.SerialNumber.Cmp(firstCert.SerialNumber) == 0 {
		t.Errorf("the restart reused the certificate; want one issued at every start")
	}
	srv.stop(t)

	// Without the CA the container makes no test-suite assumptions:
	// registration is as closed as Plaza's default and federation is off.
	plain := []string{env[0], "SERVER_NAME=hs2", "PLAZA_COMPLEMENT_CA_DIR=" + t.TempDir(),
		"PLAZA_DATA_DIR=" + reachableTempDir(t), "PLAZA_LISTEN=127.0.0.1:0"}
	srv = startServe(t, entrypoint, plain)
	hs.base = srv.url
	hs.do("POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": "bob", "password": "bob-password", "auth": map[string]any{"type": "m.login.dummy"},
	}, http.StatusForbidden, nil)
	if addr := federationAddr(srv); addr != "" {
		t.Errorf("federation listener on %s without a CA or certificate", addr)
	}
	srv.stop(t)
}

// federationAddr is the address the server's federation listener logged,
// or "" if it has none.
func federationAddr(srv *server) string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, rec := range srv.log {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "federation listener on") {
			addr, _ := rec["listen"].(string)
			return addr
		}
	}
	return ""
}

// checkFederationTLS fetches the server's keys from its federation listener,
// verifying its certificate against roots for name, and returns the
// certificate.
func checkFederationTLS(t *testing.T, srv *server, roots *x509.CertPool, name string) *x509.Certificate {
	t.Helper()
	addr := federationAddr(srv)
	if addr == "" {
		t.Fatalf("no federation listener logged\n%s", srv.output())
	}
	var peer *x509.Certificate
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name,
			VerifyConnection: func(cs tls.ConnectionState) error {
				peer = cs.PeerCertificates[0]
				return nil
			}},
	}}
	resp, err := client.Get("https://" + addr + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatalf("federation key request: %v", err)
	}
	defer resp.Body.Close()
	var keys struct {
		ServerName string `json:"server_name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil || resp.StatusCode != http.StatusOK || keys.ServerName != name {
		t.Fatalf("key response: status %d, server_name %q, %v", resp.StatusCode, keys.ServerName, err)
	}
	return peer
}

// sharedSecretMACHex is the mac of a shared-secret registration, computed
// as Synapse's register_new_matrix_user does.
func sharedSecretMACHex(secret, nonce, user, password string, admin bool) string {
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + role))
	return hex.EncodeToString(m.Sum(nil))
}
