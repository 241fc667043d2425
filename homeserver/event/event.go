// Package event owns room events (PDUs) for room versions 6 to 12: their wire
// format and limits, parsing, content and reference hashes, event IDs, room
// IDs derived from create events (v12), redaction, and hashing+signing of new
// events.
//
// An *Event is immutable. It keeps the canonical JSON of the PDU (without
// event_id and unsigned, which are not part of the signed format) next to the
// parsed fields that the rest of the homeserver reads.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/id"
)

// Size limits from the server-server spec ("Size limits").
const (
	MaxPDUSize      = 65536 // whole PDU as canonical JSON, signatures included
	MaxTypeSize     = 255
	MaxStateKeySize = 255
)

// Errors returned by Parse. ErrTooLarge maps to M_TOO_LARGE, the others to
// M_BAD_JSON (or M_NOT_JSON for ErrNotJSON) in the client API.
var (
	ErrNotJSON   = errors.New("event is not valid canonical JSON")
	ErrMalformed = errors.New("malformed event")
	ErrTooLarge  = errors.New("event too large")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// TypeKey identifies a piece of room state.
type TypeKey struct {
	Type     string
	StateKey string
}

// Well-known event types that the protocol core reads.
const (
	TypeCreate            = "m.room.create"
	TypeMember            = "m.room.member"
	TypePowerLevels       = "m.room.power_levels"
	TypeJoinRules         = "m.room.join_rules"
	TypeThirdPartyInvite  = "m.room.third_party_invite"
	TypeRedaction         = "m.room.redaction"
	TypeHistoryVisibility = "m.room.history_visibility"
)

// Event is a parsed, immutable PDU.
type Event struct {
	version        *RoomVersion
	json           []byte // canonical PDU without event_id and unsigned
	unsigned       []byte // canonical unsigned object as received, or nil
	id             string
	roomID         string
	sender         string
	typ            string
	stateKey       *string
	content        []byte
	prevEvents     []string
	authEvents     []string
	depth          int64
	originServerTS int64
	redacts        string
	contentHash    string

	mapOnce   sync.Once
	clientMap map[string]any
}

// ID returns the event ID ("$" + URL-safe base64 of the reference hash).
func (e *Event) ID() string { return e.id }

// Version returns the room version the event was parsed under.
func (e *Event) Version() *RoomVersion { return e.version }

// RoomID returns the room ID; for a v12 create event, the one it defines.
func (e *Event) RoomID() string { return e.roomID }

// Sender returns the sender's user ID.
func (e *Event) Sender() string { return e.sender }

// Type returns the event type.
func (e *Event) Type() string { return e.typ }

// StateKey returns the state key, or nil for a message event.
func (e *Event) StateKey() *string { return e.stateKey }

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.stateKey != nil }

// StateKeyEquals reports whether the event is a state event with this key.
func (e *Event) StateKeyEquals(k string) bool { return e.stateKey != nil && *e.stateKey == k }

// TypeKey returns the state tuple; ok is false for message events.
func (e *Event) TypeKey() (tk TypeKey, ok bool) {
	if e.stateKey == nil {
		return TypeKey{}, false
	}
	return TypeKey{e.typ, *e.stateKey}, true
}

// Content returns the canonical JSON of the content object. Do not modify it.
func (e *Event) Content() []byte { return e.content }

// PrevEventIDs returns the IDs of the events this one follows. Do not modify.
func (e *Event) PrevEventIDs() []string { return e.prevEvents }

// AuthEventIDs returns the IDs of the events that authorise this one. Do not modify.
func (e *Event) AuthEventIDs() []string { return e.authEvents }

// Depth returns the event's depth.
func (e *Event) Depth() int64 { return e.depth }

// OriginServerTS returns the sender's server timestamp in milliseconds.
func (e *Event) OriginServerTS() int64 { return e.originServerTS }

// Redacts returns the ID of the event a redaction targets ("" otherwise),
// wherever the room version puts it.
func (e *Event) Redacts() string { return e.redacts }

// JSON returns the canonical PDU without event_id and unsigned: the bytes that
// are stored and sent over federation. Do not modify.
func (e *Event) JSON() []byte { return e.json }

