package event

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
)

func encodeURLBase64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
func encodeBase64(b []byte) string    { return base64.RawStdEncoding.EncodeToString(b) }

// Top-level keys kept by redaction, per redaction generation.
var (
	keepTopV6 = []string{"auth_events", "content", "depth", "event_id", "hashes", "membership", "origin",
		"origin_server_ts", "prev_events", "prev_state", "room_id", "sender", "signatures", "state_key", "type"}
	keepTopV11 = []string{"auth_events", "content", "depth", "event_id", "hashes",
		"origin_server_ts", "prev_events", "room_id", "sender", "signatures", "state_key", "type"}
)

// keptContent returns the content keys redaction keeps for an event type under
// a redaction generation; all=true keeps the whole content.
func keptContent(gen int, typ string) (keys []string, all bool) {
	switch typ {
	case TypeMember:
		switch {
		case gen >= 11:
			return []string{"join_authorised_via_users_server", "membership", "third_party_invite"}, false
		case gen >= 9:
			return []string{"join_authorised_via_users_server", "membership"}, false
		default:
			return []string{"membership"}, false
		}
	case TypeCreate:
		if gen >= 11 {
			return nil, true
		}
		return []string{"creator"}, false
	case TypeJoinRules:
		if gen >= 8 {
			return []string{"allow", "join_rule"}, false
		}
		return []string{"join_rule"}, false
	case TypePowerLevels:
		if gen >= 11 {
			return []string{"ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"}, false
		}
		return []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}, false
	case TypeHistoryVisibility:
		return []string{"history_visibility"}, false
	case TypeRedaction:
		if gen >= 11 {
			return []string{"redacts"}, false
		}
	}
	return nil, false
}

// redactJSON applies the room version's redaction algorithm to a canonical
// event object and returns the canonical result.
func redactJSON(v *RoomVersion, obj []byte) ([]byte, error) {
	ms, err := members(obj)
	if err != nil {
		return nil, err
	}
	keepTop := keepTopV6
	if v.Redaction >= 11 {
		keepTop = keepTopV11
	}
	var typ string
	for _, m := range ms {
		if m.key == "type" {
			var ok bool
			if typ, ok = plainString(m.value); !ok {
				return nil, malformed("type is not a string")
			}
		}
	}
	keys, all := keptContent(v.Redaction, typ)
	out := make([]byte, 0, len(obj))
	out = append(out, '{')
	first := true
	for _, m := range ms {
		if !slices.Contains(keepTop, m.key) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		if m.key != "content" || all {
			out = append(out, m.raw...)
			continue
		}
		out = append(out, m.raw[:len(m.raw)-len(m.value)]...)
		content, err := redactContent(m.value, keys, v.Redaction >= 11 && typ == TypeMember)
		if err != nil {
			return nil, malformed("content: %v", err)
		}
		out = append(out, content...)
	}
	return append(out, '}'), nil
}

// redactContent keeps only keys of a content object; signedOnly3PI keeps just
// third_party_invite.signed (redaction generation 11 for m.room.member).
func redactContent(content []byte, keys []string, signedOnly3PI bool) ([]byte, error) {
	if len(keys) == 0 {
		if len(content) == 0 || content[0] != '{' {
			return nil, malformed("content is not an object")
		}
		return []byte("{}"), nil
	}
	ms, err := members(content)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(content))
	out = append(out, '{')
	first := true
	for _, m := range ms {
		if !slices.Contains(keys, m.key) {
			continue
		}
		raw := m.raw
		if signedOnly3PI && m.key == "third_party_invite" {
			if len(m.value) == 0 || m.value[0] != '{' {
				// Not an object: there is no "signed" key to keep.
				continue
			}
			inner, err := filterObject(m.value, func(k string) bool { return k == "signed" })
			if err != nil {
				return nil, err
			}
			raw = append(append([]byte{}, m.raw[:len(m.raw)-len(m.value)]...), inner...)
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, raw...)
	}
	return append(out, '}'), nil
}

// plainString decodes a canonical JSON string without escapes.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	s := v[1 : len(v)-1]
	if slices.Contains(s, '\\') {
		return "", false
	}
	return string(s), true
}

// contentHash computes the sha256 content hash of a canonical event object:
// everything but unsigned, signatures and hashes.
func contentHash(obj []byte) ([32]byte, error) {
	stripped, err := filterObject(obj, func(k string) bool { return k != "unsigned" && k != "signatures" && k != "hashes" })
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(stripped), nil
}

// signable returns the bytes covered by signatures: the redacted event without
// signatures and unsigned.
func signable(v *RoomVersion, obj []byte) ([]byte, error) {
	red, err := redactJSON(v, obj)
	if err != nil {
		return nil, err
	}
	return filterObject(red, func(k string) bool { return k != "signatures" && k != "unsigned" })
}

// referenceHash computes the reference hash that event IDs (v4+) are made of.
func referenceHash(v *RoomVersion, obj []byte) ([32]byte, error) {
	s, err := signable(v, obj)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(s), nil
}

// CheckContentHash reports whether the event's hashes.sha256 matches its
// content. A mismatch means the event must be treated as redacted (see the
// spec, "Validating hashes and signatures on received events").
func (e *Event) CheckContentHash() error {
	h, err := contentHash(e.json)
	if err != nil {
		return err
	}
	if got := encodeBase64(h[:]); got != e.contentHash {
		return fmt.Errorf("content hash mismatch: event says %s, content hashes to %s", e.contentHash, got)
	}
	return nil
}

// Redact returns the event as the room version's redaction algorithm leaves
// it. Its ID is unchanged: the reference hash only covers what redaction keeps.
func (e *Event) Redact() (*Event, error) {
	red, err := redactJSON(e.version, e.json)
	if err != nil {
		return nil, fmt.Errorf("redacting %s: %w", e.id, err)
	}
	return parseCanonical(e.version, red, nil)
}

// SignedBytes returns the canonical bytes that signatures on this event cover.
func (e *Event) SignedBytes() ([]byte, error) {
	return signable(e.version, e.json)
}
