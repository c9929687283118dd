//! `/mcp`: the tenant's actions as tools for AI agents (CONTRACT §11), over
//! the Model Context Protocol's Streamable HTTP transport (the `rmcp` SDK).
//! Stateless, answering plain JSON: any replica answers any request, and the
//! caller is the bearer token's, checked by the API's own middleware before
//! the transport sees the request. Each tool runs the REST path it mirrors,
//! so idempotency, validation and errors are the same; an error is a tool
//! result (`isError`) naming the API's error code.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ClientRequest, ContentBlock, ErrorCode as JsonRpcCode,
    Implementation, JsonObject, JsonRpcRequest, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Scope};
use crate::domain::{ExecutionStatus, Param, TenantId};
use crate::error_code::ErrorCode;
use crate::http::AppState;
use crate::http::context::ctx_id;
use crate::http::error::ApiError;
use crate::http::executions::{WAIT_MAX_SECONDS, integral, parse_execute_for, start_execution, wait_for};
use crate::http::extract::{BODY_LIMIT, execution_not_found, is_json, parse_uuid, read_body};
use crate::store::{ActionFilter, ActionRecord, ExecutionRecord, ExecutionReply, Page};

pub const GET_EXECUTION: &str = "get_execution";
pub const LIST_ACTIONS: &str = "list_actions";
const TOOL_NAME_MAX: usize = 64;
/// The requests this server answers.
const SERVED_METHODS: [&str; 4] = ["initialize", "ping", "tools/list", "tools/call"];
/// Actions read per page while the tool list is built.
const ACTIONS_PAGE: u32 = 100;

/// What `/mcp` checks of a POST before the transport reads it, answered as
/// the API answers (rmcp's own answers are plain text): a body sent as JSON
/// (415) of at most 64 KiB (413), and one JSON-RPC message, else 400 with a
/// JSON-RPC error carrying the API's error, as the Streamable HTTP transport
/// asks. Protocol 2025-06-18 has no batches. A request for a served method
/// whose params are not what it takes is answered -32602 (invalid params).
pub async fn gate(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !is_json(request.headers()) {
        return ApiError::unsupported_media_type().into_response();
    }
    let (mut parts, body) = request.into_parts();
    // The transport answers 406 unless both of its media types are named, but
    // its answers here are JSON: a client that takes JSON (curl's `*/*`, or no
    // Accept at all) is served.
    if takes_json(&parts.headers) {
        parts.headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    }
    let bytes = match read_body(Request::from_parts(parts.clone(), body), BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let not_one_message = |code: JsonRpcCode, api_code: ErrorCode, message: String| {
        json_rpc_error(StatusCode::BAD_REQUEST, Value::Null, (code, api_code), "body", message)
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Err(error) => return not_one_message(JsonRpcCode::PARSE_ERROR, ErrorCode::InvalidJson, format!("the body is not JSON: {error}")),
        Ok(Value::Array(_)) => {
            let message = "one JSON-RPC message per request: MCP 2025-06-18 has no batches".to_owned();
            return not_one_message(JsonRpcCode::INVALID_REQUEST, ErrorCode::InvalidJsonRpc, message);
        }
        Ok(message) => match ClientJsonRpcMessage::deserialize(message) {
            Err(error) => {
                let message = format!("not a JSON-RPC 2.0 request or notification: {error}");
                return not_one_message(JsonRpcCode::INVALID_REQUEST, ErrorCode::InvalidJsonRpc, message);
            }
            // rmcp reads a served method whose params it cannot read as a
            // custom request, and would answer "method not found".
            Ok(ClientJsonRpcMessage::Request(JsonRpcRequest { id, request: ClientRequest::CustomRequest(custom), .. }))
                if SERVED_METHODS.contains(&custom.method.as_str()) =>
            {
                let id = serde_json::to_value(&id).unwrap_or(Value::Null);
                let message = format!("the params are not those {} takes", custom.method);
                let codes = (JsonRpcCode::INVALID_PARAMS, ErrorCode::InvalidJsonRpc);
                return json_rpc_error(StatusCode::OK, id, codes, "params", message);
            }
            Ok(_) => {}
        },
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn takes_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else { return true };
    accept.to_str().unwrap_or_default().split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        // `q=0` says "not this one".
        let refused = parts.any(|parameter| parameter.strip_prefix("q=").is_some_and(|q| q.parse::<f32>() == Ok(0.0)));
        !refused && ["application/json", "application/*", "*/*"].iter().any(|taken| media.eq_ignore_ascii_case(taken))
    })
}

