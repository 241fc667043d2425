package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"plaza/homeserver/event"
)

// CreateAlias maps an alias to a room; ErrExists if the alias is taken.
func (db *DB) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if isUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// ResolveAlias returns the room an alias points to.
func (db *DB) ResolveAlias(ctx context.Context, alias string) (string, error) {
	var roomID string
	err := db.Pool.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return roomID, err
}

// AliasCreator returns who created an alias.
func (db *DB) AliasCreator(ctx context.Context, alias string) (string, string, error) {
	var roomID, creator string
	err := db.Pool.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return roomID, creator, err
}

// DeleteAlias removes an alias.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	_, err := db.Pool.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// RoomAliases lists a room's local aliases.
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SetPublished lists or unlists a room in the directory.
func (db *DB) SetPublished(ctx context.Context, roomID string, published bool) error {
	tag, err := db.Pool.Exec(ctx, `UPDATE rooms SET published = $2 WHERE room_id = $1`, roomID, published)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// RoomsWithMembership lists the rooms where a user's current membership is
// one of memberships.
func (db *DB) RoomsWithMembership(ctx context.Context, userID string, memberships ...string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT r.room_id FROM current_state c JOIN rooms r USING (room_nid)
		WHERE c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = ANY($2) ORDER BY r.room_id`, userID, memberships)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// MembershipChange is one entry of the membership log.
type MembershipChange struct {
	StreamPos  int64
	RoomID     string
	Membership string
	EventNID   int64
}

// MembershipChanges returns a user's membership changes in (from, to], in
// stream order.
func (db *DB) MembershipChanges(ctx context.Context, userID string, from, to int64) ([]MembershipChange, error) {
	rows, err := db.Pool.Query(ctx, `SELECT m.stream_pos, r.room_id, m.membership, m.event_nid FROM membership_log m JOIN rooms r USING (room_nid)
		WHERE m.user_id = $1 AND m.stream_pos > $2 AND m.stream_pos <= $3 ORDER BY m.stream_pos`, userID, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (MembershipChange, error) {
		var c MembershipChange
		err := r.Scan(&c.StreamPos, &c.RoomID, &c.Membership, &c.EventNID)
		return c, err
	})
}

// MembershipHistory returns a user's membership history in a room, in
// stream order, for visibility checks over a range of events.
func (db *DB) MembershipHistory(ctx context.Context, roomNID int64, userID string) ([]MembershipChange, error) {
	rows, err := db.Pool.Query(ctx, `SELECT stream_pos, '', membership, event_nid FROM membership_log
		WHERE user_id = $1 AND room_nid = $2 ORDER BY stream_pos`, userID, roomNID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (MembershipChange, error) {
		var c MembershipChange
		err := r.Scan(&c.StreamPos, &c.RoomID, &c.Membership, &c.EventNID)
		return c, err
	})
}

// HistoryVisibilityChanges returns the room's m.room.history_visibility
// events in stream order (they are rare), for visibility checks.
func (db *DB) HistoryVisibilityChanges(ctx context.Context, roomNID int64) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.room_nid = $1 AND e.type = 'm.room.history_visibility' AND e.state_key = '' AND e.stream_pos IS NOT NULL
		AND NOT e.rejected AND NOT e.soft_failed ORDER BY e.stream_pos`, roomNID)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// MemberCounts returns the number of joined and invited members.
func (db *DB) MemberCounts(ctx context.Context, roomNID int64) (joined, invited int, err error) {
	err = db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE membership = 'join'), count(*) FILTER (WHERE membership = 'invite')
		FROM current_state WHERE room_nid = $1 AND type = 'm.room.member'`, roomNID).Scan(&joined, &invited)
	return joined, invited, err
}

// EventFilter narrows timeline queries (the RoomEventFilter of the spec,
// minus what is applied in memory).
type EventFilter struct {
	Types, NotTypes     []string // '*' wildcards allowed
	Senders, NotSenders []string
	ContainsURL         *bool
	// RelTypes/RelSenders etc. are not indexed; callers filter in memory.
}

// Empty reports whether the filter lets every event through.
func (f EventFilter) Empty() bool {
	return len(f.Types) == 0 && len(f.NotTypes) == 0 && len(f.Senders) == 0 && len(f.NotSenders) == 0 && f.ContainsURL == nil
}

// likePatterns turns spec type filters (with '*' wildcards) into LIKE patterns.
func likePatterns(types []string) []string {
	out := make([]string, len(types))
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	for i, t := range types {
		out[i] = strings.ReplaceAll(r.Replace(t), "*", "%")
	}
	return out
}

// RoomEvents pages through a room's timeline in stream order. A position
// stands between stream_pos and stream_pos+1: backwards returns events with
// stream_pos <= from (newest first), forwards events with stream_pos > from
// (oldest first); to bounds the other end the same way (0 = unbounded).
// Rejected and soft-failed events are never returned.
func (db *DB) RoomEvents(ctx context.Context, roomNID int64, from, to int64, backwards bool, limit int, f EventFilter) ([]*StoredEvent, error) {
	var b strings.Builder
	args := []any{roomNID, from}
	b.WriteString(`SELECT ` + eventColumns + ` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.room_nid = $1 AND e.stream_pos IS NOT NULL AND NOT e.rejected AND NOT e.soft_failed`)
	if backwards {
		b.WriteString(` AND e.stream_pos <= $2`)
		if to != 0 {
			args = append(args, to)
			fmt.Fprintf(&b, ` AND e.stream_pos > $%d`, len(args))
		}
	} else {
		b.WriteString(` AND e.stream_pos > $2`)
		if to != 0 {
			args = append(args, to)
			fmt.Fprintf(&b, ` AND e.stream_pos <= $%d`, len(args))
		}
	}
	if len(f.Types) > 0 {
		args = append(args, likePatterns(f.Types))
		fmt.Fprintf(&b, ` AND e.type LIKE ANY($%d)`, len(args))
	}
	if len(f.NotTypes) > 0 {
		args = append(args, likePatterns(f.NotTypes))
		fmt.Fprintf(&b, ` AND NOT (e.type LIKE ANY($%d))`, len(args))
	}
	if len(f.Senders) > 0 {
		args = append(args, f.Senders)
		fmt.Fprintf(&b, ` AND e.sender = ANY($%d)`, len(args))
	}
	if len(f.NotSenders) > 0 {
		args = append(args, f.NotSenders)
		fmt.Fprintf(&b, ` AND NOT (e.sender = ANY($%d))`, len(args))
	}
	if f.ContainsURL != nil {
		if *f.ContainsURL {
			b.WriteString(` AND e.json LIKE '%"url":%'`)
		} else {
			b.WriteString(` AND e.json NOT LIKE '%"url":%'`)
		}
	}
	if backwards {
		b.WriteString(` ORDER BY e.stream_pos DESC`)
	} else {
		b.WriteString(` ORDER BY e.stream_pos ASC`)
	}
	args = append(args, limit)
	fmt.Fprintf(&b, ` LIMIT $%d`, len(args))
	rows, err := db.Pool.Query(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("room events: %w", err)
	}
	return db.scanEvents(rows)
}

// RoomNID returns a room's numeric ID.
func (db *DB) RoomNID(ctx context.Context, roomID string) (int64, error) {
	var nid int64
	err := db.Pool.QueryRow(ctx, `SELECT room_nid FROM rooms WHERE room_id = $1`, roomID).Scan(&nid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return nid, err
}

// EventAtTimestamp returns the event closest to ts in the given direction.
func (db *DB) EventAtTimestamp(ctx context.Context, roomNID, ts int64, forwards bool) (*StoredEvent, error) {
	q := `SELECT ` + eventColumns + ` FROM events e JOIN rooms r USING (room_nid) WHERE e.room_nid = $1 AND e.stream_pos IS NOT NULL
		AND NOT e.rejected AND NOT e.soft_failed AND e.origin_ts <= $2 ORDER BY e.origin_ts DESC, e.stream_pos DESC LIMIT 1`
	if forwards {
		q = `SELECT ` + eventColumns + ` FROM events e JOIN rooms r USING (room_nid) WHERE e.room_nid = $1 AND e.stream_pos IS NOT NULL
		AND NOT e.rejected AND NOT e.soft_failed AND e.origin_ts >= $2 ORDER BY e.origin_ts ASC, e.stream_pos ASC LIMIT 1`
	}
	rows, err := db.Pool.Query(ctx, q, roomNID, ts)
	if err != nil {
		return nil, err
	}
	evs, err := db.scanEvents(rows)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}

// Relations returns events relating to an event, newest first, before a
// stream position (0 = newest).
func (db *DB) Relations(ctx context.Context, eventID, relType, evType string, before int64, limit int, forwards bool) ([]*StoredEvent, error) {
	var b strings.Builder
	args := []any{eventID}
	b.WriteString(`SELECT ` + eventColumns + ` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.relates_to = $1 AND e.stream_pos IS NOT NULL AND NOT e.rejected AND NOT e.soft_failed`)
	if relType != "" {
		args = append(args, relType)
		fmt.Fprintf(&b, ` AND e.rel_type = $%d`, len(args))
	}
	if evType != "" {
		args = append(args, evType)
		fmt.Fprintf(&b, ` AND e.type = $%d`, len(args))
	}
	if before != 0 {
		args = append(args, before)
		if forwards {
			fmt.Fprintf(&b, ` AND e.stream_pos > $%d`, len(args))
		} else {
			fmt.Fprintf(&b, ` AND e.stream_pos < $%d`, len(args))
		}
	}
	if forwards {
		b.WriteString(` ORDER BY e.stream_pos ASC`)
	} else {
		b.WriteString(` ORDER BY e.stream_pos DESC`)
	}
	args = append(args, limit)
	fmt.Fprintf(&b, ` LIMIT $%d`, len(args))
	rows, err := db.Pool.Query(ctx, b.String(), args...)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// ThreadRoots returns the roots of threads in a room, newest activity first.
func (db *DB) ThreadRoots(ctx context.Context, roomNID int64, before int64, limit int) ([]*StoredEvent, []int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT t.thread_root, max(t.stream_pos) AS latest FROM events t
		WHERE t.room_nid = $1 AND t.thread_root IS NOT NULL AND NOT t.rejected AND NOT t.soft_failed AND t.stream_pos IS NOT NULL
		GROUP BY t.thread_root HAVING ($2 = 0 OR max(t.stream_pos) < $2) ORDER BY latest DESC LIMIT $3`, roomNID, before, limit)
	if err != nil {
		return nil, nil, err
	}
	type root struct {
		id     string
		latest int64
	}
	roots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (root, error) {
		var x root
		err := r.Scan(&x.id, &x.latest)
		return x, err
	})
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(roots))
	for i, r := range roots {
		ids[i] = r.id
	}
	evs, err := db.EventsByID(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]*StoredEvent{}
	for _, e := range evs {
		byID[e.Event.ID()] = e
	}
	var out []*StoredEvent
	var latest []int64
	for _, r := range roots {
		if e := byID[r.id]; e != nil {
			out = append(out, e)
			latest = append(latest, r.latest)
		}
	}
	return out, latest, nil
}

