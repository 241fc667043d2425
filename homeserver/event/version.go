package event

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// DefaultRoomVersion is the version of rooms Plaza creates, as the spec recommends.
const DefaultRoomVersion = "12"

// ErrUnsupportedRoomVersion is returned for room versions Plaza does not
// implement (1–5, and anything unknown). The client API maps it to
// M_UNSUPPORTED_ROOM_VERSION.
var ErrUnsupportedRoomVersion = errors.New("unsupported room version")

// StateResAlgorithm names a state resolution algorithm.
type StateResAlgorithm int

const (
	// StateResV2 is state resolution v2 (room versions 2–11).
	StateResV2 StateResAlgorithm = iota + 2
	// StateResV21 is state resolution v2.1 (room version 12): iterative auth
	// checks start from an empty map and the conflicted state subgraph joins
	// the full conflicted set.
	StateResV21
)

// RoomVersion describes the rules of one room version. Only the differences
// between versions 6 and 12 are flags; everything common to them is simply
// how the code behaves.
type RoomVersion struct {
	ID string
	// Knocking: the "knock" join rule and membership (v7+).
	Knocking bool
	// RestrictedJoins: the "restricted" join rule with
	// join_authorised_via_users_server (v8+).
	RestrictedJoins bool
	// KnockRestricted: the "knock_restricted" join rule (v10+).
	KnockRestricted bool
	// IntegerPowerLevels: power level values must be JSON integers; earlier
	// versions also accepted strings holding integers (v10+).
	IntegerPowerLevels bool
	// ImplicitCreator: the creator is the create event's sender; content has
	// no "creator" (v11+).
	ImplicitCreator bool
	// RedactsInContent: m.room.redaction carries "redacts" in content rather
	// than at the top level (v11+).
	RedactsInContent bool
	// Redaction algorithm generations: 6 (v6, v7), 8 (v8: join_rules "allow"),
	// 9 (v9, v10: member "join_authorised_via_users_server"), 11 (v11+).
	Redaction int
	// RoomIDFromCreate: the room ID is the create event's ID with "!" as its
	// sigil; the create event has no room_id and is never an auth event (v12).
	RoomIDFromCreate bool
	// PrivilegedCreators: the create sender and additional_creators have
	// infinite power and cannot appear in power levels (v12).
	PrivilegedCreators bool
	// StateRes is the state resolution algorithm.
	StateRes StateResAlgorithm
}

// Every implemented version is immutable after this table is built.
var roomVersions = func() map[string]*RoomVersion {
	v6 := RoomVersion{ID: "6", Redaction: 6, StateRes: StateResV2}
	v7 := v6
	v7.ID, v7.Knocking = "7", true
	v8 := v7
	v8.ID, v8.RestrictedJoins, v8.Redaction = "8", true, 8
	v9 := v8
	v9.ID, v9.Redaction = "9", 9
	v10 := v9
	v10.ID, v10.KnockRestricted, v10.IntegerPowerLevels = "10", true, true
	v11 := v10
	v11.ID, v11.ImplicitCreator, v11.RedactsInContent, v11.Redaction = "11", true, true, 11
	v12 := v11
	v12.ID, v12.RoomIDFromCreate, v12.PrivilegedCreators, v12.StateRes = "12", true, true, StateResV21
	m := map[string]*RoomVersion{}
	for _, v := range []RoomVersion{v6, v7, v8, v9, v10, v11, v12} {
		m[v.ID] = &v
	}
	return m
}()

// Version returns the rules for a room version, or an error wrapping
// ErrUnsupportedRoomVersion.
func Version(id string) (*RoomVersion, error) {
	if v, ok := roomVersions[id]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("%w: %q (Plaza supports %v)", ErrUnsupportedRoomVersion, id, SupportedVersions())
}

// MustVersion is Version for IDs known at compile time.
func MustVersion(id string) *RoomVersion {
	v, err := Version(id)
	if err != nil {
		panic(err)
	}
	return v
}

// SupportedVersions lists the implemented room versions in ascending order.
func SupportedVersions() []string {
	out := make([]string, 0, len(roomVersions))
	for id := range roomVersions {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return out
}