/// A JSON-RPC error answer whose `data` carries the ctx_id and the API's error on `field`.
fn json_rpc_error(status: StatusCode, id: Value, (code, api_code): (JsonRpcCode, ErrorCode), field: &str, message: String) -> Response {
    let data = json!({"ctx_id": ctx_id(), "errors": [{"field": field, "code": api_code.as_str(), "message": message}]});
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code.0, "message": message, "data": data}});
    (status, Json(body)).into_response()
}

/// The transport, mounted at `/mcp` behind the API's authentication.
pub fn service(state: AppState) -> StreamableHttpService<ActionTools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Every request carries a bearer token, checked before the transport:
        // the Host check's guard against DNS rebinding has nothing to add.
        .disable_allowed_hosts();
    StreamableHttpService::new(move || Ok(ActionTools { state: state.clone() }), Arc::new(NeverSessionManager::default()), config)
}

pub struct ActionTools {
    state: AppState,
}

/// A tool's name from an action's name: lower-cased, each run of other
/// characters than `[a-z0-9]` one `_`, at most 64 characters.
fn base_name(action_name: &str) -> String {
    let mut name = String::new();
    for c in action_name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    name.chars().take(TOOL_NAME_MAX).collect()
}

/// Tool names for actions in creation order: a name already taken (by a
/// fixed tool or an earlier action) gets `_2`, `_3`…, still within 64 characters.
fn tool_names<'a>(action_names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: Vec<String> = vec![GET_EXECUTION.to_owned(), LIST_ACTIONS.to_owned()];
    let mut names = Vec::new();
    for action_name in action_names {
        let base = base_name(action_name);
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            let suffix = format!("_{n}");
            name = format!("{}{suffix}", base.chars().take(TOOL_NAME_MAX - suffix.len()).collect::<String>());
            n += 1;
        }
        taken.push(name.clone());
        names.push(name);
    }
    names
}

