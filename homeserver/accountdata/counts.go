package accountdata

import (
	"context"
	"encoding/json"

	"plaza/homeserver/auth"
	pdu "plaza/homeserver/event"
	"plaza/homeserver/storage"
)

// CountNotifications runs the user's push rules over events of one room and
// counts those that notify and those that highlight: the unread counts of
// /sync. state looks up the room's current state (display name, member
// count and power levels the rules read).
func (s *Service) CountNotifications(ctx context.Context, userID string, rules Ruleset, state auth.StateLookup, joined int, evs []*storage.StoredEvent) (notify, highlight int) {
	view := EventView{UserID: userID, MemberCount: joined}
	if me := state(pdu.TypeMember, userID); me != nil {
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(me.Content(), &c)
		view.DisplayName = c.DisplayName
	}
	pl, plErr := auth.PowerLevelsFor(state)
	if plErr == nil {
		view.NotificationPowerLevels = pl.Notifications
	}
	for _, e := range evs {
		if e.RedactedBy != "" {
			continue
		}
		view.Event = e.Event.ClientMap()
		view.SenderPowerLevel = 0
		if plErr == nil {
			view.SenderPowerLevel = pl.UserLevel(e.Event.Sender())
		}
		n, h, _ := Evaluate(rules, view)
		if n {
			notify++
			if h {
				highlight++
			}
		}
	}
	return notify, highlight
}
