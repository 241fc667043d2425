package federation

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDNS answers SRV lookups from a table keyed "_service._proto.name".
type fakeDNS map[string][]*net.SRV

func (d fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + name
	if recs, ok := d[key]; ok {
		return key, recs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

// fakeWeb answers HTTPS requests from a table keyed by URL; a missing URL is
// a connection failure. It counts requests.
type fakeWeb struct {
	delay time.Duration // before answering, to make concurrent lookups overlap
	mu    sync.Mutex
	pages map[string]fakePage
	calls map[string]int
}

type fakePage struct {
	status int
	body   string
	header http.Header
}

func (f *fakeWeb) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	u := r.URL.String()
	f.calls[u]++
	p, ok := f.pages[u]
	if !ok {
		return nil, errors.New("connection refused (test)")
	}
	h := p.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: p.status, Header: h, Body: io.NopCloser(strings.NewReader(p.body)), Request: r}, nil
}

func wk(host string) string { return "https://" + host + "/.well-known/matrix/server" }

func TestResolve(t *testing.T) {
	dns := fakeDNS{
		"_matrix-fed._tcp.srv.example":       {{Target: "fed1.srv.example.", Port: 8000}, {Target: "fed2.srv.example.", Port: 8001}},
		"_matrix._tcp.oldsrv.example":        {{Target: "legacy.example.", Port: 9000}},
		"_matrix-fed._tcp.both.example":      {{Target: "new.example.", Port: 1}},
		"_matrix._tcp.both.example":          {{Target: "old.example.", Port: 2}},
		"_matrix-fed._tcp.delegated.example": {{Target: "target.example.", Port: 7443}},
		"_matrix-fed._tcp.dot.example":       {{Target: ".", Port: 0}},
		"_matrix-fed._tcp.wk-srv.example":    {{Target: "ignored.example.", Port: 1}},
	}
	web := &fakeWeb{calls: map[string]int{}, pages: map[string]fakePage{
		wk("wk-port.example"):    {status: 200, body: `{"m.server":"delegated.example:1234"}`},
		wk("wk-noport.example"):  {status: 200, body: `{"m.server":"delegated.example"}`},
		wk("wk-ip.example"):      {status: 200, body: `{"m.server":"10.1.2.3"}`},
		wk("wk-ip6.example"):     {status: 200, body: `{"m.server":"[2001:db8::1]:99"}`},
		wk("wk-plain.example"):   {status: 200, body: `{"m.server":"plain.example"}`},
		wk("wk-srv.example"):     {status: 200, body: `{"m.server":"delegated.example"}`},
		wk("wk-404.example"):     {status: 404, body: `{"m.server":"delegated.example:1"}`},
		wk("wk-badjson.example"): {status: 200, body: `{"m.server":`},
		wk("wk-missing.example"): {status: 200, body: `{"other":"x"}`},
		wk("wk-invalid.example"): {status: 200, body: `{"m.server":"not a name:x"}`},
		wk("wk-number.example"):  {status: 200, body: `{"m.server":42}`},
		wk("wk-array.example"):   {status: 200, body: `["delegated.example"]`},
		wk("wk-html.example"):    {status: 200, body: `{"m.server":"delegated.example:1234"}`, header: http.Header{"Content-Type": {"text/html"}}},
	}}
	r := NewResolver(dns, &http.Client{Transport: web}, time.Now)

	tests := []struct {
		name string
		want Destination
	}{
		{"1.2.3.4", Destination{[]string{"1.2.3.4:8448"}, "1.2.3.4", "1.2.3.4"}},
		{"1.2.3.4:99", Destination{[]string{"1.2.3.4:99"}, "1.2.3.4:99", "1.2.3.4"}},
		{"[2001:db8::1]", Destination{[]string{"[2001:db8::1]:8448"}, "[2001:db8::1]", "2001:db8::1"}},
		{"[2001:db8::1]:443", Destination{[]string{"[2001:db8::1]:443"}, "[2001:db8::1]:443", "2001:db8::1"}},
		// An explicit port skips .well-known and SRV.
		{"srv.example:1234", Destination{[]string{"srv.example:1234"}, "srv.example:1234", "srv.example"}},
		// .well-known delegation.
		{"wk-port.example", Destination{[]string{"delegated.example:1234"}, "delegated.example:1234", "delegated.example"}},
		{"wk-html.example", Destination{[]string{"delegated.example:1234"}, "delegated.example:1234", "delegated.example"}},
		{"wk-noport.example", Destination{[]string{"target.example:7443"}, "delegated.example", "delegated.example"}},
		{"wk-srv.example", Destination{[]string{"target.example:7443"}, "delegated.example", "delegated.example"}},
		{"wk-ip.example", Destination{[]string{"10.1.2.3:8448"}, "10.1.2.3", "10.1.2.3"}},
		{"wk-ip6.example", Destination{[]string{"[2001:db8::1]:99"}, "[2001:db8::1]:99", "2001:db8::1"}},
		{"wk-plain.example", Destination{[]string{"plain.example:8448"}, "plain.example", "plain.example"}},
		// No usable .well-known: SRV records of the name itself, the
		// certificate still for the name.
		{"srv.example", Destination{[]string{"fed1.srv.example:8000", "fed2.srv.example:8001"}, "srv.example", "srv.example"}},
		{"oldsrv.example", Destination{[]string{"legacy.example:9000"}, "oldsrv.example", "oldsrv.example"}},
		{"both.example", Destination{[]string{"new.example:1"}, "both.example", "both.example"}},
		{"dot.example", Destination{[]string{"dot.example:8448"}, "dot.example", "dot.example"}},
		{"nothing.example", Destination{[]string{"nothing.example:8448"}, "nothing.example", "nothing.example"}},
		// Invalid .well-known answers fall through to SRV and 8448.
		{"wk-404.example", Destination{[]string{"wk-404.example:8448"}, "wk-404.example", "wk-404.example"}},
		{"wk-badjson.example", Destination{[]string{"wk-badjson.example:8448"}, "wk-badjson.example", "wk-badjson.example"}},
		{"wk-missing.example", Destination{[]string{"wk-missing.example:8448"}, "wk-missing.example", "wk-missing.example"}},
		{"wk-invalid.example", Destination{[]string{"wk-invalid.example:8448"}, "wk-invalid.example", "wk-invalid.example"}},
		{"wk-number.example", Destination{[]string{"wk-number.example:8448"}, "wk-number.example", "wk-number.example"}},
		{"wk-array.example", Destination{[]string{"wk-array.example:8448"}, "wk-array.example", "wk-array.example"}},
	}
	for _, tt := range tests {
		got, err := r.Resolve(context.Background(), tt.name)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	for _, bad := range []string{"", "a b", "example.org:", "[::1", "300.1.1.1"} {
		if _, err := r.Resolve(context.Background(), bad); err == nil {
			t.Errorf("%q resolved", bad)
		}
	}
	// IP literals and explicit ports never ask .well-known.
	for u := range web.calls {
		if strings.Contains(u, "1.2.3.4") || strings.Contains(u, "2001") || strings.Contains(u, "srv.example:1234") {
			t.Errorf("asked %s", u)
		}
	}
}

func TestWellKnownCaching(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	web := &fakeWeb{calls: map[string]int{}, pages: map[string]fakePage{
		wk("default.example"): {status: 200, body: `{"m.server":"d.example:1"}`},
		wk("short.example"):   {status: 200, body: `{"m.server":"d.example:1"}`, header: http.Header{"Cache-Control": {"public, max-age=3600"}}},
		wk("long.example"):    {status: 200, body: `{"m.server":"d.example:1"}`, header: http.Header{"Cache-Control": {"max-age=31536000"}}},
		wk("expires.example"): {status: 200, body: `{"m.server":"d.example:1"}`, header: http.Header{"Expires": {now.Add(2 * time.Hour).Format(http.TimeFormat)}}},
		wk("nostore.example"): {status: 200, body: `{"m.server":"d.example:1"}`, header: http.Header{"Cache-Control": {"no-store"}}},
		wk("error.example"):   {status: 500},
	}}
	r := NewResolver(fakeDNS{}, &http.Client{Transport: web}, clock)
	calls := func(host string) int {
		web.mu.Lock()
		defer web.mu.Unlock()
		return web.calls[wk(host)]
	}
	resolveAt := func(host string, at time.Duration) {
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(at)
		if _, err := r.Resolve(context.Background(), host); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		host       string
		cachedTill time.Duration // still cached just before, refetched at
	}{
		{"default.example", 24 * time.Hour},
		{"short.example", time.Hour},
		{"long.example", 48 * time.Hour},
		{"expires.example", 2 * time.Hour},
		{"nostore.example", wellKnownMinTTL},
		{"error.example", wellKnownErrFirst},
	}
	for _, tt := range tests {
		resolveAt(tt.host, 0)
		resolveAt(tt.host, tt.cachedTill-time.Second)
		if n := calls(tt.host); n != 1 {
			t.Errorf("%s: %d fetches within %v, want 1", tt.host, n, tt.cachedTill)
		}
		resolveAt(tt.host, tt.cachedTill)
		if n := calls(tt.host); n != 2 {
			t.Errorf("%s: %d fetches at %v, want 2", tt.host, n, tt.cachedTill)
		}
	}
	// Repeated failures back off exponentially, up to an hour.
	resolveAt("error.example", wellKnownErrFirst+2*wellKnownErrFirst-time.Second)
	if n := calls("error.example"); n != 2 {
		t.Errorf("error.example: refetched during the second backoff (%d fetches)", n)
	}
	resolveAt("error.example", wellKnownErrFirst+2*wellKnownErrFirst)
	if n := calls("error.example"); n != 3 {
		t.Errorf("error.example: %d fetches after the second backoff, want 3", n)
	}
}

func TestCacheTTL(t *testing.T) {
	now := time.Now()
	tests := []struct {
		header http.Header
		want   time.Duration
	}{
		{http.Header{}, 24 * time.Hour},
		{http.Header{"Cache-Control": {"max-age=7200"}}, 2 * time.Hour},
		{http.Header{"Cache-Control": {`max-age="7200", must-revalidate`}}, 2 * time.Hour},
		{http.Header{"Cache-Control": {"max-age=0"}}, wellKnownMinTTL},
		{http.Header{"Cache-Control": {"max-age=999999999999999999"}}, 48 * time.Hour},
		{http.Header{"Cache-Control": {"max-age=junk"}}, 24 * time.Hour},
		{http.Header{"Cache-Control": {"no-cache"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, wellKnownMinTTL},
		{http.Header{"Expires": {now.Add(-time.Hour).Format(http.TimeFormat)}}, wellKnownMinTTL},
		{http.Header{"Expires": {"garbage"}}, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := cacheTTL(tt.header, now); got < tt.want-time.Second || got > tt.want {
			t.Errorf("%v: %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestWellKnownIsFetchedOnceForConcurrentLookups(t *testing.T) {
	web := &fakeWeb{delay: 50 * time.Millisecond, calls: map[string]int{}, pages: map[string]fakePage{
		wk("busy.example"): {status: 200, body: `{"m.server":"d.example:1"}`},
	}}
	r := NewResolver(fakeDNS{}, &http.Client{Transport: web}, time.Now)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			d, err := r.Resolve(context.Background(), "busy.example")
			if err != nil || d.Host != "d.example:1" {
				t.Errorf("Resolve = %+v, %v", d, err)
			}
		})
	}
	wg.Wait()
	if n := web.calls[wk("busy.example")]; n != 1 {
		t.Errorf("10 concurrent lookups fetched .well-known %d times, want 1", n)
	}
}
