package community

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"plaza/community/forge"
	"plaza/homeserver/event"
	"plaza/homeserver/room"
	"plaza/homeserver/storage"
)

// maxAvatarBytes bounds an owner avatar copied into the media store.
const maxAvatarBytes = 1 << 20

// repoRoom looks a repository up on the forge and, when create, makes its
// room (and its owner's space).
func (s *Service) repoRoom(ctx context.Context, path, viewer string, who asker, create bool) (string, error) {
	if who.token == nil && s.misses.has(kindRepo+":"+path, s.cfg.Now()) {
		return "", ErrNoSuchRepo
	}
	repo, err := s.cfg.Forge.Repo(ctx, path, who.token)
	if errors.Is(err, forge.ErrTokenRefused) && who.token != nil {
		// A stale token does not stop anyone opening a public room.
		who = asker{}
		repo, err = s.cfg.Forge.Repo(ctx, path, nil)
	}
	if err != nil {
		if who.token == nil && errors.Is(err, forge.ErrNotFound) {
			s.misses.add(kindRepo+":"+path, s.cfg.Now().Add(missTTL))
		}
		return "", forgeErr(err)
	}
	if repo.Private && !who.private {
		// A service token, or a token of broader scope than the person
		// opted in to, may see more than the asker should.
		return "", ErrNoSuchRepo
	}
	if !create {
		return "", ErrRoomNotCreated
	}
	// The space first, before the room's claim: a creation never waits
	// for another while holding one.
	parent, err := s.ownerSpace(ctx, repo.Owner.Path, viewer, who, true)
	if err != nil {
		return "", fmt.Errorf("community: the space of %s: %w", repo.Owner.Path, err)
	}
	return s.once(ctx, kindRepo, repo.Path, viewer, func(ctx context.Context, claimID string) (string, error) {
		// A renamed repository keeps its id, and its room.
		if c, err := s.hs.DB.CommunityRoomByForgeID(ctx, s.cfg.IDP, kindRepo, repo.ID); err == nil {
			// The claim on the new path gives way to the moved row.
			if err := s.hs.DB.AbandonCommunityClaim(ctx, claimID); err != nil {
				return "", err
			}
			return c.RoomID, s.moveRoom(ctx, c, repo)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return "", err
		}
		return s.createRepoRoom(ctx, claimID, repo, parent)
	})
}

