//! `/v2/_actions`: create (the seed), list, read, replace, merge-patch, delete.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{
    ActionId, ActionsRead, ActionsWrite, Authorized, IdempotencyKeyHeader, JsonObject, PageParams, QueryParams, action_not_found,
    idempotency_key,
};
use super::response::{self, Envelope, Listing};
use crate::domain::{ActionSpec, ActionType, TenantId, parse_action_spec};
use crate::error_code::ErrorCode;
use crate::openapi::fields;
use crate::store::{ActionFilter, ActionRecord, ActionUpdate, Created, IdempotentResponse};
use crate::whatsapp::templates::check_template_use;

/// Merges a PATCH makes before it gives up on an action other writes keep moving.
const PATCH_ATTEMPTS: usize = 10;

/// The 201 answer of the seed: the new action's id, name and type.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedAction {
    pub action_id: Uuid,
    #[schema(example = "My Whatsapp Action")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(example = "SEND_WHATSAPP")]
    pub kind: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedAction {
    pub action_id: Uuid,
    pub deleted: bool,
}

/// The body of create and PUT, as the seed page defines it. Unknown fields
/// are ignored; `null` is the same as leaving a field out.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct ActionBody {
    #[schema(schema_with = fields::name)]
    name: String,
    #[schema(schema_with = fields::description)]
    description: String,
    #[schema(schema_with = fields::action_type)]
    r#type: String,
    /// Enable/disable the action. Default true.
    is_active: Option<bool>,
    #[schema(schema_with = fields::action_timing)]
    action_timing: String,
    /// Recipient override; otherwise `webhook.to`.
    #[schema(schema_with = fields::optional_phone)]
    phone_number: Option<String>,
    webhook: WebhookBody,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct WebhookBody {
    /// The recipient's WhatsApp number.
    #[schema(schema_with = fields::phone)]
    to: String,
    #[schema(schema_with = fields::sender)]
    from: String,
    #[schema(schema_with = fields::template_name)]
    template_name: String,
    #[schema(schema_with = fields::body_params)]
    body_params: Option<Vec<String>>,
    #[schema(schema_with = fields::header_params)]
    header_params: Option<Vec<String>>,
    #[schema(schema_with = fields::button_params)]
    button_params: Option<Vec<String>>,
    #[schema(schema_with = fields::language_code)]
    language_code: Option<String>,
    /// Require a WhatsApp reply before the call flow proceeds. Default false.
    mandatory: Option<bool>,
}

/// A PATCH body: create's fields with create's rules, none of them required
/// (`null` removes a field, so only optional ones may be null). Made from
/// `ActionBody`'s schema, so the two documents list the same fields.
pub struct ActionPatch;

impl utoipa::PartialSchema for ActionPatch {
    fn schema() -> RefOr<Schema> {
        let mut patch = none_required(<ActionBody as utoipa::PartialSchema>::schema());
        if let RefOr::T(Schema::Object(object)) = &mut patch {
            object.description = Some("Any of create's fields; `webhook` merges field by field into the stored one.".to_owned());
            object.properties.insert("webhook".to_owned(), none_required(<WebhookBody as utoipa::PartialSchema>::schema()));
        }
        patch
    }
}

impl utoipa::ToSchema for ActionPatch {}

fn none_required(mut schema: RefOr<Schema>) -> RefOr<Schema> {
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.required.clear();
    }
    schema
}

/// The list's filters, as the OpenAPI document gives them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct ActionFilterParams {
    /// Only actions of this type.
    #[param(rename = "type", schema_with = fields::action_type)]
    kind: Option<String>,
    /// Only active (true) or inactive (false) actions.
    is_active: Option<bool>,
}

/// Reads an action body and checks its template against the registry,
/// answering every violation at once.
pub(super) async fn validate(state: &AppState, tenant: &TenantId, body: &Map<String, Value>) -> Result<ActionSpec, ApiError> {
    let parsed = parse_action_spec(body);
    let mut errors = parsed.errors;
    if let Some(template_use) = &parsed.template_use {
        errors.extend(check_template_use(state.store.as_ref(), tenant, template_use).await?);
    }
    match parsed.spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => Err(ApiError::validation(errors)),
    }
}

/// Hash of what the key promises to repeat: the route and the JSON body
/// (object keys sorted, so formatting and key order do not matter).
fn request_hash(route: &str, body: &Map<String, Value>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(Value::Object(body.clone()).to_string().as_bytes());
    format!("{:x}", hasher.finalize())
}

fn location(action_id: &str) -> (HeaderName, String) {
    (header::LOCATION, format!("/v2/_actions/{action_id}"))
}

