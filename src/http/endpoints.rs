//! `/v2/_webhook_endpoints`: where a tenant's events go (CONTRACT §10). An
//! endpoint's secret is shown when it is made and when it is rotated, never
//! again; its URL passes the SSRF rules of `crate::events::target`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ActionsRead, ActionsWrite, Authorized, EndpointId, JsonObject, PageParams, QueryParams, endpoint_not_found};
use super::response::{self, Envelope, Listing};
use crate::domain::{FieldError, Fields, char_len};
use crate::error_code::ErrorCode;
use crate::events::signature::generate_secret;
use crate::events::target::{self, TargetError};
use crate::events::{EventSettings, EventType};
use crate::openapi::fields;
use crate::store::{AttemptRecord, EndpointPatch, EndpointRecord, NewEndpoint};

pub const ENDPOINT_DESCRIPTION_MAX: usize = 1024;
/// How long a rotated-out secret still signs beside the new one.
const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct EndpointBody {
    #[schema(schema_with = fields::endpoint_url)]
    url: String,
    #[schema(schema_with = fields::event_types)]
    events: Option<Vec<EventType>>,
    #[schema(schema_with = fields::endpoint_description)]
    description: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct EndpointPatchBody {
    #[schema(schema_with = fields::endpoint_url)]
    url: Option<String>,
    /// `null` sends every type again.
    #[schema(schema_with = fields::event_types)]
    events: Option<Vec<EventType>>,
    #[schema(schema_with = fields::endpoint_description)]
    description: Option<String>,
    /// A disabled endpoint is sent nothing; enabling it resumes its undelivered events.
    disabled: Option<bool>,
}

/// An endpoint with its secret, as creation shows it once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointRecord,
    /// `whsec_` + base64 of 32 random bytes: verify signatures with it. Shown only now.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub id: Uuid,
    /// The new secret; the old one signs beside it for 24 h.
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuedTest {
    /// The test event's id: its `webhook-id` header and its entry in the attempts list.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventType,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedEndpoint {
    pub id: Uuid,
    pub deleted: bool,
}

/// The URL, checked against the SSRF rules: its form, then where it points.
async fn checked_url(fields: &mut Fields<'_, '_>, raw: &str, settings: EventSettings) -> Option<String> {
    match target::check(raw.trim(), settings.allow_local).await {
        Ok(url) => Some(url.to_string()),
        Err(TargetError::InvalidUrl(why)) => {
            fields.error("url", ErrorCode::InvalidUrl, why);
            None
        }
        Err(TargetError::Forbidden(why)) => {
            fields.error(
                "url",
                ErrorCode::ForbiddenWebhookTarget,
                format!("{why}: events go to public https:// endpoints only (ACTIOND_EVENTS_ALLOW_LOCAL lifts this for local work)"),
            );
            None
        }
    }
}

/// The event types in `events` (given, not null), each known, in order
/// without repeats. Every item is judged and its refusal reported in the
/// list's order: one of the wrong type does not hide an unknown name beside it.
fn event_types(fields: &mut Fields<'_, '_>) -> Option<Vec<EventType>> {
    let named = fields.optional_list("events", |name| {
        EventType::parse_subscribable(name).ok_or_else(|| {
            let known: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|kind| kind.as_str()).collect();
            (ErrorCode::UnknownEventType, format!("must be one of {}", known.join(", ")))
        })
    })?;
    if named.is_empty() {
        fields.error("events", ErrorCode::InvalidLength, "must name at least one event type, or be left out for every type");
        return None;
    }
    let mut kinds = Vec::with_capacity(named.len());
    for kind in named {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Some(kinds)
}

fn description(fields: &mut Fields<'_, '_>) -> Option<String> {
    let text = fields.optional_str("description")?.trim();
    if char_len(text) > ENDPOINT_DESCRIPTION_MAX {
        fields.error("description", ErrorCode::InvalidLength, format!("must be at most {ENDPOINT_DESCRIPTION_MAX} characters"));
        return None;
    }
    Some(text.to_owned())
}

#[utoipa::path(post, path = "/v2/_webhook_endpoints", tag = "events", operation_id = "create_webhook_endpoint",
    summary = "Register an event endpoint",
    description = "Events of the listed types (all when `events` is left out) are posted to `url`, signed per the Standard Webhooks specification with the `secret` this answer shows once. The URL must be `https://` and must not be or resolve to a loopback, private, link-local, multicast or otherwise internal address, unless the server runs with ACTIOND_EVENTS_ALLOW_LOCAL (as `serve --dev` does).",
    request_body = EndpointBody,
    responses(
        (status = 201, description = "Registered; the secret is shown only here and on rotation", body = Envelope<CreatedEndpoint>,
            headers(("Location" = String, description = "/v2/_webhook_endpoints/{id}")),
            links(
                ("GetWebhookEndpoint" = (operation_id = "get_webhook_endpoint", parameters(("endpoint_id" = "$response.body#/data/id")))),
                ("PatchWebhookEndpoint" = (operation_id = "patch_webhook_endpoint", parameters(("endpoint_id" = "$response.body#/data/id")))),
                ("DeleteWebhookEndpoint" = (operation_id = "delete_webhook_endpoint", parameters(("endpoint_id" = "$response.body#/data/id")))),
                ("RotateWebhookEndpointSecret" = (operation_id = "rotate_webhook_endpoint_secret", parameters(("endpoint_id" = "$response.body#/data/id")))),
                ("TestWebhookEndpoint" = (operation_id = "test_webhook_endpoint", parameters(("endpoint_id" = "$response.body#/data/id")))),
                ("ListWebhookEndpointAttempts" = (operation_id = "list_webhook_endpoint_attempts", parameters(("endpoint_id" = "$response.body#/data/id")))),
            )),
        (status = 400, description = "Invalid field: a malformed or forbidden URL, an unknown event type", body = ErrorBody),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut fields = Fields::new(&body, &mut errors);
    let url = match fields.required_str("url") {
        Some(raw) => checked_url(&mut fields, raw, state.events).await,
        None => None,
    };
    // `None` is every type when `events` is left out; when it was refused, the
    // error recorded answers the request before `events` is used.
    let events = if fields.object_has("events") { event_types(&mut fields) } else { None };
    let description = description(&mut fields);
    let (Some(url), true) = (url, errors.is_empty()) else { return Err(ApiError::validation(errors)) };
    let id = Uuid::now_v7();
    let secret = generate_secret();
    let endpoint = NewEndpoint {
        id,
        url,
        events,
        description: description.unwrap_or_default(),
        sealed_secret: state.sealer.seal(&secret, &id.to_string()),
    };
    let endpoint = state.store.create_endpoint(&caller.tenant, endpoint).await?;
    let location = (header::LOCATION, format!("/v2/_webhook_endpoints/{id}"));
    Ok(response::respond(StatusCode::CREATED, CreatedEndpoint { endpoint, secret }, Some(response::PROCESSED), &[location]))
}

#[utoipa::path(get, path = "/v2/_webhook_endpoints", tag = "events", operation_id = "list_webhook_endpoints",
    summary = "List the tenant's event endpoints",
    params(PageParams),
    responses(
        (status = 200, description = "A page of endpoints, newest first", body = Envelope<Listing<EndpointRecord>>),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    mut query: QueryParams,
) -> Result<Response, ApiError> {
    let page = query.page();
    query.finish()?;
    let (endpoints, total) = state.store.list_endpoints(&caller.tenant, page).await?;
    Ok(response::list(endpoints, total, page))
}

#[utoipa::path(get, path = "/v2/_webhook_endpoints/{endpoint_id}", tag = "events", operation_id = "get_webhook_endpoint",
    summary = "Get an event endpoint",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = Envelope<EndpointRecord>),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    EndpointId(id): EndpointId,
) -> Result<Response, ApiError> {
    Ok(response::ok(state.store.get_endpoint(&caller.tenant, id).await?.ok_or_else(endpoint_not_found)?))
}

