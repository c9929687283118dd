//! The delivery worker: expire overdue replies, lease due jobs, pace them,
//! send them, record what Meta said. No transaction is held across the HTTP
//! call: a job is leased, a heartbeat extends the lease while its send runs,
//! and a lease that runs out (its replica died) lets another replica take
//! the job over. Any number of workers on any number of replicas share one
//! queue: every write of an attempt presents its lease's token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Semaphore, oneshot, watch};
use uuid::Uuid;

use super::pacing::Pacing;
use super::retry::retry_delay;
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::group_commit::Batches;
use crate::store::{
    ClaimedJob, ExecutionError, FailureCode, Lease, Outcome, Recorded, SendRequest, Signals, Started, Store, StoreError, StoreResult,
};
use crate::whatsapp::errors::{ErrorClass, classify};
use crate::whatsapp::{GraphClient, SendError, Sent};

/// Sends in flight at once; a slow one holds only its own slot.
const CONCURRENCY: usize = 256;
/// The longest the idle worker waits before looking again by itself; also
/// what a lost notification of a new job costs at most.
const IDLE: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often overdue replies are expired (a deadline is met to the second)
/// and the queue depth is measured.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// The pause after a wake before claiming, so that jobs stored and slots
/// freed meanwhile go in one claim's batch: on PostgreSQL each claim is a
/// few round trips, whatever its size.
const GATHER: Duration = Duration::from_millis(5);
/// The first wait before an outcome the database did not take is written
/// again, and the longest (see `record_until_written`).
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct DeliverySettings {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub sender_mps: u32,
    /// How long an unknown outcome waits for Meta's status webhook before the
    /// message is sent again.
    pub reconcile_after: Duration,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Executions untouched this long, with nothing left to send, are deleted.
    pub retention: Duration,
}

pub struct Worker {
    store: Arc<Store>,
    graph: GraphClient,
    sealer: Sealer,
    signals: Arc<Signals>,
    pacing: Pacing,
    settings: DeliverySettings,
    pruned_at: Mutex<Option<Instant>>,
    expired_at: Mutex<Option<Instant>>,
    /// The leases of the sends under way, which the heartbeat extends.
    in_flight: Mutex<HashMap<Uuid, Lease>>,
    recorder: Arc<Recorder>,
}

/// Send outcomes waiting to be written, each with who waits for its answer.
#[derive(Default)]
struct Recorder {
    batches: Batches<(ClaimedJob, Outcome, oneshot::Sender<StoreResult<Recorded>>)>,
}

impl Recorder {
    /// Records one outcome with whatever else is waiting.
    async fn record(self: &Arc<Self>, store: &Arc<Store>, job: ClaimedJob, outcome: Outcome) -> StoreResult<Recorded> {
        let (answer, recorded) = oneshot::channel();
        if self.batches.push((job, outcome, answer)) {
            tokio::spawn(Arc::clone(self).flush(Arc::clone(store)));
        }
        recorded.await.unwrap_or_else(|_| Err(StoreError::Internal("the recorder stopped".into())))
    }

