package auth

import (
	"fmt"
	"testing"

	"plaza/homeserver/event"
)

// benchRoom is a v12 room with members joined (signed member events, held
// in a StateMap, which is what the lookup costs in memory) and power levels
// naming plUsers moderators.
func benchRoom(b *testing.B, members, plUsers int) *room {
	b.Helper()
	r := stdRoom(b, event.MustVersion("12"))
	users := map[string]any{carol: 50}
	for i := range plUsers {
		users[fmt.Sprintf("@mod%d:a.test", i)] = 50
	}
	r.apply(r.stateEv(event.TypePowerLevels, "", alice, r.plContent(users, map[string]any{
		"events": map[string]any{"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 150, "m.room.server_acl": 100,
			"m.room.encryption": 100},
		"notifications": map[string]any{"room": 50},
	})))
	withJoinRule(r, `{"join_rule":"public"}`)
	for i := range members {
		u := fmt.Sprintf("@user%d:a.test", i)
		r.force(r.member(u, u, "join", map[string]any{"displayname": fmt.Sprintf("User %d", i)}))
	}
	return r
}

func BenchmarkAllowedMessage(b *testing.B) {
	r := benchRoom(b, 20_000, 10)
	ev := r.msg("m.room.message", "@user12345:a.test", `{"body":"hello","msgtype":"m.text"}`)
	lookup := r.state.Lookup
	b.ReportAllocs()
	for b.Loop() {
		if err := Allowed(ev, lookup); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllowedMemberJoin(b *testing.B) {
	r := benchRoom(b, 20_000, 10)
	ev := r.member(dave, dave, "join", map[string]any{"displayname": "Dave"})
	lookup := r.state.Lookup
	b.ReportAllocs()
	for b.Loop() {
		if err := Allowed(ev, lookup); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowedRestrictedJoin reads the power levels as well (the
// authorising user's invite power).
func BenchmarkAllowedRestrictedJoin(b *testing.B) {
	r := benchRoom(b, 20_000, 10)
	withJoinRule(r, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!space:a.test"}]}`)
	ev := r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": carol})
	lookup := r.state.Lookup
	b.ReportAllocs()
	for b.Loop() {
		if err := Allowed(ev, lookup); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowedMessageLargePowerLevels is the worst case for parsing:
// power levels listing 1,000 users (about a quarter of the 64 KiB PDU limit).
func BenchmarkAllowedMessageLargePowerLevels(b *testing.B) {
	r := benchRoom(b, 1_000, 1_000)
	ev := r.msg("m.room.message", "@user123:a.test", `{"body":"hello","msgtype":"m.text"}`)
	lookup := r.state.Lookup
	b.ReportAllocs()
	for b.Loop() {
		if err := Allowed(ev, lookup); err != nil {
			b.Fatal(err)
		}
	}
}
