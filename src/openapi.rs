//! The OpenAPI 3.1 document, generated from the handlers and types. The
//! committed `openapi.json` must equal it; CI fails on drift.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{actions, executions, ops, senders, webhook};

#[derive(OpenApi)]
#[openapi(
    info(title = "actiond", description = "Stores, validates and runs WhatsApp actions for AI voice agents. Compatible with ContactSwing's v2 actions API.\n\nAuthenticate with `Authorization: Bearer <JWT>`. Every JSON response carries a `ctx_id`, also sent as the `X-Request-ID` header. Errors are `{ctx_id, detail, errors: [{field, code, message}]}`; the codes are listed under ErrorCode."),
    paths(
        actions::create, actions::list, actions::get, actions::replace, actions::patch, actions::delete,
        senders::register, senders::list, senders::get, senders::delete, senders::sync, senders::templates,
        executions::execute, executions::get, executions::list, webhook::verify, webhook::receive,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::docs,
    ),
    components(schemas(crate::error_code::ErrorCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "actions", description = "WhatsApp actions"),
        (name = "executions", description = "Running actions during calls"),
        (name = "whatsapp", description = "WhatsApp senders, their templates, and Meta's webhook"),
        (name = "operations", description = "Health, readiness, metrics and documentation"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The document as pretty JSON with a trailing newline, as committed.
pub fn document() -> String {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes") + "\n");
    DOCUMENT.clone()
}
