package homeserver_test

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
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/event"
	"plaza/homeserver/federation"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
)

// fedCA is a test certificate authority: every federating test server
// gets a certificate for 127.0.0.1 from it, and trusts it.
type fedCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
}

func newFedCA(t *testing.T) *fedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Plaza federation test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fedCA{cert: cert, key: key, pemPath: path}
}

func (ca *fedCA) leaf(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "plaza test server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fedServer is a homeserver named after its federation listener
// ("127.0.0.1:port"), with its client API on another port.
type fedServer struct {
	*testServer
	name string
	ca   *fedCA
	fs   *http.Server
}

func newFedServer(t *testing.T, ca *fedCA) *fedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := ln.Addr().String()
	pool := storagetest.NewDB(t, storage.Migrations())
	cfg := homeserver.Config{ServerName: name, DataDir: t.TempDir(), Registration: "open", BcryptCost: bcrypt.MinCost,
		FederationCAFile: ca.pemPath, FederationAllowPrivate: true}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	f := &fedServer{testServer: &testServer{t: t, hs: hs}, name: name, ca: ca}
	f.serve(ln)
	ts := httptest.NewServer(hs.Handler())
	f.URL = ts.URL
	t.Cleanup(func() {
		ts.Close()
		f.stop()
		hs.Federation.Close()
	})
	return f
}

func (f *fedServer) serve(ln net.Listener) {
	f.fs = &http.Server{Handler: f.hs.FederationHandler(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{f.ca.leaf(f.t)}}}
	go func() { _ = f.fs.ServeTLS(ln, "", "") }()
}

// stop takes the federation listener down: the server is unreachable.
func (f *fedServer) stop() { _ = f.fs.Close() }

// restart brings the federation listener back on the same address.
func (f *fedServer) restart() {
	f.t.Helper()
	ln, err := net.Listen("tcp", f.name)
	if err != nil {
		f.t.Fatal(err)
	}
	f.serve(ln)
}

// waitFor polls sync until cond holds for the room's timeline bodies; the
// deadline only ends a test that would otherwise hang.
func waitFor(t *testing.T, c *client, roomID string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil)
		chunk, _ := r.Body["chunk"].([]any)
		var got []string
		for i := len(chunk) - 1; i >= 0; i-- {
			ev, _ := chunk[i].(map[string]any)
			if c, ok := ev["content"].(map[string]any); ok {
				if b, ok := c["body"].(string); ok {
					got = append(got, b)
				}
			}
		}
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("room %s never got there; it has %q", roomID, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFederationJoinByAliasAndTalk(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "lobby"}).str("room_id")
	alice.send(roomID, text("before bob"))

	alias := "#lobby:" + a.name
	r := bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{})
	if r.str("room_id") != roomID {
		t.Fatalf("joined %s, want %s", r.str("room_id"), roomID)
	}
	// bob's server has the room now, with both members joined.
	members := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
	joined, _ := members.Body["joined"].(map[string]any)
	if _, ok := joined[alice.UserID]; !ok || joined[bob.UserID] == nil {
		t.Fatalf("joined members on bob's server: %s", members.Raw)
	}
	// History from before bob's server joined comes by backfill.
	hist := waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "before bob") })
	if countOf(hist, "before bob") != 1 {
		t.Fatalf("backfilled history: %q", hist)
	}
	bob.send(roomID, text("hello from b"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "hello from b") })
	alice.send(roomID, text("hello from a"))
	got := waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "hello from a") })
	if !slices.Contains(got, "hello from b") {
		t.Fatalf("bob sees %q", got)
	}

	// Edits, threads and redactions cross too.
	root := bob.send(roomID, text("thread root"))
	bob.send(roomID, map[string]any{"msgtype": "m.text", "body": "* fixed", "m.new_content": map[string]any{"msgtype": "m.text", "body": "fixed"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
	alice.send(roomID, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	doomed := alice.send(roomID, text("to be redacted"))
	waitFor(t, bob, roomID, func(got []string) bool {
		return slices.Contains(got, "to be redacted") && slices.Contains(got, "in thread")
	})
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(doomed)+"/r1", map[string]any{})
	waitFor(t, bob, roomID, func(got []string) bool { return !slices.Contains(got, "to be redacted") })
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "* fixed") })
	// An event alice's server never received may exist on bob's: her
	// redaction of it goes out all the same.
	unseen := alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape("$neverseenhere")+"/r2", map[string]any{}).str("event_id")
	deadline0 := time.Now().Add(60 * time.Second)
	for {
		if se, err := b.hs.DB.EventByID(context.Background(), unseen); err == nil && se.StreamPos != 0 {
			break
		}
		if time.Now().After(deadline0) {
			t.Fatal("the redaction of an unseen event never reached b")
		}
		time.Sleep(100 * time.Millisecond)
	}
	threads := bob.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/threads", nil)
	if !strings.Contains(string(threads.Raw), root) {
		t.Fatalf("bob's server does not list the thread: %s", threads.Raw)
	}
	rel := alice.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/relations/"+url.PathEscape(root)+"/m.replace", nil)
	if !strings.Contains(string(rel.Raw), "fixed") {
		t.Fatalf("alice's server does not relate the edit: %s", rel.Raw)
	}

	// bob leaves (b has nobody left in the room), alice talks on, bob
	// comes back: b joins afresh through a and catches up.
	bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, _ := a.hs.Rooms.Membership(context.Background(), roomID, bob.UserID); m == "leave" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's leave never reached a")
		}
		time.Sleep(100 * time.Millisecond)
	}
	alice.send(roomID, text("while bob was away"))
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "while bob was away") })
	bob.send(roomID, text("back"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "back") })
}

