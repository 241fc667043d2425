package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"plaza/homeserver"
	"plaza/homeserver/event"
	"plaza/homeserver/password"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// demoPassword is the password of the demo users. It is printed in the log:
// the demo is for trying Plaza out on a laptop, never for a server others use.
const demoPassword = "plaza-demo"

type demoUser struct{ localpart, displayName string }

// demoUsers are alice, who creates the welcome room, and bob.
func demoUsers() [2]demoUser { return [2]demoUser{{"alice", "Alice"}, {"bob", "Bob"}} }

// seedDemo creates the demo users and the welcome room, skipping what exists:
// users one by one, the room if alice has joined any room. So restarts with
// --demo change nothing, and a user deleted by hand comes back.
func seedDemo(ctx context.Context, hs *homeserver.Server, cfg Config, log *slog.Logger) error {
	var ids [2]string
	for i, u := range demoUsers() {
		ids[i] = "@" + u.localpart + ":" + cfg.ServerName
		created, err := ensureDemoUser(ctx, hs.DB, ids[i], u)
		if err != nil {
			return err
		}
		if created {
			log.Info("demo: created user "+ids[i], "password", demoPassword)
		}
	}
	alice, bob := ids[0], ids[1]

	joined, err := hs.DB.RoomsWithMembership(ctx, alice, "join")
	if err != nil {
		return err
	}
	if len(joined) > 0 {
		log.Info("demo: users and welcome room already exist", "room_id", joined[0])
		return nil
	}
	roomID, err := createWelcomeRoom(ctx, hs, cfg, alice, bob)
	if err != nil {
		return err
	}
	log.Info("demo: created the room \"Welcome to Plaza\"", "room_id", roomID, "alias", welcomeAlias(cfg))
	return nil
}

func ensureDemoUser(ctx context.Context, db *storage.DB, userID string, u demoUser) (bool, error) {
	if _, err := db.AccountByUserID(ctx, userID); err == nil {
		return false, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	hash, err := password.Hash(demoPassword, 0)
	if err != nil {
		return false, err
	}
	err = db.CreateAccount(ctx, storage.Account{
		UserID: userID, Localpart: u.localpart, PasswordHash: hash, DisplayName: u.displayName,
	}, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrExists) {
		return false, nil
	}
	return err == nil, err
}

func welcomeAlias(cfg Config) string { return "#welcome:" + cfg.ServerName }

// createWelcomeRoom makes a public, world-readable room the way a client's
// "public_chat" preset would, then has alice and bob talk in it.
func createWelcomeRoom(ctx context.Context, hs *homeserver.Server, cfg Config, alice, bob string) (string, error) {
	v, err := event.Version(event.DefaultRoomVersion)
	if err != nil {
		return "", err
	}
	users := map[string]int{}
	if !v.PrivilegedCreators {
		// From room version 12 on, the creator has infinite power and must
		// not be listed; before, it needs 100 explicitly.
		users[alice] = 100
	}
	alias := welcomeAlias(cfg)
	initial := []room.Request{
		state(alice, event.TypeMember, alice, map[string]any{"membership": "join", "displayname": demoUsers()[0].displayName}),
		state(alice, event.TypePowerLevels, "", map[string]any{
			"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
			"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		}),
		state(alice, event.TypeJoinRules, "", map[string]any{"join_rule": "public"}),
		state(alice, event.TypeHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}),
		state(alice, "m.room.guest_access", "", map[string]any{"guest_access": "can_join"}),
		state(alice, "m.room.name", "", map[string]any{"name": "Welcome to Plaza"}),
		state(alice, "m.room.topic", "", map[string]any{"topic": "Say hello! A demo room made by `plaza serve --demo`. Log in as alice or bob, password " + demoPassword + "."}),
		state(alice, "m.room.canonical_alias", "", map[string]any{"alias": alias}),
	}
	createContent, err := json.Marshal(map[string]any{"room_version": v.ID})
	if err != nil {
		return "", err
	}
	roomID, err := hs.Rooms.CreateRoom(ctx, v, alice, createContent, initial)
	if err != nil {
		return "", fmt.Errorf("creating the welcome room: %w", err)
	}
	if err := hs.DB.CreateAlias(ctx, alias, roomID, alice); err != nil && !errors.Is(err, storage.ErrExists) {
		return "", fmt.Errorf("creating alias %s: %w", alias, err)
	}
	if err := hs.DB.SetPublished(ctx, roomID, true); err != nil {
		return "", fmt.Errorf("publishing the welcome room: %w", err)
	}

	steps := []room.Request{state(bob, event.TypeMember, bob, map[string]any{"membership": "join", "displayname": demoUsers()[1].displayName})}
	for i, text := range welcomeConversation(cfg) {
		sender := alice
		if i%2 == 1 {
			sender = bob
		}
		steps = append(steps, message(sender, text))
	}
	for _, req := range steps {
		if _, err := hs.Rooms.Send(ctx, roomID, req); err != nil {
			return "", fmt.Errorf("writing the welcome conversation: %w", err)
		}
	}
	return roomID, nil
}

// welcomeConversation alternates alice, bob, alice, …
func welcomeConversation(cfg Config) []string {
	return []string{
		"Welcome to Plaza! 👋 This room was made by `plaza serve --demo`, so there is something to look at.",
		"Hi Alice! So what is Plaza, exactly?",
		"A chat server for developer communities, in the spirit of Gitter: a room for every GitHub or GitLab project, open for anyone to read.",
		"And underneath it is a real Matrix homeserver?",
		"Yes. Every room is an ordinary Matrix room, so any Matrix client works: Element, Cinny, FluffyChat, or matrix-js-sdk in your own code.",
		"How do I log in?",
		"Point your client's homeserver at " + cfg.PublicURL + " and sign in as alice or bob, password " + demoPassword + ".",
		"Can I have an account of my own?",
		"If registration is open (`make run` opens it), register from your client. Otherwise an admin runs `plaza admin create-user --username you --password -`, or hands out a token from `plaza admin registration-token`.",
		"Where is all this stored?",
		"In PostgreSQL. With no PLAZA_DATABASE_URL, Plaza runs a private PostgreSQL cluster in " + cfg.EmbeddedClusterDir() + " and stops it when Plaza stops.",
		"What is coming next?",
		"Planned: sign-in with GitHub and GitLab, rooms created on demand for each repository, search, and public archives that search engines can index.",
		"Sounds good. Say hello, whoever is reading this! 🙂",
	}
}

func state(sender, typ, stateKey string, content map[string]any) room.Request {
	return room.Request{Sender: sender, Type: typ, StateKey: &stateKey, Content: mustJSON(content)}
}

func message(sender, body string) room.Request {
	return room.Request{Sender: sender, Type: "m.room.message", Content: mustJSON(map[string]any{"msgtype": "m.text", "body": body})}
}

// mustJSON marshals maps of strings, numbers and nested maps, which cannot fail.
func mustJSON(v map[string]any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
