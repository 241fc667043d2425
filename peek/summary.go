package peek

import (
	"net/http"

	"plaza/homeserver/httpapi"
)

// roomSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// (spec v1.15). Anyone may see a summary of a room whose join rule is public
// (or knock) or whose history is world-readable; a signed-in user also sees
// rooms they have a membership in. Everything else is 404 with the very
// answer a room that does not exist gets, so the API reveals nothing.
func (s *Service) roomSummary(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, err := s.resolve(ctx, pathParam(r, "roomIDOrAlias"))
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	snap, err := s.snapshot(ctx, roomID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	sum := &snap.Summary
	allowed := sum.Public() || sum.WorldReadable()
	rq := httpapi.RequesterFrom(ctx)
	membership := ""
	if rq != nil {
		if membership, err = s.membership(ctx, roomID, rq.UserID); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		allowed = allowed || membership != ""
	}
	if !allowed {
		httpapi.Fail(w, r, httpapi.NotFound("room not found"))
		return
	}
	out := map[string]any{
		"room_id":            sum.RoomID,
		"num_joined_members": sum.JoinedMembers,
		"world_readable":     sum.WorldReadable(),
		"guest_can_join":     sum.GuestCanJoin,
		"room_version":       sum.RoomVersion,
	}
	optional := map[string]string{"name": sum.Name, "topic": sum.Topic, "avatar_url": sum.AvatarURL,
		"canonical_alias": sum.CanonicalAlias, "join_rule": sum.JoinRule, "room_type": sum.RoomType,
		"encryption": sum.Encryption}
	for k, v := range optional {
		if v != "" {
			out[k] = v
		}
	}
	if len(sum.AllowedRoomIDs) > 0 {
		out["allowed_room_ids"] = sum.AllowedRoomIDs
	}
	if rq != nil {
		// The spec's enum has no "none": a signed-in user outside the room
		// has, for clients, left it (or never joined).
		if membership == "" {
			membership = "leave"
		}
		out["membership"] = membership
	}
	httpapi.Respond(w, http.StatusOK, out)
}
