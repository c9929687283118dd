-- The wa_id Meta returned for the recipient when it took the message: its
-- events may name the recipient by it rather than by the number sent to.
ALTER TABLE executions ADD COLUMN wa_id TEXT;

-- Retention deletes executions by age in small batches, oldest first.
CREATE INDEX executions_by_creation ON executions (created_at);