/// The `{{variables}}` an action's parameters use, in order of first appearance.
fn variables(action: &ActionRecord) -> Vec<String> {
    let webhook = &action.webhook;
    let mut names: Vec<String> = Vec::new();
    for stored in webhook.header_params.iter().chain(&webhook.body_params).chain(&webhook.button_params) {
        if let Ok(param) = Param::parse(stored) {
            for name in param.variables() {
                if !names.iter().any(|known| known == name) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

fn action_tool(name: &str, action: &ActionRecord) -> Tool {
    let variables = variables(action);
    let mut properties = Map::new();
    for variable in &variables {
        properties.insert(variable.clone(), json!({"type": "string", "description": format!("Fills {{{{{variable}}}}} in the message")}));
    }
    for (name, meaning) in [
        ("to", "The recipient's phone number in international form; else the action's"),
        ("call_id", "The call this runs for: the same call id runs the action once"),
    ] {
        let property = properties.entry(name).or_insert(json!({"type": "string", "description": meaning}));
        if variables.iter().any(|variable| variable == name) {
            property["description"] = json!(format!("{meaning}. It also fills {{{{{name}}}}} in the message"));
        }
    }
    let schema = json!({"type": "object", "properties": properties, "required": variables});
    Tool::new(name.to_owned(), action.description.clone(), object(schema))
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).idempotent(true).open_world(true))
}

fn fixed_tools() -> [Tool; 2] {
    let get_execution = json!({
        "type": "object",
        "properties": {
            "execution_id": {"type": "string", "format": "uuid", "description": "The execution an action's tool started"},
            "wait_seconds": {"type": "integer", "minimum": 0, "maximum": WAIT_MAX_SECONDS,
                "description": "Hold the answer until the execution settles (a reply, for a mandatory action) or this many seconds pass"},
        },
        "required": ["execution_id"],
    });
    [
        Tool::new(
            GET_EXECUTION,
            "Where a WhatsApp message an action sent stands: its status and the person's reply",
            object(get_execution),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            LIST_ACTIONS,
            "The WhatsApp actions this agent can run, active or not",
            object(json!({"type": "object", "properties": {}})),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
    ]
}

/// The caller the API's middleware authenticated for this request.
fn caller(context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the MCP route has no authenticated caller", None))
}

fn require(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.has(scope) { Ok(()) } else { Err(ApiError::forbidden(scope.as_str())) }
}

/// An API error as a tool result: the code first, so an agent can match on
/// it, then each violation with its field, as the REST answer lists them.
fn failed(error: ApiError) -> CallToolResult {
    let text = match error.errors() {
        [only] => format!("{}: {}: {}", only.code.as_str(), only.field, only.message),
        all => {
            let code = all.first().map_or(ErrorCode::InternalError.as_str(), |e| e.code.as_str());
            let details: Vec<String> = all.iter().map(|e| format!("{} {}: {}", e.code.as_str(), e.field, e.message)).collect();
            format!("{code}: {} ({})", error.detail(), details.join("; "))
        }
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn answered(sentence: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(sentence)]);
    result.structured_content = Some(structured);
    result
}

/// One sentence a voice agent can say about where the message stands.
fn spoken(execution: &ExecutionRecord) -> String {
    let to = format!("+{}", execution.to);
    match execution.status {
        ExecutionStatus::Queued | ExecutionStatus::Sending => format!("The WhatsApp message to {to} is on its way."),
        ExecutionStatus::Accepted | ExecutionStatus::Sent => format!("The WhatsApp message to {to} has been sent."),
        ExecutionStatus::Delivered => format!("The WhatsApp message to {to} was delivered."),
        ExecutionStatus::Read => format!("The WhatsApp message to {to} was read."),
        ExecutionStatus::Replied => replied(&to, execution.reply.as_ref()),
        ExecutionStatus::Failed => match &execution.error {
            Some(error) => format!("The WhatsApp message to {to} could not be sent: {}", error.message),
            None => format!("The WhatsApp message to {to} could not be sent."),
        },
        ExecutionStatus::Expired => format!("No reply came from {to} on WhatsApp in time."),
        ExecutionStatus::Cancelled => format!("The WhatsApp message to {to} was cancelled."),
    }
}

/// A reply in words: what the person wrote or tapped, or what they sent instead.
fn replied(to: &str, reply: Option<&ExecutionReply>) -> String {
    let Some(reply) = reply else { return format!("{to} replied on WhatsApp.") };
    let sent = match reply.kind.as_str() {
        "image" => " with a photo",
        "video" => " with a video",
        "document" => " with a document",
        "audio" => " with an audio message",
        "sticker" => " with a sticker",
        _ => "",
    };
    // A button's payload stands in for the words it lacks; a media id does not.
    let words = if sent.is_empty() { reply.text.as_deref().or(reply.payload.as_deref()) } else { reply.text.as_deref() };
    match words {
        Some(words) => format!("{to} replied on WhatsApp{sent}: \"{words}\"."),
        None => format!("{to} replied on WhatsApp{sent}."),
    }
}

fn execution_result(execution: &ExecutionRecord) -> CallToolResult {
    answered(spoken(execution), serde_json::to_value(execution).unwrap_or(Value::Null))
}

impl ActionTools {
    /// The tenant's actions, oldest first (the order names are given in).
    async fn actions(&self, tenant: &TenantId) -> Result<Vec<ActionRecord>, ApiError> {
        let mut actions = Vec::new();
        for number in 1.. {
            let filter = ActionFilter { kind: None, is_active: None };
            let (page, total) = self.state.store.list_actions(tenant, filter, Page { number, size: ACTIONS_PAGE }).await?;
            let last = page.len() < ACTIONS_PAGE as usize || (actions.len() + page.len()) as u64 >= total;
            actions.extend(page);
            if last {
                break;
            }
        }
        actions.reverse();
        Ok(actions)
    }

    /// The tenant's actions with their tool names. Inactive actions keep
    /// theirs (unlisted), so that switching one off or on never renames
    /// another's tool under an agent holding an earlier list.
    async fn named_actions(&self, tenant: &TenantId) -> Result<Vec<(String, ActionRecord)>, ApiError> {
        let actions = self.actions(tenant).await?;
        let names = tool_names(actions.iter().map(|action| action.name.as_str()));
        Ok(names.into_iter().zip(actions).collect())
    }

    async fn list_actions(&self, caller: &Caller) -> Result<CallToolResult, ApiError> {
        require(caller, Scope::ActionsRead)?;
        let actions = self.actions(&caller.tenant).await?;
        let names: Vec<&str> = actions.iter().map(|action| action.name.as_str()).collect();
        let sentence = match names.len() {
            0 => "There are no WhatsApp actions yet.".to_owned(),
            1 => format!("There is one WhatsApp action: {}.", names[0]),
            count => format!("There are {count} WhatsApp actions: {}.", names.join(", ")),
        };
        Ok(answered(sentence, json!({"actions": actions})))
    }

    async fn get_execution(&self, caller: &Caller, arguments: &JsonObject) -> Result<CallToolResult, ApiError> {
        require(caller, Scope::ActionsRead)?;
        let id = match arguments.get("execution_id") {
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request("execution_id", ErrorCode::MissingField, "give the execution an action's tool started"));
            }
            Some(given) => given.as_str().and_then(parse_uuid).ok_or_else(execution_not_found)?,
        };
        let wait = match arguments.get("wait_seconds") {
            None | Some(Value::Null) => Duration::ZERO,
            Some(value) => match integral(value).filter(|seconds| *seconds <= u64::from(WAIT_MAX_SECONDS)) {
                Some(seconds) => Duration::from_secs(seconds),
                None => {
                    let message = format!("must be a whole number of seconds from 0 to {WAIT_MAX_SECONDS}");
                    return Err(ApiError::bad_request("wait_seconds", ErrorCode::InvalidQueryParameter, message));
                }
            },
        };
        let _open_wait = self.state.waits.hold(&caller.tenant, Some(wait))?;
        Ok(execution_result(&wait_for(&self.state, &caller.tenant, id, wait).await?))
    }

    /// The action whose tool this is, if any: an inactive one's answers
    /// `action_inactive` when called, as its execute does.
    async fn action_named(&self, caller: &Caller, tool: &str) -> Result<Option<ActionRecord>, ApiError> {
        let named = self.named_actions(&caller.tenant).await?;
        Ok(named.into_iter().find(|(name, _)| name == tool).map(|(_, action)| action))
    }

    async fn run_action(&self, caller: &Caller, action: ActionRecord, arguments: JsonObject) -> Result<CallToolResult, ApiError> {
        require(caller, Scope::ActionsExecute)?;
        // The tool's arguments as execute's body: each fills its variable, and
        // `to` and `call_id` are the recipient and the call id too (an action
        // may use either in its message; variables it does not use are ignored).
        let mut body = Map::new();
        for name in ["to", "call_id"] {
            if let Some(value) = arguments.get(name) {
                body.insert(name.into(), value.clone());
            }
        }
        body.insert("variables".into(), Value::Object(arguments));
        let request = parse_execute_for(&self.state, &caller.tenant, action.id, &body).await?;
        let (execution, _) = start_execution(&self.state, &caller.tenant, action.id, None, request).await?;
        Ok(execution_result(&execution))
    }
}

/// The protocol versions `/mcp` speaks: 2025-06-18 and later, without the
/// batches 2025-03-26 had. A client asking for an older one is offered the
/// latest with an `initialize`, as the specification's negotiation has it.
const PROTOCOL_VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28];

