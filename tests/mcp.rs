//! `/mcp` (CONTRACT §11) spoken as JSON-RPC over Streamable HTTP: the
//! tenant's active actions as tools, their calls behaving as `_execute`,
//! scopes, and the transport's 401. scripts/mcp-test drives the same server
//! with the Python `mcp` SDK's client.

mod common;

use std::time::{Duration, Instant};

use actiond::auth::Scope;
use actiond::whatsapp::sandbox::ReplyRequest;
use common::{TestApp, app_with_seed_action, seed_body};
use reqwest::Method;
use serde_json::{Value, json};

/// One JSON-RPC request; the HTTP status and the JSON answer.
async fn rpc(app: &TestApp, token: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    post(app, token, body).await
}

/// A body as it is, sent as JSON to `/mcp`; the HTTP status and the JSON answer.
async fn post(app: &TestApp, token: Option<&str>, body: String) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}/mcp", app.base))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn call(app: &TestApp, token: &str, tool: &str, arguments: Value) -> Value {
    let (status, answer) = rpc(app, Some(token), "tools/call", json!({"name": tool, "arguments": arguments})).await;
    assert_eq!(status, 200, "{answer}");
    answer["result"].clone()
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn actions_are_tools_that_run_exactly_as_execute() {
    let (app, action) = app_with_seed_action().await;
    let token = app.token(&[]);
    let (status, initialized) = rpc(
        &app,
        Some(&token),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
    )
    .await;
    assert_eq!(status, 200, "{initialized}");
    assert_eq!(initialized["result"]["serverInfo"]["name"], "actiond");
    assert!(initialized["result"]["capabilities"]["tools"].is_object());
    assert_eq!(initialized["result"]["protocolVersion"], "2025-06-18");
    let ping = |accept: &str| {
        let request = app.http.post(format!("{}/mcp", app.base)).bearer_auth(&token).header("accept", accept);
        request.json(&json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})).send()
    };
    for accept in ["*/*", "application/json", "text/html, application/*;q=0.5"] {
        assert_eq!(ping(accept).await.unwrap().status(), 200, "Accept {accept}: the answer is JSON, which the client takes");
    }
    for accept in ["text/html", "application/json;q=0"] {
        assert_eq!(ping(accept).await.unwrap().status(), 406, "Accept {accept}: a client that takes no JSON");
    }
    for older in ["2024-11-05", "2025-03-26"] {
        let params = json!({"protocolVersion": older, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}});
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params});
        let answer = app.http.post(format!("{}/mcp", app.base)).header("accept", "application/json, text/event-stream").bearer_auth(&token);
        let offered: Value = answer.json(&body).send().await.unwrap().json().await.unwrap();
        // The specification: a version the server speaks, the latest it speaks.
        assert_eq!(offered["result"]["protocolVersion"], "2025-11-25", "{older}: not a version /mcp does not speak: {offered}");
    }

    let (_, listed) = rpc(&app, Some(&token), "tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap_or_else(|| panic!("{listed}")).clone();
    let names: Vec<&str> = tools.iter().map(|tool| tool["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["my_whatsapp_action", "get_execution", "list_actions"]);
    let schema = &tools[0]["inputSchema"];
    assert_eq!(schema["required"], json!(["customer_name"]));
    assert_eq!(schema["properties"]["customer_name"]["type"], "string");
    assert!(schema["properties"]["to"].is_object() && schema["properties"]["call_id"].is_object());
    assert_eq!(tools[0]["description"], "Send WhatsApp when user requests messaging");

    let ran = call(&app, &token, "my_whatsapp_action", json!({"customer_name": "Ana", "call_id": "call-mcp"})).await;
    assert_ne!(ran["isError"], true, "{ran}");
    let execution = ran["structuredContent"].clone();
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    assert_eq!((execution["action_id"].as_str(), execution["call_id"].as_str()), (Some(action.as_str()), Some("call-mcp")));
    assert_eq!(text(&ran), "The WhatsApp message to +12817126508 is on its way.");
    let again = call(&app, &token, "my_whatsapp_action", json!({"customer_name": "Ana", "call_id": "call-mcp"})).await;
    assert_eq!(again["structuredContent"]["execution_id"], id.as_str(), "the same call id runs the action once");
    let rest = app.get("/v2/_executions?call_id=call-mcp").await;
    assert_eq!(rest.body["data"]["pagination"]["total_records"], 1);

    app.reaches(&id, "read").await;
    app.sandbox
        .reply(ReplyRequest { execution_id: Some(id.clone()), text: Some("yes please".into()), ..Default::default() })
        .await
        .unwrap();
    // 5.0 is a whole number to JSON Schema's `integer`, as 5 is.
    let settled = call(&app, &token, "get_execution", json!({"execution_id": id, "wait_seconds": 5.0})).await;
    assert_eq!(settled["structuredContent"]["status"], "replied", "{settled}");
    assert_eq!(text(&settled), "+12817126508 replied on WhatsApp: \"yes please\".");

    let listed = call(&app, &token, "list_actions", json!({})).await;
    assert_eq!(listed["structuredContent"]["actions"][0]["id"], action.as_str());
    assert_eq!(text(&listed), "There is one WhatsApp action: My Whatsapp Action.");
}

#[tokio::test]
async fn an_action_that_uses_call_id_in_its_message_runs_through_its_tool() {
    let app = common::spawn_app().await;
    app.register_sender().await;
    let mut body = seed_body();
    body["webhook"]["body_params"] = json!(["{{call_id}}"]);
    app.create_action(&body).await;
    let token = app.token(&[]);
    let (_, listed) = rpc(&app, Some(&token), "tools/list", json!({})).await;
    let schema = &listed["result"]["tools"][0]["inputSchema"];
    assert_eq!(schema["required"], json!(["call_id"]), "{listed}");
    assert!(schema["properties"]["call_id"]["description"].as_str().unwrap().contains("fills {{call_id}}"), "{schema}");

    let ran = call(&app, &token, "my_whatsapp_action", json!({"call_id": "call-77"})).await;
    assert_ne!(ran["isError"], true, "{ran}");
    let id = ran["structuredContent"]["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(ran["structuredContent"]["call_id"], "call-77");
    app.reaches(&id, "read").await;
    let sent = app.sandbox.sent().into_iter().find(|sent| sent.payload["biz_opaque_callback_data"] == id.as_str()).expect("sent");
    let body_component = &sent.payload["template"]["components"][0];
    assert_eq!(body_component["parameters"][0]["text"], "call-77", "{}", sent.payload);
}

#[tokio::test]
async fn a_wait_whose_client_has_gone_gives_back_the_tenants_wait() {
    let app = common::spawn_app_with(|settings| settings.max_waits_per_tenant = 1).await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    // Mandatory, read and never answered: a wait on it holds for all its seconds.
    app.reaches(&id, "read").await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "get_execution", "arguments": {"execution_id": id, "wait_seconds": 30}}});
    let abandoned = app
        .http
        .post(format!("{}/mcp", app.base))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .bearer_auth(app.token(&[]))
        .json(&call)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(abandoned.is_err_and(|error| error.is_timeout()), "the wait held until the client left");
    let started = Instant::now();
    while app.get(&format!("/v2/_executions/{id}?wait=1")).await.status == 429 {
        assert!(started.elapsed() < Duration::from_secs(10), "the tenant's one wait is still held by a client that left");
    }
}

