package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"plaza/homeserver/signing"
)

// The three-server suite: three real `plaza serve` processes, each with its
// own embedded PostgreSQL, federating over HTTPS on 127.0.0.1 with
// certificates they issue themselves at start from a CA this test makes
// (tls_ca_cert), and driven over the client API only, as three people with
// three Matrix clients would.
//
// Server names are localhost:PORT, one port per server. The port is part of
// a Matrix server name, so the three names are distinct, and the spec's
// resolution finds each server by its name alone (step 2: an explicit port
// means "connect to that host and port", the host resolved through
// /etc/hosts). Names such as hs1.test would need a DNS server or a
// name-to-address override in Plaza's resolver: the first sends queries off
// the machine, the second would be a test-only path in production code. The
// federation ports are chosen once and kept across restarts, because the
// other servers know a server by its name, port included.

// fedWait bounds every wait for something to cross federation. It is a
// deadline for a test that would otherwise hang, not a performance target.
const fedWait = 60 * time.Second

func TestFederationThreeServers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three servers with PostgreSQL; skipped with -short")
	}

	net3 := startFederation(t, 3)
	hs1, hs2, hs3 := net3[0], net3[1], net3[2]
	alice, bob, carol := hs1.register(t, "alice"), hs2.register(t, "bob"), hs3.register(t, "carol")

	// carol's public room on hs3, with an alias there.
	roomID := carol.createRoom(t, map[string]any{"preset": "public_chat", "room_alias_name": "fed", "name": "Three servers"})
	alias := "#fed:" + hs3.name
	var joined bool

	t.Run("join by alias", func(t *testing.T) {
		for _, c := range []*fedClient{alice, bob} {
			var resp struct {
				RoomID string `json:"room_id"`
			}
			c.must(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{}, &resp)
			if resp.RoomID != roomID {
				t.Fatalf("%s joined %s by %s, want %s", c.userID, resp.RoomID, alias, roomID)
			}
		}
		// Every server sees all three members joined.
		want := []string{alice.userID, bob.userID, carol.userID}
		for _, c := range []*fedClient{alice, bob, carol} {
			eventually(t, "all three joined, seen from "+c.userID, func() (bool, string) {
				got := c.joinedMembers(t, roomID)
				return slices.Equal(got, sorted(want)), fmt.Sprint(got)
			})
		}
		joined = true
	})
	needJoined := func(t testing.TB) {
		t.Helper()
		if !joined {
			t.Skip("the join by alias did not succeed")
		}
	}

	var msgs []string // event IDs of the messages sent so far
	t.Run("talk both ways", func(t *testing.T) {
		needJoined(t)
		for i, c := range []*fedClient{alice, bob, carol, bob, alice} {
			msgs = append(msgs, c.send(t, roomID, "m.room.message", text(fmt.Sprintf("hello %d from %s", i, c.userID))))
		}
		for _, c := range []*fedClient{alice, bob, carol} {
			c.waitForEvents(t, roomID, msgs)
		}
	})

	t.Run("edit redact thread", func(t *testing.T) {
		needJoined(t)
		original := alice.send(t, roomID, "m.room.message", text("first draft"))
		edit := alice.send(t, roomID, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "* final text",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "final text"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": original},
		})
		mistake := bob.send(t, roomID, "m.room.message", text("a message bob regrets"))
		bob.must(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/%s", url.PathEscape(roomID), url.PathEscape(mistake), bob.txn()),
			map[string]any{"reason": "regret"}, nil)
		reply := carol.send(t, roomID, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "a reply in a thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": original, "is_falling_back": true,
				"m.in_reply_to": map[string]any{"event_id": original}},
		})
		msgs = append(msgs, original, edit, mistake, reply)

		for _, c := range []*fedClient{alice, bob, carol} {
			c.waitForEvents(t, roomID, []string{original, edit, mistake, reply})
			eventually(t, "the edit among the relations of the original, seen from "+c.userID, func() (bool, string) {
				ids := c.relations(t, roomID, original, "m.replace")
				return slices.Contains(ids, edit), fmt.Sprint(ids)
			})
			eventually(t, "the thread reply, seen from "+c.userID, func() (bool, string) {
				ids := c.relations(t, roomID, original, "m.thread")
				return slices.Contains(ids, reply), fmt.Sprint(ids)
			})
			eventually(t, "the redaction, seen from "+c.userID, func() (bool, string) {
				ev := c.event(t, roomID, mistake)
				content, _ := ev["content"].(map[string]any)
				unsigned, _ := ev["unsigned"].(map[string]any)
				return len(content) == 0 && unsigned["redacted_because"] != nil, fmt.Sprint(ev)
			})
		}
	})

	// Up to here every event was sent by an honest server about members
	// in good standing: none may have been rejected anywhere.
	for _, s := range net3 {
		if s.srv.logged("federation: PDU rejected") {
			t.Errorf("%s rejected an event of an honest server (see its log)", s.name)
		}
	}

	t.Run("offline server catches up", func(t *testing.T) {
		needJoined(t)
		hs2.stop(t)
		var missed []string
		for i := range 6 {
			sender := alice
			if i%2 == 1 {
				sender = carol
			}
			missed = append(missed, sender.send(t, roomID, "m.room.message", text(fmt.Sprintf("while hs2 was away %d", i))))
		}
		// A state change too, so that catching up is more than messages.
		carol.must(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic/", map[string]any{"topic": "set while hs2 was away"}, nil)
		hs2.start(t)
		msgs = append(msgs, missed...)
		// Nobody on hs2 does anything: the others' servers deliver, or
		// hs2 fetches what it missed, on their own.
		bob.waitForEvents(t, roomID, msgs)
		for _, c := range []*fedClient{alice, bob, carol} {
			c.checkNoDuplicates(t, roomID)
		}
		sameState(t, roomID, alice, bob, carol)
	})

	t.Run("ban while offline holds", func(t *testing.T) {
		needJoined(t)
		hs2.stop(t)
		carol.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/ban", map[string]any{"user_id": bob.userID, "reason": "while away"}, nil)
		hs2.start(t)
		// bob speaks at once, perhaps before hs2 has heard of the ban: his
		// server may accept the message on a fork that does not yet
		// contain the ban. State resolution must let the ban win.
		sneaky, sneakStatus := bob.trySend(t, roomID, text("sent right after coming back"))
		t.Logf("bob's message right after the restart: status %d (200: hs2 had not heard of the ban yet, so the ban must win by state resolution)", sneakStatus)
		for _, c := range []*fedClient{alice, bob, carol} {
			eventually(t, "bob banned, seen from "+c.userID, func() (bool, string) {
				m := c.membership(t, roomID, bob.userID)
				return m == "ban", m
			})
		}
		if sneakStatus == http.StatusOK {
			for _, c := range []*fedClient{alice, carol} {
				if ids := c.messageIDs(t, roomID); slices.Contains(ids, sneaky) {
					t.Errorf("%s's server shows bob's message sent after his ban (%s)", c.userID, sneaky)
				}
			}
		}
		if _, status := bob.trySend(t, roomID, text("after the ban")); status != http.StatusForbidden {
			t.Errorf("bob sent after his ban: status %d, want 403", status)
		}
		alice.send(t, roomID, "m.room.message", text("the room goes on"))
		sameState(t, roomID, alice, bob, carol)
	})

	t.Run("invite across servers", func(t *testing.T) {
		private := alice.createRoom(t, map[string]any{"preset": "private_chat", "name": "invite only"})
		alice.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/invite", map[string]any{"user_id": carol.userID}, nil)
		eventually(t, "carol's invite in her /sync", func() (bool, string) {
			invites := carol.syncInvites(t)
			return slices.Contains(invites, private), fmt.Sprint(invites)
		})
		carol.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/join", map[string]any{}, nil)
		eventually(t, "carol joined, seen from hs1", func() (bool, string) {
			m := alice.membership(t, private, carol.userID)
			return m == "join", m
		})
		id := carol.send(t, private, "m.room.message", text("thanks for the invite"))
		alice.waitForEvents(t, private, []string{id})
		// Nobody else may join an invite-only room.
		if status, body := bob.request(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(private)+"?server_name="+url.QueryEscape(hs1.name), map[string]any{}); status != http.StatusForbidden {
			t.Errorf("bob joined an invite-only room uninvited: %d %s", status, body)
		}
	})

	// alice on hs1 and carol on hs3, each with one device whose keys they
	// publish. The server never sees plaintext: the ciphertexts here are
	// opaque strings, and what is checked is that keys and messages cross
	// federation intact.
	var aliceDev, carolDev deviceKeys
	t.Run("device keys across servers", func(t *testing.T) {
		aliceDev, carolDev = alice.uploadDeviceKeys(t), carol.uploadDeviceKeys(t)
		// Each sees the other's device keys, signatures intact.
		alice.checkRemoteDeviceKeys(t, carol.userID, carolDev)
		carol.checkRemoteDeviceKeys(t, alice.userID, aliceDev)

		// alice claims one of carol's one-time keys, as she would to open
		// an Olm session; the key is handed out once.
		var claim struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			Failures    map[string]any                                   `json:"failures"`
		}
		alice.must(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
			"one_time_keys": map[string]any{carol.userID: map[string]any{carolDev.deviceID: "signed_curve25519"}},
		}, &claim)
		otks := claim.OneTimeKeys[carol.userID][carolDev.deviceID]
		if len(otks) != 1 || len(claim.Failures) != 0 {
			t.Fatalf("claimed %v, failures %v; want one of carol's one-time keys", otks, claim.Failures)
		}
		for keyID, key := range otks {
			if want := carolDev.oneTimeKeys[keyID]; !jsonEqual(key, want) {
				t.Errorf("claimed %s = %s, carol uploaded %s", keyID, key, want)
			}
			delete(carolDev.oneTimeKeys, keyID)
		}
		var counts struct {
			Counts map[string]int `json:"one_time_key_counts"`
		}
		carol.must(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{}, &counts)
		if counts.Counts["signed_curve25519"] != len(carolDev.oneTimeKeys) {
			t.Errorf("carol has %d one-time keys left, want %d", counts.Counts["signed_curve25519"], len(carolDev.oneTimeKeys))
		}
	})

	t.Run("encrypted DM", func(t *testing.T) {
		if aliceDev.deviceID == "" || carolDev.deviceID == "" {
			t.Skip("the device keys sub-test did not succeed")
		}
		dm := alice.createRoom(t, map[string]any{
			"preset": "trusted_private_chat", "is_direct": true,
			"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
				"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
		})
		alice.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(dm)+"/invite", map[string]any{"user_id": carol.userID}, nil)
		eventually(t, "carol's DM invite", func() (bool, string) {
			invites := carol.syncInvites(t)
			return slices.Contains(invites, dm), fmt.Sprint(invites)
		})
		carol.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(dm)+"/join", map[string]any{}, nil)

		// alice opens an Olm session with a to-device message, then sends
		// a Megolm message in the room.
		olm := map[string]any{"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": aliceDev.curve25519,
			"ciphertext": map[string]any{carolDev.curve25519: map[string]any{"type": 0, "body": "opaque olm pre-key message"}}}
		alice.must(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/"+alice.txn(), map[string]any{
			"messages": map[string]any{carol.userID: map[string]any{carolDev.deviceID: olm}},
		}, nil)
		eventually(t, "the to-device message in carol's /sync", func() (bool, string) {
			got := carol.syncToDevice(t)
			for _, m := range got {
				if m["sender"] == alice.userID && m["type"] == "m.room.encrypted" && jsonEqual(toJSON(m["content"]), toJSON(olm)) {
					return true, ""
				}
			}
			return false, fmt.Sprint(got)
		})

		// A Megolm message in the room reaches carol byte for byte.
		megolm := map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "sender_key": aliceDev.curve25519,
			"device_id": aliceDev.deviceID, "session_id": "opaque-session", "ciphertext": "opaque megolm ciphertext"}
		id := alice.send(t, dm, "m.room.encrypted", megolm)
		carol.waitForEvents(t, dm, []string{id})
		ev := carol.event(t, dm, id)
		if ev["type"] != "m.room.encrypted" || !jsonEqual(toJSON(ev["content"]), toJSON(megolm)) {
			t.Errorf("carol's server has %v, want the encrypted content alice sent", ev)
		}
	})

	t.Run("DM created with its invitee", func(t *testing.T) {
		// What Element does to open a DM: one createRoom naming the
		// invitee, who must see an invite marked is_direct.
		dm := alice.createRoom(t, map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{carol.userID}})
		eventually(t, "carol's DM invite", func() (bool, string) {
			invites := carol.syncInvites(t)
			return slices.Contains(invites, dm), fmt.Sprint(invites)
		})
		carol.must(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(dm)+"/join", map[string]any{}, nil)
		eventually(t, "carol joined the DM, seen from hs1", func() (bool, string) {
			m := alice.membership(t, dm, carol.userID)
			return m == "join", m
		})
	})
}