// forge builds an event of bob's on top of a's view of the room, signed as
// server name with key (b's real key, or another to forge).
func forge(t *testing.T, a *fedServer, roomID, sender, typ string, stateKey *string, content string, name string, key signing.Key, known *storage.DB, prevs ...string) *event.Event {
	t.Helper()
	ctx := context.Background()
	v, err := a.hs.Rooms.Version(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(prevs) == 0 {
		latest, err := a.hs.Rooms.LatestEventID(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		prevs = []string{latest}
	}
	var depth int64
	for _, p := range prevs {
		se, err := a.hs.DB.EventByID(ctx, p)
		if err == nil {
			depth = max(depth, se.Event.Depth())
		}
		if known != nil {
			if se, err := known.EventByID(ctx, p); err == nil {
				depth = max(depth, se.Event.Depth())
			}
		}
	}
	var authIDs []string
	for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", sender}} {
		if ev, _ := a.hs.Rooms.StateEvent(ctx, roomID, k[0], k[1]); ev != nil && (k[0] != "m.room.create" || !v.RoomIDFromCreate) {
			authIDs = append(authIDs, ev.ID())
		}
	}
	p := event.Proto{Type: typ, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: []byte(content),
		PrevEvents: prevs, AuthEvents: authIDs, Depth: depth + 1, OriginServerTS: time.Now().UnixMilli()}
	ev, err := p.Build(v, name, key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// sendTxn sends a transaction from b to a over real federation.
func sendTxn(t *testing.T, b, a *fedServer, body map[string]any) (map[string]any, error) {
	t.Helper()
	var out map[string]any
	err := b.hs.Federation.Client.DoJSON(context.Background(), a.name, "PUT",
		"/_matrix/federation/v1/send/"+url.PathEscape(fmt.Sprintf("t%d", time.Now().UnixNano())), body, &out, true)
	return out, err
}

func pduResult(t *testing.T, out map[string]any, eventID string) string {
	t.Helper()
	pdus, _ := out["pdus"].(map[string]any)
	res, ok := pdus[eventID].(map[string]any)
	if !ok {
		t.Fatalf("no result for %s in %v", eventID, out)
	}
	e, _ := res["error"].(string)
	return e
}

func TestFederationInboundChecks(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	// Nothing b's server does by itself may interfere from here on.
	b.hs.Federation.Sender.Stop()
	ctx := context.Background()
	msg := `{"msgtype":"m.text","body":"%s"}`
	stored := func(id string) *storage.StoredEvent {
		se, err := a.hs.DB.EventByID(ctx, id)
		if err != nil {
			return nil
		}
		return se
	}

	// A good event is accepted.
	good := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(msg, "good"), b.name, b.hs.Key, nil)
	out, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{good.JSON()}})
	if err != nil || pduResult(t, out, good.ID()) != "" {
		t.Fatalf("good event: %v %v", out, err)
	}
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "good") })

	// Signed with a key that is not b's: refused, not stored.
	other, _ := signing.GenerateKey()
	other.ID = b.hs.Key.ID
	bad := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(msg, "forged"), b.name, other, nil)
	out, err = sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{bad.JSON()}})
	if err != nil {
		t.Fatal(err)
	}
	if pduResult(t, out, bad.ID()) == "" || stored(bad.ID()) != nil {
		t.Fatalf("forged signature accepted: %v", out)
	}

	// An event for a's user, signed only by b: refused.
	spoof := forge(t, a, roomID, alice.UserID, "m.room.message", nil, fmt.Sprintf(msg, "spoof"), b.name, b.hs.Key, nil)
	out, _ = sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{spoof.JSON()}})
	if pduResult(t, out, spoof.ID()) == "" || stored(spoof.ID()) != nil {
		t.Fatalf("spoofed sender accepted: %v", out)
	}

	// bob (power 0) changing the power levels fails auth: stored as
	// rejected (processed, so answered without error, as Synapse does),
	// never in the timeline or the state.
	empty := ""
	pl := forge(t, a, roomID, bob.UserID, "m.room.power_levels", &empty, `{"users":{"`+bob.UserID+`":100}}`, b.name, b.hs.Key, nil)
	out, _ = sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{pl.JSON()}})
	pduResult(t, out, pl.ID())
	if se := stored(pl.ID()); se == nil || !se.Rejected {
		t.Fatalf("rejected event stored as %+v", se)
	}
	if cur, _ := a.hs.Rooms.StateEvent(ctx, roomID, "m.room.power_levels", ""); cur.ID() == pl.ID() {
		t.Fatal("rejected power levels became current state")
	}

	// A content hash mismatch: the event is kept redacted.
	tampered := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(msg, "original"), b.name, b.hs.Key, nil)
	var m map[string]any
	_ = json.Unmarshal(tampered.JSON(), &m)
	m["content"] = map[string]any{"msgtype": "m.text", "body": "tampered"}
	raw, _ := json.Marshal(m)
	out, _ = sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{raw}})
	for id := range out["pdus"].(map[string]any) {
		if se := stored(id); se != nil && strings.Contains(string(se.Event.Content()), "tampered") {
			t.Fatal("tampered content stored")
		}
	}

	// Transaction limits and origin.
	many := make([]json.RawMessage, 51)
	for i := range many {
		many[i] = good.JSON()
	}
	_, err = sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": many})
	if re := (*federation.RemoteError)(nil); !errors.As(err, &re) || re.Status != 413 || re.ErrCode != "M_TOO_LARGE" {
		t.Fatalf("51 PDUs: %v", err)
	}
	_, err = sendTxn(t, b, a, map[string]any{"origin": a.name, "pdus": []json.RawMessage{}})
	if re := (*federation.RemoteError)(nil); !errors.As(err, &re) || re.Status != 403 {
		t.Fatalf("wrong origin: %v", err)
	}
	got := waitFor(t, alice, roomID, func([]string) bool { return true })
	for _, body := range got {
		if body == "forged" || body == "spoof" || body == "tampered" {
			t.Fatalf("timeline has %q: %q", body, got)
		}
	}
}

