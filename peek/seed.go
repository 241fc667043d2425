package peek

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Bounds of one seed request: a big Gitter room, and then some.
const (
	maxSeedMembers  = 1_000_000
	maxSeedMessages = 100_000_000
	maxSeedDays     = 36_500
)

// seedRequest is the body of POST /_plaza/admin/v1/seed_room.
type seedRequest struct {
	Members     *int   `json:"members"`
	Messages    *int   `json:"messages"`
	Name        string `json:"name"`
	Topic       string `json:"topic"`
	Alias       string `json:"alias"` // localpart of a canonical alias
	Days        *int   `json:"days"`  // the history spans this many days up to now
	UsersPrefix string `json:"users_prefix"`
}

// seedRoom serves POST /_plaza/admin/v1/seed_room (server admins only): it
// builds a public, world-readable, guest-joinable room with N members and M
// messages through room.Service.BulkCreate — real signed events, state
// groups and stream positions, written a thousand at a time with COPY — for
// benchmarks (plaza-bench seed) and demos of huge rooms. It runs inside the
// server, so every cache hears of the events from the stream as usual.
//
// The members are local accounts <users_prefix>-<n> without passwords
// (created if missing, shared by every seeded room). The answer streams as
// JSON lines: progress {"done","total","rate","eta_seconds"} about twice a
// second, then {"room_id",...} — or, past the first line, an
// {"errcode","error"} line; a failure leaves the room as of its last
// written batch.
func (s *Service) seedRoom(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := httpapi.RequesterFrom(ctx)
	if rq == nil || !rq.IsAdmin {
		httpapi.Fail(w, r, httpapi.Forbidden("only server admins may seed rooms"))
		return
	}
	var req seedRequest
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	members, messages, days := intOr(req.Members, 20_000), intOr(req.Messages, 1_000_000), intOr(req.Days, 365)
	prefix := req.UsersPrefix
	if prefix == "" {
		prefix = "seed"
	}
	server := s.hs.Rooms.ServerName()
	switch {
	case members < 0 || members > maxSeedMembers:
		httpapi.Fail(w, r, httpapi.InvalidParam("members must be 0 to %d", maxSeedMembers))
		return
	case messages < 0 || messages > maxSeedMessages:
		httpapi.Fail(w, r, httpapi.InvalidParam("messages must be 0 to %d", maxSeedMessages))
		return
	case days < 0 || days > maxSeedDays:
		httpapi.Fail(w, r, httpapi.InvalidParam("days must be 0 to %d", maxSeedDays))
		return
	case len(req.Name) > 255 || len(req.Topic) > 4096:
		httpapi.Fail(w, r, httpapi.InvalidParam("name (255 bytes) or topic (4096 bytes) too long"))
		return
	}
	if _, err := id.ParseStrictUserID("@" + prefix + "-" + strconv.Itoa(maxSeedMembers) + ":" + server); err != nil {
		httpapi.Fail(w, r, httpapi.InvalidParam("users_prefix %q does not make valid user IDs", prefix))
		return
	}
	alias := ""
	if req.Alias != "" {
		alias = "#" + req.Alias + ":" + server
		if _, err := id.ParseRoomAlias(alias); err != nil {
			httpapi.Fail(w, r, httpapi.InvalidParam("invalid alias localpart %q", req.Alias))
			return
		}
		if _, err := s.hs.DB.ResolveAlias(ctx, alias); err == nil {
			httpapi.Fail(w, r, httpapi.RoomInUse("alias %s is taken", alias))
			return
		} else if !errors.Is(err, storage.ErrNotFound) {
			httpapi.Fail(w, r, err)
			return
		}
	}
	v, err := event.Version(event.DefaultRoomVersion)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}

	userOf := func(i int) string { return "@" + prefix + "-" + strconv.Itoa(i+1) + ":" + server }
	now := s.now()
	const chunk = 10_000
	for from := 0; from < members; from += chunk {
		var ids, locals, names []string
		for i := from; i < min(from+chunk, members); i++ {
			ids = append(ids, userOf(i))
			locals = append(locals, prefix+"-"+strconv.Itoa(i+1))
			names = append(names, "Seed user "+strconv.Itoa(i+1))
		}
		if err := s.hs.DB.BulkAccounts(ctx, ids, locals, names, now.UnixMilli()); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}

	sk := func(s string) *string { return &s }
	str := func(v string) json.RawMessage { b, _ := json.Marshal(v); return b }
	initial := []room.Request{
		{Sender: rq.UserID, Type: event.TypeMember, StateKey: sk(rq.UserID), Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: rq.UserID, Type: event.TypePowerLevels, StateKey: sk(""), Content: json.RawMessage(`{}`)},
		{Sender: rq.UserID, Type: event.TypeJoinRules, StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
		{Sender: rq.UserID, Type: event.TypeHistoryVisibility, StateKey: sk(""), Content: json.RawMessage(`{"history_visibility":"world_readable"}`)},
		{Sender: rq.UserID, Type: "m.room.guest_access", StateKey: sk(""), Content: json.RawMessage(`{"guest_access":"can_join"}`)},
	}
	if req.Name != "" {
		initial = append(initial, room.Request{Sender: rq.UserID, Type: "m.room.name", StateKey: sk(""), Content: json.RawMessage(`{"name":` + string(str(req.Name)) + `}`)})
	}
	if req.Topic != "" {
		initial = append(initial, room.Request{Sender: rq.UserID, Type: "m.room.topic", StateKey: sk(""), Content: json.RawMessage(`{"topic":` + string(str(req.Topic)) + `}`)})
	}
	if alias != "" {
		initial = append(initial, room.Request{Sender: rq.UserID, Type: "m.room.canonical_alias", StateKey: sk(""), Content: json.RawMessage(`{"alias":` + string(str(alias)) + `}`)})
	}
	events := func(i int) room.Request {
		if i < members {
			u := userOf(i)
			return room.Request{Sender: u, Type: event.TypeMember, StateKey: &u,
				Content: json.RawMessage(`{"membership":"join","displayname":"Seed user ` + strconv.Itoa(i+1) + `"}`)}
		}
		n := i - members
		sender := rq.UserID
		if members > 0 {
			// A few people talk a lot, most rarely, as in real rooms.
			sender = userOf(int(uint64(n)*2654435761%uint64(members)) % max(1, members/(1+n%7)))
		}
		return room.Request{Sender: sender, Type: "m.room.message", Content: seedMessage(n)}
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	line := func(v any) {
		b, _ := json.Marshal(v)
		_, _ = w.Write(append(b, '\n'))
		_ = rc.Flush()
	}
	started := time.Now()
	var lastLine time.Time
	progress := func(done, total int) {
		if time.Since(lastLine) < 500*time.Millisecond && done < total {
			return
		}
		lastLine = time.Now()
		elapsed := time.Since(started).Seconds()
		rate := float64(done) / max(elapsed, 1e-3)
		line(map[string]any{"done": done, "total": total, "rate": int(rate), "eta_seconds": int(float64(total-done) / max(rate, 1))})
	}
	roomID, err := s.hs.Rooms.BulkCreate(ctx, room.BulkRoom{
		Version: v, Creator: rq.UserID, CreateContent: json.RawMessage(`{"room_version":` + string(str(v.ID)) + `}`),
		Initial: initial, Events: events, Count: members + messages,
		From: now.Add(-time.Duration(days) * 24 * time.Hour), To: now, Progress: progress,
	})
	if err == nil && alias != "" {
		err = s.hs.DB.CreateAlias(ctx, alias, roomID, rq.UserID)
	}
	if err != nil {
		line(map[string]any{"errcode": "M_UNKNOWN", "error": fmt.Sprintf("seeding failed: %v", err), "room_id": roomID})
		return
	}
	line(map[string]any{"room_id": roomID, "alias": alias, "members": members, "messages": messages,
		"seconds": time.Since(started).Seconds()})
}

// seedWords make seeded messages of varied length and content (search and
// page weight see something like chat, not one repeated line).
var seedWords = [...]string{"build", "fails", "on", "the", "main", "branch", "since", "yesterday", "could", "someone", "look",
	"at", "this", "PR", "thanks", "release", "notes", "are", "up", "works", "for", "me", "with", "latest", "version", "docs", "say",
	"otherwise", "merged", "nice", "question", "about", "config", "tests", "pass", "locally", "CI", "is", "flaky", "again"}

func seedMessage(n int) json.RawMessage {
	words := 3 + (n*7)%29
	b := []byte(`{"msgtype":"m.text","body":"`)
	x := uint64(n)*6364136223846793005 + 1442695040888963407
	for i := range words {
		if i > 0 {
			b = append(b, ' ')
		}
		x = x*6364136223846793005 + 1442695040888963407
		b = append(b, seedWords[(x>>33)%uint64(len(seedWords))]...)
	}
	b = append(b, ` (#`...)
	b = strconv.AppendInt(b, int64(n+1), 10)
	return append(b, `)"}`...)
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
