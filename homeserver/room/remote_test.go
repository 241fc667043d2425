package room

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/signing"
	"plaza/homeserver/storage"
)

// keyList is a KeyVerifier over fixed keys.
type keyList map[string]signing.Key

func (k keyList) VerifyKey(_ context.Context, server, keyID string, _ time.Time, _ bool) (ed25519.PublicKey, error) {
	if key, ok := k[server]; ok && key.ID == keyID {
		return key.Public(), nil
	}
	return nil, errors.New("unknown key")
}

// fakeRemote is a Fetcher serving events it holds.
type fakeRemote struct {
	events map[string]*event.Event
	// states: the state before an event, for State.
	states map[string][]*event.Event
	asked  []string
}

func (f *fakeRemote) Event(_ context.Context, _, eventID string) (json.RawMessage, error) {
	f.asked = append(f.asked, "event "+eventID)
	if e := f.events[eventID]; e != nil {
		return e.JSON(), nil
	}
	return nil, errors.New("not found")
}

func (f *fakeRemote) MissingEvents(_ context.Context, _, _ string, earliest, latest []string, limit int) ([]json.RawMessage, error) {
	f.asked = append(f.asked, "missing")
	var out []json.RawMessage
	seen := map[string]bool{}
	for _, e := range earliest {
		seen[e] = true
	}
	var walk func(id string)
	walk = func(id string) {
		e := f.events[id]
		if e == nil || seen[id] || len(out) >= limit {
			return
		}
		seen[id] = true
		for _, p := range e.PrevEventIDs() {
			walk(p)
		}
		out = append(out, e.JSON())
	}
	for _, l := range latest {
		if e := f.events[l]; e != nil {
			for _, p := range e.PrevEventIDs() {
				walk(p)
			}
		}
	}
	return out, nil
}

func (f *fakeRemote) State(_ context.Context, _, _, eventID string) ([]json.RawMessage, []json.RawMessage, error) {
	f.asked = append(f.asked, "state")
	st, ok := f.states[eventID]
	if !ok {
		return nil, nil, errors.New("no state here")
	}
	var out []json.RawMessage
	for _, e := range st {
		out = append(out, e.JSON())
	}
	return out, nil, nil
}

const remoteServer = "remote.example"

type remoteRig struct {
	t      testing.TB
	s      *Service
	db     *storage.DB
	roomID string
	key    signing.Key
	fetch  *fakeRemote
}

func newRemoteRig(t testing.TB) *remoteRig {
	s, db := newService(t)
	roomID, _ := publicRoom(t, s, 0)
	rk, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRemote{events: map[string]*event.Event{}}
	s.SetFederation(keyList{remoteServer: rk, "example.org": s.key}, f)
	return &remoteRig{t: t, s: s, db: db, roomID: roomID, key: rk, fetch: f}
}

// build makes an event of a remote user on the given prevs (default: the
// room's extremities), with auth events from the room's current state.
func (g *remoteRig) build(sender, typ string, sk *string, content string, prevs ...string) *event.Event {
	g.t.Helper()
	ctx := context.Background()
	if prevs == nil {
		id, err := g.s.LatestEventID(ctx, g.roomID)
		if err != nil {
			g.t.Fatal(err)
		}
		prevs = []string{id}
	}
	var depth int64
	for _, p := range prevs {
		if se, err := g.db.EventByID(ctx, p); err == nil {
			depth = max(depth, se.Event.Depth())
		} else if e := g.fetch.events[p]; e != nil {
			depth = max(depth, e.Depth())
		}
	}
	skv := ""
	if sk != nil {
		skv = *sk
	}
	keys, err := auth.AuthEventKeys(event.MustVersion("12"), typ, skv, sender, []byte(content))
	if err != nil {
		g.t.Fatal(err)
	}
	var authIDs []string
	for _, k := range keys {
		if ev, _ := g.s.StateEvent(ctx, g.roomID, k.Type, k.StateKey); ev != nil && k.Type != event.TypeCreate {
			authIDs = append(authIDs, ev.ID())
		}
	}
	p := event.Proto{Type: typ, StateKey: sk, Sender: sender, RoomID: g.roomID, Content: json.RawMessage(content),
		PrevEvents: prevs, AuthEvents: authIDs, Depth: depth + 1, OriginServerTS: time.Now().UnixMilli()}
	ev, err := p.Build(event.MustVersion("12"), remoteServer, g.key)
	if err != nil {
		g.t.Fatal(err)
	}
	return ev
}

