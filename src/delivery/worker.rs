//! The delivery worker: expire overdue replies, lease due jobs, pace them,
//! send them, record what Meta said. No transaction is held across the HTTP
//! call: a job is leased, and a lease that runs out makes it due again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Notify, Semaphore, watch};

use super::pacing::Pacer;
use super::retry::retry_delay;
use super::waiters::Waiters;
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::store::{ClaimedJob, ExecutionError, Outcome, Store, StoreError};
use crate::whatsapp::errors::{ErrorClass, classify};
use crate::whatsapp::{GraphClient, SendError};

/// How long a claim lasts; far longer than one send (15 s timeout).
const LEASE: Duration = Duration::from_secs(60);
/// Sends in flight at once; a slow one holds only its own slot.
const CONCURRENCY: usize = 64;
/// The longest the idle worker waits before looking again by itself.
const IDLE: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const OUTCOME_UNKNOWN: &str = "outcome_unknown";

pub struct DeliverySettings {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub sender_mps: u32,
    /// How long an unknown outcome waits for Meta's status webhook before the
    /// message is sent again.
    pub reconcile_after: Duration,
}

pub struct Worker {
    store: Arc<dyn Store>,
    graph: GraphClient,
    sealer: Sealer,
    waiters: Arc<Waiters>,
    wake: Arc<Notify>,
    pacer: Mutex<Pacer>,
    settings: DeliverySettings,
    pruned_at: Mutex<Option<Instant>>,
}