func TestFederationFillsGaps(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	b.hs.Federation.Sender.Stop()
	ctx := context.Background()
	// Three events of bob's, chained; b has them all, a gets only the last.
	var chain []*event.Event
	prev := ""
	for i := range 3 {
		var prevs []string
		if prev != "" {
			prevs = []string{prev}
		}
		ev := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"gap %d"}`, i), b.name, b.hs.Key, b.hs.DB, prevs...)
		if _, err := b.hs.Rooms.Receive(ctx, b.name, roomID, ev.JSON()); err != nil {
			t.Fatal(err)
		}
		chain = append(chain, ev)
		prev = ev.ID()
	}
	out, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{chain[2].JSON()}})
	if err != nil || pduResult(t, out, chain[2].ID()) != "" {
		t.Fatalf("%v %v", out, err)
	}
	got := waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "gap 2") })
	if i0, i1 := slices.Index(got, "gap 0"), slices.Index(got, "gap 1"); i0 < 0 || i1 < i0 || slices.Index(got, "gap 2") < i1 {
		t.Fatalf("a's timeline: %q", got)
	}
}

// currentState is a room's current state on one server, as type|key → ID.
func currentState(t *testing.T, s *fedServer, roomID string) map[string]string {
	t.Helper()
	evs, err := s.hs.Rooms.CurrentState(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range evs {
		out[e.Type()+"|"+*e.StateKey()] = e.ID()
	}
	return out
}

func TestFederationCatchUpAndBanWhileAway(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	eve := b.register("eve")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	eve.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	waitFor(t, alice, roomID, func([]string) bool {
		m, _ := a.hs.Rooms.Membership(context.Background(), roomID, eve.UserID)
		return m == "join"
	})

	// b goes away. Meanwhile alice talks and bans eve; on b, bob talks
	// and eve (not knowing she is banned) too.
	b.stop()
	for i := range 3 {
		alice.send(roomID, text(fmt.Sprintf("a%d", i)))
	}
	alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/ban", map[string]any{"user_id": eve.UserID})
	bob.send(roomID, text("b0"))
	eve.send(roomID, text("from banned eve"))
	b.restart()
	bob.send(roomID, text("b1")) // a hears from b again and delivers what waited

	want := []string{"a0", "a1", "a2", "b0", "b1"}
	has := func(got []string) bool {
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}
	waitFor(t, alice, roomID, has)
	waitFor(t, bob, roomID, has)
	// The ban holds on both servers, and eve's message sent after it is
	// not in a's timeline.
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mb, _ := b.hs.Rooms.Membership(ctx, roomID, eve.UserID)
		if mb == "ban" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eve is %q on b", mb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ma, _ := a.hs.Rooms.Membership(ctx, roomID, eve.UserID); ma != "ban" {
		t.Fatalf("eve is %q on a", ma)
	}
	for _, body := range waitFor(t, alice, roomID, func([]string) bool { return true }) {
		if body == "from banned eve" {
			t.Fatal("a shows the banned user's message")
		}
	}
	// One more message each way merges the forks; then both servers hold
	// the same state.
	alice.send(roomID, text("a-final"))
	bob.send(roomID, text("b-final"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "b-final") })
	waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "a-final") })
	sa, sb := currentState(t, a, roomID), currentState(t, b, roomID)
	for k, v := range sa {
		if sb[k] != v {
			t.Errorf("state %s: a has %s, b has %s", k, v, sb[k])
		}
	}
	if len(sa) != len(sb) {
		t.Errorf("a has %d state entries, b %d", len(sa), len(sb))
	}
	// No duplicates.
	got := waitFor(t, bob, roomID, func([]string) bool { return true })
	for _, w := range want {
		if n := countOf(got, w); n != 1 {
			t.Errorf("bob sees %q %d times", w, n)
		}
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// invitedTo waits until the user's sync shows an invite to the room, and
// returns its invite_state events.
func invitedTo(t *testing.T, c *client, roomID string) []any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.sync("", 0)
		rooms, _ := r.Body["rooms"].(map[string]any)
		inv, _ := rooms["invite"].(map[string]any)
		if room, ok := inv[roomID].(map[string]any); ok {
			st, _ := room["invite_state"].(map[string]any)
			evs, _ := st["events"].([]any)
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw the invite to %s: %s", c.UserID, roomID, r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFederationInvites(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, dave := a.register("alice"), a.register("dave")
	bob, carol := b.register("bob"), b.register("carol")
	ctx := context.Background()
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "secret plans"}).str("room_id")
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)

	// A remote user cannot join an invite-only room uninvited.
	bob.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})

	// alice invites bob: b countersigns, bob sees the invite with the
	// room's name, and joins through the inviting server.
	// (a reason: content that redaction strips, so the countersignature
	// must cover the redacted form)
	alice.must("POST", path+"/invite", map[string]any{"user_id": bob.UserID, "reason": "join us"})
	if m, _ := a.hs.Rooms.Membership(ctx, roomID, bob.UserID); m != "invite" {
		t.Fatalf("bob is %q on a", m)
	}
	st := invitedTo(t, bob, roomID)
	if !strings.Contains(fmt.Sprint(st), "secret plans") {
		t.Fatalf("invite state: %v", st)
	}
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	bob.send(roomID, text("thanks for the invite"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "thanks for the invite") })

	// carol rejects hers: the leave goes to a through make_leave/send_leave.
	alice.must("POST", path+"/invite", map[string]any{"user_id": carol.UserID})
	invitedTo(t, carol, roomID)
	// carol's server is in the room now (bob), so her rejection is a
	// local leave that b sends to a; either way a must see it.
	carol.must("POST", path+"/leave", map[string]any{})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, _ := a.hs.Rooms.Membership(ctx, roomID, carol.UserID); m == "leave" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("carol's rejection never reached a")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// bob (on b) invites dave (on a): a countersigns, and dave joins.
	bob.must("POST", path+"/invite", map[string]any{"user_id": dave.UserID})
	invitedTo(t, dave, roomID)
	dave.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	dave.send(roomID, text("dave here"))
	waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "dave here") })
}

func TestFederationRejectInviteToUnknownRoom(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	carol := b.register("carol")
	ctx := context.Background()
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).str("room_id")
	alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": carol.UserID})
	invitedTo(t, carol, roomID)
	since := carol.sync("", 0).str("next_batch")
	carol.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
	// Her next sync tells her she left.
	inc := carol.sync(since, 0)
	if rooms, _ := inc.Body["rooms"].(map[string]any); fmt.Sprint(rooms["leave"]) == "map[]" || rooms["leave"] == nil {
		t.Fatalf("incremental sync after rejecting: %s", inc.Raw)
	}
	if m, _ := a.hs.Rooms.Membership(ctx, roomID, carol.UserID); m != "leave" {
		t.Fatalf("carol is %q on a", m)
	}
	// carol's sync no longer lists the invite.
	r := carol.sync("", 0)
	rooms, _ := r.Body["rooms"].(map[string]any)
	if inv, _ := rooms["invite"].(map[string]any); inv[roomID] != nil {
		t.Fatalf("invite still listed: %s", r.Raw)
	}
}

func TestFederationKnockAndRestrictedJoin(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob, carol := b.register("bob"), b.register("carol")
	ctx := context.Background()
	via := "?server_name=" + url.QueryEscape(a.name)

	// Knock: bob knocks from b, sees the knock in his sync, alice invites
	// him in.
	knockRoom := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "knock here",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/knock/"+url.PathEscape(knockRoom)+via, map[string]any{"reason": "let me in"})
	if m, _ := a.hs.Rooms.Membership(ctx, knockRoom, bob.UserID); m != "knock" {
		t.Fatalf("bob is %q on a", m)
	}
	r := bob.sync("", 0)
	if rooms, _ := r.Body["rooms"].(map[string]any); !strings.Contains(fmt.Sprint(rooms["knock"]), "knock here") {
		t.Fatalf("bob's sync has no knock: %s", r.Raw)
	}
	alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(knockRoom)+"/invite", map[string]any{"user_id": bob.UserID})
	invitedTo(t, bob, knockRoom)
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(knockRoom), map[string]any{})
	if m, _ := a.hs.Rooms.Membership(ctx, knockRoom, bob.UserID); m != "join" {
		t.Fatalf("bob is %q on a after joining", m)
	}

	// Restricted: members of the space may join the room; a's alice
	// authorises bob's join; carol, not in the space, is refused.
	space := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	restricted := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}}}}}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(space)+via, map[string]any{})
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(restricted)+via, map[string]any{})
	join, err := a.hs.Rooms.StateEvent(ctx, restricted, "m.room.member", bob.UserID)
	if err != nil || join == nil || !strings.Contains(string(join.Content()), `"join_authorised_via_users_server":"`+alice.UserID+`"`) {
		t.Fatalf("bob's join on a: %v %v", join, err)
	}
	carol.fails(403, "M_FORBIDDEN", "POST", "/_matrix/client/v3/join/"+url.PathEscape(restricted)+via, map[string]any{})
	bob.send(restricted, text("in by the space"))
	waitFor(t, alice, restricted, func(got []string) bool { return slices.Contains(got, "in by the space") })
}

// A gap wider than get_missing_events fills: the oldest event fetched gets
// its state from /state_ids, and everything after it is placed.
func TestFederationWideGapTakesState(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	b.hs.Federation.Sender.Stop()
	ctx := context.Background()
	prev := ""
	var last *event.Event
	for i := range 30 {
		var prevs []string
		if prev != "" {
			prevs = []string{prev}
		}
		ev := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"wide %d"}`, i), b.name, b.hs.Key, b.hs.DB, prevs...)
		if _, err := b.hs.Rooms.Receive(ctx, b.name, roomID, ev.JSON()); err != nil {
			t.Fatal(err)
		}
		prev, last = ev.ID(), ev
	}
	out, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{last.JSON()}})
	if err != nil || pduResult(t, out, last.ID()) != "" {
		t.Fatalf("%v %v", out, err)
	}
	got := waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "wide 29") })
	if !slices.Contains(got, "wide 10") {
		t.Fatalf("the fetched stretch is missing: %q", got)
	}
	// The room goes on: alice's next message follows bob's last.
	alice.send(roomID, text("after the gap"))
	if latest, _ := a.hs.Rooms.LatestEventID(ctx, roomID); latest == last.ID() {
		t.Fatal("alice's message did not become the extremity")
	}
}