// fedServer is one `plaza serve` of the federation, restartable on the same
// data directory and federation port.
type fedServer struct {
	name string // localhost:PORT, the Matrix server name
	bin  string
	env  []string
	srv  *server
	// owner is the test that started the federation. Restarts register
	// their clean-up with it, not with the sub-test that restarts the
	// server: a sub-test's clean-up would kill the server when the
	// sub-test ends.
	owner testing.TB
}

// startFederation starts n servers that trust one CA and may reach each
// other on loopback.
func startFederation(t testing.TB, n int) []*fedServer {
	t.Helper()
	bin := buildPlaza(t)
	ca := writeRSACA(t, t.TempDir())
	ports := freePorts(t, n)
	servers := make([]*fedServer, n)
	for i := range servers {
		name := "localhost:" + strconv.Itoa(ports[i])
		servers[i] = &fedServer{name: name, bin: bin, owner: t, env: []string{
			"PLAZA_SERVER_NAME=" + name,
			"PLAZA_DATA_DIR=" + reachableTempDir(t),
			"PLAZA_LISTEN=127.0.0.1:0",
			"PLAZA_FEDERATION_LISTEN=127.0.0.1:" + strconv.Itoa(ports[i]),
			"PLAZA_TLS_CA_CERT=" + ca.cert,
			"PLAZA_TLS_CA_KEY=" + ca.key,
			"PLAZA_FEDERATION_CA_FILE=" + ca.cert,
			"PLAZA_FEDERATION_ALLOW_PRIVATE=true",
			"PLAZA_REGISTRATION=open",
			"PLAZA_RATE_LIMIT=false",
		}}
		servers[i].start(t)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			if s.srv != nil && s.srv.cmd.ProcessState == nil {
				s.stop(t)
			}
		}
	})
	return servers
}

