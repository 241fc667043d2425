package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"plaza/homeserver/event"
)

// Room is a row of the rooms table.
type Room struct {
	NID         int64
	RoomID      string
	Version     *event.RoomVersion
	Extremities []string
	StateGroup  int64 // 0: no state yet
	Published   bool
}

// StoredEvent is an event with what the server knows about it.
type StoredEvent struct {
	NID        int64
	StreamPos  int64 // 0 for outliers
	Event      *event.Event
	Rejected   bool
	SoftFailed bool
	RedactedBy string
	TxnDevice  string
	TxnID      string
	// ReplacesState is the state event this one replaced ("" if none).
	ReplacesState string
}

// StateEntry is one (type, state_key) → event of a room state.
type StateEntry struct {
	Type, StateKey string
	EventNID       int64
}

// Room loads a room by ID.
func (db *DB) Room(ctx context.Context, roomID string) (*Room, error) {
	var r Room
	var version string
	var group *int64
	err := db.Pool.QueryRow(ctx, `SELECT room_nid, room_id, version, extremities, state_group, published FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.NID, &r.RoomID, &version, &r.Extremities, &group, &r.Published)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading room %s: %w", roomID, err)
	}
	if r.Version, err = event.Version(version); err != nil {
		return nil, err
	}
	if group != nil {
		r.StateGroup = *group
	}
	return &r, nil
}

const eventColumns = `e.event_nid, COALESCE(e.stream_pos, 0), e.event_id, e.json, r.version, e.rejected, e.soft_failed,
	COALESCE(e.redacted_by, ''), COALESCE(e.txn_device, ''), COALESCE(e.txn_id, ''), COALESCE(e.replaces_state, '')`

func (db *DB) scanEvents(rows pgx.Rows) ([]*StoredEvent, error) {
	defer rows.Close()
	var out []*StoredEvent
	for rows.Next() {
		var se StoredEvent
		var eventID, version string
		var js []byte
		if err := rows.Scan(&se.NID, &se.StreamPos, &eventID, &js, &version, &se.Rejected, &se.SoftFailed,
			&se.RedactedBy, &se.TxnDevice, &se.TxnID, &se.ReplacesState); err != nil {
			return nil, err
		}
		if se.Event = db.events.get(se.NID); se.Event == nil {
			v, err := event.Version(version)
			if err != nil {
				return nil, err
			}
			if se.Event, err = event.Trusted(v, js, eventID); err != nil {
				return nil, fmt.Errorf("stored event %s: %w", eventID, err)
			}
			db.events.put(se.NID, se.Event)
		}
		out = append(out, &se)
	}
	return out, rows.Err()
}

// EventsByNID loads events by numeric ID, in no particular order.
func (db *DB) EventsByNID(ctx context.Context, nids []int64) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid) WHERE e.event_nid = ANY($1)`, nids)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// EventsByID loads events by event ID, in no particular order; unknown IDs
// are left out.
func (db *DB) EventsByID(ctx context.Context, ids []string) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid) WHERE e.event_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// EventByID loads one event.
func (db *DB) EventByID(ctx context.Context, eventID string) (*StoredEvent, error) {
	evs, err := db.EventsByID(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}

// StateOfGroup returns the full state a state group stands for, following its
// chain of deltas to the nearest full snapshot.
func (db *DB) StateOfGroup(ctx context.Context, group int64) ([]StateEntry, error) {
	if group == 0 {
		return nil, nil
	}
	rows, err := db.Pool.Query(ctx, `
		WITH RECURSIVE chain(g, n) AS (
			SELECT $1::bigint, 0
			UNION ALL
			SELECT sg.prev_group, chain.n + 1 FROM chain JOIN state_groups sg ON sg.group_nid = chain.g
			WHERE sg.prev_group IS NOT NULL
		)
		SELECT type, state_key, event_nid FROM (
			SELECT DISTINCT ON (e.type, e.state_key) e.type, e.state_key, e.event_nid
			FROM chain JOIN state_group_entries e ON e.group_nid = chain.g
			ORDER BY e.type, e.state_key, chain.n
		) s WHERE event_nid IS NOT NULL`, group)
	if err != nil {
		return nil, fmt.Errorf("state of group %d: %w", group, err)
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var e StateEntry
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventNID); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// StateGroupChainLen returns how many deltas separate a group from a snapshot.
func (db *DB) StateGroupChainLen(ctx context.Context, group int64) (int, error) {
	if group == 0 {
		return 0, nil
	}
	var n int
	err := db.Pool.QueryRow(ctx, `SELECT chain_len FROM state_groups WHERE group_nid = $1`, group).Scan(&n)
	return n, err
}

// NewEvent is an event to persist into a room's timeline.
type NewEvent struct {
	Event     *event.Event
	StreamPos int64
	// Snapshot asks for the state after this (state) event to be written in
	// full rather than as a delta: the writer asks when the chain grows long.
	Snapshot bool
	// Membership is content.membership for m.room.member events.
	Membership string
	Rejected   bool
	SoftFailed bool
	TxnDevice  string
	TxnID      string
	// ApplyRedaction, for an m.room.redaction the writer found allowed,
	// marks its target redacted in the same transaction.
	ApplyRedaction bool
	// ReplacesState is the ID of the state event this one replaced.
	ReplacesState string
}

// Persisted is what PersistEvents decided for one event.
type Persisted struct {
	NID        int64
	StateAfter int64 // the group after the event (== StateBefore for messages)
	ChainLen   int
}

// PersistEvents writes a batch of new events of one room in one transaction:
// the events and their DAG edges, a state group for each accepted state
// event, current state, the membership log, and the room's new forward
// extremities and state group. Either all of it is written or none.
//
// The batch is a chain built on the room's current state: the state before
// the first event is room.StateGroup (whose delta chain is chainLen long), and
// each event's state before is the state after the previous one. That is how
// the room's writer builds local events.
func (db *DB) PersistEvents(ctx context.Context, room *Room, batch []NewEvent, chainLen int, extremities []string) ([]Persisted, error) {
	if room.NID != 0 && !slices.ContainsFunc(batch, func(ne NewEvent) bool { return ne.Event.IsState() }) {
		return db.persistMessages(ctx, room, batch, chainLen, extremities)
	}
	out := make([]Persisted, len(batch))
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if room.NID == 0 {
			// A new room: its row is written with its first events.
			if err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, version, created_ts) VALUES ($1, $2, $3) RETURNING room_nid`,
				room.RoomID, room.Version.ID, batch[0].Event.OriginServerTS()).Scan(&room.NID); err != nil {
				return fmt.Errorf("creating room %s: %w", room.RoomID, err)
			}
		}
		group := room.StateGroup
		// Message events need nothing back but their NID, so runs of them
		// go to the server as one pipelined batch: one round trip for a
		// whole group commit instead of one per event.
		var pending []int
		pipe := &pgx.Batch{}
		flush := func() error {
			if len(pending) == 0 {
				return nil
			}
			br := tx.SendBatch(ctx, pipe)
			for _, i := range pending {
				if err := br.QueryRow().Scan(&out[i].NID); err != nil {
					br.Close()
					return fmt.Errorf("inserting event %s: %w", batch[i].Event.ID(), err)
				}
			}
			pending, pipe = nil, &pgx.Batch{}
			return br.Close()
		}
		for i := range batch {
			ne := &batch[i]
			ev := ne.Event
			relType, relatesTo, threadRoot := relationOf(ev)
			args := []any{ev.ID(), room.NID, ne.StreamPos, ev.Depth(), ev.Type(), ev.StateKey(), ev.Sender(), ev.OriginServerTS(), ev.JSON(),
				group, ne.Rejected, ne.SoftFailed, relType, relatesTo, threadRoot, ne.TxnDevice, ne.TxnID, ev.PrevEventIDs(), ne.ApplyRedaction, ev.Redacts(), ne.ReplacesState}
			if !ev.IsState() || ne.Rejected || ne.SoftFailed {
				pipe.Queue(insertEventSQL, args...)
				pending = append(pending, i)
				out[i] = Persisted{StateAfter: group, ChainLen: chainLen}
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			var nid int64
			if err := tx.QueryRow(ctx, insertEventSQL, args...).Scan(&nid); err != nil {
				return fmt.Errorf("inserting event %s: %w", ev.ID(), err)
			}
			p := Persisted{NID: nid, StateAfter: group, ChainLen: chainLen}
			{
				var membership *string
				if ev.Type() == event.TypeMember {
					membership = &ne.Membership
				}
				if _, err := tx.Exec(ctx, `
					INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
					ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`,
					room.NID, ev.Type(), *ev.StateKey(), nid, membership); err != nil {
					return fmt.Errorf("current state for %s: %w", ev.ID(), err)
				}
				if membership != nil {
					if _, err := tx.Exec(ctx, `INSERT INTO membership_log (stream_pos, user_id, room_nid, membership, event_nid) VALUES ($1, $2, $3, $4, $5)`,
						ne.StreamPos, *ev.StateKey(), room.NID, ne.Membership, nid); err != nil {
						return fmt.Errorf("membership log for %s: %w", ev.ID(), err)
					}
				}
				// current_state now is the state after this event, so a
				// snapshot is a copy of it.
				prev := group
				var err error
				if ne.Snapshot || prev == 0 {
					err = tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, NULL, 0) RETURNING group_nid`,
						room.NID).Scan(&group)
					if err == nil {
						_, err = tx.Exec(ctx, `INSERT INTO state_group_entries (group_nid, type, state_key, event_nid)
							SELECT $1, type, state_key, event_nid FROM current_state WHERE room_nid = $2`, group, room.NID)
					}
					p.ChainLen = 0
				} else {
					err = tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING group_nid`,
						room.NID, prev, chainLen+1).Scan(&group)
					if err == nil {
						_, err = tx.Exec(ctx, `INSERT INTO state_group_entries (group_nid, type, state_key, event_nid) VALUES ($1, $2, $3, $4)`,
							group, ev.Type(), *ev.StateKey(), nid)
					}
					p.ChainLen = chainLen + 1
				}
				if err != nil {
					return fmt.Errorf("state group for %s: %w", ev.ID(), err)
				}
				p.StateAfter = group
			}
			chainLen = p.ChainLen
			out[i] = p
		}
		last := out[len(out)-1].StateAfter
		pipe.Queue(`UPDATE rooms SET extremities = $2, state_group = NULLIF($3, 0) WHERE room_nid = $1`, room.NID, extremities, last)
		br := tx.SendBatch(ctx, pipe)
		for _, i := range pending {
			if err := br.QueryRow().Scan(&out[i].NID); err != nil {
				br.Close()
				return fmt.Errorf("inserting event %s: %w", batch[i].Event.ID(), err)
			}
		}
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("updating room %s: %w", room.RoomID, err)
		}
		return br.Close()
	})
	if err != nil {
		return nil, err
	}
	room.Extremities = extremities
	room.StateGroup = out[len(out)-1].StateAfter
	return out, nil
}

// persistMessages writes a batch without state events in one round trip:
// the statements go as one pipeline ending in a single Sync, which
// PostgreSQL runs as one implicit transaction — all of it or none.
func (db *DB) persistMessages(ctx context.Context, room *Room, batch []NewEvent, chainLen int, extremities []string) ([]Persisted, error) {
	out := make([]Persisted, len(batch))
	pipe := &pgx.Batch{}
	for _, ne := range batch {
		ev := ne.Event
		relType, relatesTo, threadRoot := relationOf(ev)
		pipe.Queue(insertEventSQL, ev.ID(), room.NID, ne.StreamPos, ev.Depth(), ev.Type(), ev.StateKey(), ev.Sender(), ev.OriginServerTS(), ev.JSON(),
			room.StateGroup, ne.Rejected, ne.SoftFailed, relType, relatesTo, threadRoot, ne.TxnDevice, ne.TxnID, ev.PrevEventIDs(), ne.ApplyRedaction, ev.Redacts(), ne.ReplacesState)
	}
	pipe.Queue(`UPDATE rooms SET extremities = $2 WHERE room_nid = $1`, room.NID, extremities)
	br := db.Pool.SendBatch(ctx, pipe)
	for i := range batch {
		out[i] = Persisted{StateAfter: room.StateGroup, ChainLen: chainLen}
		if err := br.QueryRow().Scan(&out[i].NID); err != nil {
			br.Close()
			return nil, fmt.Errorf("inserting event %s: %w", batch[i].Event.ID(), err)
		}
	}
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, fmt.Errorf("updating room %s: %w", room.RoomID, err)
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	room.Extremities = extremities
	return out, nil
}

// insertEventSQL inserts an event with its DAG edges and, for an allowed
// redaction, marks the target: one statement, so it can be pipelined.
const insertEventSQL = `
	WITH ins AS (
		INSERT INTO events (event_id, room_nid, stream_pos, depth, type, state_key, sender, origin_ts, json,
			state_before, rejected, soft_failed, rel_type, relates_to, thread_root, txn_device, txn_id, replaces_state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, 0), $11, $12, NULLIF($13, ''), NULLIF($14, ''),
			NULLIF($15, ''), NULLIF($16, ''), NULLIF($17, ''), NULLIF($21, ''))
		RETURNING event_nid
	), edges AS (
		INSERT INTO event_edges (event_nid, prev_event_id)
		SELECT ins.event_nid, p FROM ins, unnest($18::text[]) AS p
		ON CONFLICT DO NOTHING
	), redacted AS (
		UPDATE events SET redacted_by = $1 WHERE $19::boolean AND event_id = $20 AND redacted_by IS NULL
	)
	SELECT event_nid FROM ins`

// relationOf extracts m.relates_to for the relations indexes.
func relationOf(ev *event.Event) (relType, relatesTo, threadRoot string) {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.RelatesTo == nil {
		return "", "", ""
	}
	if c.RelatesTo.RelType == "m.thread" {
		threadRoot = c.RelatesTo.EventID
	}
	return c.RelatesTo.RelType, c.RelatesTo.EventID, threadRoot
}
