//! A local simulator of the parts of Meta's Graph API that actiond calls. Dev
//! mode mounts it under `/_sandbox/graph`; the tests serve it on its own port.
//! It answers as Meta does, errors included, so the code under test is the code
//! that runs against Meta.

use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub const SANDBOX_PHONE_NUMBER_ID: &str = "650175178190170";
pub const SANDBOX_WABA_ID: &str = "102290129340398";
pub const SANDBOX_ACCESS_TOKEN: &str = "sandbox-access-token";
pub const SANDBOX_DISPLAY_NUMBER: &str = "15550783881";

#[derive(Clone)]
pub struct Sandbox {
    state: Arc<Mutex<SandboxState>>,
}

struct SandboxState {
    phone_number_id: String,
    waba_id: String,
    access_token: String,
    templates: Vec<Value>,
    page_size: usize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let state = SandboxState {
            phone_number_id: SANDBOX_PHONE_NUMBER_ID.into(),
            waba_id: SANDBOX_WABA_ID.into(),
            access_token: SANDBOX_ACCESS_TOKEN.into(),
            templates: default_templates(),
            page_size: 25,
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut SandboxState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Replaces the WABA's templates (Meta's template objects).
    pub fn set_templates(&self, templates: Vec<Value>) {
        self.with_state(|s| s.templates = templates);
    }

    /// Sets a template's status in every language, as a Meta review would.
    pub fn set_template_status(&self, name: &str, status: &str) {
        self.with_state(|s| {
            for template in s.templates.iter_mut().filter(|t| t["name"] == name) {
                template["status"] = json!(status);
            }
        });
    }

    /// Templates per page of `message_templates`, to exercise pagination.
    pub fn set_page_size(&self, page_size: usize) {
        self.with_state(|s| s.page_size = page_size.max(1));
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{node}", get(node))
            .route("/{version}/{node}/message_templates", get(message_templates))
            .with_state(self.clone())
    }
}

/// Meta's error object, as its Graph API returns it.
fn meta_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": format!("({code}) {message}"), "type": "OAuthException", "code": code,
                                "fbtrace_id": "AsandboxTrace"}});
    (status, Json(body)).into_response()
}

fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    sandbox.with_state(|s| given == Some(s.access_token.as_str()))
}

fn invalid_token() -> Response {
    meta_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token - Cannot parse access token")
}

fn unknown_node(node: &str) -> Response {
    meta_error(
        StatusCode::BAD_REQUEST,
        100,
        &format!(
            "Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
        ),
    )
}

async fn node(State(sandbox): State<Sandbox>, Path((_version, node)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if !authorized(&sandbox, &headers) {
        return invalid_token();
    }
    if node != sandbox.with_state(|s| s.phone_number_id.clone()) {
        return unknown_node(&node);
    }
    Json(json!({
        "id": node,
        "display_phone_number": SANDBOX_DISPLAY_NUMBER,
        "verified_name": "actiond Sandbox",
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"}
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<usize>,
    limit: Option<usize>,
}

async fn message_templates(
    State(sandbox): State<Sandbox>,
    Path((_version, node)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sandbox, &headers) {
        return invalid_token();
    }
    let (waba_id, templates, page_size) = sandbox.with_state(|s| (s.waba_id.clone(), s.templates.clone(), s.page_size));
    if node != waba_id {
        return unknown_node(&node);
    }
    let start = page.after.unwrap_or(0).min(templates.len());
    let end = (start + page.limit.unwrap_or(page_size).min(page_size)).min(templates.len());
    let mut paging = json!({"cursors": {"before": start.to_string(), "after": end.to_string()}});
    if end < templates.len() {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        paging["next"] = json!(format!("http://{host}{}?limit={page_size}&after={end}", uri.path()));
    }
    Json(json!({"data": templates[start..end], "paging": paging})).into_response()
}

/// The sandbox WABA's templates: one per shape actiond must fill, and one PAUSED.
fn default_templates() -> Vec<Value> {
    vec![
        json!({"id": "1000000000000001", "name": "call_permission_request", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Hi {{1}}, may we call you back about your request? Reply YES or NO.",
             "example": {"body_text": [["Ana"]]}},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Yes"}, {"type": "QUICK_REPLY", "text": "No"}]}
        ]}),
        json!({"id": "1000000000000002", "name": "order_update", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "POSITIONAL", "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1042"]}},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is {{3}}.",
             "example": {"body_text": [["Ana", "A-1042", "on its way"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "URL", "text": "Track order", "url": "https://shop.example.com/track/{{1}}", "example": ["https://shop.example.com/track/A-1042"]},
                {"type": "QUICK_REPLY", "text": "Talk to an agent"}
            ]}
        ]}),
        json!({"id": "1000000000000003", "name": "appointment_reminder", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "NAMED", "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://example.com/clinic.jpg"]}},
            {"type": "BODY", "text": "Hello {{first_name}}, see you on {{date}}. Can you make it?",
             "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ana"}, {"param_name": "date", "example": "May 3"}]}},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Confirm"}, {"type": "QUICK_REPLY", "text": "Reschedule"}]}
        ]}),
        json!({"id": "1000000000000004", "name": "appointment_reminder", "language": "es", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "NAMED", "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://example.com/clinic.jpg"]}},
            {"type": "BODY", "text": "Hola {{first_name}}, te esperamos el {{date}}. ¿Puedes venir?"},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Confirmar"}, {"type": "QUICK_REPLY", "text": "Cambiar"}]}
        ]}),
        json!({"id": "1000000000000005", "name": "discount_code", "language": "en_US", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Thanks for calling, {{1}}! Here is {{2}} off your next order."},
            {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "example": "SAVE10"}]}
        ]}),
        json!({"id": "1000000000000006", "name": "summer_promo", "language": "en", "status": "PAUSED",
        "category": "MARKETING", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Our summer sale starts today, {{1}}!"}
        ]}),
    ]
}