// Unsigned returns the unsigned object the event arrived with (nil if none).
func (e *Event) Unsigned() []byte { return e.unsigned }

// wire is the PDU shape shared by versions 6–12. Fields the spec leaves
// version-specific are validated after decoding.
type wire struct {
	AuthEvents []string        `json:"auth_events"`
	Content    json.RawMessage `json:"content"`
	Depth      *int64          `json:"depth"`
	Hashes     *struct {
		SHA256 string `json:"sha256"`
	} `json:"hashes"`
	OriginServerTS *int64                       `json:"origin_server_ts"`
	PrevEvents     []string                     `json:"prev_events"`
	Redacts        *string                      `json:"redacts"`
	RoomID         *string                      `json:"room_id"`
	Sender         string                       `json:"sender"`
	Signatures     map[string]map[string]string `json:"signatures"`
	StateKey       *string                      `json:"state_key"`
	Type           string                       `json:"type"`
}

// Parse validates a PDU received under room version v and computes its ID.
// It accepts any JSON whitespace and key order, and rejects what the room
// version's canonical JSON rules reject. An "event_id" key, which is not part
// of the v3+ format, is ignored; "unsigned" is kept apart.
func Parse(v *RoomVersion, data []byte) (*Event, error) {
	if len(data) > 4*MaxPDUSize {
		// Cheap early bound before parsing; the exact check follows below.
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	canon, err := canonicaljson.Canonicalize(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	if len(canon) > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes of canonical JSON (limit %d)", ErrTooLarge, len(canon), MaxPDUSize)
	}
	ms, err := members(canon)
	if err != nil {
		return nil, malformed("top level is not an object")
	}
	var unsigned []byte
	for _, m := range ms {
		if m.key == "unsigned" {
			unsigned = m.value
		}
	}
	pdu := joinMembers(ms, func(k string) bool { return k != "event_id" && k != "unsigned" })
	return parseCanonical(v, pdu, unsigned)
}

// Trusted rebuilds an event from canonical PDU bytes that Plaza validated and
// stored itself, with the event ID computed then: it skips canonicalisation
// and hashing, which dominate Parse, so loading a large room state is cheap.
func Trusted(v *RoomVersion, pdu []byte, eventID string) (*Event, error) {
	return fromCanonical(v, pdu, nil, eventID)
}

// parseCanonical fills an Event from canonical PDU bytes (no event_id, no
// unsigned) and computes its ID.
func parseCanonical(v *RoomVersion, pdu, unsigned []byte) (*Event, error) {
	return fromCanonical(v, pdu, unsigned, "")
}

func fromCanonical(v *RoomVersion, pdu, unsigned []byte, eventID string) (*Event, error) {
	if err := checkKeyCase(pdu); err != nil {
		return nil, err
	}
	var w wire
	if err := json.Unmarshal(pdu, &w); err != nil {
		return nil, malformed("%v", err)
	}
	e := &Event{
		version:    v,
		json:       pdu,
		unsigned:   unsigned,
		sender:     w.Sender,
		typ:        w.Type,
		stateKey:   w.StateKey,
		prevEvents: w.PrevEvents,
		authEvents: w.AuthEvents,
	}
	if err := e.validate(&w); err != nil {
		return nil, err
	}
	// The content member of canonical JSON is itself canonical; take the span
	// rather than the RawMessage copy so it shares memory with e.json.
	ms, _ := members(pdu)
	for _, m := range ms {
		if m.key == "content" {
			e.content = m.value
		}
	}
	e.id = eventID
	if e.id == "" {
		ref, err := referenceHash(v, pdu)
		if err != nil {
			return nil, err
		}
		e.id = "$" + encodeURLBase64(ref[:])
	}
	if v.RoomIDFromCreate && e.typ == TypeCreate && e.stateKey != nil && *e.stateKey == "" {
		e.roomID = "!" + e.id[1:]
	}
	return e, nil
}

func (e *Event) validate(w *wire) error {
	v := e.version
	if w.Type == "" {
		return malformed("missing type")
	}
	if len(w.Type) > MaxTypeSize {
		return malformed("type longer than %d bytes", MaxTypeSize)
	}
	if w.StateKey != nil && len(*w.StateKey) > MaxStateKeySize {
		return malformed("state_key longer than %d bytes", MaxStateKeySize)
	}
	if _, err := id.ParseUserID(w.Sender); err != nil {
		return malformed("sender: %v", err)
	}
	if w.Content == nil || w.Content[0] != '{' {
		return malformed("content must be an object")
	}
	if w.Depth == nil || *w.Depth < 0 {
		return malformed("depth must be a non-negative integer")
	}
	e.depth = *w.Depth
	if w.OriginServerTS == nil {
		return malformed("missing origin_server_ts")
	}
	e.originServerTS = *w.OriginServerTS
	if w.Hashes == nil || w.Hashes.SHA256 == "" {
		return malformed("missing hashes.sha256")
	}
	e.contentHash = w.Hashes.SHA256
	if w.Signatures == nil {
		return malformed("missing signatures")
	}
	if w.PrevEvents == nil || w.AuthEvents == nil {
		return malformed("prev_events and auth_events must be arrays")
	}
	for _, list := range [][]string{w.PrevEvents, w.AuthEvents} {
		for _, ref := range list {
			if !id.ValidEventID(ref) {
				return malformed("invalid event ID %q in prev_events/auth_events", ref)
			}
		}
	}
	isCreate := w.Type == TypeCreate && w.StateKey != nil && *w.StateKey == ""
	switch {
	case isCreate && v.RoomIDFromCreate:
		if w.RoomID != nil {
			return malformed("a version %s create event has no room_id", v.ID)
		}
	case w.RoomID == nil:
		return malformed("missing room_id")
	case !id.ValidRoomID(*w.RoomID):
		return malformed("invalid room_id %q", *w.RoomID)
	default:
		e.roomID = *w.RoomID
	}
	if w.Type == TypeRedaction {
		if v.RedactsInContent {
			e.redacts, _ = stringMember(w.Content, "redacts")
		} else if w.Redacts != nil {
			e.redacts = *w.Redacts
		}
	}
	if !utf8.ValidString(w.Type) {
		return malformed("type is not UTF-8")
	}
	return nil
}

// ContentHash returns the hashes.sha256 value the event carries.
func (e *Event) ContentHash() string { return e.contentHash }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// Signatures returns the signatures object, keyed by server then key ID.
func (e *Event) Signatures() (map[string]map[string]string, error) {
	var w struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(e.json, &w); err != nil {
		return nil, err
	}
	return w.Signatures, nil
}

// CreatorIDs returns the room creators named by a create event: its sender
// (or content.creator before v11) and, in v12, additional_creators.
// Malformed entries are left out (the auth rules reject such create events).
func (e *Event) CreatorIDs() []string {
	if !e.version.ImplicitCreator {
		if c, ok := stringMember(e.content, "creator"); ok && c != "" {
			return []string{c}
		}
		return nil
	}
	out := []string{e.sender}
	if !e.version.PrivilegedCreators {
		return out
	}
	raw, ok, err := canonicaljson.Get(e.content, "additional_creators")
	if err != nil || !ok {
		return out
	}
	var list []any
	if json.Unmarshal(raw, &list) != nil {
		return out
	}
	for _, x := range list {
		if s, ok := x.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// pduFields are the top-level keys the wire struct decodes.
var pduFields = []string{"auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events",
	"redacts", "room_id", "sender", "signatures", "state_key", "type"}

// checkKeyCase rejects a PDU that spells one of the format's keys with other
// capitals and lacks the real one: encoding/json matches keys without
// regard to case, so {"Sender": ...} would otherwise pass for a sender that
// redaction (and so the event ID and signatures) does not cover.
func checkKeyCase(pdu []byte) error {
	var bad string
	present := map[string]bool{}
	_ = canonicaljson.EachMember(pdu, func(rawKey, _ []byte) bool {
		present[string(rawKey)] = true
		return true
	})
	for k := range present {
		for _, f := range pduFields {
			if k != f && strings.EqualFold(k, f) && !present[f] {
				bad = k
			}
		}
	}
	if bad != "" {
		return malformed("unknown key %q (keys are lowercase)", bad)
	}
	return nil
}
