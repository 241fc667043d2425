package storage

import (
	"context"
	"fmt"
)

// PrivateCommunityRoom reports whether the room is the room of a private
// repository (community_rooms, kept by the community package), which must
// stay out of the room directory.
func (db *DB) PrivateCommunityRoom(ctx context.Context, roomID string) (bool, error) {
	var private bool
	err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM community_rooms WHERE room_id = $1 AND private)`, roomID).Scan(&private)
	if err != nil {
		return false, fmt.Errorf("reading community room %s: %w", roomID, err)
	}
	return private, nil
}
