-- Every state change becomes one conditional statement, as PostgreSQL's
-- replicas need: the timeline becomes rows (one per status reached, also the
-- record of each change); an execution's idempotency key gets its own row, so
-- a key past its 24 h can start anew; a job carries a fencing token that each
-- claim renews; pacing state moves from memory into the database.

CREATE TABLE execution_events (
    id           INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    at           TEXT NOT NULL
) STRICT;
CREATE INDEX execution_events_by_execution ON execution_events (execution_id, id);
INSERT INTO execution_events (execution_id, status, at)
    SELECT e.id, json_extract(t.value, '$.status'), json_extract(t.value, '$.at')
    FROM executions e, json_each(e.timeline) t ORDER BY e.id, t.key;
ALTER TABLE executions DROP COLUMN timeline;

CREATE TABLE execution_keys (
    tenant       TEXT NOT NULL,
    key          TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) STRICT;
INSERT INTO execution_keys (tenant, key, execution_id, created_at)
    SELECT tenant, idempotency_key, id, created_at FROM executions WHERE idempotency_key IS NOT NULL;
DROP INDEX executions_by_key;
ALTER TABLE executions DROP COLUMN idempotency_key;

-- lease_token: raised by every claim; each later write of the attempt must
-- present it. taken_over: the claim found a lease its holder never released.
ALTER TABLE delivery_jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE delivery_jobs ADD COLUMN taken_over INTEGER NOT NULL DEFAULT 0;

-- GCRA state per sender and per (sender, recipient) pair: `tat` is the
-- theoretical arrival time in Unix microseconds; refusals and backoff_until
-- follow Meta's pair rate limit errors (131056).
CREATE TABLE pacing (
    key           TEXT PRIMARY KEY,
    tat           INTEGER NOT NULL DEFAULT 0,
    refusals      INTEGER NOT NULL DEFAULT 0,
    backoff_until INTEGER NOT NULL DEFAULT 0
) STRICT;

-- What the conditional statements look rows up by.
CREATE INDEX delivery_jobs_by_sender ON delivery_jobs (tenant, sender);
CREATE INDEX executions_by_action ON executions (action_id);
CREATE INDEX templates_by_sender ON templates (phone_number_id);
