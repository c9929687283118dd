-- Actions, their idempotency keys, WhatsApp senders and their templates.
-- Every table is keyed or indexed by tenant first: no query works without one.

CREATE TABLE actions (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    type          TEXT NOT NULL,
    is_active     INTEGER NOT NULL,
    action_timing TEXT NOT NULL,
    phone_number  TEXT,
    webhook       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX actions_by_tenant ON actions (tenant, created_at DESC, id DESC);

CREATE TABLE idempotency_keys (
    tenant       TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) STRICT;

CREATE TABLE senders (
    phone_number_id      TEXT PRIMARY KEY,
    tenant               TEXT NOT NULL,
    waba_id              TEXT NOT NULL,
    sealed_access_token  BLOB NOT NULL,
    display_phone_number TEXT,
    verified_name        TEXT,
    quality_rating       TEXT,
    healthy              INTEGER NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    synced_at            TEXT NOT NULL
) STRICT;
CREATE INDEX senders_by_tenant ON senders (tenant, phone_number_id);

CREATE TABLE templates (
    tenant           TEXT NOT NULL,
    phone_number_id  TEXT NOT NULL REFERENCES senders (phone_number_id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    language         TEXT NOT NULL,
    id               TEXT NOT NULL,
    status           TEXT NOT NULL,
    category         TEXT NOT NULL,
    parameter_format TEXT NOT NULL,
    components       TEXT NOT NULL,
    PRIMARY KEY (tenant, phone_number_id, name, language)
) STRICT;
