-- Meta's events that name an execution whose send has not been answered yet,
-- from a WhatsApp id other than the number it was sent to: which id Meta
-- gives that number is known only from the answer, so they wait for it here.
CREATE TABLE parked_webhook_events (
    key          TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    event        TEXT NOT NULL,
    received_at  TEXT NOT NULL
) STRICT;
CREATE INDEX parked_webhook_events_by_execution ON parked_webhook_events (execution_id);