func TestFederationACLAndRateLimit(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	bob := b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	b.hs.Federation.Sender.Stop()
	host, _, _ := net.SplitHostPort(b.name)
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.server_acl/", map[string]any{
		"allow": []string{"*"}, "deny": []string{host}, "allow_ip_literals": true})
	ev := forge(t, a, roomID, bob.UserID, "m.room.message", nil, `{"msgtype":"m.text","body":"denied"}`, b.name, b.hs.Key, nil)
	out, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{ev.JSON()}})
	if err != nil || pduResult(t, out, ev.ID()) == "" {
		t.Fatalf("a PDU from a denied server: %v %v", out, err)
	}
	if se, err := a.hs.DB.EventByID(context.Background(), ev.ID()); err == nil {
		t.Fatalf("stored: %+v", se)
	}
	var ignored json.RawMessage
	err = b.hs.Federation.Client.DoJSON(context.Background(), a.name, "GET",
		"/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+"?event_id="+url.QueryEscape(ev.ID()), nil, &ignored, true)
	if re := (*federation.RemoteError)(nil); !errors.As(err, &re) || re.Status != 403 {
		t.Fatalf("state_ids from a denied server: %v", err)
	}

	// A flood of transactions from one server is slowed down.
	limited := false
	for i := 0; i < 150 && !limited; i++ {
		_, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": []json.RawMessage{}})
		var re *federation.RemoteError
		limited = errors.As(err, &re) && re.Status == 429 && re.ErrCode == "M_LIMIT_EXCEEDED"
	}
	if !limited {
		t.Fatal("150 transactions in a row were never rate limited")
	}
}

