//! actiond: stores, validates and runs WhatsApp actions for AI voice agents.
//!
//! `App::build` wires settings into a running service on a bound listener;
//! `App::run` serves until the shutdown future resolves. Tests drive the same
//! two calls the binary does.

pub mod auth;
pub mod clock;
pub mod crypto;
pub mod delivery;
pub mod dev;
pub mod domain;
pub mod error_code;
pub mod events;
pub mod group_commit;
pub mod http;
pub mod mcp;
pub mod openapi;
pub mod ratelimit;
pub mod settings;
pub mod store;
pub mod whatsapp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AuthSettings, Authenticator};
use crate::crypto::Sealer;
use crate::delivery::{DeliverySettings, Worker};
use crate::domain::PhoneE164;
use crate::events::{Dispatcher, EventSettings};
use crate::http::{AppState, WebhookSecrets};
use crate::ratelimit::RateLimiter;
use crate::settings::Settings;
use crate::store::Store;
use crate::whatsapp::GraphClient;
use crate::whatsapp::sandbox::Sandbox;

/// How long a stopping replica waits, after its grace, to tell the other
/// replicas of its last changes (a notification takes milliseconds).
const SIGNALS_FLUSH: Duration = Duration::from_secs(1);

/// Where the built-in Graph API simulator is mounted when the app hosts it.
pub const SANDBOX_GRAPH_PATH: &str = "/_sandbox/graph";

pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    state: AppState,
    worker: Arc<Worker>,
    dispatcher: Arc<Dispatcher>,
    background_delivery: bool,
    /// Turns true on shutdown: the worker stops claiming, `?wait` answers.
    stopping: watch::Sender<bool>,
    shutdown_grace: Duration,
}

impl App {
    /// Checks the settings, opens the store (applying migrations) and binds the
    /// listener. With a sandbox, the app hosts it and talks to it as its Graph API.
    pub async fn build(settings: &Settings, sandbox: Option<Sandbox>) -> Result<Self, String> {
        let address = settings.check_for_serve()?;
        let listener = TcpListener::bind(address).await.map_err(|e| format!("ACTIOND_LISTEN: cannot bind {address}: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let graph_url = match sandbox {
            Some(_) => format!("http://{address}{SANDBOX_GRAPH_PATH}"),
            None => settings.whatsapp_graph_url.clone(),
        };
        let encryption_key = settings.encryption_key.as_deref().ok_or("ACTIOND_ENCRYPTION_KEY is missing")?;
        PhoneE164::load_rules_in_background();
        let store = Arc::new(Store::open(&settings.database_url, settings.database_max_connections as usize).await?);
        let graph = GraphClient::new(&graph_url, &settings.whatsapp_api_version)?;
        let sealer = Sealer::from_base64(encryption_key)?;
        let worker = Arc::new(Worker::new(
            Arc::clone(&store),
            graph.clone(),
            sealer.clone(),
            DeliverySettings {
                max_attempts: settings.delivery_max_attempts,
                first_backoff: Duration::from_millis(settings.delivery_backoff_ms),
                sender_mps: settings.sender_mps,
                reconcile_after: Duration::from_millis(settings.delivery_reconcile_ms),
                lease: Duration::from_millis(settings.delivery_lease_ms),
                retention: Duration::from_secs(u64::from(settings.retention_days) * 86_400),
            },
        ));
        let event_settings =
            EventSettings { allow_local: settings.events_allow_local.unwrap_or(false), retry_scale: settings.events_retry_scale };
        let dispatcher = Arc::new(Dispatcher::new(Arc::clone(&store), sealer.clone(), event_settings)?);
        let (stopping, stopped) = watch::channel(false);
        let state = AppState::new(http::Shared {
            store: Arc::clone(&store),
            graph,
            auth: Authenticator::new(AuthSettings {
                secret: settings.jwt_secret.as_deref(),
                jwks_url: settings.jwt_jwks_url.as_deref(),
                issuer: settings.jwt_issuer.as_deref(),
                audience: settings.jwt_audience.as_deref(),
            })?,
            sealer,
            limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            metrics: metrics_handle(),
            signals: store.signals(),
            stopping: stopped,
            webhook: WebhookSecrets {
                app_secret: settings.whatsapp_app_secret.clone(),
                verify_token: settings.whatsapp_verify_token.clone(),
            },
            waits: http::waits::WaitLimits::new(settings.max_waits_per_tenant),
            events: event_settings,
        });
        let router = http::router(state.clone(), sandbox.map(|sandbox| (SANDBOX_GRAPH_PATH, sandbox)));
        tracing::info!(%address, "listening");
        let shutdown_grace = Duration::from_millis(settings.shutdown_grace_ms);
        Ok(Self { listener, address, router, state, worker, dispatcher, background_delivery: true, stopping, shutdown_grace })
    }

    /// Leaves delivery to explicit `Worker::run_once` and
    /// `Dispatcher::run_once` calls: the test seam.
    pub fn without_background_delivery(mut self) -> Self {
        self.background_delivery = false;
        self
    }

    pub fn worker(&self) -> Arc<Worker> {
        Arc::clone(&self.worker)
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::clone(&self.dispatcher)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then at once stops taking
    /// connections and claiming jobs, answers `?wait` requests as things
    /// stand, and gives the requests and sends in flight the shutdown grace
    /// to finish. An error when the grace ran out with work abandoned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
        let stopped = self.stopping.subscribe();
        let worker = self.background_delivery.then(|| tokio::spawn(Arc::clone(&self.worker).run(stopped.clone())));
        let dispatcher = self.background_delivery.then(|| tokio::spawn(Arc::clone(&self.dispatcher).run(stopped.clone())));
        let server = tokio::spawn(http::server::serve(self.listener, self.router, stopped));
        let rechecks = tokio::spawn(Arc::clone(&self.state.store).recheck_waiters());
        let upkeep = tokio::spawn(metrics_upkeep(self.state.metrics.clone()));
        shutdown.await;
        let _ = self.stopping.send(true);
        rechecks.abort();
        upkeep.abort();
        // Events under way need no grace: unrecorded, they are delivered again.
        if let Some(dispatcher) = dispatcher {
            dispatcher.abort();
        }
        let finished = tokio::time::timeout(self.shutdown_grace, async {
            let served = server.await;
            if let Some(worker) = worker {
                let _ = worker.await;
            }
            served
        })
        .await;
        self.state.store.flush_signals(SIGNALS_FLUSH).await;
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("the server task failed: {error}")),
            Err(_) => Err(format!(
                "the shutdown grace ({} ms, ACTIOND_SHUTDOWN_GRACE_MS) ran out with requests or sends under way; they were abandoned",
                self.shutdown_grace.as_millis()
            )),
        }
    }
}

/// The recorder keeps every histogram sample until a scrape renders it, so
/// a server nobody scrapes grew by each request's durations (about 9 MB in 5 s
/// of trivial requests): they are folded into the histograms every second.
async fn metrics_upkeep(metrics: PrometheusHandle) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        metrics.run_upkeep();
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
