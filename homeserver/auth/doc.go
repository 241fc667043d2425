// Package auth owns the authorization rules of room versions 6 to 12: whether
// an event is allowed against a given room state (Allowed), the rules about an
// event's own auth_events (CheckAuthEvents), the auth events selection
// algorithm (AuthEventKeys), and the reading of m.room.power_levels with the
// spec's defaults, including the infinite power of v12 room creators
// (PowerLevels).
//
// The package is pure: it reads events and a state lookup, keeps no state of
// its own, and does no I/O. What needs keys or a database is left to the
// caller through narrow hooks:
//
//   - Signatures. Allowed assumes the event's signatures and hashes were
//     checked on receipt. The one signature the auth rules name explicitly —
//     a member event carrying join_authorised_via_users_server must be signed
//     by that user's server (rule 4.2, 5.2 in v12) — is checked by
//     CheckJoinAuthorisedSignature, with a verifier the caller supplies.
//     Third-party invite signatures, whose keys are in the room state, are
//     checked here.
//   - Rejection. An event is checked three times (against its auth events,
//     the state before it, and the current state). Which state, and whether a
//     failure means rejection or soft failure, is the caller's business; this
//     package only answers "allowed or not, and by which rule".
//
// Rule numbers in errors follow the spec text of the event's room version, so
// "5.3.3" in a v12 room is "4.3.3" in a v11 room.
package auth