// Users of two servers join a room on a third by alias and talk both ways;
// each server hears of the other's join through the room's server.
func TestFederationThreeServers(t *testing.T) {
	ca := newFedCA(t)
	a, b, c := newFedServer(t, ca), newFedServer(t, ca), newFedServer(t, ca)
	alice, bob, carol := a.register("alice"), b.register("bob"), c.register("carol")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "town"}).str("room_id")
	alias := url.PathEscape("#town:" + a.name)
	bob.must("POST", "/_matrix/client/v3/join/"+alias, map[string]any{})
	carol.must("POST", "/_matrix/client/v3/join/"+alias, map[string]any{})
	bob.send(roomID, text("bob says hi"))
	carol.send(roomID, text("carol says hi"))
	alice.send(roomID, text("alice says hi"))
	all := func(got []string) bool {
		return slices.Contains(got, "bob says hi") && slices.Contains(got, "carol says hi") && slices.Contains(got, "alice says hi")
	}
	waitFor(t, alice, roomID, all)
	// Bob's message may leave his server before it hears of Carol's join,
	// so it reaches only the room's server, which does not forward other
	// servers' events. Alice's next message has it among its prev events,
	// and Carol's server then fetches it (get_missing_events): the fork
	// closes as it does between any Matrix servers.
	alice.send(roomID, text("alice again"))
	everything := func(got []string) bool { return all(got) && slices.Contains(got, "alice again") }
	waitFor(t, bob, roomID, everything)
	waitFor(t, carol, roomID, everything)
	ctx := context.Background()
	for _, s := range []*fedServer{a, b, c} {
		for _, u := range []string{alice.UserID, bob.UserID, carol.UserID} {
			if m, _ := s.hs.Rooms.Membership(ctx, roomID, u); m != "join" {
				t.Errorf("%s sees %s as %q", s.name, u, m)
			}
		}
	}
}

