package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

func TestSignedRequestsAuthenticate(t *testing.T) {
	ca := newCA(t)
	a, b := newFed(t, ca), newFed(t, ca)
	ctx := context.Background()

	var got map[string]string
	uri := "/_matrix/federation/v1/test/echo?since=a%20b&limit=2"
	if err := a.svc.Client.DoJSON(ctx, b.name, http.MethodGet, uri, nil, &got, true); err != nil {
		t.Fatal(err)
	}
	if got["origin"] != a.name || got["uri"] != uri {
		t.Errorf("GET: B saw %v", got)
	}
	body := map[string]any{"pdus": []any{}, "text": "<café & ünïcode>"}
	if err := a.svc.Client.DoJSON(ctx, b.name, http.MethodPut, "/_matrix/federation/v1/test/echo", body, &got, true); err != nil {
		t.Fatal(err)
	}
	if got["origin"] != a.name || !strings.Contains(got["body"], "café") {
		t.Errorf("PUT: B saw %v", got)
	}
	// B fetched A's keys once for both requests.
	if n := a.hitCount("/_matrix/key/v2/server"); n != 1 {
		t.Errorf("A's keys fetched %d times, want 1", n)
	}
	// Unsigned, the same request is refused.
	if err := a.svc.Client.DoJSON(ctx, b.name, http.MethodGet, uri, nil, &got, false); !isRemote(err, 401, "M_UNAUTHORIZED") {
		t.Errorf("unsigned: %v", err)
	}
}