func (g *remoteRig) receive(ev *event.Event) error {
	_, err := g.s.Receive(context.Background(), remoteServer, g.roomID, ev.JSON())
	return err
}

func (g *remoteRig) stored(id string) *storage.StoredEvent {
	se, err := g.db.EventByID(context.Background(), id)
	if err != nil {
		return nil
	}
	return se
}

const remoteUser = "@r:" + remoteServer

func (g *remoteRig) join() *event.Event {
	g.t.Helper()
	j := g.build(remoteUser, event.TypeMember, strp(remoteUser), `{"membership":"join"}`)
	if err := g.receive(j); err != nil {
		g.t.Fatal(err)
	}
	return j
}

func TestReceiveAcceptsAndOrders(t *testing.T) {
	g := newRemoteRig(t)
	j := g.join()
	msg := g.build(remoteUser, "m.room.message", nil, `{"body":"hi"}`)
	if err := g.receive(msg); err != nil {
		t.Fatal(err)
	}
	se := g.stored(msg.ID())
	if se == nil || se.StreamPos == 0 || se.Rejected || se.SoftFailed {
		t.Fatalf("message stored as %+v", se)
	}
	if m, _ := g.s.Membership(context.Background(), g.roomID, remoteUser); m != "join" {
		t.Fatalf("membership %q", m)
	}
	if latest, _ := g.s.LatestEventID(context.Background(), g.roomID); latest != msg.ID() {
		t.Fatalf("extremity %s, want the message", latest)
	}
	// A duplicate changes nothing.
	if err := g.receive(msg); err != nil {
		t.Fatal(err)
	}
	if again := g.stored(msg.ID()); again.StreamPos != se.StreamPos {
		t.Fatal("duplicate got a new position")
	}
	servers, _ := g.s.Servers(context.Background(), g.roomID)
	if strings.Join(servers, ",") != "example.org,"+remoteServer {
		t.Fatalf("servers %v", servers)
	}
	_ = j
}

func TestReceiveRefusesBadSignatures(t *testing.T) {
	g := newRemoteRig(t)
	g.join()
	other, _ := signing.GenerateKey()
	other.ID = g.key.ID
	good := g.key
	g.key = other
	forged := g.build(remoteUser, "m.room.message", nil, `{"body":"forged"}`)
	g.key = good
	if err := g.receive(forged); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("forged: %v", err)
	}
	if g.stored(forged.ID()) != nil {
		t.Fatal("forged event stored")
	}
	// A remote server speaking for our users.
	spoof := g.build("@creator:example.org", "m.room.message", nil, `{"body":"spoof"}`)
	if err := g.receive(spoof); !errors.Is(err, ErrBadEvent) || g.stored(spoof.ID()) != nil {
		t.Fatalf("spoof: %v", err)
	}
}

func TestReceiveRedactsOnBadHash(t *testing.T) {
	g := newRemoteRig(t)
	g.join()
	msg := g.build(remoteUser, "m.room.message", nil, `{"body":"original"}`)
	var m map[string]any
	_ = json.Unmarshal(msg.JSON(), &m)
	m["content"] = map[string]any{"body": "tampered"}
	raw, _ := json.Marshal(m)
	id, err := g.s.Receive(context.Background(), remoteServer, g.roomID, raw)
	if err != nil {
		t.Fatal(err)
	}
	se := g.stored(id)
	if se == nil || string(se.Event.Content()) != "{}" {
		t.Fatalf("stored %v", se)
	}
}

func TestReceiveRejectsUnauthorised(t *testing.T) {
	g := newRemoteRig(t)
	// Not joined: a message fails auth against its auth events.
	msg := g.build(remoteUser, "m.room.message", nil, `{"body":"not a member"}`)
	before, _ := g.s.LatestEventID(context.Background(), g.roomID)
	if err := g.receive(msg); !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v", err)
	}
	if se := g.stored(msg.ID()); se == nil || !se.Rejected || se.StreamPos != 0 {
		t.Fatalf("stored as %+v", se)
	}
	if after, _ := g.s.LatestEventID(context.Background(), g.roomID); after != before {
		t.Fatal("a rejected event became an extremity")
	}
}