// SetRedactedBy records that a redaction applies to an event.
func (db *DB) SetRedactedBy(ctx context.Context, eventID, redactionID string) error {
	_, err := db.Pool.Exec(ctx, `UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL`, eventID, redactionID)
	return err
}

// EventByTxn looks up the event a device's /send (or, with redaction set,
// /redact) transaction made: the idempotency check, which costs no extra
// write because the transaction ID is stored with the event.
func (db *DB) EventByTxn(ctx context.Context, sender, deviceID, txnID string, redaction bool) (string, error) {
	var id string
	err := db.Pool.QueryRow(ctx, `SELECT event_id FROM events WHERE sender = $1 AND txn_device = $2 AND txn_id = $3
		AND (type = 'm.room.redaction') = $4`, sender, deviceID, txnID, redaction).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}

// Forget records that a user forgot a room.
func (db *DB) Forget(ctx context.Context, userID, roomID string) error {
	_, err := db.Pool.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_nid) SELECT $1, room_nid FROM rooms WHERE room_id = $2
		ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

// Forgotten lists the rooms a user forgot.
func (db *DB) Forgotten(ctx context.Context, userID string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, `SELECT r.room_id FROM forgotten_rooms f JOIN rooms r USING (room_nid) WHERE f.user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// MembersAt returns each user's member event as of a stream position.
func (db *DB) MembersAt(ctx context.Context, roomNID, pos int64) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid) WHERE e.event_nid IN (
		SELECT DISTINCT ON (user_id) event_nid FROM membership_log WHERE room_nid = $1 AND stream_pos <= $2
		ORDER BY user_id, stream_pos DESC)`, roomNID, pos)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}

