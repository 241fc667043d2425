package community

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"plaza/community/forge"
	"plaza/homeserver/event"
	"plaza/homeserver/httpapi"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// Power levels the forge's access maps to.
const (
	levelAdmin = 100
	levelWrite = 50
)

func levelOf(a forge.Access) int64 {
	switch a {
	case forge.AccessAdmin:
		return levelAdmin
	case forge.AccessWrite:
		return levelWrite
	}
	return 0
}

// permCache remembers the forge's answers about users' access for a TTL.
type permCache struct {
	mu      sync.Mutex
	entries map[permKey]permEntry
}

type permKey struct{ userID, roomID string }

type permEntry struct {
	access  forge.Access
	expires time.Time
}

// maxPermEntries bounds the cache; past it, it starts over.
const maxPermEntries = 200_000

func (c *permCache) get(k permKey, now time.Time) (forge.Access, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.After(e.expires) {
		return 0, false
	}
	return e.access, true
}

func (c *permCache) put(k permKey, a forge.Access, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxPermEntries {
		c.entries = map[permKey]permEntry{}
	}
	c.entries[k] = permEntry{access: a, expires: expires}
}

// dropRoom forgets every answer about a room (a webhook said its members
// changed).
func (c *permCache) dropRoom(roomID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if k.roomID == roomID {
			delete(c.entries, k)
		}
	}
}

// access asks the forge (or the cache) what userID may do with the room's
// repository. known is false for users with no identity on the forge
// (anonymous, remote, password accounts): their access is what anyone has.
func (s *Service) access(ctx context.Context, c *storage.CommunityRoom, userID string) (forge.Access, bool, error) {
	public := forge.AccessRead
	if c.Private {
		public = forge.AccessNone
	}
	who, err := s.asker(ctx, userID)
	if err != nil || who.token == nil {
		return public, false, err
	}
	if c.Private && !who.private {
		// Not opted in: the private repository is not theirs to see, and
		// the forge is not asked (nor its answer cached, which would
		// outlive an opt-in).
		return forge.AccessNone, true, nil
	}
	token := who.token
	k := permKey{userID: userID, roomID: c.RoomID}
	if a, ok := s.perms.get(k, s.cfg.Now()); ok {
		return a, true, nil
	}
	var a forge.Access
	if c.Kind == kindRepo {
		repo, err := s.cfg.Forge.Repo(ctx, c.Path, token)
		switch {
		case errors.Is(err, forge.ErrTokenRefused):
			// A stale token tells nothing: treat its holder as someone
			// without a forge identity until they sign in again.
			return public, false, nil
		case errors.Is(err, forge.ErrNotFound):
			a = forge.AccessNone
		case err != nil:
			return public, true, forgeErr(err)
		case repo.ID != c.ForgeID:
			// The path now names another repository (renamed, then
			// reused): the room's repository grants nothing through it.
			a = forge.AccessNone
		default:
			a = repo.Access
		}
	} else {
		// Owners' spaces carry no forge levels; a private group's space
		// admits those who can see the group.
		_, err := s.cfg.Forge.Owner(ctx, c.Path, token)
		switch {
		case errors.Is(err, forge.ErrTokenRefused):
			return public, false, nil
		case errors.Is(err, forge.ErrNotFound):
			a = forge.AccessNone
		case err != nil:
			return public, true, forgeErr(err)
		default:
			a = forge.AccessRead
		}
	}
	s.perms.put(k, a, s.cfg.Now().Add(s.cfg.PermissionTTL))
	return a, true, nil
}

// association returns a room's forge association, nil for other rooms.
func (s *Service) association(ctx context.Context, roomID string) (*storage.CommunityRoom, error) {
	if c, ok := s.rooms.Load(roomID); ok {
		return c.(*storage.CommunityRoom), nil
	}
	c, err := s.hs.DB.CommunityRoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("community: the association of %s: %w", roomID, err)
	}
	s.rooms.Store(roomID, c)
	return c, nil
}

