//! The request context: a fresh ctx_id per request, in the response body (via
//! `ctx_id()`), in the `X-Request-ID` header, and on every log line of the
//! request through its tracing span. Also where each request is measured.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

tokio::task_local! {
    static CTX_ID: Uuid;
}

/// The ctx_id of the request being served.
pub fn ctx_id() -> Uuid {
    CTX_ID.try_with(|id| *id).unwrap_or_else(|_| Uuid::new_v4())
}

/// The method as a metric label: one of the standard nine, else `other`, so
/// that clients inventing methods cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    STANDARD.into_iter().find(|standard| *standard == method.as_str()).unwrap_or("other")
}

pub async fn request_context(request: Request, next: Next) -> Response {
    let ctx_id = Uuid::new_v4();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let span = tracing::info_span!("request", %ctx_id, method = %method, route = %route, tenant = tracing::field::Empty);
    let started = Instant::now();

    let mut response = CTX_ID.scope(ctx_id, next.run(request).instrument(span.clone())).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    response.headers_mut().insert("x-request-id", HeaderValue::from_str(&ctx_id.to_string()).expect("a UUID is a header value"));
    metrics::counter!("actiond_http_requests_total", "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    metrics::histogram!("actiond_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    span.in_scope(|| tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished"));
    response
}
