package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"plaza/homeserver/id"
)

// DNS is the part of *net.Resolver that server discovery uses; tests
// substitute a fake.
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// Destination is where to send requests for a server name: the addresses to
// dial, in order of preference, the Host header, and the name its TLS
// certificate must be valid for (an IP address when delegated to one, in
// which case no SNI is sent).
type Destination struct {
	Addrs   []string // host:port; a host name here is resolved by the dialer (A/AAAA)
	Host    string
	TLSName string
}

// Well-known caching, as the spec recommends: successes for what their
// Cache-Control or Expires say (24 h when silent), never more than 48 h;
// failures for a few minutes at first, doubling up to an hour.
const (
	wellKnownDefaultTTL   = 24 * time.Hour
	wellKnownMaxTTL       = 48 * time.Hour
	wellKnownMinTTL       = 5 * time.Minute
	wellKnownErrFirst     = 2 * time.Minute
	wellKnownErrMax       = time.Hour
	wellKnownTimeout      = 10 * time.Second
	wellKnownMaxBody      = 64 << 10
	wellKnownMaxEntries   = 4096
	defaultFederationPort = "8448"
)

// Resolver finds where a server name's federation API lives (spec,
// "Resolving server names"). It is safe for concurrent use.
type Resolver struct {
	dns    DNS
	client *http.Client // fetches /.well-known/matrix/server
	now    func() time.Time

	mu       sync.Mutex
	cache    map[string]wellKnownEntry // by host name
	inflight map[string]chan struct{}  // hosts whose .well-known is being fetched
}

type wellKnownEntry struct {
	delegated string // the m.server value; empty after a failure
	expires   time.Time
	failures  int
}

// NewResolver returns a Resolver that looks up SRV records with dns and
// fetches .well-known with client (whose TLS configuration decides which
// certificates are trusted).
func NewResolver(dns DNS, client *http.Client, now func() time.Time) *Resolver {
	return &Resolver{dns: dns, client: client, now: now, cache: map[string]wellKnownEntry{}, inflight: map[string]chan struct{}{}}
}

// splitServerName splits a server name into host (IPv6 literals without
// their brackets) and port ("" when absent).
func splitServerName(name string) (host, port string) {
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		host, rest := name[1:end], name[end+1:]
		return host, strings.TrimPrefix(rest, ":")
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return name, ""
}

func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// Resolve returns the destination for serverName.
func (r *Resolver) Resolve(ctx context.Context, serverName string) (Destination, error) {
	if !id.ValidServerName(serverName) {
		return Destination{}, fmt.Errorf("%q is not a valid server name", serverName)
	}
	host, port := splitServerName(serverName)
	// Steps 1 and 2: an IP literal, or an explicit port, is used as is.
	if isIPLiteral(host) || port != "" {
		return fixed(host, port, serverName), nil
	}
	// Step 3: delegation through .well-known.
	if delegated, ok := r.wellKnown(ctx, host); ok {
		dhost, dport := splitServerName(delegated)
		if isIPLiteral(dhost) || dport != "" {
			return fixed(dhost, dport, delegated), nil
		}
		return r.srv(ctx, dhost), nil
	}
	// Steps 4 to 6: SRV records of the server name itself, else port 8448.
	return r.srv(ctx, host), nil
}

// fixed is a destination needing no further lookups (beyond A/AAAA).
func fixed(host, port, hostHeader string) Destination {
	if port == "" {
		port = defaultFederationPort
	}
	return Destination{Addrs: []string{net.JoinHostPort(host, port)}, Host: hostHeader, TLSName: host}
}

// srv looks up _matrix-fed._tcp, then the deprecated _matrix._tcp, and
// falls back to port 8448. The certificate must be valid for host itself,
// never for the SRV target: DNS is not authenticated, TLS is.
func (r *Resolver) srv(ctx context.Context, host string) Destination {
	d := Destination{Host: host, TLSName: host}
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.dns.LookupSRV(ctx, service, "tcp", host)
		if err != nil {
			continue
		}
		for _, rec := range records {
			target := strings.TrimSuffix(rec.Target, ".")
			if target == "" { // "." means: no such service here
				continue
			}
			d.Addrs = append(d.Addrs, net.JoinHostPort(target, strconv.Itoa(int(rec.Port))))
		}
		if len(d.Addrs) > 0 {
			return d
		}
	}
	d.Addrs = []string{net.JoinHostPort(host, defaultFederationPort)}
	return d
}

