package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

// TestServeFederationListener runs the binary with a TLS certificate and
// checks that the federation listener serves the signed key response over
// HTTPS, and the client listener the .well-known delegation.
func TestServeFederationListener(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs PostgreSQL; skipped with -short")
	}
	bin := buildPlaza(t)
	certs := writeTestCerts(t)
	env := []string{
		"PLAZA_DATA_DIR=" + reachableTempDir(t),
		"PLAZA_LISTEN=127.0.0.1:0",
		"PLAZA_SERVER_NAME=plaza.test",
		"PLAZA_FEDERATION_LISTEN=127.0.0.1:0",
		"PLAZA_TLS_CERT=" + certs.cert,
		"PLAZA_TLS_KEY=" + certs.key,
		"PLAZA_FEDERATION_CA_FILE=" + certs.ca,
		"PLAZA_FEDERATION_DELEGATE=plaza.test:8448",
	}
	srv := startServe(t, bin, env)
	var fedAddr string
	srv.mu.Lock()
	for _, rec := range srv.log {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "federation listener on") {
			fedAddr, _ = rec["listen"].(string)
		}
	}
	srv.mu.Unlock()
	if fedAddr == "" {
		t.Fatalf("no federation listener logged\n%s", srv.output())
	}

	ca, err := os.ReadFile(certs.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	get := func(url string) []byte {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", url, resp.StatusCode, body)
		}
		return body
	}

	raw := get("https://" + fedAddr + "/_matrix/key/v2/server")
	var keys struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.Unmarshal(raw, &keys); err != nil || keys.ServerName != "plaza.test" || len(keys.VerifyKeys) != 1 {
		t.Fatalf("key response %s (%v)", raw, err)
	}
	for id, k := range keys.VerifyKeys {
		pub, err := signing.DecodeBase64(k.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := signing.VerifyJSON(raw, "plaza.test", id, pub); err != nil {
			t.Errorf("key response signature: %v", err)
		}
	}
	if v := get("https://" + fedAddr + "/_matrix/federation/v1/version"); !strings.Contains(string(v), `"Plaza"`) {
		t.Errorf("version = %s", v)
	}
	if wk := get(srv.url + "/.well-known/matrix/server"); !strings.Contains(string(wk), `"m.server":"plaza.test:8448"`) {
		t.Errorf("well-known = %s", wk)
	}
	srv.stop(t)
}
