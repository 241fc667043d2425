package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// testCA is a certificate authority made for one test, trusted by the test
// servers through the CA-file mechanism that PLAZA_FEDERATION_CA_FILE uses.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Plaza test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pemPath: path}
}

// leaf issues a server certificate for 127.0.0.1 and the given DNS names.
func (ca *testCA) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "plaza test server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// noDNS fails every SRV lookup: tests never reach real DNS.
type noDNS struct{}

func (noDNS) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, &net.DNSError{Err: "no such host (test)", IsNotFound: true}
}

// testFed is a Plaza federation handler on a loopback TLS server whose
// server name is, unless an option changes it, its address,
// "127.0.0.1:<port>", so that discovery takes the IP-literal path and needs no
// DNS. Its certificate is also valid for b.test and srv.test.
type testFed struct {
	t       testing.TB
	name    string
	ts      *httptest.Server
	db      *storage.DB
	cfg     Config
	svc     *Service
	handler atomic.Pointer[http.Handler]

	mu   sync.Mutex
	hits map[string]int // requests by path
}

func newFed(t testing.TB, ca *testCA, opts ...func(*Config)) *testFed {
	t.Helper()
	f := &testFed{t: t, db: storage.New(storagetest.NewDB(t, storage.Migrations())), hits: map[string]int{}}
	f.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits[r.URL.Path]++
		f.mu.Unlock()
		(*f.handler.Load()).ServeHTTP(w, r)
	}))
	f.ts.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "b.test", "srv.test")}}
	f.ts.StartTLS()
	t.Cleanup(f.ts.Close)
	f.name = f.ts.Listener.Addr().String()

	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	roots, err := LoadRootCAs(ca.pemPath)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{ServerName: f.name, Key: key, RootCAs: roots, DNS: noDNS{}, Version: "test", AllowPrivateAddresses: true}
	for _, o := range opts {
		o(&f.cfg)
	}
	f.name = f.cfg.ServerName
	f.start()
	return f
}

// start (re)builds the service from f.cfg on f's database, as a restart
// would.
func (f *testFed) start() {
	f.t.Helper()
	svc, err := New(context.Background(), f.cfg, f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(svc.Close)
	f.svc = svc
	var h http.Handler = svc.Handler(func(r chi.Router) {
		r.With(svc.Authenticate).HandleFunc("/_matrix/federation/v1/test/echo", echo)
	})
	f.handler.Store(&h)
}

// rotate restarts f with a new signing key.
func (f *testFed) rotate() signing.Key {
	f.t.Helper()
	old := f.cfg.Key
	key, err := signing.GenerateKey()
	if err != nil {
		f.t.Fatal(err)
	}
	f.cfg.Key = key
	f.start()
	return old
}

func (f *testFed) hitCount(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

// echo is an authenticated test route: it answers with what it saw.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	httpapi.Respond(w, http.StatusOK, map[string]string{"origin": Origin(r.Context()), "body": string(body), "uri": r.RequestURI})
}

// httpsClient trusts the test CA only.
func (ca *testCA) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
}

// get fetches url and decodes its JSON body.
func get(t *testing.T, c *http.Client, url string, out any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, raw)
		}
	}
	return resp.StatusCode
}

func isRemote(err error, status int, errcode string) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == status && re.ErrCode == errcode
}