// ownerSpace looks an owner up and, when create, makes its space (and, for
// a GitLab subgroup, its parent's). An existing space is returned without
// asking the forge.
func (s *Service) ownerSpace(ctx context.Context, path, viewer string, who asker, create bool) (string, error) {
	if c, err := s.hs.DB.CommunityRoomByPath(ctx, s.cfg.IDP, kindOwner, path); err == nil {
		return c.RoomID, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if who.token == nil && s.misses.has(kindOwner+":"+path, s.cfg.Now()) {
		return "", ErrNoSuchRepo
	}
	owner, err := s.cfg.Forge.Owner(ctx, path, who.token)
	if errors.Is(err, forge.ErrTokenRefused) && who.token != nil {
		who = asker{}
		owner, err = s.cfg.Forge.Owner(ctx, path, nil)
	}
	if err != nil {
		if who.token == nil && errors.Is(err, forge.ErrNotFound) {
			s.misses.add(kindOwner+":"+path, s.cfg.Now().Add(missTTL))
		}
		return "", forgeErr(err)
	}
	if owner.Private && !who.private {
		return "", ErrNoSuchRepo
	}
	if !create {
		return "", ErrRoomNotCreated
	}
	parent := ""
	if i := strings.LastIndex(owner.Path, "/"); i > 0 {
		if parent, err = s.ownerSpace(ctx, owner.Path[:i], viewer, who, true); err != nil {
			return "", fmt.Errorf("community: the space of %s: %w", owner.Path[:i], err)
		}
	}
	return s.once(ctx, kindOwner, owner.Path, viewer, func(ctx context.Context, claimID string) (string, error) {
		return s.createOwnerSpace(ctx, claimID, owner, parent)
	})
}

// claimStale is the age after which a creation's claim on a path is
// presumed dead (its process stopped): creations give up after a minute.
const claimStale = 2 * time.Minute

// claimPoll is how often a creation waits for another process's to finish.
const claimPoll = 100 * time.Millisecond

// once runs create at most once per path at a time: one flight per path in
// this process, and across processes a claim on the path in the database
// (see storage.ClaimCommunityRoom), re-checked, so that a room made
// meanwhile is returned instead. create receives the claim to complete.
// The viewer's creation allowance is spent only by a real creation. create
// runs with the flight's own context, which the asker hanging up does not
// cancel.
func (s *Service) once(ctx context.Context, kind, path, viewer string, create func(ctx context.Context, claimID string) (string, error)) (string, error) {
	key := kind + ":" + strings.ToLower(path)
	// The flight outlives one asker's cancelled request: the others
	// waiting on it still want the room.
	ch := s.flight.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// Few creations at once: each needs database connections to
		// write its room.
		select {
		case s.creating <- struct{}{}:
			defer func() { <-s.creating }()
		case <-ctx.Done():
			return "", ctx.Err()
		}
		claimID := randomToken(12)
		probe := storage.CommunityRoom{Forge: s.cfg.IDP, Flavour: s.cfg.Forge.Flavour(), Kind: kind, Path: path}
		for {
			now := s.cfg.Now()
			roomID, claimed, err := s.hs.DB.ClaimCommunityRoom(ctx, probe, claimID, now.UnixMilli(), now.Add(-claimStale).UnixMilli())
			switch {
			case err != nil:
				return "", fmt.Errorf("community: claiming %s: %w", path, err)
			case roomID != "":
				return roomID, nil
			case claimed:
			default:
				// Another process is creating it.
				select {
				case <-time.After(claimPoll):
					continue
				case <-ctx.Done():
					return "", ctx.Err()
				}
			}
			break
		}
		abandon := func() {
			if err := s.hs.DB.AbandonCommunityClaim(context.WithoutCancel(ctx), claimID); err != nil {
				s.log.Error("abandoning a claim", "path", path, "err", err)
			}
		}
		if !s.limit.allow(viewer, s.cfg.CreatePerWindow, s.cfg.CreateWindow, s.cfg.Now()) {
			abandon()
			return "", ErrRateLimited
		}
		roomID, err := create(ctx, claimID)
		if err != nil {
			abandon()
			return "", err
		}
		return roomID, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// createRepoRoom creates a repository's room as a child of the space
// parent.
func (s *Service) createRepoRoom(ctx context.Context, claimID string, repo *forge.Repo, parent string) (string, error) {
	c := storage.CommunityRoom{Forge: s.cfg.IDP, Flavour: s.cfg.Forge.Flavour(), Kind: kindRepo, Path: repo.Path,
		ForgeID: repo.ID, WebURL: repo.WebURL, Private: repo.Private, ParentID: parent}
	topic := repo.WebURL
	if repo.Description != "" {
		topic = repo.Description + " — " + repo.WebURL
	}
	avatar := ""
	if parent != "" {
		// The owner's avatar, copied once into the space.
		if ev, _ := s.hs.Rooms.StateEvent(ctx, parent, "m.room.avatar", ""); ev != nil {
			var a struct {
				URL string `json:"url"`
			}
			_ = json.Unmarshal(ev.Content(), &a)
			avatar = a.URL
		}
	}
	return s.createRoom(ctx, claimID, c, repo.Path, topic, avatar, false)
}

func (s *Service) createOwnerSpace(ctx context.Context, claimID string, owner *forge.Owner, parent string) (string, error) {
	c := storage.CommunityRoom{Forge: s.cfg.IDP, Flavour: s.cfg.Forge.Flavour(), Kind: kindOwner, Path: owner.Path,
		ForgeID: owner.ID, WebURL: owner.WebURL, Private: owner.Private, ParentID: parent}
	name := owner.Name
	if name == "" {
		name = owner.Path
	}
	return s.createRoom(ctx, claimID, c, name, owner.WebURL, s.copyAvatar(ctx, owner.AvatarURL), true)
}

// createRoom creates a room or space for an association, then its alias,
// directory entry, place in the parent space, and completes the claim with
// the association — last, so that a failure before it leaves a room nobody
// finds rather than an association to a broken room.
func (s *Service) createRoom(ctx context.Context, claimID string, c storage.CommunityRoom, name, topic, avatar string, space bool) (string, error) {
	v, err := event.Version(event.DefaultRoomVersion)
	if err != nil {
		return "", err
	}
	server := s.hs.Config.ServerName
	alias := "#" + aliasLocalpart(c.Flavour, c.Path) + ":" + server
	createContent := map[string]any{"room_version": v.ID}
	if !v.ImplicitCreator {
		createContent["creator"] = s.bot
	}
	if space {
		createContent["type"] = "m.space"
	}
	users := map[string]any{}
	if !v.PrivilegedCreators {
		users[s.bot] = 100
	}
	invite := 0
	if c.Private {
		invite = 50
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100, StateTypeForge: 100,
			"m.space.child": 50, "m.space.parent": 100,
			// Who may enter and read follows the forge: only admins
			// change it.
			"m.room.join_rules": 100, "m.room.guest_access": 100,
		},
	}
	joinRule, history, guest := "public", "world_readable", "can_join"
	if c.Private {
		joinRule, history, guest = "invite", "shared", "forbidden"
	}
	st := func(typ, sk string, content any) room.Request {
		return room.Request{Sender: s.bot, Type: typ, StateKey: &sk, Content: mustJSON(content)}
	}
	initial := []room.Request{
		st(event.TypeMember, s.bot, map[string]any{"membership": "join", "displayname": "Plaza"}),
		st(event.TypePowerLevels, "", pl),
		st(event.TypeJoinRules, "", map[string]any{"join_rule": joinRule}),
		st(event.TypeHistoryVisibility, "", map[string]any{"history_visibility": history}),
		st("m.room.guest_access", "", map[string]any{"guest_access": guest}),
		st("m.room.name", "", map[string]any{"name": name}),
		st("m.room.topic", "", map[string]any{"topic": topic}),
		st(StateTypeForge, "", map[string]any{"forge": c.Forge, "flavour": c.Flavour, "kind": c.Kind,
			"path": c.Path, "id": c.ForgeID, "web_url": c.WebURL}),
	}
	if !c.Private {
		initial = append(initial, st("m.room.canonical_alias", "", map[string]any{"alias": alias}))
	}
	if avatar != "" {
		initial = append(initial, st("m.room.avatar", "", map[string]any{"url": avatar}))
	}
	if c.ParentID != "" {
		initial = append(initial, st("m.space.parent", c.ParentID, map[string]any{"via": []string{server}, "canonical": true}))
	}
	roomID, err := s.hs.Rooms.CreateRoom(ctx, v, s.bot, mustJSON(createContent), initial)
	if err != nil {
		return "", fmt.Errorf("community: creating the room of %s: %w", c.Path, err)
	}
	c.RoomID = roomID
	if !c.Private {
		// An alias made by hand before the room existed keeps pointing
		// where it did; the room is still found by its path.
		if err := s.hs.DB.CreateAlias(ctx, alias, roomID, s.bot); err != nil {
			s.log.Warn("the alias of a new room is taken", "alias", alias, "room_id", roomID, "err", err)
		}
		if err := s.hs.DB.SetPublished(ctx, roomID, true); err != nil {
			return "", fmt.Errorf("community: publishing %s: %w", roomID, err)
		}
	}
	if err := s.setChild(ctx, c.ParentID, roomID, !c.Private); err != nil {
		return "", err
	}
	if err := s.hs.DB.CompleteCommunityClaim(ctx, claimID, c); err != nil {
		return "", fmt.Errorf("community: recording the room of %s: %w", c.Path, err)
	}
	s.log.Info("created a room on demand", "kind", c.Kind, "path", c.Path, "room_id", roomID, "private", c.Private)
	return roomID, nil
}

// setChild lists a room in its parent space, or takes it out. A private
// repository's room is not listed: the space is public, and its children
// would tell everyone that the private repository exists. (The room still
// names its space in m.space.parent, which only its members see.)
func (s *Service) setChild(ctx context.Context, spaceID, roomID string, listed bool) error {
	if spaceID == "" {
		return nil
	}
	content := map[string]any{}
	if listed {
		content = map[string]any{"via": []string{s.hs.Config.ServerName}, "suggested": true}
	} else if ev, _ := s.hs.Rooms.StateEvent(ctx, spaceID, "m.space.child", roomID); ev == nil {
		return nil // never listed
	}
	if _, err := s.hs.Rooms.Send(ctx, spaceID, room.Request{Sender: s.bot, Type: "m.space.child", StateKey: &roomID, Content: mustJSON(content)}); err != nil {
		return fmt.Errorf("community: listing %s in its space: %w", roomID, err)
	}
	return nil
}

// moveRoom follows a repository renamed on the forge: the room keeps its
// history and members and takes the new path, name and alias; the old
// alias stays as an alternative. (A repository moved to another owner stays
// in its first owner's space.)
func (s *Service) moveRoom(ctx context.Context, c *storage.CommunityRoom, repo *forge.Repo) error {
	if err := s.hs.DB.MoveCommunityRoom(ctx, c.RoomID, repo.Path, repo.WebURL); err != nil {
		return fmt.Errorf("community: moving %s to %s: %w", c.Path, repo.Path, err)
	}
	s.rooms.Delete(c.RoomID)
	oldAlias := "#" + aliasLocalpart(c.Flavour, c.Path) + ":" + s.hs.Config.ServerName
	alias := "#" + aliasLocalpart(c.Flavour, repo.Path) + ":" + s.hs.Config.ServerName
	st := func(typ string, content any) error {
		_, err := s.hs.Rooms.Send(ctx, c.RoomID, room.Request{Sender: s.bot, Type: typ, StateKey: new(string), Content: mustJSON(content)})
		return err
	}
	if err := st(StateTypeForge, map[string]any{"forge": c.Forge, "flavour": c.Flavour, "kind": c.Kind,
		"path": repo.Path, "id": c.ForgeID, "web_url": repo.WebURL}); err != nil {
		return fmt.Errorf("community: moving %s: %w", c.RoomID, err)
	}
	if err := st("m.room.name", map[string]any{"name": repo.Path}); err != nil {
		return fmt.Errorf("community: moving %s: %w", c.RoomID, err)
	}
	if !c.Private && alias != oldAlias {
		if err := s.hs.DB.CreateAlias(ctx, alias, c.RoomID, s.bot); err != nil {
			s.log.Warn("the alias of a renamed repository is taken", "alias", alias, "room_id", c.RoomID, "err", err)
		} else if err := st("m.room.canonical_alias", map[string]any{"alias": alias, "alt_aliases": []string{oldAlias}}); err != nil {
			return fmt.Errorf("community: moving %s: %w", c.RoomID, err)
		}
	}
	s.log.Info("a repository was renamed; its room follows", "room_id", c.RoomID, "from", c.Path, "to", repo.Path)
	return nil
}

// followRepository applies a GitHub "repository" delivery: a rename moves
// the room; a repository made private closes its room (invite-only, history
// for members, out of the directory, no alias; members without access are
// removed by the re-check that follows), and one made public opens it.
func (s *Service) followRepository(ctx context.Context, c *storage.CommunityRoom, p *payload) error {
	if p.Repository.FullName != "" && !strings.EqualFold(p.Repository.FullName, c.Path) {
		if err := s.moveRoom(ctx, c, &forge.Repo{Path: p.Repository.FullName, WebURL: p.Repository.HTMLURL}); err != nil {
			return err
		}
		c.Path = p.Repository.FullName
	}
	if p.Repository.Private == nil || *p.Repository.Private == c.Private {
		return nil
	}
	private := *p.Repository.Private
	if err := s.hs.DB.SetCommunityRoomPrivate(ctx, c.RoomID, private); err != nil {
		return fmt.Errorf("community: recording the visibility of %s: %w", c.RoomID, err)
	}
	s.rooms.Delete(c.RoomID)
	s.perms.dropRoom(c.RoomID)
	joinRule, history, guest := "public", "world_readable", "can_join"
	if private {
		joinRule, history, guest = "invite", "shared", "forbidden"
	}
	alias := "#" + aliasLocalpart(c.Flavour, c.Path) + ":" + s.hs.Config.ServerName
	// Closing: out of the directory and the alias first, so that nobody
	// finds the room while its rules change.
	if private {
		if err := s.hs.DB.SetPublished(ctx, c.RoomID, false); err != nil {
			return err
		}
		if err := s.hs.DB.DeleteAlias(ctx, alias); err != nil {
			return err
		}
	}
	for _, st := range []struct {
		typ     string
		content map[string]any
	}{
		{event.TypeJoinRules, map[string]any{"join_rule": joinRule}},
		{event.TypeHistoryVisibility, map[string]any{"history_visibility": history}},
		{"m.room.guest_access", map[string]any{"guest_access": guest}},
	} {
		if _, err := s.hs.Rooms.Send(ctx, c.RoomID, room.Request{Sender: s.bot, Type: st.typ, StateKey: new(string), Content: mustJSON(st.content)}); err != nil {
			return fmt.Errorf("community: changing %s of %s: %w", st.typ, c.RoomID, err)
		}
	}
	if err := s.setChild(ctx, c.ParentID, c.RoomID, !private); err != nil {
		return err
	}
	if !private {
		if err := s.hs.DB.CreateAlias(ctx, alias, c.RoomID, s.bot); err != nil && !errors.Is(err, storage.ErrExists) {
			return err
		}
		if err := s.hs.DB.SetPublished(ctx, c.RoomID, true); err != nil {
			return err
		}
	}
	s.log.Info("a repository's visibility changed; its room follows", "room_id", c.RoomID, "path", c.Path, "private", private)
	return nil
}

// copyAvatar copies an image from the forge into the media store,
// returning its mxc URI, or "" when it cannot (the room simply has no
// avatar then).
func (s *Service) copyAvatar(ctx context.Context, url string) string {
	if url == "" {
		return ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := s.cfg.Forge.HTTPClient().Do(req)
	if err != nil {
		s.log.Warn("fetching an avatar from the forge", "url", url, "err", err)
		return ""
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "image/") {
		s.log.Warn("fetching an avatar from the forge", "url", url, "status", resp.StatusCode, "content_type", ct)
		return ""
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAvatarBytes+1))
	if err != nil || len(body) > maxAvatarBytes {
		return ""
	}
	mxc, err := s.hs.Media.Store(ctx, s.bot, ct, "avatar", strings.NewReader(string(body)))
	if err != nil {
		s.log.Warn("storing an avatar", "url", url, "err", err)
		return ""
	}
	return mxc
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with maps of plain values
	}
	return b
}

// missTTL is how long "the forge has no such thing" is believed for
// lookups made without a user's token, so that lookups of made-up aliases
// (by anyone, or by other servers) do not spend the forge's rate limit.
const missTTL = time.Minute

// missCache remembers paths the forge said do not exist.
type missCache struct {
	mu      sync.Mutex
	entries map[string]time.Time // lower-cased kind:path → expiry
}

func (c *missCache) has(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.entries[strings.ToLower(key)]
	return ok && now.Before(exp)
}

func (c *missCache) add(key string, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxTracked {
		c.entries = map[string]time.Time{}
	}
	c.entries[strings.ToLower(key)] = expires
}

// createLimiter counts creations per user in fixed windows.
type createLimiter struct {
	mu     sync.Mutex
	window time.Time
	counts map[string]int
}

// maxTracked bounds the limiter's memory; past it, counting starts over.
const maxTracked = 100_000

func (l *createLimiter) allow(user string, per int, window time.Duration, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= window || len(l.counts) >= maxTracked || l.counts == nil {
		l.window, l.counts = now, map[string]int{}
	}
	if l.counts[user] >= per {
		return false
	}
	l.counts[user]++
	return true
}
