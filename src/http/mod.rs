//! The HTTP API: routes, middleware and the shared state handlers see.

pub mod actions;
pub mod context;
pub mod endpoints;
pub mod error;
pub mod executions;
pub mod extract;
pub mod ops;
pub mod preview;
pub mod response;
pub mod sandbox;
pub mod senders;
pub mod server;
pub mod waits;
pub mod webhook;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Authenticator;
use crate::crypto::Sealer;
use crate::ratelimit::RateLimiter;
use crate::store::{Signals, Store};
use crate::whatsapp::GraphClient;
use crate::whatsapp::sandbox::Sandbox;
use error::ApiError;

/// What every handler shares, behind one `Arc`: axum clones the state for
/// each request's extractors and middleware, and a clone is then one count
/// rather than a copy of each field (the secrets' strings among them).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<Store>,
    pub graph: GraphClient,
    pub auth: Authenticator,
    pub sealer: Sealer,
    pub limiter: Option<RateLimiter>,
    pub metrics: PrometheusHandle,
    /// Wakes `?wait` requests when an execution changes, on any replica.
    pub signals: Arc<Signals>,
    /// True once the process is shutting down: `?wait` answers at once.
    pub stopping: watch::Receiver<bool>,
    pub webhook: WebhookSecrets,
    pub waits: Arc<waits::WaitLimits>,
    pub events: crate::events::EventSettings,
}

/// What Meta's webhook is checked with; absent values refuse every call.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
}

/// Every route; with the dev sandbox, its Graph API stand-in under
/// `graph_path` and `POST /_sandbox/reply` too.
pub fn router(state: AppState, sandbox: Option<(&str, Sandbox)>) -> Router {
    let mut api = Router::new()
        .route("/v2/_actions", post(actions::create).get(actions::list))
        .route("/v2/_actions/{action_id}", get(actions::get).put(actions::replace).patch(actions::patch).delete(actions::delete))
        .route("/v2/_whatsapp/senders", post(senders::register).get(senders::list))
        .route("/v2/_whatsapp/senders/{phone_number_id}", get(senders::get).delete(senders::delete))
        .route("/v2/_whatsapp/senders/{phone_number_id}/_sync", post(senders::sync))
        .route("/v2/_whatsapp/templates", get(senders::templates))
        .route("/v2/_actions/{action_id}/_execute", post(executions::execute))
        .route("/v2/_actions/_preview", post(preview::preview_body))
        .route("/v2/_actions/{action_id}/_preview", post(preview::preview_action))
        .route("/v2/_webhook_endpoints", post(endpoints::create).get(endpoints::list))
        .route("/v2/_webhook_endpoints/{endpoint_id}", get(endpoints::get).patch(endpoints::patch).delete(endpoints::delete))
        .route("/v2/_webhook_endpoints/{endpoint_id}/_rotate_secret", post(endpoints::rotate_secret))
        .route("/v2/_webhook_endpoints/{endpoint_id}/_test", post(endpoints::test))
        .route("/v2/_webhook_endpoints/{endpoint_id}/attempts", get(endpoints::attempts))
        .route("/v2/_executions", get(executions::list))
        .route("/v2/_executions/{execution_id}", get(executions::get));
    api = api.route_service("/mcp", middleware::from_fn(crate::mcp::gate).layer(crate::mcp::service(state.clone())));
    if let Some((_, sandbox)) = &sandbox {
        api = api.route("/_sandbox/reply", post(sandbox::reply).layer(Extension(sandbox.clone())));
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let mut router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/docs", get(ops::docs))
        .route("/v2/_whatsapp/webhook", get(webhook::verify).post(webhook::receive))
        .merge(api)
        .with_state(state);
    if let Some((graph_path, sandbox)) = sandbox {
        router = router.nest(graph_path, sandbox.router());
    }
    router
        .fallback(|| async { ApiError::not_found("path", "no such route; see /docs") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("a handler panicked").into_response()))
        .layer(middleware::from_fn(context::request_context))
}

/// Verifies the bearer token (with or without the `Bearer ` prefix), then
/// spends one request of the tenant's rate limit.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).ok_or_else(|| ApiError::unauthorized("the Authorization header is missing"))?;
    let value = header.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value,
    };
    let caller = state.auth.verify(token).await.map_err(ApiError::unauthorized)?;
    tracing::Span::current().record("tenant", caller.tenant.as_str());
    if let Some(limiter) = &state.limiter {
        limiter.check(caller.tenant.as_str()).map_err(ApiError::rate_limited)?;
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
