package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificates issued at start-up live this long at most (and never past
// their CA). A new one is issued at every start, so a year is plenty.
const issuedCertLifetime = 365 * 24 * time.Hour

// certAuthority is a CA certificate with its private key, loaded from PEM
// files: what a private federation (or Complement's test harness, which
// hands every homeserver /complement/ca/ca.crt and ca.key) uses to let its
// servers issue their own certificates.
type certAuthority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// loadCertAuthority reads a CA certificate and its key. The key may be
// PKCS#1 RSA ("RSA PRIVATE KEY", what Complement writes), SEC 1 EC ("EC
// PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"); it must match the certificate.
func loadCertAuthority(certFile, keyFile string) (certAuthority, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return certAuthority{}, fmt.Errorf("reading the CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return certAuthority{}, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return certAuthority{}, fmt.Errorf("parsing the CA certificate %s: %w", certFile, err)
	}
	// Version 1 certificates have no extensions, so no CA flag to check.
	if !cert.IsCA && cert.Version >= 3 {
		return certAuthority{}, fmt.Errorf("%s is not a CA certificate (its basic constraints lack CA:TRUE)", certFile)
	}

	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return certAuthority{}, fmt.Errorf("reading the CA key: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return certAuthority{}, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return certAuthority{}, fmt.Errorf("the CA key %s does not belong to the CA certificate %s", keyFile, certFile)
	}
	return certAuthority{cert: cert, key: key}, nil
}

// parsePrivateKey reads the first PEM private key in data.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found (want RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue // e.g. "EC PARAMETERS", which openssl writes before the key
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the %s: %w", strings.ToLower(block.Type), err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", key)
		}
		return signer, nil
	}
}

// issue makes a fresh key and a certificate for serverName's host, signed
// by the CA, and writes them as PEM to dir/server.crt and dir/server.key,
// returning their paths. The certificate file holds the CA too, so that a
// peer that trusts only an intermediate's root still gets a full chain.
//
// A new key at every start costs a millisecond and means no long-lived TLS
// key sits on disk unused; the files are replaced atomically, so a server
// still running from the same directory is never left with half a file.
func (ca certAuthority) issue(serverName, dir string, now time.Time) (certFile, keyFile string, err error) {
	host := serverHost(serverName)
	if host == "" {
		return "", "", fmt.Errorf("server name %q has no host", serverName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating a TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", fmt.Errorf("choosing a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		// An hour back allows for clocks a little behind ours.
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(issuedCertLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("signing the certificate for %s: %w", host, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encoding the TLS key: %w", err)
	}

	// The data directory itself stays enterable (0755): as root, the
	// embedded PostgreSQL runs under another account that must pass
	// through it. Only the key's own directory is private.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", "", fmt.Errorf("creating %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", "", fmt.Errorf("creating %s: %w", dir, err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	// The key first: a certificate on disk whose key is missing would be
	// worse than a stale pair.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certFile, chain, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// serverHost is a server name without its port, and without the brackets of
// an IPv6 literal.
func serverHost(serverName string) string {
	if strings.HasPrefix(serverName, "[") {
		if end := strings.IndexByte(serverName, ']'); end > 0 {
			return serverName[1:end]
		}
		return ""
	}
	host, _, found := strings.Cut(serverName, ":")
	if !found {
		return serverName
	}
	return host
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// issueTLS issues the federation certificate from tls_ca_cert when that is
// configured, and returns the configuration with tls_cert and tls_key
// pointing at it. Otherwise cfg comes back unchanged.
func issueTLS(cfg Config, now time.Time) (Config, error) {
	if cfg.TLSCACert == "" {
		return cfg, nil
	}
	ca, err := loadCertAuthority(cfg.TLSCACert, cfg.TLSCAKey)
	if err != nil {
		return cfg, err
	}
	cert, key, err := ca.issue(cfg.ServerName, cfg.IssuedTLSDir(), now)
	if err != nil {
		return cfg, fmt.Errorf("issuing the federation certificate: %w", err)
	}
	cfg.TLSCert, cfg.TLSKey = cert, key
	return cfg, nil
}