#[utoipa::path(patch, path = "/v2/_webhook_endpoints/{endpoint_id}", tag = "events", operation_id = "patch_webhook_endpoint",
    summary = "Change an event endpoint",
    description = "A JSON merge patch: given fields replace the stored ones; `events: null` sends every type again, `description: null` clears it. A new `url` passes create's rules. Disabling pauses the endpoint's undelivered events; enabling resumes them at once.",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    request_body = EndpointPatchBody,
    responses(
        (status = 200, description = "The changed endpoint", body = Envelope<EndpointRecord>),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    EndpointId(id): EndpointId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    state.store.get_endpoint(&caller.tenant, id).await?.ok_or_else(endpoint_not_found)?;
    let patch = read_patch(&body, state.events).await?;
    let endpoint = state.store.update_endpoint(&caller.tenant, id, patch).await?.ok_or_else(endpoint_not_found)?;
    Ok(response::ok(endpoint))
}

/// A PATCH body as a merge patch: `null` resets a field to its default.
async fn read_patch(body: &Map<String, Value>, settings: EventSettings) -> Result<EndpointPatch, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut fields = Fields::new(body, &mut errors);
    let mut patch = EndpointPatch::default();
    match body.get("url") {
        None => {}
        Some(Value::Null) => fields.error("url", ErrorCode::MissingField, "cannot be removed: an endpoint needs a URL"),
        Some(_) => {
            if let Some(raw) = fields.optional_str("url") {
                patch.url = checked_url(&mut fields, raw, settings).await;
            }
        }
    }
    patch.events = match body.get("events") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => event_types(&mut fields).map(Some),
    };
    patch.description = match body.get("description") {
        Some(Value::Null) => Some(String::new()),
        _ => description(&mut fields),
    };
    patch.disabled = match body.get("disabled") {
        Some(Value::Null) => Some(false),
        _ => fields.optional_bool("disabled"),
    };
    if errors.is_empty() { Ok(patch) } else { Err(ApiError::validation(errors)) }
}