// freePorts finds n ports free on 127.0.0.1. They are released before the
// servers bind them, so another process could take one in between; on a
// test machine that is rare enough, and the server's start then fails loudly.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// start starts (or restarts) the server. A failure to start fails t, the
// test that asked; the server lives until its owner ends.
func (s *fedServer) start(t testing.TB) {
	t.Helper()
	s.srv = launchServe(t, s.owner, s.bin, s.env)
}

func (s *fedServer) stop(t testing.TB) {
	t.Helper()
	s.srv.stop(t)
}

// register makes an account with open registration and returns its client.
func (s *fedServer) register(t testing.TB, user string) *fedClient {
	t.Helper()
	c := &fedClient{hs: s}
	var resp struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
		DeviceID    string `json:"device_id"`
	}
	c.must(t, "POST", "/_matrix/client/v3/register", map[string]any{
		"username": user, "password": "pw-" + user, "device_id": strings.ToUpper(user) + "DEV",
		"auth": map[string]any{"type": "m.login.dummy"},
	}, &resp)
	c.token, c.userID, c.deviceID = resp.AccessToken, resp.UserID, resp.DeviceID
	if want := "@" + user + ":" + s.name; c.userID != want {
		t.Fatalf("registered %s, want %s", c.userID, want)
	}
	return c
}