// ErrNoState: the state before an event is not known. An outlier (an
// event of a remote room's auth chain or state) and a backfilled event
// are stored without it; an empty state must never stand in for it.
var ErrNoState = errors.New("state before the event is not known")

// StateBeforeEvent returns the state group before an event, and the event.
// The create event's state before is empty (group 0); any other event
// stored without its state gives ErrNoState, along with the event.
func (db *DB) StateBeforeEvent(ctx context.Context, eventID string) (int64, *StoredEvent, error) {
	ev, err := db.EventByID(ctx, eventID)
	if err != nil {
		return 0, nil, err
	}
	var group *int64
	if err := db.Pool.QueryRow(ctx, `SELECT state_before FROM events WHERE event_nid = $1`, ev.NID).Scan(&group); err != nil {
		return 0, nil, err
	}
	if group == nil {
		if isCreate(ev.Event) {
			return 0, ev, nil
		}
		return 0, ev, ErrNoState
	}
	return *group, ev, nil
}

// EventsWithState returns which of the events are stored with the state
// before them known (the create event always is).
func (db *DB) EventsWithState(ctx context.Context, ids []string) (map[string]bool, error) {
	rows, err := db.Pool.Query(ctx, `SELECT event_id FROM events WHERE event_id = ANY($1)
		AND (state_before IS NOT NULL OR (type = 'm.room.create' AND state_key = ''))`, ids)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(got))
	for _, id := range got {
		out[id] = true
	}
	return out, nil
}