#[utoipa::path(delete, path = "/v2/_webhook_endpoints/{endpoint_id}", tag = "events", operation_id = "delete_webhook_endpoint",
    summary = "Delete an event endpoint",
    description = "Its undelivered events are dropped with it, and its attempts list.",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeletedEndpoint>),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    EndpointId(id): EndpointId,
) -> Result<Response, ApiError> {
    if !state.store.delete_endpoint(&caller.tenant, id).await? {
        return Err(endpoint_not_found());
    }
    Ok(response::ok(DeletedEndpoint { id, deleted: true }))
}

#[utoipa::path(post, path = "/v2/_webhook_endpoints/{endpoint_id}/_rotate_secret", tag = "events", operation_id = "rotate_webhook_endpoint_secret",
    summary = "Rotate an endpoint's signing secret",
    description = "Answers the new secret, shown only here. For 24 h every delivery carries two signatures, `v1,<new> v1,<old>`, so receivers can switch without losing an event.",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The new secret", body = Envelope<RotatedSecret>),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    EndpointId(id): EndpointId,
) -> Result<Response, ApiError> {
    let secret = generate_secret();
    let sealed = state.sealer.seal(&secret, &id.to_string());
    let overlap_until = crate::clock::now_ms() + ROTATION_OVERLAP_MS;
    if !state.store.rotate_endpoint_secret(&caller.tenant, id, sealed, overlap_until).await? {
        return Err(endpoint_not_found());
    }
    Ok(response::ok(RotatedSecret { id, secret }))
}

#[utoipa::path(post, path = "/v2/_webhook_endpoints/{endpoint_id}/_test", tag = "events", operation_id = "test_webhook_endpoint",
    summary = "Send a test event",
    description = "Queues a `webhook.test` event (`data` = `{endpoint_id}`) for this endpoint, whatever types it takes; it is delivered and retried like any event, and its attempts are listed.",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 202, description = "Queued", body = Envelope<QueuedTest>),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    EndpointId(id): EndpointId,
) -> Result<Response, ApiError> {
    let event_id = state.store.queue_test_event(&caller.tenant, id).await?.ok_or_else(endpoint_not_found)?;
    Ok(response::respond(StatusCode::ACCEPTED, QueuedTest { event_id, kind: EventType::WebhookTest }, Some(response::PROCESSED), &[]))
}

#[utoipa::path(get, path = "/v2/_webhook_endpoints/{endpoint_id}/attempts", tag = "events", operation_id = "list_webhook_endpoint_attempts",
    summary = "List an endpoint's delivery attempts",
    description = "Every attempt, successful or not, newest first; `next_attempt_at` on an event's latest attempt while another is scheduled.",
    params(("endpoint_id" = Uuid, Path, description = "The endpoint's id"), PageParams),
    responses(
        (status = 200, description = "A page of attempts, newest first", body = Envelope<Listing<AttemptRecord>>),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such endpoint for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    EndpointId(id): EndpointId,
    mut query: QueryParams,
) -> Result<Response, ApiError> {
    let page = query.page();
    query.finish()?;
    let (attempts, total) = state.store.list_attempts(&caller.tenant, id, page).await?.ok_or_else(endpoint_not_found)?;
    Ok(response::list(attempts, total, page))
}
