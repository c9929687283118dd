//! The delivery worker's side of the store. A job is claimed by one replica
//! at a time: the claim raises the job's `lease_token`, and every later write
//! of that attempt presents it, so a replica that lost its lease (it stalled,
//! another took the job over) changes nothing. Pacing state is shared: one
//! GCRA row per sender and per pair, read and written under row locks. Jobs
//! name their tenant, so these methods take none.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use uuid::Uuid;

use super::db::{DbResult, Tx, args, placeholders};
use super::executions::{advance, lock_job, set_error};
use super::{Begun, ClaimedJob, ExecutionError, Lease, Outcome, QueueState, Recorded, Signal, Store, StoreResult};
use crate::clock;
use crate::delivery::pacing::{Pacing, pair_key, sender_key};
use crate::delivery::retry::pair_backoff;
use crate::domain::{ExecutionStatus, TenantId};

/// Whether `lease` still holds its job, locking the job's row so that a
/// claim by another replica waits for this transaction.
fn fence(tx: &mut Tx<'_>, lease: Lease) -> DbResult<Recorded> {
    Ok(match lock_job(tx, lease.execution_id)? {
        None => Recorded::JobEnded,
        Some(token) if token == lease.token => Recorded::Yes,
        Some(_) => Recorded::LeaseLost,
    })
}

/// The job waits until `due_ms`, its lease released.
fn reschedule(tx: &mut Tx<'_>, lease: Lease, due_ms: i64) -> DbResult<()> {
    tx.execute(
        "UPDATE delivery_jobs SET due_at = $3, lease_until = 0 WHERE execution_id = $1 AND lease_token = $2",
        args![lease.execution_id, lease.token, due_ms],
    )?;
    Ok(())
}

/// A job to pace: whom it goes from and to.
#[derive(Debug, Clone)]
pub struct PaceRequest {
    pub lease: Lease,
    pub sender: String,
    pub recipient: String,
}

