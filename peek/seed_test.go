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
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"plaza/homeserver"
	"plaza/homeserver/event"
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