    async fn flush(self: Arc<Self>, store: Arc<Store>) {
        while let Some(batch) = self.batches.next() {
            let (outcomes, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|(job, outcome, answer)| ((job, outcome), answer)).unzip();
            match store.record_outcomes(outcomes).await {
                Ok(recorded) => {
                    for (answer, recorded) in answers.into_iter().zip(recorded) {
                        let _ = answer.send(Ok(recorded));
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

/// One claim's jobs: those to deliver now with what each calls for, and
/// how many pacing put off.
#[derive(Default)]
struct Claimed {
    deliver: Vec<(ClaimedJob, Plan)>,
    deferred: usize,
}

impl Claimed {
    fn handled(&self) -> usize {
        self.deliver.len() + self.deferred
    }
}

/// What a claimed job calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// An earlier attempt's outcome is unknown (its worker stopped mid-send):
    /// wait for Meta's status before sending again.
    Reconcile,
    /// Attempts are spent and Meta never said whether it took the message.
    GiveUp,
    /// The sender was deleted: the message cannot go.
    SenderRemoved,
    /// Meta refused the sender's token: its sends wait for new credentials.
    SenderHeld,
    Send,
}

enum Attempt {
    Done(Outcome),
    /// Meta refused the sender's token, this sealed one.
    SenderRefused {
        error: ExecutionError,
        sealed_token: Vec<u8>,
    },
}

impl Worker {
    pub fn new(store: Arc<Store>, graph: GraphClient, sealer: Sealer, settings: DeliverySettings) -> Self {
        let signals = store.signals();
        let pacing = Pacing::new(settings.sender_mps);
        Self {
            store,
            graph,
            sealer,
            signals,
            pacing,
            settings,
            pruned_at: Mutex::new(None),
            expired_at: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
            recorder: Arc::default(),
        }
    }

    /// Runs until `shutdown` turns true, then stops claiming at once and
    /// finishes the sends under way. Each send runs in its own task, so a
    /// slow one delays no other.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeat());
        let wake = self.signals.jobs();
        while !*shutdown.borrow() {
            self.maintain().await;
            let free = slots.available_permits() as u32;
            let claimed = if free > 0 { self.claim(free).await } else { Claimed::default() };
            // A full claim means more may be due: claim again after the gathering pause.
            let full = free > 0 && claimed.handled() as u32 >= free;
            for (job, plan) in claimed.deliver {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
                let worker = Arc::clone(&self);
                tokio::spawn(async move {
                    worker.deliver(job, plan).await;
                    drop(slot);
                    worker.signals.jobs().notify_one();
                });
            }
            if !full {
                // With every slot taken, a freed one wakes the loop; otherwise the next due job may.
                let next_due = if free > 0 { self.next_due().await } else { None };
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(next_due.unwrap_or(IDLE).min(IDLE)) => {}
                    _ = shutdown.changed() => continue,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = slots.acquire_many(CONCURRENCY as u32).await;
        heartbeat.abort();
    }

    /// One pass, waiting for every send it starts; the number of jobs it
    /// handled. The test seam: tests call it instead of running the loop.
    pub async fn run_once(&self) -> usize {
        self.expire().await;
        let claimed = self.claim(CONCURRENCY as u32).await;
        let handled = claimed.handled();
        join_all(claimed.deliver.into_iter().map(|(job, plan)| self.deliver(job, plan))).await;
        self.report_queue_depth().await;
        handled
    }

    /// Extends the leases of the sends under way, a third of a lease apart.
    async fn heartbeat(self: Arc<Self>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let leases: Vec<Lease> = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).values().copied().collect();
            if leases.is_empty() {
                continue;
            }
            match self.store.extend_leases(leases, now_ms() + self.lease_ms()).await {
                Ok(0) => {}
                Ok(lost) => {
                    metrics::counter!("actiond_delivery_leases_lost_total").increment(lost as u64);
                    tracing::warn!(lost, "leases lost to another replica while their sends ran");
                }
                Err(error) => tracing::warn!(%error, "cannot extend delivery leases"),
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        self.settings.lease.as_millis() as i64
    }

    /// Now and then expires overdue replies and forgets what no longer matters.
    async fn maintain(&self) {
        if every(&self.expired_at, EXPIRE_EVERY) {
            self.expire().await;
            self.report_queue_depth().await;
        }
        if every(&self.pruned_at, PRUNE_EVERY)
            && let Err(error) = self.store.prune(now_ms() * 1000, self.settings.retention).await
        {
            tracing::warn!(%error, "cannot prune old executions, webhook, idempotency and pacing rows");
        }
    }

    async fn expire(&self) {
        if let Err(error) = self.store.expire_due().await {
            tracing::warn!(%error, "cannot expire overdue executions");
        }
    }

    /// Leases due jobs, then takes a send slot for each one that will send
    /// now; those over a pacing limit are rescheduled by the store.
    async fn claim(&self, limit: u32) -> Claimed {
        let now = now_ms();
        let jobs = match self.store.claim_jobs(now, now + self.lease_ms(), limit).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "cannot claim delivery jobs");
                return Claimed::default();
            }
        };
        metrics::counter!("actiond_delivery_claims_total").increment(jobs.len() as u64);
        for job in jobs.iter().filter(|job| job.taken_over) {
            metrics::counter!("actiond_delivery_takeovers_total").increment(1);
            tracing::info!(execution_id = %job.lease.execution_id, attempt_open = job.attempt_open, "took over a job whose lease ran out");
        }
        let mut claimed = Claimed::default();
        let mut sending = Vec::new();
        for job in jobs {
            match self.plan(&job) {
                Plan::Send => sending.push(job),
                plan => claimed.deliver.push((job, plan)),
            }
        }
        if sending.is_empty() {
            return claimed;
        }
        let requests = sending
            .iter()
            .map(|job| SendRequest { lease: job.lease, sender: job.sender.clone(), recipient: job.recipient.clone() })
            .collect();
        match self.store.start_sends(requests, self.pacing, now * 1000).await {
            Ok(answers) => {
                for (mut job, started) in sending.into_iter().zip(answers) {
                    match started {
                        Started::Sending { pair_refused } => {
                            job.pair_refused = pair_refused;
                            claimed.deliver.push((job, Plan::Send));
                        }
                        Started::Deferred => claimed.deferred += 1,
                        Started::Ended => {}
                        Started::LeaseLost => self.lease_lost(job.lease.execution_id),
                    }
                }
                metrics::counter!("actiond_deliveries_total", "outcome" => "deferred").increment(claimed.deferred as u64);
            }
            // Their leases run out and they are claimed again.
            Err(error) => tracing::warn!(%error, "cannot start sends"),
        }
        claimed
    }

    /// How long until the next job no worker holds comes due.
    async fn next_due(&self) -> Option<Duration> {
        match self.store.next_due().await {
            Ok(next) => next.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the delivery queue");
                None
            }
        }
    }

    async fn report_queue_depth(&self) {
        match self.store.queue_depth().await {
            Ok(depth) => metrics::gauge!("actiond_delivery_queue_depth").set(depth as f64),
            Err(error) => tracing::warn!(%error, "cannot read the delivery queue"),
        }
    }

    fn plan(&self, job: &ClaimedJob) -> Plan {
        if job.attempt_open {
            Plan::Reconcile
        } else if job.last_error.as_deref() == Some(FailureCode::OutcomeUnknown.as_str()) && job.attempts >= self.settings.max_attempts {
            Plan::GiveUp
        } else {
            match &job.credentials {
                None => Plan::SenderRemoved,
                Some(credentials) if !credentials.healthy => Plan::SenderHeld,
                Some(_) => Plan::Send,
            }
        }
    }

    async fn deliver(&self, job: ClaimedJob, plan: Plan) {
        let id = job.lease.execution_id;
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id, job.lease);
        let attempt = self.attempt(&job, plan).await;
        let outcome = match attempt {
            Ok(Attempt::Done(outcome)) => Some(outcome),
            Ok(Attempt::SenderRefused { error, sealed_token }) => {
                tracing::warn!(execution_id = %id, sender = %job.sender, reason = %error.message, "Meta refused the sender's token; holding its sends");
                match self.store.hold_sender(&job.tenant, &job.sender, &sealed_token).await {
                    Ok(true) => Some(Outcome::Held),
                    // New credentials arrived while this send used the old ones: try again now.
                    Ok(false) => Some(Outcome::Deferred { due_ms: now_ms() }),
                    Err(error) => {
                        tracing::error!(%error, "cannot hold the sender's jobs");
                        None
                    }
                }
            }
            Err(error) => {
                tracing::error!(execution_id = %id, %error, "delivery failed inside actiond");
                None
            }
        };
        if let Some(outcome) = outcome {
            metrics::counter!("actiond_deliveries_total", "outcome" => outcome_label(&outcome)).increment(1);
            let recorded = record_until_written(RECORD_RETRY_FIRST, || self.recorder.record(&self.store, job.clone(), outcome.clone()));
            match recorded.await {
                Ok(Recorded::Yes | Recorded::JobEnded) => {}
                Ok(Recorded::LeaseLost) => self.lease_lost(id),
                Err(error) => tracing::error!(execution_id = %id, %error, "cannot record a delivery outcome"),
            }
        }
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    fn lease_lost(&self, id: Uuid) {
        metrics::counter!("actiond_delivery_leases_lost_total").increment(1);
        tracing::warn!(execution_id = %id, "another replica took this job over; its attempt records nothing");
    }

    /// Carries out the plan; a `Send` comes with its attempt begun.
    async fn attempt(&self, job: &ClaimedJob, plan: Plan) -> Result<Attempt, StoreError> {
        let credentials = match (plan, &job.credentials) {
            // Meta may have the message. Its status webhook (carrying our id)
            // settles it; only silence means send again.
            (Plan::Reconcile, _) => return Ok(Attempt::Done(self.unknown_outcome("a send was in flight when its worker stopped"))),
            (Plan::GiveUp, _) => {
                let message = format!(
                    "Meta sent no status within the reconcile window after {} attempts; the message may or may not have been delivered",
                    job.attempts
                );
                return Ok(Attempt::Done(Outcome::Failed(ExecutionError::new(FailureCode::OutcomeUnknown, message, None))));
            }
            (Plan::SenderHeld, _) => return Ok(Attempt::Done(Outcome::Held)),
            (Plan::SenderRemoved, _) | (Plan::Send, None) => {
                return Ok(Attempt::Done(Outcome::Failed(ExecutionError::sender_removed())));
            }
            (Plan::Send, Some(credentials)) => credentials,
        };
        let token = match self.sealer.open(&credentials.sealed_access_token, &job.sender) {
            Ok(token) => token,
            Err(reason) => {
                return Ok(Attempt::Done(Outcome::Failed(ExecutionError::new(FailureCode::SenderCredentialsUnreadable, reason, None))));
            }
        };
        let attempts = job.attempts + 1;
        let outcome = match self.graph.send_message(&job.sender, &token, &job.payload).await {
            Ok(Sent { wamid, wa_id }) => Outcome::Accepted { wamid, wa_id },
            Err(SendError::Refused { code, message }) => {
                let refusal = ExecutionError::new(FailureCode::ProviderError, message, Some(code));
                match classify(code) {
                    ErrorClass::Transient => self.retry(attempts, refusal, None),
                    ErrorClass::PairRateLimited => {
                        let wait = self.store.pair_refused(&job.sender, &job.recipient, now_ms() * 1000).await?;
                        self.retry(attempts, refusal, Some(wait))
                    }
                    ErrorClass::SenderCredentials => {
                        return Ok(Attempt::SenderRefused { error: refusal, sealed_token: credentials.sealed_access_token.clone() });
                    }
                    ErrorClass::Permanent => Outcome::Failed(refusal),
                }
            }
            Err(SendError::NotSent(reason)) => self.retry(attempts, ExecutionError::new(FailureCode::TransportError, reason, None), None),
            Err(SendError::Unknown(reason)) => self.unknown_outcome(&reason),
        };
        Ok(Attempt::Done(outcome))
    }

    /// Another try after the backoff (or `wait`), unless the attempts are spent.
    fn retry(&self, attempts: u32, last: ExecutionError, wait: Option<Duration>) -> Outcome {
        if attempts >= self.settings.max_attempts {
            let message = format!("gave up after {attempts} attempts; last: {}", last.message);
            return Outcome::Failed(ExecutionError { code: last.code, message, provider_code: last.provider_code });
        }
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        let delay = wait.unwrap_or_else(|| retry_delay(self.settings.first_backoff, attempts, jitter));
        Outcome::Retry { due_ms: now_ms() + delay.as_millis() as i64, error: last }
    }

    /// Waits for Meta's status, which would adopt the message, before sending
    /// again; with the attempts spent, the next claim ends it instead.
    fn unknown_outcome(&self, reason: &str) -> Outcome {
        let unknown =
            ExecutionError::new(FailureCode::OutcomeUnknown, format!("{reason}; waiting for Meta's status before sending again"), None);
        Outcome::Retry { due_ms: now_ms() + self.settings.reconcile_after.as_millis() as i64, error: unknown }
    }
}

/// Writes an outcome until the database takes it, waiting `first` and then
/// twice as long each time (at most `RECORD_RETRY_MAX`) while the database
/// cannot be reached. Meta's answer is known only here: a takeover after a
/// write given up would send the message again. The heartbeat keeps the
/// lease meanwhile; a lost lease or an error of actiond's own ends it.
async fn record_until_written<F, Written>(first: Duration, mut record: F) -> StoreResult<Recorded>
where
    F: FnMut() -> Written,
    Written: Future<Output = StoreResult<Recorded>>,
{
    let mut wait = first;
    loop {
        match record().await {
            Err(StoreError::Unavailable(reason)) => {
                tracing::warn!(%reason, retry_in_ms = wait.as_millis() as u64, "cannot record a delivery outcome yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECORD_RETRY_MAX);
            }
            written => return written,
        }
    }
}

/// Whether `period` has passed since `last` (or it never ran); if so, it runs now.
fn every(last: &Mutex<Option<Instant>>, period: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.is_none_or(|at| at.elapsed() >= period);
    if due {
        *last = Some(Instant::now());
    }
    due
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted { .. } => "accepted",
        Outcome::Retry { .. } => "retry",
        Outcome::Failed(_) => "failed",
        Outcome::Deferred { .. } => "deferred",
        Outcome::Held => "held",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_outcome_is_written_again_until_the_database_takes_it() {
        let tries = AtomicUsize::new(0);
        let written = record_until_written(Duration::from_millis(1), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(StoreError::Unavailable("connection reset".into())),
                _ => Ok(Recorded::Yes),
            }
        });
        assert!(matches!(written.await, Ok(Recorded::Yes)));
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let tries = AtomicUsize::new(0);
        let refused = record_until_written(Duration::from_millis(1), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Internal("a bug".into()))
        });
        assert!(matches!(refused.await, Err(StoreError::Internal(_))), "an error of actiond's own is not retried");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