// Rooms of older versions (IDs with a server name, create events among the
// auth events) federate too; the room ID's server is enough to join by.
func TestFederationRoomVersion10(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": "10"}).str("room_id")
	if !strings.HasSuffix(roomID, ":"+a.name) {
		t.Fatalf("room ID %s", roomID)
	}
	bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
	bob.send(roomID, text("v10 from b"))
	alice.send(roomID, text("v10 from a"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "v10 from b") })
	waitFor(t, bob, roomID, func(got []string) bool { return slices.Contains(got, "v10 from a") })
}

// Malformed and unauthorised requests to the join, invite and read
// endpoints get the spec's errors.
func TestFederationEndpointErrors(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice := a.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	ctx := context.Background()
	call := func(method, path string, body any) error {
		var ignored json.RawMessage
		return b.hs.Federation.Client.DoJSON(ctx, a.name, method, path, body, &ignored, true)
	}
	want := func(err error, status int, code string) {
		t.Helper()
		var re *federation.RemoteError
		if !errors.As(err, &re) || re.Status != status || re.ErrCode != code {
			t.Fatalf("got %v, want %d %s", err, status, code)
		}
	}
	room := url.PathEscape(roomID)
	bobID := url.PathEscape("@bob:" + b.name)
	want(call("GET", "/_matrix/federation/v1/make_join/"+room+"/"+bobID+"?ver=1", nil), 400, "M_INCOMPATIBLE_ROOM_VERSION")
	want(call("GET", "/_matrix/federation/v1/make_join/"+room+"/"+url.PathEscape(alice.UserID)+"?ver=12", nil), 403, "M_FORBIDDEN")
	want(call("GET", "/_matrix/federation/v1/make_join/"+url.PathEscape("!nope:"+a.name)+"/"+bobID+"?ver=12", nil), 404, "M_NOT_FOUND")
	want(call("PUT", "/_matrix/federation/v2/send_join/"+room+"/$x", []byte(`{"type":"m.room.member"}`)), 400, "M_BAD_JSON")
	want(call("PUT", "/_matrix/federation/v1/send_join/"+room+"/$x", []byte(`{"type":"m.room.member"}`)), 400, "M_BAD_JSON")
	want(call("PUT", "/_matrix/federation/v1/send_leave/"+room+"/$x", []byte(`{"type":"m.room.member"}`)), 400, "M_BAD_JSON")
	want(call("GET", "/_matrix/federation/v1/event/"+url.PathEscape("$unknown"), nil), 404, "M_NOT_FOUND")
	// b has nobody in the room: it may not read it.
	latest, _ := a.hs.Rooms.LatestEventID(ctx, roomID)
	want(call("GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(latest), nil), 403, "M_FORBIDDEN")
	want(call("GET", "/_matrix/federation/v1/event/"+url.PathEscape(latest), nil), 403, "M_FORBIDDEN")
	want(call("POST", "/_matrix/federation/v1/get_missing_events/"+room, map[string]any{"latest_events": "x"}), 400, "M_BAD_JSON")
	want(call("GET", "/_matrix/federation/v1/backfill/"+room+"?limit=x", nil), 400, "M_INVALID_PARAM")
	want(call("PUT", "/_matrix/federation/v2/invite/"+room+"/$x", map[string]any{"room_version": "0", "event": map[string]any{}}), 400, "M_INCOMPATIBLE_ROOM_VERSION")
	want(call("PUT", "/_matrix/federation/v2/invite/"+room+"/$x", map[string]any{"room_version": "12", "event": map[string]any{}}), 400, "M_BAD_JSON")
	// After the failures the room is as it was.
	if now, _ := a.hs.Rooms.LatestEventID(ctx, roomID); now != latest {
		t.Fatal("a failed request changed the room")
	}
}

// A direct chat created with a remote invitee: the invite goes over
// federation once the room exists.
func TestFederationDirectChatWithRemoteInvitee(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "is_direct": true,
		"invite": []string{bob.UserID}}).str("room_id")
	invitedTo(t, bob, roomID)
	inv, err := a.hs.Rooms.StateEvent(context.Background(), roomID, "m.room.member", bob.UserID)
	if err != nil || inv == nil || !strings.Contains(string(inv.Content()), `"is_direct":true`) {
		t.Fatalf("bob's invite on a: %v %v", inv, err)
	}
	if sigs, _ := inv.Signatures(); sigs[b.name] == nil {
		t.Fatal("the invite is not countersigned by bob's server")
	}
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	bob.send(roomID, text("dm reply"))
	waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, "dm reply") })
}

