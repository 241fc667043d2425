package e2ee_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.Main(m) }

// The helpers below are this package's own small Matrix client over HTTP,
// in the style of homeserver/e2e_test.go: a real homeserver on httptest,
// real PostgreSQL through storagetest.

type testServer struct {
	t   *testing.T
	URL string
}

func newServer(t *testing.T) *testServer {
	t.Helper()
	s, _ := startServer(t, storagetest.NewDB(t, storage.Migrations()), t.TempDir())
	return s
}

// startServer starts a homeserver on a database; stop closes its listener
// (a restart is a second startServer on the same database).
func startServer(t *testing.T, pool *pgxpool.Pool, dataDir string) (s *testServer, stop func()) {
	t.Helper()
	cfg := homeserver.Config{ServerName: "plaza.test", DataDir: dataDir, Registration: "open", BcryptCost: bcrypt.MinCost}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(hs.Handler())
	t.Cleanup(ts.Close)
	return &testServer{t: t, URL: ts.URL}, ts.Close
}

// client is one device of a user.
type client struct {
	t      *testing.T
	base   string
	token  string
	UserID string
	Device string
	txn    atomic.Int64
}

type response struct {
	Status int
	Body   map[string]any
	Raw    []byte
}

func (r response) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// try performs a request; it is safe to call from any goroutine.
func (c *client) try(method, path string, body any) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return response{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	out := response{Status: resp.StatusCode, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out, nil
}

func (c *client) do(method, path string, body any) response {
	c.t.Helper()
	r, err := c.try(method, path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

func (c *client) must(method, path string, body any) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != 200 {
		c.t.Fatalf("%s %s = %d %s", method, path, r.Status, r.Raw)
	}
	return r
}

func (c *client) fails(status int, errcode, method, path string, body any) response {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.Status != status || r.str("errcode") != errcode {
		c.t.Fatalf("%s %s = %d %s, want %d %s", method, path, r.Status, r.Raw, status, errcode)
	}
	return r
}

func (s *testServer) register(name string) *client {
	s.t.Helper()
	c := &client{t: s.t, base: s.URL}
	r := c.must("POST", "/_matrix/client/v3/register", map[string]any{
		"username": name, "password": "secret-" + name, "auth": map[string]any{"type": "m.login.dummy"}})
	c.token, c.UserID, c.Device = r.str("access_token"), r.str("user_id"), r.str("device_id")
	return c
}

// login opens another session (device) of a user.
func (s *testServer) login(name, deviceID, displayName string) *client {
	s.t.Helper()
	c := &client{t: s.t, base: s.URL}
	body := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": name},
		"password": "secret-" + name, "initial_device_display_name": displayName}
	if deviceID != "" {
		body["device_id"] = deviceID
	}
	r := c.must("POST", "/_matrix/client/v3/login", body)
	c.token, c.UserID, c.Device = r.str("access_token"), r.str("user_id"), r.str("device_id")
	return c
}

const v3 = "/_matrix/client/v3"

func (c *client) sync(since string, timeoutMS int) response {
	c.t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeoutMS)}}
	if since != "" {
		q.Set("since", since)
	}
	return c.must("GET", v3+"/sync?"+q.Encode(), nil)
}

func (c *client) createRoom() string {
	c.t.Helper()
	return c.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
}

func (c *client) join(roomID string) {
	c.t.Helper()
	c.must("POST", v3+"/join/"+url.PathEscape(roomID), nil)
}

func (c *client) leave(roomID string) {
	c.t.Helper()
	c.must("POST", v3+"/rooms/"+url.PathEscape(roomID)+"/leave", nil)
}

// sendToDevice sends one request of to-device messages.
func (c *client) sendToDevice(evType string, messages map[string]map[string]any) {
	c.t.Helper()
	txn := fmt.Sprintf("td%d-%d", time.Now().UnixNano(), c.txn.Add(1))
	c.must("PUT", v3+"/sendToDevice/"+evType+"/"+txn, map[string]any{"messages": messages})
}

// toDevice returns the to-device events of a sync response.
func toDevice(r response) []map[string]any {
	td, _ := r.Body["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.(map[string]any))
	}
	return out
}

// deviceLists returns device_lists.changed and .left of a sync response.
func deviceLists(r response) (changed, left []string) {
	dl, _ := r.Body["device_lists"].(map[string]any)
	for _, u := range asList(dl["changed"]) {
		changed = append(changed, u.(string))
	}
	for _, u := range asList(dl["left"]) {
		left = append(left, u.(string))
	}
	return changed, left
}

func asList(v any) []any { l, _ := v.([]any); return l }