func isCreate(ev *event.Event) bool {
	sk := ev.StateKey()
	return ev.Type() == event.TypeCreate && sk != nil && *sk == ""
}

// CreateFilter stores a client filter and returns its ID.
func (db *DB) CreateFilter(ctx context.Context, userID string, filter []byte) (int64, error) {
	var id int64
	err := db.Pool.QueryRow(ctx, `INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`, userID, filter).Scan(&id)
	return id, err
}

// Filter loads a client filter.
func (db *DB) Filter(ctx context.Context, userID string, filterID int64) ([]byte, error) {
	var f []byte
	err := db.Pool.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, filterID).Scan(&f)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return f, err
}

// RoomsWithEventsSince returns which of the given rooms have timeline events
// in (from, to].
func (db *DB) RoomsWithEventsSince(ctx context.Context, roomNIDs []int64, from, to int64) ([]int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT room_nid FROM events WHERE room_nid = ANY($1) AND stream_pos > $2 AND stream_pos <= $3`, roomNIDs, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// RoomNIDs maps room IDs to numeric IDs.
func (db *DB) RoomNIDs(ctx context.Context, roomIDs []string) (map[string]int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT room_id, room_nid FROM rooms WHERE room_id = ANY($1)`, roomIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
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

// StateEventsBetween returns the state events of a room with stream
// positions in (from, to], in stream order (the state a limited sync
// timeline skipped over).
func (db *DB) StateEventsBetween(ctx context.Context, roomNID, from, to int64) ([]*StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, `SELECT `+eventColumns+` FROM events e JOIN rooms r USING (room_nid)
		WHERE e.room_nid = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3 AND e.state_key IS NOT NULL
		AND NOT e.rejected AND NOT e.soft_failed ORDER BY e.stream_pos`, roomNID, from, to)
	if err != nil {
		return nil, err
	}
	return db.scanEvents(rows)
}
