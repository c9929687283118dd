//! `_preview` over real HTTP: the exact Graph API request an execute would
//! send and the text the person would read, with nothing sent or stored.

mod common;

use actiond::auth::Scope;
use common::{TestApp, app_with_seed_action, app_with_sender, seed_body};
use reqwest::Method;
use serde_json::{Value, json};

/// A send's body as a preview shows it: no execution id, which only a run has.
fn without_execution(mut payload: Value, execution_id: &str) -> Value {
    payload.as_object_mut().unwrap().remove("biz_opaque_callback_data");
    serde_json::from_str(&payload.to_string().replace(execution_id, "{execution_id}")).unwrap()
}

/// The message the sandbox took for this execution, once the worker sent it.
async fn sent_for(app: &TestApp, execution_id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(sent) = app.sandbox.sent().into_iter().find(|m| m.payload["biz_opaque_callback_data"] == execution_id) {
            return sent.payload;
        }
        assert!(std::time::Instant::now() < deadline, "execution {execution_id} was never sent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stored_actions_preview_is_the_request_execute_sends() {
    let (app, action) = app_with_seed_action().await;
    let run = json!({"variables": {"customer_name": "Ana"}, "to": "+44 20 7946 0958"});
    let preview = app.post(&format!("/v2/_actions/{action}/_preview"), &run).await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    preview.assert_ctx_id();
    let data = &preview.body["data"];
    assert_eq!(data["to"], "442079460958");
    assert_eq!(data["rendered"]["body"], "Hi Ana, may we call you back about your request? Reply YES or NO.");
    assert_eq!((data["rendered"]["header"].clone(), data["rendered"]["footer"].clone()), (Value::Null, Value::Null));
    assert_eq!(data["rendered"]["buttons"], json!([{"type": "QUICK_REPLY", "text": "Yes"}, {"type": "QUICK_REPLY", "text": "No"}]));
    assert!(data["request"].get("biz_opaque_callback_data").is_none());
    assert!(app.sandbox.sent().is_empty(), "a preview sends nothing");
    let listed = app.get("/v2/_executions").await;
    assert_eq!(listed.body["data"]["pagination"]["total_records"], 0, "a preview stores nothing");

    let execution = app.execute(&action, &run).await;
    let execution_id = execution["execution_id"].as_str().unwrap();
    let sent = sent_for(&app, execution_id).await;
    assert_eq!(without_execution(sent, execution_id), data["request"], "the preview is the exact request");
}

#[tokio::test]
async fn a_create_bodys_preview_renders_every_part_and_stores_nothing() {
    let app = app_with_sender().await;
    let mut body = seed_body();
    body["webhook"] = json!({
        "to": "12817126508", "from": common::SENDER, "template_name": "order_update", "language_code": "en",
        "header_params": ["{{order}}"], "body_params": ["{{name}}", "{{order}}", "on its way"], "button_params": ["{{order}}/a b"]
    });
    body["variables"] = json!({"name": "Ana", "order": "A-1042"});
    // Execute's other fields are not create's: unknown here, and ignored as create ignores them.
    body["reply_timeout"] = json!(5);
    body["call_id"] = json!("");
    let preview = app.post("/v2/_actions/_preview", &body).await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    let rendered = &preview.body["data"]["rendered"];
    assert_eq!(rendered["header"], "Order A-1042");
    assert_eq!(rendered["body"], "Hi Ana, your order A-1042 is on its way.");
    assert_eq!(rendered["footer"], "Reply STOP to opt out");
    assert_eq!(
        rendered["buttons"],
        json!([
            {"type": "URL", "text": "Track order", "url": "https://shop.example.com/track/A-1042%2Fa%20b"},
            {"type": "QUICK_REPLY", "text": "Talk to an agent"}
        ])
    );
    assert_eq!(preview.body["data"]["request"]["template"]["name"], "order_update");
    let actions = app.get("/v2/_actions").await;
    assert_eq!(actions.body["data"]["pagination"]["total_records"], 0, "a preview creates no action");
    assert!(app.sandbox.sent().is_empty());
}

#[tokio::test]
async fn an_invalid_body_is_refused_exactly_as_create_refuses_it() {
    let app = app_with_sender().await;
    let mut body = seed_body();
    body["name"] = json!("  ");
    body["webhook"]["to"] = json!("12");
    body["webhook"]["body_params"] = json!([]);
    let created = app.post("/v2/_actions", &body).await;
    let previewed = app.post("/v2/_actions/_preview", &body).await;
    assert_eq!((created.status, previewed.status), (400, 400));
    assert_eq!(previewed.body["errors"], created.body["errors"]);
    assert_eq!(previewed.body["detail"], created.body["detail"]);

    // An invalid `to` beside them is named in the same answer, after create's.
    body["to"] = json!("123");
    let both = app.post("/v2/_actions/_preview", &body).await;
    let mut expected = created.error_codes();
    expected.push(("to", "invalid_phone_number"));
    assert_eq!(both.error_codes(), expected, "{}", both.text);
}

#[tokio::test]
async fn a_whole_number_is_rendered_as_its_digits_and_another_number_is_refused() {
    let (app, action) = app_with_seed_action().await;
    let path = format!("/v2/_actions/{action}/_preview");
    for (given, rendered) in [(json!(18446744073709551615u64), "18446744073709551615"), (json!(-12.0), "-12"), (json!(1e2), "100")] {
        let whole = app.post(&path, &json!({"variables": {"customer_name": given}})).await;
        assert_eq!(whole.status, 200, "{}", whole.text);
        let body = whole.body["data"]["rendered"]["body"].as_str().unwrap();
        assert!(body.starts_with(&format!("Hi {rendered},")), "{given}: {body}");
    }
    let past_64_bits: Value = serde_json::from_str(r#"{"variables": {"customer_name": 123456789012345678901234}}"#).unwrap();
    for body in [json!({"variables": {"customer_name": 12.50}}), json!({"variables": {"customer_name": 1e300}}), past_64_bits] {
        let refused = app.post(&path, &body).await;
        assert_eq!(refused.error_codes(), [("variables.customer_name", "invalid_type")], "{body}: {}", refused.text);
    }
}

#[tokio::test]
async fn missing_variables_unknown_actions_and_scopes() {
    let (app, action) = app_with_seed_action().await;
    let path = format!("/v2/_actions/{action}/_preview");
    let missing = app.post(&path, &json!({})).await;
    assert_eq!(missing.error_codes(), [("variables.customer_name", "missing_variable")]);
    let null_body = app.post(&path, &Value::Null).await;
    assert_eq!(null_body.error_codes(), missing.error_codes(), "a null body is no body, as the document's optional body says");
    let unknown = app.post(&format!("/v2/_actions/{}/_preview", uuid::Uuid::now_v7()), &json!({})).await;
    assert_eq!(unknown.status, 404);
    let foreign = app.send(Method::POST, &path, Some(&app.token_for("intruder", &[])), Some(&json!({}))).await;
    assert_eq!(foreign.status, 404, "another tenant's action is a 404");

    let variables = json!({"variables": {"customer_name": "Ana"}});
    let executor = app.send(Method::POST, &path, Some(&app.token(&[Scope::ActionsExecute])), Some(&variables)).await;
    assert_eq!(executor.status, 403, "preview needs actions:read");
    let reader = app.send(Method::POST, &path, Some(&app.token(&[Scope::ActionsRead])), Some(&variables)).await;
    assert_eq!(reader.status, 200, "{}", reader.text);

    app.call(Method::PATCH, &format!("/v2/_actions/{action}"), Some(&json!({"is_active": false}))).await;
    let inactive = app.post(&path, &variables).await;
    assert_eq!(inactive.status, 200, "an inactive action previews");
}
