-- A job put off by pacing holds the send slots it was given (its due time),
-- counted then: 0 none, 1 its pair's (the sender's is asked for when due),
-- 2 its sender's and its pair's. It goes when due without being counted or
-- put off again, so a backlog costs one deferral per send.
ALTER TABLE delivery_jobs ADD COLUMN slotted INTEGER NOT NULL DEFAULT 0;
