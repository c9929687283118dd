//! `/v2/_whatsapp/senders` and `/v2/_whatsapp/templates`: the tenant's WhatsApp
//! business numbers, their sealed credentials and their WABA's templates.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorBody, join};
use super::extract::{ActionsRead, Authorized, JsonObject, PageParams, PhoneNumberId, QueryParams, WhatsappAdmin, sender_not_found};
use super::response::{self, Envelope, Listing};
use crate::domain::{FieldError, Fields, TenantId};
use crate::error_code::ErrorCode;
use crate::openapi::fields;
use crate::store::{NewSender, SenderRecord, SenderSaved, TemplateRecord};
use crate::whatsapp::templates::{ParameterCounts, TemplateShape};
use crate::whatsapp::{GraphError, errors};

pub const ACCESS_TOKEN_MAX: usize = 4096;
pub const WHATSAPP_ID_MAX: usize = 32;

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the OpenAPI document only.
pub struct SenderBody {
    /// The business phone number's WhatsApp phone-number ID.
    #[schema(schema_with = fields::whatsapp_id)]
    phone_number_id: String,
    /// The WhatsApp Business Account that owns the number and its templates.
    #[schema(schema_with = fields::whatsapp_id)]
    waba_id: String,
    #[schema(schema_with = fields::access_token)]
    access_token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedSender {
    pub phone_number_id: String,
    pub deleted: bool,
}

/// One language version of a template, with the parameters an action must give.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    /// The sender (phone-number ID) whose WABA holds the template.
    pub sender: String,
    #[serde(flatten)]
    pub template: TemplateRecord,
    /// How many header, body and button parameters an action must give.
    pub parameters: ParameterCounts,
}

impl TemplateView {
    fn new(sender: String, template: TemplateRecord) -> Self {
        let parameters = TemplateShape::of(&template).counts();
        Self { sender, template, parameters }
    }
}

fn whatsapp_id<'a>(fields: &mut Fields<'a, '_>, name: &str) -> Option<&'a str> {
    let raw = fields.required_str(name)?.trim();
    if raw.is_empty() || raw.len() > WHATSAPP_ID_MAX || !raw.bytes().all(|b| b.is_ascii_digit()) {
        fields.error(name, ErrorCode::InvalidWhatsappId, format!("must be Meta's numeric ID (1-{WHATSAPP_ID_MAX} digits)"));
        return None;
    }
    Some(raw)
}

/// Meta's refusal of a read of `object` (the field naming the id read)
/// becomes the client's 400 on the field it concerns: the token's when the
/// code concerns it, else the object's (code 100: no such object, or the
/// token may not see it). No answer is a 502.
fn graph_failure(object: &str, error: GraphError) -> ApiError {
    match error {
        GraphError::Refused { code, message } => ApiError::bad_request(
            if errors::concerns_token(code) { "access_token" } else { object },
            ErrorCode::InvalidSenderCredentials,
            format!("Meta refused these credentials: {message} (code {code})"),
        ),
        unreachable @ GraphError::Unreachable(_) => ApiError::graph_unavailable(unreachable),
    }
}