func TestAuthenticationFailures(t *testing.T) {
	ca := newCA(t)
	a := newFed(t, ca)
	b := newFed(t, ca)
	// C's clock runs 8 days ahead: every key A publishes has expired for it.
	c := newFed(t, ca, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(8 * 24 * time.Hour) } })
	gone := newFed(t, ca)
	gone.ts.Close()
	oldA := a.rotate()
	client := ca.client()
	const path = "/_matrix/federation/v1/test/echo"
	body := []byte(`{"hello":"world"}`)

	sign := func(origin, dest, method, uri string, content []byte, key signing.Key) string {
		h, err := SignRequest(origin, dest, method, uri, content, key)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tamper := func(h string) string {
		x, err := ParseXMatrix(h)
		if err != nil {
			t.Fatal(err)
		}
		sig := []byte(x.Sig)
		sig[3] ^= 1
		x.Sig = string(sig)
		return x.String()
	}
	valid := sign(a.name, b.name, "POST", path, body, a.cfg.Key)

	tests := []struct {
		name    string
		target  *testFed
		auth    []string
		body    []byte
		status  int
		errcode string
	}{
		{"valid", b, []string{valid}, body, 200, ""},
		{"valid among other schemes", b, []string{"Bearer abc", valid}, body, 200, ""},
		{"no destination (older servers)", b, []string{sign(a.name, "", "POST", path, body, a.cfg.Key)}, body, 200, ""},
		{"one of two signatures valid", b, []string{tamper(valid), valid}, body, 200, ""},
		{"lenient header form", b, []string{strings.Replace(strings.ReplaceAll(valid, `"`, ""), "origin=", "Origin = ", 1)}, body, 200, ""},
		{"no authorization", b, nil, body, 401, "M_UNAUTHORIZED"},
		{"tampered signature", b, []string{tamper(valid)}, body, 401, "M_UNAUTHORIZED"},
		{"tampered body", b, []string{valid}, []byte(`{"hello":"mallory"}`), 401, "M_UNAUTHORIZED"},
		{"wrong destination", b, []string{sign(a.name, "other.example", "POST", path, body, a.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"signed for another path", b, []string{sign(a.name, b.name, "POST", path+"?x=1", body, a.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"signed for another method", b, []string{sign(a.name, b.name, "PUT", path, body, a.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"unknown key", b, []string{sign(a.name, b.name, "POST", path, body, signing.Key{ID: "ed25519:nope", Private: a.cfg.Key.Private})}, body, 401, "M_UNAUTHORIZED"},
		{"old key", b, []string{sign(a.name, b.name, "POST", path, body, oldA)}, body, 401, "M_UNAUTHORIZED"},
		{"expired key", c, []string{sign(a.name, c.name, "POST", path, body, a.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"origin unreachable", b, []string{sign(gone.name, b.name, "POST", path, body, gone.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"origin impersonated", b, []string{sign(gone.name, b.name, "POST", path, body, a.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"malformed header", b, []string{`X-Matrix origin=`}, body, 401, "M_UNAUTHORIZED"},
		{"header without sig", b, []string{`X-Matrix origin="` + a.name + `",key="` + a.cfg.Key.ID + `"`}, body, 401, "M_UNAUTHORIZED"},
		{"two origins", b, []string{valid, sign(c.name, b.name, "POST", path, body, c.cfg.Key)}, body, 401, "M_UNAUTHORIZED"},
		{"body not JSON", b, []string{valid}, []byte(`{"hello"`), 400, "M_NOT_JSON"},
		{"body too large", b, []string{valid}, bytes.Repeat([]byte(" "), defaultMaxBodyBytes+1), 413, "M_TOO_LARGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", tt.target.ts.URL+path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.auth {
				req.Header.Add("Authorization", h)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var e struct {
				ErrCode string `json:"errcode"`
				Origin  string `json:"origin"`
			}
			_ = json.Unmarshal(raw, &e)
			if resp.StatusCode != tt.status || e.ErrCode != tt.errcode {
				t.Fatalf("= %d %s, want %d %s", resp.StatusCode, raw, tt.status, tt.errcode)
			}
			if tt.status == 200 && e.Origin != a.name {
				t.Errorf("origin in context = %q", e.Origin)
			}
		})
	}
}

// TestRequestsToDelegatedNames sends signed requests to servers named by
// DNS names: one delegated through .well-known to an IP address and port,
// one found through an SRV record. Signatures name the servers, never the
// addresses they were found at.
func TestRequestsToDelegatedNames(t *testing.T) {
	ca := newCA(t)
	b := newFed(t, ca, func(c *Config) { c.ServerName = "b.test" })
	c := newFed(t, ca, func(c *Config) { c.ServerName = "srv.test" })
	_, cPort, err := net.SplitHostPort(c.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(cPort)
	web := &fakeWeb{calls: map[string]int{}, pages: map[string]fakePage{
		wk("b.test"): {status: 200, body: `{"m.server":"` + b.ts.Listener.Addr().String() + `"}`},
	}}
	a := newFed(t, ca, func(cfg *Config) {
		cfg.DNS = fakeDNS{"_matrix-fed._tcp.srv.test": {{Target: "localhost.", Port: uint16(port)}}}
		cfg.WellKnownClient = &http.Client{Transport: web}
	})
	for _, srv := range []*testFed{b, c} {
		dest := srv.name
		var got map[string]string
		if err := a.svc.Client.DoJSON(context.Background(), dest, http.MethodPost, "/_matrix/federation/v1/test/echo", map[string]int{"n": 1}, &got, true); err != nil {
			t.Fatalf("%s: %v", dest, err)
		}
		if got["origin"] != a.name {
			t.Errorf("%s saw origin %q", dest, got["origin"])
		}
		if _, err := a.svc.Keys.VerifyKey(context.Background(), dest, srv.cfg.Key.ID, time.Now(), true); err != nil {
			t.Errorf("keys of %s: %v", dest, err)
		}
	}
}

// BenchmarkAuthenticate measures what every inbound federation request pays
// to be authenticated, once the origin's keys are known: parsing the header,
// reading the body, canonical JSON and an ed25519 verification.
func BenchmarkAuthenticate(b *testing.B) {
	ca := newCA(b)
	a, dst := newFed(b, ca), newFed(b, ca)
	body := []byte(`{"origin":"` + a.name + `","origin_server_ts":1,"pdus":[],"edus":[{"edu_type":"m.typing","content":{"room_id":"!r:x","user_id":"@u:x","typing":true}}]}`)
	const uri = "/_matrix/federation/v1/test/echo"
	auth, err := SignRequest(a.name, dst.name, "PUT", uri, body, a.cfg.Key)
	if err != nil {
		b.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := dst.svc.Authenticate(ok)
	serve := func() int {
		req := httptest.NewRequest("PUT", uri, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := serve(); code != http.StatusNoContent { // fetches A's keys
		b.Fatalf("status %d", code)
	}
	b.ReportAllocs()
	for b.Loop() {
		if code := serve(); code != http.StatusNoContent {
			b.Fatalf("status %d", code)
		}
	}
}
