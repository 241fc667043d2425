package peek_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
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

func TestMain(m *testing.M) { storagetest.Main(m) }

// bigRoom builds a world-readable public room with members joined members
// and messages messages, through the room service's own write path (the
// writer batches the concurrent joins into group commits).
func bigRoom(tb testing.TB, hs *homeserver.Server, members, messages int) string {
	tb.Helper()
	ctx := context.Background()
	v, err := event.Version(event.DefaultRoomVersion)
	if err != nil {
		tb.Fatal(err)
	}
	creator := "@creator:plaza.test"
	sk := func(s string) *string { return &s }
	roomID, err := hs.Rooms.CreateRoom(ctx, v, creator, json.RawMessage(`{}`), []room.Request{
		{Sender: creator, Type: event.TypeMember, StateKey: sk(creator), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: creator, Type: event.TypePowerLevels, StateKey: sk(""), Content: json.RawMessage(`{}`)},
		{Sender: creator, Type: event.TypeJoinRules, StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
		{Sender: creator, Type: event.TypeHistoryVisibility, StateKey: sk(""), Content: json.RawMessage(`{"history_visibility":"world_readable"}`)},
		{Sender: creator, Type: "m.room.guest_access", StateKey: sk(""), Content: json.RawMessage(`{"guest_access":"can_join"}`)},
		{Sender: creator, Type: "m.room.name", StateKey: sk(""), Content: json.RawMessage(`{"name":"Big room"}`)},
		{Sender: creator, Type: "m.room.topic", StateKey: sk(""), Content: json.RawMessage(`{"topic":"Twenty thousand people"}`)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	const workers = 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < members; i += workers {
				user := fmt.Sprintf("@user%05d:plaza.test", i)
				if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: user, Type: event.TypeMember, StateKey: &user,
					Content: json.RawMessage(`{"membership":"join","displayname":"User ` + user[5:10] + `"}`)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	for i := range messages {
		user := fmt.Sprintf("@user%05d:plaza.test", i%members)
		if _, err := hs.Rooms.Send(ctx, roomID, room.Request{Sender: user, Type: "m.room.message",
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d with a few words in it"}`, i))}); err != nil {
			tb.Fatal(err)
		}
	}
	return roomID
}

func newHomeserver(tb testing.TB, db *storage.DB, dir string) (*homeserver.Server, http.Handler) {
	tb.Helper()
	hs, err := homeserver.New(context.Background(), homeserver.Config{ServerName: "plaza.test", DataDir: dir,
		Registration: "open", BcryptCost: bcrypt.MinCost}, db)
	if err != nil {
		tb.Fatal(err)
	}
	p := peek.New(hs, peek.Config{})
	return hs, hs.Handler(p.Routes)
}

func serve(tb testing.TB, h http.Handler, method, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader("{}"))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		tb.Fatalf("%s %s = %d %s", method, path, w.Code, w.Body)
	}
	return w
}

// BenchmarkPreview measures the server time (handler, no network) of a
// guest's initialSync and an anonymous room_summary on a world-readable room
// with 20,000 members, warm (served from the snapshot) and cold (the first
// request after a restart). It reports the median and p99 per request.
//
//	go test ./peek -run '^$' -bench Preview -benchtime 2000x
func BenchmarkPreview(b *testing.B) {
	members := 20000
	if testing.Short() {
		members = 2000
	}
	pool := storagetest.NewDB(b, storage.Migrations())
	db := storage.New(pool)
	dir := b.TempDir()
	hs, h := newHomeserver(b, db, dir)
	start := time.Now()
	roomID := bigRoom(b, hs, members, 200)
	b.Logf("seeded %d members and 200 messages in %v", members, time.Since(start).Round(time.Millisecond))

	// Cold: a fresh homeserver on the same database, as after a restart.
	coldHS, cold := newHomeserver(b, db, dir)
	var reg struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(serve(b, cold, "POST", "/_matrix/client/v3/register?kind=guest", "").Body.Bytes(), &reg)
	rid := url.PathEscape(roomID)
	t0 := time.Now()
	if _, err := coldHS.Rooms.Version(context.Background(), roomID); err != nil {
		b.Fatal(err)
	}
	roomLoad := time.Since(t0)
	t1 := time.Now()
	serve(b, cold, "GET", "/_matrix/client/v3/rooms/"+rid+"/initialSync", reg.AccessToken)
	b.Logf("cold initialSync after restart: %v (room service state load %v, then snapshot build and answer %v)",
		time.Since(t0).Round(10*time.Microsecond), roomLoad.Round(10*time.Microsecond), time.Since(t1).Round(10*time.Microsecond))
	_ = h

	for _, c := range []struct{ name, path, token string }{
		{"initialSync", "/_matrix/client/v3/rooms/" + rid + "/initialSync", reg.AccessToken},
		{"room_summary", "/_matrix/client/v1/room_summary/" + rid, ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			serve(b, cold, "GET", c.path, c.token) // warm
			var lat []time.Duration
			for b.Loop() {
				t := time.Now()
				serve(b, cold, "GET", c.path, c.token)
				lat = append(lat, time.Since(t))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "median-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