fn replay(first: IdempotentResponse, request_hash: &str) -> Result<Response, ApiError> {
    if first.request_hash != request_hash {
        return Err(ApiError::conflict(
            "Idempotency-Key",
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used in the last 24 h with a different request; use a new key",
        ));
    }
    let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED);
    let mut headers = vec![(HeaderName::from_static("idempotent-replayed"), "true".to_owned())];
    if let Some(id) = first.body["action_id"].as_str() {
        headers.push(location(id));
    }
    Ok(response::respond(status, first.body, None, &headers))
}

#[utoipa::path(post, path = "/v2/_actions", tag = "actions", operation_id = "create_action",
    summary = "Create WhatsApp Action",
    description = "Validates the action, including its template against the sender's registry (exists in the language, APPROVED, exact parameter counts), and stores it. With an Idempotency-Key, the same key and body within 24 h replay the first answer (header Idempotent-Replayed: true); a different body answers 409.",
    request_body = ActionBody,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "WhatsApp action created successfully", body = Envelope<CreatedAction>,
            headers(("Location" = String, description = "/v2/_actions/{action_id}")),
            links(
                ("GetAction" = (operation_id = "get_action", parameters(("action_id" = "$response.body#/data/action_id")))),
                ("ReplaceAction" = (operation_id = "replace_action", parameters(("action_id" = "$response.body#/data/action_id")))),
                ("PatchAction" = (operation_id = "patch_action", parameters(("action_id" = "$response.body#/data/action_id")))),
                ("DeleteAction" = (operation_id = "delete_action", parameters(("action_id" = "$response.body#/data/action_id")))),
                ("ExecuteAction" = (operation_id = "execute_action", parameters(("action_id" = "$response.body#/data/action_id")))),
                ("PreviewAction" = (operation_id = "preview_action", parameters(("action_id" = "$response.body#/data/action_id")))),
            )),
        (status = 400, description = "Invalid WhatsApp template or numbers, or any other invalid field", body = ErrorBody),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different body", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        // Answered with the body's violations, not instead of them.
        Err(invalid) => return Err(validate(&state, &caller.tenant, &body).await.err().into_iter().fold(invalid, ApiError::and)),
    };
    // The key, and the hash of the request it promises to repeat.
    let keyed = key.map(|key| (key, request_hash("POST /v2/_actions", &body)));
    if let Some((key, hash)) = &keyed
        && let Some(first) = state.store.idempotent_response(&caller.tenant, key).await?
    {
        return replay(first, hash);
    }
    let spec = validate(&state, &caller.tenant, &body).await?;
    let id = Uuid::now_v7();
    let created = CreatedAction { action_id: id, name: spec.name.clone(), kind: spec.kind.as_str().to_owned() };
    let first_response = keyed
        .as_ref()
        .map(|(key, hash)| (key.as_str(), IdempotentResponse { request_hash: hash.clone(), status: 201, body: json!(created) }));
    match (state.store.create_action(&caller.tenant, id, &spec, first_response).await?, &keyed) {
        (Created::Replay(first), Some((_, hash))) => replay(first, hash),
        // Only a keyed create can find its key taken.
        (Created::New | Created::Replay(_), _) => Ok(response::respond(StatusCode::CREATED, created, None, &[location(&id.to_string())])),
    }
}

#[utoipa::path(get, path = "/v2/_actions", tag = "actions", operation_id = "list_actions",
    summary = "List actions", description = "Newest first.",
    params(
        PageParams,
        ActionFilterParams,
    ),
    responses(
        (status = 200, description = "A page of actions", body = Envelope<Listing<ActionRecord>>),
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
    let kind = query.parsed(
        "type",
        |raw| ActionType::parse(raw).map(ActionType::as_str),
        |raw| format!("'{raw}' is not an action type; the only type is SEND_WHATSAPP"),
    );
    let is_active = query.boolean("is_active");
    query.finish()?;
    let (actions, total) = state.store.list_actions(&caller.tenant, ActionFilter { kind, is_active }, page).await?;
    Ok(response::list(actions, total, page))
}

#[utoipa::path(get, path = "/v2/_actions/{action_id}", tag = "actions", operation_id = "get_action", summary = "Get an action",
    params(("action_id" = Uuid, Path, description = "The action's id")),
    responses(
        (status = 200, description = "The action", body = Envelope<ActionRecord>),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    ActionId(id): ActionId,
) -> Result<Response, ApiError> {
    let action = state.store.get_action(&caller.tenant, id).await?.ok_or_else(action_not_found)?;
    Ok(response::ok(action))
}

