-- Each filter of the execution and action lists has an index in the list's
-- order, so a page and its count read only the rows that match, however
-- much else the tenant has. The action index serves delete's look-up of an
-- action's executions too, which the index on action_id alone did.
CREATE INDEX executions_by_tenant_status ON executions (tenant, status, created_at DESC, id DESC);
CREATE INDEX executions_by_tenant_action ON executions (tenant, action_id, created_at DESC, id DESC);
CREATE INDEX executions_by_tenant_call ON executions (tenant, call_id, created_at DESC, id DESC);
DROP INDEX executions_by_action;
CREATE INDEX actions_by_tenant_activity ON actions (tenant, is_active, created_at DESC, id DESC);
