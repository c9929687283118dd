//! The stable error codes of the API, each with the one line the OpenAPI
//! document prints for it. Clients match on these; never rename one.

use serde::{Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

macro_rules! error_codes {
    ($($variant:ident => $code:literal: $description:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $description),* }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json": "400: the body is not valid JSON, or not a JSON object.",
    InvalidJsonRpc => "invalid_json_rpc": "400 on /mcp: the body is JSON but not one JSON-RPC 2.0 request or notification (a batch, another version, no method); or, in a JSON-RPC error answered 200, a served method's params are not what it takes.",
    InvalidType => "invalid_type": "400: a field has the wrong JSON type.",
    MissingField => "missing_field": "400: a required field is absent or null.",
    InvalidLength => "invalid_length": "400: a text field is empty or longer than allowed.",
    InvalidCharacter => "invalid_character": "400: a text field or query parameter holds the NUL character (U+0000), which none may hold.",
    UnsupportedActionType => "unsupported_action_type": "400: `type` is not SEND_WHATSAPP.",
    InvalidActionTiming => "invalid_action_timing": "400: `action_timing` is not one of the accepted values (during).",
    InvalidPhoneNumber => "invalid_phone_number": "400: not a valid phone number in international form with its country code.",
    UnknownSender => "unknown_sender": "400: `webhook.from` is not a WhatsApp phone-number ID registered for this tenant.",
    InvalidTemplateName => "invalid_template_name": "400: the template name breaks WhatsApp's rule ^[a-z0-9_]{1,512}$.",
    TemplateNotFound => "template_not_found": "400: the sender's WhatsApp Business Account has no template of that name in that language.",
    TemplateNotApproved => "template_not_approved": "400: the template exists but is not APPROVED; the message names its status.",
    UnsupportedTemplate => "unsupported_template": "400: the template has a part actiond cannot fill from string parameters: a LOCATION header, a carousel, a limited-time offer, a catalog or product button.",
    InvalidLanguageCode => "invalid_language_code": "400: not one of WhatsApp's template language codes.",
    ParamCountMismatch => "param_count_mismatch": "400: the number of parameters differs from the template's placeholders; the message names both counts.",
    InvalidParameter => "invalid_parameter": "400: a template parameter breaks WhatsApp's text rules (1-1024 characters, no newline or tab, at most 4 consecutive spaces) or holds a malformed {{variable}}.",
    InvalidMediaParameter => "invalid_media_parameter": "400: a media header parameter is not an https:// URL or a media id.",
    InvalidQueryParameter => "invalid_query_parameter": "400: a query parameter has a value outside its range or type.",
    InvalidIdempotencyKey => "invalid_idempotency_key": "400: the Idempotency-Key header is empty, longer than 255 characters or not printable ASCII.",
    MissingVariable => "missing_variable": "400: a {{variable}} of the action's parameters has no value in the execute body's `variables`.",
    InvalidReplyTimeout => "invalid_reply_timeout": "400: `reply_timeout` is not a whole number of seconds from 10 to 86,400.",
    InvalidWhatsappId => "invalid_whatsapp_id": "400: a WhatsApp phone-number ID or WABA ID is not a numeric string.",
    SandboxReplyRefused => "sandbox_reply_refused": "400: the dev sandbox cannot answer that message: it was not sent yet, or its template has no quick-reply button with that label.",
    InvalidUrl => "invalid_url": "400: an event endpoint's `url` is not an absolute https:// URL with a host and without credentials (http:// only with ACTIOND_EVENTS_ALLOW_LOCAL), or is over 2,048 characters.",
    ForbiddenWebhookTarget => "forbidden_webhook_target": "400: an event endpoint's `url` is, or resolves to, a loopback, private, link-local, multicast or otherwise internal address.",
    UnknownEventType => "unknown_event_type": "400: an entry of `events` is not one of the event types.",
    InvalidSenderCredentials => "invalid_sender_credentials": "400: Meta's Graph API refused the sender's credentials; the message carries Meta's reason.",
    InvalidSignature => "invalid_signature": "401: a webhook's X-Hub-Signature-256 is missing or is not the HMAC of its body under the app secret.",
    InvalidToken => "invalid_token": "401: the bearer token is missing, malformed, expired, not yet valid, or its signature, issuer or audience is wrong.",
    InsufficientScope => "insufficient_scope": "403: the token lacks the scope the route needs; the message names it.",
    VerificationFailed => "verification_failed": "403: Meta's webhook handshake named the wrong hub.verify_token or mode.",
    NotFound => "not_found": "404: no such resource for this tenant (another tenant's id answers the same).",
    MethodNotAllowed => "method_not_allowed": "405: the route exists but not with this method.",
    ActionInactive => "action_inactive": "409: the action is inactive (is_active false); activate it to execute it.",
    TemplateUnavailable => "template_unavailable": "409: the action's template is no longer APPROVED or present, changed, now has parts actiond cannot fill, or its sender was removed; the message says which.",
    IdempotencyKeyReused => "idempotency_key_reused": "409: the Idempotency-Key was used in the last 24 h with a different body, or for another action.",
    ActionChanged => "action_changed": "409: other writes to the action kept overtaking a PATCH, which merges into the action as it finds it; send it again.",
    SenderTaken => "sender_taken": "409: another tenant registered this WhatsApp phone-number ID.",
    RequestTimeout => "request_timeout": "408: the body did not arrive within 30 s of the request's head.",
    PayloadTooLarge => "payload_too_large": "413: the body is larger than 64 KiB (3 MiB for Meta's webhook).",
    UnsupportedMediaType => "unsupported_media_type": "415: the body is not sent as Content-Type: application/json.",
    TooManyWaits => "too_many_waits": "429: the tenant holds ACTIOND_MAX_WAITS_PER_TENANT ?wait requests open on this server already; retry after the Retry-After seconds.",
    RateLimited => "rate_limited": "429: the tenant's request rate limit is spent; retry after the Retry-After seconds.",
    InternalError => "internal_error": "500: an internal failure; the ctx_id lets an operator find it in the logs.",
    GraphUnavailable => "graph_unavailable": "502: Meta's Graph API could not be reached or answered unusably.",
    ServiceUnavailable => "service_unavailable": "503: the service is starting, stopping or cannot reach its database.",
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let listing: String = ErrorCode::ALL.iter().map(|code| format!("- `{}`: {}\n", code.as_str(), code.description())).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .description(Some(format!("Stable error codes.\n\n{listing}")))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}