func TestReceiveSoftFailsAgainstCurrentState(t *testing.T) {
	g := newRemoteRig(t)
	ctx := context.Background()
	j := g.join()
	// The creator bans the remote user; the remote server, not knowing,
	// sends a message on top of the join.
	if _, err := g.s.Send(ctx, g.roomID, Request{Sender: "@creator:example.org", Type: event.TypeMember, StateKey: strp(remoteUser),
		Content: json.RawMessage(`{"membership":"ban"}`)}); err != nil {
		t.Fatal(err)
	}
	ban, _ := g.s.LatestEventID(ctx, g.roomID)
	msg := g.build(remoteUser, "m.room.message", nil, `{"body":"after the ban"}`, j.ID())
	if err := g.receive(msg); err != nil {
		t.Fatal(err)
	}
	se := g.stored(msg.ID())
	if se == nil || !se.SoftFailed || se.Rejected || se.StreamPos != 0 {
		t.Fatalf("stored as %+v", se)
	}
	if latest, _ := g.s.LatestEventID(ctx, g.roomID); latest != ban {
		t.Fatal("a soft-failed event became an extremity")
	}
	if m, _ := g.s.Membership(ctx, g.roomID, remoteUser); m != "ban" {
		t.Fatalf("membership %q", m)
	}
}

func TestReceiveFetchesMissingPrevs(t *testing.T) {
	g := newRemoteRig(t)
	g.join()
	e1 := g.build(remoteUser, "m.room.message", nil, `{"body":"1"}`)
	g.fetch.events[e1.ID()] = e1
	e2 := g.build(remoteUser, "m.room.message", nil, `{"body":"2"}`, e1.ID())
	g.fetch.events[e2.ID()] = e2
	e3 := g.build(remoteUser, "m.room.message", nil, `{"body":"3"}`, e2.ID())
	g.fetch.events[e3.ID()] = e3
	if err := g.receive(e3); err != nil {
		t.Fatal(err)
	}
	var pos []int64
	for _, e := range []*event.Event{e1, e2, e3} {
		se := g.stored(e.ID())
		if se == nil || se.StreamPos == 0 {
			t.Fatalf("%s not in the timeline: %+v", e.ID(), se)
		}
		pos = append(pos, se.StreamPos)
	}
	if pos[0] >= pos[1] || pos[1] >= pos[2] {
		t.Fatalf("positions %v not in DAG order", pos)
	}
	// An event whose gap cannot be filled, nor its state fetched, is not
	// stored.
	lost := g.build(remoteUser, "m.room.message", nil, `{"body":"lost"}`, "$nowhere")
	if err := g.receive(lost); !errors.Is(err, ErrMissingEvents) || g.stored(lost.ID()) != nil {
		t.Fatalf("unfillable gap: %v", err)
	}
}

// An event citing an auth event nobody can give us is stored rejected, so
// events building on it are rejected too rather than trusted.
func TestReceiveRejectsUnavailableAuthEvents(t *testing.T) {
	g := newRemoteRig(t)
	j := g.join()
	p := event.Proto{Type: "m.room.message", Sender: remoteUser, RoomID: g.roomID, Content: json.RawMessage(`{"body":"x"}`),
		PrevEvents: []string{j.ID()}, AuthEvents: append(slices.Clone(j.AuthEventIDs()), "$gone"), Depth: j.Depth() + 1, OriginServerTS: time.Now().UnixMilli()}
	ev, err := p.Build(event.MustVersion("12"), remoteServer, g.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.receive(ev); !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v", err)
	}
	if se := g.stored(ev.ID()); se == nil || !se.Rejected {
		t.Fatalf("stored as %+v", se)
	}
	if !slices.Contains(g.fetch.asked, "event $gone") {
		t.Fatalf("the auth event was not asked for: %v", g.fetch.asked)
	}
}

// A member sees the event that ends their membership (a leave, a kick, a
// ban), but nothing after it.
func TestVisibilityOfOwnLeave(t *testing.T) {
	v := &Visibility{userID: "@u:x", hvPos: []int64{1}, hv: []string{"joined"}, mem: []storage.MembershipChange{
		{StreamPos: 2, Membership: "join"}, {StreamPos: 5, Membership: "ban"}}}
	for pos, want := range map[int64]bool{1: false, 2: true, 4: true, 5: true, 6: false} {
		if got := v.CanSee(pos); got != want {
			t.Errorf("position %d: %v, want %v", pos, got, want)
		}
	}
	never := &Visibility{userID: "@u:x", hvPos: []int64{1}, hv: []string{"joined"}, mem: []storage.MembershipChange{{StreamPos: 3, Membership: "ban"}}}
	if never.CanSee(3) {
		t.Error("a ban of someone never joined is not theirs to see by this rule")
	}
}

