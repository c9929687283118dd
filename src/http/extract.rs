//! Extractors that turn a request into typed input or a clear 4xx: the caller,
//! a JSON object body, path ids and query parameters.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::server::BodyTimedOut;
use crate::auth::{Caller, Scope};
use crate::domain::{FieldError, NUL_MESSAGE, holds_nul};
use crate::error_code::ErrorCode;
use crate::store::Page;

pub const BODY_LIMIT: usize = 64 * 1024;
const IDEMPOTENCY_KEY_MAX: usize = 255;
pub const PER_PAGE_DEFAULT: u32 = 10;
pub const PER_PAGE_MAX: u32 = 100;
/// The largest signed 32-bit number, as the OpenAPI document's `int32` says.
const PAGE_MAX: u32 = i32::MAX as u32;

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::internal("a route that needs a caller has no auth layer"))
    }
}

/// A scope a route needs, as a type, so the check runs as an extractor:
/// before the body is read, and impossible to forget in a handler.
pub trait RequiredScope {
    const SCOPE: Scope;
}

macro_rules! required_scopes {
    ($($name:ident),*) => {$(
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = Scope::$name;
        }
    )*};
}

required_scopes!(ActionsRead, ActionsWrite, ActionsExecute, WhatsappAdmin);

/// The caller, proven to hold scope `S`; 403 otherwise.
pub struct Authorized<S>(pub Caller, pub PhantomData<S>);

impl<S: RequiredScope, St: Send + Sync> FromRequestParts<St> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.has(S::SCOPE) { Ok(Self(caller, PhantomData)) } else { Err(ApiError::forbidden(S::SCOPE.as_str())) }
    }
}

/// A JSON object body sent as `application/json` (or `application/*+json`),
/// at most 64 KiB. Its fields are read by the domain's collecting reader.
pub struct JsonObject(pub Map<String, Value>);

/// Like `JsonObject`, but an empty body reads as `{}`.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let media_type = json_media_type(request.headers());
        let bytes = read_body(request, BODY_LIMIT).await?;
        // Empty means zero bytes or JSON's whitespace alone: no value is sent,
        // so it is no body whatever the Content-Type says (clients and
        // proxies add `application/json` to bodiless requests).
        if bytes.iter().all(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r')) {
            return Ok(Self(Map::new()));
        }
        media_type?;
        match parse_json(&bytes)? {
            Value::Object(object) => Ok(Self(object)),
            // `null` says "nothing", as no body does (the document's body is optional).
            Value::Null => Ok(Self(Map::new())),
            _ => Err(not_an_object()),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        match json_body(request).await? {
            Value::Object(object) => Ok(Self(object)),
            _ => Err(not_an_object()),
        }
    }
}

/// The body as JSON, sent as `application/json` (or `application/*+json`),
/// at most 64 KiB.
async fn json_body(request: Request) -> Result<Value, ApiError> {
    json_media_type(request.headers())?;
    let bytes = read_body(request, BODY_LIMIT).await?;
    parse_json(&bytes)
}

/// 415 unless the Content-Type is JSON.
fn json_media_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) { Ok(()) } else { Err(ApiError::unsupported_media_type()) }
}

/// Whether the Content-Type is `application/json` or `application/*+json`.
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(bytes)
        .map_err(|error| ApiError::bad_request("body", ErrorCode::InvalidJson, format!("the body is not valid JSON: {error}")))
}

fn not_an_object() -> ApiError {
    ApiError::bad_request("body", ErrorCode::InvalidJson, "the body must be a JSON object")
}

/// The whole body, at most `limit` bytes: 413 before reading when its
/// declared length is more, or as soon as more arrives (what came is not
/// kept); 408 when it missed its deadline (`server::Deadline`).
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut chunks = request.into_body().into_data_stream();
    let mut collected = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            if caused_by::<BodyTimedOut>(&error) {
                ApiError::request_timeout(BodyTimedOut.to_string())
            } else {
                ApiError::bad_request("body", ErrorCode::InvalidJson, "the body broke off before its end")
            }
        })?;
        if collected.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<E>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The `Idempotency-Key` header, when given: 1-255 printable ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_MAX && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key",
            ErrorCode::InvalidIdempotencyKey,
            format!("must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters without spaces"),
        )),
    }
}

/// An action id from the path. Anything that is not a UUID names no action:
/// 404, exactly as an id that does not exist.
pub struct ActionId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ActionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        uuid_in_path(parts, state, action_not_found).await.map(Self)
    }
}

pub fn action_not_found() -> ApiError {
    ApiError::not_found("action_id", "no action with this id")
}

/// An execution id from the path; anything not a UUID is a 404 too.
pub struct ExecutionId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ExecutionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        uuid_in_path(parts, state, execution_not_found).await.map(Self)
    }
}

pub fn execution_not_found() -> ApiError {
    ApiError::not_found("execution_id", "no execution with this id")
}

/// The route's one path parameter as a UUID, or the resource's 404.
async fn uuid_in_path<S: Send + Sync>(parts: &mut Parts, state: &S, not_found: fn() -> ApiError) -> Result<Uuid, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found())?;
    parse_uuid(&raw).ok_or_else(not_found)
}

