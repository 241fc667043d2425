-- The state event a state event replaced, for unsigned.prev_content and
-- replaces_state in the client format (clients tell "changed their name"
-- from "joined" by it).
ALTER TABLE events ADD COLUMN replaces_state TEXT;
