//! Operations: health, readiness, metrics, the OpenAPI document and its
//! committed copy, the docs page, unknown routes, the rate limit.

mod common;

use common::{app_with_seed_action, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::json;
use std::time::Instant;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    health.assert_ctx_id();
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));
    ready.assert_ctx_id();
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/v2/_actions").await;
    app.send(Method::GET, "/v2/_actions", None, None).await;
    let metrics = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    assert!(metrics.text.contains(r#"actiond_http_requests_total{route="/v2/_actions",method="GET",status="200"}"#), "{}", metrics.text);
    assert!(metrics.text.contains(r#"status="401""#));
    assert!(metrics.text.contains("actiond_http_request_duration_seconds_bucket"));
    assert!(metrics.header("x-request-id").is_some());
}

/// How busy SQLite's one writer is: transactions (each one commit of
/// every write waiting) and the writes they carried.
#[tokio::test]
async fn metrics_count_the_sqlite_writers_transactions_and_writes() {
    let (app, _) = app_with_seed_action().await;
    let metrics = app.send(Method::GET, "/metrics", None, None).await.text;
    let value = |name: &str| -> Option<f64> { metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()) };
    if app.database.is_postgres() {
        assert_eq!(value("actiond_sqlite_writes_total"), None, "PostgreSQL has no writer thread: {metrics}");
        return;
    }
    let (writes, transactions) = (value("actiond_sqlite_writes_total"), value("actiond_sqlite_transaction_duration_seconds_count"));
    // The sender's registration and the action's create are two writes at least.
    assert!(writes.is_some_and(|writes| writes >= 2.0), "{metrics}");
    assert!(transactions.is_some_and(|transactions| transactions >= 1.0 && transactions <= writes.unwrap()), "{metrics}");
    assert!(value("actiond_sqlite_transaction_duration_seconds_sum").is_some_and(|seconds| seconds > 0.0), "{metrics}");
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = spawn_app().await;
    let served = app.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(served.status, 200);
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).expect("openapi.json is committed");
    assert!(served.text == committed, "openapi.json drifted from the code: run `cargo run -- openapi > openapi.json`");
    let document = &served.body;
    assert_eq!(document["openapi"], "3.1.0");
    for path in ["/v2/_actions", "/v2/_actions/{action_id}", "/v2/_whatsapp/senders", "/v2/_whatsapp/templates", "/healthz"] {
        assert!(document["paths"].get(path).is_some(), "{path} documented");
    }
    let codes = document["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap();
    for code in ["invalid_phone_number", "template_not_approved", "param_count_mismatch", "idempotency_key_reused"] {
        assert!(codes.iter().any(|c| c == code), "{code} documented");
    }
}

/// What a generated client or a contract tester relies on: every answer a
/// route can give, every limit the server checks, links from each create.
#[tokio::test]
async fn the_openapi_document_lists_every_status_limit_and_link() {
    let app = spawn_app().await;
    let document = app.send(Method::GET, "/openapi.json", None, None).await.body;
    let operation = |path: &str, method: &str| document["paths"][path][method].clone();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        operation(path, method)["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}")).keys().cloned().collect()
    };
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            if op.get("security").is_none() {
                continue;
            }
            let listed = statuses(path, method);
            for status in ["401", "403", "429", "500", "503"] {
                assert!(listed.contains(&status.to_owned()), "{method} {path} lists {status}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415"] {
                    assert!(listed.contains(&status.to_owned()), "{method} {path} lists {status}");
                }
            }
        }
    }
    let rate_limited = &document["components"]["responses"]["TooManyRequests"];
    assert!(rate_limited["headers"].get("Retry-After").is_some());

    let query = |path: &str, method: &str, name: &str| {
        let parameters = operation(path, method)["parameters"].as_array().cloned().unwrap_or_default();
        parameters.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{method} {path} takes {name}"))["schema"].clone()
    };
    assert_eq!(query("/v2/_actions", "get", "page")["minimum"], 1);
    assert_eq!(query("/v2/_actions", "get", "per_page")["maximum"], 100);
    assert_eq!(query("/v2/_executions/{execution_id}", "get", "wait")["maximum"], 60);
    let key = query("/v2/_actions", "post", "Idempotency-Key");
    assert_eq!((key["minLength"].clone(), key["maxLength"].clone(), key["pattern"].clone()), (json!(1), json!(255), json!("^[!-~]+$")));
    let execute = &document["components"]["schemas"]["ExecuteBody"]["properties"]["reply_timeout"];
    assert_eq!((execute["minimum"].clone(), execute["maximum"].clone()), (json!(10), json!(86400)));
    assert!(document["components"]["schemas"]["ActionBody"]["properties"]["name"]["pattern"].is_string());

    let links = operation("/v2/_actions", "post")["responses"]["201"]["links"].clone();
    for (name, target) in [
        ("GetAction", "get_action"),
        ("ReplaceAction", "replace_action"),
        ("PatchAction", "patch_action"),
        ("DeleteAction", "delete_action"),
        ("ExecuteAction", "execute_action"),
    ] {
        assert_eq!(links[name]["operationId"], target, "create links to {target}");
        assert_eq!(links[name]["parameters"]["action_id"], "$response.body#/data/action_id");
    }
    let links = operation("/v2/_actions/{action_id}/_execute", "post")["responses"]["202"]["links"].clone();
    assert_eq!(links["GetExecution"]["operationId"], "get_execution");
    assert_eq!(links["GetExecution"]["parameters"]["execution_id"], "$response.body#/data/execution_id");
}

#[tokio::test]
async fn the_docs_page_is_self_contained_html() {
    let app = spawn_app().await;
    let page = app.send(Method::GET, "/docs", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text.contains("/openapi.json"));
    assert!(!page.text.contains("<script src=\"http"), "no external scripts");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    let missing = app.get("/v2/nothing-here").await;
    assert_eq!(missing.status, 404);
    missing.assert_ctx_id();
    assert_eq!(missing.error_codes()[0].1, "not_found");
    let wrong_method = app.call(Method::PUT, "/v2/_actions", None).await;
    assert_eq!(wrong_method.status, 405);
    wrong_method.assert_ctx_id();
    assert_eq!(wrong_method.error_codes()[0].1, "method_not_allowed");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_tenant() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 3;
    })
    .await;
    // A token refills each second, so a slow machine may let one more through
    // per second the eight took: the burst is the floor, the refills the slack.
    let started = Instant::now();
    let replies = futures::future::join_all((0..8).map(|_| app.get("/v2/_actions"))).await;
    let refills = started.elapsed().as_secs() as usize;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=3 + refills).contains(&allowed), "{statuses:?} in {refills} s");
    assert_eq!(allowed + statuses.iter().filter(|s| **s == 429).count(), 8, "{statuses:?}");
    let limited = replies.iter().find(|r| r.status == 429).expect("the burst spent, a request is refused");
    limited.assert_ctx_id();
    assert_eq!(limited.error_codes()[0].1, "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let other = app.send(Method::GET, "/v2/_actions", Some(&app.token_for("another", &[])), None).await;
    assert_eq!(other.status, 200, "each tenant has its own bucket");
}
