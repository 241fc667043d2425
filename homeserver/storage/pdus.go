package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"plaza/homeserver/event"
)

// Events received over federation do not always continue the room's current
// state the way local events do: they may sit on a fork, arrive only as auth
// or state of another event (outliers), or change current state through
// state resolution. PersistRemote and InsertOutliers write those cases.

// Outlier is an event known only as the auth or state of another event: it
// is stored without a stream position and never shows in a timeline.
type Outlier struct {
	Event    *event.Event
	Rejected bool
}

// InsertOutliers stores events as outliers, creating the room's row when
// room.NID is 0. Events already stored are kept as they are. It returns the
// numeric IDs of all of them by event ID.
func (db *DB) InsertOutliers(ctx context.Context, room *Room, evs []Outlier) (map[string]int64, error) {
	out := make(map[string]int64, len(evs))
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if room.NID == 0 {
			if err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, version, created_ts) VALUES ($1, $2, $3)
				ON CONFLICT (room_id) DO UPDATE SET room_id = EXCLUDED.room_id RETURNING room_nid`,
				room.RoomID, room.Version.ID, 0).Scan(&room.NID); err != nil {
				return fmt.Errorf("creating room %s: %w", room.RoomID, err)
			}
		}
		b := &pgx.Batch{}
		for _, o := range evs {
			ev := o.Event
			b.Queue(`INSERT INTO events (event_id, room_nid, stream_pos, depth, type, state_key, sender, origin_ts, json, rejected)
				VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING`,
				ev.ID(), room.NID, ev.Depth(), ev.Type(), ev.StateKey(), ev.Sender(), ev.OriginServerTS(), ev.JSON(), o.Rejected)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("inserting outliers: %w", err)
		}
		ids := make([]string, len(evs))
		for i, o := range evs {
			ids[i] = o.Event.ID()
		}
		rows, err := tx.Query(ctx, `SELECT event_id, event_nid FROM events WHERE event_id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var nid int64
			if err := rows.Scan(&id, &nid); err != nil {
				return err
			}
			out[id] = nid
		}
		return rows.Err()
	})
	return out, err
}

// StateChange is one change of a room's current state. EventNID 0 removes
// the entry; SelfNID stands for the event being persisted.
type StateChange struct {
	Type, StateKey string
	EventNID       int64
	Membership     string // for m.room.member
}

// SelfNID in a StateChange or a state map means "the event being persisted",
// whose numeric ID is not known before it is written.
const SelfNID = -1

// RemoteEvent is a received event placed in the DAG.
type RemoteEvent struct {
	Event *event.Event
	// Deferred commits without waiting for the disk: the caller makes
	// it durable with FlushWAL before acknowledging it to anyone.
	Deferred       bool
	StreamPos      int64 // 0: an outlier
	Rejected       bool
	SoftFailed     bool
	ApplyRedaction bool
	// BeforeGroup is the state group before the event; when 0,
	// BeforeState is written as a new snapshot group (nil: no state known).
	BeforeGroup int64
	BeforeState map[event.TypeKey]int64
	// Current changes the room's current state (nil: unchanged), recorded
	// as a delta group on the room's state group, with membership log
	// entries at StreamPos for member changes.
	Current []StateChange
	// Extremities replace the room's forward extremities (nil: unchanged).
	Extremities []string
	// ReplacesState is the current state event the event replaced.
	ReplacesState string
}

// RemotePersisted is what PersistRemote wrote.
type RemotePersisted struct {
	NID         int64
	BeforeGroup int64
	// StateGroup and ChainLen are the room's state group afterwards.
	StateGroup int64
	ChainLen   int
}

