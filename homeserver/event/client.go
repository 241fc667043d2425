package event

import (
	"encoding/json"
)

// ClientEvent is the client-server API's format of a room event
// (ClientEventWithoutRoomID plus room_id).
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	// Redacts is copied to the top level for clients of every room version.
	Redacts  string         `json:"redacts,omitempty"`
	Unsigned map[string]any `json:"unsigned,omitempty"`
}

// Client returns the event in client format, without unsigned data; callers
// add what they know (age, transaction_id, prev_content, redacted_because).
func (e *Event) Client() ClientEvent {
	return ClientEvent{
		Content: json.RawMessage(e.content), EventID: e.id, OriginServerTS: e.originServerTS, RoomID: e.roomID,
		Sender: e.sender, StateKey: e.stateKey, Type: e.typ, Redacts: e.redacts,
	}
}

// ClientMap returns the event in client format decoded into generic JSON
// values, computed once per event: push rules read it for every user of a
// room. Callers must not modify it.
func (e *Event) ClientMap() map[string]any {
	e.mapOnce.Do(func() {
		raw, err := json.Marshal(e.Client())
		if err == nil {
			_ = json.Unmarshal(raw, &e.clientMap)
		}
		if e.clientMap == nil {
			e.clientMap = map[string]any{}
		}
	})
	return e.clientMap
}
