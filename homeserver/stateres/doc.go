// Package stateres owns room state resolution: given the states after the tips
// of several forks of one room's DAG, it computes the single state that an
// event citing all of those tips starts from. It implements state resolution
// v2 (room versions 6–11) and v2.1 (room version 12) as the room version
// pages of the Matrix specification define them ("State resolution").
//
// The package is pure computation: events come from the caller's EventSource
// and authorisation is delegated to package auth. A Resolve call keeps what
// it learns (auth edges, sender power levels, mainline positions) for its own
// duration only, so callers may resolve concurrently.
//
// # Reading of the spec
//
// Where the spec's prose leaves room, Resolve decides as follows, in line with
// the reference implementation (Synapse) unless said otherwise:
//
//   - Full auth chains of a state include the state's own events. By the
//     letter, the auth chain of an event excludes the event itself; the
//     only events this changes are unconflicted state events cited by the
//     conflicted events of some states but not others, which are then kept
//     out of the auth difference (they are in every state, and step 5 puts
//     them back regardless).
//   - Power events: m.room.power_levels and m.room.join_rules count only
//     with state_key "" (other keys mean nothing to the auth rules), and so
//     does m.room.create, which can only be conflicted in a forged room.
//   - Step 1 takes "the auth chain of P" literally: every event of the full
//     conflicted set anywhere below a power event joins X, and the DAG that
//     Kahn's algorithm sorts has an edge wherever one event of X is an auth
//     ancestor of another, even through events outside X. (Synapse only walks
//     through full conflicted set events; under v2.1 the conflicted state
//     subgraph makes the two readings agree.)
//   - The sender's power level for the ordering comes from the event's own
//     auth events: its power levels event, or without one 100 for the
//     creator before v12; in v12 creators have infinite power (auth.Infinite)
//     whatever the power levels say. Unreadable power levels give 0.
//   - Iterative auth checks authorise an event against its own auth events,
//     except that for each key auth.AuthEventKeys selects for it, the
//     partial state's event is used when the partial state has one. In v12
//     the room's create event is always supplied (no event cites it).
//     Events whose content the selection cannot read are rejected.
//   - Rejected events: when the EventSource also implements RejectionSource,
//     events it reports rejected are used neither as auth events nor from
//     the partial state; events rejected by the checks of this very
//     resolution are simply left out of the partial state.
//   - Mainline: with no power levels in the partial state (possible in v2.1,
//     whose checks start empty) the mainline is empty and every event's
//     position is "infinite", so timestamps and IDs decide.
//   - An event citing several auth events for one key (which the auth rules
//     reject on receipt, so only a forged DAG has one) is read by the first.
//   - Step 5 sets every unconflicted key, present in the partial state or not
//     ("replacing" alone would drop every key v2.1's empty start never
//     touched).
//   - Missing events, and auth events from another room, are errors rather
//     than silently skipped. State entries of conflicted keys are checked
//     against their event's type and state key; unconflicted ones are
//     trusted, as loading them all would cost more than the resolution.
//
// # Cost
//
// A resolution touches the conflicted events and their auth chains. The
// unconflicted state (thousands of members in a large room) costs one map
// comparison per entry, a map copy for the result, and, only when the auth
// difference has an event that an unconflicted event might cite, one read of
// each unconflicted event's auth_events.
package stateres
