-- Each write of an action raises its version; a PATCH, which merges into the
-- action it read, writes only over that version, so two PATCHes racing never
-- drop each other's fields.
ALTER TABLE actions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