// PersistRemote writes one received event with its state and the room's new
// current state and extremities, in one transaction. The room's row must
// exist (InsertOutliers creates it for a room joined over federation). An
// event already stored as an outlier is promoted in place.
func (db *DB) PersistRemote(ctx context.Context, room *Room, chainLen int, re RemoteEvent) (RemotePersisted, error) {
	out := RemotePersisted{BeforeGroup: re.BeforeGroup, StateGroup: room.StateGroup, ChainLen: chainLen}
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		ev := re.Event
		if re.Deferred {
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit TO off`); err != nil {
				return err
			}
		}
		if out.BeforeGroup == 0 && re.BeforeState != nil {
			if err := tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, NULL, 0) RETURNING group_nid`,
				room.NID).Scan(&out.BeforeGroup); err != nil {
				return fmt.Errorf("state before %s: %w", ev.ID(), err)
			}
			if err := copyEntries(ctx, tx, out.BeforeGroup, re.BeforeState); err != nil {
				return fmt.Errorf("state before %s: %w", ev.ID(), err)
			}
		}
		var pos *int64
		if re.StreamPos != 0 {
			pos = &re.StreamPos
		}
		relType, relatesTo, threadRoot := relationOf(ev)
		err := tx.QueryRow(ctx, `
			WITH ins AS (
				INSERT INTO events (event_id, room_nid, stream_pos, depth, type, state_key, sender, origin_ts, json,
					state_before, rejected, soft_failed, rel_type, relates_to, thread_root, replaces_state)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, 0), $11, $12, NULLIF($13, ''), NULLIF($14, ''), NULLIF($15, ''), NULLIF($16, ''))
				ON CONFLICT (event_id) DO UPDATE SET stream_pos = EXCLUDED.stream_pos, state_before = EXCLUDED.state_before,
					rejected = EXCLUDED.rejected, soft_failed = EXCLUDED.soft_failed, rel_type = EXCLUDED.rel_type,
					relates_to = EXCLUDED.relates_to, thread_root = EXCLUDED.thread_root, replaces_state = EXCLUDED.replaces_state
					WHERE events.stream_pos IS NULL
				RETURNING event_nid
			), edges AS (
				INSERT INTO event_edges (event_nid, prev_event_id)
				SELECT ins.event_nid, p FROM ins, unnest($17::text[]) AS p
				ON CONFLICT DO NOTHING
			)
			SELECT event_nid FROM ins`,
			ev.ID(), room.NID, pos, ev.Depth(), ev.Type(), ev.StateKey(), ev.Sender(), ev.OriginServerTS(), ev.JSON(),
			out.BeforeGroup, re.Rejected, re.SoftFailed, relType, relatesTo, threadRoot, re.ReplacesState, ev.PrevEventIDs()).Scan(&out.NID)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("event %s: %w", ev.ID(), ErrExists)
		}
		if err != nil {
			return fmt.Errorf("inserting event %s: %w", ev.ID(), err)
		}
		if re.ApplyRedaction {
			if _, err := tx.Exec(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_nid = $3 AND redacted_by IS NULL`,
				ev.ID(), ev.Redacts(), room.NID); err != nil {
				return fmt.Errorf("applying redaction %s: %w", ev.ID(), err)
			}
		}
		if len(re.Current) > 0 {
			if err := applyCurrent(ctx, tx, room, re, out.NID, &out); err != nil {
				return err
			}
		}
		if re.Extremities != nil || out.StateGroup != room.StateGroup {
			ext := re.Extremities
			if ext == nil {
				ext = room.Extremities
			}
			if _, err := tx.Exec(ctx, `UPDATE rooms SET extremities = $2, state_group = NULLIF($3, 0) WHERE room_nid = $1`,
				room.NID, ext, out.StateGroup); err != nil {
				return fmt.Errorf("updating room %s: %w", room.RoomID, err)
			}
		}
		return nil
	})
	if err != nil {
		return RemotePersisted{}, err
	}
	if re.Extremities != nil {
		room.Extremities = re.Extremities
	}
	room.StateGroup = out.StateGroup
	return out, nil
}

// applyCurrent writes changes of current state: the current_state rows, the
// membership log and a delta group on the room's state group.
func applyCurrent(ctx context.Context, tx pgx.Tx, room *Room, re RemoteEvent, self int64, out *RemotePersisted) error {
	var group int64
	var err error
	if room.StateGroup == 0 || out.ChainLen >= 64 {
		err = tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, NULL, 0) RETURNING group_nid`,
			room.NID).Scan(&group)
		out.ChainLen = 0
	} else {
		err = tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING group_nid`,
			room.NID, room.StateGroup, out.ChainLen+1).Scan(&group)
		out.ChainLen++
	}
	if err != nil {
		return fmt.Errorf("current state group: %w", err)
	}
	b := &pgx.Batch{}
	for _, c := range re.Current {
		nid := c.EventNID
		if nid == SelfNID {
			nid = self
		}
		if nid == 0 {
			b.Queue(`DELETE FROM current_state WHERE room_nid = $1 AND type = $2 AND state_key = $3`, room.NID, c.Type, c.StateKey)
		} else {
			var membership *string
			if c.Type == event.TypeMember {
				membership = &c.Membership
				if re.StreamPos != 0 {
					b.Queue(`INSERT INTO membership_log (stream_pos, user_id, room_nid, membership, event_nid) VALUES ($1, $2, $3, $4, $5)
						ON CONFLICT DO NOTHING`, re.StreamPos, c.StateKey, room.NID, c.Membership, nid)
				}
			}
			b.Queue(`INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`,
				room.NID, c.Type, c.StateKey, nid, membership)
		}
		if out.ChainLen > 0 {
			var enid *int64
			if nid != 0 {
				enid = &nid
			}
			b.Queue(`INSERT INTO state_group_entries (group_nid, type, state_key, event_nid) VALUES ($1, $2, $3, $4)
				ON CONFLICT (group_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid`, group, c.Type, c.StateKey, enid)
		}
	}
	if out.ChainLen == 0 {
		b.Queue(`INSERT INTO state_group_entries (group_nid, type, state_key, event_nid)
			SELECT $1, type, state_key, event_nid FROM current_state WHERE room_nid = $2`, group, room.NID)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("current state after %s: %w", re.Event.ID(), err)
	}
	out.StateGroup = group
	return nil
}

func copyEntries(ctx context.Context, tx pgx.Tx, group int64, state map[event.TypeKey]int64) error {
	rows := make([][]any, 0, len(state))
	for tk, nid := range state {
		rows = append(rows, []any{group, tk.Type, tk.StateKey, nid})
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"state_group_entries"}, []string{"group_nid", "type", "state_key", "event_nid"}, pgx.CopyFromRows(rows))
	return err
}

// EventNIDs maps event IDs to numeric IDs; unknown IDs are left out.
func (db *DB) EventNIDs(ctx context.Context, ids []string) (map[string]int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT event_id, event_nid FROM events WHERE event_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]int64, len(ids))
	for rows.Next() {
		var id string
		var nid int64
		if err := rows.Scan(&id, &nid); err != nil {
			return nil, err
		}
		out[id] = nid
	}
	return out, rows.Err()
}

// MissingEvents walks back from latest through prev_events, stopping at
// earliest, and returns the up to limit nearest events of the room's
// timeline that it met (the answer to /get_missing_events), oldest first.
func (db *DB) MissingEvents(ctx context.Context, roomNID int64, earliest, latest []string, limit int) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `
		WITH RECURSIVE walk(id, n) AS (
			SELECT x.prev_event_id, 1 FROM events e JOIN event_edges x USING (event_nid)
			WHERE e.room_nid = $1 AND e.event_id = ANY($2)
			UNION
			SELECT x.prev_event_id, walk.n + 1 FROM walk JOIN events e ON e.event_id = walk.id JOIN event_edges x ON x.event_nid = e.event_nid
			WHERE NOT (walk.id = ANY($3)) AND walk.n < $4
		)
		SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.event_id IN (SELECT id FROM walk WHERE NOT (id = ANY($3))) AND e.room_nid = $1 AND e.stream_pos IS NOT NULL
		ORDER BY e.depth DESC, e.stream_pos DESC LIMIT $4`, roomNID, latest, earliest, limit)
	if err != nil {
		return nil, err
	}
	evs, err := db.scanEvents(rows)
	slices.Reverse(evs)
	return evs, err
}

// AuthChain returns the auth chain of the given events: every event reached
// through auth_events, the given events themselves excluded unless reached.
func (db *DB) AuthChain(ctx context.Context, ids []string) ([]*StoredEvent, error) {
	start, err := db.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var frontier []string
	add := func(evs []*StoredEvent) {
		for _, e := range evs {
			for _, a := range e.Event.AuthEventIDs() {
				if !seen[a] {
					seen[a] = true
					frontier = append(frontier, a)
				}
			}
		}
	}
	add(start)
	var out []*StoredEvent
	for len(frontier) > 0 {
		next, err := db.EventsByID(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = nil
		out = append(out, next...)
		add(next)
	}
	return out, nil
}

// RemoteInvite is an invite from another server to a room we are not in.
type RemoteInvite struct {
	EventID       string
	InviterServer string
	InviteState   []byte // JSON array
}

// StoreRemoteInvite records an invite to a room this server is not in: the
// event as an outlier, the invitee's membership in current_state and the
// membership log at pos, and the stripped state it came with.
func (db *DB) StoreRemoteInvite(ctx context.Context, room *Room, ev *event.Event, pos int64, inviter string, inviteState []byte) (int64, error) {
	nids, err := db.InsertOutliers(ctx, room, []Outlier{{Event: ev}})
	if err != nil {
		return 0, err
	}
	nid := nids[ev.ID()]
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, 'm.room.member', $2, $3, 'invite')
			ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`,
			room.NID, *ev.StateKey(), nid)
		b.Queue(`INSERT INTO membership_log (stream_pos, user_id, room_nid, membership, event_nid) VALUES ($1, $2, $3, 'invite', $4)`,
			pos, *ev.StateKey(), room.NID, nid)
		b.Queue(`INSERT INTO remote_invites (user_id, room_id, event_id, inviter_server, invite_state) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, room_id) DO UPDATE SET event_id = EXCLUDED.event_id, inviter_server = EXCLUDED.inviter_server,
			invite_state = EXCLUDED.invite_state`, *ev.StateKey(), room.RoomID, ev.ID(), inviter, inviteState)
		return tx.SendBatch(ctx, b).Close()
	})
	return nid, err
}

