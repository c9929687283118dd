-- Pending events are found only endpoint by endpoint, from
-- event_deliveries_by_endpoint. A probe for one endpoint through an index on
-- due_at alone walks past every other endpoint's due rows, and PostgreSQL
-- chose it whenever its statistics lagged behind the table's growth.
DROP INDEX event_deliveries_due;
