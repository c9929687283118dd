//! The delivery worker's side of the store. A job is claimed by one replica
//! at a time: the claim raises the job's `lease_token`, and every later write
//! of that attempt presents it, so a replica that lost its lease (it stalled,
//! another took the job over) changes nothing. Pacing state is shared: one
//! GCRA row per sender and per pair, read and written under row locks. Work
//! is done a claim's batch at a time where it can be: on PostgreSQL each
//! statement is a round trip. Jobs name their tenant, so these methods take none.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use uuid::Uuid;

use super::db::{DbError, DbResult, Dialect, Tx, Value, args, batch};
use super::executions::{advance, apply_parked, error_once_sent, lock_job, moved_to, record_events, status_list};
use super::{ClaimedJob, ExecutionError, Lease, Outcome, Recorded, SenderCredentials, Store, StoreResult};
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

/// SQL true of the jobs of these leases, bound as a batch at `$param`,
/// that they still hold (`held`) or that another claim took (`!held`): each
/// job looked up by its key, then its token compared.
fn leases_condition(dialect: Dialect, param: usize, held: bool) -> String {
    format!(
        "{} AND (execution_id, lease_token) {} (SELECT l.value ->> 0, CAST(l.value ->> 1 AS BIGINT) FROM {})",
        dialect.among_batch_keys("execution_id", param),
        if held { "IN" } else { "NOT IN" },
        dialect.batch_rows(param, "l")
    )
}

/// Leases as a batch of `[execution id, token]`.
fn lease_batch(leases: &[Lease]) -> DbResult<Value> {
    batch(&leases.iter().map(|lease| (lease.execution_id, lease.token)).collect::<Vec<_>>())
}

/// A claimed job whose send is to start: whom it goes from and to.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub lease: Lease,
    pub sender: String,
    pub recipient: String,
}

/// What `start_sends` made of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Its send slot is taken and the attempt begun: the execution is
    /// `sending`, the attempt counted and open until its outcome is recorded.
    /// `pair_refused`: Meta refused this pair lately (131056); an acceptance
    /// clears that.
    Sending { pair_refused: bool },
    /// Over a pacing limit: rescheduled for the slot it was given (counted
    /// now, so not again when it goes); no attempt counted.
    Deferred,
    /// The execution ended meanwhile; its job is gone.
    Ended,
    /// Another worker claimed the job since.
    LeaseLost,
}

/// A job's due time (Unix ms) for a slot at `at_us`: the first millisecond
/// not before it.
fn due_ms(at_us: i64) -> i64 {
    (at_us + 999) / 1000
}

/// Which of its send slots a job put off by pacing holds
/// (`delivery_jobs.slotted`): counted when it was put off, they are not
/// counted again when it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    Neither = 0,
    /// Its pair's slot: the pair's rate put it off; the sender's slot is
    /// asked for when it comes due.
    Pair = 1,
    /// Both: the sender's rate put it off, and the pair's slot was taken
    /// for the same time.
    Both = 2,
}

impl Held {
    fn stored(value: i64) -> Self {
        match value {
            1 => Self::Pair,
            2 => Self::Both,
            _ => Self::Neither,
        }
    }
}

