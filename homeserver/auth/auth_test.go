package auth

import (
	"encoding/json"
	"errors"
	"testing"

	"plaza/homeserver/event"
	"plaza/homeserver/signing"
)

// expectation gives, per room version, the rule that must reject an event
// (in v12 numbering, as the package writes rules) or nil for "allowed".
type expectation func(v *event.RoomVersion) []int

func ok(*event.RoomVersion) []int { return nil }

func rej(path ...int) expectation { return func(*event.RoomVersion) []int { return path } }

// from returns before for versions below n and after from n on.
func from(n int, before, after expectation) expectation {
	return func(v *event.RoomVersion) []int {
		if num(v) < n {
			return before(v)
		}
		return after(v)
	}
}

type authCase struct {
	name string
	// min and max bound the versions the case runs on (0: 6 and 12).
	min, max int
	// room makes the starting room; stdRoom when nil.
	room func(testing.TB, *event.RoomVersion) *room
	// build adds what the case needs to the state and returns the event to check.
	build func(r *room) *event.Event
	want  expectation
}

// bare is a room without even a create event, for create event cases.
func bare(tb testing.TB, v *event.RoomVersion) *room {
	key, err := signing.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return &room{tb: tb, v: v, key: key, id: "!room:a.test", state: StateMap{}, prev: []string{}}
}

func createWith(content func(v *event.RoomVersion) map[string]any) func(r *room) *event.Event {
	return func(r *room) *event.Event {
		return r.build(event.Proto{Type: event.TypeCreate, StateKey: sp(""), Sender: alice,
			Content: js(content(r.v)), PrevEvents: []string{}, AuthEvents: []string{}})
	}
}

func usualCreate(v *event.RoomVersion) map[string]any {
	c := map[string]any{"room_version": v.ID}
	if !v.ImplicitCreator {
		c["creator"] = alice
	}
	return c
}

func usualCreateWith(k string, val any) func(v *event.RoomVersion) map[string]any {
	return func(v *event.RoomVersion) map[string]any {
		c := usualCreate(v)
		c[k] = val
		return c
	}
}

// roomWithCreate is a room whose create event has an extra content member,
// with alice joined, standard power levels and a public join rule.
func roomWithCreate(k string, val any) func(testing.TB, *event.RoomVersion) *room {
	return func(tb testing.TB, v *event.RoomVersion) *room {
		r := newRoom(tb, v, usualCreateWith(k, val)(v))
		r.apply(r.member(alice, alice, "join", nil))
		r.apply(r.stateEv(event.TypePowerLevels, "", alice, r.plContent(nil, nil)))
		r.apply(r.stateEv(event.TypeJoinRules, "", alice, `{"join_rule":"public"}`))
		return r
	}
}

// withJoinRule forces a join rules content.
func withJoinRule(r *room, content string) {
	r.force(r.stateEv(event.TypeJoinRules, "", alice, content))
}

// withPL forces power levels (users as for plContent).
func withPL(r *room, users, extra map[string]any) {
	r.force(r.stateEv(event.TypePowerLevels, "", alice, r.plContent(users, extra)))
}

// withPLRaw forces a power levels content exactly as given.
func withPLRaw(r *room, content string) {
	r.force(r.stateEv(event.TypePowerLevels, "", alice, content))
}

// thirdParty sets up an m.room.third_party_invite by carol for token "tok"
// with the identity server's public key, and returns the signed object
// inviting mxid, signed by the identity server.
type thirdParty struct {
	idKey  signing.Key
	signed json.RawMessage
}

func newThirdParty(r *room, mxid, token string, keyInEvent func(pub string) map[string]any) thirdParty {
	r.tb.Helper()
	k, err := signing.GenerateKey()
	if err != nil {
		r.tb.Fatal(err)
	}
	pub := signing.EncodeBase64(k.Public())
	content := map[string]any{"display_name": "d...@example.org", "key_validity_url": "https://id.test/isvalid"}
	for kk, vv := range keyInEvent(pub) {
		content[kk] = vv
	}
	r.apply(r.stateEv(event.TypeThirdPartyInvite, token, carol, content))
	signed, err := signing.SignJSON(js(map[string]any{"mxid": mxid, "token": token}), "id.test", k)
	if err != nil {
		r.tb.Fatal(err)
	}
	return thirdParty{idKey: k, signed: signed}
}