// fedClient is one user's Matrix client on one of the servers. Its requests
// go to wherever the server listens now, so it survives restarts.
type fedClient struct {
	hs       *fedServer
	token    string
	userID   string
	deviceID string
	txns     atomic.Int64
}

func (c *fedClient) txn() string { return fmt.Sprintf("t%d-%d", time.Now().UnixNano(), c.txns.Add(1)) }

// request performs one request and returns its status and body; it fails
// the test only when the server cannot be reached.
func (c *fedClient) request(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	status, raw, err := c.do(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, raw
}

// do performs one request and returns its status and body.
func (c *fedClient) do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.hs.srv.url+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	client := &http.Client{Timeout: fedWait}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s on %s: %w", method, path, c.hs.name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// must performs a request that has to succeed, decoding the answer into out.
func (c *fedClient) must(t testing.TB, method, path string, body, out any) {
	t.Helper()
	status, raw := c.request(t, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s as %s: status %d: %s", method, path, c.userID, status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
}

func (c *fedClient) createRoom(t testing.TB, req map[string]any) string {
	t.Helper()
	var resp struct {
		RoomID string `json:"room_id"`
	}
	c.must(t, "POST", "/_matrix/client/v3/createRoom", req, &resp)
	return resp.RoomID
}

func (c *fedClient) send(t testing.TB, roomID, typ string, content map[string]any) string {
	t.Helper()
	var resp struct {
		EventID string `json:"event_id"`
	}
	c.must(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/%s", url.PathEscape(roomID), typ, c.txn()), content, &resp)
	return resp.EventID
}

// trySend sends a message that may be refused, returning its event ID (if
// any) and the status.
func (c *fedClient) trySend(t testing.TB, roomID string, content map[string]any) (string, int) {
	t.Helper()
	status, raw := c.request(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", url.PathEscape(roomID), c.txn()), content)
	var resp struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(raw, &resp)
	return resp.EventID, status
}

func text(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

// timeline returns the room's events as this user's server has them, oldest
// first, paginating /messages back from the end.
func (c *fedClient) timeline(t testing.TB, roomID string) []map[string]any {
	t.Helper()
	var all []map[string]any
	from := ""
	for range 100 {
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=100"
		if from != "" {
			path += "&from=" + url.QueryEscape(from)
		}
		var page struct {
			Chunk []map[string]any `json:"chunk"`
			End   string           `json:"end"`
		}
		c.must(t, "GET", path, nil, &page)
		all = append(all, page.Chunk...)
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	slices.Reverse(all)
	return all
}

// messageIDs lists the IDs of the room's m.room.message and m.room.encrypted
// events, oldest first.
func (c *fedClient) messageIDs(t testing.TB, roomID string) []string {
	t.Helper()
	var ids []string
	for _, ev := range c.timeline(t, roomID) {
		if typ := ev["type"]; typ == "m.room.message" || typ == "m.room.encrypted" {
			id, _ := ev["event_id"].(string)
			ids = append(ids, id)
		}
	}
	return ids
}

// waitForEvents waits until every event in ids is in the user's timeline.
func (c *fedClient) waitForEvents(t testing.TB, roomID string, ids []string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d events in %s's timeline", len(ids), c.userID), func() (bool, string) {
		have := c.messageIDs(t, roomID)
		var missing []string
		for _, id := range ids {
			if !slices.Contains(have, id) {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing %v", missing)
	})
}

// checkNoDuplicates fails if an event appears twice in the user's timeline.
func (c *fedClient) checkNoDuplicates(t testing.TB, roomID string) {
	t.Helper()
	seen := map[string]bool{}
	for _, ev := range c.timeline(t, roomID) {
		id, _ := ev["event_id"].(string)
		if seen[id] {
			t.Errorf("%s's timeline holds %s twice", c.userID, id)
		}
		seen[id] = true
	}
}

func (c *fedClient) event(t testing.TB, roomID, eventID string) map[string]any {
	t.Helper()
	var ev map[string]any
	status, raw := c.request(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(eventID), nil)
	if status == http.StatusOK {
		_ = json.Unmarshal(raw, &ev)
	}
	return ev
}

func (c *fedClient) relations(t testing.TB, roomID, eventID, relType string) []string {
	t.Helper()
	var page struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
	}
	status, raw := c.request(t, "GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/relations/%s/%s", url.PathEscape(roomID), url.PathEscape(eventID), relType), nil)
	if status != http.StatusOK {
		return nil
	}
	_ = json.Unmarshal(raw, &page)
	var ids []string
	for _, e := range page.Chunk {
		ids = append(ids, e.EventID)
	}
	return ids
}

func (c *fedClient) joinedMembers(t testing.TB, roomID string) []string {
	t.Helper()
	var resp struct {
		Joined map[string]any `json:"joined"`
	}
	status, raw := c.request(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
	if status != http.StatusOK {
		return nil
	}
	_ = json.Unmarshal(raw, &resp)
	var ids []string
	for id := range resp.Joined {
		ids = append(ids, id)
	}
	return sorted(ids)
}

// membership is userID's membership in the room's current state as this
// client's server has it ("" when unknown).
func (c *fedClient) membership(t testing.TB, roomID, userID string) string {
	t.Helper()
	status, raw := c.request(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	if status != http.StatusOK {
		return fmt.Sprintf("(state: %d)", status)
	}
	var state []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		Content  struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	_ = json.Unmarshal(raw, &state)
	for _, ev := range state {
		if ev.Type == "m.room.member" && ev.StateKey == userID {
			return ev.Content.Membership
		}
	}
	return ""
}

// stateIDs maps (type, state key) to event ID in the room's current state.
func (c *fedClient) stateIDs(t testing.TB, roomID string) map[string]string {
	t.Helper()
	var state []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		EventID  string `json:"event_id"`
	}
	c.must(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil, &state)
	out := map[string]string{}
	for _, ev := range state {
		out[ev.Type+"\x00"+ev.StateKey] = ev.EventID
	}
	return out
}

// sameState waits until every client's server has the same current state
// in the room, event for event.
func sameState(t testing.TB, roomID string, clients ...*fedClient) {
	t.Helper()
	eventually(t, "the same room state on every server", func() (bool, string) {
		first := clients[0].stateIDs(t, roomID)
		for _, c := range clients[1:] {
			other := c.stateIDs(t, roomID)
			if !mapsEqual(first, other) {
				return false, fmt.Sprintf("%s has %v\n%s has %v", clients[0].hs.name, first, c.hs.name, other)
			}
		}
		return true, ""
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// sync runs one /sync without a token (a full state snapshot) and returns
// the raw answer.
func (c *fedClient) sync(t testing.TB) map[string]any {
	t.Helper()
	var out map[string]any
	c.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil, &out)
	return out
}

func (c *fedClient) syncInvites(t testing.TB) []string {
	t.Helper()
	rooms, _ := c.sync(t)["rooms"].(map[string]any)
	invites, _ := rooms["invite"].(map[string]any)
	var ids []string
	for id := range invites {
		ids = append(ids, id)
	}
	return ids
}

func (c *fedClient) syncToDevice(t testing.TB) []map[string]any {
	t.Helper()
	td, _ := c.sync(t)["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	var out []map[string]any
	for _, e := range evs {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// deviceKeys is what a client published for its device.
type deviceKeys struct {
	deviceID    string
	curve25519  string
	signed      json.RawMessage            // the device_keys object, signed
	oneTimeKeys map[string]json.RawMessage // key ID → signed key object
}

// uploadDeviceKeys publishes an identity key pair and five signed one-time
// keys for the client's device, signed with a real ed25519 device key as a
// Matrix client would.
func (c *fedClient) uploadDeviceKeys(t testing.TB) deviceKeys {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := signing.Key{ID: "ed25519:" + c.deviceID, Private: priv}
	curve := make([]byte, 32)
	rand.Read(curve)
	dk := deviceKeys{deviceID: c.deviceID, curve25519: signing.EncodeBase64(curve), oneTimeKeys: map[string]json.RawMessage{}}
	obj := toJSON(map[string]any{
		"user_id": c.userID, "device_id": c.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + c.deviceID: dk.curve25519, "ed25519:" + c.deviceID: signing.EncodeBase64(priv.Public().(ed25519.PublicKey))},
	})
	if dk.signed, err = signing.SignJSON(obj, c.userID, key); err != nil {
		t.Fatal(err)
	}
	otks := map[string]json.RawMessage{}
	for i := range 5 {
		k := make([]byte, 32)
		rand.Read(k)
		signed, err := signing.SignJSON(toJSON(map[string]any{"key": signing.EncodeBase64(k)}), c.userID, key)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("signed_curve25519:AAAA%02d", i)
		otks[id], dk.oneTimeKeys[id] = signed, signed
	}
	c.must(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dk.signed, "one_time_keys": otks}, nil)
	return dk
}

// checkRemoteDeviceKeys asks the client's server for userID's keys, which
// it must fetch over federation, and compares them with what was uploaded.
func (c *fedClient) checkRemoteDeviceKeys(t testing.TB, userID string, want deviceKeys) {
	t.Helper()
	eventually(t, c.userID+" sees "+userID+"'s device keys", func() (bool, string) {
		var resp struct {
			DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
			Failures   map[string]any                        `json:"failures"`
		}
		c.must(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{userID: []string{}}}, &resp)
		got := resp.DeviceKeys[userID][want.deviceID]
		if got == nil {
			return false, fmt.Sprintf("no keys for %s (failures %v)", want.deviceID, resp.Failures)
		}
		// The server may add an unsigned section (a display name); the
		// signed part must be exactly what was uploaded.
		var g map[string]any
		_ = json.Unmarshal(got, &g)
		delete(g, "unsigned")
		return jsonEqual(toJSON(g), want.signed), string(got)
	})
}

// eventually polls cond until it holds or fedWait passes; cond returns
// whether it holds and what it saw, for the failure message.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(fedWait)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last saw: %s", fedWait, what, saw)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func toJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only ever called on values built in this file
	}
	return b
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

// BenchmarkFederationJoinLargeRoom measures how long a user on server B
// takes to join, by alias, a room on server A that has PLAZA_BENCH_MEMBERS
// members (default 5,000) and PLAZA_BENCH_EVENTS events in all (default
// 20,000: the members' joins, then messages). The room is seeded once over
// the client API; each iteration starts a fresh server B (not timed) and
// times the join request alone, make_join to the answer of send_join and
// the room written on B.
//
//	go test ./cmd/plaza -run '^$' -bench FederationJoinLargeRoom -benchtime 1x
//
// With PLAZA_BENCH_CPUPROFILE=FILE, server B's CPU profile over its (last)
// join is written to FILE (taken through B's admin listener), for
// `go tool pprof FILE`.
func BenchmarkFederationJoinLargeRoom(b *testing.B) {
	members, events := envInt(b, "PLAZA_BENCH_MEMBERS", 5000), envInt(b, "PLAZA_BENCH_EVENTS", 20000)
	servers := startFederation(b, 1)
	hsA := servers[0]
	owner := hsA.register(b, "owner")
	roomID := owner.createRoom(b, map[string]any{"preset": "public_chat", "room_alias_name": "big"})

	start := time.Now()
	clients := make([]*fedClient, members-1) // the owner is the first member
	parallel(b, len(clients), func(i int) error {
		c, err := hsA.registerWithoutPassword(fmt.Sprintf("m%05d", i))
		if err == nil {
			err = c.try("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
		}
		clients[i] = c
		return err
	})
	messages := max(events-members-5, 0) // the room's creation made about five events
	parallel(b, messages, func(i int) error {
		c := clients[i%min(len(clients), 100)]
		return c.try("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", url.PathEscape(roomID), c.txn()),
			text(fmt.Sprintf("message %d", i)))
	})
	b.Logf("seeded %d members and %d messages on %s in %s", members, messages, hsA.name, time.Since(start).Round(time.Second))

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var extra []string
		profile := os.Getenv("PLAZA_BENCH_CPUPROFILE")
		if profile != "" {
			extra = append(extra, "PLAZA_ADMIN_LISTEN=127.0.0.1:"+strconv.Itoa(freePorts(b, 1)[0]))
		}
		hsB := startFederationPeer(b, hsA, extra...)
		joiner := hsB.register(b, fmt.Sprintf("joiner%d", i))
		profiled := make(chan error, 1)
		if profile != "" {
			admin := strings.TrimPrefix(extra[0], "PLAZA_ADMIN_LISTEN=")
			go func() { profiled <- fetchProfile("http://"+admin+"/debug/pprof/profile?seconds=10", profile) }()
			time.Sleep(100 * time.Millisecond) // let the profile start before the join
		} else {
			profiled <- nil
		}
		b.StartTimer()
		began := time.Now()
		joiner.must(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#big:"+hsA.name), map[string]any{}, nil)
		b.StopTimer()
		b.Logf("join %d took %s", i, time.Since(began).Round(time.Millisecond))
		if err := <-profiled; err != nil {
			b.Errorf("CPU profile: %v", err)
		}
		if got := len(joiner.joinedMembers(b, roomID)); got != members+1 {
			b.Errorf("B sees %d joined members, want %d", got, members+1)
		}
		hsB.stop(b)
	}
}

// startFederationPeer starts one more server that trusts the same CA as
// peer (it takes peer's settings, with its own name, port and data, plus
// extraEnv).
func startFederationPeer(t testing.TB, peer *fedServer, extraEnv ...string) *fedServer {
	t.Helper()
	port := freePorts(t, 1)[0]
	name := "localhost:" + strconv.Itoa(port)
	s := &fedServer{name: name, bin: peer.bin, owner: t}
	for _, kv := range peer.env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "PLAZA_SERVER_NAME":
			kv = k + "=" + name
		case "PLAZA_DATA_DIR":
			kv = k + "=" + reachableTempDir(t)
		case "PLAZA_FEDERATION_LISTEN":
			kv = k + "=127.0.0.1:" + strconv.Itoa(port)
		}
		s.env = append(s.env, kv)
	}
	s.env = append(s.env, extraEnv...)
	s.start(t)
	return s
}

// registerWithoutPassword makes an account that cannot log in again, which
// skips password hashing: seeding thousands of members stays quick. It runs
// on seeding workers, so it returns its error instead of failing the test.
func (s *fedServer) registerWithoutPassword(user string) (*fedClient, error) {
	c := &fedClient{hs: s}
	status, raw, err := c.do("POST", "/_matrix/client/v3/register", map[string]any{"username": user, "auth": map[string]any{"type": "m.login.dummy"}})
	if err != nil {
		return nil, err
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("registering %s: status %d: %s", user, status, raw)
	}
	c.token, c.userID = resp.AccessToken, resp.UserID
	return c, nil
}

// try performs a request that has to succeed, returning an error if not.
func (c *fedClient) try(method, path string, body any) error {
	status, raw, err := c.do(method, path, body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s %s as %s: status %d: %s", method, path, c.userID, status, raw)
	}
	return nil
}

// parallel runs f(0) … f(n-1) on eight workers, stopping at the first
// error, which fails the test.
func parallel(t testing.TB, n int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- nil
					return
				}
				if err := f(i); err != nil {
					next.Store(int64(n)) // the others stop too
					errs <- err
					return
				}
			}
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// fetchProfile saves the CPU profile served at url to path.
func fetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