impl ServerHandler for ActionTools {
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("actiond", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool but get_execution and list_actions sends a WhatsApp message to the caller during the call. \
                 Give its variables; pass call_id so a retry does not send twice. get_execution with wait_seconds \
                 waits for the person's reply.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller(&context)?;
        if !caller.has(Scope::ActionsRead) {
            return Err(ErrorData::invalid_request("insufficient_scope: the token lacks actions:read", None));
        }
        let named = self.named_actions(&caller.tenant).await.map_err(|error| ErrorData::internal_error(error.detail().to_owned(), None))?;
        let mut tools: Vec<Tool> =
            named.iter().filter(|(_, action)| action.is_active).map(|(name, action)| action_tool(name, action)).collect();
        tools.extend(fixed_tools());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let caller = caller(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        let call = async {
            match request.name.as_ref() {
                LIST_ACTIONS => Ok(self.list_actions(&caller).await),
                GET_EXECUTION => Ok(self.get_execution(&caller, &arguments).await),
                tool => match self.action_named(&caller, tool).await {
                    Ok(Some(action)) => Ok(self.run_action(&caller, action, arguments).await),
                    // The MCP specification makes an unknown tool a protocol error.
                    Ok(None) => {
                        Err(ErrorData::invalid_params(format!("unknown tool '{tool}'; tools/list gives the active actions' tools"), None))
                    }
                    Err(error) => Ok(Err(error)),
                },
            }
        };
        // The transport cancels a call whose client has gone (the handler runs
        // in a task of its own): dropped then, as REST drops a request's
        // handler, it gives back what it holds, such as one of the tenant's waits.
        let result = tokio::select! {
            result = call => result?,
            () = context.ct.cancelled() => return Err(ErrorData::internal_error("the client went away", None)),
        };
        Ok(result.unwrap_or_else(failed).into())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn tool_names_follow_the_action_names_and_never_clash() {
        let long = "x".repeat(70);
        let names = tool_names(["Send Order Update!", "send order-update", "get_execution", "Ünïcode  ✓ 2", &long, &long, "List actions"]);
        assert_eq!(names[0], "send_order_update_");
        assert_eq!(names[1], "send_order_update");
        assert_eq!(names[2], "get_execution_2", "a fixed tool's name is taken");
        assert_eq!(names[3], "_n_code_2");
        assert_eq!((names[4].len(), names[5].len()), (64, 64));
        assert!(names[5].ends_with("_2") && names[4] != names[5]);
        assert_eq!(names[6], "list_actions_2");
        let again = tool_names(["same", "same", "same"]);
        assert_eq!(again, ["same", "same_2", "same_3"]);
    }

    #[test]
    fn an_execution_is_said_in_one_sentence() {
        let mut execution = ExecutionRecord {
            execution_id: Uuid::nil(),
            action_id: Uuid::nil(),
            call_id: None,
            to: "12817126508".into(),
            status: ExecutionStatus::Queued,
            mandatory: true,
            wamid: None,
            attempts: 0,
            error: None,
            reply: None,
            timeline: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            reply_deadline: None,
        };
        assert_eq!(spoken(&execution), "The WhatsApp message to +12817126508 is on its way.");
        execution.status = ExecutionStatus::Replied;
        execution.reply = Some(crate::store::ExecutionReply {
            kind: "button".into(),
            text: Some("Yes".into()),
            payload: None,
            received_at: String::new(),
        });
        assert_eq!(spoken(&execution), "+12817126508 replied on WhatsApp: \"Yes\".");
        execution.reply = Some(crate::store::ExecutionReply {
            kind: "audio".into(),
            text: None,
            payload: Some("1013859600285441".into()),
            received_at: String::new(),
        });
        assert_eq!(spoken(&execution), "+12817126508 replied on WhatsApp with an audio message.", "a media id is not words");
    }
}