// wellKnown returns host's delegated server name, from the cache when
// fresh. Any failure — unreachable, non-200, bad JSON, an invalid m.server —
// reports false, which sends discovery on to SRV records.
func (r *Resolver) wellKnown(ctx context.Context, host string) (string, bool) {
	for {
		now := r.now()
		r.mu.Lock()
		e, ok := r.cache[host]
		if ok && now.Before(e.expires) {
			r.mu.Unlock()
			return e.delegated, e.delegated != ""
		}
		// One fetch per host at a time: the others wait for its result.
		wait, busy := r.inflight[host]
		if !busy {
			done := make(chan struct{})
			r.inflight[host] = done
			r.mu.Unlock()
			defer func() {
				r.mu.Lock()
				delete(r.inflight, host)
				r.mu.Unlock()
				close(done)
			}()
			return r.refreshWellKnown(ctx, host, e, now)
		}
		r.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", false
		}
	}
}

// refreshWellKnown fetches host's .well-known and caches the outcome; e is
// the expired entry (zero if none), whose failure count sets the backoff.
func (r *Resolver) refreshWellKnown(ctx context.Context, host string, e wellKnownEntry, now time.Time) (string, bool) {
	delegated, ttl, err := r.fetchWellKnown(ctx, host)
	if err != nil {
		failures := e.failures + 1
		if e.delegated != "" {
			failures = 1
		}
		ttl = min(wellKnownErrFirst<<min(failures-1, 10), wellKnownErrMax)
		e = wellKnownEntry{expires: now.Add(ttl), failures: failures}
	} else {
		e = wellKnownEntry{delegated: delegated, expires: now.Add(ttl)}
	}
	if ctx.Err() == nil { // a cancelled caller says nothing about the server
		r.store(host, e, now)
	}
	return e.delegated, e.delegated != ""
}

// store caches e, keeping the cache bounded: expired entries go first, then
// arbitrary ones.
func (r *Resolver) store(host string, e wellKnownEntry, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= wellKnownMaxEntries {
		for h, old := range r.cache {
			if now.After(old.expires) {
				delete(r.cache, h)
			}
		}
		for h := range r.cache {
			if len(r.cache) < wellKnownMaxEntries {
				break
			}
			delete(r.cache, h)
		}
	}
	r.cache[host] = e
}

func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("well-known: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBody+1))
	if err != nil {
		return "", 0, err
	}
	if len(body) > wellKnownMaxBody {
		return "", 0, errors.New("well-known: response too large")
	}
	// The spec says to parse the body as JSON whatever its Content-Type.
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", 0, fmt.Errorf("well-known: %w", err)
	}
	if doc.Server == nil || !id.ValidServerName(*doc.Server) {
		return "", 0, errors.New("well-known: m.server is missing or not a server name")
	}
	return *doc.Server, cacheTTL(resp.Header, r.now()), nil
}

// cacheTTL reads how long a response may be cached from Cache-Control
// (max-age, no-store, no-cache) or Expires, bounded to
// [wellKnownMinTTL, wellKnownMaxTTL]. The floor keeps a server that forbids
// caching from costing an extra request on every federation request.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl := wellKnownDefaultTTL
	found := false
	for _, directive := range strings.Split(h.Get("Cache-Control"), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			ttl, found = 0, true
		case "max-age":
			if secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && secs >= 0 {
				ttl, found = time.Duration(min(secs, int64(wellKnownMaxTTL/time.Second)))*time.Second, true
			}
		}
		if found && ttl == 0 {
			break
		}
	}
	if !found {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			ttl = exp.Sub(now)
		}
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}