// RemoteInviteFor returns a user's invite to a room we are not in.
func (db *DB) RemoteInviteFor(ctx context.Context, userID, roomID string) (*RemoteInvite, error) {
	var ri RemoteInvite
	err := db.Pool.QueryRow(ctx, `SELECT event_id, inviter_server, invite_state FROM remote_invites WHERE user_id = $1 AND room_id = $2`,
		userID, roomID).Scan(&ri.EventID, &ri.InviterServer, &ri.InviteState)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &ri, err
}

// ForgetRemoteInvite drops a user's remote invite (joined or answered).
func (db *DB) ForgetRemoteInvite(ctx context.Context, userID, roomID string) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM remote_invites WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// SetOutOfRoomMembership records a local user's membership in a room we
// are not in (a rejected invite, a knock): the event as an outlier, the
// current_state row and the membership log entry at pos.
//
// For a knock, keepState (the stripped state the room's server answered)
// and server are kept in remote_invites, as for an invite, for /sync to
// show; otherwise the user's remote invite is dropped.
func (db *DB) SetOutOfRoomMembership(ctx context.Context, room *Room, ev *event.Event, membership string, pos int64, keepState []byte, server string) (int64, error) {
	nids, err := db.InsertOutliers(ctx, room, []Outlier{{Event: ev}})
	if err != nil {
		return 0, err
	}
	nid := nids[ev.ID()]
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, 'm.room.member', $2, $3, $4)
			ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`,
			room.NID, *ev.StateKey(), nid, membership)
		b.Queue(`INSERT INTO membership_log (stream_pos, user_id, room_nid, membership, event_nid) VALUES ($1, $2, $3, $4, $5)`,
			pos, *ev.StateKey(), room.NID, membership, nid)
		if keepState != nil {
			b.Queue(`INSERT INTO remote_invites (user_id, room_id, event_id, inviter_server, invite_state) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, room_id) DO UPDATE SET event_id = EXCLUDED.event_id, inviter_server = EXCLUDED.inviter_server,
				invite_state = EXCLUDED.invite_state`, *ev.StateKey(), room.RoomID, ev.ID(), server, keepState)
		} else {
			b.Queue(`DELETE FROM remote_invites WHERE user_id = $1 AND room_id = $2`, *ev.StateKey(), room.RoomID)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	return nid, err
}

// BackwardExtremities returns up to limit events that timeline events of
// the room name as prev_events but that are not in the timeline: where
// backfilling starts.
func (db *DB) BackwardExtremities(ctx context.Context, roomNID int64, limit int) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT x.prev_event_id FROM event_edges x JOIN events e USING (event_nid)
		WHERE e.room_nid = $1 AND e.stream_pos IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = x.prev_event_id AND (p.stream_pos IS NOT NULL OR p.rejected))
		LIMIT $2`, roomNID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// FlushWAL makes every commit before it durable, deferred ones included:
// it commits a transaction that wrote to the write-ahead log (a logical
// message, which changes no table) with synchronous_commit on, and such a
// commit waits until the log is flushed up to its record, which lies after
// every earlier commit. One flush then stands for a whole federation
// transaction's PDUs instead of one per PDU, whatever the server's default.
func (db *DB) FlushWAL(ctx context.Context) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit TO on`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'plaza.flush', '')`)
		return err
	})
}
