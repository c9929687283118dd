//! `POST /_sandbox/reply` (dev mode): answers a sent message as its recipient
//! would, for the tenant that owns the execution and no other.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{ActionsExecute, Authorized, JsonObject};
use super::response::respond;
use crate::domain::{FieldError, Fields};
use crate::error_code::ErrorCode;
use crate::whatsapp::sandbox::{ReplyRefused, ReplyRequest, Sandbox};

/// Posts Meta's signed reply webhook for the message of one of the caller's
/// executions, named by `execution_id` or `wamid`: a `text`, or a tap on the
/// quick-reply button labelled `button`. Left out of the OpenAPI document:
/// only `serve --dev` mounts it.
pub async fn reply(
    Authorized(caller, _): Authorized<ActionsExecute>,
    State(state): State<AppState>,
    Extension(sandbox): Extension<Sandbox>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let mut fields = Fields::new(&body, &mut errors);
    let (execution_id, wamid) = (fields.optional_str("execution_id"), fields.optional_str("wamid"));
    let (text, button) = (fields.optional_str("text"), fields.optional_str("button"));
    if execution_id.is_none() && wamid.is_none() {
        errors.push(FieldError::new("execution_id", ErrorCode::MissingField, "give the execution_id or the wamid of the message answered"));
    }
    if text.is_none() && button.is_none() {
        errors.push(FieldError::new("text", ErrorCode::MissingField, "give the reply's text or the label of the button tapped"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let field = if execution_id.is_some() { "execution_id" } else { "wamid" };
    let not_found = || ApiError::not_found(field, "no execution of this tenant has that id or wamid");
    let id = match execution_id {
        Some(id) => id.to_owned(),
        None => sandbox.execution_of(wamid.unwrap_or_default()).ok_or_else(not_found)?,
    };
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    state.store.get_execution(&caller.tenant, id).await?.ok_or_else(not_found)?;
    let request =
        ReplyRequest { wamid: None, execution_id: Some(id.to_string()), text: text.map(str::to_owned), button: button.map(str::to_owned) };
    let answer = sandbox.reply(request).await.map_err(|refused| {
        let (field, reason) = match refused {
            ReplyRefused::Message(reason) => (field, reason),
            ReplyRefused::Button(reason) => ("button", reason),
            ReplyRefused::Text(reason) => ("text", reason),
        };
        ApiError::bad_request(field, ErrorCode::SandboxReplyRefused, reason)
    })?;
    Ok(respond(axum::http::StatusCode::OK, answer, None, &[]))
}
