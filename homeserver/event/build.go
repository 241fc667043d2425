package event

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"

	"plaza/homeserver/canonicaljson"
	"plaza/homeserver/id"
	"plaza/homeserver/signing"
)

// Proto is an event before it is hashed and signed: what a local client asked
// for, plus the DAG position chosen by the room's writer.
type Proto struct {
	Type     string
	StateKey *string
	Sender   string
	// RoomID is ignored for the create event of a version 12 room, whose room
	// ID is derived from the event itself.
	RoomID string
	// Content is any JSON object; it is canonicalised (and so validated) here.
	Content json.RawMessage
	// Redacts is the target of an m.room.redaction; Build puts it where the
	// room version wants it (top level before v11, content from v11).
	Redacts        string
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64
}

// Build hashes and signs the proto event as serverName with key, and returns
// the finished event. It fails with ErrMalformed, ErrNotJSON or ErrTooLarge.
func (p *Proto) Build(v *RoomVersion, serverName string, key signing.Key) (*Event, error) {
	if p.Type == "" || len(p.Type) > MaxTypeSize {
		return nil, malformed("type must be 1 to %d bytes", MaxTypeSize)
	}
	if p.StateKey != nil && len(*p.StateKey) > MaxStateKeySize {
		return nil, malformed("state_key longer than %d bytes", MaxStateKeySize)
	}
	if _, err := id.ParseUserID(p.Sender); err != nil {
		return nil, malformed("sender: %v", err)
	}
	if p.Depth < 0 {
		return nil, malformed("negative depth")
	}
	raw := p.Content
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	content, err := canonicaljson.Canonicalize(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: content: %w", ErrNotJSON, err)
	}
	if content[0] != '{' {
		return nil, malformed("content must be an object")
	}
	redacts := ""
	if p.Type == TypeRedaction && p.Redacts != "" {
		if v.RedactsInContent {
			rb, err := canonicaljson.AppendString(nil, p.Redacts)
			if err != nil {
				return nil, malformed("redacts: %v", err)
			}
			if content, err = canonicaljson.Set(content, "redacts", rb); err != nil {
				return nil, err
			}
		} else {
			redacts = p.Redacts
		}
	}
	isV12Create := v.RoomIDFromCreate && p.Type == TypeCreate && p.StateKey != nil && *p.StateKey == ""
	if !isV12Create && !id.ValidRoomID(p.RoomID) {
		return nil, malformed("invalid room_id %q", p.RoomID)
	}

	// Assemble the canonical object by hand, keys in sorted order, in three
	// runs around where "hashes" and "signatures" go: without those two the
	// runs joined are exactly what the content hash covers, so nothing has
	// to be parsed again.
	var head, mid, tail []byte
	head = append(head, `{"auth_events":`...)
	if head, err = appendStrings(head, p.AuthEvents); err != nil {
		return nil, err
	}
	head = append(head, `,"content":`...)
	head = append(head, content...)
	head = append(head, `,"depth":`...)
	head = strconv.AppendInt(head, p.Depth, 10)
	mid = append(mid, `,"origin_server_ts":`...)
	mid = strconv.AppendInt(mid, p.OriginServerTS, 10)
	mid = append(mid, `,"prev_events":`...)
	if mid, err = appendStrings(mid, p.PrevEvents); err != nil {
		return nil, err
	}
	if redacts != "" {
		mid = append(mid, `,"redacts":`...)
		if mid, err = appendString(mid, redacts); err != nil {
			return nil, err
		}
	}
	if !isV12Create {
		mid = append(mid, `,"room_id":`...)
		if mid, err = appendString(mid, p.RoomID); err != nil {
			return nil, err
		}
	}
	mid = append(mid, `,"sender":`...)
	if mid, err = appendString(mid, p.Sender); err != nil {
		return nil, err
	}
	if p.StateKey != nil {
		tail = append(tail, `,"state_key":`...)
		if tail, err = appendString(tail, *p.StateKey); err != nil {
			return nil, err
		}
	}
	tail = append(tail, `,"type":`...)
	if tail, err = appendString(tail, p.Type); err != nil {
		return nil, err
	}
	tail = append(tail, '}')

	h := sha256.New()
	h.Write(head)
	h.Write(mid)
	h.Write(tail)
	hash := encodeBase64(h.Sum(nil))
	withHash := make([]byte, 0, len(head)+len(mid)+len(tail)+200)
	withHash = append(withHash, head...)
	withHash = append(withHash, `,"hashes":{"sha256":"`...)
	withHash = append(withHash, hash...)
	withHash = append(withHash, `"}`...)
	withHash = append(withHash, mid...)
	withHash = append(withHash, tail...)
	toSign, err := signable(v, withHash)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(withHash)+len(serverName)+len(key.ID)+120)
	b = append(b, withHash[:len(withHash)-len(tail)]...)
	b = append(b, `,"signatures":{`...)
	if b, err = appendString(b, serverName); err != nil {
		return nil, err
	}
	b = append(b, `:{`...)
	if b, err = appendString(b, key.ID); err != nil {
		return nil, err
	}
	b = append(b, ':', '"')
	b = append(b, signing.SignBytes(toSign, key)...)
	b = append(b, `"}}`...)
	b = append(b, tail...)
	if len(b) > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes of canonical JSON (limit %d)", ErrTooLarge, len(b), MaxPDUSize)
	}
	ref := sha256.Sum256(toSign)
	e := &Event{
		version:        v,
		json:           b,
		id:             "$" + encodeURLBase64(ref[:]),
		roomID:         p.RoomID,
		sender:         p.Sender,
		typ:            p.Type,
		stateKey:       p.StateKey,
		prevEvents:     p.PrevEvents,
		authEvents:     p.AuthEvents,
		depth:          p.Depth,
		originServerTS: p.OriginServerTS,
		redacts:        p.Redacts,
		contentHash:    hash,
	}
	if e.prevEvents == nil {
		e.prevEvents = []string{}
	}
	if e.authEvents == nil {
		e.authEvents = []string{}
	}
	if isV12Create {
		e.roomID = "!" + e.id[1:]
	}
	if p.Type != TypeRedaction {
		e.redacts = ""
	}
	ms, _ := members(b)
	for _, m := range ms {
		if m.key == "content" {
			e.content = m.value
		}
	}
	return e, nil
}

func appendString(b []byte, s string) ([]byte, error) {
	out, err := canonicaljson.AppendString(b, s)
	if err != nil {
		return nil, malformed("%v", err)
	}
	return out, nil
}

func appendStrings(b []byte, list []string) ([]byte, error) {
	b = append(b, '[')
	for i, s := range list {
		if !id.ValidEventID(s) {
			return nil, malformed("invalid event ID %q", s)
		}
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendString(b, s); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}
