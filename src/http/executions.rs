//! Running actions during calls: execute, read and list executions, and
//! `?wait=N`, which answers the moment an execution settles.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, join};
use super::extract::{
    ActionId, ActionsExecute, ActionsRead, Authorized, ExecutionId, IdempotencyKeyHeader, OptionalJsonObject, PageParams, QueryParams,
    WaitParams, action_not_found, execution_not_found, idempotency_key, parse_uuid, whole_number,
};
use super::response::{self, Envelope, Listing};
use crate::domain::{ExecutionStatus, FieldError, Fields, NUL_MESSAGE, Param, PhoneE164, TenantId, holds_nul, is_media_reference};
use crate::error_code::ErrorCode;
use crate::openapi::fields;
use crate::store::{Executed, ExecutionFilter, ExecutionRecord, NewExecution, TemplateRecord, WebhookRecord};
use crate::whatsapp::payload::{RenderedParams, template_message};
use crate::whatsapp::templates::{Button, COPY_CODE_MAX_CHARS, Header, TemplateShape};

pub const CALL_ID_MAX: usize = 255;
const REPLY_TIMEOUT_DEFAULT: u32 = 600;
const REPLY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
pub const WAIT_MAX_SECONDS: u32 = 60;

/// The execute body; every field is optional, `null` as if left out.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct ExecuteBody {
    #[schema(schema_with = fields::call_id)]
    call_id: Option<String>,
    /// Recipient override; else the action's phone_number, else webhook.to.
    #[schema(schema_with = fields::optional_phone)]
    to: Option<String>,
    #[schema(schema_with = fields::variables)]
    variables: Option<HashMap<String, String>>,
    /// Seconds a mandatory execution waits for its reply: 10-86,400, default 600.
    #[schema(minimum = 10, maximum = 86400)]
    reply_timeout: Option<u32>,
}

/// An execute body that passed validation.
pub struct ExecuteRequest {
    call_id: Option<String>,
    pub to: Option<PhoneE164>,
    pub variables: HashMap<String, String>,
    reply_timeout: u32,
}

pub fn parse_execute(body: &Map<String, Value>) -> Result<ExecuteRequest, ApiError> {
    let (request, errors) = read_execute(body);
    if errors.is_empty() { Ok(request) } else { Err(ApiError::validation(errors)) }
}

/// Execute's body for this action. One that breaks its own rules is also
/// checked against the action's parameters (variables missing or filling one
/// wrongly), so that one answer names every violation; one that keeps them
/// is checked when the action runs.
pub async fn parse_execute_for(
    state: &AppState,
    tenant: &TenantId,
    action_id: Uuid,
    body: &Map<String, Value>,
) -> Result<ExecuteRequest, ApiError> {
    let (request, errors) = read_execute(body);
    if errors.is_empty() {
        return Ok(request);
    }
    let invalid = ApiError::validation(errors);
    match state.store.action_to_run(tenant, action_id).await? {
        // A variable refused above is missing from `request` too: `and` names it once.
        Some(action) => Err(render_params(&action.webhook, &request.variables).err().into_iter().fold(invalid, ApiError::and)),
        None => Err(invalid),
    }
}

