package auth

import (
	"testing"

	"plaza/homeserver/event"
)

// plBy builds an m.room.power_levels event by sender with the exact content.
func plBy(r *room, sender string, content any) *event.Event {
	return r.stateEv(event.TypePowerLevels, "", sender, content)
}

// carolEdits sets the previous power levels (users as plContent: alice 100
// before v12, carol 50 unless overridden) and has carol (50) send next.
func carolEdits(prevUsers, prevExtra, nextUsers, nextExtra map[string]any) func(r *room) *event.Event {
	return func(r *room) *event.Event {
		pu := map[string]any{carol: 50}
		for k, v := range prevUsers {
			pu[k] = v
		}
		withPL(r, pu, prevExtra)
		nu := map[string]any{carol: 50}
		for k, v := range nextUsers {
			if v == nil {
				delete(nu, k)
			} else {
				nu[k] = v
			}
		}
		return plBy(r, carol, r.plContent(nu, nextExtra))
	}
}

func powerLevelCases() []authCase {
	events := func(m map[string]any) map[string]any { return map[string]any{"events": m} }
	notif := func(m map[string]any) map[string]any { return map[string]any{"notifications": m} }
	return []authCase{
		{name: "pl/first power levels of the room", room: func(tb testing.TB, v *event.RoomVersion) *room {
			r := newRoom(tb, v, nil)
			r.apply(r.member(alice, alice, "join", nil))
			return r
		}, want: ok, build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{bob: 100}, map[string]any{"ban": 1000, "events": map[string]any{"m.x": 1000}}))
		}},

		// 10.1–10.3: shape of the content, per version.
		{name: "pl/string top-level value", want: from(10, ok, rej(10, 1)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"ban": "50"}))
		}},
		{name: "pl/string with whitespace and sign", want: from(10, ok, rej(10, 1)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"kick": " +0050 "}))
		}},
		{name: "pl/string that is not an integer", want: from(10, rej(10), rej(10, 1)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"ban": "5.0"}))
		}},
		{name: "pl/boolean top-level value", want: from(10, rej(10), rej(10, 1)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"invite": true}))
		}},
		{name: "pl/null top-level value", want: from(10, ok, rej(10, 1)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"redact": nil}))
		}},
		{name: "pl/string events value", want: from(10, ok, rej(10, 2)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, events(map[string]any{"m.room.name": "50"})))
		}},
		{name: "pl/events not an object", want: from(10, rej(10), rej(10, 2)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"events": []int{50}}))
		}},
		{name: "pl/notifications not an object", want: from(10, rej(10), rej(10, 2)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"notifications": 5}))
		}},
		{name: "pl/string notifications value", want: from(10, ok, rej(10, 2)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, notif(map[string]any{"room": "50"})))
		}},
		{name: "pl/string users value", want: from(10, ok, rej(10, 3)), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: "50"}, nil))
		}},
		{name: "pl/users key not a user ID", want: rej(10, 3), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50, "bob": 10}, nil))
		}},
		{name: "pl/users boolean value", want: rej(10, 3), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50, bob: true}, nil))
		}},
		{name: "pl/users null value", want: rej(10, 3), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50, bob: nil}, nil))
		}},
		{name: "pl/users not an object", want: rej(10, 3), build: func(r *room) *event.Event {
			return plBy(r, alice, map[string]any{"users": []string{carol}})
		}},
		{name: "pl/users value beyond canonical JSON range as a string", max: 9, want: rej(10, 3), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50, bob: "9007199254740992"}, nil))
		}},

		// 10.4 (v12): creators may not be listed.
		{name: "pl/creator listed in users", want: from(12, ok, rej(10, 4)), build: func(r *room) *event.Event {
			return plBy(r, alice, map[string]any{"users": map[string]any{alice: 100, carol: 50}})
		}},
		{name: "pl/additional creator listed in users", min: 12, room: coCreatorRoom, want: rej(10, 4), build: func(r *room) *event.Event {
			return plBy(r, alice, map[string]any{"users": map[string]any{erin: 50, carol: 50}})
		}},
		{name: "pl/creator listed, sent by a moderator", min: 12, want: rej(10, 4), build: func(r *room) *event.Event {
			return plBy(r, carol, map[string]any{"users": map[string]any{alice: 0, carol: 50}})
		}},

		// 10.6: top-level properties.
		{name: "pl/lower ban within own level", want: ok, build: carolEdits(nil, nil, nil, map[string]any{"ban": 40})},
		{name: "pl/change a level above own (kick 100 to 50)", want: rej(10, 6, 1),
			build: carolEdits(nil, map[string]any{"kick": 100}, nil, map[string]any{"kick": 50})},
		{name: "pl/change a level just above own (ban 51 to 50)", want: rej(10, 6, 1),
			build: carolEdits(nil, map[string]any{"ban": 51}, nil, map[string]any{"ban": 50})},
		{name: "pl/set a level just above own (ban 51)", want: rej(10, 6, 2), build: carolEdits(nil, nil, nil, map[string]any{"ban": 51})},
		{name: "pl/change an events entry just above own", want: rej(10, 7, 1),
			build: carolEdits(nil, events(map[string]any{"m.room.name": 51}), nil, events(map[string]any{"m.room.name": 50}))},
		{name: "pl/set a level above own (ban 60)", want: rej(10, 6, 2), build: carolEdits(nil, nil, nil, map[string]any{"ban": 60})},
		{name: "pl/add a level above own (invite 75)", want: rej(10, 6, 2), build: carolEdits(nil, nil, nil, map[string]any{"invite": 75})},
		{name: "pl/add a level at own (invite 50)", want: ok, build: carolEdits(nil, nil, nil, map[string]any{"invite": 50})},
		{name: "pl/remove a level above own (state_default 100)", want: rej(10, 6, 1),
			build: carolEdits(nil, map[string]any{"state_default": 100, "events": map[string]any{event.TypePowerLevels: 50}},
				nil, map[string]any{"events": map[string]any{event.TypePowerLevels: 50}})},
		{name: "pl/remove a level at own (redact 50)", want: ok, build: carolEdits(nil, map[string]any{"redact": 50}, nil, nil)},
		{name: "pl/same value as string and integer is no change", max: 9, want: ok,
			build: carolEdits(nil, map[string]any{"ban": "60"}, nil, map[string]any{"ban": 60})},

		// 10.7 and 10.8: events and notifications.
		{name: "pl/add an events entry above own", want: rej(10, 8, 1), build: carolEdits(nil, nil, nil, events(map[string]any{"m.room.name": 60}))},
		{name: "pl/add an events entry at own", want: ok, build: carolEdits(nil, nil, nil, events(map[string]any{"m.room.name": 50}))},
		{name: "pl/change an events entry from above own", want: rej(10, 7, 1),
			build: carolEdits(nil, events(map[string]any{"m.room.tombstone": 100}), nil, events(map[string]any{"m.room.tombstone": 50}))},
		{name: "pl/remove an events entry from above own", want: rej(10, 7, 1),
			build: carolEdits(nil, events(map[string]any{"m.room.tombstone": 100}), nil, nil)},
		{name: "pl/keep an events entry above own while changing others", want: ok,
			build: carolEdits(nil, events(map[string]any{"m.room.tombstone": 100}), nil, map[string]any{"ban": 40, "events": map[string]any{"m.room.tombstone": 100}})},
		{name: "pl/remove an events entry at own", want: ok,
			build: carolEdits(nil, events(map[string]any{"m.room.topic": 50}), nil, nil)},
		{name: "pl/change notifications.room from above own", want: rej(10, 7, 1),
			build: carolEdits(nil, notif(map[string]any{"room": 100}), nil, notif(map[string]any{"room": 50}))},
		{name: "pl/set notifications.room above own", want: rej(10, 8, 1), build: carolEdits(nil, nil, nil, notif(map[string]any{"room": 60}))},
		{name: "pl/lower notifications.room", want: ok,
			build: carolEdits(nil, notif(map[string]any{"room": 50}), nil, notif(map[string]any{"room": 40}))},

		// 10.9 and 10.10: users.
		{name: "pl/raise a member to own level", want: ok, build: carolEdits(nil, nil, map[string]any{bob: 50}, nil)},
		{name: "pl/raise a member above own level", want: rej(10, 10, 1), build: carolEdits(nil, nil, map[string]any{bob: 51}, nil)},
		{name: "pl/change a lower member", want: ok, build: carolEdits(map[string]any{bob: 10}, nil, map[string]any{bob: 40}, nil)},
		{name: "pl/remove a lower member", want: ok, build: carolEdits(map[string]any{bob: 10}, nil, map[string]any{bob: nil}, nil)},
		{name: "pl/demote a peer", want: rej(10, 9, 1), build: carolEdits(map[string]any{erin: 50}, nil, map[string]any{erin: 0}, nil)},
		{name: "pl/remove a peer", want: rej(10, 9, 1), build: carolEdits(map[string]any{erin: 50}, nil, map[string]any{erin: nil}, nil)},
		{name: "pl/keep a peer while changing others", want: ok,
			build: carolEdits(map[string]any{erin: 50}, nil, map[string]any{erin: 50, bob: 20}, nil)},
		{name: "pl/demote self", want: ok, build: carolEdits(nil, nil, map[string]any{carol: 10}, nil)},
		{name: "pl/raise self", want: rej(10, 10, 1), build: carolEdits(nil, nil, map[string]any{carol: 60}, nil)},
		{name: "pl/admin demotes the pre-v12 creator", max: 11, want: rej(10, 9, 1), build: func(r *room) *event.Event {
			withPL(r, map[string]any{carol: 50, erin: 100}, nil)
			r.setMember(alice, erin, "join")
			return plBy(r, erin, map[string]any{"users": map[string]any{alice: 50, carol: 50, erin: 100}})
		}},
		{name: "pl/creator sets levels beyond 100", want: from(12, rej(10, 6, 2), ok), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50}, map[string]any{"kick": maxLevel}))
		}},
		{name: "pl/creator raises a member to the maximum", want: from(12, rej(10, 10, 1), ok), build: func(r *room) *event.Event {
			return plBy(r, alice, r.plContent(map[string]any{carol: 50, bob: maxLevel}, nil))
		}},
		{name: "pl/member cannot send power levels", want: rej(8), build: func(r *room) *event.Event {
			return plBy(r, bob, r.plContent(map[string]any{carol: 50}, nil))
		}},
	}
}

func TestAllowedPowerLevels(t *testing.T) { runCases(t, powerLevelCases()) }
