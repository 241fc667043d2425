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

	// Assemble the canonical object by hand, keys in sorted order, in runs
	// around where "hashes" and "signatures" go and around the two members
	// redaction changes (content, and the top-level "redacts" of old room
	// versions, which no redaction algorithm keeps). Joined without hashes
	// and signatures the runs are what the content hash covers; joined with
	// the redacted content and without "redacts" they are what the
	// signature covers. Nothing is parsed again.
	var prefix, suffix, midA, midR, midB, tail []byte
	prefix = append(prefix, `{"auth_events":`...)
	if prefix, err = appendStrings(prefix, p.AuthEvents); err != nil {
		return nil, err
	}
	prefix = append(prefix, `,"content":`...)
	suffix = append(suffix, `,"depth":`...)
	suffix = strconv.AppendInt(suffix, p.Depth, 10)
	midA = append(midA, `,"origin_server_ts":`...)
	midA = strconv.AppendInt(midA, p.OriginServerTS, 10)
	midA = append(midA, `,"prev_events":`...)
	if midA, err = appendStrings(midA, p.PrevEvents); err != nil {
		return nil, err
	}
	if redacts != "" {
		midR = append(midR, `,"redacts":`...)
		if midR, err = appendString(midR, redacts); err != nil {
			return nil, err
		}
	}
	if !isV12Create {
		midB = append(midB, `,"room_id":`...)
		if midB, err = appendString(midB, p.RoomID); err != nil {
			return nil, err
		}
	}
	midB = append(midB, `,"sender":`...)
	if midB, err = appendString(midB, p.Sender); err != nil {
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
	for _, run := range [][]byte{prefix, content, suffix, midA, midR, midB, tail} {
		h.Write(run)
	}
	var sum [sha256.Size]byte
	hashes := make([]byte, 0, 64)
	hashes = append(hashes, `,"hashes":{"sha256":"`...)
	hash := encodeBase64(h.Sum(sum[:0]))
	hashes = append(hashes, hash...)
	hashes = append(hashes, `"}`...)

	keys, all := keptContent(v.Redaction, p.Type)
	redContent := content
	if !all {
		if redContent, err = redactContent(content, keys, v.Redaction >= 11 && p.Type == TypeMember); err != nil {
			return nil, malformed("content: %v", err)
		}
	}
	toSign := make([]byte, 0, len(prefix)+len(redContent)+len(suffix)+len(hashes)+len(midA)+len(midB)+len(tail))
	for _, run := range [][]byte{prefix, redContent, suffix, hashes, midA, midB, tail} {
		toSign = append(toSign, run...)
	}
	withHash := make([]byte, 0, len(toSign)+len(content)+len(midR)+len(serverName)+len(key.ID)+120)
	for _, run := range [][]byte{prefix, content, suffix, hashes, midA, midR, midB} {
		withHash = append(withHash, run...)
	}
	withHash = append(withHash, tail...)
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