/// A send slot for each job, from its sender's rate and its pair's (both, or
/// neither), in order: whether its pair was refused lately, or when (Unix ms)
/// it may go with the slots it then holds. A job over a limit is given the
/// next free slot of what put it off (and, when that is the sender's rate, the
/// pair's slot for the same time), counted now, so a backlog comes due a slot
/// at a time; a pair's backlog takes none of its sender's slots until it is due.
fn take_send_slots(
    tx: &mut Tx<'_>,
    jobs: &[(&SendRequest, Held)],
    pacing: Pacing,
    now_us: i64,
) -> DbResult<Vec<Result<bool, (i64, Held)>>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let keys: BTreeSet<String> =
        jobs.iter().flat_map(|(job, _)| [sender_key(&job.sender), pair_key(&job.sender, &job.recipient)]).collect();
    let dialect = tx.dialect();
    let read = match dialect {
        // Creates the rows not there yet and locks them all, in key order (so
        // two replicas pacing the same keys lock them alike), reading them as
        // they stand.
        Dialect::Postgres => format!(
            "INSERT INTO pacing (key) {} ON CONFLICT (key) DO UPDATE SET tat = pacing.tat RETURNING key, tat, backoff_until, refusals",
            dialect.batch_texts(1)
        ),
        // The one writer is the lock, so a read: a key not there was never used.
        Dialect::Sqlite => format!("SELECT key, tat, backoff_until, refusals FROM pacing WHERE {}", dialect.among_batch("key", 1)),
    };
    let current = tx.query(&read, &[batch(&keys)?])?;
    // Each key's tat, back-off, whether its pair was refused lately, and
    // whether a slot taken here moved its tat.
    let mut state: HashMap<String, (i64, i64, bool, bool)> = HashMap::new();
    for row in current {
        state.insert(row.text(0)?, (row.int(1)?, row.int(2)?, row.int(3)? > 0, false));
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for (job, held) in jobs {
        let (sender, pair) = (sender_key(&job.sender), pair_key(&job.sender, &job.recipient));
        let (sender_tat, ..) = state.get(&sender).copied().unwrap_or_default();
        let (pair_tat, backoff_until, refused, _) = state.get(&pair).copied().unwrap_or_default();
        if backoff_until > now_us {
            answers.push(Err((due_ms(backoff_until), Held::Neither)));
            continue;
        }
        if *held == Held::Both {
            answers.push(Ok(refused));
            continue;
        }
        let (sender_at, sender_next) = pacing.sender.slot(sender_tat, now_us);
        let (pair_at, pair_next) = pacing.pair.slot(pair_tat, now_us);
        if *held == Held::Neither && pair_at > sender_at {
            // The pair's rate binds: its slot alone is taken.
            state.insert(pair, (pair_next, backoff_until, refused, true));
            answers.push(Err((due_ms(pair_at), Held::Pair)));
            continue;
        }
        state.insert(sender, (sender_next, 0, false, true));
        if *held == Held::Neither {
            let (_, pair_next) = pacing.pair.slot(pair_tat, sender_at);
            state.insert(pair, (pair_next, backoff_until, refused, true));
        }
        answers.push(if sender_at <= now_us { Ok(refused) } else { Err((due_ms(sender_at), Held::Both)) });
    }
    // Only the keys a slot was taken from moved; `WHERE TRUE` tells
    // SQLite's parser the SELECT ends there.
    let tats: Vec<(&str, i64)> = state.iter().filter(|(_, (.., moved))| *moved).map(|(key, (tat, ..))| (key.as_str(), *tat)).collect();
    if tats.is_empty() {
        return Ok(answers);
    }
    tx.execute(
        &format!(
            "INSERT INTO pacing (key, tat) SELECT t.value ->> 0, CAST(t.value ->> 1 AS BIGINT) FROM {} WHERE TRUE \
             ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
            dialect.batch_rows(1, "t")
        ),
        &[batch(&tats)?],
    )?;
    Ok(answers)
}

/// Why a fenced write changed nothing: the job ended, or another claim owns it.
fn unfenced(tx: &mut Tx<'_>, lease: Lease) -> DbResult<Recorded> {
    Ok(match fence(tx, lease)? {
        Recorded::LeaseLost => Recorded::LeaseLost,
        Recorded::Yes | Recorded::JobEnded => Recorded::JobEnded,
    })
}

