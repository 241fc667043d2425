package clientapi

import (
	"context"
	"encoding/json"
	"errors"

	"plaza/homeserver/storage"
)

// The client API's hooks: narrow points where the Gitter features
// (community: rooms on demand, forge-gated joins) and federation (rooms on
// other servers) extend it, set once at start-up, before serving.

// ErrNoSuchAlias is what an AliasResolver returns when it has no room for an
// alias (the forge knows no such repository): the client gets M_NOT_FOUND.
var ErrNoSuchAlias = errors.New("no such alias")

// AliasResolver is asked about an alias of this server that names no room
// yet. It may create the room (rooms on demand) and return its ID, or return
// ErrNoSuchAlias. requester is the signed-in user asking ("" for an anonymous
// or remote asker: see DESIGN.md for who may cause a creation). An error
// that is an *httpapi.Error reaches the client as it is.
type AliasResolver func(ctx context.Context, alias, requester string) (roomID string, err error)

// JoinGate is asked before a local user joins a room; a non-nil error (an
// *httpapi.Error, or room.ErrForbidden) refuses the join. Community uses it
// for rooms of private repositories.
type JoinGate func(ctx context.Context, roomID, userID string) error

// Remote reaches rooms this server is not in, over federation.
type Remote interface {
	// ResolveAlias asks the alias's own server (/query/directory).
	ResolveAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// Join joins a local user to a room on other servers (make_join,
	// send_join through one of servers), with content as the member
	// event's content.
	Join(ctx context.Context, roomID, userID string, servers []string, content json.RawMessage) error
	// Invite has a remote user's server countersign an invite to a room
	// of ours (/v2/invite), then sends it into the room.
	Invite(ctx context.Context, roomID, sender, invitee string, content json.RawMessage) error
	// Leave leaves a room this server is not in (rejects a remote invite)
	// through make_leave/send_leave; servers may be empty when the user
	// was invited (the inviting server is known).
	Leave(ctx context.Context, roomID, userID string, servers []string) error
	// Knock knocks on a room this server is not in (make_knock,
	// send_knock) with content as the member event's content.
	Knock(ctx context.Context, roomID, userID string, servers []string, content json.RawMessage) error
	// Backfill fetches up to limit events older than the oldest this
	// server has of a room joined over federation; it returns how many
	// it stored (0 when there is nothing more to fetch).
	Backfill(ctx context.Context, roomID string, limit int) (int, error)
}

// SetAliasResolver installs the resolver of unknown local aliases.
func (a *API) SetAliasResolver(f AliasResolver) { a.aliasResolver = f }

// SetJoinGate installs a check run before local users join.
func (a *API) SetJoinGate(f JoinGate) { a.joinGate = f }

// SetRemote installs federation's access to remote rooms.
func (a *API) SetRemote(r Remote) { a.remote = r }

// ResolveLocalAlias resolves an alias of this server, asking the alias
// resolver when no room has it yet (as /query/directory needs, with requester
// ""). It returns storage.ErrNotFound or ErrNoSuchAlias when there is none.
func (a *API) ResolveLocalAlias(ctx context.Context, alias, requester string) (string, error) {
	roomID, err := a.db.ResolveAlias(ctx, alias)
	if err == nil || a.aliasResolver == nil || !errors.Is(err, storage.ErrNotFound) {
		return roomID, err
	}
	return a.aliasResolver(ctx, alias, requester)
}