enum Attempt {
    Done(Outcome),
    /// Meta refused the sender's token, this sealed one.
    SenderRefused {
        error: ExecutionError,
        sealed_token: Vec<u8>,
    },
    /// The execution ended meanwhile; its job is gone and there is nothing to record.
    Ended,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        graph: GraphClient,
        sealer: Sealer,
        waiters: Arc<Waiters>,
        wake: Arc<Notify>,
        settings: DeliverySettings,
    ) -> Self {
        let pacer = Mutex::new(Pacer::new(settings.sender_mps));
        Self { store, graph, sealer, waiters, wake, pacer, settings, pruned_at: Mutex::new(None) }
    }

    /// Runs until `shutdown` turns true, then finishes the sends under way.
    /// Each send runs in its own task, so a slow one delays no other.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        while !*shutdown.borrow() {
            self.maintain().await;
            let free = slots.available_permits() as u32;
            let jobs = if free > 0 { self.claim(free).await } else { Vec::new() };
            let claimed = !jobs.is_empty();
            for job in jobs {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
                let worker = Arc::clone(&self);
                tokio::spawn(async move {
                    worker.deliver(job).await;
                    drop(slot);
                    worker.wake.notify_one();
                });
            }
            if claimed {
                continue;
            }
            let next_due = self.report_queue().await.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(next_due.unwrap_or(IDLE).min(IDLE)) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = slots.acquire_many(CONCURRENCY as u32).await;
    }

    /// One pass, waiting for every send it starts; the number of jobs it
    /// handled. The test seam: tests call it instead of running the loop.
    pub async fn run_once(&self) -> usize {
        self.maintain().await;
        let jobs = self.claim(CONCURRENCY as u32).await;
        let handled = jobs.len();
        join_all(jobs.into_iter().map(|job| self.deliver(job))).await;
        self.report_queue().await;
        handled
    }

    /// Expires overdue replies; now and then forgets old event and idempotency keys.
    async fn maintain(&self) {
        match self.store.expire_due().await {
            Ok(expired) => self.waiters.wake(&expired),
            Err(error) => tracing::warn!(%error, "cannot expire overdue executions"),
        }
        let due = {
            let mut pruned_at = self.pruned_at.lock().unwrap_or_else(|p| p.into_inner());
            let due = pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *pruned_at = Some(Instant::now());
            }
            due
        };
        if due && let Err(error) = self.store.prune().await {
            tracing::warn!(%error, "cannot prune old webhook and idempotency keys");
        }
    }

    async fn claim(&self, limit: u32) -> Vec<ClaimedJob> {
        let now = now_ms();
        self.store.claim_jobs(now, now + LEASE.as_millis() as i64, limit).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot claim delivery jobs");
            Vec::new()
        })
    }

    /// Publishes the queue depth; the earliest due time of a waiting job.
    async fn report_queue(&self) -> Option<i64> {
        match self.store.queue().await {
            Ok((depth, next_due)) => {
                metrics::gauge!("actiond_delivery_queue_depth").set(depth as f64);
                next_due
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the delivery queue");
                None
            }
        }
    }

    async fn deliver(&self, job: ClaimedJob) {
        let id = job.execution_id;
        let outcome = match self.attempt(&job).await {
            Ok(Attempt::Done(outcome)) => outcome,
            Ok(Attempt::Ended) => return,
            Ok(Attempt::SenderRefused { error, sealed_token }) => {
                tracing::warn!(execution_id = %id, sender = %job.sender, reason = %error.message, "Meta refused the sender's token; holding its sends");
                match self.store.hold_sender(&job.tenant, &job.sender, &sealed_token).await {
                    Ok(true) => Outcome::Held,
                    // New credentials arrived while this send used the old ones: try again now.
                    Ok(false) => Outcome::Deferred { due_ms: now_ms() },
                    Err(error) => {
                        tracing::error!(%error, "cannot hold the sender's jobs");
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(execution_id = %id, %error, "delivery failed inside actiond");
                return;
            }
        };
        metrics::counter!("actiond_deliveries_total", "outcome" => outcome_label(&outcome)).increment(1);
        if let Err(error) = self.store.record_outcome(id, outcome).await {
            tracing::error!(execution_id = %id, %error, "cannot record a delivery outcome");
        }
        self.waiters.wake(&[id]);
    }

    async fn attempt(&self, job: &ClaimedJob) -> Result<Attempt, StoreError> {
        if job.attempt_open {
            // The process stopped mid-send: Meta may have the message. Its status
            // webhook (carrying our id) settles it; only silence means send again.
            return Ok(Attempt::Done(self.unknown_outcome("a send was in flight when actiond stopped")));
        }
        if job.last_error.as_deref() == Some(OUTCOME_UNKNOWN) && job.attempts >= self.settings.max_attempts {
            let message = format!(
                "Meta sent no status within the reconcile window after {} attempts; the message may or may not have been delivered",
                job.attempts
            );
            return Ok(Attempt::Done(Outcome::Failed(error(OUTCOME_UNKNOWN, &message, None))));
        }
        let Some(credentials) = self.store.sender_credentials(&job.tenant, &job.sender).await? else {
            return Ok(Attempt::Done(Outcome::Failed(error("sender_removed", "the sender was deleted before the message was sent", None))));
        };
        if !credentials.healthy {
            return Ok(Attempt::Done(Outcome::Held));
        }
        let token = match self.sealer.open(&credentials.sealed_access_token, &job.sender) {
            Ok(token) => token,
            Err(reason) => return Ok(Attempt::Done(Outcome::Failed(error("sender_credentials_unreadable", &reason, None)))),
        };
        let now = Instant::now();
        let paced = self.pacer.lock().unwrap_or_else(|p| p.into_inner()).admit(&job.sender, &job.recipient, now);
        if let Err(wait) = paced {
            return Ok(Attempt::Done(Outcome::Deferred { due_ms: now_ms() + wait.as_millis() as i64 }));
        }
        if !self.store.begin_attempt(job.execution_id).await? {
            return Ok(Attempt::Ended);
        }
        let attempts = job.attempts + 1;
        let outcome = match self.graph.send_message(&job.sender, &token, &job.payload).await {
            Ok(wamid) => {
                self.pacer.lock().unwrap_or_else(|p| p.into_inner()).pair_accepted(&job.sender, &job.recipient);
                Outcome::Accepted { wamid }
            }
            Err(SendError::Refused { code, message }) => {
                let refusal = error("provider_error", &message, Some(code));
                match classify(code) {
                    ErrorClass::Transient => self.retry(attempts, refusal, None),
                    ErrorClass::PairRateLimited => {
                        let wait = self.pacer.lock().unwrap_or_else(|p| p.into_inner()).pair_refused(&job.sender, &job.recipient, now);
                        self.retry(attempts, refusal, Some(wait))
                    }
                    ErrorClass::SenderCredentials => {
                        return Ok(Attempt::SenderRefused { error: refusal, sealed_token: credentials.sealed_access_token });
                    }
                    ErrorClass::Permanent => Outcome::Failed(refusal),
                }
            }
            Err(SendError::NotSent(reason)) => self.retry(attempts, error("transport_error", &reason, None), None),
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
        let unknown = error(OUTCOME_UNKNOWN, &format!("{reason}; waiting for Meta's status before sending again"), None);
        Outcome::Retry { due_ms: now_ms() + self.settings.reconcile_after.as_millis() as i64, error: unknown }
    }
}

fn error(code: &str, message: &str, provider_code: Option<i64>) -> ExecutionError {
    ExecutionError { code: code.to_owned(), message: message.to_owned(), provider_code }
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