/// Meta took these messages: their jobs end, their executions are accepted
/// (a status webhook that got there first keeps the wamid and status it
/// recorded) and their pairs' 131056 back-offs start over.
fn accept(tx: &mut Tx<'_>, accepted: &[&(Lease, String, bool, Outcome)]) -> DbResult<Vec<Recorded>> {
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    let mut leases: Vec<Lease> = accepted.iter().map(|(lease, ..)| *lease).collect();
    leases.sort_by_key(|lease| lease.execution_id);
    let ended_jobs = tx.query(
        &format!("DELETE FROM delivery_jobs WHERE {} RETURNING execution_id", leases_condition(tx.dialect(), 1, true)),
        &[lease_batch(&leases)?],
    )?;
    let fenced: BTreeSet<Uuid> = ended_jobs.iter().map(|row| row.uuid(0)).collect::<DbResult<_>>()?;
    let mut recorded = Vec::with_capacity(accepted.len());
    for (lease, _, _, outcome) in accepted {
        if fenced.contains(&lease.execution_id) {
            recorded.push(Recorded::Yes);
            continue;
        }
        // A status that came first adopted the wamid and ended the job; the
        // answer still brings the wa_id the person's replies may come from.
        if let Outcome::Accepted { wamid, wa_id: Some(wa_id) } = outcome {
            tx.execute(
                "UPDATE executions SET wa_id = $3, updated_at = $4 WHERE id = $1 AND wamid = $2 AND wa_id IS NULL",
                args![lease.execution_id, wamid.as_str(), wa_id.as_str(), clock::now()],
            )?;
        }
        recorded.push(unfenced(tx, *lease)?);
    }
    let mine: Vec<&&(Lease, String, bool, Outcome)> = accepted.iter().filter(|(lease, ..)| fenced.contains(&lease.execution_id)).collect();
    if mine.is_empty() {
        return Ok(recorded);
    }
    let accepted: Vec<(Uuid, &str, Option<&str>)> = mine
        .iter()
        .map(|(lease, _, _, outcome)| {
            let Outcome::Accepted { wamid, wa_id } = outcome else { unreachable!("only acceptances are accepted") };
            (lease.execution_id, wamid.as_str(), wa_id.as_deref())
        })
        .collect();
    let dialect = tx.dialect();
    let rows = dialect.batch_rows(2, "a");
    tx.execute(
        &format!(
            "UPDATE executions SET status = {}, wamid = COALESCE(wamid, m.wamid_given), wa_id = COALESCE(wa_id, m.wa_id_given), \
             attempt_open = FALSE, error = {}, updated_at = $1 \
             FROM (SELECT a.value ->> 0 AS execution, a.value ->> 1 AS wamid_given, a.value ->> 2 AS wa_id_given FROM {rows}) m \
             WHERE executions.id = m.execution{}",
            moved_to(ExecutionStatus::Accepted),
            error_once_sent(),
            dialect.join_by_key("executions.id", 2)
        ),
        &[Value::from(clock::now()), batch(&accepted)?],
    )?;
    let ids: Vec<Uuid> = mine.iter().map(|(lease, ..)| lease.execution_id).collect();
    record_events(tx, &ids, ExecutionStatus::Accepted)?;
    // A refusal recorded for the pair since this send started (another send's
    // 131056) still holds: its back-off is kept, and the count it raised.
    let now_us = clock::now_ms().saturating_mul(1000);
    for (_, pair, pair_refused, _) in mine {
        if *pair_refused {
            tx.execute(
                "UPDATE pacing SET refusals = 0, backoff_until = 0 WHERE key = $1 AND backoff_until <= $2",
                args![pair.as_str(), now_us],
            )?;
        }
    }
    Ok(recorded)
}

/// Any outcome but an acceptance, for one job.
fn record_other(tx: &mut Tx<'_>, lease: Lease, outcome: &Outcome) -> DbResult<Recorded> {
    let (id, token) = (lease.execution_id, lease.token);
    let fenced = match outcome {
        Outcome::Accepted { .. } => unreachable!("acceptances are recorded by accept()"),
        Outcome::Failed(_) => tx.execute("DELETE FROM delivery_jobs WHERE execution_id = $1 AND lease_token = $2", args![id, token])?,
        Outcome::Retry { due_ms, .. } | Outcome::Deferred { due_ms } => tx.execute(
            "UPDATE delivery_jobs SET due_at = $3, lease_until = 0, slotted = 0 WHERE execution_id = $1 AND lease_token = $2",
            args![id, token, *due_ms],
        )?,
        Outcome::Held => tx.execute(
            "UPDATE delivery_jobs SET held = TRUE, lease_until = 0, slotted = 0 WHERE execution_id = $1 AND lease_token = $2",
            args![id, token],
        )?,
    };
    if fenced == 0 {
        return unfenced(tx, lease);
    }
    match outcome {
        Outcome::Retry { error, .. } => {
            let ended = status_list(ExecutionStatus::ended());
            tx.execute(
                &format!("UPDATE executions SET attempt_open = FALSE, error = $2, updated_at = $3 WHERE id = $1 AND status NOT IN {ended}"),
                args![id, super::db::to_json(error)?, clock::now()],
            )?;
        }
        Outcome::Failed(error) => {
            advance(tx, id, ExecutionStatus::Failed, Some(error), None)?;
        }
        Outcome::Deferred { .. } | Outcome::Held | Outcome::Accepted { .. } => {
            // A refused token ended the attempt (held, or deferred for new credentials).
            tx.execute("UPDATE executions SET attempt_open = FALSE WHERE id = $1 AND attempt_open = TRUE", args![id])?;
        }
    }
    Ok(Recorded::Yes)
}