#[utoipa::path(post, path = "/v2/_whatsapp/senders", tag = "whatsapp", operation_id = "register_sender",
    summary = "Register a WhatsApp sender",
    description = "Checks the credentials against the Graph API (GET /{phone_number_id}), fetches every template of the WABA (following paging.next), seals the access token with AES-256-GCM and stores the sender. Registering a number this tenant already has replaces its credentials and templates (200).",
    request_body = SenderBody,
    responses(
        (status = 201, description = "Registered", body = Envelope<SenderRecord>,
            headers(("Location" = String, description = "/v2/_whatsapp/senders/{phone_number_id}")),
            links(
                ("GetSender" = (operation_id = "get_sender", parameters(("phone_number_id" = "$response.body#/data/phone_number_id")))),
                ("SyncSender" = (operation_id = "sync_sender", parameters(("phone_number_id" = "$response.body#/data/phone_number_id")))),
                ("DeleteSender" = (operation_id = "delete_sender", parameters(("phone_number_id" = "$response.body#/data/phone_number_id")))),
                ("ListTemplates" = (operation_id = "list_templates", parameters(("sender" = "$response.body#/data/phone_number_id")))),
            )),
        (status = 200, description = "Already registered by this tenant: credentials and templates replaced", body = Envelope<SenderRecord>),
        (status = 400, description = "Invalid field, or credentials Meta refuses", body = ErrorBody),
        (status = 403, description = "The token lacks whatsapp:admin", body = ErrorBody),
        (status = 409, description = "Another tenant registered this phone-number ID", body = ErrorBody),
        (status = 502, description = "The Graph API could not be reached", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<WhatsappAdmin>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut fields = Fields::new(&body, &mut errors);
    let phone_number_id = whatsapp_id(&mut fields, "phone_number_id");
    let waba_id = whatsapp_id(&mut fields, "waba_id");
    let access_token = fields.required_str("access_token").map(str::trim).filter(|token| {
        if token.is_empty() || token.len() > ACCESS_TOKEN_MAX {
            fields.error("access_token", ErrorCode::InvalidLength, format!("must be 1-{ACCESS_TOKEN_MAX} characters"));
            return false;
        }
        // It travels in an Authorization header: anything else is not a token Meta issued.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            fields.error(
                "access_token",
                ErrorCode::InvalidSenderCredentials,
                "must be printable ASCII without spaces, as Meta's tokens are",
            );
            return false;
        }
        true
    });
    let (Some(phone_number_id), Some(waba_id), Some(access_token)) = (phone_number_id, waba_id, access_token) else {
        return Err(ApiError::validation(errors));
    };

    match save_sender(&state, &caller.tenant, phone_number_id, waba_id, access_token).await? {
        SenderSaved::Created(sender) => {
            let location = (header::LOCATION, format!("/v2/_whatsapp/senders/{}", sender.phone_number_id));
            Ok(response::respond(StatusCode::CREATED, sender, Some(response::PROCESSED), &[location]))
        }
        SenderSaved::Updated(sender) => Ok(response::ok(sender)),
        SenderSaved::Taken => {
            Err(ApiError::conflict("phone_number_id", ErrorCode::SenderTaken, "another tenant registered this WhatsApp phone-number ID"))
        }
    }
}

/// Checks a sender's credentials with Meta, fetches its templates and stores it
/// with its token sealed. Dev mode registers the sandbox sender through here too.
pub async fn save_sender(
    state: &AppState,
    tenant: &TenantId,
    phone_number_id: &str,
    waba_id: &str,
    access_token: &str,
) -> Result<SenderSaved, ApiError> {
    // Noted before Meta is asked, as a sync notes it: a template status Meta's
    // webhook changes meanwhile is kept (the same WABA's only).
    let basis = state.store.sync_basis(tenant, phone_number_id).await?;
    let templates_read_after = basis.filter(|basis| basis.credentials.waba_id == waba_id).map(|basis| basis.template_changes);
    // Asked together, so that Meta refusing both ids is one answer naming both.
    let (number, templates) =
        tokio::join!(state.graph.phone_number(phone_number_id, access_token), state.graph.templates(waba_id, access_token));
    let (number, templates) =
        join(number.map_err(|e| graph_failure("phone_number_id", e)), templates.map_err(|e| graph_failure("waba_id", e)))?;
    let sender = NewSender {
        phone_number_id: phone_number_id.to_owned(),
        waba_id: waba_id.to_owned(),
        sealed_access_token: state.sealer.seal(access_token, phone_number_id),
        display_phone_number: number.display_phone_number,
        verified_name: number.verified_name,
        quality_rating: number.quality_rating,
        templates_read_after,
    };
    Ok(state.store.save_sender(tenant, sender, templates).await?)
}

