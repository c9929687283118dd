//! Successful answers: `{ctx_id, data, message?}`, and the list envelope.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::context::ctx_id;
use crate::store::Page;

pub const PROCESSED: &str = "Request processed successfully";

#[derive(Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// The request's context id, also in the X-Request-ID header.
    pub ctx_id: Uuid,
    pub data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "Request processed successfully")]
    pub message: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub current_page: u32,
    pub per_page: u32,
    pub total_records: u64,
    pub total_pages: u64,
    pub has_next: bool,
}

/// `data` with the envelope; `message` as the GET/PUT/PATCH/DELETE answers carry it.
pub fn ok<T: Serialize>(data: T) -> Response {
    respond(StatusCode::OK, data, Some(PROCESSED), &[])
}

pub fn respond<T: Serialize>(status: StatusCode, data: T, message: Option<&str>, headers: &[(HeaderName, String)]) -> Response {
    let body = Envelope { ctx_id: ctx_id(), data, message: message.map(str::to_owned) };
    let mut response = (status, Json(body)).into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

pub fn list<T: Serialize>(items: Vec<T>, total: u64, page: Page) -> Response {
    let total_pages = total.div_ceil(u64::from(page.size));
    let pagination = Pagination {
        current_page: page.number,
        per_page: page.size,
        total_records: total,
        total_pages,
        has_next: u64::from(page.number) < total_pages,
    };
    ok(Listing { data: items, pagination })
}
