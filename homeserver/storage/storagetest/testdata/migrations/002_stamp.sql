-- A value drawn when the migration runs: databases cloned from one template
-- share it, databases migrated separately would not.
CREATE TABLE stamp (value text NOT NULL);
INSERT INTO stamp VALUES (gen_random_uuid()::text);
