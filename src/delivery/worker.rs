//! One pass of the worker: expire overdue replies, lease due jobs, pace them,
//! send them, record what Meta said. No transaction is held across the HTTP
//! call: a job is leased, and a lease that runs out makes it due again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Notify, watch};

use super::pacing::Pacer;
use super::retry::retry_delay;
use super::waiters::Waiters;
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::store::{ClaimedJob, ExecutionError, Outcome, Store};
use crate::whatsapp::errors::{ErrorClass, classify};
use crate::whatsapp::{GraphClient, SendError};

/// How long a claim lasts; far longer than one send (15 s timeout).
const LEASE: Duration = Duration::from_secs(60);
/// Jobs one pass sends at most, concurrently.
const BATCH: u32 = 64;
/// The longest the idle worker waits before looking again by itself.
const IDLE: Duration = Duration::from_secs(1);

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
}

enum Attempt {
    Done(Outcome),
    /// Meta refused the sender's token.
    SenderRefused(ExecutionError),
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
        Self { store, graph, sealer, waiters, wake, pacer, settings }
    }

    /// Runs passes until `shutdown` turns true; a pass under way finishes first.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if self.run_once().await > 0 {
                continue;
            }
            let next_due = match self.store.queue().await {
                Ok((_, next)) => next.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64)),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the delivery queue");
                    None
                }
            };
            let nap = next_due.unwrap_or(IDLE).min(IDLE);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass; the number of jobs it handled. Tests call it directly.
    pub async fn run_once(&self) -> usize {
        match self.store.expire_due().await {
            Ok(expired) => self.waiters.wake(&expired),
            Err(error) => tracing::warn!(%error, "cannot expire overdue executions"),
        }
        let now = now_ms();
        let jobs = match self.store.claim_jobs(now, now + LEASE.as_millis() as i64, BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "cannot claim delivery jobs");
                return 0;
            }
        };
        let handled = jobs.len();
        join_all(jobs.into_iter().map(|job| self.deliver(job))).await;
        if let Ok((depth, _)) = self.store.queue().await {
            metrics::gauge!("actiond_delivery_queue_depth").set(depth as f64);
        }
        handled
    }

    async fn deliver(&self, job: ClaimedJob) {
        let id = job.execution_id;
        let outcome = self.attempt(&job).await;
        let outcome = match outcome {
            Ok(Attempt::Done(outcome)) => outcome,
            Ok(Attempt::SenderRefused(error)) => {
                tracing::warn!(execution_id = %id, sender = %job.sender, reason = %error.message, "Meta refused the sender's token; holding its sends");
                if let Err(error) = self.store.hold_sender(&job.tenant, &job.sender).await {
                    tracing::error!(%error, "cannot hold the sender's jobs");
                }
                Outcome::Held
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

    async fn attempt(&self, job: &ClaimedJob) -> Result<Attempt, crate::store::StoreError> {
        let now = Instant::now();
        if job.attempt_open {
            // The process stopped mid-send: Meta may have the message. Its status
            // webhook (carrying our id) settles it; only silence means send again.
            return Ok(Attempt::Done(self.unknown_outcome(job, "a send was in flight when actiond stopped")));
        }
        let paced = self.pacer.lock().unwrap_or_else(|p| p.into_inner()).admit(&job.sender, &job.recipient, now);
        if let Err(wait) = paced {
            return Ok(Attempt::Done(Outcome::Deferred { due_ms: now_ms() + wait.as_millis() as i64 }));
        }
        if !self.store.begin_attempt(job.execution_id).await? {
            return Ok(Attempt::Done(Outcome::Deferred { due_ms: now_ms() }));
        }
        let attempts = job.attempts + 1;
        let Some(credentials) = self.store.sender_credentials(&job.tenant, &job.sender).await? else {
            return Ok(Attempt::Done(Outcome::Failed(error(
                "sender_removed",
                "the action's sender was deleted before the message was sent",
                None,
            ))));
        };
        if !credentials.healthy {
            return Ok(Attempt::SenderRefused(error("sender_unhealthy", "the sender's token was refused; sync the sender", None)));
        }
        let token = match self.sealer.open(&credentials.sealed_access_token, &job.sender) {
            Ok(token) => token,
            Err(reason) => return Ok(Attempt::Done(Outcome::Failed(error("sender_credentials_unreadable", &reason, None)))),
        };
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
                    ErrorClass::SenderCredentials => return Ok(Attempt::SenderRefused(refusal)),
                    ErrorClass::Permanent => Outcome::Failed(refusal),
                }
            }
            Err(SendError::NotSent(reason)) => self.retry(attempts, error("transport_error", &reason, None), None),
            Err(SendError::Unknown(reason)) => self.unknown_outcome(job, &reason),
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

    fn unknown_outcome(&self, job: &ClaimedJob, reason: &str) -> Outcome {
        let unknown = error("outcome_unknown", &format!("{reason}; waiting for Meta's status before sending again"), None);
        if job.attempts >= self.settings.max_attempts {
            return Outcome::Failed(unknown);
        }
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
