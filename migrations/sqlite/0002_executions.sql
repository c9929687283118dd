-- Executions of actions during calls, the delivery job that sends each one
-- (written in the same transaction), and the Meta webhook events applied.

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    action_id       TEXT NOT NULL,
    call_id         TEXT,
    idempotency_key TEXT,
    recipient       TEXT NOT NULL,
    sender          TEXT NOT NULL,
    template_name   TEXT NOT NULL,
    language        TEXT NOT NULL,
    mandatory       INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    wamid           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Set while a send is in flight: found set on a claim, the process died
    -- mid-send and Meta may have the message.
    attempt_open    INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    reply           TEXT,
    timeline        TEXT NOT NULL,
    reply_timeout   INTEGER NOT NULL,
    reply_deadline  TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX executions_by_call ON executions (tenant, action_id, call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX executions_by_key ON executions (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX executions_by_wamid ON executions (wamid) WHERE wamid IS NOT NULL;
CREATE INDEX executions_by_tenant ON executions (tenant, created_at DESC, id DESC);
-- Only executions still open: the expiry sweep never walks the history.
CREATE INDEX executions_awaiting_reply ON executions (reply_deadline)
    WHERE reply_deadline IS NOT NULL AND status NOT IN ('replied', 'failed', 'expired', 'cancelled');

-- One row per execution still to send. `due_at` and `lease_until` are Unix
-- milliseconds; a claim sets the lease, so a crashed worker's claim expires.
CREATE TABLE delivery_jobs (
    execution_id TEXT PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    tenant       TEXT NOT NULL,
    sender       TEXT NOT NULL,
    due_at       INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    held         INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX delivery_jobs_due ON delivery_jobs (due_at);

-- Meta re-sends events: each (wamid, status) or inbound message id is applied once.
CREATE TABLE webhook_events (
    key         TEXT PRIMARY KEY,
    received_at TEXT NOT NULL
) STRICT;
