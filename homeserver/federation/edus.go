package federation

import (
	"context"
	"encoding/json"
	"log/slog"
)

// receiveEDUs handles the EDUs of an inbound transaction from origin. EDUs
// carry no guarantee of delivery, so a bad one is dropped, never failing the
// transaction it came in.
func (s *Service) receiveEDUs(ctx context.Context, origin string, edus []json.RawMessage) {
	if len(edus) == 0 {
		return
	}
	slog.DebugContext(ctx, "federation: EDUs received", "origin", origin, "count", len(edus))
}
