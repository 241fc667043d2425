package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrBulkRedaction is returned when a bulk batch holds a redaction to apply:
// bulk loads write new events only, they never change stored ones.
var ErrBulkRedaction = errors.New("bulk persist cannot apply redactions")

// BulkPersist writes a batch exactly as PersistEvents would — the same rows
// in events, event_edges, state_groups (a delta per accepted state event, a
// full copy where NewEvent.Snapshot asks), state_group_entries,
// current_state, membership_log and the room's extremities and state group —
// but with COPY and a handful of set-based statements instead of a statement
// per event, for imports and benchmark rooms of millions of events. One
// transaction: all of the batch or none.
//
// Event and state group NIDs come from the tables' own sequences, so bulk
// writes interleave safely with the ordinary writers of other rooms; the
// caller must be the room's only writer while it runs (room.Service's bulk
// loader holds the writer role).
func (db *DB) BulkPersist(ctx context.Context, room *Room, batch []NewEvent, chainLen int, extremities []string) ([]Persisted, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	for _, ne := range batch {
		if ne.ApplyRedaction {
			return nil, ErrBulkRedaction
		}
	}
	out := make([]Persisted, len(batch))
	roomNID := room.NID
	group := room.StateGroup
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if roomNID == 0 {
			if err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, version, created_ts) VALUES ($1, $2, $3) RETURNING room_nid`,
				room.RoomID, room.Version.ID, batch[0].Event.OriginServerTS()).Scan(&roomNID); err != nil {
				return fmt.Errorf("creating room %s: %w", room.RoomID, err)
			}
		}
		accepted := func(ne *NewEvent) bool { return ne.Event.IsState() && !ne.Rejected && !ne.SoftFailed }
		states := 0
		for i := range batch {
			if accepted(&batch[i]) {
				states++
			}
		}
		nids, err := nextvals(ctx, tx, "events_event_nid_seq", len(batch))
		if err != nil {
			return err
		}
		groups, err := nextvals(ctx, tx, "state_groups_group_nid_seq", states)
		if err != nil {
			return err
		}

		// Walk the chain once, deciding every row as PersistEvents would.
		var eventRows, edgeRows, groupRows, entryRows, logRows [][]any
		// A snapshot group copies current_state as it is right after its
		// event, so current_state is brought up to each snapshot in turn.
		type segment struct {
			upto     int   // state changes [previous upto, upto) precede the snapshot
			snapshot int64 // the snapshot group (0: the tail, no snapshot)
		}
		type change struct {
			typ, key   string
			nid        int64
			membership *string
		}
		var changes []change
		var segments []segment
		g := 0
		for i := range batch {
			ne := &batch[i]
			ev := ne.Event
			nid := nids[i]
			relType, relatesTo, threadRoot := relationOf(ev)
			before := group
			eventRows = append(eventRows, []any{nid, ev.ID(), roomNID, ne.StreamPos, ev.Depth(), ev.Type(), ev.StateKey(), ev.Sender(),
				ev.OriginServerTS(), ev.JSON(), nullInt(before), ne.Rejected, ne.SoftFailed, nullStr(relType), nullStr(relatesTo),
				nullStr(threadRoot), nullStr(ne.TxnDevice), nullStr(ne.TxnID), nullStr(ne.ReplacesState)})
			for _, p := range ev.PrevEventIDs() {
				edgeRows = append(edgeRows, []any{nid, p})
			}
			p := Persisted{NID: nid, StateAfter: group, ChainLen: chainLen}
			if accepted(ne) {
				var membership *string
				if ev.Type() == "m.room.member" {
					m := ne.Membership
					membership = &m
					logRows = append(logRows, []any{ne.StreamPos, *ev.StateKey(), roomNID, m, nid})
				}
				changes = append(changes, change{ev.Type(), *ev.StateKey(), nid, membership})
				group = groups[g]
				g++
				if ne.Snapshot || before == 0 {
					groupRows = append(groupRows, []any{group, roomNID, nil, 0})
					segments = append(segments, segment{upto: len(changes), snapshot: group})
					p.ChainLen = 0
				} else {
					groupRows = append(groupRows, []any{group, roomNID, before, chainLen + 1})
					entryRows = append(entryRows, []any{group, ev.Type(), *ev.StateKey(), nid})
					p.ChainLen = chainLen + 1
				}
				p.StateAfter = group
				chainLen = p.ChainLen
			}
			out[i] = p
		}
		segments = append(segments, segment{upto: len(changes)})

		copies := []struct {
			table string
			cols  []string
			rows  [][]any
		}{
			{"state_groups", []string{"group_nid", "room_nid", "prev_group", "chain_len"}, groupRows},
			{"events", []string{"event_nid", "event_id", "room_nid", "stream_pos", "depth", "type", "state_key", "sender", "origin_ts", "json",
				"state_before", "rejected", "soft_failed", "rel_type", "relates_to", "thread_root", "txn_device", "txn_id", "replaces_state"}, eventRows},
			{"event_edges", []string{"event_nid", "prev_event_id"}, edgeRows},
			{"state_group_entries", []string{"group_nid", "type", "state_key", "event_nid"}, entryRows},
			{"membership_log", []string{"stream_pos", "user_id", "room_nid", "membership", "event_nid"}, logRows},
		}
		for _, c := range copies {
			if len(c.rows) == 0 {
				continue
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
				return fmt.Errorf("bulk copy into %s: %w", c.table, err)
			}
		}

		from := 0
		for _, seg := range segments {
			// One upsert per segment; a key changed twice in a segment keeps
			// its last change (an upsert may not touch a row twice).
			last := map[[2]string]int{}
			for j := from; j < seg.upto; j++ {
				last[[2]string{changes[j].typ, changes[j].key}] = j
			}
			var types, keys, memberships []*string
			var evNIDs []int64
			for j := from; j < seg.upto; j++ {
				c := changes[j]
				if last[[2]string{c.typ, c.key}] != j {
					continue
				}
				types, keys = append(types, &c.typ), append(keys, &c.key)
				evNIDs, memberships = append(evNIDs, c.nid), append(memberships, c.membership)
			}
			from = seg.upto
			if len(types) > 0 {
				if _, err := tx.Exec(ctx, `
					INSERT INTO current_state (room_nid, type, state_key, event_nid, membership)
					SELECT $1, t, k, n, m FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[]) AS u(t, k, n, m)
					ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = EXCLUDED.event_nid, membership = EXCLUDED.membership`,
					roomNID, types, keys, evNIDs, memberships); err != nil {
					return fmt.Errorf("bulk current state: %w", err)
				}
			}
			if seg.snapshot != 0 {
				if _, err := tx.Exec(ctx, `INSERT INTO state_group_entries (group_nid, type, state_key, event_nid)
					SELECT $1, type, state_key, event_nid FROM current_state WHERE room_nid = $2`, seg.snapshot, roomNID); err != nil {
					return fmt.Errorf("bulk state snapshot: %w", err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE rooms SET extremities = $2, state_group = NULLIF($3, 0) WHERE room_nid = $1`,
			roomNID, extremities, group); err != nil {
			return fmt.Errorf("updating room %s: %w", room.RoomID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	room.NID = roomNID
	room.Extremities = extremities
	room.StateGroup = group
	return out, nil
}

// BulkAccounts creates accounts without passwords (they sign in some other
// way, or never: imported and benchmark users) for the users that have none.
func (db *DB) BulkAccounts(ctx context.Context, userIDs, localparts, displayNames []string, nowMS int64) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO accounts (user_id, localpart, displayname, created_ts)
		SELECT u, l, NULLIF(d, ''), $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS x(u, l, d)
		ON CONFLICT DO NOTHING`, userIDs, localparts, displayNames, nowMS)
	if err != nil {
		return fmt.Errorf("bulk accounts: %w", err)
	}
	return nil
}

// nextvals takes n values of a sequence.
func nextvals(ctx context.Context, tx pgx.Tx, seq string, n int) ([]int64, error) {
	if n == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT nextval($1::regclass) FROM generate_series(1, $2)`, seq, n)
	if err != nil {
		return nil, fmt.Errorf("reserving %d values of %s: %w", n, seq, err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("reserving %d values of %s: %w", n, seq, err)
	}
	return vals, nil
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}
