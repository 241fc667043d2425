package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"plaza/homeserver/auth"
	"plaza/homeserver/builder"
	"plaza/homeserver/event"
	"plaza/homeserver/storage"
)

// JoinRemote makes our copy of a room joined over federation: the state and
// auth chain of the send_join answer are checked (signatures, hashes, each
// event against its auth events) and stored as outliers, the join is checked
// against that state, and the room starts from the join event with the
// state before it. If the room is already ours (another local user joined
// meanwhile), the join is received like any event.
func (s *Service) JoinRemote(ctx context.Context, v *event.RoomVersion, server string, join *event.Event, stateRaw, chainRaw []json.RawMessage) error {
	roomID := join.RoomID()
	r := s.entry(roomID)
	r.loadMu.Lock()
	if !r.loaded {
		err := s.fill(ctx, r, roomID)
		switch {
		case err == nil:
			r.loaded = true
		case errors.Is(err, ErrNotFound):
			defer r.loadMu.Unlock()
			return s.createFromJoin(ctx, r, v, join, stateRaw, chainRaw)
		default:
			r.loadMu.Unlock()
			return err
		}
	}
	r.loadMu.Unlock()
	return s.receiveIncoming(ctx, server, &incoming{ev: join, delivered: true}, true)
}

// createFromJoin is JoinRemote for a room we are not in; the caller holds
// r.loadMu, so nobody loads the room half made.
func (s *Service) createFromJoin(ctx context.Context, r *roomEntry, v *event.RoomVersion, join *event.Event, stateRaw, chainRaw []json.RawMessage) error {
	roomID := join.RoomID()
	row := &storage.Room{RoomID: roomID, Version: v}
	state, err := s.placeState(ctx, row, stateRaw, chainRaw)
	if err != nil {
		return err
	}
	create := state[event.TypeKey{Type: event.TypeCreate}].ev
	switch {
	case create == nil:
		return fmt.Errorf("%w: the room state has no create event", ErrBadEvent)
	case v.RoomIDFromCreate && roomID != "!"+create.ID()[1:]:
		return fmt.Errorf("%w: the create event is not the room's", ErrBadEvent)
	case !v.RoomIDFromCreate && create.RoomID() != roomID:
		return fmt.Errorf("%w: the create event is for another room", ErrBadEvent)
	}
	var createContent struct {
		RoomVersion string `json:"room_version"`
	}
	_ = json.Unmarshal(create.Content(), &createContent)
	if createContent.RoomVersion == "" {
		createContent.RoomVersion = "1"
	}
	if createContent.RoomVersion != v.ID {
		return fmt.Errorf("%w: the room is version %s, not %s", ErrBadEvent, createContent.RoomVersion, v.ID)
	}
	known, err := s.db.EventNIDs(ctx, join.AuthEventIDs())
	if err != nil {
		return err
	}
	if len(known) != len(join.AuthEventIDs()) {
		return fmt.Errorf("%w: auth events of the join are not in the answer", ErrMissingEvents)
	}
	if err := auth.Allowed(join, lookup(state)); err != nil {
		return fmt.Errorf("%w: the join: %w", ErrRejected, err)
	}
	re := storage.RemoteEvent{Event: join, StreamPos: s.tracker.Reserve(), BeforeState: map[event.TypeKey]int64{},
		Extremities: []string{join.ID()}}
	after := map[event.TypeKey]stateItem{}
	for tk, it := range state {
		re.BeforeState[tk] = it.nid
		after[tk] = it
	}
	tk, _ := join.TypeKey()
	after[tk] = stateItem{nid: storage.SelfNID, ev: join}
	re.Current = diffState(nil, after)
	persisted, err := s.db.PersistRemote(ctx, row, 0, re)
	if err != nil {
		s.tracker.Complete(re.StreamPos)
		return fmt.Errorf("persisting the join: %w", err)
	}
	if err := s.fill(ctx, r, roomID); err != nil {
		s.tracker.Complete(re.StreamPos)
		return err
	}
	r.loaded = true
	if err := s.db.ForgetRemoteInvite(ctx, join.Sender(), roomID); err != nil {
		slog.Warn("dropping a remote invite after joining", "room", roomID, "err", err)
	}
	s.notify(Notification{RoomID: roomID, Events: []*storage.StoredEvent{{NID: persisted.NID, StreamPos: re.StreamPos, Event: join}}, Delivered: true})
	s.tracker.Complete(re.StreamPos)
	return nil
}

// Template builds the event a remote user asks make_join, make_leave or
// make_knock for, on the room's current state, and checks it is allowed.
// It is signed by us but not stored: the remote server re-signs it.
func (s *Service) Template(ctx context.Context, roomID string, req Request) (*event.Event, error) {
	r, err := s.load(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.smu.RLock()
	row := r.row
	ov := &overlay{base: r.state, added: map[event.TypeKey]*event.Event{}}
	ev, err := builder.Build(builder.Room{Version: row.Version, ID: row.RoomID, State: ov.get, Extremities: r.extremities},
		builder.Request{Sender: req.Sender, Type: req.Type, StateKey: req.StateKey, Content: req.Content},
		s.now().UnixMilli(), builder.Signer{ServerName: s.serverName, Key: s.key})
	r.smu.RUnlock()
	if errors.Is(err, auth.ErrForbidden) {
		return nil, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return ev, err
}

// StateAt returns the state before an event of the room, and the auth
// chain of that state and of the event.
func (s *Service) StateAt(ctx context.Context, roomID, eventID string) (state, authChain []*event.Event, err error) {
	group, target, err := s.db.StateBeforeEvent(ctx, eventID)
	// An event whose state this server does not know (an outlier, a
	// backfilled event) is unknown to the asker: an empty answer would
	// make it reject everything after.
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrNoState) || (err == nil && target.Event.RoomID() != roomID) {
		return nil, nil, ErrUnknownEvent
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := s.stateOfGroup(ctx, group)
	if err != nil {
		return nil, nil, err
	}
	ids := []string{eventID}
	for _, it := range st {
		state = append(state, it.ev)
		ids = append(ids, it.ev.ID())
	}
	authChain, err = s.AuthChain(ctx, roomID, ids)
	if err != nil {
		return nil, nil, err
	}
	return state, authChain, nil
}

// AuthChain returns the auth chain of events of the room. From version 12
// on the create event authorises every event without being cited, so it is
// part of every chain.
func (s *Service) AuthChain(ctx context.Context, roomID string, ids []string) ([]*event.Event, error) {
	chain, err := s.db.AuthChain(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*event.Event, 0, len(chain)+1)
	haveCreate := false
	for _, c := range chain {
		out = append(out, c.Event)
		haveCreate = haveCreate || c.Event.Type() == event.TypeCreate
	}
	if v, err := s.Version(ctx, roomID); err == nil && v.RoomIDFromCreate && !haveCreate {
		create, err := s.StateEvent(ctx, roomID, event.TypeCreate, "")
		if err != nil {
			return nil, err
		}
		if create != nil && !slices.Contains(ids, create.ID()) {
			out = append(out, create)
		}
	}
	return out, nil
}
