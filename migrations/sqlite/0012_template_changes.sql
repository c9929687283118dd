-- Template status changes from Meta's webhook, counted per sender: a sync
-- notes the count before it reads the Graph API, and keeps the status of a
-- row a later change set (`status_change` is that change's count), which its
-- own read may predate.
ALTER TABLE senders ADD COLUMN template_changes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN status_change INTEGER;