/// An execute body as far as it could be read, and every rule it broke.
fn read_execute(body: &Map<String, Value>) -> (ExecuteRequest, Vec<FieldError>) {
    let mut errors = Vec::new();
    let mut fields = Fields::new(body, &mut errors);
    let call_id = fields.optional_str("call_id").map(str::trim).and_then(|call_id| {
        if call_id.is_empty() || call_id.chars().count() > CALL_ID_MAX {
            fields.error("call_id", ErrorCode::InvalidLength, format!("must be 1-{CALL_ID_MAX} characters"));
            return None;
        }
        Some(call_id.to_owned())
    });
    let to = fields.optional_str("to").filter(|raw| !raw.trim().is_empty()).and_then(|raw| match PhoneE164::parse(raw) {
        Ok(phone) => Some(phone),
        Err(reason) => {
            fields.error("to", ErrorCode::InvalidPhoneNumber, format!("'{raw}' {reason}"));
            None
        }
    });
    let mut variables = HashMap::new();
    match body.get("variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (name, value) in given {
                match value {
                    Value::String(text) if holds_nul(text) => {
                        fields.error(&format!("variables.{name}"), ErrorCode::InvalidCharacter, NUL_MESSAGE);
                        None
                    }
                    Value::String(text) => variables.insert(name.clone(), text.clone()),
                    Value::Bool(flag) => variables.insert(name.clone(), flag.to_string()),
                    Value::Number(number) => match exact_digits(number) {
                        Some(digits) => variables.insert(name.clone(), digits),
                        None => {
                            let message = "a number must be whole and within 64 bits, or be sent as a string: \
                                           its digits would not be kept as sent";
                            fields.error(&format!("variables.{name}"), ErrorCode::InvalidType, message);
                            None
                        }
                    },
                    Value::Null => None,
                    _ => {
                        fields.error(&format!("variables.{name}"), ErrorCode::InvalidType, "must be a string, a number or a boolean");
                        None
                    }
                };
            }
        }
        Some(_) => fields.error("variables", ErrorCode::InvalidType, "must be an object of variable names to values"),
    }
    let reply_timeout = match body.get("reply_timeout") {
        None | Some(Value::Null) => REPLY_TIMEOUT_DEFAULT,
        Some(value) => match integral(value).filter(|seconds| REPLY_TIMEOUT_RANGE.contains(seconds)) {
            Some(seconds) => seconds as u32,
            None => {
                fields.error("reply_timeout", ErrorCode::InvalidReplyTimeout, "must be a whole number of seconds from 10 to 86400");
                REPLY_TIMEOUT_DEFAULT
            }
        },
    };
    (ExecuteRequest { call_id, to, variables, reply_timeout }, errors)
}

/// A variable's number as its digits, when they are known exactly: an
/// integer within 64 bits, or one written with a zero fraction (12.0) that a
/// float holds exactly. Any other is known only as a float, which would be
/// rendered as the float prints (12.50 as 12.5, a 24-digit reference as
/// 1.2345678901234568e23).
fn exact_digits(number: &serde_json::Number) -> Option<String> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if number.is_i64() || number.is_u64() {
        return Some(number.to_string());
    }
    number.as_f64().filter(|n| n.fract() == 0.0 && n.abs() <= EXACT).map(|n| (n as i64).to_string())
}

/// A JSON number with no fraction, written `950` or `950.0` alike (JSON
/// Schema's `integer` is both), or `None`.
pub fn integral(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().filter(|n| n.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(n)).map(|n| n as u64))
}

/// `?wait=N`: seconds to hold the answer, at most 60.
fn wait_parameter(query: &mut QueryParams) -> Option<Duration> {
    let raw = query.get("wait")?.to_owned();
    match whole_number(&raw) {
        Some(seconds) if seconds <= WAIT_MAX_SECONDS => Some(Duration::from_secs(u64::from(seconds))),
        _ => {
            query.invalid("wait", format!("'{raw}' must be a whole number of seconds from 0 to {WAIT_MAX_SECONDS}"));
            None
        }
    }
}

/// Fills each parameter's `{{variables}}`; every missing variable is reported.
fn render_params(webhook: &WebhookRecord, variables: &HashMap<String, String>) -> Result<[Vec<String>; 3], ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let lists =
        [("header_params", &webhook.header_params), ("body_params", &webhook.body_params), ("button_params", &webhook.button_params)];
    let rendered = lists.map(|(list, params)| {
        params
            .iter()
            .enumerate()
            .map(|(index, stored)| {
                let Ok(param) = Param::parse(stored) else {
                    let message = "the stored parameter is no longer valid; update the action";
                    errors.push(FieldError::new(format!("webhook.{list}[{index}]"), ErrorCode::InvalidParameter, message));
                    return String::new();
                };
                match param.render(variables) {
                    Ok(text) => {
                        if let Err(reason) = Param::parse(&text) {
                            let message = format!("webhook.{list}[{index}] filled in is not a valid parameter: it {reason}");
                            for error in filled_in_errors(&param, ErrorCode::InvalidParameter, &message) {
                                error.add_once(&mut errors);
                            }
                        }
                        text
                    }
                    Err(missing) => {
                        for name in missing {
                            let message = format!("webhook.{list}[{index}] uses {{{{{name}}}}}; give its value in variables");
                            FieldError::new(format!("variables.{name}"), ErrorCode::MissingVariable, message).add_once(&mut errors);
                        }
                        String::new()
                    }
                }
            })
            .collect::<Vec<String>>()
    });
    if errors.is_empty() { Ok(rendered) } else { Err(ApiError::validation(errors)) }
}

