package room

import (
	"context"
	"encoding/json"
	"sort"

	"plaza/homeserver/event"
	"plaza/homeserver/storage"
)

// Visibility answers "may this user see the event at this stream position?"
// with the spec's history visibility algorithm, for many events of one room
// at the cost of two small queries: the room's history_visibility changes and
// the user's membership history (both in stream order).
type Visibility struct {
	hvPos  []int64
	hv     []string
	mem    []storage.MembershipChange
	userID string
}

// VisibilityFor prepares visibility checks of a room for a user ("" for an
// anonymous reader). Results are cached per room and user until the room's
// history visibility or the user's membership changes.
func (s *Service) VisibilityFor(ctx context.Context, roomID, userID string) (*Visibility, error) {
	s.visMu.Lock()
	if v := s.vis[roomID][userID]; v != nil {
		s.visMu.Unlock()
		return v, nil
	}
	gen := s.visGen[roomID]
	s.visMu.Unlock()
	v, err := s.loadVisibility(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	s.visMu.Lock()
	defer s.visMu.Unlock()
	// Store only if nothing changed while loading: a write that committed
	// meanwhile may not be in what was read.
	if s.visGen[roomID] == gen {
		if s.vis[roomID] == nil {
			if len(s.vis) >= maxVisibilityRooms {
				clear(s.vis)
			}
			s.vis[roomID] = map[string]*Visibility{}
		}
		s.vis[roomID][userID] = v
	}
	return v, nil
}

// maxVisibilityRooms bounds the visibility cache; past it, it starts over.
const maxVisibilityRooms = 10_000

// invalidateVisibility drops cached visibility that events change: all of
// a room's on a history_visibility change, a user's on their membership.
// It runs before the events' positions complete, so no reader can see the
// events and an old answer.
func (s *Service) invalidateVisibility(roomID string, evs []*storage.StoredEvent) {
	s.visMu.Lock()
	defer s.visMu.Unlock()
	for _, e := range evs {
		switch {
		case e.Event.Type() == event.TypeHistoryVisibility:
			s.visGen[roomID]++
			delete(s.vis, roomID)
		case e.Event.Type() == event.TypeMember && e.Event.StateKey() != nil:
			s.visGen[roomID]++
			delete(s.vis[roomID], *e.Event.StateKey())
		}
	}
}

func (s *Service) loadVisibility(ctx context.Context, roomID, userID string) (*Visibility, error) {
	nid, err := s.db.RoomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	hvs, err := s.db.HistoryVisibilityChanges(ctx, nid)
	if err != nil {
		return nil, err
	}
	v := &Visibility{userID: userID}
	for _, e := range hvs {
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		_ = json.Unmarshal(e.Event.Content(), &c)
		v.hvPos = append(v.hvPos, e.StreamPos)
		v.hv = append(v.hv, c.HistoryVisibility)
	}
	if userID != "" {
		if v.mem, err = s.db.MembershipHistory(ctx, nid, userID); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// historyAt returns the history visibility in force at a stream position
// ("shared" when never set, as the spec says).
func (v *Visibility) historyAt(pos int64) string {
	i := sort.Search(len(v.hvPos), func(i int) bool { return v.hvPos[i] > pos }) - 1
	if i < 0 || v.hv[i] == "" {
		return "shared"
	}
	switch v.hv[i] {
	case "world_readable", "shared", "invited", "joined":
		return v.hv[i]
	}
	// An unknown value is treated as the most restrictive, never the most open.
	return "joined"
}

// membershipAt returns the user's membership at a position; a user's own
// membership event counts as already in effect.
func (v *Visibility) membershipAt(pos int64) string {
	i := sort.Search(len(v.mem), func(i int) bool { return v.mem[i].StreamPos > pos }) - 1
	if i < 0 {
		return ""
	}
	return v.mem[i].Membership
}

// leftAt reports whether the event at pos is the user's own membership
// event taking them out of the room they were joined to.
func (v *Visibility) leftAt(pos int64) bool {
	i := sort.Search(len(v.mem), func(i int) bool { return v.mem[i].StreamPos >= pos })
	return i < len(v.mem) && v.mem[i].StreamPos == pos && i > 0 && v.mem[i-1].Membership == "join"
}

// CanSee applies the spec's algorithm to the event at pos.
func (v *Visibility) CanSee(pos int64) bool {
	hv := v.historyAt(pos)
	if hv == "world_readable" {
		return true
	}
	m := v.membershipAt(pos)
	if m == "join" {
		return true
	}
	if (m == "leave" || m == "ban") && v.leftAt(pos) {
		return true // a member sees the event that ends their membership
	}
	if hv == "shared" {
		for _, c := range v.mem {
			if c.StreamPos > pos && c.Membership == "join" {
				return true
			}
		}
	}
	return hv == "invited" && m == "invite"
}

// WorldReadable reports whether the room's current history is world-readable.
func (v *Visibility) WorldReadable() bool {
	return len(v.hv) > 0 && v.hv[len(v.hv)-1] == "world_readable"
}

// Member reports the user's current membership.
func (v *Visibility) Member() string {
	if len(v.mem) == 0 {
		return ""
	}
	return v.mem[len(v.mem)-1].Membership
}
