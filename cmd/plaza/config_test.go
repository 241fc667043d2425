package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	defaults := Config{
		ServerName:   "localhost:8008",
		Listen:       ":8008",
		DataDir:      filepath.Join(cwd, "data"),
		PublicURL:    "http://localhost:8008",
		Registration: "closed",
		RateLimit:    true,
		PeekCacheMB:  "256",

		FederationListen: ":8448",
	}
	with := func(f func(*Config)) Config {
		c := defaults
		f(&c)
		return c
	}

	tests := []struct {
		name string
		file string // TOML; empty: no --config
		env  map[string]string
		want Config
	}{
		{name: "defaults", want: defaults},
		{
			name: "environment",
			env: map[string]string{
				"PLAZA_SERVER_NAME":   "example.org",
				"PLAZA_LISTEN":        "127.0.0.1:9000",
				"PLAZA_DATA_DIR":      "/var/lib/plaza",
				"PLAZA_DATABASE_URL":  "postgres://plaza:secret@db:5432/plaza",
				"PLAZA_PUBLIC_URL":    "https://matrix.example.org/",
				"PLAZA_REGISTRATION":  "token",
				"PLAZA_RATE_LIMIT":    "false",
				"PLAZA_PEEK_CACHE_MB": "64",
			},
			want: Config{
				ServerName: "example.org", Listen: "127.0.0.1:9000", DataDir: "/var/lib/plaza",
				DatabaseURL: "postgres://plaza:secret@db:5432/plaza", PublicURL: "https://matrix.example.org",
				Registration: "token", RateLimit: false, FederationListen: ":8448", PeekCacheMB: "64",
			},
		},
		{
			name: "public URL follows the server name",
			env:  map[string]string{"PLAZA_SERVER_NAME": "chat.example.org"},
			want: with(func(c *Config) { c.ServerName, c.PublicURL = "chat.example.org", "http://chat.example.org" }),
		},
		{
			name: "file",
			file: `
server_name = "example.org"
listen = "[::1]:8448"
data_dir = "/srv/plaza"
database_url = "postgres://db/plaza"
public_url = "https://example.org"
registration = "open"
rate_limit = false
`,
			want: Config{
				ServerName: "example.org", Listen: "[::1]:8448", DataDir: "/srv/plaza", DatabaseURL: "postgres://db/plaza",
				PublicURL: "https://example.org", Registration: "open", RateLimit: false, FederationListen: ":8448", PeekCacheMB: "256",
			},
		},
		{
			name: "environment overrides file",
			file: "server_name = \"file.example\"\nregistration = \"open\"\nrate_limit = false\n",
			env:  map[string]string{"PLAZA_REGISTRATION": "closed", "PLAZA_RATE_LIMIT": "1"},
			want: with(func(c *Config) { c.ServerName, c.PublicURL = "file.example", "http://file.example" }),
		},
		{
			name: "empty environment variable counts as unset",
			file: "registration = \"open\"\n",
			env:  map[string]string{"PLAZA_REGISTRATION": "", "PLAZA_SERVER_NAME": ""},
			want: with(func(c *Config) { c.Registration = "open" }),
		},
		{
			name: "relative data directory becomes absolute",
			env:  map[string]string{"PLAZA_DATA_DIR": "state/plaza"},
			want: with(func(c *Config) { c.DataDir = filepath.Join(cwd, "state/plaza") }),
		},
		{
			name: "IP server name and wildcard listen",
			env:  map[string]string{"PLAZA_SERVER_NAME": "192.0.2.7:8448", "PLAZA_LISTEN": "0.0.0.0:0"},
			want: with(func(c *Config) {
				c.ServerName, c.Listen, c.PublicURL = "192.0.2.7:8448", "0.0.0.0:0", "http://192.0.2.7:8448"
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadConfig(writeConfig(t, tt.file), fakeEnv(tt.env))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if got != tt.want {
				t.Errorf("LoadConfig:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		// want are substrings of the error: the setting's name, the value
		// and what is accepted.
		want []string
		// hidden must not appear in the error.
		hidden string
	}{
		{
			name: "registration",
			env:  map[string]string{"PLAZA_REGISTRATION": "maybe"},
			want: []string{`PLAZA_REGISTRATION="maybe": must be open, token or closed`},
		},
		{
			name: "peek cache size",
			env:  map[string]string{"PLAZA_PEEK_CACHE_MB": "lots"},
			want: []string{`PLAZA_PEEK_CACHE_MB="lots"`, "whole number of MiB"},
		},
		{
			name: "registration in file",
			file: `registration = "maybe"`,
			want: []string{`registration = "maybe" in `, "plaza.toml", "must be open, token or closed"},
		},
		{
			name: "server name",
			env:  map[string]string{"PLAZA_SERVER_NAME": "not a host"},
			want: []string{`PLAZA_SERVER_NAME="not a host"`, "server name"},
		},
		{
			name: "server name with scheme",
			env:  map[string]string{"PLAZA_SERVER_NAME": "https://example.org"},
			want: []string{`PLAZA_SERVER_NAME="https://example.org"`},
		},
		{
			name: "server name with empty port",
			file: `server_name = "example.org:"`,
			want: []string{`server_name = "example.org:"`},
		},
		{
			name: "listen without port",
			env:  map[string]string{"PLAZA_LISTEN": "8008"},
			want: []string{`PLAZA_LISTEN="8008"`, "host:port"},
		},
		{
			name: "listen port out of range",
			env:  map[string]string{"PLAZA_LISTEN": ":80800"},
			want: []string{`PLAZA_LISTEN=":80800"`, "0 to 65535"},
		},
		{
			name: "listen port not a number",
			env:  map[string]string{"PLAZA_LISTEN": "localhost:http"},
			want: []string{`PLAZA_LISTEN="localhost:http"`, "0 to 65535"},
		},
		{
			name: "listen host",
			env:  map[string]string{"PLAZA_LISTEN": "a b:8008"},
			want: []string{`PLAZA_LISTEN="a b:8008"`, "host"},
		},
		{
			name: "data dir",
			file: `data_dir = " "`,
			want: []string{`data_dir = " "`, "must not be empty"},
		},
		{
			name:   "database URL hides its value",
			env:    map[string]string{"PLAZA_DATABASE_URL": "postgres://plaza:hunter2@db:notaport/plaza"},
			want:   []string{"PLAZA_DATABASE_URL", "not a PostgreSQL connection string"},
			hidden: "hunter2",
		},
		{
			name: "public URL without scheme",
			env:  map[string]string{"PLAZA_PUBLIC_URL": "matrix.example.org"},
			want: []string{`PLAZA_PUBLIC_URL="matrix.example.org"`, "http:// or https://"},
		},
		{
			name: "public URL with query",
			env:  map[string]string{"PLAZA_PUBLIC_URL": "https://example.org/?x=1"},
			want: []string{`PLAZA_PUBLIC_URL="https://example.org/?x=1"`, "query"},
		},
		{
			name: "rate limit",
			env:  map[string]string{"PLAZA_RATE_LIMIT": "sometimes"},
			want: []string{`PLAZA_RATE_LIMIT="sometimes": must be true or false`},
		},
		{
			name: "rate limit of the wrong type in file",
			file: `rate_limit = "no"`,
			want: []string{`rate_limit = "no" in `, "must be true or false"},
		},
		{
			name: "string setting of the wrong type in file",
			file: `listen = 8008`,
			want: []string{`listen = "8008" in `, "must be a string"},
		},
		{
			name: "unknown key in file",
			file: `server-name = "example.org"`,
			want: []string{`unknown setting "server-name"`, "server_name, listen"},
		},
		{
			name: "malformed file",
			file: `server_name = `,
			want: []string{"config file", "plaza.toml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tt.file), fakeEnv(tt.env))
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.hidden != "" && strings.Contains(err.Error(), tt.hidden) {
				t.Errorf("error %q reveals %q", err, tt.hidden)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	_, err := LoadConfig(path, fakeEnv(nil))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfig(%s) = %v, want an error naming the file", path, err)
	}
}

// TestSettingsHelp keeps `plaza serve --help` in step with the table.
func TestSettingsHelp(t *testing.T) {
	help := settingsHelp()
	for _, s := range settings() {
		if !strings.Contains(help, s.env) || !strings.Contains(help, s.key) {
			t.Errorf("settings help lacks %s / %s:\n%s", s.key, s.env, help)
		}
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	if content == "" {
		return ""
	}
	path := filepath.Join(t.TempDir(), "plaza.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func fakeEnv(env map[string]string) func(string) (string, bool) {
	return func(key string) (string, bool) {
		v, ok := env[key]
		return v, ok
	}
}

func TestLoadConfigFederation(t *testing.T) {
	certs := writeTestCerts(t)
	ok := map[string]string{
		"PLAZA_TLS_CERT":            certs.cert,
		"PLAZA_TLS_KEY":             certs.key,
		"PLAZA_FEDERATION_LISTEN":   "127.0.0.1:8449",
		"PLAZA_FEDERATION_CA_FILE":  certs.ca,
		"PLAZA_FEDERATION_DELEGATE": "matrix.example.org:443",
		"PLAZA_FEDERATION_NOTARIES": " matrix.org, notary.example:8448,",

		"PLAZA_FEDERATION_ALLOW_PRIVATE": "true",
	}
	got, err := LoadConfig("", fakeEnv(ok))
	if err != nil {
		t.Fatal(err)
	}
	if !got.FederationEnabled() || got.TLSCert != certs.cert || got.TLSKey != certs.key || got.FederationListen != "127.0.0.1:8449" ||
		got.FederationCAFile != certs.ca || got.FederationDelegate != "matrix.example.org:443" || !got.FederationPrivate ||
		!slices.Equal(got.Notaries(), []string{"matrix.org", "notary.example:8448"}) {
		t.Errorf("LoadConfig = %+v", got)
	}
	if got, err := LoadConfig("", fakeEnv(nil)); err != nil || got.FederationEnabled() {
		t.Errorf("defaults: federation enabled %v, %v", got.FederationEnabled(), err)
	}

	with := func(k, v string) map[string]string {
		env := maps.Clone(ok)
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
		return env
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"cert without key", with("PLAZA_TLS_KEY", ""), []string{"PLAZA_TLS_CERT=", "needs tls_key (PLAZA_TLS_KEY)"}},
		{"key without cert", with("PLAZA_TLS_CERT", ""), []string{"PLAZA_TLS_KEY=", "needs tls_cert (PLAZA_TLS_CERT)"}},
		{"missing cert file", with("PLAZA_TLS_CERT", certs.dir+"/absent.pem"), []string{"PLAZA_TLS_CERT=", "absent.pem", "cannot be used"}},
		{"key of another certificate", with("PLAZA_TLS_KEY", certs.caKey), []string{"PLAZA_TLS_CERT=", "cannot be used with tls_key"}},
		{"CA file without certificates", with("PLAZA_FEDERATION_CA_FILE", certs.key), []string{"PLAZA_FEDERATION_CA_FILE=", "no PEM certificate"}},
		{"missing CA file", with("PLAZA_FEDERATION_CA_FILE", certs.dir+"/absent.pem"), []string{"PLAZA_FEDERATION_CA_FILE=", "absent.pem"}},
		{"federation listen", with("PLAZA_FEDERATION_LISTEN", "8448"), []string{`PLAZA_FEDERATION_LISTEN="8448"`, "host:port"}},
		{"delegate", with("PLAZA_FEDERATION_DELEGATE", "https://matrix.example.org"), []string{`PLAZA_FEDERATION_DELEGATE="https://matrix.example.org"`, "not a server name"}},
		{"notaries", with("PLAZA_FEDERATION_NOTARIES", "matrix.org notary.example"), []string{`PLAZA_FEDERATION_NOTARIES="matrix.org notary.example"`, "separated by commas"}},
		{"allow private", with("PLAZA_FEDERATION_ALLOW_PRIVATE", "yes"), []string{`PLAZA_FEDERATION_ALLOW_PRIVATE="yes"`, "true or false"}},
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

// testCerts are PEM files made for one test: a CA, and a server certificate
// it signed for 127.0.0.1 and localhost.
type testCerts struct {
	dir, ca, caKey, cert, key string
}

func writeTestCerts(t *testing.T) testCerts {
	t.Helper()
	dir := t.TempDir()
	c := testCerts{dir: dir, ca: filepath.Join(dir, "ca.pem"), caKey: filepath.Join(dir, "ca.key"),
		cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server.key")}
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func(path string) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(path, "PRIVATE KEY", der)
		return k
	}
	caKey, leafKey := newKey(c.caKey), newKey(c.key)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plaza test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write(c.ca, "CERTIFICATE", caDER)
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "plaza test server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write(c.cert, "CERTIFICATE", leafDER)
	return c
}
