//! The one error type of the HTTP layer. Every failure a client sees is built
//! here: `{ctx_id, detail, errors[]}`, a stable code on each entry. A 5xx tells
//! the client nothing internal; its cause is logged once, with the ctx_id.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::context::ctx_id;
use crate::domain::FieldError;
use crate::error_code::ErrorCode;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub ctx_id: Uuid,
    /// One line a person can act on.
    pub detail: String,
    /// Every violation found, each with its field and stable code.
    pub errors: Vec<FieldError>,
}

impl ApiError {
    fn new(status: StatusCode, detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self { status, detail: detail.into(), errors, retry_after: None }
    }

    fn single(status: StatusCode, field: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(status, message.clone(), vec![FieldError::new(field, code, message)])
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// 400 listing every violation.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.dedup();
        let detail = match errors.as_slice() {
            [only] => format!("{}: {}", only.field, only.message),
            _ => format!("{} problems in the request: {}", errors.len(), fields.join(", ")),
        };
        Self::new(StatusCode::BAD_REQUEST, detail, errors)
    }

    /// This 400 with `other`'s violations of fields it does not name after
    /// its own, when both are 400s; otherwise this error as it is.
    pub fn and(self, other: ApiError) -> Self {
        if self.status != StatusCode::BAD_REQUEST || other.status != StatusCode::BAD_REQUEST {
            return self;
        }
        let mut errors = self.errors;
        for error in other.errors {
            error.add_once(&mut errors);
        }
        Self::validation(errors)
    }

    pub fn bad_request(field: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::single(StatusCode::BAD_REQUEST, field, code, message)
    }

    pub fn not_found(field: &str, message: impl Into<String>) -> Self {
        Self::single(StatusCode::NOT_FOUND, field, ErrorCode::NotFound, message)
    }

    pub fn method_not_allowed() -> Self {
        Self::single(StatusCode::METHOD_NOT_ALLOWED, "method", ErrorCode::MethodNotAllowed, "this route does not take that method")
    }

    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::single(StatusCode::UNAUTHORIZED, "Authorization", ErrorCode::InvalidToken, reason)
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::single(StatusCode::FORBIDDEN, "Authorization", ErrorCode::InsufficientScope, format!("the token lacks the scope {scope}"))
    }

    pub fn forbidden_with(field: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::single(StatusCode::FORBIDDEN, field, code, message)
    }

    /// 401 for a webhook whose signature is missing or wrong.
    pub fn invalid_signature() -> Self {
        Self::single(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256",
            ErrorCode::InvalidSignature,
            "X-Hub-Signature-256 is missing or is not the HMAC-SHA256 of the body under the app secret",
        )
    }

    pub fn conflict(field: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::single(StatusCode::CONFLICT, field, code, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::single(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {} KiB", limit / 1024),
        )
    }

    /// The body missed its deadline; the connection closes after the answer.
    pub fn request_timeout(reason: impl Into<String>) -> Self {
        Self::single(StatusCode::REQUEST_TIMEOUT, "body", ErrorCode::RequestTimeout, reason)
    }

    pub fn unsupported_media_type() -> Self {
        Self::single(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        )
    }

    pub fn rate_limited(wait: Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut error = Self::single(
            StatusCode::TOO_MANY_REQUESTS,
            "Authorization",
            ErrorCode::RateLimited,
            format!("the tenant's request rate limit is spent; retry after {seconds} s"),
        );
        error.retry_after = Some(seconds);
        error
    }

    pub fn too_many_waits(limit: u32) -> Self {
        let mut error = Self::single(
            StatusCode::TOO_MANY_REQUESTS,
            "wait",
            ErrorCode::TooManyWaits,
            format!("the tenant already holds {limit} ?wait requests open on this server; retry, or poll without wait"),
        );
        error.retry_after = Some(1);
        error
    }

    pub fn graph_unavailable(reason: impl std::fmt::Display) -> Self {
        tracing::warn!(%reason, "the Graph API could not be used");
        Self::single(
            StatusCode::BAD_GATEWAY,
            "graph",
            ErrorCode::GraphUnavailable,
            "Meta's Graph API could not be reached or answered unusably; try again shortly",
        )
    }

    pub fn service_unavailable(reason: impl std::fmt::Display) -> Self {
        tracing::error!(%reason, "service unavailable");
        Self::single(
            StatusCode::SERVICE_UNAVAILABLE,
            "service",
            ErrorCode::ServiceUnavailable,
            "the service cannot serve requests right now",
        )
    }

    /// A failure that is ours, not the client's: logged here, once, and
    /// answered without internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::single(
            StatusCode::INTERNAL_SERVER_ERROR,
            "service",
            ErrorCode::InternalError,
            "an internal error occurred; quote the ctx_id when you report it",
        )
    }
}

/// Two independent checks as one: both values, or every failure in one
/// answer (`ApiError::and`), so that one mistake hides no other.
pub fn join<A, B>(a: Result<A, ApiError>, b: Result<B, ApiError>) -> Result<(A, B), ApiError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(failed), Ok(_)) | (Ok(_), Err(failed)) => Err(failed),
        (Err(failed), Err(also)) => Err(failed.and(also)),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::service_unavailable(error),
            StoreError::Internal(_) => Self::internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bearer_refused = self.errors.iter().any(|e| e.code == ErrorCode::InvalidToken);
        let signature_refused = self.errors.iter().any(|e| e.code == ErrorCode::InvalidSignature);
        let body = ErrorBody { ctx_id: ctx_id(), detail: self.detail, errors: self.errors };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        // A 401 names what would be accepted (RFC 9110 §15.5.2).
        if bearer_refused {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        } else if signature_refused {
            let challenge = "Signature realm=\"whatsapp-webhook\", header=\"X-Hub-Signature-256\", algorithm=\"hmac-sha256\"";
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