// GateJoin is the join gate of every way in (the client API's, the web
// site's join button): private repositories' rooms admit
// only people the forge says may read them (inviting them on the way), and
// every joiner's power level is set from the forge.
func (s *Service) GateJoin(ctx context.Context, roomID, userID string) error {
	c, err := s.association(ctx, roomID)
	if err != nil || c == nil || userID == s.bot {
		return err
	}
	// A banned user's join fails anyway; it must not change levels first.
	if m, err := s.hs.Rooms.Membership(ctx, roomID, userID); err != nil {
		return fmt.Errorf("community: membership of %s: %w", userID, err)
	} else if m == "ban" {
		return httpapi.Forbidden("you are banned from this room")
	}
	access, known, err := s.access(ctx, c, userID)
	if errors.Is(err, ErrForgeUnavailable) {
		if c.Private {
			return httpapi.Forbidden("the forge cannot be reached to check your access to %s; try again later", c.Path)
		}
		s.log.Warn("forge unreachable: join allowed, levels unchanged", "room_id", roomID, "user_id", userID, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if c.Private {
		if access < forge.AccessRead {
			// Whoever joins by room ID knows the room exists: telling them
			// the opt-in is missing reveals nothing more.
			if who, err := s.asker(ctx, userID); err == nil && who.token != nil && !who.private {
				return httpapi.Forbidden("only people who may read %s on the forge may join its room, "+
					"and Plaza may not read your private repositories: allow it on your account page (%s)", c.Path, "/_plaza/account")
			}
			return httpapi.Forbidden("only people who may read %s on the forge may join its room", c.Path)
		}
		if err := s.inviteForJoin(ctx, roomID, userID); err != nil {
			return err
		}
	}
	if known && c.Kind == kindRepo {
		// A level that could not be written is retried at the next join
		// or webhook; it is no reason to refuse the join.
		if err := s.setLevel(ctx, roomID, userID, levelOf(access)); err != nil {
			s.log.Warn("setting a joiner's level from the forge", "room_id", roomID, "user_id", userID, "err", err)
		}
	}
	return nil
}

// inviteForJoin has the service account invite a user about to join an
// invite-only room, unless they are invited or joined already.
func (s *Service) inviteForJoin(ctx context.Context, roomID, userID string) error {
	m, err := s.hs.Rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return fmt.Errorf("community: membership of %s: %w", userID, err)
	}
	if m == "invite" || m == "join" {
		return nil
	}
	_, err = s.hs.Rooms.Send(ctx, roomID, room.Request{Sender: s.bot, Type: event.TypeMember, StateKey: &userID,
		Content: mustJSON(map[string]any{"membership": "invite"})})
	if err != nil {
		return fmt.Errorf("community: inviting %s to %s: %w", userID, roomID, err)
	}
	return nil
}

// setLevel makes a user's power level in a room want, if it is not. The
// power levels are read, changed and written under a per-room lock, so two
// joins at once do not undo each other's change.
func (s *Service) setLevel(ctx context.Context, roomID, userID string, want int64) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte(roomID))
	mu := &s.plLock[h.Sum32()%uint32(len(s.plLock))]
	mu.Lock()
	defer mu.Unlock()
	ev, err := s.hs.Rooms.StateEvent(ctx, roomID, event.TypePowerLevels, "")
	if err != nil || ev == nil {
		return fmt.Errorf("community: power levels of %s: %w", roomID, err)
	}
	var content map[string]json.RawMessage
	if err := json.Unmarshal(ev.Content(), &content); err != nil {
		return fmt.Errorf("community: power levels of %s: %w", roomID, err)
	}
	users := map[string]int64{}
	if raw, ok := content["users"]; ok {
		if err := json.Unmarshal(raw, &users); err != nil {
			return fmt.Errorf("community: power levels of %s: %w", roomID, err)
		}
	}
	have, set := users[userID]
	if have == want && (set || want == 0) {
		return nil
	}
	if want == 0 {
		delete(users, userID)
	} else {
		users[userID] = want
	}
	content["users"] = mustJSON(users)
	_, err = s.hs.Rooms.Send(ctx, roomID, room.Request{Sender: s.bot, Type: event.TypePowerLevels, StateKey: new(string), Content: mustJSON(content)})
	if err != nil {
		return fmt.Errorf("community: setting %s's level in %s: %w", userID, roomID, err)
	}
	s.log.Info("power level follows the forge", "room_id", roomID, "user_id", userID, "level", want)
	return nil
}

// resync drops a room's cached answers and re-checks its joined members
// against the forge, after a webhook said access changed. In a private
// repository's room, members the forge does not say may read it (no access,
// no forge identity, another server's users) are removed; when the forge
// cannot be reached nobody is.
func (s *Service) resync(ctx context.Context, roomID string) {
	s.perms.dropRoom(roomID)
	c, err := s.association(ctx, roomID)
	if err != nil || c == nil {
		return
	}
	state, err := s.hs.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		s.log.Warn("re-checking members", "room_id", roomID, "err", err)
		return
	}
	suffix := ":" + s.hs.Config.ServerName
	for _, ev := range state {
		sk := ev.StateKey()
		if ev.Type() != event.TypeMember || sk == nil || room.MembershipOf(ev) != "join" || *sk == s.bot {
			continue
		}
		userID := *sk
		access, known := forge.AccessNone, false
		if strings.HasSuffix(userID, suffix) {
			if access, known, err = s.access(ctx, c, userID); err != nil {
				continue // unreachable: nobody gains or loses anything
			}
		}
		switch {
		case c.Private && access < forge.AccessRead:
			_, err = s.hs.Rooms.Send(ctx, roomID, room.Request{Sender: s.bot, Type: event.TypeMember, StateKey: &userID,
				Content: mustJSON(map[string]any{"membership": "leave", "reason": "the forge does not say you may read " + c.Path})})
		case known && c.Kind == kindRepo:
			err = s.setLevel(ctx, roomID, userID, levelOf(access))
		default:
			err = nil
		}
		if err != nil {
			s.log.Warn("re-checking a member", "room_id", roomID, "user_id", userID, "err", err)
		}
	}
}

// ForgetAccess drops what the forge said about people's access to a room,
// so the next join or check asks again (webhooks about members do this).
func (s *Service) ForgetAccess(roomID string) { s.perms.dropRoom(roomID) }
