//! The OpenAPI 3.1 document, generated from the handlers and types. The
//! committed `openapi.json` must equal it; CI fails on drift.

use std::sync::LazyLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http::{actions, endpoints, executions, ops, preview, senders, webhook};

pub mod fields;

#[derive(OpenApi)]
#[openapi(
    info(title = "actiond", description = "Stores, validates and runs WhatsApp actions for AI voice agents. Compatible with ContactSwing's v2 actions API.\n\nAuthenticate with `Authorization: Bearer <JWT>`. Every JSON response carries a `ctx_id`, also sent as the `X-Request-ID` header. Errors are `{ctx_id, detail, errors: [{field, code, message}]}`; the codes are listed under ErrorCode.\n\nThe same tokens open `/mcp`, a Model Context Protocol server (Streamable HTTP, protocol 2025-06-18 and later, stateless, JSON answers): each active action is a tool whose input schema is its `{{variables}}` plus optional `to` and `call_id`, beside `get_execution {execution_id, wait_seconds?}` and `list_actions`. A tool call runs exactly as `POST /v2/_actions/{id}/_execute`; its error is a tool result (`isError`) whose text starts with the error code, while an unknown tool is JSON-RPC error -32602."),
    paths(
        actions::create, actions::list, actions::get, actions::replace, actions::patch, actions::delete,
        senders::register, senders::list, senders::get, senders::delete, senders::sync, senders::templates,
        executions::execute, executions::get, executions::list, preview::preview_action, preview::preview_body,
        webhook::verify, webhook::receive,
        endpoints::create, endpoints::list, endpoints::get, endpoints::patch, endpoints::delete,
        endpoints::rotate_secret, endpoints::test, endpoints::attempts,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::docs,
    ),
    components(schemas(crate::error_code::ErrorCode)),
    modifiers(&BearerAuth, &SharedResponses, &CamelCaseLinks),
    tags(
        (name = "actions", description = "WhatsApp actions"),
        (name = "executions", description = "Running actions during calls"),
        (name = "whatsapp", description = "WhatsApp senders, their templates, and Meta's webhook"),
        (name = "events", description = "Event endpoints: signed webhooks (Standard Webhooks) telling a voice platform what happened"),
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

/// The answers every operation of a kind can give, listed here once so that no
/// route's list misses one: an authenticated route can refuse the token, find
/// the tenant's rate limit spent, or find the database unavailable; a route
/// that reads a JSON body can find it too large, of the wrong type or too slow.
struct SharedResponses;

const AUTHENTICATED: &[(&str, &str)] =
    &[("401", "Unauthorized"), ("429", "TooManyRequests"), ("500", "InternalError"), ("503", "ServiceUnavailable")];
const JSON_BODY: &[(&str, &str)] = &[("408", "RequestTimeout"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType")];

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let retry_after =
            HeaderBuilder::new().schema(Object::with_type(Type::Integer)).description(Some("Seconds to wait before retrying"));
        let www_authenticate =
            HeaderBuilder::new().schema(Object::with_type(Type::String)).description(Some("Bearer error=\"invalid_token\""));
        for (name, response) in [
            ("Unauthorized", error("The bearer token is missing, invalid or expired (invalid_token)").header("WWW-Authenticate", www_authenticate.build())),
            (
                "TooManyRequests",
                error("The tenant's request rate limit is spent (rate_limited), or with ?wait it already holds its most open waits (too_many_waits)")
                    .header("Retry-After", retry_after.build()),
            ),
            ("InternalError", error("An internal error (internal_error); nothing in the request causes one: quote the ctx_id")),
            ("ServiceUnavailable", error("The database is unreachable or refuses writes (service_unavailable); retry shortly")),
            ("RequestTimeout", error("The body did not arrive within 30 s (request_timeout); the connection closes")),
            ("PayloadTooLarge", error("The body is over 64 KiB (payload_too_large)")),
            ("UnsupportedMediaType", error("The body is not sent as application/json (unsupported_media_type)")),
        ] {
            components.responses.insert(name.to_owned(), RefOr::T(response.build()));
        }
        for operation in operations(openapi) {
            if operation.security.is_some() {
                add(operation, AUTHENTICATED);
                if operation.request_body.is_some() {
                    add(operation, JSON_BODY);
                }
            }
        }
    }
}

/// Every operation of the document, whatever its method.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
}

fn add(operation: &mut Operation, shared: &[(&str, &str)]) {
    for (status, name) in shared {
        let response: RefOr<Response> = RefOr::Ref(Ref::from_response_name(*name));
        operation.responses.responses.entry((*status).to_owned()).or_insert(response);
    }
}

/// utoipa 5 writes a link's `operationId` and `requestBody` in snake_case,
/// which no OpenAPI tool reads; this writes each link as the spec spells it.
struct CamelCaseLinks;

impl Modify for CamelCaseLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else { continue };
                if response.links.is_empty() {
                    continue;
                }
                let links: serde_json::Map<String, serde_json::Value> = std::mem::take(&mut response.links)
                    .into_iter()
                    .map(|(name, link)| (name, camel_case_keys(serde_json::to_value(link).expect("a link serializes"))))
                    .collect();
                response.extensions.get_or_insert_with(Default::default).insert("links".to_owned(), links.into());
            }
        }
    }
}

fn camel_case_keys(link: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(fields) = link else { return link };
    let camel = |key: String| match key.as_str() {
        "operation_id" => "operationId".to_owned(),
        "operation_ref" => "operationRef".to_owned(),
        "request_body" => "requestBody".to_owned(),
        _ => key,
    };
    fields.into_iter().map(|(key, value)| (camel(key), value)).collect::<serde_json::Map<_, _>>().into()
}

/// The document as pretty JSON with a trailing newline, as committed.
pub fn document() -> String {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes") + "\n");
    DOCUMENT.clone()
}