func singleKey(pub string) map[string]any { return map[string]any{"public_key": pub} }

func tpInvite(r *room, sender, target string, tpi any) *event.Event {
	return r.member(sender, target, "invite", map[string]any{"third_party_invite": tpi})
}

func authCases() []authCase {
	return []authCase{
		// Rule 1: m.room.create.
		{name: "create/valid", room: bare, build: createWith(usualCreate), want: ok},
		{name: "create/prev_events", room: bare, want: rej(1, 1), build: func(r *room) *event.Event {
			return r.build(event.Proto{Type: event.TypeCreate, StateKey: sp(""), Sender: alice,
				Content: js(usualCreate(r.v)), PrevEvents: []string{"$earlier"}, AuthEvents: []string{}})
		}},
		{name: "create/state_key not empty is still rule 1", want: rej(1, 1), build: func(r *room) *event.Event {
			return r.stateEv(event.TypeCreate, "x", alice, usualCreate(r.v))
		}},
		{name: "create/room_id domain differs from sender", max: 11, room: bare, want: rej(1, 2), build: func(r *room) *event.Event {
			return r.build(event.Proto{Type: event.TypeCreate, StateKey: sp(""), Sender: alice, RoomID: "!room:elsewhere.test",
				Content: js(usualCreate(r.v)), PrevEvents: []string{}, AuthEvents: []string{}})
		}},
		{name: "create/unknown room_version", room: bare, build: createWith(usualCreateWith("room_version", "99")), want: rej(1, 3)},
		{name: "create/unsupported room_version 5", room: bare, build: createWith(usualCreateWith("room_version", "5")), want: rej(1, 3)},
		{name: "create/room_version not a string", room: bare, build: createWith(usualCreateWith("room_version", 12)), want: rej(1, 3)},
		{name: "create/no room_version", room: bare, want: ok, build: createWith(func(v *event.RoomVersion) map[string]any {
			c := usualCreate(v)
			delete(c, "room_version")
			return c
		})},
		{name: "create/no creator", room: bare, want: from(11, rej(1, 4), ok), build: createWith(func(v *event.RoomVersion) map[string]any {
			return map[string]any{"room_version": v.ID}
		})},
		{name: "create/additional_creators valid", room: bare, build: createWith(usualCreateWith("additional_creators", []string{bob, zed})), want: ok},
		{name: "create/additional_creators not an array", room: bare, build: createWith(usualCreateWith("additional_creators", bob)),
			want: from(12, ok, rej(1, 4))},
		{name: "create/additional_creators not user IDs", room: bare, build: createWith(usualCreateWith("additional_creators", []string{"bob"})),
			want: from(12, ok, rej(1, 4))},
		{name: "create/additional_creators not strings", room: bare, build: createWith(usualCreateWith("additional_creators", []any{bob, 1})),
			want: from(12, ok, rej(1, 4))},

		// v12 rule 2, and the create event in the state.
		{name: "room_id/not the create event's", min: 12, want: rej(2), build: func(r *room) *event.Event {
			return r.build(event.Proto{Type: "m.room.message", Sender: bob, RoomID: "!notthecreateevent", Content: js(`{"body":"hi"}`)})
		}},
		{name: "room_id/no create event in state", want: from(12, rej(3, 4), rej(2)), build: func(r *room) *event.Event {
			ev := r.msg("m.room.message", bob, `{"body":"hi"}`)
			delete(r.state, event.TypeKey{Type: event.TypeCreate})
			return ev
		}},

		// m.federate (rule 4, 3 before v12).
		{name: "federate/false, remote join", room: roomWithCreate("m.federate", false), want: rej(4), build: func(r *room) *event.Event {
			return r.member(zed, zed, "join", nil)
		}},
		{name: "federate/false, local join", room: roomWithCreate("m.federate", false), want: ok, build: func(r *room) *event.Event {
			return r.member(dave, dave, "join", nil)
		}},
		{name: "federate/true, remote join", room: roomWithCreate("m.federate", true), want: ok, build: func(r *room) *event.Event {
			return r.member(zed, zed, "join", nil)
		}},
		{name: "federate/the string false is not false", room: roomWithCreate("m.federate", "false"), want: ok, build: func(r *room) *event.Event {
			return r.member(zed, zed, "join", nil)
		}},

		// Rule 5.1 and 5.8.
		{name: "member/no membership", want: rej(5, 1), build: func(r *room) *event.Event {
			return r.stateEv(event.TypeMember, bob, bob, `{"displayname":"Bob"}`)
		}},
		{name: "member/Membership is not membership", want: rej(5, 1), build: func(r *room) *event.Event {
			return r.stateEv(event.TypeMember, bob, bob, `{"Membership":"join"}`)
		}},
		{name: "member/no state_key", want: rej(5, 1), build: func(r *room) *event.Event {
			return r.msg(event.TypeMember, bob, `{"membership":"join"}`)
		}},
		{name: "member/membership not a string", want: rej(5, 8), build: func(r *room) *event.Event {
			return r.stateEv(event.TypeMember, bob, bob, `{"membership":["join"]}`)
		}},
		{name: "member/unknown membership", want: rej(5, 8), build: func(r *room) *event.Event {
			return r.member(bob, bob, "lurk", nil)
		}},

		// Rule 5.3: join.
		{name: "join/creator right after create", room: func(tb testing.TB, v *event.RoomVersion) *room { return newRoom(tb, v, nil) },
			want: ok, build: func(r *room) *event.Event { return r.member(alice, alice, "join", nil) }},
		{name: "join/content.creator right after create", want: from(11, ok, rej(5, 3, 7)),
			room: func(tb testing.TB, v *event.RoomVersion) *room {
				return newRoom(tb, v, map[string]any{"room_version": v.ID, "creator": bob})
			},
			build: func(r *room) *event.Event { return r.member(bob, bob, "join", nil) }},
		{name: "join/sender of a create naming another creator, right after create", want: from(11, rej(5, 3, 7), ok),
			room: func(tb testing.TB, v *event.RoomVersion) *room {
				return newRoom(tb, v, map[string]any{"room_version": v.ID, "creator": bob})
			},
			build: func(r *room) *event.Event { return r.member(alice, alice, "join", nil) }},
		{name: "join/someone else right after create", room: func(tb testing.TB, v *event.RoomVersion) *room { return newRoom(tb, v, nil) },
			want: rej(5, 3, 7), build: func(r *room) *event.Event { return r.member(bob, bob, "join", nil) }},
		{name: "join/creator later, not invited", want: rej(5, 3, 7), build: func(r *room) *event.Event {
			r.apply(r.member(alice, alice, "leave", nil))
			return r.member(alice, alice, "join", nil)
		}},
		{name: "join/additional creator right after create", min: 12,
			room: func(tb testing.TB, v *event.RoomVersion) *room {
				return newRoom(tb, v, map[string]any{"room_version": v.ID, "additional_creators": []string{bob}})
			},
			want: rej(5, 3, 7), build: func(r *room) *event.Event { return r.member(bob, bob, "join", nil) }},
		{name: "join/sender is not state_key", want: rej(5, 3, 2), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"public"}`)
			return r.member(carol, dave, "join", nil)
		}},
		{name: "join/banned", want: rej(5, 3, 3), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"public"}`)
			r.apply(r.member(carol, dave, "ban", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/invite rule, invited", want: ok, build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/invite rule, not invited", want: rej(5, 3, 7), build: func(r *room) *event.Event {
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/invite rule, already joined (profile change)", want: ok, build: func(r *room) *event.Event {
			return r.member(bob, bob, "join", map[string]any{"displayname": "Bob"})
		}},
		{name: "join/no join_rules event, invited", want: ok, build: func(r *room) *event.Event {
			delete(r.state, event.TypeKey{Type: event.TypeJoinRules})
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/no join_rules event, not invited", want: rej(5, 3, 7), build: func(r *room) *event.Event {
			delete(r.state, event.TypeKey{Type: event.TypeJoinRules})
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/public", want: ok, build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"public"}`)
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/unknown join rule", want: rej(5, 3, 7), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"private"}`)
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/knock rule, invited", want: from(7, rej(5, 3, 7), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/knock rule, not invited", want: rej(5, 3, 7), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/restricted, authorised by a joined moderator", want: from(8, rej(5, 3, 7), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!space:a.test"}]}`)
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": carol})
		}},
		{name: "join/restricted, authoriser without invite power", want: from(8, rej(5, 3, 7), rej(5, 3, 5, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted"}`)
			withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 50})
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": bob})
		}},
		{name: "join/restricted, authoriser not joined", want: from(8, rej(5, 3, 7), rej(5, 3, 5, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted"}`)
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": erin})
		}},
		{name: "join/restricted, no authoriser", want: from(8, rej(5, 3, 7), rej(5, 3, 5, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted"}`)
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/restricted, authoriser not a string", want: from(8, rej(5, 3, 7), rej(5, 3, 5, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted"}`)
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": 1})
		}},
		{name: "join/restricted, invited", want: from(8, rej(5, 3, 7), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"restricted"}`)
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "join", nil)
		}},
		{name: "join/restricted, authorised by the creator above every level", want: from(8, rej(5, 3, 7), from(12, rej(5, 3, 5, 2), ok)),
			build: func(r *room) *event.Event {
				withJoinRule(r, `{"join_rule":"restricted"}`)
				withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 101})
				return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": alice})
			}},
		{name: "join/knock_restricted, authorised", want: from(10, rej(5, 3, 7), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock_restricted"}`)
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": carol})
		}},
		{name: "join/knock_restricted, authoriser without invite power", want: from(10, rej(5, 3, 7), rej(5, 3, 5, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock_restricted"}`)
			withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 50})
			return r.member(dave, dave, "join", map[string]any{"join_authorised_via_users_server": bob})
		}},

		// Rule 5.4: invite.
		{name: "invite/by a member", want: ok, build: func(r *room) *event.Event { return r.member(bob, dave, "invite", nil) }},
		{name: "invite/sender not joined", want: rej(5, 4, 2), build: func(r *room) *event.Event { return r.member(dave, erin, "invite", nil) }},
		{name: "invite/target joined", want: rej(5, 4, 3), build: func(r *room) *event.Event { return r.member(carol, bob, "invite", nil) }},
		{name: "invite/target banned", want: rej(5, 4, 3), build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "ban", nil))
			return r.member(carol, dave, "invite", nil)
		}},
		{name: "invite/below the invite level", want: rej(5, 4, 5), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 50})
			return r.member(bob, dave, "invite", nil)
		}},
		{name: "invite/at the invite level", want: ok, build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 50})
			return r.member(carol, dave, "invite", nil)
		}},
		{name: "invite/to a v12 creator who left, by a moderator", min: 12, want: ok, build: func(r *room) *event.Event {
			r.apply(r.member(alice, alice, "leave", nil))
			return r.member(carol, alice, "invite", nil)
		}},

		// Rule 5.4.1: third-party invites.
		{name: "3pid/valid signature (public_key)", want: ok, build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			return tpInvite(r, carol, dave, map[string]any{"display_name": "d...", "signed": tp.signed})
		}},
		{name: "3pid/valid signature (public_keys)", want: ok, build: func(r *room) *event.Event {
			other, _ := signing.GenerateKey()
			tp := newThirdParty(r, dave, "tok", func(pub string) map[string]any {
				return map[string]any{"public_key": signing.EncodeBase64(other.Public()), "public_keys": []any{
					map[string]any{"public_key": "not base64!"}, map[string]any{"public_key": pub}}}
			})
			return tpInvite(r, carol, dave, map[string]any{"signed": tp.signed})
		}},
		{name: "3pid/valid signature, URL-safe key", want: ok, build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", func(string) map[string]any { return nil })
			r.force(r.stateEv(event.TypeThirdPartyInvite, "tok", carol, map[string]any{"public_key": signing.EncodeURLBase64(tp.idKey.Public())}))
			return tpInvite(r, carol, dave, map[string]any{"signed": tp.signed})
		}},
		{name: "3pid/signed by a key the event does not hold", want: rej(5, 4, 1, 8), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			other, _ := signing.GenerateKey()
			signed, err := signing.SignJSON(js(map[string]any{"mxid": dave, "token": "tok"}), "id.test", other)
			if err != nil {
				r.tb.Fatal(err)
			}
			_ = tp
			return tpInvite(r, carol, dave, map[string]any{"signed": json.RawMessage(signed)})
		}},
		{name: "3pid/signature over another token", want: rej(5, 4, 1, 8), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			// The same key also backs a second invite; a signature over "tok"
			// must not redeem "tok2".
			r.apply(r.stateEv(event.TypeThirdPartyInvite, "tok2", carol, map[string]any{"public_key": signing.EncodeBase64(tp.idKey.Public())}))
			var s map[string]any
			_ = json.Unmarshal(tp.signed, &s)
			s["token"] = "tok2"
			return tpInvite(r, carol, dave, map[string]any{"signed": s})
		}},
		{name: "3pid/valid signature under a non-ed25519 key ID", want: rej(5, 4, 1, 8), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			var s map[string]any
			_ = json.Unmarshal(tp.signed, &s)
			byKey := s["signatures"].(map[string]any)["id.test"].(map[string]any)
			byKey["curve25519:x"] = byKey[tp.idKey.ID]
			delete(byKey, tp.idKey.ID)
			return tpInvite(r, carol, dave, map[string]any{"signed": s})
		}},
		{name: "3pid/no signatures", want: rej(5, 4, 1, 8), build: func(r *room) *event.Event {
			newThirdParty(r, dave, "tok", singleKey)
			return tpInvite(r, carol, dave, map[string]any{"signed": map[string]any{"mxid": dave, "token": "tok"}})
		}},
		{name: "3pid/target banned", want: rej(5, 4, 1, 1), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			r.apply(r.member(carol, dave, "ban", nil))
			return tpInvite(r, carol, dave, map[string]any{"signed": tp.signed})
		}},
		{name: "3pid/no signed", want: rej(5, 4, 1, 2), build: func(r *room) *event.Event {
			newThirdParty(r, dave, "tok", singleKey)
			return tpInvite(r, carol, dave, map[string]any{"display_name": "d..."})
		}},
		{name: "3pid/third_party_invite not an object", want: rej(5, 4, 1, 2), build: func(r *room) *event.Event {
			return tpInvite(r, carol, dave, "tok")
		}},
		{name: "3pid/no token", want: rej(5, 4, 1, 3), build: func(r *room) *event.Event {
			newThirdParty(r, dave, "tok", singleKey)
			return tpInvite(r, carol, dave, map[string]any{"signed": map[string]any{"mxid": dave}})
		}},
		{name: "3pid/mxid is not the target", want: rej(5, 4, 1, 4), build: func(r *room) *event.Event {
			tp := newThirdParty(r, erin, "tok", singleKey)
			return tpInvite(r, carol, dave, map[string]any{"signed": tp.signed})
		}},
		{name: "3pid/no third_party_invite event for the token", want: rej(5, 4, 1, 5), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			delete(r.state, event.TypeKey{Type: event.TypeThirdPartyInvite, StateKey: "tok"})
			return tpInvite(r, carol, dave, map[string]any{"signed": tp.signed})
		}},
		{name: "3pid/sender did not send the third_party_invite", want: rej(5, 4, 1, 6), build: func(r *room) *event.Event {
			tp := newThirdParty(r, dave, "tok", singleKey)
			return tpInvite(r, bob, dave, map[string]any{"signed": tp.signed})
		}},

		// Rule 5.5: leave.
		{name: "leave/joined member leaves", want: ok, build: func(r *room) *event.Event { return r.member(bob, bob, "leave", nil) }},
		{name: "leave/rejecting an invite", want: ok, build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "leave", nil)
		}},
		{name: "leave/rescinding a knock", want: from(7, rej(5, 5, 1), ok), build: func(r *room) *event.Event {
			r.setMember(dave, dave, "knock")
			return r.member(dave, dave, "leave", nil)
		}},
		{name: "leave/never in the room", want: rej(5, 5, 1), build: func(r *room) *event.Event { return r.member(dave, dave, "leave", nil) }},
		{name: "leave/banned user cannot unban themselves", want: rej(5, 5, 1), build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "ban", nil))
			return r.member(dave, dave, "leave", nil)
		}},
		{name: "kick/sender not joined", want: rej(5, 5, 2), build: func(r *room) *event.Event { return r.member(dave, bob, "leave", nil) }},
		{name: "kick/moderator kicks member", want: ok, build: func(r *room) *event.Event { return r.member(carol, bob, "leave", nil) }},
		{name: "kick/member below kick level", want: rej(5, 5, 5), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"kick": 0})
			r.setMember(alice, erin, "join")
			return r.member(bob, erin, "leave", nil) // 0 >= kick 0, but not above erin's 0
		}},
		{name: "kick/member kicks moderator", want: rej(5, 5, 5), build: func(r *room) *event.Event { return r.member(bob, carol, "leave", nil) }},
		{name: "kick/peer", want: rej(5, 5, 5), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 50}, nil)
			r.setMember(alice, erin, "join")
			return r.member(carol, erin, "leave", nil)
		}},
		{name: "unban/below the ban level", want: rej(5, 5, 3), build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "ban", nil))
			withPL(r, map[string]any{carol: 50}, map[string]any{"ban": 60})
			return r.member(carol, dave, "leave", nil)
		}},
		{name: "unban/moderator", want: ok, build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "ban", nil))
			return r.member(carol, dave, "leave", nil)
		}},
		{name: "kick/admin kicks the creator", want: rej(5, 5, 5), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			r.setMember(alice, erin, "join")
			return r.member(erin, alice, "leave", nil)
		}},
		{name: "kick/creator kicks an admin at 100", want: from(12, rej(5, 5, 5), ok), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			r.setMember(alice, erin, "join")
			return r.member(alice, erin, "leave", nil)
		}},
		{name: "kick/creators cannot kick each other", min: 12, want: rej(5, 5, 5), room: coCreatorRoom, build: func(r *room) *event.Event {
			return r.member(alice, erin, "leave", nil)
		}},
		{name: "kick/additional creator cannot kick the sender creator", min: 12, want: rej(5, 5, 5), room: coCreatorRoom, build: func(r *room) *event.Event {
			return r.member(erin, alice, "leave", nil)
		}},
		{name: "kick/additional creator kicks a moderator", min: 12, want: ok, room: coCreatorRoom, build: func(r *room) *event.Event {
			return r.member(erin, carol, "leave", nil)
		}},

		// Rule 5.6: ban.
		{name: "ban/sender not joined", want: rej(5, 6, 1), build: func(r *room) *event.Event { return r.member(dave, bob, "ban", nil) }},
		{name: "ban/moderator bans member", want: ok, build: func(r *room) *event.Event { return r.member(carol, bob, "ban", nil) }},
		{name: "ban/moderator bans non-member", want: ok, build: func(r *room) *event.Event { return r.member(carol, dave, "ban", nil) }},
		{name: "ban/member below ban level", want: rej(5, 6, 3), build: func(r *room) *event.Event { return r.member(bob, dave, "ban", nil) }},
		{name: "ban/peer", want: rej(5, 6, 3), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 50}, nil)
			return r.member(carol, erin, "ban", nil)
		}},
		{name: "ban/admin bans the creator", want: rej(5, 6, 3), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			r.setMember(alice, erin, "join")
			return r.member(erin, alice, "ban", nil)
		}},
		{name: "ban/creator bans an admin at 100", want: from(12, rej(5, 6, 3), ok), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			return r.member(alice, erin, "ban", nil)
		}},
		{name: "ban/creators cannot ban each other", min: 12, want: rej(5, 6, 3), room: coCreatorRoom, build: func(r *room) *event.Event {
			return r.member(erin, alice, "ban", nil)
		}},

		// Rule 5.7: knock (v7+); before v7 "knock" is an unknown membership.
		{name: "knock/knock rule", want: from(7, rej(5, 8), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			return r.member(dave, dave, "knock", nil)
		}},
		{name: "knock/invite rule", want: from(7, rej(5, 8), rej(5, 7, 1)), build: func(r *room) *event.Event {
			return r.member(dave, dave, "knock", nil)
		}},
		{name: "knock/knock_restricted rule", want: from(7, rej(5, 8), from(10, rej(5, 7, 1), ok)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock_restricted"}`)
			return r.member(dave, dave, "knock", nil)
		}},
		{name: "knock/sender is not state_key", want: from(7, rej(5, 8), rej(5, 7, 2)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			return r.member(carol, dave, "knock", nil)
		}},
		{name: "knock/already invited", want: from(7, rej(5, 8), rej(5, 7, 4)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			r.apply(r.member(carol, dave, "invite", nil))
			return r.member(dave, dave, "knock", nil)
		}},
		{name: "knock/banned", want: from(7, rej(5, 8), rej(5, 7, 4)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			r.apply(r.member(carol, dave, "ban", nil))
			return r.member(dave, dave, "knock", nil)
		}},
		{name: "knock/already joined", want: from(7, rej(5, 8), rej(5, 7, 4)), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			return r.member(bob, bob, "knock", nil)
		}},
		{name: "knock/after leaving", want: from(7, rej(5, 8), ok), build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"knock"}`)
			r.apply(r.member(bob, bob, "leave", nil))
			return r.member(bob, bob, "knock", nil)
		}},

		// Rule 6: the sender must be joined.
		{name: "joined/member sends a message", want: ok, build: func(r *room) *event.Event { return r.msg("m.room.message", bob, `{"body":"hi"}`) }},
		{name: "joined/non-member sends a message", want: rej(6), build: func(r *room) *event.Event { return r.msg("m.room.message", dave, `{"body":"hi"}`) }},
		{name: "joined/invited user sends a message", want: rej(6), build: func(r *room) *event.Event {
			r.apply(r.member(carol, dave, "invite", nil))
			return r.msg("m.room.message", dave, `{"body":"hi"}`)
		}},
		{name: "joined/former member sends a message", want: rej(6), build: func(r *room) *event.Event {
			r.apply(r.member(bob, bob, "leave", nil))
			return r.msg("m.room.message", bob, `{"body":"hi"}`)
		}},
		{name: "joined/remote member", want: ok, build: func(r *room) *event.Event {
			withJoinRule(r, `{"join_rule":"public"}`)
			r.apply(r.member(zed, zed, "join", nil))
			return r.msg("m.room.message", zed, `{"body":"hi"}`)
		}},

		// Rule 7: m.room.third_party_invite.
		{name: "third_party_invite/at invite level", want: ok, build: func(r *room) *event.Event {
			return r.stateEv(event.TypeThirdPartyInvite, "tok", bob, `{"public_key":"abc"}`)
		}},
		{name: "third_party_invite/below invite level", want: rej(7), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"invite": 50})
			return r.stateEv(event.TypeThirdPartyInvite, "tok", bob, `{"public_key":"abc"}`)
		}},
		{name: "third_party_invite/not joined", want: rej(6), build: func(r *room) *event.Event {
			return r.stateEv(event.TypeThirdPartyInvite, "tok", dave, `{"public_key":"abc"}`)
		}},
		{name: "third_party_invite/invite level beats the state level", want: ok, build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events": map[string]any{event.TypeThirdPartyInvite: 100}})
			return r.stateEv(event.TypeThirdPartyInvite, "tok", bob, `{"public_key":"abc"}`)
		}},

		// Rule 8: required power level.
		{name: "level/member sets the name", want: rej(8), build: func(r *room) *event.Event {
			return r.stateEv("m.room.name", "", bob, `{"name":"x"}`)
		}},
		{name: "level/moderator sets the name", want: ok, build: func(r *room) *event.Event {
			return r.stateEv("m.room.name", "", carol, `{"name":"x"}`)
		}},
		{name: "level/events entry for a message type", want: rej(8), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events": map[string]any{"m.room.message": 10}})
			return r.msg("m.room.message", bob, `{"body":"hi"}`)
		}},
		{name: "level/events_default", want: rej(8), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events_default": 1})
			return r.msg("m.room.message", bob, `{"body":"hi"}`)
		}},
		{name: "level/state_default lowered", want: ok, build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"state_default": 0})
			return r.stateEv("m.room.topic", "", bob, `{"topic":"x"}`)
		}},
		{name: "level/redaction ignores the redact level", want: ok, build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"redact": 100})
			return r.build(event.Proto{Type: event.TypeRedaction, Sender: bob, Redacts: "$someoneelses", Content: js(`{}`)})
		}},
		{name: "level/redaction under an events entry", want: rej(8), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events": map[string]any{event.TypeRedaction: 10}})
			return r.build(event.Proto{Type: event.TypeRedaction, Sender: bob, Redacts: "$mine", Content: js(`{}`)})
		}},
		{name: "level/no power levels: creator sets state", room: noPLRoom, want: ok, build: func(r *room) *event.Event {
			return r.stateEv("m.room.name", "", alice, `{"name":"x"}`)
		}},
		{name: "level/no power levels: member sets state", room: noPLRoom, want: rej(8), build: func(r *room) *event.Event {
			return r.stateEv("m.room.name", "", bob, `{"name":"x"}`)
		}},
		{name: "level/no power levels: member sends a message", room: noPLRoom, want: ok, build: func(r *room) *event.Event {
			return r.msg("m.room.message", bob, `{"body":"hi"}`)
		}},
		{name: "level/invalid power levels in state", want: from(10, ok, rej(8)), build: func(r *room) *event.Event {
			withPLRaw(r, `{"users":{"@alice:a.test":"100","@carol:a.test":"50","@bob:a.test":"1"}}`)
			return r.msg("m.room.message", bob, `{"body":"hi"}`)
		}},

		// Rule 9: state keys that are user IDs.
		{name: "state_key/own user ID", want: ok, build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events": map[string]any{"org.example.status": 0}})
			return r.stateEv("org.example.status", bob, bob, `{"s":"busy"}`)
		}},
		{name: "state_key/someone else's user ID", want: rej(9), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50}, map[string]any{"events": map[string]any{"org.example.status": 0}})
			return r.stateEv("org.example.status", carol, bob, `{"s":"busy"}`)
		}},
		{name: "state_key/moderator writes someone else's", want: rej(9), build: func(r *room) *event.Event {
			return r.stateEv("org.example.status", bob, carol, `{"s":"busy"}`)
		}},
		{name: "state_key/@ but not a user ID of the sender", want: rej(9), build: func(r *room) *event.Event {
			return r.stateEv("org.example.status", "@", carol, `{"s":"busy"}`)
		}},
	}
}

// coCreatorRoom is a v12 room created by alice with erin as an additional
// creator, both joined, carol a joined moderator.
func coCreatorRoom(tb testing.TB, v *event.RoomVersion) *room {
	r := newRoom(tb, v, map[string]any{"room_version": v.ID, "additional_creators": []string{erin}})
	r.apply(r.member(alice, alice, "join", nil))
	r.apply(r.stateEv(event.TypePowerLevels, "", alice, r.plContent(map[string]any{carol: 50}, nil)))
	r.apply(r.stateEv(event.TypeJoinRules, "", alice, `{"join_rule":"invite"}`))
	for _, u := range []string{erin, carol} {
		r.apply(r.member(alice, u, "invite", nil))
		r.apply(r.member(u, u, "join", nil))
	}
	return r
}

// noPLRoom has no m.room.power_levels: alice joined, public, bob joined.
func noPLRoom(tb testing.TB, v *event.RoomVersion) *room {
	r := newRoom(tb, v, nil)
	r.apply(r.member(alice, alice, "join", nil))
	r.apply(r.stateEv(event.TypeJoinRules, "", alice, `{"join_rule":"public"}`))
	r.apply(r.member(bob, bob, "join", nil))
	return r
}

func runCases(t *testing.T, cases []authCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range versions() {
				if n := num(v); c.min != 0 && n < c.min || c.max != 0 && n > c.max {
					continue
				}
				mk := c.room
				if mk == nil {
					mk = stdRoom
				}
				r := mk(t, v)
				ev := c.build(r)
				expectRule(t, v, Allowed(ev, r.state.Lookup), c.want(v))
			}
		})
	}
}

func TestAllowed(t *testing.T) { runCases(t, authCases()) }

func TestAllowedBadInput(t *testing.T) {
	r := stdRoom(t, event.MustVersion("12"))
	if err := Allowed(nil, r.state.Lookup); err == nil || errors.Is(err, ErrForbidden) {
		t.Fatalf("nil event: %v", err)
	}
	if err := Allowed(r.create, nil); err == nil {
		t.Fatal("nil state allowed")
	}
}

func TestStateMap(t *testing.T) {
	r := stdRoom(t, event.MustVersion("12"))
	msg := r.msg("m.room.message", bob, `{}`)
	name1 := r.stateEv("m.room.name", "", carol, `{"name":"a"}`)
	name2 := r.stateEv("m.room.name", "", carol, `{"name":"b"}`)
	m := NewStateMap(msg, name1, name2)
	if len(m) != 1 || m.Lookup("m.room.name", "") != name2 || m.Lookup("m.room.message", "") != nil {
		t.Fatalf("state map: %v", m)
	}
}

func TestRuleErrorText(t *testing.T) {
	r := stdRoom(t, event.MustVersion("12"))
	r.apply(r.member(carol, dave, "ban", nil))
	err := Allowed(r.member(dave, dave, "join", nil), r.state.Lookup)
	want := "forbidden by the authorization rules (room version 12 rule 5.3.3: sender is banned)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}