// otkCount returns device_one_time_keys_count.signed_curve25519 of a sync.
func otkCount(r response) int {
	counts, _ := r.Body["device_one_time_keys_count"].(map[string]any)
	n, _ := counts["signed_curve25519"].(float64)
	return int(n)
}

// Cryptographic identities of test devices and users.

// signObject signs obj (a JSON object) as userID with keyID, as clients do.
func signObject(t *testing.T, obj map[string]any, userID, keyID string, priv ed25519.PrivateKey) {
	t.Helper()
	unsigned := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			unsigned[k] = v
		}
	}
	c, err := canonicaljson.Marshal(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
		obj["signatures"] = sigs
	}
	mine, _ := sigs[userID].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
		sigs[userID] = mine
	}
	mine[keyID] = signing.EncodeBase64(ed25519.Sign(priv, c))
}

func newKeyPair(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signing.EncodeBase64(pub), priv
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return signing.EncodeBase64(b)
}

// device is a client with its own Ed25519 identity.
type device struct {
	*client
	pub  string
	priv ed25519.PrivateKey
}

func newDevice(t *testing.T, c *client) *device {
	pub, priv := newKeyPair(t)
	return &device{client: c, pub: pub, priv: priv}
}

// deviceKeys returns signed device_keys for the device.
func (d *device) deviceKeys() map[string]any {
	dk := map[string]any{
		"user_id": d.UserID, "device_id": d.Device,
		"algorithms": []any{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.Device: d.pub, "curve25519:" + d.Device: randomKey()},
	}
	signObject(d.t, dk, d.UserID, "ed25519:"+d.Device, d.priv)
	return dk
}

// oneTimeKeys returns n signed one-time keys with IDs from first on.
func (d *device) oneTimeKeys(first, n int, fallback bool) map[string]any {
	out := map[string]any{}
	for i := first; i < first+n; i++ {
		k := map[string]any{"key": randomKey()}
		if fallback {
			k["fallback"] = true
		}
		signObject(d.t, k, d.UserID, "ed25519:"+d.Device, d.priv)
		out[fmt.Sprintf("signed_curve25519:AAAA%04d", i)] = k
	}
	return out
}

func (d *device) upload(body map[string]any) response {
	d.t.Helper()
	return d.must("POST", v3+"/keys/upload", body)
}

func (c *client) query(users map[string][]string) response {
	c.t.Helper()
	dk := map[string]any{}
	for u, devs := range users {
		if devs == nil {
			devs = []string{}
		}
		dk[u] = devs
	}
	return c.must("POST", v3+"/keys/query", map[string]any{"device_keys": dk})
}

func (c *client) claim(userID, deviceID string) (keyID string, key map[string]any) {
	c.t.Helper()
	r := c.must("POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{userID: map[string]any{deviceID: "signed_curve25519"}}})
	return claimed(r, userID, deviceID)
}

func claimed(r response, userID, deviceID string) (string, map[string]any) {
	otks, _ := r.Body["one_time_keys"].(map[string]any)
	devs, _ := otks[userID].(map[string]any)
	keys, _ := devs[deviceID].(map[string]any)
	for id, k := range keys {
		return id, k.(map[string]any)
	}
	return "", nil
}

// path digs into decoded JSON.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// crossSigning is a user's set of cross-signing keys.
type crossSigning struct {
	t                *testing.T
	userID           string
	master, ssk, usk keyPair
}

type keyPair struct {
	pub  string
	priv ed25519.PrivateKey
}

func newCrossSigning(t *testing.T, userID string) *crossSigning {
	x := &crossSigning{t: t, userID: userID}
	for _, k := range []*keyPair{&x.master, &x.ssk, &x.usk} {
		k.pub, k.priv = newKeyPair(t)
	}
	return x
}

// key is one of the keys as uploaded; all but the master key are signed by
// the master key.
func (x *crossSigning) key(k keyPair, usage string) map[string]any {
	obj := map[string]any{"user_id": x.userID, "usage": []any{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
	if usage != "master" {
		signObject(x.t, obj, x.userID, "ed25519:"+x.master.pub, x.master.priv)
	}
	return obj
}

// upload is the body of /keys/device_signing/upload with all three keys.
func (x *crossSigning) upload() map[string]any {
	return map[string]any{
		"master_key":       x.key(x.master, "master"),
		"self_signing_key": x.key(x.ssk, "self_signing"),
		"user_signing_key": x.key(x.usk, "user_signing"),
	}
}

func (x *crossSigning) uploadWithout(name string) map[string]any {
	b := x.upload()
	delete(b, name)
	return b
}
