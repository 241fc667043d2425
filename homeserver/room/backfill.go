package room

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"

	"plaza/homeserver/auth"
	"plaza/homeserver/event"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// Backfiller is a Fetcher that can also fetch history (/backfill).
type Backfiller interface {
	Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([]json.RawMessage, error)
}

// maxBackfill bounds the events one backfill asks for.
const maxBackfill = 100

// Backfill fetches up to limit events from before the oldest ones we have
// of a room that started on another server (we joined it later), from the
// room's other servers. They are checked like any received event against
// their auth events and get negative stream positions, below every sync
// token: history, not news. It returns how many it stored.
func (s *Service) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	bf, ok := s.fetch.(Backfiller)
	if !ok {
		return 0, nil
	}
	r, err := s.load(ctx, roomID)
	if err != nil {
		return 0, err
	}
	r.smu.RLock()
	row := *r.row
	create := r.state[event.TypeKey{Type: event.TypeCreate}].ev
	r.smu.RUnlock()
	if create == nil || id.ServerOf(create.Sender()) == s.serverName {
		return 0, nil // a room made here: we have all of it
	}
	from, err := s.db.BackwardExtremities(ctx, row.NID, 5)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	servers, err := s.Servers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	limit = min(max(limit, 1), maxBackfill)
	for _, server := range servers {
		if server == s.serverName {
			continue
		}
		raws, err := bf.Backfill(ctx, server, roomID, from, limit)
		if err != nil {
			slog.Info("federation: backfill failed", "room", roomID, "server", server, "err", err)
			continue
		}
		return s.storeBackfill(ctx, server, r, &row, raws)
	}
	return 0, nil
}

func (s *Service) storeBackfill(ctx context.Context, server string, r *roomEntry, row *storage.Room, raws []json.RawMessage) (int, error) {
	var evs []*event.Event
	for _, raw := range raws {
		ev, err := s.CheckPDU(ctx, row.Version, raw)
		if err != nil || ev.RoomID() != row.RoomID {
			continue
		}
		if se, err := s.db.EventByID(ctx, ev.ID()); err == nil && (se.StreamPos != 0 || se.Rejected) {
			continue // known already
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return 0, nil
	}
	if err := s.fetchAuthEvents(ctx, server, r, evs); err != nil {
		return 0, err
	}
	// Newest first, so older events get lower (more negative) positions.
	slices.SortStableFunc(evs, func(a, b *event.Event) int {
		switch {
		case a.Depth() > b.Depth():
			return -1
		case a.Depth() < b.Depth():
			return 1
		}
		return 0
	})
	n := 0
	for _, ev := range evs {
		authStored, err := s.db.EventsByID(ctx, ev.AuthEventIDs())
		if err != nil {
			return n, err
		}
		rejected := len(authStored) != len(ev.AuthEventIDs())
		authEvs := make([]*event.Event, 0, len(authStored))
		for _, a := range authStored {
			rejected = rejected || a.Rejected
			authEvs = append(authEvs, a.Event)
		}
		rejected = rejected || auth.CheckAuthEvents(ev, authEvs) != nil
		re := storage.RemoteEvent{Event: ev, Rejected: rejected}
		if !rejected {
			re.StreamPos = s.tracker.ReserveBackfill()
		}
		rowCopy := *row
		_, err = s.db.PersistRemote(ctx, &rowCopy, 0, re)
		if re.StreamPos != 0 {
			s.tracker.Complete(re.StreamPos)
		}
		if errors.Is(err, storage.ErrExists) {
			continue
		}
		if err != nil {
			return n, err
		}
		if !rejected {
			n++
		}
	}
	return n, nil
}

// VisibleToServer decides, for events of the room, whether server may see
// each in full (the spec's history visibility applied to a server): the
// history visibility in the state before the event is world_readable or
// shared, or a user of server was joined then (or invited, for
// "invited"). Events it may not see are sent redacted, keeping the DAG
// whole.
func (s *Service) VisibleToServer(ctx context.Context, server string, evs []*storage.StoredEvent) ([]bool, error) {
	out := make([]bool, len(evs))
	groups := map[int64]map[event.TypeKey]stateItem{}
	for i, se := range evs {
		ev := se.Event
		if sk := ev.StateKey(); ev.Type() == event.TypeMember && sk != nil && id.ServerOf(*sk) == server {
			out[i] = true // its own users' membership
			continue
		}
		// An event stored without its state is judged by the default
		// visibility ("shared").
		group, _, err := s.db.StateBeforeEvent(ctx, ev.ID())
		if err != nil && !errors.Is(err, storage.ErrNoState) {
			return nil, err
		}
		st, ok := groups[group]
		if !ok {
			if st, err = s.stateOfGroup(ctx, group); err != nil {
				return nil, err
			}
			groups[group] = st
		}
		hv := "shared"
		if e := st[event.TypeKey{Type: "m.room.history_visibility"}].ev; e != nil {
			var c struct {
				V string `json:"history_visibility"`
			}
			if json.Unmarshal(e.Content(), &c) == nil && c.V != "" {
				hv = c.V
			}
		}
		if hv == "world_readable" || hv == "shared" {
			out[i] = true
			continue
		}
		for tk, it := range st {
			if tk.Type != event.TypeMember || id.ServerOf(tk.StateKey) != server {
				continue
			}
			if m := MembershipOf(it.ev); m == "join" || (hv == "invited" && m == "invite") {
				out[i] = true
				break
			}
		}
	}
	return out, nil
}