/// A parameter the call's variables filled in wrongly, reported on each of
/// those variables (`variables.NAME`): the fields the client sent.
fn filled_in_errors(param: &Param, code: ErrorCode, message: &str) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = Vec::new();
    for name in param.variables() {
        FieldError::new(format!("variables.{name}"), code, message).add_once(&mut errors);
    }
    errors
}

/// `filled_in_errors` of a stored parameter, as a 400.
fn filled_in_wrongly(stored: &str, code: ErrorCode, message: &str) -> ApiError {
    let errors = Param::parse(stored).map(|param| filled_in_errors(&param, code, message)).unwrap_or_default();
    if errors.is_empty() { ApiError::bad_request("variables", code, message) } else { ApiError::validation(errors) }
}

fn template_unavailable(message: String) -> ApiError {
    ApiError::conflict("action_id", ErrorCode::TemplateUnavailable, message)
}

/// What running an action sends: its template as the registry stands now
/// (it may have been paused since the action was saved), and its parameters
/// with the call's variables filled in.
pub struct Composed {
    pub template: TemplateRecord,
    shape: TemplateShape,
    params: [Vec<String>; 3],
}

impl Composed {
    pub async fn new(
        state: &AppState,
        tenant: &TenantId,
        webhook: &WebhookRecord,
        variables: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let params = render_params(webhook, variables)?;
        let Some(versions) = state.store.templates_named(tenant, &webhook.from, &webhook.template_name).await? else {
            return Err(template_unavailable(format!("the action's sender {} was removed; register it again", webhook.from)));
        };
        let label = format!("template '{}' ({})", webhook.template_name, webhook.language_code);
        let template = versions.into_iter().find(|t| t.language == webhook.language_code).ok_or_else(|| {
            template_unavailable(format!("{label} is no longer in the sender's WhatsApp Business Account; sync the sender"))
        })?;
        if template.status != "APPROVED" {
            return Err(template_unavailable(format!("{label} is {}; only APPROVED templates can be sent", template.status)));
        }
        let shape = TemplateShape::of(&template);
        if let Some(why) = shape.unsupported_parts() {
            return Err(template_unavailable(format!("{label} now {why}")));
        }
        let counts = shape.counts();
        let [header, body, buttons] = &params;
        if (counts.header_params, counts.body_params, counts.button_params) != (header.len(), body.len(), buttons.len()) {
            return Err(template_unavailable(format!("{label} changed since the action was saved; update the action's parameters")));
        }
        let codes = shape.buttons.iter().filter(|b| b.takes_parameter()).zip(buttons.iter().zip(&webhook.button_params));
        if let Some((_, (code, stored))) =
            codes.into_iter().find(|(button, (code, _))| **button == Button::CopyCode && code.chars().count() > COPY_CODE_MAX_CHARS)
        {
            let message = format!("the COPY_CODE value, filled in, is '{code}'; Meta allows at most {COPY_CODE_MAX_CHARS} characters");
            return Err(filled_in_wrongly(stored, ErrorCode::InvalidParameter, &message));
        }
        if let (Header::Media(_), Some(media), Some(stored)) = (&shape.header, header.first(), webhook.header_params.first())
            && !Param::parse(media).is_ok_and(|param| is_media_reference(&param))
        {
            let message = "the media header parameter, filled in, must be an https:// URL or a media id";
            return Err(filled_in_wrongly(stored, ErrorCode::InvalidMediaParameter, message));
        }
        Ok(Self { template, shape, params })
    }

    pub fn params(&self) -> RenderedParams<'_> {
        let [header, body, buttons] = &self.params;
        RenderedParams { header, body, buttons }
    }

    /// The body of the Graph API's send, to `recipient` (E.164 digits).
    pub fn message(&self, recipient: &str, execution_id: &str) -> serde_json::Value {
        let template = &self.template;
        template_message(&self.shape, &template.name, &template.language, &format!("+{recipient}"), &self.params(), execution_id)
    }
}

/// Who a run sends to: the call's `to`, else the action's override, else its `webhook.to`.
pub fn recipient(to: Option<&PhoneE164>, phone_number: Option<&str>, webhook: &WebhookRecord) -> String {
    to.map(|phone| phone.digits()).or(phone_number).unwrap_or(&webhook.to).to_owned()
}