#[utoipa::path(put, path = "/v2/_actions/{action_id}", tag = "actions", operation_id = "replace_action",
    summary = "Replace an action", description = "Create's body and rules; every field is replaced.",
    params(("action_id" = Uuid, Path, description = "The action's id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "The replaced action", body = Envelope<ActionRecord>),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    ActionId(id): ActionId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    state.store.get_action(&caller.tenant, id).await?.ok_or_else(action_not_found)?;
    let spec = validate(&state, &caller.tenant, &body).await?;
    match state.store.update_action(&caller.tenant, id, &spec, None).await? {
        ActionUpdate::Updated(action) => Ok(response::ok(action)),
        // Written over no version, it is never `Changed`: only gone.
        ActionUpdate::Missing | ActionUpdate::Changed => Err(action_not_found()),
    }
}

#[utoipa::path(patch, path = "/v2/_actions/{action_id}", tag = "actions", operation_id = "patch_action",
    summary = "Update some fields of an action",
    description = "A JSON merge patch (RFC 7386) of create's body: given fields replace the stored ones, `webhook` merges field by field, `null` removes an optional field. The result must pass create's rules.",
    params(("action_id" = Uuid, Path, description = "The action's id")),
    request_body = ActionPatch,
    responses(
        (status = 200, description = "The updated action", body = Envelope<ActionRecord>),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
        (status = 409, description = "Other writes to the action kept overtaking this one (action_changed); send it again", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    ActionId(id): ActionId,
    JsonObject(changes): JsonObject,
) -> Result<Response, ApiError> {
    // The merge is written only over the version it was made from; when another
    // write came in between, it is made again from what that write left.
    for _ in 0..PATCH_ATTEMPTS {
        let current = state.store.get_action(&caller.tenant, id).await?.ok_or_else(action_not_found)?;
        let mut body = as_body(&current);
        merge_patch(&mut body, changes.clone());
        let spec = validate(&state, &caller.tenant, &body).await?;
        match state.store.update_action(&caller.tenant, id, &spec, Some(current.version)).await? {
            ActionUpdate::Updated(action) => return Ok(response::ok(action)),
            ActionUpdate::Missing => return Err(action_not_found()),
            ActionUpdate::Changed => continue,
        }
    }
    Err(ApiError::conflict("action_id", ErrorCode::ActionChanged, "the action kept changing under other writes; send the PATCH again"))
}

#[utoipa::path(delete, path = "/v2/_actions/{action_id}", tag = "actions", operation_id = "delete_action", summary = "Delete an action",
    params(("action_id" = Uuid, Path, description = "The action's id")),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeletedAction>),
        (status = 403, description = "The token lacks actions:write", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsWrite>,
    ActionId(id): ActionId,
) -> Result<Response, ApiError> {
    if !state.store.delete_action(&caller.tenant, id).await? {
        return Err(action_not_found());
    }
    Ok(response::ok(DeletedAction { action_id: id, deleted: true }))
}

/// A stored action as a create body, the base a merge patch applies to.
fn as_body(action: &ActionRecord) -> Map<String, Value> {
    let body = json!({
        "name": action.name,
        "description": action.description,
        "type": action.kind,
        "is_active": action.is_active,
        "action_timing": action.action_timing,
        "phone_number": action.phone_number,
        "webhook": action.webhook,
    });
    match body {
        Value::Object(object) => object,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Map<String, Value>, changes: Map<String, Value>) {
    for (key, change) in changes {
        match (target.get_mut(&key), change) {
            (_, Value::Null) => {
                target.remove(&key);
            }
            (Some(Value::Object(existing)), Value::Object(nested)) => merge_patch(existing, nested),
            (_, change) => {
                target.insert(key, change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "phone_number": "1", "webhook": {"to": "x", "mandatory": false}}).as_object().unwrap().clone();
        let changes = json!({"a": 2, "phone_number": null, "webhook": {"mandatory": true, "body_params": ["p"]}});
        merge_patch(&mut target, changes.as_object().unwrap().clone());
        assert_eq!(Value::Object(target), json!({"a": 2, "webhook": {"to": "x", "mandatory": true, "body_params": ["p"]}}));
    }

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a = json!({"x": 1, "y": [1, 2]}).as_object().unwrap().clone();
        let b: Map<String, Value> = serde_json::from_str(r#"{"y":[1,2],  "x":1}"#).unwrap();
        let c = json!({"x": 2, "y": [1, 2]}).as_object().unwrap().clone();
        assert_eq!(request_hash("r", &a), request_hash("r", &b));
        assert_ne!(request_hash("r", &a), request_hash("r", &c));
        assert_ne!(request_hash("r", &a), request_hash("s", &a));
    }
}
