package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/clientapi"
	"plaza/homeserver/e2ee"
	"plaza/homeserver/ephemeral"
	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/signing"
	"plaza/homeserver/spectest"
	"plaza/homeserver/storage"
	"plaza/homeserver/stream"
	hsync "plaza/homeserver/sync"
)

// node is a federation server with the local services EDUs and queries
// reach, on its own database. Its /send is a stand-in for the real handler
// (fed-core's): it records the transaction and hands the EDUs over, as the
// real one does.
type node struct {
	*testFed
	tracker *stream.Tracker
	rooms   *room.Service
	syncer  *hsync.Service
	keys    *e2ee.Service
	eph     *ephemeral.Service

	mu   sync.Mutex
	edus []edu // EDUs received, in order
}

func newNode(t *testing.T, ca *testCA) *node {
	t.Helper()
	n := &node{testFed: newFed(t, ca)}
	n.tracker = stream.NewTracker(0, 0)
	n.rooms = room.New(n.db, n.tracker, n.name, n.cfg.Key)
	n.syncer = hsync.New(n.db, n.rooms, n.tracker)
	n.keys = e2ee.New(e2ee.Config{ServerName: n.name}, n.db, n.tracker, n.syncer)
	n.syncer.AddExtension(n.keys)
	n.eph = ephemeral.New(n.db, n.rooms, n.tracker, n.syncer)
	api := clientapi.New(clientapi.Config{ServerName: n.name, BcryptCost: 4}, n.db, n.rooms)
	n.svc.SetLocals(Locals{Rooms: n.rooms, Ephemeral: n.eph, E2EE: n.keys, Client: api})
	startSender(t, n.testFed, fastRetries, n.rooms)
	var h http.Handler = n.svc.Handler(n.svc.QueryRoutes, func(r chi.Router) {
		r.With(n.svc.Authenticate).Put("/_matrix/federation/v1/send/{txnID}", func(w http.ResponseWriter, r *http.Request) {
			var txn struct {
				EDUs []json.RawMessage `json:"edus"`
			}
			if err := httpapi.Decode(r, &txn); err != nil {
				httpapi.Fail(w, r, err)
				return
			}
			// Recorded after handling, so that a test seeing an EDU
			// here sees its effects too.
			n.svc.receiveEDUs(r.Context(), Origin(r.Context()), txn.EDUs)
			for _, raw := range txn.EDUs {
				var e edu
				_ = json.Unmarshal(raw, &e)
				n.mu.Lock()
				n.edus = append(n.edus, e)
				n.mu.Unlock()
			}
			httpapi.Respond(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
		})
	})
	n.handler.Store(&h)
	return n
}

// received returns the EDUs of type typ received so far.
func (n *node) received(typ string) []json.RawMessage {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []json.RawMessage
	for _, e := range n.edus {
		if e.Type == typ {
			out = append(out, e.Content)
		}
	}
	return out
}

// user creates a local account with one device.
func (n *node) user(t *testing.T, local, device string) string {
	t.Helper()
	ctx := context.Background()
	userID := "@" + local + ":" + n.name
	if err := n.db.CreateAccount(ctx, storage.Account{UserID: userID, Localpart: local, DisplayName: strings.ToUpper(local)}, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := n.db.CreateSession(ctx, userID, device, "", "tok-"+local+device, "", 0, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	return userID
}

// call runs a client API request of the ephemeral and e2ee services as
// userID's device.
func (n *node) call(t *testing.T, userID, device, method, path string, body any) (int, map[string]any) {
	t.Helper()
	r := chi.NewRouter()
	r.Route("/_matrix/client/v3", func(r chi.Router) {
		n.eph.Routes(r)
		n.keys.Routes(r)
	})
	js, _ := json.Marshal(body)
	req := httptest.NewRequest(method, path, bytes.NewReader(js))
	req = req.WithContext(httpapi.WithRequester(req.Context(), &httpapi.Requester{UserID: userID, DeviceID: device}))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

// syncOf runs the ephemeral and e2ee parts of an initial /sync.
func (n *node) syncOf(t *testing.T, userID, device string, rooms ...string) *hsync.Response {
	t.Helper()
	req := &hsync.Request{UserID: userID, DeviceID: device, UpTo: n.tracker.UpTo(), JoinedRooms: rooms}
	resp := &hsync.Response{Rooms: hsync.Rooms{Join: map[string]*hsync.JoinedRoom{}}}
	if err := n.eph.AddToSync(context.Background(), req, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// sharedRoom creates a room on n with local creator joined and the remote
// users joined too. Their joins are written by n's room writer directly,
// standing in for joins received over federation.
func (n *node) sharedRoom(t *testing.T, creator string, remote ...string) string {
	t.Helper()
	ctx := context.Background()
	sk := func(s string) *string { return &s }
	roomID, err := n.rooms.CreateRoom(ctx, event.MustVersion("12"), creator, json.RawMessage(`{"room_version":"12"}`), []room.Request{
		{Sender: creator, Type: "m.room.member", StateKey: sk(creator), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: creator, Type: "m.room.join_rules", StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range remote {
		if _, err := n.rooms.Send(ctx, roomID, room.Request{Sender: u, Type: "m.room.member", StateKey: sk(u), Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	return roomID
}

// deviceKeys makes signed device keys for a device.
func deviceKeys(t *testing.T, userID, device string) (map[string]any, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	obj := map[string]any{"user_id": userID, "device_id": device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + device: signing.EncodeBase64(pub), "curve25519:" + device: signing.EncodeBase64(pub)}}
	js, _ := json.Marshal(obj)
	signed, err := signing.SignJSON(js, userID, signing.Key{ID: "ed25519:" + device, Private: priv})
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(signed, &out)
	return out, priv
}

// EDUs from another server arrive through its sender and our /send, and
// reach local /sync; EDUs a server sends about users not its own, or about
// rooms they are not in, are dropped.
func TestInboundEDUs(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	alice := a.user(t, "alice", "ADEV")
	bob, carol := "@bob:"+b.name, "@carol:"+b.name
	roomID := a.sharedRoom(t, alice, bob)
	other := a.sharedRoom(t, alice) // bob is not in this one
	msg, err := a.rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi"}`)})
	if err != nil {
		t.Fatal(err)
	}

	send := func(typ string, content any) {
		t.Helper()
		if err := b.svc.Sender.QueueEDU(ctx, []string{a.name}, typ, content); err != nil {
			t.Fatal(err)
		}
	}
	send("m.typing", map[string]any{"room_id": roomID, "user_id": bob, "typing": true})
	send("m.typing", map[string]any{"room_id": roomID, "user_id": alice, "typing": true}) // joined, but not b's user
	send("m.typing", map[string]any{"room_id": roomID, "user_id": carol, "typing": true}) // not joined
	send("m.typing", map[string]any{"room_id": other, "user_id": bob, "typing": true})    // not joined there
	send("m.typing", "garbage")
	send("m.receipt", map[string]any{roomID: map[string]any{"m.read": map[string]any{
		bob:   map[string]any{"data": map[string]any{"ts": 1000}, "event_ids": []string{msg.Event.ID()}},
		carol: map[string]any{"data": map[string]any{"ts": 1000}, "event_ids": []string{msg.Event.ID()}}}}})
	send("m.presence", map[string]any{"push": []any{
		map[string]any{"user_id": bob, "presence": "online", "last_active_ago": 5, "status_msg": "here"},
		map[string]any{"user_id": carol, "presence": "online", "last_active_ago": 5},
		map[string]any{"user_id": alice, "presence": "offline", "last_active_ago": 5}}})
	send("m.direct_to_device", map[string]any{"sender": bob, "type": "m.room.encrypted", "message_id": "m1",
		"messages": map[string]any{alice: map[string]any{"ADEV": map[string]any{"ciphertext": "x"}}}})
	send("m.direct_to_device", map[string]any{"sender": bob, "type": "m.room.encrypted", "message_id": "m1", // a repeat
		"messages": map[string]any{alice: map[string]any{"ADEV": map[string]any{"ciphertext": "x"}}}})
	send("m.direct_to_device", map[string]any{"sender": "@mallory:" + a.name, "type": "m.room.encrypted", "message_id": "m2",
		"messages": map[string]any{alice: map[string]any{"ADEV": map[string]any{"ciphertext": "forged"}}}})
	before := a.tracker.UpTo()
	send("m.device_list_update", map[string]any{"user_id": bob, "device_id": "BDEV", "stream_id": 1})
	send("m.device_list_update", map[string]any{"user_id": carol, "device_id": "CDEV", "stream_id": 1})
	send("m.device_list_update", map[string]any{"user_id": alice, "device_id": "ADEV", "stream_id": 1})
	waitFor(t, "delivery to a", func() bool { return len(a.received("m.device_list_update")) == 3 })

	resp := a.syncOf(t, alice, "ADEV", roomID, other)
	typing := map[string][]string{}
	for id, jr := range resp.Rooms.Join {
		for _, e := range jr.Ephemeral.Events {
			if m := e.(map[string]any); m["type"] == "m.typing" {
				typing[id] = m["content"].(map[string]any)["user_ids"].([]string)
			}
		}
	}
	if got := typing[roomID]; len(got) != 1 || got[0] != bob {
		t.Errorf("typing in the shared room: %v, want only %s", got, bob)
	}
	if got := typing[other]; len(got) != 0 {
		t.Errorf("typing in a room bob is not in: %v", got)
	}
	receipts, err := a.db.ReceiptsSince(ctx, []string{roomID}, 0, a.tracker.UpTo())
	if err != nil {
		t.Fatal(err)
	}
	if len(receipts) != 1 || receipts[0].UserID != bob || receipts[0].EventID != msg.Event.ID() || receipts[0].TS != 1000 {
		t.Errorf("receipts: %+v, want bob's only", receipts)
	}
	var presence []string
	if resp.Presence != nil {
		for _, e := range resp.Presence.Events {
			presence = append(presence, e.(map[string]any)["sender"].(string))
		}
	}
	if !slices.Equal(presence, []string{bob}) {
		t.Errorf("presence of %v, want bob's only", presence)
	}
	inbox, _, err := a.db.ToDeviceInbox(ctx, alice, "ADEV", 0, a.tracker.UpTo(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].Sender != bob || !strings.Contains(string(inbox[0].Content), `"x"`) {
		t.Errorf("to-device inbox: %+v, want bob's one message once", inbox)
	}
	changed, _, err := a.db.DeviceListChanges(ctx, alice, []string{roomID, other}, before, a.tracker.UpTo())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(changed, []string{bob}) {
		t.Errorf("device lists changed: %v, want bob only", changed)
	}
}

// A local user's typing, receipts, presence, key uploads and to-device
// messages go out to the servers concerned; to-device messages arrive in
// the remote device's inbox.
func TestOutboundEDUs(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	alice := a.user(t, "alice", "ADEV")
	bob := b.user(t, "bob", "BDEV")
	roomID := a.sharedRoom(t, alice, bob)
	msg, err := a.rooms.Send(ctx, roomID, room.Request{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi"}`)})
	if err != nil {
		t.Fatal(err)
	}

	must := func(method, path string, body any) {
		t.Helper()
		if code, out := a.call(t, alice, "ADEV", method, path, body); code != 200 {
			t.Fatalf("%s %s = %d %v", method, path, code, out)
		}
	}
	must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice, map[string]any{"typing": true, "timeout": 10000})
	must("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+msg.Event.ID(), map[string]any{})
	must("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read.private/"+msg.Event.ID(), map[string]any{}) // stays here
	must("PUT", "/_matrix/client/v3/presence/"+alice+"/status", map[string]any{"presence": "unavailable"})
	keys, _ := deviceKeys(t, alice, "ADEV")
	must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys})
	mpub, _, _ := ed25519.GenerateKey(nil)
	mkey := signing.EncodeBase64(mpub)
	must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": alice, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + mkey: mkey}}})
	must("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", map[string]any{"messages": map[string]any{
		bob: map[string]any{"BDEV": map[string]any{"ciphertext": "for bob"}}}})

	waitFor(t, "the EDUs at b", func() bool {
		return len(b.received("m.direct_to_device")) == 1 && len(b.received("m.device_list_update")) == 2 && len(b.received("m.signing_key_update")) == 1
	})
	check := func(typ string, want ...string) {
		t.Helper()
		got := b.received(typ)
		if len(got) != 1 {
			t.Errorf("%d %s EDUs, want 1", len(got), typ)
			return
		}
		for _, w := range want {
			if !strings.Contains(string(got[0]), w) {
				t.Errorf("%s EDU %s lacks %s", typ, got[0], w)
			}
		}
	}
	check("m.typing", `"typing":true`, alice, roomID)
	check("m.receipt", roomID, msg.Event.ID(), `"m.read"`, alice)
	check("m.presence", `"unavailable"`, alice)
	if got := b.received("m.device_list_update"); len(got) != 2 || !strings.Contains(string(got[0]), `"ADEV"`) || !strings.Contains(string(got[0]), alice) {
		t.Errorf("device list updates: %s", got)
	}
	check("m.signing_key_update", alice, mkey)
	check("m.direct_to_device", "for bob", alice)
	spec := spectest.ForTest(t)
	if spec.ValidateSchema("api/server-server/definitions/event-schemas/m.typing.yaml", []byte(`{"edu_type":"m.typing","content":{"typing":"yes"}}`)) == nil {
		t.Fatal("the EDU schemas accept anything: the checks below would prove nothing")
	}
	for _, typ := range []string{"m.typing", "m.receipt", "m.presence", "m.device_list_update", "m.direct_to_device", "m.signing_key_update"} {
		for _, content := range b.received(typ) {
			raw, _ := json.Marshal(map[string]any{"edu_type": typ, "content": content})
			if err := spec.ValidateSchema("api/server-server/definitions/event-schemas/"+typ+".yaml", raw); err != nil {
				t.Errorf("%s: %v\n%s", typ, err, raw)
			}
		}
	}
	inbox, _, err := b.db.ToDeviceInbox(ctx, bob, "BDEV", 0, b.tracker.UpTo(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].Sender != alice || inbox[0].Type != "m.room.encrypted" {
		t.Errorf("bob's inbox: %+v", inbox)
	}
}

// A client's /keys/query and /keys/claim about users of another server get
// their keys from it; an unreachable server is listed under failures.
// /user/devices, /query/profile and /query/directory answer, and refuse
// what is not theirs to answer.
func TestKeysProfilesAndDirectoryAcrossServers(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	alice := a.user(t, "alice", "ADEV")
	bob := b.user(t, "bob", "BDEV")
	keys, _ := deviceKeys(t, bob, "BDEV")
	if code, out := b.call(t, bob, "BDEV", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys,
		"one_time_keys": map[string]any{"signed_curve25519:K1": map[string]any{"key": "otk1"}}}); code != 200 {
		t.Fatalf("upload: %d %v", code, out)
	}

	dead := "127.0.0.1:1"
	code, out := a.call(t, alice, "ADEV", "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{
		bob: []string{}, "@x:" + dead: []string{}}, "timeout": 5000})
	if code != 200 {
		t.Fatalf("query: %d %v", code, out)
	}
	dk, _ := out["device_keys"].(map[string]any)[bob].(map[string]any)["BDEV"].(map[string]any)
	if dk["device_id"] != "BDEV" || dk["user_id"] != bob {
		t.Errorf("bob's device keys: %v", out["device_keys"])
	}
	if _, failed := out["failures"].(map[string]any)[dead]; !failed {
		t.Errorf("failures %v lack the unreachable server", out["failures"])
	}

	code, out = a.call(t, alice, "ADEV", "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
		bob: map[string]string{"BDEV": "signed_curve25519"}}})
	if code != 200 {
		t.Fatalf("claim: %d %v", code, out)
	}
	claimed := fmt.Sprint(out["one_time_keys"])
	if !strings.Contains(claimed, "signed_curve25519:K1") || !strings.Contains(claimed, "otk1") {
		t.Errorf("claimed %v, want bob's one-time key", out)
	}
	_, out = a.call(t, alice, "ADEV", "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
		bob: map[string]string{"BDEV": "signed_curve25519"}}})
	if strings.Contains(fmt.Sprint(out["one_time_keys"]), "otk1") {
		t.Errorf("the one-time key was handed out twice: %v", out)
	}

	var devices struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID string         `json:"device_id"`
			Keys     map[string]any `json:"keys"`
		} `json:"devices"`
	}
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/user/devices/"+bob, nil, &devices, true); err != nil {
		t.Fatal(err)
	}
	if devices.UserID != bob || len(devices.Devices) != 1 || devices.Devices[0].DeviceID != "BDEV" || devices.Devices[0].Keys["user_id"] != bob {
		t.Errorf("/user/devices: %+v", devices)
	}
	err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/user/devices/"+alice, nil, nil, true)
	if !isRemote(err, 400, "M_INVALID_PARAM") {
		t.Errorf("/user/devices of another server's user: %v", err)
	}
	err = a.svc.Client.DoJSON(ctx, b.name, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": "nope"}, nil, true)
	if !isRemote(err, 400, "M_BAD_JSON") {
		t.Errorf("/user/keys/query with a bad body: %v", err)
	}

	dn, _, err := a.svc.QueryProfile(ctx, bob, "")
	if err != nil || dn != "BOB" {
		t.Errorf("profile of bob: %q, %v", dn, err)
	}
	if _, _, err := a.svc.ProfileForClient(ctx, "@nobody:"+b.name); !isHTTPStatus(err, 404) {
		t.Errorf("profile of a user b does not have: %v", err)
	}
	if _, _, err := a.svc.ProfileForClient(ctx, "@x:"+dead); !isHTTPStatus(err, 502) {
		t.Errorf("profile on an unreachable server: %v", err)
	}

	roomID := b.sharedRoom(t, bob, alice)
	alias := "#lobby:" + b.name
	if err := b.db.CreateAlias(ctx, alias, roomID, bob); err != nil {
		t.Fatal(err)
	}
	var dir struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/query/directory?room_alias="+strings.ReplaceAll(alias, "#", "%23"), nil, &dir, true); err != nil {
		t.Fatal(err)
	}
	if dir.RoomID != roomID || !slices.Equal(dir.Servers, []string{b.name, a.name}) {
		t.Errorf("directory: %+v, want %s on %s and %s", dir, roomID, b.name, a.name)
	}
	err = a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/query/directory?room_alias=%23nope:"+b.name, nil, &dir, true)
	if !isRemote(err, 404, "M_NOT_FOUND") {
		t.Errorf("unknown alias: %v", err)
	}
}

func isHTTPStatus(err error, status int) bool {
	var he *httpapi.Error
	return errors.As(err, &he) && he.Status == status
}

// makeRoom creates a room on n with the given create content and initial
// state besides the creator's join.
func (n *node) makeRoom(t *testing.T, creator, createContent string, state ...room.Request) string {
	t.Helper()
	sk := func(s string) *string { return &s }
	initial := append([]room.Request{{Sender: creator, Type: "m.room.member", StateKey: sk(creator), Content: json.RawMessage(`{"membership":"join"}`)}}, state...)
	for i := range initial {
		initial[i].Sender = creator
		if initial[i].StateKey == nil {
			initial[i].StateKey = sk("")
		}
	}
	roomID, err := n.rooms.CreateRoom(context.Background(), event.MustVersion("12"), creator, json.RawMessage(createContent), initial)
	if err != nil {
		t.Fatal(err)
	}
	return roomID
}

func stateReq(typ, stateKey, content string) room.Request {
	return room.Request{Type: typ, StateKey: &stateKey, Content: json.RawMessage(content)}
}

// The public room directory and space hierarchies answer other servers,
// in the spec's shapes, with filters and pages.
func TestPublicRoomsAndHierarchy(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	bob := b.user(t, "bob", "BDEV")
	pub := func(extra ...room.Request) []room.Request {
		return append([]room.Request{stateReq("m.room.join_rules", "", `{"join_rule":"public"}`)}, extra...)
	}
	lobby := b.makeRoom(t, bob, `{"room_version":"12"}`, pub(stateReq("m.room.name", "", `{"name":"Lobby"}`),
		stateReq("m.room.topic", "", `{"topic":"say hello"}`), stateReq("m.room.history_visibility", "", `{"history_visibility":"world_readable"}`))...)
	dev := b.makeRoom(t, bob, `{"room_version":"12"}`, pub(stateReq("m.room.name", "", `{"name":"Development"}`))...)
	secret := b.makeRoom(t, bob, `{"room_version":"12"}`, stateReq("m.room.join_rules", "", `{"join_rule":"invite"}`))
	space := b.makeRoom(t, bob, `{"room_version":"12","type":"m.space"}`, pub(stateReq("m.room.name", "", `{"name":"Org"}`),
		stateReq("m.space.child", lobby, `{"via":["`+b.name+`"],"suggested":true}`),
		stateReq("m.space.child", dev, `{"via":["`+b.name+`"]}`),
		stateReq("m.space.child", secret, `{"via":["`+b.name+`"]}`),
		stateReq("m.space.child", "!elsewhere:example.org", `{"via":["example.org"]}`),
		stateReq("m.space.child", "!removed:example.org", `{}`))...)
	for _, r := range []string{lobby, dev, space} {
		if err := b.db.SetPublished(ctx, r, true); err != nil {
			t.Fatal(err)
		}
	}
	// Two more members make the lobby the biggest room.
	sk := func(s string) *string { return &s }
	for _, u := range []string{"@x:" + a.name, "@y:" + a.name} {
		if _, err := b.rooms.Send(ctx, lobby, room.Request{Sender: u, Type: "m.room.member", StateKey: sk(u), Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	spec := spectest.ForTest(t)

	var raw json.RawMessage
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/publicRooms?limit=2", nil, &raw, true); err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate("GET", "/_matrix/client/v3/publicRooms", 200, raw); err != nil {
		t.Errorf("publicRooms against the spec's schema: %v", err)
	}
	var page struct {
		Chunk []roomSummary `json:"chunk"`
		Next  string        `json:"next_batch"`
		Total int           `json:"total_room_count_estimate"`
	}
	_ = json.Unmarshal(raw, &page)
	if len(page.Chunk) != 2 || page.Chunk[0].RoomID != lobby || page.Total != 3 || page.Next == "" {
		t.Fatalf("first page: %s", raw)
	}
	if c := page.Chunk[0]; c.Name != "Lobby" || c.Topic != "say hello" || !c.WorldReadable || c.NumJoinedMembers != 3 || c.JoinRule != "public" {
		t.Errorf("lobby: %+v", c)
	}
	seen := []string{page.Chunk[0].RoomID, page.Chunk[1].RoomID}
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/publicRooms?limit=2&since="+page.Next, nil, &page, true); err != nil {
		t.Fatal(err)
	}
	if len(page.Chunk) != 1 || slices.Contains(seen, page.Chunk[0].RoomID) {
		t.Errorf("second page: %+v after %v", page.Chunk, seen)
	}
	if err := a.svc.Client.DoJSON(ctx, b.name, "POST", "/_matrix/federation/v1/publicRooms",
		map[string]any{"filter": map[string]any{"generic_search_term": "DEVELOP"}}, &page, true); err != nil {
		t.Fatal(err)
	}
	if len(page.Chunk) != 1 || page.Chunk[0].RoomID != dev {
		t.Errorf("search: %+v", page.Chunk)
	}
	if err := a.svc.Client.DoJSON(ctx, b.name, "POST", "/_matrix/federation/v1/publicRooms",
		map[string]any{"filter": map[string]any{"room_types": []string{"m.space"}}}, &page, true); err != nil {
		t.Fatal(err)
	}
	if len(page.Chunk) != 1 || page.Chunk[0].RoomID != space || page.Chunk[0].RoomType != "m.space" {
		t.Errorf("spaces only: %+v", page.Chunk)
	}
	err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/publicRooms?since=bogus", nil, nil, true)
	if !isRemote(err, 400, "M_INVALID_PARAM") {
		t.Errorf("bad since: %v", err)
	}

	// A client of a asks for b's directory.
	req := httptest.NewRequest("GET", "/_matrix/client/v3/publicRooms?limit=1&server="+b.name, nil)
	rec := httptest.NewRecorder()
	a.svc.ClientPublicRooms(rec, req)
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || rec.Code != 200 || len(page.Chunk) != 1 || page.Chunk[0].RoomID != lobby || page.Total != 3 {
		t.Errorf("b's directory through a: %d %s", rec.Code, rec.Body)
	}

	raw = nil
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/hierarchy/"+space, nil, &raw, true); err != nil {
		t.Fatal(err)
	}
	var h struct {
		Room struct {
			RoomID        string          `json:"room_id"`
			RoomType      string          `json:"room_type"`
			ChildrenState []strippedState `json:"children_state"`
		} `json:"room"`
		Children     []roomSummary `json:"children"`
		Inaccessible []string      `json:"inaccessible_children"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	if h.Room.RoomID != space || h.Room.RoomType != "m.space" || len(h.Room.ChildrenState) != 4 {
		t.Errorf("hierarchy room: %s", raw)
	}
	var kids []string
	for _, c := range h.Children {
		kids = append(kids, c.RoomID)
	}
	slices.Sort(kids)
	want := []string{lobby, dev}
	slices.Sort(want)
	if !slices.Equal(kids, want) || !slices.Equal(h.Inaccessible, []string{secret}) {
		t.Errorf("children %v (want %v), inaccessible %v (want %s)", kids, want, h.Inaccessible, secret)
	}
	if err := a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/hierarchy/"+space+"?suggested_only=true", nil, &h, true); err != nil {
		t.Fatal(err)
	}
	if len(h.Children) != 1 || h.Children[0].RoomID != lobby {
		t.Errorf("suggested only: %+v", h.Children)
	}
	err = a.svc.Client.DoJSON(ctx, b.name, "GET", "/_matrix/federation/v1/hierarchy/"+secret, nil, nil, true)
	if !isRemote(err, 404, "M_NOT_FOUND") {
		t.Errorf("hierarchy of a private room: %v", err)
	}
}

// The query answers match the Server-Server API's own schemas.
func TestQueryAnswersMatchTheSpec(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca), newNode(t, ca)
	ctx := context.Background()
	bob := b.user(t, "bob", "BDEV")
	keys, _ := deviceKeys(t, bob, "BDEV")
	if code, out := b.call(t, bob, "BDEV", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys,
		"one_time_keys": map[string]any{"signed_curve25519:K1": map[string]any{"key": "otk1",
			"signatures": map[string]any{bob: map[string]string{"ed25519:BDEV": "c2ln"}}}}}); code != 200 {
		t.Fatalf("upload: %d %v", code, out)
	}
	roomID := b.makeRoom(t, bob, `{"room_version":"12","type":"m.space"}`, stateReq("m.room.join_rules", "", `{"join_rule":"public"}`))
	if err := b.db.CreateAlias(ctx, "#s:"+b.name, roomID, bob); err != nil {
		t.Fatal(err)
	}
	spec := spectest.ForTest(t)
	schema := func(file, path, method string) string {
		ptr := strings.NewReplacer("~", "~0", "/", "~1", "{", "%7B", "}", "%7D").Replace(path)
		return "api/server-server/" + file + "#/paths/" + ptr + "/" + method + "/responses/200/content/application~1json/schema"
	}
	for _, c := range []struct {
		file, path, method, uri string
		body                    any
	}{
		{"user_devices.yaml", "/user/devices/{userId}", "get", "/_matrix/federation/v1/user/devices/" + bob, nil},
		{"user_keys.yaml", "/user/keys/query", "post", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string]any{bob: []string{}}}},
		{"user_keys.yaml", "/user/keys/claim", "post", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": map[string]any{bob: map[string]string{"BDEV": "signed_curve25519"}}}},
		{"query.yaml", "/query/profile", "get", "/_matrix/federation/v1/query/profile?user_id=" + bob, nil},
		{"query.yaml", "/query/directory", "get", "/_matrix/federation/v1/query/directory?room_alias=%23s:" + b.name, nil},
		{"public_rooms.yaml", "/publicRooms", "get", "/_matrix/federation/v1/publicRooms", nil},
		{"public_rooms.yaml", "/publicRooms", "post", "/_matrix/federation/v1/publicRooms", map[string]any{}},
		{"space_hierarchy.yaml", "/hierarchy/{roomId}", "get", "/_matrix/federation/v1/hierarchy/" + roomID, nil},
	} {
		var raw json.RawMessage
		if err := a.svc.Client.DoJSON(ctx, b.name, strings.ToUpper(c.method), c.uri, c.body, &raw, true); err != nil {
			t.Errorf("%s %s: %v", c.method, c.uri, err)
			continue
		}
		if err := spec.ValidateSchema(schema(c.file, c.path, c.method), raw); err != nil {
			t.Errorf("%s %s: %v\n%s", c.method, c.path, err, raw)
		}
	}
}

// One transaction's EDUs get a bounded number of updates: past it, the rest
// is dropped.
func TestInboundEDUBudget(t *testing.T) {
	ca := newCA(t)
	a := newNode(t, ca)
	ctx := context.Background()
	alice := a.user(t, "alice", "ADEV")
	remote := "127.0.0.1:1"
	bob := "@bob:" + remote
	roomID := a.sharedRoom(t, alice, bob)
	reads := map[string]any{}
	ids := make([]string, maxUpdatesPerTxn)
	for i := range ids {
		ids[i] = fmt.Sprintf("$nope%d", i)
	}
	reads[bob] = map[string]any{"data": map[string]any{"ts": 1}, "event_ids": ids}
	flood, _ := json.Marshal(map[string]any{"edu_type": "m.receipt", "content": map[string]any{roomID: map[string]any{"m.read": reads}}})
	presence, _ := json.Marshal(map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
		map[string]any{"user_id": bob, "presence": "online", "last_active_ago": 1}}}})
	a.svc.receiveEDUs(ctx, remote, []json.RawMessage{flood, presence})
	if resp := a.syncOf(t, alice, "ADEV", roomID); resp.Presence != nil && len(resp.Presence.Events) > 0 {
		t.Errorf("presence applied past the transaction's budget: %v", resp.Presence.Events)
	}
	a.svc.receiveEDUs(ctx, remote, []json.RawMessage{presence})
	if resp := a.syncOf(t, alice, "ADEV", roomID); resp.Presence == nil || len(resp.Presence.Events) != 1 {
		t.Errorf("presence in a transaction of its own was not applied")
	}
}
