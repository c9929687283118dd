//! `_preview`: what the person will read and the exact request actiond would
//! send to the Graph API, for a stored action or a create body, sending and
//! storing nothing.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};

use super::AppState;
use super::actions::{ActionBody, validate};
use super::error::{ApiError, ErrorBody, join};
use super::executions::{Composed, ExecuteBody, ExecuteRequest, parse_execute, parse_execute_for, recipient};
use super::extract::{ActionId, ActionsRead, Authorized, JsonObject, OptionalJsonObject, action_not_found};
use super::response::{self, Envelope};
use crate::domain::TenantId;
use crate::openapi::fields;
use crate::store::WebhookRecord;
use crate::whatsapp::rendering::{RenderedMessage, render};

/// Stands for the execution's id in a preview's quick-reply payloads: no
/// execution exists until the action runs.
const NO_EXECUTION_YET: &str = "{execution_id}";

/// Create's body with execute's `to` and `variables` beside its fields.
pub struct PreviewBody;

impl utoipa::PartialSchema for PreviewBody {
    fn schema() -> RefOr<Schema> {
        let run = ObjectBuilder::new()
            .property("to", fields::optional_phone())
            .property("variables", fields::variables())
            .description(Some("Execute's recipient override and variables"));
        AllOfBuilder::new().item(Ref::from_schema_name(ActionBody::name())).item(run).into()
    }
}

impl utoipa::ToSchema for PreviewBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ActionBody::name().into(), <ActionBody as utoipa::PartialSchema>::schema()));
        <ActionBody as utoipa::ToSchema>::schemas(schemas);
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The recipient, E.164 digits without +.
    #[schema(example = "12817126508")]
    pub to: String,
    /// The JSON body actiond would post to `/{phone_number_id}/messages` (without
    /// `biz_opaque_callback_data`; quick-reply payloads name `{execution_id}`).
    #[schema(value_type = Object)]
    pub request: Value,
    pub rendered: RenderedMessage,
}

#[utoipa::path(post, path = "/v2/_actions/{action_id}/_preview", tag = "actions", operation_id = "preview_action",
    summary = "Preview a stored action's message",
    description = "Execute's body (`to`, `variables`): renders the message as executing would, against the template as it stands now, and answers it without sending or storing anything. An inactive action previews too.",
    params(("action_id" = Uuid, Path, description = "The action to preview")),
    request_body(content = Option<ExecuteBody>, description = "Optional; an empty body previews the action as configured"),
    responses(
        (status = 200, description = "The recipient, the Graph API request and the rendered message", body = Envelope<Preview>),
        (status = 400, description = "Invalid field, or a missing variable", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such action for this tenant", body = ErrorBody),
        (status = 409, description = "The action's template or sender is no longer usable", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn preview_action(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    ActionId(id): ActionId,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Response, ApiError> {
    let request = parse_execute_for(&state, &caller.tenant, id, &body).await?;
    let action = state.store.get_action(&caller.tenant, id).await?.ok_or_else(action_not_found)?;
    let preview = preview(&state, &caller.tenant, &action.webhook, action.phone_number.as_deref(), &request).await?;
    Ok(response::ok(preview))
}

#[utoipa::path(post, path = "/v2/_actions/_preview", tag = "actions", operation_id = "preview_action_body",
    summary = "Preview an action before creating it",
    description = "Create's body plus `to` and `variables` (as execute takes them): validated exactly as create validates it (the same 400), then rendered; nothing is sent or stored.",
    request_body = PreviewBody,
    responses(
        (status = 200, description = "The recipient, the Graph API request and the rendered message", body = Envelope<Preview>),
        (status = 400, description = "Invalid action, exactly as create answers it; or an invalid `to` or a missing variable", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 409, description = "The template or sender is no longer usable", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn preview_body(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    // Only execute's `to` and `variables` join create's fields; any other
    // execute field is, as for create, an unknown field and ignored.
    let run = ["to", "variables"].into_iter().filter_map(|name| Some((name.to_owned(), body.get(name)?.clone()))).collect();
    // Create's violations first, then those of `to` and `variables`, in one answer.
    let (spec, request) = join(validate(&state, &caller.tenant, &body).await, parse_execute(&run))?;
    let phone_number = spec.phone_number.as_ref().map(|phone| phone.digits());
    let preview = preview(&state, &caller.tenant, &WebhookRecord::from_spec(&spec), phone_number, &request).await?;
    Ok(response::ok(preview))
}

async fn preview(
    state: &AppState,
    tenant: &TenantId,
    webhook: &WebhookRecord,
    phone_number: Option<&str>,
    request: &ExecuteRequest,
) -> Result<Preview, ApiError> {
    let to = recipient(request.to.as_ref(), phone_number, webhook);
    let composed = Composed::new(state, tenant, webhook, &request.variables).await?;
    let mut message = composed.message(&to, NO_EXECUTION_YET);
    if let Some(fields) = message.as_object_mut() {
        fields.remove("biz_opaque_callback_data");
    }
    let rendered = render(&composed.template, &composed.params());
    Ok(Preview { to, request: message, rendered })
}
