-- Event endpoints (CONTRACT §10) and their outbox. An event is stored, one
-- delivery row per endpoint it goes to, in the transaction of the change it
-- reports; the dispatcher leases due rows like delivery jobs and records
-- every attempt.
CREATE TABLE event_endpoints (
    id                     TEXT COLLATE "C" PRIMARY KEY,
    tenant                 TEXT COLLATE "C" NOT NULL,
    url                    TEXT NOT NULL,
    -- ",type,type," (matched with LIKE), or NULL for every type.
    events                 TEXT,
    description            TEXT NOT NULL,
    disabled               BOOLEAN NOT NULL,
    sealed_secret          BYTEA NOT NULL,
    -- The secret a rotation replaced, still signing beside the new one until previous_until (ms).
    sealed_previous_secret BYTEA,
    previous_until         BIGINT NOT NULL,
    -- When the endpoint began failing (ms), cleared by a success.
    failing_since          BIGINT,
    created_at             TEXT COLLATE "C" NOT NULL,
    updated_at             TEXT COLLATE "C" NOT NULL
);
CREATE INDEX event_endpoints_by_tenant ON event_endpoints (tenant, created_at DESC, id DESC);

CREATE TABLE event_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL REFERENCES event_endpoints (id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- pending, paused (its endpoint is disabled), delivered or failed.
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    lease_token BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX event_deliveries_due ON event_deliveries (due_at) WHERE state = 'pending';
-- A claim takes each endpoint's earliest pending deliveries from here; pausing,
-- resuming and deleting an endpoint find its deliveries by its prefix.
CREATE INDEX event_deliveries_by_endpoint ON event_deliveries (endpoint_id, state, due_at);
CREATE INDEX event_deliveries_by_creation ON event_deliveries (created_at) WHERE state IN ('delivered', 'failed');

CREATE TABLE event_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES event_deliveries (id) ON DELETE CASCADE,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    attempt     BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    at          TEXT COLLATE "C" NOT NULL
);
CREATE INDEX event_attempts_by_endpoint ON event_attempts (endpoint_id, id DESC);
CREATE INDEX event_attempts_by_delivery ON event_attempts (delivery_id);
