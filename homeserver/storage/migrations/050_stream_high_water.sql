-- The stream tracker hands out positions in memory and records here, a block
-- at a time, how far it may have gone. Some positions are never written to
-- any table (typing, presence, failed writes), yet clients hold tokens at
-- them; after a restart the stream resumes above this mark, so no token is
-- ever ahead of the stream.
CREATE TABLE stream_high_water (
    id    BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    pos   BIGINT NOT NULL
);
