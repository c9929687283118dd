-- The whole schema for PostgreSQL, in the shape SQLite reached with its
-- migrations 1-3, so one set of statements serves both. Ids and timestamps
-- are text, as on SQLite (RFC 3339 with a fixed fraction: text order is time
-- order), under the "C" collation so that they sort bytewise whatever the
-- database's locale. Every table is keyed or indexed by tenant first.

CREATE TABLE actions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant        TEXT COLLATE "C" NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    type          TEXT NOT NULL,
    is_active     BOOLEAN NOT NULL,
    action_timing TEXT NOT NULL,
    phone_number  TEXT,
    webhook       TEXT NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    updated_at    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX actions_by_tenant ON actions (tenant, created_at DESC, id DESC);

CREATE TABLE idempotency_keys (
    tenant       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE senders (
    phone_number_id      TEXT COLLATE "C" PRIMARY KEY,
    tenant               TEXT COLLATE "C" NOT NULL,
    waba_id              TEXT COLLATE "C" NOT NULL,
    sealed_access_token  BYTEA NOT NULL,
    display_phone_number TEXT,
    verified_name        TEXT,
    quality_rating       TEXT,
    healthy              BOOLEAN NOT NULL,
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL,
    synced_at            TEXT COLLATE "C" NOT NULL
);
CREATE INDEX senders_by_tenant ON senders (tenant, phone_number_id);

CREATE TABLE templates (
    tenant           TEXT COLLATE "C" NOT NULL,
    phone_number_id  TEXT COLLATE "C" NOT NULL REFERENCES senders (phone_number_id) ON DELETE CASCADE,
    name             TEXT COLLATE "C" NOT NULL,
    language         TEXT COLLATE "C" NOT NULL,
    id               TEXT NOT NULL,
    status           TEXT NOT NULL,
    category         TEXT NOT NULL,
    parameter_format TEXT NOT NULL,
    components       TEXT NOT NULL,
    PRIMARY KEY (tenant, phone_number_id, name, language)
);
CREATE INDEX templates_by_sender ON templates (phone_number_id);

CREATE TABLE executions (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant         TEXT COLLATE "C" NOT NULL,
    action_id      TEXT COLLATE "C" NOT NULL,
    call_id        TEXT COLLATE "C",
    recipient      TEXT COLLATE "C" NOT NULL,
    sender         TEXT COLLATE "C" NOT NULL,
    template_name  TEXT COLLATE "C" NOT NULL,
    language       TEXT COLLATE "C" NOT NULL,
    mandatory      BOOLEAN NOT NULL,
    payload        TEXT NOT NULL,
    status         TEXT COLLATE "C" NOT NULL,
    wamid          TEXT COLLATE "C",
    attempts       BIGINT NOT NULL DEFAULT 0,
    -- Set while a send is in flight: found set on a claim, the process died
    -- mid-send and Meta may have the message.
    attempt_open   BOOLEAN NOT NULL DEFAULT FALSE,
    error          TEXT,
    reply          TEXT,
    reply_timeout  BIGINT NOT NULL,
    reply_deadline TEXT COLLATE "C",
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX executions_by_call ON executions (tenant, action_id, call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX executions_by_wamid ON executions (wamid) WHERE wamid IS NOT NULL;
CREATE INDEX executions_by_tenant ON executions (tenant, created_at DESC, id DESC);
CREATE INDEX executions_by_action ON executions (action_id);
-- Only executions still open: the expiry sweep never walks the history.
CREATE INDEX executions_awaiting_reply ON executions (reply_deadline)
    WHERE reply_deadline IS NOT NULL AND status NOT IN ('replied', 'failed', 'expired', 'cancelled');

-- One row per status an execution reached: its timeline.
CREATE TABLE execution_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    at           TEXT COLLATE "C" NOT NULL
);
CREATE INDEX execution_events_by_execution ON execution_events (execution_id, id);

-- An execute's Idempotency-Key, for 24 h.
CREATE TABLE execution_keys (
    tenant       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- One row per execution still to send. `due_at` and `lease_until` are Unix
-- milliseconds; a claim sets the lease and raises `lease_token`, which every
-- later write of that attempt presents.
CREATE TABLE delivery_jobs (
    execution_id TEXT COLLATE "C" PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    tenant       TEXT COLLATE "C" NOT NULL,
    sender       TEXT COLLATE "C" NOT NULL,
    due_at       BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    held         BOOLEAN NOT NULL DEFAULT FALSE,
    lease_token  BIGINT NOT NULL DEFAULT 0,
    taken_over   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (due_at);
CREATE INDEX delivery_jobs_by_sender ON delivery_jobs (tenant, sender);

-- Meta re-sends events: each (wamid, status) or inbound message id is applied once.
CREATE TABLE webhook_events (
    key         TEXT COLLATE "C" PRIMARY KEY,
    received_at TEXT COLLATE "C" NOT NULL
);

-- GCRA state per sender and per (sender, recipient) pair, shared by replicas.
CREATE TABLE pacing (
    key           TEXT COLLATE "C" PRIMARY KEY,
    tat           BIGINT NOT NULL DEFAULT 0,
    refusals      BIGINT NOT NULL DEFAULT 0,
    backoff_until BIGINT NOT NULL DEFAULT 0
);
