-- Jobs are no longer indexed by sender (as on SQLite, where it was measured:
-- each job's entry went into its sender's part of the index, written when the
-- job was stored and again when it ended, a tenth of an execute's server CPU
-- with executes spread over 20 senders). What used it, holding, releasing or
-- dropping one sender's jobs, happens once per refused token, per new
-- credentials or per deleted sender, and reads the queue of pending jobs once
-- instead.
DROP INDEX delivery_jobs_by_sender;