/// A UUID in its hyphenated form, the one the API writes and its document's
/// `format: uuid` names (not the braced, URN or bare-hex forms).
pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok().filter(|_| raw.len() == 36)
}

/// A whole number written in decimal digits only, as the document's
/// `integer` parameters are (no sign, no spaces).
pub fn whole_number(raw: &str) -> Option<u32> {
    raw.bytes().all(|b| b.is_ascii_digit()).then(|| raw.parse().ok()).flatten()
}

/// An event endpoint id from the path; anything not a UUID is a 404 too.
pub struct EndpointId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EndpointId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        uuid_in_path(parts, state, endpoint_not_found).await.map(Self)
    }
}

pub fn endpoint_not_found() -> ApiError {
    ApiError::not_found("endpoint_id", "no event endpoint with this id")
}

/// A WhatsApp phone-number ID from the path; one holding NUL (`%00`), which
/// no stored id can, names no sender.
pub struct PhoneNumberId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PhoneNumberId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| sender_not_found())?;
        if holds_nul(&raw) {
            return Err(sender_not_found());
        }
        Ok(Self(raw))
    }
}

pub fn sender_not_found() -> ApiError {
    ApiError::not_found("phone_number_id", "no sender with this phone-number ID")
}

/// `page` and `per_page`, as the OpenAPI document gives them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct PageParams {
    /// From 1; default 1.
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// 1-100; default 10.
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// `?wait=N`, as the OpenAPI document gives it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct WaitParams {
    /// Seconds to hold the answer until the execution settles, 0-60.
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u32>,
}

/// The `Idempotency-Key` header, as the OpenAPI document gives it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct IdempotencyKeyHeader {
    /// 1-255 printable ASCII characters without spaces. The same key within 24 h repeats the first answer; after that it starts anew.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// Query parameters, read with every violation collected.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    pub errors: Vec<FieldError>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let (pairs, refused): (Vec<(String, String)>, _) =
            form_urlencoded::parse(query.as_bytes()).into_owned().partition(|(name, value)| !holds_nul(name) && !holds_nul(value));
        let errors = refused.into_iter().map(|(name, _)| FieldError::new(name, ErrorCode::InvalidCharacter, NUL_MESSAGE)).collect();
        Ok(Self { pairs, errors })
    }
}

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn invalid(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(name, ErrorCode::InvalidQueryParameter, message));
    }

    fn number(&mut self, name: &str, default: u32, min: u32, max: u32) -> u32 {
        let Some(raw) = self.get(name) else { return default };
        match whole_number(raw) {
            Some(value) if (min..=max).contains(&value) => value,
            _ => {
                let message = format!("'{raw}' must be a whole number from {min} to {max}");
                self.invalid(name, message);
                default
            }
        }
    }

    /// `page` (from 1) and `per_page` (1-100, default 10).
    pub fn page(&mut self) -> Page {
        let number = self.number("page", 1, 1, PAGE_MAX);
        let size = self.number("per_page", PER_PAGE_DEFAULT, 1, PER_PAGE_MAX);
        Page { number, size }
    }

    /// The parameter read by `parse`, or `None` with a violation naming why.
    pub fn parsed<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Option<T>, why: impl FnOnce(&str) -> String) -> Option<T> {
        let raw = self.get(name)?.to_owned();
        let parsed = parse(&raw);
        if parsed.is_none() {
            self.invalid(name, why(&raw));
        }
        parsed
    }

    /// A parameter that must be given, and not empty: `None` with a
    /// `missing_field` violation, unless it was already refused for a NUL.
    pub fn required(&mut self, name: &str) -> Option<String> {
        if let Some(value) = self.get(name).filter(|value| !value.is_empty()) {
            return Some(value.to_owned());
        }
        FieldError::new(name, ErrorCode::MissingField, "is required").add_once(&mut self.errors);
        None
    }

    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        let raw = self.get(name)?;
        match raw {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                let message = format!("'{raw}' must be true or false");
                self.invalid(name, message);
                None
            }
        }
    }

    /// Fails with every collected violation, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() { Ok(()) } else { Err(ApiError::validation(self.errors)) }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;

    async fn optional(content_type: Option<&str>, body: &'static str) -> Result<Map<String, Value>, ApiError> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(body)).unwrap();
        OptionalJsonObject::from_request(request, &()).await.map(|OptionalJsonObject(object)| object)
    }

    #[tokio::test]
    async fn an_optional_body_that_is_empty_is_no_body_whatever_its_content_type() {
        for content_type in [None, Some("application/json"), Some("text/plain")] {
            for body in ["", " \r\n\t"] {
                let read = optional(content_type, body).await;
                assert!(read.is_ok_and(|object| object.is_empty()), "{content_type:?} {body:?}");
            }
        }
        assert_eq!(optional(Some("application/json"), r#" {"a": 1} "#).await.unwrap()["a"], 1);
        assert_eq!(optional(Some("application/json"), "null").await.unwrap(), Map::new());
        assert_eq!(optional(None, "{}").await.unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(optional(Some("application/json"), "[]").await.unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