// Events a server may not see by the room's history visibility come
// redacted from get_missing_events and /event; /event_auth of a version 12
// room includes its create event.
func TestFederationReadsFollowHistoryVisibility(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	ctx := context.Background()
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.history_visibility/", map[string]any{"history_visibility": "joined"})
	secret := alice.send(roomID, text("before bob joined"))
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
	after := alice.send(roomID, text("after bob joined"))
	create, _ := a.hs.Rooms.StateEvent(ctx, roomID, "m.room.create", "")
	join, _ := a.hs.Rooms.StateEvent(ctx, roomID, "m.room.member", bob.UserID)

	var missing struct {
		Events []map[string]any `json:"events"`
	}
	if err := b.hs.Federation.Client.DoJSON(ctx, a.name, "POST", "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID),
		map[string]any{"earliest_events": []string{create.ID()}, "latest_events": []string{after}, "limit": 20}, &missing, true); err != nil {
		t.Fatal(err)
	}
	bodies := map[string]bool{}
	for _, e := range missing.Events {
		c, _ := e["content"].(map[string]any)
		if b, ok := c["body"].(string); ok {
			bodies[b] = true
		}
	}
	if bodies["before bob joined"] || len(missing.Events) < 3 {
		t.Fatalf("get_missing_events: %v", missing.Events)
	}
	var one struct {
		PDUs []map[string]any `json:"pdus"`
	}
	if err := b.hs.Federation.Client.DoJSON(ctx, a.name, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(secret), nil, &one, true); err != nil {
		t.Fatal(err)
	}
	if c, _ := one.PDUs[0]["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("/event of a hidden event: %v", one.PDUs[0])
	}
	var chain struct {
		AuthChain []map[string]any `json:"auth_chain"`
	}
	if err := b.hs.Federation.Client.DoJSON(ctx, a.name, "GET", "/_matrix/federation/v1/event_auth/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.ID()), nil, &chain, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(chain.AuthChain), "m.room.create") {
		t.Fatalf("event_auth without the create event: %v", chain.AuthChain)
	}
}