impl Store {
    /// Leases up to `limit` due jobs until `lease_until_ms`, in one statement
    /// that skips jobs another replica is claiming at the same moment.
    pub async fn claim_jobs(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<ClaimedJob>> {
        self.write(move |tx| {
            let claimed = tx.query(
                &format!(
                    "UPDATE delivery_jobs SET lease_until = $2, lease_token = lease_token + 1, taken_over = (lease_until <> 0) \
                     WHERE execution_id IN (SELECT execution_id FROM delivery_jobs \
                     WHERE held = FALSE AND due_at <= $1 AND lease_until <= $1 ORDER BY due_at LIMIT $3{}) \
                     RETURNING execution_id, lease_token, taken_over, tenant, sender",
                    tx.dialect().skip_locked()
                ),
                args![now_ms, lease_until_ms, limit],
            )?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            let ids = claimed.iter().map(|row| row.uuid(0)).collect::<DbResult<Vec<Uuid>>>()?;
            let id_args: Vec<_> = ids.iter().map(|id| super::db::Value::from(*id)).collect();
            let details = tx.query(
                &format!(
                    "SELECT id, recipient, payload, attempts, attempt_open, error FROM executions WHERE id IN ({})",
                    placeholders(0, ids.len())
                ),
                &id_args,
            )?;
            let mut by_id = HashMap::new();
            for row in details {
                by_id.insert(row.uuid(0)?, row);
            }
            let mut jobs = Vec::with_capacity(claimed.len());
            for row in claimed {
                let execution_id = row.uuid(0)?;
                let Some(execution) = by_id.get(&execution_id) else { continue };
                let tenant = TenantId::new(row.text(3)?).ok_or_else(|| super::db::DbError::Internal("a job without a tenant".into()))?;
                let last_error: Option<ExecutionError> = execution.opt_json(5)?;
                jobs.push(ClaimedJob {
                    lease: Lease { execution_id, token: row.int(1)? },
                    tenant,
                    sender: row.text(4)?,
                    recipient: execution.text(1)?,
                    payload: execution.json(2)?,
                    attempts: execution.count(3)?,
                    attempt_open: execution.boolean(4)?,
                    last_error: last_error.map(|error| error.code),
                    taken_over: row.boolean(2)?,
                });
            }
            Ok(jobs)
        })
        .await
    }

    /// Takes a send slot for each job from its sender's rate and its pair's
    /// (both, or neither), in order; a job refused either is rescheduled for
    /// when it may go. `None` for a job admitted, else the time it now waits for.
    pub async fn pace(&self, jobs: Vec<PaceRequest>, pacing: Pacing, now_us: i64) -> StoreResult<Vec<Option<i64>>> {
        self.write(move |tx| {
            let keys: BTreeSet<String> =
                jobs.iter().flat_map(|job| [sender_key(&job.sender), pair_key(&job.sender, &job.recipient)]).collect();
            let key_args: Vec<_> = keys.iter().map(|key| super::db::Value::from(key.as_str())).collect();
            let rows = keys.iter().enumerate().map(|(index, _)| format!("(${})", index + 1)).collect::<Vec<_>>().join(", ");
            tx.execute(&format!("INSERT INTO pacing (key) VALUES {rows} ON CONFLICT DO NOTHING"), &key_args)?;
            // In key order, so that two replicas pacing the same keys lock them alike.
            let current = tx.query(
                &format!(
                    "SELECT key, tat, backoff_until FROM pacing WHERE key IN ({}) ORDER BY key{}",
                    placeholders(0, keys.len()),
                    tx.dialect().for_update()
                ),
                &key_args,
            )?;
            let mut state: HashMap<String, (i64, i64)> = HashMap::new();
            for row in current {
                state.insert(row.text(0)?, (row.int(1)?, row.int(2)?));
            }
            let mut changed = BTreeSet::new();
            let mut answers = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let (sender, pair) = (sender_key(&job.sender), pair_key(&job.sender, &job.recipient));
                let (sender_tat, _) = state.get(&sender).copied().unwrap_or_default();
                let (pair_tat, backoff_until) = state.get(&pair).copied().unwrap_or_default();
                let wait_us = if backoff_until > now_us {
                    Err(backoff_until - now_us)
                } else {
                    match (pacing.sender.admit(sender_tat, now_us), pacing.pair.admit(pair_tat, now_us)) {
                        (Ok(sender_next), Ok(pair_next)) => Ok((sender_next, pair_next)),
                        (sender, pair) => Err(sender.err().unwrap_or(0).max(pair.err().unwrap_or(0))),
                    }
                };
                match wait_us {
                    Ok((sender_next, pair_next)) => {
                        state.insert(sender.clone(), (sender_next, 0));
                        state.insert(pair.clone(), (pair_next, backoff_until));
                        changed.extend([sender, pair]);
                        answers.push(None);
                    }
                    Err(wait_us) => {
                        let due_ms = (now_us + wait_us + 999) / 1000;
                        reschedule(tx, job.lease, due_ms)?;
                        answers.push(Some(due_ms));
                    }
                }
            }
            for key in changed {
                let (tat, _) = state[&key];
                tx.execute("UPDATE pacing SET tat = $2 WHERE key = $1", args![key.as_str(), tat])?;
            }
            Ok(answers)
        })
        .await
    }

    /// Extends the leases of sends under way; how many were lost to another
    /// claim. A job whose lease its attempt released (rescheduled, held) or
    /// that ended is left as it is.
    pub async fn extend_leases(&self, leases: Vec<Lease>, lease_until_ms: i64) -> StoreResult<usize> {
        self.write(move |tx| {
            let mut lost = 0;
            for lease in &leases {
                let extended = tx.execute(
                    "UPDATE delivery_jobs SET lease_until = $3 WHERE execution_id = $1 AND lease_token = $2 AND lease_until <> 0",
                    args![lease.execution_id, lease.token, lease_until_ms],
                )?;
                if extended == 0 && fence(tx, *lease)? == Recorded::LeaseLost {
                    lost += 1;
                }
            }
            Ok(lost)
        })
        .await
    }

