package peek_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/event"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
	"plaza/homeserver/storage/storagetest"
	"plaza/peek"
)

type apiClient struct {
	t     *testing.T
	base  string
	token string
	user  string
}

func (c *apiClient) call(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (c *apiClient) must(method, path string, body any, into any) {
	c.t.Helper()
	status, out := c.call(method, path, body)
	if status != http.StatusOK {
		c.t.Fatalf("%s %s: %d %s", method, path, status, out)
	}
	if into != nil {
		if err := json.Unmarshal(out, into); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, out)
		}
	}
}

func register(t *testing.T, base, name string) *apiClient {
	t.Helper()
	c := &apiClient{t: t, base: base}
	var r struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	c.must("POST", "/_matrix/client/v3/register", map[string]any{"username": name, "password": "correct horse battery",
		"auth": map[string]any{"type": "m.login.dummy"}}, &r)
	c.token, c.user = r.AccessToken, r.UserID
	return c
}

type clientEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Body       string `json:"body"`
		Membership string `json:"membership"`
	} `json:"content"`
}

// TestSeedRoom: the bulk seeder builds a room that every read path serves as
// if it had been written a message at a time — summary, guest initialSync,
// /messages across batch boundaries, /members, /sync of a new joiner —
// that takes ordinary sends afterwards, and that a restarted server loads
// from storage alone. Bad and unauthorised requests are refused whole.
func TestSeedRoom(t *testing.T) {
	pool := storagetest.NewDB(t, storage.Migrations())
	cfg := homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(), Registration: "open", BcryptCost: bcrypt.MinCost}
	hs, err := homeserver.New(context.Background(), cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	p := peek.New(hs, peek.Config{})
	ts := httptest.NewServer(hs.Handler(p.Routes))
	t.Cleanup(ts.Close)
	ctx := context.Background()

	boss, carol := register(t, ts.URL, "boss"), register(t, ts.URL, "carol")
	if _, err := pool.Exec(ctx, `UPDATE accounts SET is_admin = true WHERE user_id = $1`, boss.user); err != nil {
		t.Fatal(err)
	}
	const members, messages = 150, 2500
	for _, bad := range []struct {
		who     *apiClient
		body    any
		status  int
		errcode string
	}{
		{carol, map[string]any{"members": 1, "messages": 1}, 403, "M_FORBIDDEN"},
		{&apiClient{t: t, base: ts.URL}, map[string]any{"members": 1, "messages": 1}, 401, "M_MISSING_TOKEN"},
		{boss, map[string]any{"members": -1, "messages": 1}, 400, "M_INVALID_PARAM"},
		{boss, map[string]any{"members": 1, "messages": 1 << 40}, 400, "M_INVALID_PARAM"},
		{boss, map[string]any{"users_prefix": "Bad Prefix", "members": 1, "messages": 1}, 400, "M_INVALID_PARAM"},
		{boss, map[string]any{"members": "many", "messages": 1}, 400, "M_BAD_JSON"},
	} {
		status, out := bad.who.call("POST", "/_plaza/admin/v1/seed_room", bad.body)
		var e struct{ Errcode string }
		_ = json.Unmarshal(out, &e)
		if status != bad.status || e.Errcode != bad.errcode {
			t.Errorf("seed %v: %d %s, want %d %s", bad.body, status, out, bad.status, bad.errcode)
		}
	}
	var rooms int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM rooms`).Scan(&rooms); err != nil || rooms != 0 {
		t.Fatalf("refused seeds left %d rooms (%v)", rooms, err)
	}

	status, out := boss.call("POST", "/_plaza/admin/v1/seed_room", map[string]any{"members": members, "messages": messages,
		"name": "Seeded", "topic": "Bulk", "alias": "seeded", "days": 30})
	if status != 200 {
		t.Fatalf("seed: %d %s", status, out)
	}
	var last map[string]any
	progressLines := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("seed output line %q: %v", sc.Text(), err)
		}
		if _, ok := last["done"]; ok {
			progressLines++
		}
	}
	roomID, _ := last["room_id"].(string)
	if roomID == "" || last["errcode"] != nil || progressLines == 0 {
		t.Fatalf("seed output: %s", out)
	}
	rid := url.PathEscape(roomID)

	var sum map[string]any
	(&apiClient{t: t, base: ts.URL}).must("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#seeded:plaza.test"), nil, &sum)
	if sum["room_id"] != roomID || sum["num_joined_members"] != float64(members+1) || sum["name"] != "Seeded" || sum["world_readable"] != true {
		t.Fatalf("room_summary: %v", sum)
	}

	guest := &apiClient{t: t, base: ts.URL}
	var g struct {
		AccessToken string `json:"access_token"`
	}
	guest.must("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, &g)
	guest.token = g.AccessToken
	var is struct {
		Messages struct {
			Chunk []clientEvent `json:"chunk"`
		} `json:"messages"`
	}
	guest.must("GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync?limit=10", nil, &is)
	if n := len(is.Messages.Chunk); n != 10 || !strings.HasSuffix(is.Messages.Chunk[n-1].Content.Body, fmt.Sprintf("(#%d)", messages)) {
		t.Fatalf("guest initialSync: %+v", is.Messages.Chunk)
	}

	// A new member joins and talks through the ordinary writer.
	carol.must("POST", "/_matrix/client/v3/join/"+rid, map[string]any{}, nil)
	carol.must("PUT", "/_matrix/client/v3/rooms/"+rid+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "after the seed"}, nil)

	// /messages walks the whole history back, in order, over batch edges.
	var all []clientEvent
	from := ""
	for {
		var page struct {
			Chunk []clientEvent `json:"chunk"`
			End   string        `json:"end"`
		}
		q := "/_matrix/client/v3/rooms/" + rid + "/messages?dir=b&limit=700"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		carol.must("GET", q, nil, &page)
		all = append(all, page.Chunk...)
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	counts := map[string]int{}
	for _, e := range all {
		counts[e.Type]++
	}
	if counts["m.room.message"] != messages+1 || counts[event.TypeMember] != members+2 || counts[event.TypeCreate] != 1 {
		t.Fatalf("/messages saw %v", counts)
	}
	// Newest first: carol's message, her join, then the seed's last message.
	if all[0].Content.Body != "after the seed" || all[1].Sender != carol.user ||
		!strings.HasSuffix(all[2].Content.Body, fmt.Sprintf("(#%d)", messages)) ||
		!strings.HasSuffix(all[2+messages-1].Content.Body, "(#1)") {
		t.Fatalf("/messages order: %q, %q, %q", all[0].Content.Body, all[2].Content.Body, all[2+messages-1].Content.Body)
	}

	var jm struct {
		Joined map[string]any `json:"joined"`
	}
	carol.must("GET", "/_matrix/client/v3/rooms/"+rid+"/joined_members", nil, &jm)
	if len(jm.Joined) != members+2 {
		t.Fatalf("joined_members: %d", len(jm.Joined))
	}
	var sync struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []clientEvent `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	carol.must("GET", "/_matrix/client/v3/sync", nil, &sync)
	tl := sync.Rooms.Join[roomID].Timeline.Events
	if len(tl) == 0 || tl[len(tl)-1].Content.Body != "after the seed" {
		t.Fatalf("carol's sync timeline: %+v", tl)
	}

	// A restarted server knows the room from storage alone.
	hs2, err := homeserver.New(ctx, cfg, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := hs2.Rooms.JoinedCount(ctx, roomID); err != nil || n != members+2 {
		t.Fatalf("restarted: %d joined (%v)", n, err)
	}
	state, err := hs2.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(state) != 8+members+2 {
		t.Fatalf("restarted: %d state events", len(state))
	}
	// The state after a member's join, read through the state groups, has
	// the members who joined before and not those after.
	var mid clientEvent
	for _, e := range all {
		if e.Type == event.TypeMember && e.Sender == "@seed-100:plaza.test" {
			mid = e
		}
	}
	st, err := hs2.Rooms.StateAfterEvent(ctx, mid.EventID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range st {
		if e.Type() == event.TypeMember {
			seen[*e.StateKey()] = true
		}
	}
	if !seen["@seed-1:plaza.test"] || !seen["@seed-100:plaza.test"] || seen["@seed-101:plaza.test"] || len(seen) != 101 {
		t.Fatalf("state after the 100th join has %d members", len(seen))
	}
}

// TestBulkMatchesTheWriter: a room built by the bulk loader has, row for
// row, what the ordinary writer writes for the same requests sent one at a
// time — events, DAG edges, the state before every event (through the state
// groups, deltas and snapshots), current state, the membership log and the
// forward extremity.
func TestBulkMatchesTheWriter(t *testing.T) {
	pool := storagetest.NewDB(t, storage.Migrations())
	ctx := context.Background()
	hs, err := homeserver.New(ctx, homeserver.Config{ServerName: "plaza.test", DataDir: t.TempDir(), BcryptCost: bcrypt.MinCost}, storage.New(pool))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := event.Version(event.DefaultRoomVersion)
	const creator = "@creator:plaza.test"
	sk := func(s string) *string { return &s }
	initial := []room.Request{
		{Sender: creator, Type: event.TypeMember, StateKey: sk(creator), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: creator, Type: event.TypePowerLevels, StateKey: sk(""), Content: json.RawMessage(`{}`)},
		{Sender: creator, Type: event.TypeJoinRules, StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
		{Sender: creator, Type: event.TypeHistoryVisibility, StateKey: sk(""), Content: json.RawMessage(`{"history_visibility":"world_readable"}`)},
	}
	const members, messages = 150, 40
	req := func(i int) room.Request {
		u := fmt.Sprintf("@u%d:plaza.test", i%members)
		switch {
		case i < members:
			return room.Request{Sender: u, Type: event.TypeMember, StateKey: &u, Content: json.RawMessage(`{"membership":"join"}`)}
		case i == members+10: // a member changes their name: a state change replacing state
			return room.Request{Sender: u, Type: event.TypeMember, StateKey: &u, Content: json.RawMessage(`{"membership":"join","displayname":"U"}`)}
		case i == members+20:
			return room.Request{Sender: creator, Type: "m.room.topic", StateKey: sk(""), Content: json.RawMessage(`{"topic":"t"}`)}
		}
		return room.Request{Sender: u, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i))}
	}
	now := time.Now()
	bulkID, err := hs.Rooms.BulkCreate(ctx, room.BulkRoom{Version: v, Creator: creator, CreateContent: json.RawMessage(`{"room_version":"12"}`),
		Initial: initial, Events: req, Count: members + messages, From: now.Add(-time.Hour), To: now})
	if err != nil {
		t.Fatal(err)
	}
	writerID, err := hs.Rooms.CreateRoom(ctx, v, creator, json.RawMessage(`{"room_version":"12"}`), initial)
	if err != nil {
		t.Fatal(err)
	}
	for i := range members + messages {
		if _, err := hs.Rooms.Send(ctx, writerID, req(i)); err != nil {
			t.Fatal(err)
		}
	}

	// describe renders a room's rows with events named by their index in
	// stream order, so two rooms with different event IDs compare.
	describe := func(roomID string) []string {
		nid, err := hs.DB.RoomNID(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		index := map[int64]int{} // event NID → index
		byID := map[string]int{} // event ID → index
		rows, err := pool.Query(ctx, `SELECT event_nid, event_id, type, COALESCE(state_key, '-'), sender, depth, COALESCE(state_before, 0),
			COALESCE(replaces_state, '') FROM events WHERE room_nid = $1 ORDER BY stream_pos`, nid)
		if err != nil {
			t.Fatal(err)
		}
		type ev struct {
			nid                        int64
			id, typ, key, sender, repl string
			depth, before              int64
		}
		var evs []ev
		for rows.Next() {
			var e ev
			if err := rows.Scan(&e.nid, &e.id, &e.typ, &e.key, &e.sender, &e.depth, &e.before, &e.repl); err != nil {
				t.Fatal(err)
			}
			index[e.nid], byID[e.id] = len(evs), len(evs)
			evs = append(evs, e)
		}
		rows.Close()
		for i, e := range evs {
			state, err := hs.DB.StateOfGroup(ctx, e.before)
			if err != nil {
				t.Fatal(err)
			}
			var st []string
			for _, s := range state {
				st = append(st, fmt.Sprintf("%s|%s=%d", s.Type, s.StateKey, index[s.EventNID]))
			}
			slices.Sort(st)
			repl := -1
			if e.repl != "" {
				repl = byID[e.repl]
			}
			out = append(out, fmt.Sprintf("event %d: %s %s %s depth %d replaces %d state before %v", i, e.typ, e.key, e.sender, e.depth, repl, st))
		}
		edges, err := pool.Query(ctx, `SELECT x.event_nid, x.prev_event_id FROM event_edges x JOIN events e USING (event_nid) WHERE e.room_nid = $1`, nid)
		if err != nil {
			t.Fatal(err)
		}
		var edgeList []string
		for edges.Next() {
			var n int64
			var prev string
			if err := edges.Scan(&n, &prev); err != nil {
				t.Fatal(err)
			}
			edgeList = append(edgeList, fmt.Sprintf("edge %d→%d", index[n], byID[prev]))
		}
		edges.Close()
		slices.Sort(edgeList)
		out = append(out, edgeList...)
		var cs []string
		rows, err = pool.Query(ctx, `SELECT type, state_key, event_nid, COALESCE(membership, '') FROM current_state WHERE room_nid = $1`, nid)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var typ, key, m string
			var n int64
			if err := rows.Scan(&typ, &key, &n, &m); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, fmt.Sprintf("current %s|%s=%d %s", typ, key, index[n], m))
		}
		rows.Close()
		slices.Sort(cs)
		out = append(out, cs...)
		rows, err = pool.Query(ctx, `SELECT user_id, membership, event_nid FROM membership_log WHERE room_nid = $1 ORDER BY stream_pos`, nid)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var u, m string
			var n int64
			if err := rows.Scan(&u, &m, &n); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("membership %s %s %d", u, m, index[n]))
		}
		rows.Close()
		var groups, snapshots int
		var ext []string
		if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE prev_group IS NULL) FROM state_groups WHERE room_nid = $1`, nid).Scan(&groups, &snapshots); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT extremities FROM rooms WHERE room_nid = $1`, nid).Scan(&ext); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d state groups, %d snapshots, extremity %d", groups, snapshots, byID[ext[0]]))
		return out
	}
	bulk, writer := describe(bulkID), describe(writerID)
	t.Log(bulk[len(bulk)-1])
	if len(bulk) != len(writer) {
		t.Fatalf("bulk room has %d rows of description, writer's %d", len(bulk), len(writer))
	}
	for i := range bulk {
		// The senders and room differ in nothing; the rooms' own IDs do
		// not appear (events are named by index).
		if bulk[i] != writer[i] {
			t.Fatalf("row %d differs:\n bulk:   %s\n writer: %s", i, bulk[i], writer[i])
		}
	}
}
