-- Jobs are no longer indexed by sender. Each job's entry went into its
-- sender's part of the index, a page apart for each sender, written when the
-- job was stored and again when it ended: with executes spread over 20
-- senders that was a tenth of an execute's server CPU (scripts/bench's
-- measure, six alternating runs: 380 and 363 µs with it, 340 and 326 µs
-- without). What used it, holding, releasing or dropping one sender's jobs,
-- happens once per refused token, per new credentials or per deleted sender,
-- and reads the queue of pending jobs once instead.
DROP INDEX delivery_jobs_by_sender;