    /// Marks an attempt as started: the execution `sending`, one more
    /// attempt, the attempt open until its outcome is recorded.
    pub async fn begin_attempt(&self, lease: Lease) -> StoreResult<Begun> {
        self.write(move |tx| {
            match fence(tx, lease)? {
                Recorded::Yes => {}
                Recorded::JobEnded => return Ok(Begun::Ended),
                Recorded::LeaseLost => return Ok(Begun::LeaseLost),
            }
            let id = lease.execution_id;
            advance(tx, id, ExecutionStatus::Sending, None, None)?;
            let counted = tx.execute(
                "UPDATE executions SET attempts = attempts + 1, attempt_open = TRUE, updated_at = $2 WHERE id = $1 AND status = 'sending'",
                args![id, clock::now()],
            )?;
            if counted == 0 {
                tx.execute("DELETE FROM delivery_jobs WHERE execution_id = $1", args![id])?;
                return Ok(Begun::Ended);
            }
            Ok(Begun::Sending)
        })
        .await
    }

    /// Records what became of the attempt `job`'s lease was for, unless the
    /// job ended or was taken over meanwhile.
    pub async fn record_outcome(&self, job: &ClaimedJob, outcome: Outcome) -> StoreResult<Recorded> {
        let (lease, pair) = (job.lease, pair_key(&job.sender, &job.recipient));
        self.write(move |tx| {
            let fenced = fence(tx, lease)?;
            if fenced != Recorded::Yes {
                return Ok(fenced);
            }
            let id = lease.execution_id;
            tx.execute("UPDATE executions SET attempt_open = FALSE WHERE id = $1", args![id])?;
            match &outcome {
                Outcome::Accepted { wamid } => {
                    // A status webhook may have got here first: keep the wamid it recorded.
                    let ended = super::executions::status_list(ExecutionStatus::ended());
                    tx.execute(
                        &format!("UPDATE executions SET wamid = COALESCE(wamid, $2), error = NULL WHERE id = $1 AND status NOT IN {ended}"),
                        args![id, wamid.as_str()],
                    )?;
                    advance(tx, id, ExecutionStatus::Accepted, None, None)?;
                    tx.execute("DELETE FROM delivery_jobs WHERE execution_id = $1", args![id])?;
                    // Meta took one for this pair: its 131056 back-off starts over.
                    tx.execute("UPDATE pacing SET refusals = 0, backoff_until = 0 WHERE key = $1 AND refusals > 0", args![pair.as_str()])?;
                    tx.signal(Signal::Execution(id));
                }
                Outcome::Retry { due_ms, error } => {
                    set_error(tx, id, error)?;
                    reschedule(tx, lease, *due_ms)?;
                }
                Outcome::Failed(error) => {
                    advance(tx, id, ExecutionStatus::Failed, Some(error), None)?;
                }
                Outcome::Deferred { due_ms } => reschedule(tx, lease, *due_ms)?,
                Outcome::Held => {
                    tx.execute("UPDATE delivery_jobs SET held = TRUE, lease_until = 0 WHERE execution_id = $1", args![id])?;
                }
            }
            Ok(Recorded::Yes)
        })
        .await
    }

    /// Meta answered 131056 for this pair: it backs off 4^n s, n counting the
    /// refusals since its last acceptance, on every replica; the wait.
    pub async fn pair_refused(&self, sender: &str, recipient: &str, now_us: i64) -> StoreResult<Duration> {
        let key = pair_key(sender, recipient);
        self.write(move |tx| {
            let refusals = tx
                .query_one(
                    "INSERT INTO pacing (key, refusals) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET refusals = pacing.refusals + 1 \
                     RETURNING refusals",
                    args![key.as_str()],
                )?
                .count(0)?;
            let wait = pair_backoff(refusals.saturating_sub(1));
            let until = now_us.saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
            tx.execute("UPDATE pacing SET backoff_until = $2 WHERE key = $1", args![key.as_str(), until])?;
            Ok(wait)
        })
        .await
    }

    /// Jobs waiting to be sent, and the earliest time one comes due.
    pub async fn queue(&self) -> StoreResult<QueueState> {
        self.read(|tx| {
            let row = tx.query_one(
                "SELECT COUNT(*), MIN(CASE WHEN due_at > lease_until THEN due_at ELSE lease_until END) FROM delivery_jobs WHERE held = FALSE",
                &[],
            )?;
            Ok(QueueState { depth: row.int(0)? as u64, next_due_ms: row.opt_int(1)? })
        })
        .await
    }
}
