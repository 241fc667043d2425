-- State events of a room by type, in stream order: history visibility
-- changes (visibility checks of a room's readers), and whatever else walks a
-- room's state history. Without it such a query scans every event of the
-- room (1.1 s in a room of a million messages). Only state events are in it,
-- so messages cost it nothing.
CREATE INDEX events_room_state_type ON events (room_nid, type, stream_pos) WHERE state_key IS NOT NULL;
