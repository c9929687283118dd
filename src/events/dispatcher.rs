//! Delivers stored events to their endpoints. A pass leases due deliveries
//! (a bounded share per endpoint), posts each in its own task with the
//! Standard Webhooks headers, and records the attempt under its lease. No
//! transaction is held across the HTTP call, and the dispatcher shares
//! nothing with message delivery: a slow or dead endpoint costs only its own
//! slots, never a send or another tenant's events. A replica that dies
//! mid-attempt loses its lease and another delivers the event again, with
//! the same id: delivery is at least once.

use std::collections::HashSet;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::header::CONTENT_TYPE;
use reqwest::redirect::Policy;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use super::EventSettings;
use super::signature::signature_header;
use super::target::{self, GuardedResolver};
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::group_commit::Batches;
use crate::store::{AttemptRecorded, AttemptResult, ClaimedDelivery, Store};

/// Attempts in flight at once, over every endpoint.
const CONCURRENCY: usize = 256;
/// Attempts in flight at once to one endpoint, over every replica.
const PER_ENDPOINT: u32 = 16;
/// A 2xx within this is success; anything later is a failed attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery belongs to one replica: well past an
/// attempt's timeout, so only a dead replica's lease runs out.
const LEASE: Duration = Duration::from_secs(60);
/// The longest the idle dispatcher waits before looking again by itself.
const IDLE: Duration = Duration::from_secs(1);
/// The pause after a wake before claiming, so that the events stored and
/// the attempts finished meanwhile go in one claim, not one claim each.
const GATHER: Duration = Duration::from_millis(5);
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// Endpoints whose backlog is published by name, the largest first: a
/// bounded label set however many endpoints there are.
const BACKLOG_ENDPOINTS: u32 = 20;

pub struct Dispatcher {
    store: Arc<Store>,
    sealer: Sealer,
    client: reqwest::Client,
    settings: EventSettings,
    backlog_at: Mutex<Option<Instant>>,
    /// Endpoints given a backlog gauge at the last report, zeroed when they leave the top.
    reported: Mutex<HashSet<Uuid>>,
    /// Attempt outcomes waiting to be written.
    outcomes: Batches<(ClaimedDelivery, AttemptResult)>,
}

