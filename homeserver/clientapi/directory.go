package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/storage"
)

// A room's visibility in this server's room directory (/publicRooms lists
// the published rooms).
//
// Who may change it: as in Synapse, a joined member whose power level lets
// them send m.room.canonical_alias (by default moderators, state_default
// 50), or a server admin. The spec leaves the choice to servers; tying it to
// the room's own moderators is what clients expect, and publishing is the
// kind of decision that alias permission already covers. A room the
// community package keeps for a private repository is never published: the
// directory would reveal that the repository exists.
func (a *API) directoryVisibilityRoutes(r chi.Router) {
	r.Get("/directory/list/room/{roomID}", a.getRoomVisibility)
	r.With(a.Authenticate).Put("/directory/list/room/{roomID}", noGuests(a.putRoomVisibility))
}

// directoryRoom reads the path's room, M_NOT_FOUND when unknown.
func (a *API) directoryRoom(ctx context.Context, r *http.Request) (*storage.Room, error) {
	roomID := httpapi.PathParam(r, "roomID")
	if !id.ValidRoomID(roomID) {
		return nil, httpapi.InvalidParam("invalid room ID")
	}
	room, err := a.db.Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("room not found")
	}
	return room, err
}

func visibility(published bool) string {
	if published {
		return "public"
	}
	return "private"
}

func (a *API) getRoomVisibility(w http.ResponseWriter, r *http.Request) {
	room, err := a.directoryRoom(r.Context(), r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]string{"visibility": visibility(room.Published)})
}

func (a *API) putRoomVisibility(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rq := requester(r)
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	// The spec defaults an absent visibility to public.
	vis := "public"
	if req.Visibility != nil {
		vis = *req.Visibility
	}
	if vis != "public" && vis != "private" {
		httpapi.Fail(w, r, httpapi.InvalidParam("visibility must be public or private"))
		return
	}
	room, err := a.directoryRoom(ctx, r)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if !rq.IsAdmin {
		if err := a.requireJoined(ctx, room.RoomID, rq.UserID); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		pl, err := a.rooms.PowerLevels(ctx, room.RoomID)
		if err != nil {
			httpapi.Fail(w, r, roomErr(err))
			return
		}
		if pl.UserLevel(rq.UserID) < pl.EventLevel("m.room.canonical_alias", true) {
			httpapi.Fail(w, r, httpapi.Forbidden("only the room's moderators may change its directory visibility"))
			return
		}
	}
	if vis == "public" {
		private, err := a.db.PrivateCommunityRoom(ctx, room.RoomID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if private {
			httpapi.Fail(w, r, httpapi.Forbidden("the room of a private repository cannot be listed in the directory"))
			return
		}
	}
	if err := a.db.SetPublished(ctx, room.RoomID, vis == "public"); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}