// A backfilled event is stored without the state before it. That state
// must read as unknown: served to other servers as empty, or used as
// empty for an event built on it, it would reject honest events (it did,
// under load, in the three-server suite). The state is fetched instead.
func TestStateUnknownAfterBackfill(t *testing.T) {
	g := newRemoteRig(t)
	g.join()
	ctx := context.Background()
	before, err := g.s.CurrentState(ctx, g.roomID)
	if err != nil {
		t.Fatal(err)
	}
	old := g.build(remoteUser, "m.room.message", nil, `{"body":"from backfill"}`)
	r, err := g.s.load(ctx, g.roomID)
	if err != nil {
		t.Fatal(err)
	}
	row := *r.row
	if n, err := g.s.storeBackfill(ctx, remoteServer, r, &row, []json.RawMessage{old.JSON()}); err != nil || n != 1 {
		t.Fatalf("backfill stored %d: %v", n, err)
	}
	if se := g.stored(old.ID()); se == nil || se.StreamPos >= 0 {
		t.Fatalf("backfilled event stored as %+v", se)
	}
	if _, _, err := g.s.StateAt(ctx, g.roomID, old.ID()); !errors.Is(err, ErrUnknownEvent) {
		t.Fatalf("state at a backfilled event: %v, want ErrUnknownEvent", err)
	}

	g.fetch.states = map[string][]*event.Event{old.ID(): before}
	g.fetch.events[old.ID()] = old
	next := g.build(remoteUser, "m.room.message", nil, `{"body":"on top of it"}`, old.ID())
	if err := g.receive(next); err != nil {
		t.Fatalf("an event on a backfilled one: %v", err)
	}
	if se := g.stored(next.ID()); se == nil || se.Rejected || se.StreamPos <= 0 {
		t.Fatalf("stored as %+v", se)
	}
	if !slices.Contains(g.fetch.asked, "state") {
		t.Fatalf("the state at the backfilled event was not fetched: %v", g.fetch.asked)
	}
}

// BenchmarkReceiveRemote places a chain of remote messages one after the
// other, as a busy server's transactions bring them: the per-PDU cost of
// the receiving side (checks, state, one commit each).
func BenchmarkReceiveRemote(b *testing.B) {
	g := newRemoteRig(b)
	g.join()
	prev, err := g.s.LatestEventID(context.Background(), g.roomID)
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]*event.Event, b.N)
	for i := range evs {
		evs[i] = g.build(remoteUser, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i), prev)
		g.fetch.events[evs[i].ID()] = evs[i]
		prev = evs[i].ID()
	}
	b.ResetTimer()
	for _, ev := range evs {
		if err := g.receive(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// Events received under DeferDurability are in the timeline at once, and
// FlushWAL makes the write-ahead log durable past them (the answer to a
// federation transaction waits for it).
func TestDeferredReceiveThenFlush(t *testing.T) {
	g := newRemoteRig(t)
	g.join()
	ctx := DeferDurability(context.Background())
	var ids []string
	for i := range 3 {
		ev := g.build(remoteUser, "m.room.message", nil, fmt.Sprintf(`{"body":"deferred %d"}`, i))
		if _, err := g.s.Receive(ctx, remoteServer, g.roomID, ev.JSON()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID())
	}
	for _, id := range ids {
		if se := g.stored(id); se == nil || se.StreamPos <= 0 {
			t.Fatalf("%s not in the timeline: %+v", id, se)
		}
	}
	var written string
	if err := g.db.Pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&written); err != nil {
		t.Fatal(err)
	}
	if err := g.s.FlushWAL(ctx); err != nil {
		t.Fatal(err)
	}
	var flushed bool
	if err := g.db.Pool.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn`, written).Scan(&flushed); err != nil {
		t.Fatal(err)
	}
	if !flushed {
		t.Fatalf("the write-ahead log is not flushed past %s after FlushWAL", written)
	}
}
