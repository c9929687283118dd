-- A job put off by pacing holds the send slot it was given (its due time):
-- the sender's and pair's counts took it then, so it goes when due without
-- being counted or put off again, and a backlog costs one deferral per send.
ALTER TABLE delivery_jobs ADD COLUMN slotted INTEGER NOT NULL DEFAULT 0;