// Complement's TestUnbanViaInvite, in process: banned from a remote room,
// unbanned, invited again, and joining again.
func TestFederationUnbanViaInvite(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	roomID := bob.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	alice.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(b.name), map[string]any{})
	since := alice.sync("", 0).str("next_batch")
	bob.must("POST", path+"/ban", map[string]any{"user_id": alice.UserID})
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := alice.sync(since, 1000)
		rooms, _ := r.Body["rooms"].(map[string]any)
		if leave, _ := rooms["leave"].(map[string]any); leave[roomID] != nil && strings.Contains(string(r.Raw), `"membership":"ban"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's sync never showed the ban: %s", r.Raw)
		}
		since = r.str("next_batch")
	}
	bob.must("POST", path+"/unban", map[string]any{"user_id": alice.UserID})
	bob.must("POST", path+"/invite", map[string]any{"user_id": alice.UserID})
	invitedTo(t, alice, roomID)
	alice.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(b.name), map[string]any{})
	if m, _ := b.hs.Rooms.Membership(context.Background(), roomID, alice.UserID); m != "join" {
		t.Fatalf("alice is %q on b", m)
	}
}

// One transaction for two rooms: each room's PDUs are placed in order, the
// rooms side by side.
func TestFederationTransactionAcrossRooms(t *testing.T) {
	ca := newFedCA(t)
	a, b := newFedServer(t, ca), newFedServer(t, ca)
	alice, bob := a.register("alice"), b.register("bob")
	var rooms []string
	for range 2 {
		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).str("room_id")
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.name), map[string]any{})
		rooms = append(rooms, roomID)
	}
	b.hs.Federation.Sender.Stop()
	var pdus []json.RawMessage
	var ids []string
	for i, roomID := range rooms {
		first := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"r%d first"}`, i), b.name, b.hs.Key, nil)
		second := forge(t, a, roomID, bob.UserID, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"r%d second"}`, i), b.name, b.hs.Key, nil, first.ID())
		pdus = append(pdus, first.JSON(), second.JSON())
		ids = append(ids, first.ID(), second.ID())
	}
	out, err := sendTxn(t, b, a, map[string]any{"origin": b.name, "pdus": pdus})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if e := pduResult(t, out, id); e != "" {
			t.Fatalf("%s: %s", id, e)
		}
	}
	for i, roomID := range rooms {
		got := waitFor(t, alice, roomID, func(got []string) bool { return slices.Contains(got, fmt.Sprintf("r%d second", i)) })
		if slices.Index(got, fmt.Sprintf("r%d first", i)) > slices.Index(got, fmt.Sprintf("r%d second", i)) {
			t.Fatalf("room %d out of order: %q", i, got)
		}
	}
}