impl Store {
    /// Leases up to `limit` due jobs until `lease_until_ms`, in one statement
    /// that skips jobs another replica is claiming at the same moment; each
    /// with what its send needs, its sender's credentials included.
    pub async fn claim_jobs(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<ClaimedJob>> {
        self.write(move |tx| {
            let dialect = tx.dialect();
            let due = format!(
                "SELECT execution_id FROM delivery_jobs WHERE held = FALSE AND due_at <= $1 AND lease_until <= $1 \
                 ORDER BY due_at LIMIT $3{}",
                dialect.skip_locked()
            );
            let claimed = tx.query(
                &format!(
                    "UPDATE delivery_jobs SET lease_until = $2, lease_token = lease_token + 1, taken_over = (lease_until <> 0) \
                     WHERE {} RETURNING execution_id, lease_token, taken_over, tenant, sender",
                    dialect.among("execution_id", &due)
                ),
                args![now_ms, lease_until_ms, limit],
            )?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            let ids = claimed.iter().map(|row| row.uuid(0)).collect::<DbResult<Vec<Uuid>>>()?;
            let details = tx.query(
                &format!(
                    "SELECT e.id, e.recipient, e.payload, e.attempts, e.attempt_open, e.error, s.waba_id, s.sealed_access_token, s.healthy \
                     FROM executions e LEFT JOIN senders s ON s.phone_number_id = e.sender AND s.tenant = e.tenant WHERE {}",
                    dialect.among_batch("e.id", 1)
                ),
                &[batch(&ids)?],
            )?;
            let mut by_id = HashMap::new();
            for row in details {
                by_id.insert(row.uuid(0)?, row);
            }
            let mut jobs = Vec::with_capacity(claimed.len());
            for row in claimed {
                let execution_id = row.uuid(0)?;
                let Some(execution) = by_id.get(&execution_id) else { continue };
                let tenant = TenantId::new(row.text(3)?).ok_or_else(|| DbError::Internal("a job without a tenant".into()))?;
                let last_error: Option<ExecutionError> = execution.opt_json(5)?;
                let credentials = match execution.opt_text(6)? {
                    Some(waba_id) => {
                        Some(SenderCredentials { waba_id, sealed_access_token: execution.bytes(7)?, healthy: execution.boolean(8)? })
                    }
                    None => None,
                };
                jobs.push(ClaimedJob {
                    lease: Lease { execution_id, token: row.int(1)? },
                    tenant,
                    sender: row.text(4)?,
                    recipient: execution.text(1)?,
                    payload: execution.text(2)?,
                    attempts: execution.count(3)?,
                    attempt_open: execution.boolean(4)?,
                    last_error: last_error.map(|error| error.code),
                    taken_over: row.boolean(2)?,
                    credentials,
                    pair_refused: false,
                });
            }
            Ok(jobs)
        })
        .await
    }

    /// Starts the sends of a claim's jobs in one transaction: takes each
    /// one's pacing slot, reschedules those over a limit, and begins the
    /// attempt of the others.
    pub async fn start_sends(&self, jobs: Vec<SendRequest>, pacing: Pacing, now_us: i64) -> StoreResult<Vec<Started>> {
        self.write(move |tx| {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let dialect = tx.dialect();
            let ids: Vec<Uuid> = jobs.iter().map(|job| job.lease.execution_id).collect();
            // Job rows first, as every transaction takes them; in id order.
            let fenced = tx.query(
                &format!(
                    "SELECT execution_id, lease_token, slotted FROM delivery_jobs WHERE {} ORDER BY execution_id{}",
                    dialect.among_batch("execution_id", 1),
                    dialect.for_update()
                ),
                &[batch(&ids)?],
            )?;
            let mut rows = HashMap::new();
            for row in fenced {
                rows.insert(row.uuid(0)?, (row.int(1)?, Held::stored(row.int(2)?)));
            }
            let mut answers: Vec<Started> = jobs
                .iter()
                .map(|job| match rows.get(&job.lease.execution_id) {
                    None => Started::Ended,
                    Some((token, _)) if *token == job.lease.token => Started::Sending { pair_refused: false },
                    Some(_) => Started::LeaseLost,
                })
                .collect();
            let held: Vec<usize> = (0..jobs.len()).filter(|index| matches!(answers[*index], Started::Sending { .. })).collect();
            let pacing_asked: Vec<(&SendRequest, Held)> = held
                .iter()
                .map(|index| (&jobs[*index], rows.get(&jobs[*index].lease.execution_id).map_or(Held::Neither, |(_, slots)| *slots)))
                .collect();
            let slots = take_send_slots(tx, &pacing_asked, pacing, now_us)?;
            let mut deferred = Vec::new();
            let mut admitted = Vec::new();
            for (index, slot) in held.into_iter().zip(slots) {
                match slot {
                    Ok(pair_refused) => {
                        answers[index] = Started::Sending { pair_refused };
                        admitted.push(index);
                    }
                    Err((due_ms, slots)) => {
                        answers[index] = Started::Deferred;
                        deferred.push((jobs[index].lease.execution_id, due_ms, slots as i64));
                    }
                }
            }
            if !deferred.is_empty() {
                let rows = dialect.batch_rows(1, "d");
                tx.execute(
                    &format!(
                        "UPDATE delivery_jobs SET due_at = later.due_at, slotted = later.slotted, lease_until = 0 \
                         FROM (SELECT d.value ->> 0 AS execution, CAST(d.value ->> 1 AS BIGINT) AS due_at, \
                         CAST(d.value ->> 2 AS SMALLINT) AS slotted FROM {rows}) later \
                         WHERE delivery_jobs.execution_id = later.execution{}",
                        dialect.join_by_key("delivery_jobs.execution_id", 1)
                    ),
                    &[batch(&deferred)?],
                )?;
            }
            if admitted.is_empty() {
                return Ok(answers);
            }
            let starting: Vec<Uuid> = admitted.iter().map(|index| jobs[*index].lease.execution_id).collect();
            let open = status_list(ExecutionStatus::allowed_before(ExecutionStatus::Sending).into_iter().chain([ExecutionStatus::Sending]));
            let begun = tx.query(
                &format!(
                    "UPDATE executions SET status = {}, attempts = attempts + 1, attempt_open = TRUE, updated_at = $1 \
                     WHERE {} AND status IN {open} RETURNING id",
                    moved_to(ExecutionStatus::Sending),
                    dialect.among_batch("id", 2)
                ),
                &[Value::from(clock::now()), batch(&starting)?],
            )?;
            let begun: BTreeSet<Uuid> = begun.iter().map(|row| row.uuid(0)).collect::<DbResult<_>>()?;
            let ended: Vec<Uuid> = starting.iter().copied().filter(|id| !begun.contains(id)).collect();
            if !ended.is_empty() {
                tx.execute(&format!("DELETE FROM delivery_jobs WHERE {}", dialect.among_batch("execution_id", 1)), &[batch(&ended)?])?;
                for index in &admitted {
                    if ended.contains(&jobs[*index].lease.execution_id) {
                        answers[*index] = Started::Ended;
                    }
                }
            }
            let begun: Vec<Uuid> = begun.into_iter().collect();
            record_events(tx, &begun, ExecutionStatus::Sending)?;
            Ok(answers)
        })
        .await
    }

    /// Extends the leases of sends under way; how many were lost to another
    /// claim. A job whose lease its attempt released (rescheduled, held) or
    /// that ended is left as it is, and so is one whose outcome is being
    /// written right now: the heartbeat skips locked rows rather than wait.
    pub async fn extend_leases(&self, mut leases: Vec<Lease>, lease_until_ms: i64) -> StoreResult<usize> {
        leases.sort_by_key(|lease| lease.execution_id);
        self.write(move |tx| {
            if leases.is_empty() {
                return Ok(0);
            }
            let dialect = tx.dialect();
            let held = format!(
                "SELECT execution_id FROM delivery_jobs WHERE {} AND lease_until <> 0{}",
                leases_condition(dialect, 2, true),
                dialect.skip_locked()
            );
            tx.execute(
                &format!("UPDATE delivery_jobs SET lease_until = $1 WHERE {}", dialect.among("execution_id", &held)),
                &[Value::from(lease_until_ms), lease_batch(&leases)?],
            )?;
            // Without waiting on locks: the jobs another claim now owns.
            let lost = tx.query_one(
                &format!("SELECT COUNT(*) FROM delivery_jobs WHERE {}", leases_condition(dialect, 1, false)),
                &[lease_batch(&leases)?],
            )?;
            Ok(lost.count(0)? as usize)
        })
        .await
    }

    /// Records what became of the attempts these claimed jobs' leases were
    /// for, in one transaction, each unless its job ended or was taken over
    /// meanwhile. Acceptances, nearly all of them, are written a batch at a
    /// time; each statement releases or ends a job only under its lease's
    /// token: that is the fence.
    pub async fn record_outcomes(&self, outcomes: Vec<(ClaimedJob, Outcome)>) -> StoreResult<Vec<Recorded>> {
        // Sends whose answer names the recipient by another WhatsApp id: Meta's
        // events from that id may have come first and been kept for it.
        let renamed: Vec<bool> = outcomes
            .iter()
            .map(|(job, outcome)| matches!(outcome, Outcome::Accepted { wa_id: Some(wa_id), .. } if *wa_id != job.recipient))
            .collect();
        let outcomes: Vec<(Lease, String, bool, Outcome)> = outcomes
            .into_iter()
            .map(|(job, outcome)| (job.lease, pair_key(&job.sender, &job.recipient), job.pair_refused, outcome))
            .collect();
        self.write(move |tx| {
            let mut recorded = vec![Recorded::Yes; outcomes.len()];
            let accepted: Vec<usize> = (0..outcomes.len()).filter(|i| matches!(outcomes[*i].3, Outcome::Accepted { .. })).collect();
            for (index, fenced) in accept(tx, &accepted.iter().map(|i| &outcomes[*i]).collect::<Vec<_>>())?.into_iter().enumerate() {
                recorded[accepted[index]] = fenced;
            }
            let answered: Vec<Uuid> = (0..outcomes.len())
                .filter(|index| renamed[*index] && recorded[*index] != Recorded::LeaseLost)
                .map(|index| outcomes[index].0.execution_id)
                .collect();
            apply_parked(tx, &answered)?;
            for (index, (lease, _, _, outcome)) in outcomes.iter().enumerate() {
                if !matches!(outcome, Outcome::Accepted { .. }) {
                    recorded[index] = record_other(tx, *lease, outcome)?;
                }
            }
            Ok(recorded)
        })
        .await
    }

    /// `record_outcomes` for one job.
    pub async fn record_outcome(&self, job: &ClaimedJob, outcome: Outcome) -> StoreResult<Recorded> {
        Ok(self.record_outcomes(vec![(job.clone(), outcome)]).await?[0])
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

    /// How many jobs wait to be sent (held ones aside).
    pub async fn queue_depth(&self) -> StoreResult<u64> {
        self.read(|tx| Ok(tx.query_one("SELECT COUNT(*) FROM delivery_jobs WHERE held = FALSE", &[])?.int(0)? as u64)).await
    }

    /// When the next job no worker holds comes due (Unix ms), read from the
    /// index on `due_at`: the idle worker's alarm. A dead replica's expired
    /// leases are not in it; the worker looks again within a second anyway.
    pub async fn next_due(&self) -> StoreResult<Option<i64>> {
        self.read(|tx| tx.query_one("SELECT MIN(due_at) FROM delivery_jobs WHERE held = FALSE AND lease_until = 0", &[])?.opt_int(0)).await
    }
}