/// Holds until the execution settles or `wait` runs out, then reads it.
/// Woken by the change's signal, from whichever replica made it; a shutdown
/// answers at once with the execution as it stands.
pub async fn wait_for(state: &AppState, tenant: &TenantId, id: Uuid, wait: Duration) -> Result<ExecutionRecord, ApiError> {
    let notify = state.signals.watch(id);
    let deadline = Instant::now() + wait;
    let mut stopping = state.stopping.clone();
    loop {
        let changed = notify.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let execution = state.store.get_execution(tenant, id).await?.ok_or_else(execution_not_found)?;
        let now = Instant::now();
        if execution.status.settles(execution.mandatory) || now >= deadline || *stopping.borrow() {
            return Ok(execution);
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(deadline - now) => {}
            _ = stopping.changed() => {}
        }
    }
}

fn execution_location(id: Uuid) -> (HeaderName, String) {
    (header::LOCATION, format!("/v2/_executions/{id}"))
}

#[utoipa::path(post, path = "/v2/_actions/{action_id}/_execute", tag = "executions", operation_id = "execute_action",
    summary = "Run an action during a call",
    description = "Renders the template message (every {{variable}} from `variables`), stores the execution and its delivery job in one transaction and answers 202. The same (action_id, call_id) or Idempotency-Key returns the existing execution and sends nothing again. With ?wait=N (at most 60) the answer waits until the execution settles (mandatory: replied, failed, expired or cancelled; otherwise accepted or failed) or N runs out, then answers 200.",
    params(
        ("action_id" = Uuid, Path, description = "The action to run"),
        WaitParams,
        IdempotencyKeyHeader,
    ),
    request_body(content = Option<ExecuteBody>, description = "Optional; an empty body runs the action as configured"),
    responses(
        (status = 202, description = "Queued for delivery (or the existing execution of this call id or key)", body = Envelope<ExecutionRecord>,
            headers(("Location" = String, description = "/v2/_executions/{execution_id}")),
            links(("GetExecution" = (operation_id = "get_execution", parameters(("execution_id" = "$response.body#/data/execution_id")))))),
        (status = 200, description = "With ?wait: the execution as it stands when it settled or the wait ran out", body = Envelope<ExecutionRecord>,
            headers(("Location" = String, description = "/v2/_executions/{execution_id}")),
            links(("GetExecution" = (operation_id = "get_execution", parameters(("execution_id" = "$response.body#/data/execution_id")))))),
        (status = 400, description = "Invalid field, or a missing variable", body = ErrorBody),
        (status = 403, description = "The token lacks actions:execute", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
        (status = 409, description = "The action is inactive, or its template or sender is no longer usable", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn execute(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsExecute>,
    ActionId(action_id): ActionId,
    mut query: QueryParams,
    headers: HeaderMap,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let wait = wait_parameter(&mut query);
    // The query, the key and the body are checked apart and answered together.
    let checked = join(query.finish(), idempotency_key(&headers));
    let ((_, key), request) = join(checked, parse_execute_for(&state, &caller.tenant, action_id, &body).await)?;
    let _open_wait = state.waits.hold(&caller.tenant, wait)?;
    let (execution, replayed) = start_execution(&state, &caller.tenant, action_id, key, request).await?;
    answer(&state, &caller.tenant, execution, replayed, wait).await
}

/// Runs the action for a call, or finds the execution this call id or
/// idempotency key already started (true with it): the one path of REST's
/// `_execute` and of an action's MCP tool.
pub async fn start_execution(
    state: &AppState,
    tenant: &TenantId,
    action_id: Uuid,
    key: Option<String>,
    request: ExecuteRequest,
) -> Result<(ExecutionRecord, bool), ApiError> {
    // A repeat is answered with what the first request started, whatever has
    // changed since (the action paused, its template too): it sends nothing.
    let repeat = state.store.existing_execution(tenant, action_id, request.call_id.as_deref(), key.as_deref()).await?;
    if let Some(existing) = repeat {
        return same_action(action_id, existing).map(|execution| (execution, true));
    }
    let action = state.store.action_to_run(tenant, action_id).await?.ok_or_else(action_not_found)?;
    if !action.is_active {
        return Err(ApiError::conflict("action_id", ErrorCode::ActionInactive, "the action is inactive; set is_active to run it"));
    }
    let recipient = recipient(request.to.as_ref(), action.phone_number.as_deref(), &action.webhook);
    let composed = Composed::new(state, tenant, &action.webhook, &request.variables).await?;
    let id = Uuid::now_v7();
    let message = composed.message(&recipient, &id.to_string());
    let new = NewExecution {
        id,
        action_id,
        call_id: request.call_id,
        idempotency_key: key,
        to: recipient,
        sender: action.webhook.from.clone(),
        template_name: action.webhook.template_name.clone(),
        language: action.webhook.language_code.clone(),
        mandatory: action.webhook.mandatory,
        payload: message,
        reply_timeout: request.reply_timeout,
    };
    match state.store.create_execution(tenant, new).await? {
        Executed::New(execution) => Ok((execution, false)),
        Executed::Existing(execution) => same_action(action_id, execution).map(|execution| (execution, true)),
        Executed::ActionGone => Err(action_not_found()),
    }
}

/// A key first used for another action is a conflict, not that action's execution.
fn same_action(action_id: Uuid, execution: ExecutionRecord) -> Result<ExecutionRecord, ApiError> {
    if execution.action_id != action_id {
        let message = "this Idempotency-Key was used in the last 24 h to execute another action; use a new key";
        return Err(ApiError::conflict("Idempotency-Key", ErrorCode::IdempotencyKeyReused, message));
    }
    Ok(execution)
}

/// 202 with the execution, or with `?wait` 200 once it settles; a repeat says so.
async fn answer(
    state: &AppState,
    tenant: &TenantId,
    execution: ExecutionRecord,
    replayed: bool,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    let mut headers = vec![execution_location(execution.execution_id)];
    if replayed {
        headers.push((HeaderName::from_static("idempotent-replayed"), "true".to_owned()));
    }
    match wait {
        Some(wait) => {
            let settled = wait_for(state, tenant, execution.execution_id, wait).await?;
            Ok(response::respond(StatusCode::OK, settled, Some(response::PROCESSED), &headers))
        }
        None => Ok(response::respond(StatusCode::ACCEPTED, execution, Some(response::PROCESSED), &headers)),
    }
}

#[utoipa::path(get, path = "/v2/_executions/{execution_id}", tag = "executions", operation_id = "get_execution",
    summary = "Get an execution", description = "With ?wait=N, answers when the execution settles or N seconds pass.",
    params(
        ("execution_id" = Uuid, Path, description = "The execution's id"),
        WaitParams,
    ),
    responses(
        (status = 200, description = "The execution", body = Envelope<ExecutionRecord>),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such execution for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    ExecutionId(id): ExecutionId,
    mut query: QueryParams,
) -> Result<Response, ApiError> {
    let wait = wait_parameter(&mut query);
    query.finish()?;
    let _open_wait = state.waits.hold(&caller.tenant, wait)?;
    let execution = wait_for(&state, &caller.tenant, id, wait.unwrap_or(Duration::ZERO)).await?;
    Ok(response::ok(execution))
}

#[utoipa::path(get, path = "/v2/_executions", tag = "executions", operation_id = "list_executions",
    summary = "List executions", description = "Newest first.",
    params(
        ("action_id" = Option<Uuid>, Query, description = "Only this action's executions"),
        ("call_id" = Option<String>, Query, description = "Only this call's executions (trimmed, as execute trims it; not empty)",
            pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"),
        ("status" = Option<ExecutionStatus>, Query, description = "Only executions in this status"),
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of executions", body = Envelope<Listing<ExecutionRecord>>),
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
    let action_id = query.parsed("action_id", parse_uuid, |raw| format!("'{raw}' is not an action id"));
    let status = query.parsed("status", ExecutionStatus::parse, |raw| {
        let known: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("'{raw}' is not a status; use one of {}", known.join(", "))
    });
    // Trimmed as execute trims it before storing; no execution has an empty one.
    let call_id = query.parsed(
        "call_id",
        |raw| Some(raw.trim()).filter(|id| !id.is_empty()).map(str::to_owned),
        |_| "must not be empty: no execution has an empty call_id".to_owned(),
    );
    query.finish()?;
    let filter = ExecutionFilter { action_id, call_id: call_id.as_deref(), status };
    let (executions, total) = state.store.list_executions(&caller.tenant, filter, page).await?;
    Ok(response::list(executions, total, page))
}