#[utoipa::path(get, path = "/v2/_whatsapp/senders", tag = "whatsapp", operation_id = "list_senders",
    summary = "List the tenant's senders",
    responses(
        (status = 200, description = "Every sender of the tenant, oldest first", body = Envelope<Vec<SenderRecord>>),
        (status = 403, description = "The token lacks whatsapp:admin", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, Authorized(caller, _): Authorized<WhatsappAdmin>) -> Result<Response, ApiError> {
    Ok(response::ok(state.store.list_senders(&caller.tenant).await?))
}

#[utoipa::path(get, path = "/v2/_whatsapp/senders/{phone_number_id}", tag = "whatsapp", operation_id = "get_sender",
    summary = "Get a sender",
    params(("phone_number_id" = String, Path, description = "The sender's WhatsApp phone-number ID")),
    responses(
        (status = 200, description = "The sender", body = Envelope<SenderRecord>),
        (status = 403, description = "The token lacks whatsapp:admin", body = ErrorBody),
        (status = 404, description = "No such sender for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<WhatsappAdmin>,
    PhoneNumberId(id): PhoneNumberId,
) -> Result<Response, ApiError> {
    let sender = state.store.get_sender(&caller.tenant, &id).await?.ok_or_else(sender_not_found)?;
    Ok(response::ok(sender))
}

#[utoipa::path(delete, path = "/v2/_whatsapp/senders/{phone_number_id}", tag = "whatsapp", operation_id = "delete_sender",
    summary = "Delete a sender and its templates",
    params(("phone_number_id" = String, Path, description = "The sender's WhatsApp phone-number ID")),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeletedSender>),
        (status = 403, description = "The token lacks whatsapp:admin", body = ErrorBody),
        (status = 404, description = "No such sender for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<WhatsappAdmin>,
    PhoneNumberId(id): PhoneNumberId,
) -> Result<Response, ApiError> {
    if !state.store.delete_sender(&caller.tenant, &id).await? {
        return Err(sender_not_found());
    }
    Ok(response::ok(DeletedSender { phone_number_id: id, deleted: true }))
}

#[utoipa::path(post, path = "/v2/_whatsapp/senders/{phone_number_id}/_sync", tag = "whatsapp", operation_id = "sync_sender",
    summary = "Re-fetch a sender's templates from the Graph API",
    params(("phone_number_id" = String, Path, description = "The sender's WhatsApp phone-number ID")),
    responses(
        (status = 200, description = "The sender with its refreshed template count", body = Envelope<SenderRecord>),
        (status = 400, description = "Meta refused the stored credentials; register the sender again with a valid token", body = ErrorBody),
        (status = 403, description = "The token lacks whatsapp:admin", body = ErrorBody),
        (status = 404, description = "No such sender for this tenant", body = ErrorBody),
        (status = 502, description = "The Graph API could not be reached", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn sync(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<WhatsappAdmin>,
    PhoneNumberId(id): PhoneNumberId,
) -> Result<Response, ApiError> {
    let basis = state.store.sync_basis(&caller.tenant, &id).await?.ok_or_else(sender_not_found)?;
    let credentials = &basis.credentials;
    let access_token = state.sealer.open(&credentials.sealed_access_token, &id).map_err(ApiError::internal)?;
    let templates = state.graph.templates(&credentials.waba_id, &access_token).await.map_err(|e| graph_failure("waba_id", e))?;
    let sender = state.store.replace_templates(&caller.tenant, &id, basis, templates).await?.ok_or_else(sender_not_found)?;
    Ok(response::ok(sender))
}

#[utoipa::path(get, path = "/v2/_whatsapp/templates", tag = "whatsapp", operation_id = "list_templates",
    summary = "List templates of the tenant's senders",
    description = "Each template language version with the parameter counts an action must give.",
    params(
        ("sender" = Option<String>, Query, description = "Only this sender's (phone-number ID) templates", pattern = r"^[^\u0000]*$"),
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of templates", body = Envelope<Listing<TemplateView>>),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 403, description = "The token lacks actions:read", body = ErrorBody),
        (status = 404, description = "No such sender for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn templates(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<ActionsRead>,
    mut query: QueryParams,
) -> Result<Response, ApiError> {
    let page = query.page();
    let sender = query.get("sender").map(str::to_owned);
    query.finish()?;
    if let Some(sender) = &sender {
        // Named as the client sent it: the query's `sender`, not a path's phone_number_id.
        let unknown = || ApiError::not_found("sender", "no sender with this phone-number ID");
        state.store.get_sender(&caller.tenant, sender).await?.ok_or_else(unknown)?;
    }
    let (templates, total) = state.store.list_templates(&caller.tenant, sender.as_deref(), page).await?;
    let views = templates.into_iter().map(|(sender, template)| TemplateView::new(sender, template)).collect();
    Ok(response::list::<TemplateView>(views, total, page))
}
