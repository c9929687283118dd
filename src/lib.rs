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
pub mod http;
pub mod openapi;
pub mod ratelimit;
pub mod settings;
pub mod store;
pub mod whatsapp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::auth::{AuthSettings, Authenticator};
use crate::crypto::Sealer;
use crate::http::AppState;
use crate::ratelimit::RateLimiter;
use crate::settings::Settings;
use crate::whatsapp::GraphClient;
use crate::whatsapp::sandbox::Sandbox;

/// Where the built-in Graph API simulator is mounted when the app hosts it.
pub const SANDBOX_GRAPH_PATH: &str = "/_sandbox/graph";

pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    state: AppState,
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
        let state = AppState {
            store: store::open(&settings.database_url)?,
            graph: GraphClient::new(&graph_url, &settings.whatsapp_api_version)?,
            auth: Arc::new(Authenticator::new(AuthSettings {
                secret: settings.jwt_secret.as_deref(),
                jwks_url: settings.jwt_jwks_url.as_deref(),
                issuer: settings.jwt_issuer.as_deref(),
                audience: settings.jwt_audience.as_deref(),
            })?),
            sealer: Sealer::from_base64(encryption_key)?,
            limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst).map(Arc::new),
            metrics: metrics_handle(),
        };
        let sandbox_routes = sandbox.map(|sandbox| Router::new().nest(SANDBOX_GRAPH_PATH, sandbox.router()));
        let router = http::router(state.clone(), sandbox_routes);
        tracing::info!(%address, "listening");
        Ok(Self { listener, address, router, state })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops taking connections and
    /// finishes the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await
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