#[tokio::test]
async fn errors_are_tool_results_with_the_apis_codes_and_scopes_hold() {
    let (app, _) = app_with_seed_action().await;
    let token = app.token(&[]);
    let missing = call(&app, &token, "my_whatsapp_action", json!({"call_id": "c-1"})).await;
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(text(&missing).starts_with("missing_variable:") && text(&missing).contains("variables.customer_name"), "{missing}");
    let bad_phone = call(&app, &token, "my_whatsapp_action", json!({"customer_name": "Ana", "to": "12"})).await;
    assert!(text(&bad_phone).starts_with("invalid_phone_number:"), "{bad_phone}");
    // An unknown tool is a protocol error, as the MCP specification says.
    let (status, unknown) = rpc(&app, Some(&token), "tools/call", json!({"name": "no_such_tool", "arguments": {}})).await;
    assert_eq!((status, unknown["error"]["code"].as_i64()), (200, Some(-32602)), "{unknown}");
    let nothing = call(&app, &token, "get_execution", json!({"execution_id": "01a242cc-0000-7000-8000-000000000000"})).await;
    assert!(text(&nothing).starts_with("not_found:"), "{nothing}");
    let unnamed = call(&app, &token, "get_execution", json!({"wait_seconds": 1.0})).await;
    assert!(text(&unnamed).starts_with("missing_field: execution_id:"), "{unnamed}");

    let reader = app.token(&[Scope::ActionsRead]);
    let refused = call(&app, &reader, "my_whatsapp_action", json!({"customer_name": "Ana"})).await;
    assert!(refused["isError"] == true && text(&refused).starts_with("insufficient_scope:"), "{refused}");
    let executor = app.token(&[Scope::ActionsExecute]);
    let (_, not_listed) = rpc(&app, Some(&executor), "tools/list", json!({})).await;
    assert!(not_listed["error"]["message"].as_str().unwrap_or_default().contains("insufficient_scope"), "{not_listed}");
    let hidden = call(&app, &executor, "list_actions", json!({})).await;
    assert!(text(&hidden).starts_with("insufficient_scope:"), "{hidden}");

    let (status, _) = rpc(&app, None, "tools/list", json!({})).await;
    assert_eq!(status, 401, "no token is refused at the transport");
    let (status, _) = rpc(&app, Some("not-a-token"), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn only_active_actions_are_tools_and_clashing_names_are_numbered() {
    let (app, first) = app_with_seed_action().await;
    let second = app.create_action(&seed_body()).await;
    let mut inactive = seed_body();
    inactive["name"] = json!("Dormant");
    inactive["is_active"] = json!(false);
    app.create_action(&inactive).await;
    let token = app.token(&[]);
    let (_, listed) = rpc(&app, Some(&token), "tools/list", json!({})).await;
    let names: Vec<&str> = listed["result"]["tools"].as_array().unwrap().iter().map(|tool| tool["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["my_whatsapp_action", "my_whatsapp_action_2", "get_execution", "list_actions"]);
    let ran = call(&app, &token, "my_whatsapp_action_2", json!({"customer_name": "Ana"})).await;
    assert_eq!(ran["structuredContent"]["action_id"], second.as_str(), "numbered in creation order");
    assert_ne!(second, first);

    // Switching the older action off hides its tool but renames no other:
    // an agent holding the earlier list never runs a different action.
    let off = app.call(Method::PATCH, &format!("/v2/_actions/{first}"), Some(&json!({"is_active": false}))).await;
    assert_eq!(off.status, 200, "{}", off.text);
    let (_, listed) = rpc(&app, Some(&token), "tools/list", json!({})).await;
    let names: Vec<&str> = listed["result"]["tools"].as_array().unwrap().iter().map(|tool| tool["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["my_whatsapp_action_2", "get_execution", "list_actions"]);
    let inactive = call(&app, &token, "my_whatsapp_action", json!({"customer_name": "Ana", "call_id": "after-off"})).await;
    assert!(inactive["isError"] == true && text(&inactive).starts_with("action_inactive:"), "its name stays its own: {inactive}");
    let ran = call(&app, &token, "my_whatsapp_action_2", json!({"customer_name": "Ana", "call_id": "after-off"})).await;
    assert_eq!(ran["structuredContent"]["action_id"], second.as_str());
}

#[tokio::test]
async fn a_body_not_one_json_rpc_message_or_params_a_method_cannot_take_get_json_rpc_errors() {
    let (app, _) = app_with_seed_action().await;
    let token = app.token(&[]);
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]);
    for (body, code, api_code) in [
        (r#"{"jsonrpc":"2.0","id":1,"#.to_owned(), -32700, "invalid_json"),
        (r#"{"foo":1}"#.to_owned(), -32600, "invalid_json_rpc"),
        (r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#.to_owned(), -32600, "invalid_json_rpc"),
        (batch.to_string(), -32600, "invalid_json_rpc"),
    ] {
        let (status, answer) = post(&app, Some(&token), body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_i64()), (400, Some(code)), "{body}: {answer}");
        assert_eq!((answer["jsonrpc"].as_str(), &answer["id"]), (Some("2.0"), &Value::Null), "{answer}");
        assert_eq!(answer["error"]["data"]["errors"][0]["code"], api_code, "{answer}");
        assert!(answer["error"]["data"]["ctx_id"].is_string(), "{answer}");
    }
    let as_text = app
        .http
        .post(format!("{}/mcp", app.base))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "text/plain")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    let as_text = common::read(as_text.send().await.unwrap()).await;
    assert_eq!((as_text.status, as_text.error_codes()[0].1), (415, "unsupported_media_type"), "{}", as_text.text);
    // A served method whose params it cannot take is invalid params, not "method not found".
    for (method, params) in
        [("tools/call", json!({})), ("tools/call", json!({"name": "list_actions", "arguments": [1]})), ("initialize", json!({}))]
    {
        let (status, answer) = rpc(&app, Some(&token), method, params.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_i64(), answer["id"].as_i64()),
            (200, Some(-32602), Some(1)),
            "{method} {params}: {answer}"
        );
        assert_eq!(answer["error"]["data"]["errors"][0]["field"], "params", "{answer}");
    }
    let padding = "x".repeat(70 * 1024);
    let large = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"padding": padding}}});
    let (status, answer) = post(&app, Some(&token), large.to_string()).await;
    assert_eq!((status, answer["errors"][0]["code"].as_str()), (413, Some("payload_too_large")), "the API's 64 KiB limit: {answer}");
    let (status, _) = rpc(&app, Some(&token), "tools/list", json!({})).await;
    assert_eq!(status, 200, "a message within the limit still passes the gate");
}