impl Dispatcher {
    pub fn new(store: Arc<Store>, sealer: Sealer, settings: EventSettings) -> Result<Self, String> {
        let mut client = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("actiond/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_local {
            client = client.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = client.build().map_err(|e| format!("cannot build the event client: {e}"))?;
        Ok(Self {
            store,
            sealer,
            client,
            settings,
            backlog_at: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
            outcomes: Batches::default(),
        })
    }

    /// Runs until `shutdown` turns true, then stops claiming. Attempts under
    /// way are not waited for: their leases run out and the events go again.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let wake = self.store.signals().events();
        while !*shutdown.borrow() {
            self.report_backlog().await;
            let free = slots.available_permits() as u32;
            let claimed = if free > 0 { self.claim(free).await } else { Vec::new() };
            let full = free > 0 && claimed.len() as u32 >= free;
            let claimed_any = !claimed.is_empty();
            for delivery in claimed {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
                let dispatcher = Arc::clone(&self);
                tokio::spawn(async move {
                    dispatcher.deliver(delivery).await;
                    drop(slot);
                    dispatcher.store.signals().events().notify_one();
                });
            }
            if full {
                continue;
            }
            let next_due = if free > 0 { self.next_due().await } else { None };
            // Due now yet nothing claimed: the endpoints of those due are
            // saturated, and a finished attempt or a new event wakes the loop.
            let pause = match next_due {
                Some(wait) if claimed_any || !wait.is_zero() => wait.min(IDLE),
                _ => IDLE,
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
            tokio::time::sleep(GATHER).await;
        }
    }

    /// One pass, waiting for every attempt it starts; how many it made.
    /// The test seam, as `Worker::run_once` is.
    pub async fn run_once(&self) -> usize {
        let claimed = self.claim(CONCURRENCY as u32).await;
        let count = claimed.len();
        join_all(claimed.into_iter().map(|delivery| self.deliver(delivery))).await;
        count
    }

    async fn claim(&self, limit: u32) -> Vec<ClaimedDelivery> {
        let now = now_ms();
        match self.store.claim_event_deliveries(now, now + LEASE.as_millis() as i64, limit, PER_ENDPOINT).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim event deliveries");
                Vec::new()
            }
        }
    }

    async fn next_due(&self) -> Option<Duration> {
        let due = self.store.next_event_due().await.ok()??;
        Some(Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)))
    }

    async fn deliver(&self, delivery: ClaimedDelivery) {
        let result = self.attempt(&delivery).await;
        if let AttemptResult::Failed { error, .. } = &result {
            tracing::info!(endpoint = %delivery.endpoint_id, event = %delivery.event_id, attempt = delivery.attempts + 1, %error, "event delivery failed");
        }
        self.record(delivery, result).await;
    }

    /// Queues an attempt's outcome and, unless another attempt is writing
    /// the queue already, writes it, and whatever joins it meanwhile, in one
    /// transaction (group commit): a fsync and a few round trips per batch.
    /// The lease, held until then, keeps the event from being sent again.
    async fn record(&self, delivery: ClaimedDelivery, result: AttemptResult) {
        if !self.outcomes.push((delivery, result)) {
            return;
        }
        while let Some(batch) = self.outcomes.next() {
            let events: Vec<String> = batch.iter().map(|(delivery, _)| delivery.event_id.clone()).collect();
            match self.store.record_event_attempts(batch, self.settings).await {
                Ok(recorded) => {
                    for outcome in recorded {
                        let outcome = match outcome {
                            AttemptRecorded::Delivered => "delivered",
                            AttemptRecorded::Retrying => "retry_scheduled",
                            AttemptRecorded::GaveUp => "failed",
                            AttemptRecorded::LeaseLost => "lease_lost",
                        };
                        metrics::counter!("actiond_event_deliveries_total", "outcome" => outcome).increment(1);
                    }
                }
                // Unrecorded, the events go again once their leases run out.
                Err(error) => tracing::warn!(%error, ?events, "cannot record event delivery attempts"),
            }
        }
    }

    /// Posts the event once: signed with every secret that signs now, to a
    /// target checked again here (a literal address) and by the resolver (a name).
    async fn attempt(&self, delivery: &ClaimedDelivery) -> AttemptResult {
        let failed = |error: String| AttemptResult::Failed { status_code: None, error };
        let url = match target::parse(&delivery.url, self.settings.allow_local) {
            Ok(url) if self.settings.allow_local => url,
            Ok(url) => match target::refuse_literal(&url) {
                Ok(()) => url,
                Err(refused) => return failed(refused.to_string()),
            },
            Err(invalid) => return failed(invalid.to_string()),
        };
        let bound_to = delivery.endpoint_id.to_string();
        let secrets: Result<Vec<String>, String> =
            delivery.sealed_secrets.iter().map(|sealed| self.sealer.open(sealed, &bound_to)).collect();
        let signed = secrets.and_then(|secrets| {
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            signature_header(&secrets, &delivery.event_id, timestamp, &delivery.body).map(|signature| (timestamp, signature))
        });
        let (timestamp, signature) = match signed {
            Ok(signed) => signed,
            Err(error) => {
                tracing::error!(endpoint = %delivery.endpoint_id, %error, "cannot sign an event");
                return failed("actiond could not sign the event".into());
            }
        };
        let sent = self
            .client
            .post(url)
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => AttemptResult::Delivered { status_code: response.status().as_u16() },
            Ok(response) => AttemptResult::Failed {
                status_code: Some(response.status().as_u16()),
                error: format!("the endpoint answered {}", response.status()),
            },
            Err(error) if error.is_timeout() => failed(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
            Err(error) => failed(describe(&error.without_url())),
        }
    }

    /// Publishes the undelivered events, in all and for the endpoints with
    /// the most, now and then.
    async fn report_backlog(&self) {
        {
            let mut at = self.backlog_at.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|at| at.elapsed() < BACKLOG_EVERY) {
                return;
            }
            *at = Some(Instant::now());
        }
        let Ok((largest, total)) = self.store.event_backlog(BACKLOG_ENDPOINTS).await else { return };
        metrics::gauge!("actiond_event_backlog_total").set(total as f64);
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let now: HashSet<Uuid> = largest.iter().map(|(id, _)| *id).collect();
        for gone in reported.difference(&now) {
            metrics::gauge!("actiond_event_backlog", "endpoint" => gone.to_string()).set(0.0);
        }
        for (id, count) in &largest {
            metrics::gauge!("actiond_event_backlog", "endpoint" => id.to_string()).set(*count as f64);
        }
        *reported = now;
    }
}

/// An error with its causes, `a: b: c`, for the attempts list.
fn describe(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
