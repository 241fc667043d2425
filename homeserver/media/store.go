package media

// The media table's queries. They live here rather than in package storage;
// the package doc says why.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// record is one row of the media table.
type record struct {
	mediaID     string
	uploader    string
	contentType string // "" until uploaded
	filename    string // "" if the upload named none
	size        int64
	created     time.Time
	uploaded    time.Time // zero while reserved but not uploaded
	expires     time.Time // deadline of a reservation; zero once uploaded
}

func (m *record) pending() bool { return m.uploaded.IsZero() }

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.UnixMilli(*v)
}

// getRecord returns the media row, or nil if there is none.
func (s *Service) getRecord(ctx context.Context, mediaID string) (*record, error) {
	var (
		m                 record
		ct, name          *string
		size              *int64
		uploaded, expires *int64
		created           int64
	)
	err := s.db.Pool.QueryRow(ctx, `
		SELECT uploader, content_type, upload_name, size_bytes, created_ts, uploaded_ts, expires_ts
		FROM media WHERE media_id = $1`, mediaID).
		Scan(&m.uploader, &ct, &name, &size, &created, &uploaded, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("media: reading %s: %w", mediaID, err)
	}
	m.mediaID = mediaID
	if ct != nil {
		m.contentType = *ct
	}
	if name != nil {
		m.filename = *name
	}
	if size != nil {
		m.size = *size
	}
	m.created = time.UnixMilli(created)
	m.uploaded = fromMS(uploaded)
	m.expires = fromMS(expires)
	return &m, nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// insertUploaded records new media whose file is about to be installed; the
// caller installs the file inside tx, before the commit.
func insertUploaded(ctx context.Context, tx pgx.Tx, m *record) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO media (media_id, uploader, content_type, upload_name, size_bytes, created_ts, uploaded_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $6)`,
		m.mediaID, m.uploader, m.contentType, nullable(m.filename), m.size, ms(m.uploaded))
	if err != nil {
		return fmt.Errorf("media: recording %s: %w", m.mediaID, err)
	}
	return nil
}

// reservation states, as seen by an upload to a reserved ID.
type reservationState int

const (
	reservationOpen      reservationState = iota // may be uploaded to by this user
	reservationMissing                           // never created, or expired
	reservationNotYours                          // created by someone else
	reservationCompleted                         // already has content
)

// lockReservation reads the reservation of mediaID for an upload by
// uploader. Inside a transaction it locks the row, so that of two
// concurrent uploads to one ID the second sees the first's content.
func lockReservation(ctx context.Context, q pgx.Tx, mediaID, uploader string, now time.Time) (reservationState, error) {
	var (
		owner             string
		uploaded, expires *int64
	)
	err := q.QueryRow(ctx, `SELECT uploader, uploaded_ts, expires_ts FROM media WHERE media_id = $1 FOR UPDATE`, mediaID).
		Scan(&owner, &uploaded, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return reservationMissing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("media: reading reservation %s: %w", mediaID, err)
	}
	return classifyReservation(owner, uploaded, expires, uploader, now), nil
}

func classifyReservation(owner string, uploaded, expires *int64, uploader string, now time.Time) reservationState {
	switch {
	case owner != uploader:
		// Checked first: whether someone else's ID exists, or has content,
		// is none of this user's business.
		return reservationNotYours
	case uploaded != nil:
		return reservationCompleted
	case expires != nil && *expires <= ms(now):
		return reservationMissing
	default:
		return reservationOpen
	}
}

// peekReservation is lockReservation without a lock, to refuse an upload
// before receiving its body.
func (s *Service) peekReservation(ctx context.Context, mediaID, uploader string) (reservationState, error) {
	m, err := s.getRecord(ctx, mediaID)
	if err != nil || m == nil {
		return reservationMissing, err
	}
	var uploaded, expires *int64
	if !m.uploaded.IsZero() {
		v := ms(m.uploaded)
		uploaded = &v
	}
	if !m.expires.IsZero() {
		v := ms(m.expires)
		expires = &v
	}
	return classifyReservation(m.uploader, uploaded, expires, uploader, s.now()), nil
}

// completeReservation fills in a reserved row; the row must be locked by
// lockReservation in the same transaction.
func completeReservation(ctx context.Context, tx pgx.Tx, m *record) error {
	_, err := tx.Exec(ctx, `
		UPDATE media SET content_type = $2, upload_name = $3, size_bytes = $4, uploaded_ts = $5, expires_ts = NULL
		WHERE media_id = $1`,
		m.mediaID, m.contentType, nullable(m.filename), m.size, ms(m.uploaded))
	if err != nil {
		return fmt.Errorf("media: recording %s: %w", m.mediaID, err)
	}
	return nil
}

// errTooManyPending refuses a reservation past the per-user limit.
var errTooManyPending = errors.New("media: too many pending uploads")

// reserve records a reservation for mediaID, unless uploader already has
// maxPending live ones. Expired reservations of the user are dropped on the
// way: that is their only clean-up, and enough, since only their owner can
// ever use them.
func (s *Service) reserve(ctx context.Context, mediaID, uploader string, now, expires time.Time, maxPending int) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		// Serialise one user's reservations so that concurrent requests
		// cannot both pass the count below.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('plaza.media.reserve:' || $1, 0))`, uploader); err != nil {
			return fmt.Errorf("media: locking reservations: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			DELETE FROM media WHERE uploader = $1 AND uploaded_ts IS NULL AND expires_ts <= $2`,
			uploader, ms(now)); err != nil {
			return fmt.Errorf("media: dropping expired reservations: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NULL`, uploader).Scan(&n); err != nil {
			return fmt.Errorf("media: counting reservations: %w", err)
		}
		if n >= maxPending {
			return errTooManyPending
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO media (media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
			mediaID, uploader, ms(now), ms(expires)); err != nil {
			return fmt.Errorf("media: reserving %s: %w", mediaID, err)
		}
		return nil
	})
}
