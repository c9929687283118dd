//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document
//! and the interactive reference page.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::context::ctx_id;
use super::error::{ApiError, ErrorBody};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub ctx_id: Uuid,
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz", summary = "The process is alive",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { ctx_id: ctx_id(), status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    summary = "The database is reachable and every migration applied",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.store.ready().await.map_err(ApiError::service_unavailable)?;
    Ok(Json(Health { ctx_id: ctx_id(), status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    summary = "Prometheus metrics: requests by route and status, latencies",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.store.report_metrics();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], crate::openapi::document()).into_response()
}

#[utoipa::path(get, path = "/docs", tag = "operations", operation_id = "docs", summary = "Interactive API reference",
    responses((status = 200, description = "An HTML page", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
