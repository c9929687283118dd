//! `/v2/_whatsapp/webhook`: Meta's verification handshake and its events.
//! Events are checked against the raw bytes, applied once each, and answered
//! fast: Meta retries slow or failing endpoints for days.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{QueryParams, read_body};
use super::response::{self, Envelope};
use crate::error_code::ErrorCode;
use crate::whatsapp::webhook::{events, parse_signature, read_payload, signature_is_valid};

/// Meta batches up to 1,000 updates in one POST, 3 MiB at most.
const WEBHOOK_BODY_LIMIT: usize = 3 * 1024 * 1024;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Received {
    /// Events read from the payload (applied unless seen before).
    pub events: usize,
}

#[utoipa::path(get, path = "/v2/_whatsapp/webhook", tag = "whatsapp", operation_id = "verify_webhook",
    summary = "Meta's webhook verification handshake",
    params(
        ("hub.mode" = String, Query, description = "subscribe"),
        ("hub.verify_token" = String, Query, description = "Must equal ACTIOND_WHATSAPP_VERIFY_TOKEN"),
        ("hub.challenge" = String, Query, description = "Echoed back as plain text", min_length = 1, pattern = r"^[^\u0000]*$"),
    ),
    responses(
        (status = 200, description = "The challenge, as text/plain", content_type = "text/plain"),
        (status = 400, description = "hub.challenge missing or empty, or a parameter holding NUL", body = ErrorBody),
        (status = 403, description = "Wrong mode or verify token", body = ErrorBody),
    ))]
pub async fn verify(State(state): State<AppState>, mut query: QueryParams) -> Result<Response, ApiError> {
    let expected = state.webhook.verify_token.as_deref();
    let matches = query.get("hub.mode") == Some("subscribe") && expected.is_some() && query.get("hub.verify_token") == expected;
    if !matches {
        let message = "hub.mode must be subscribe and hub.verify_token must equal ACTIOND_WHATSAPP_VERIFY_TOKEN";
        return Err(ApiError::forbidden_with("hub.verify_token", ErrorCode::VerificationFailed, message));
    }
    // Read after the token is checked, so a caller without it learns nothing more.
    let challenge = query.required("hub.challenge");
    query.finish()?;
    // `required` gives None only with a violation recorded, which `finish` answered.
    Ok(([(CONTENT_TYPE, "text/plain")], challenge.unwrap_or_default()).into_response())
}

#[utoipa::path(post, path = "/v2/_whatsapp/webhook", tag = "whatsapp", operation_id = "receive_webhook",
    summary = "Events from Meta: statuses, replies, template status updates",
    description = "X-Hub-Signature-256 must be the HMAC-SHA256 of the raw body under ACTIOND_WHATSAPP_APP_SECRET. Each event is applied once however often Meta sends it; unknown ids are acknowledged and ignored.",
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC of the body>")),
    request_body(content = Object, description = "Meta's webhook payload", content_type = "application/json"),
    responses(
        (status = 200, description = "Received", body = Envelope<Received>),
        (status = 401, description = "Signature missing or wrong", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s", body = ErrorBody),
        (status = 400, description = "The body broke off before its end", body = ErrorBody),
        (status = 413, description = "Body over 3 MiB (3,145,728 bytes)", body = ErrorBody),
        (status = 500, description = "An internal error (internal_error): Meta retries", body = ErrorBody),
        (status = 503, description = "The database is unreachable or refuses writes (service_unavailable): Meta retries", body = ErrorBody),
    ))]
pub async fn receive(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    // Everything that can refuse the request is checked before a byte of the
    // body is read: an unsigned flood costs no memory.
    let Some(app_secret) = state.webhook.app_secret.clone() else {
        tracing::warn!("a webhook arrived but ACTIOND_WHATSAPP_APP_SECRET is not set, so none can be verified");
        return Err(ApiError::invalid_signature());
    };
    let headers = request.headers();
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok()).and_then(parse_signature);
    let Some(signature) = signature else { return Err(ApiError::invalid_signature()) };
    let body = read_body(request, WEBHOOK_BODY_LIMIT).await?;
    if !signature_is_valid(&app_secret, &body, &signature) {
        return Err(ApiError::invalid_signature());
    }
    // What does not parse is acknowledged: Meta would resend the same bytes
    // for days, and nothing in them can be applied.
    let events = events(&read_payload(&body));
    let count = events.len();
    state.store.apply_webhook_events(events).await?;
    Ok(response::respond(StatusCode::OK, Received { events: count }, None, &[]))
}
