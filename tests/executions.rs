//! Running actions over real HTTP: execute, the sends the Graph sandbox
//! receives, Meta's statuses and replies through the signed webhook, `?wait`,
//! idempotent executes, and every error class of delivery.

mod common;

use std::time::{Duration, Instant};

use actiond::auth::Scope;
use actiond::whatsapp::sandbox::{ReplyRequest, SANDBOX_PHONE_NUMBER_ID, Scripted, THROTTLED_RECIPIENT, UNDELIVERABLE_RECIPIENT};
use common::{SENDER, TestApp, app_with_seed_action, non_mandatory_body, seed_body, sender_body, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

fn statuses(execution: &Value) -> Vec<String> {
    execution["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

/// Meta took it: accepted, or already further along (its status webhooks
/// may arrive before the test reads the execution).
fn taken_by_meta(execution: &Value) -> bool {
    ["accepted", "sent", "delivered", "read"].contains(&execution["status"].as_str().unwrap_or_default())
}

fn id(execution: &Value) -> String {
    execution["execution_id"].as_str().unwrap().to_owned()
}

fn sent_to(app: &TestApp, execution_id: &str) -> Vec<Value> {
    app.sandbox.sent().into_iter().filter(|m| m.payload["biz_opaque_callback_data"] == execution_id).map(|m| m.payload).collect()
}

#[tokio::test]
async fn an_execution_goes_out_and_is_tracked_to_its_reply() {
    let (app, action) = app_with_seed_action().await;
    let reply =
        app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"call_id": "call-1", "variables": {"customer_name": "Ana"}})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.assert_ctx_id();
    let execution = &reply.body["data"];
    let execution_id = id(execution);
    assert_eq!(reply.header("location"), Some(format!("/v2/_executions/{execution_id}").as_str()));
    assert_eq!((execution["status"].as_str(), execution["mandatory"].as_bool()), (Some("queued"), Some(true)));
    assert_eq!(execution["to"], "12817126508");
    assert_eq!(execution["call_id"], "call-1");
    assert!(execution["reply_deadline"].is_string());

    let read = app.reaches(&execution_id, "read").await;
    assert_eq!(statuses(&read), ["queued", "sending", "accepted", "sent", "delivered", "read"]);
    assert!(read["wamid"].as_str().unwrap().starts_with("wamid."));
    assert_eq!(read["attempts"], 1);

    let payloads = sent_to(&app, &execution_id);
    assert_eq!(payloads.len(), 1);
    let message = &payloads[0];
    assert_eq!(message["to"], "+12817126508", "sent with its +, so Meta never guesses a country");
    assert_eq!(message["template"]["name"], "call_permission_request");
    assert_eq!(message["template"]["language"]["code"], "en");
    let components = &message["template"]["components"];
    assert_eq!(components[0], json!({"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}));
    assert_eq!(components[1]["parameters"][0]["payload"], format!("{execution_id}:0"), "quick replies name the execution");

    let started = Instant::now();
    let waiter = tokio::spawn({
        let (http, url, token) = (app.http.clone(), format!("{}/v2/_executions/{execution_id}?wait=30", app.base), app.token(&[]));
        async move { common::read(http.get(url).bearer_auth(token).send().await.unwrap()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.sandbox
        .reply(ReplyRequest { execution_id: Some(execution_id.clone()), button: Some("Yes".into()), ..Default::default() })
        .await
        .unwrap();
    let answered = waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the reply woke the waiter, not its 30 s timeout");
    let replied = &answered.body["data"];
    assert_eq!(replied["status"], "replied");
    assert_eq!(replied["reply"]["type"], "button");
    assert_eq!(replied["reply"]["text"], "Yes");
    assert_eq!(replied["reply"]["payload"], format!("{execution_id}:0"));
    assert_eq!(statuses(replied).last().map(String::as_str), Some("replied"));
}

#[tokio::test]
async fn each_of_a_wabas_numbers_sends_its_own_messages_and_hears_their_replies() {
    let app = spawn_app().await;
    app.sandbox.set_phone_numbers(2);
    let numbers = app.sandbox.phone_number_ids();
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert_eq!(numbers[0], SANDBOX_PHONE_NUMBER_ID);
    let mut executions = Vec::new();
    for number in &numbers {
        let mut sender = sender_body();
        sender["phone_number_id"] = json!(number);
        let registered = app.post("/v2/_whatsapp/senders", &sender).await;
        assert_eq!(registered.status, 201, "{}", registered.text);
        let mut action = seed_body();
        action["webhook"]["from"] = json!(number);
        let action = app.create_action(&action).await;
        executions.push(id(&app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await));
    }
    for (number, execution) in numbers.iter().zip(&executions) {
        app.reaches(execution, "read").await;
        let sent: Vec<_> = app.sandbox.sent().into_iter().filter(|m| m.payload["biz_opaque_callback_data"] == *execution).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].from, number, "sent from its action's number");
        // The reply arrives on the number that sent, as Meta's webhook names it.
        let answer = ReplyRequest { execution_id: Some(execution.clone()), text: Some("yes".into()), ..Default::default() };
        app.sandbox.reply(answer).await.unwrap();
        let replied = app.settled(execution, 10).await;
        assert_eq!((replied["status"].as_str(), replied["reply"]["text"].as_str()), (Some("replied"), Some("yes")), "{replied}");
    }
    let mut unknown = sender_body();
    unknown["phone_number_id"] = json!((SANDBOX_PHONE_NUMBER_ID.parse::<u64>().unwrap() + 2).to_string());
    let refused = app.post("/v2/_whatsapp/senders", &unknown).await;
    assert_eq!(refused.status, 400, "Meta knows no number after the WABA's: {}", refused.text);
    assert_eq!(refused.error_codes(), [("phone_number_id", "invalid_sender_credentials")], "Meta's code 100");
}

#[tokio::test]
async fn a_non_mandatory_wait_returns_once_meta_accepts() {
    let app = spawn_app().await;
    app.register_sender().await;
    let action = app.create_action(&non_mandatory_body()).await;
    let reply = app.post(&format!("/v2/_actions/{action}/_execute?wait=20"), &json!({"variables": {"customer_name": "Ana"}})).await;
    assert_eq!(reply.status, 200, "with ?wait the answer is the execution as it stands: {}", reply.text);
    let execution = id(&reply.body["data"]);
    assert!(taken_by_meta(&reply.body["data"]), "{}", reply.text);

    // The sandbox's reply returns once the app has applied its webhook.
    let answer = ReplyRequest { execution_id: Some(execution.clone()), text: Some("thanks".into()), ..Default::default() };
    app.sandbox.reply(answer).await.unwrap();
    let answered = app.get(&format!("/v2/_executions/{execution}")).await.body["data"].clone();
    assert_eq!(answered["reply"]["text"], "thanks", "a non-mandatory execution records its reply too");
    assert_ne!(answered["status"], "replied", "and keeps its delivery status");

    let intruder = app.token_for("intruder", &[]);
    let theirs = app.send(Method::GET, &format!("/v2/_executions/{execution}"), Some(&intruder), None).await;
    let missing = app.send(Method::GET, &format!("/v2/_executions/{}", uuid::Uuid::now_v7()), Some(&intruder), None).await;
    assert_eq!(
        (theirs.status, theirs.error_codes()),
        (missing.status, missing.error_codes()),
        "another tenant's execution is a missing one"
    );
    assert_eq!(theirs.status, 404);
    let listed = app.send(Method::GET, "/v2/_executions", Some(&intruder), None).await;
    assert_eq!(listed.body["data"]["pagination"]["total_records"], 0);
    let metrics = app.send(Method::GET, "/metrics", None, None).await.text;
    assert!(metrics.contains(r#"actiond_deliveries_total{outcome="accepted"}"#), "{metrics}");
    assert!(metrics.contains("actiond_delivery_queue_depth"));
}

#[tokio::test]
async fn the_recipient_is_the_body_then_the_override_then_webhook_to() {
    let app = spawn_app().await;
    app.register_sender().await;
    let mut body = seed_body();
    body["phone_number"] = json!("+44 20 7946 0958");
    let action = app.create_action(&body).await;
    let variables = json!({"customer_name": "Ana"});
    let overridden = app.execute(&action, &json!({"variables": variables, "to": "+1 415 555 0132"})).await;
    assert_eq!(overridden["to"], "14155550132");
    let by_action = app.execute(&action, &json!({"variables": variables})).await;
    assert_eq!(by_action["to"], "442079460958");
    app.call(Method::PATCH, &format!("/v2/_actions/{action}"), Some(&json!({"phone_number": null}))).await;
    let by_webhook = app.execute(&action, &json!({"variables": variables})).await;
    assert_eq!(by_webhook["to"], "12817126508");
    let settled = app.reaches(&id(&overridden), "read").await;
    assert_eq!(sent_to(&app, &id(&settled))[0]["to"], "+14155550132");
}

/// JSON Schema's `integer` (the document's type for reply_timeout) is 600
/// and 600.0 alike, so the server reads both; a fraction is refused.
#[tokio::test]
async fn a_reply_timeout_written_with_a_zero_fraction_is_a_whole_number() {
    let (app, action) = app_with_seed_action().await;
    let path = format!("/v2/_actions/{action}/_execute");
    let variables = json!({"customer_name": "Ana"});
    let longest = app.post(&path, &json!({"call_id": "float", "reply_timeout": 86400.0, "variables": variables})).await;
    assert_eq!(longest.status, 202, "{}", longest.text);
    let beyond = app.post(&path, &json!({"call_id": "beyond", "reply_timeout": 86401.0, "variables": variables})).await;
    assert_eq!(beyond.error_codes(), [("reply_timeout", "invalid_reply_timeout")]);
}

#[tokio::test]
async fn bad_executes_are_refused_and_send_nothing() {
    let (app, action) = app_with_seed_action().await;
    let path = format!("/v2/_actions/{action}/_execute");
    let missing = app.post(&path, &json!({"call_id": "c"})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_codes(), [("variables.customer_name", "missing_variable")]);
    assert!(missing.body["errors"][0]["message"].as_str().unwrap().contains("webhook.body_params[0] uses {{customer_name}}"));
    let timeout_too = app.post(&path, &json!({"reply_timeout": 5})).await;
    let expected = [("reply_timeout", "invalid_reply_timeout"), ("variables.customer_name", "missing_variable")];
    assert_eq!(timeout_too.error_codes(), expected, "every violation at once");
    let keyed_badly = app
        .http
        .post(format!("{}{path}?wait=99", app.base))
        .bearer_auth(app.token(&[]))
        .header("idempotency-key", "a b")
        .json(&json!({"to": "12", "variables": {"customer_name": "Ana"}}));
    let everything = common::read(keyed_badly.send().await.unwrap()).await;
    let expected = [("wait", "invalid_query_parameter"), ("Idempotency-Key", "invalid_idempotency_key"), ("to", "invalid_phone_number")];
    assert_eq!(everything.error_codes(), expected, "query, header and body in one answer");
    let two_lines = app.post(&path, &json!({"reply_timeout": 5, "variables": {"customer_name": "two\nlines"}})).await;
    let expected = [("reply_timeout", "invalid_reply_timeout"), ("variables.customer_name", "invalid_parameter")];
    assert_eq!(two_lines.error_codes(), expected, "{}", two_lines.text);

    let invalid = app.post(&path, &json!({"reply_timeout": 5, "to": "12", "call_id": "", "variables": {"customer_name": ["x"]}})).await;
    let fields: Vec<String> = invalid.error_codes().into_iter().map(|(f, c)| format!("{f}:{c}")).collect();
    assert_eq!(
        fields,
        [
            "call_id:invalid_length",
            "to:invalid_phone_number",
            "variables.customer_name:invalid_type",
            "reply_timeout:invalid_reply_timeout"
        ]
    );
    let newline = app.post(&path, &json!({"variables": {"customer_name": "two\nlines"}})).await;
    assert_eq!(newline.error_codes(), [("variables.customer_name", "invalid_parameter")]);
    let fractional = app.post(&path, &json!({"reply_timeout": 600.5, "variables": {"customer_name": "Ana"}})).await;
    assert_eq!(fractional.error_codes(), [("reply_timeout", "invalid_reply_timeout")]);
    let wait = app.post(&format!("{path}?wait=61"), &json!({})).await;
    assert_eq!(wait.error_codes(), [("wait", "invalid_query_parameter")]);

    app.call(Method::PATCH, &format!("/v2/_actions/{action}"), Some(&json!({"is_active": false}))).await;
    let inactive = app.post(&path, &json!({"variables": {"customer_name": "Ana"}})).await;
    assert_eq!(inactive.status, 409);
    assert_eq!(inactive.error_codes(), [("action_id", "action_inactive")]);

    let unknown = app.post(&format!("/v2/_actions/{}/_execute", uuid::Uuid::now_v7()), &json!({})).await;
    assert_eq!(unknown.status, 404);
    let foreign = app.send(Method::POST, &path, Some(&app.token_for("intruder", &[])), Some(&json!({}))).await;
    assert_eq!(foreign.status, 404, "another tenant's action is a 404");
    let reader = app.send(Method::POST, &path, Some(&app.token(&[Scope::ActionsRead, Scope::ActionsWrite])), Some(&json!({}))).await;
    assert_eq!(reader.status, 403, "executing needs actions:execute");

    assert_eq!(app.get("/v2/_executions").await.body["data"]["pagination"]["total_records"], 0);
    assert!(app.sandbox.sent().is_empty());
    let bad_filters = app.get("/v2/_executions?status=lost&action_id=nope").await;
    let fields: Vec<String> = bad_filters.error_codes().into_iter().map(|(f, c)| format!("{f}:{c}")).collect();
    assert_eq!(fields, ["action_id:invalid_query_parameter", "status:invalid_query_parameter"]);
    assert!(bad_filters.body["errors"][1]["message"].as_str().unwrap().contains("queued, sending, accepted"));
    assert_eq!(app.get(&format!("/v2/_executions/{}", uuid::Uuid::now_v7())).await.status, 404);
    assert_eq!(app.get("/v2/_executions/not-a-uuid").await.status, 404);
}

#[tokio::test]
async fn the_same_call_id_or_key_executes_once_even_when_sent_at_once() {
    let (app, action) = app_with_seed_action().await;
    let token = app.token(&[]);
    let path = format!("{}/v2/_actions/{action}/_execute", app.base);
    let body = json!({"call_id": "call-dup", "variables": {"customer_name": "Ana"}});
    let requests = (0..8).map(|_| {
        let request = app.http.post(&path).bearer_auth(&token).json(&body);
        async move { common::read(request.send().await.unwrap()).await }
    });
    let replies = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<String> = replies.iter().map(|r| id(&r.body["data"])).collect();
    assert_eq!(ids.len(), 1, "eight identical executes, one execution");
    assert_eq!(replies.iter().filter(|r| r.header("idempotent-replayed").is_some()).count(), 7);

    let keyed = |key: &'static str| {
        let request =
            app.http.post(&path).bearer_auth(&token).header("idempotency-key", key).json(&json!({"variables": {"customer_name": "Bo"}}));
        async move { common::read(request.send().await.unwrap()).await }
    };
    let (first, second) = tokio::join!(keyed("k-1"), keyed("k-1"));
    assert_eq!(id(&first.body["data"]), id(&second.body["data"]));

    // A repeat is answered even after the action changed: it sends nothing new.
    app.call(Method::PATCH, &format!("/v2/_actions/{action}"), Some(&json!({"is_active": false}))).await;
    let repeat = app.post(&format!("/v2/_actions/{action}/_execute"), &body).await;
    assert_eq!((repeat.status, repeat.header("idempotent-replayed")), (202, Some("true")), "{}", repeat.text);
    app.call(Method::PATCH, &format!("/v2/_actions/{action}"), Some(&json!({"is_active": true}))).await;
    // The same key for another action is a conflict, not the first action's execution.
    let other = app.create_action(&seed_body()).await;
    let crossed = common::read(
        app.http
            .post(format!("{}/v2/_actions/{other}/_execute", app.base))
            .bearer_auth(&token)
            .header("idempotency-key", "k-1")
            .json(&json!({"variables": {"customer_name": "Bo"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((crossed.status, crossed.error_codes()), (409, vec![("Idempotency-Key", "idempotency_key_reused")]));

    let execution_id = ids.into_iter().next().unwrap();
    app.reaches(&execution_id, "read").await;
    app.reaches(&id(&first.body["data"]), "read").await;
    assert_eq!(sent_to(&app, &execution_id).len(), 1, "sent once");
    assert_eq!(app.sandbox.sent().len(), 2, "one message per execution, nothing twice");
    let listed = app.get(&format!("/v2/_executions?call_id=call-dup&action_id={action}")).await;
    assert_eq!(listed.body["data"]["pagination"]["total_records"], 1);
}

#[tokio::test]
async fn a_key_first_sent_with_a_repeated_call_id_then_answers_that_execution_alone() {
    let (app, action) = app_with_seed_action().await;
    let token = app.token(&[]);
    let execute = |key: Option<&'static str>, body: Value| {
        let mut request = app.http.post(format!("{}/v2/_actions/{action}/_execute", app.base)).bearer_auth(&token).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move { common::read(request.send().await.unwrap()).await }
    };
    let variables = json!({"customer_name": "Ana"});
    let first = execute(None, json!({"call_id": "call-k", "variables": variables})).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let keyed = execute(Some("k-late"), json!({"call_id": "call-k", "variables": variables})).await;
    let alone = execute(Some("k-late"), json!({"variables": variables})).await;
    for repeat in [&keyed, &alone] {
        assert_eq!((repeat.status, repeat.header("idempotent-replayed")), (202, Some("true")), "{}", repeat.text);
        assert_eq!(id(&repeat.body["data"]), id(&first.body["data"]));
    }
    app.reaches(&id(&first.body["data"]), "read").await;
    assert_eq!(app.sandbox.sent().len(), 1, "one message for the call, whichever way it was repeated");

    // Bound late, the key can outlive the execution retention deletes: it then starts anew.
    app.database.execute(&format!("DELETE FROM executions WHERE id = '{}'", id(&first.body["data"])));
    let after = execute(Some("k-late"), json!({"variables": variables})).await;
    assert_eq!((after.status, after.header("idempotent-replayed")), (202, None), "{}", after.text);
    assert_ne!(id(&after.body["data"]), id(&first.body["data"]));
}

#[tokio::test]
async fn an_idempotency_key_older_than_24_hours_executes_anew() {
    let (app, action) = app_with_seed_action().await;
    let other = app.create_action(&non_mandatory_body()).await;
    let token = app.token(&[]);
    let execute = |action: &str| {
        let request = app
            .http
            .post(format!("{}/v2/_actions/{action}/_execute", app.base))
            .bearer_auth(&token)
            .header("idempotency-key", "call-7-offer")
            .json(&json!({"variables": {"customer_name": "Bo"}}));
        async move { common::read(request.send().await.unwrap()).await }
    };
    let first = execute(&action).await;
    assert_eq!(first.status, 202, "{}", first.text);
    app.database.execute("UPDATE execution_keys SET created_at = '2000-01-01T00:00:00.000000Z'");

    let again = execute(&action).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (202, None), "{}", again.text);
    assert_ne!(id(&again.body["data"]), id(&first.body["data"]), "a new execution");
    app.database.execute("UPDATE execution_keys SET created_at = '2000-01-01T00:00:00.000000Z'");
    let elsewhere = execute(&other).await;
    assert_eq!((elsewhere.status, elsewhere.header("idempotent-replayed")), (202, None), "an expired key may run another action");
    for execution in [&first, &again, &elsewhere] {
        app.reaches(&id(&execution.body["data"]), "read").await;
    }
    assert_eq!(app.sandbox.sent().len(), 3, "one message per execution");
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_share_of_open_waits() {
    let app = spawn_app_with(|s| s.max_waits_per_tenant = 2).await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let execution =
        id(&app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"variables": {"customer_name": "Bo"}})).await.body["data"]);
    app.reaches(&execution, "read").await;
    // A mandatory execution read but not answered: each wait holds for its whole 20 s.
    let hold = || {
        let request = app.http.get(format!("{}/v2/_executions/{execution}?wait=20", app.base)).bearer_auth(app.token(&[]));
        tokio::spawn(async move { common::read(request.send().await.unwrap()).await })
    };
    // Three at once: whichever comes third is refused at once, the other two hold.
    let (turned_away, _, held) = futures::future::select_all([hold(), hold(), hold()]).await;
    let turned_away = turned_away.unwrap();
    assert_eq!(turned_away.status, 429, "a third wait is refused while two hold: {}", turned_away.text);
    let [first, second] = <[_; 2]>::try_from(held).unwrap();

    let refused = app.get(&format!("/v2/_executions/{execution}?wait=5")).await;
    assert_eq!((refused.status, refused.header("retry-after")), (429, Some("1")), "{}", refused.text);
    assert_eq!(refused.error_codes(), [("wait", "too_many_waits")]);
    refused.assert_ctx_id();
    let executes =
        app.post(&format!("/v2/_actions/{action}/_execute?wait=5"), &json!({"call_id": "c-2", "variables": {"customer_name": "Bo"}})).await;
    assert_eq!(executes.status, 429, "execute ?wait counts too, and runs nothing: {}", executes.text);
    assert_eq!(app.get("/v2/_executions?call_id=c-2").await.body["data"]["pagination"]["total_records"], 0);
    assert_eq!(app.get(&format!("/v2/_executions/{execution}")).await.status, 200, "a read without wait is not counted");
    let other = app.token_for("another-tenant", &[]);
    let theirs = app.send(Method::GET, &format!("/v2/_executions/{execution}?wait=1"), Some(&other), None).await;
    assert_eq!(theirs.status, 404, "another tenant has its own count (and no such execution)");

    let replied =
        app.sandbox.reply(ReplyRequest { execution_id: Some(execution.clone()), text: Some("yes".into()), ..Default::default() }).await;
    assert!(replied.is_ok(), "{replied:?}");
    for waiter in [first, second] {
        assert_eq!(waiter.await.unwrap().body["data"]["status"], "replied", "the held waits answer when the reply lands");
    }
    assert_eq!(app.get(&format!("/v2/_executions/{execution}?wait=1")).await.status, 200, "their permits came back");
}

#[tokio::test]
async fn each_template_kind_is_sent_with_its_components() {
    let app = spawn_app().await;
    app.register_sender().await;
    let action_for = |webhook: Value| {
        let mut body = seed_body();
        body["webhook"] = json!({"to": "12817126508", "from": SENDER, "mandatory": false});
        for (key, value) in webhook.as_object().unwrap() {
            body["webhook"][key] = value.clone();
        }
        body
    };
    let order = app
        .create_action(&action_for(json!({"template_name": "order_update", "header_params": ["{{order}}"],
            "body_params": ["Ana", "{{order}}", "on its way"], "button_params": ["{{order}} x"]})))
        .await;
    let image = app
        .create_action(&action_for(json!({"template_name": "appointment_reminder", "header_params": ["https://cdn.example.com/c.jpg"],
            "body_params": ["Ana", "May 3"]})))
        .await;
    let coupon = app
        .create_action(&action_for(json!({"template_name": "discount_code", "language_code": "en_US",
            "body_params": ["Ana", "10%"], "button_params": ["SAVE10"]})))
        .await;

    let order_run = app.execute(&order, &json!({"variables": {"order": "A-1042"}})).await;
    let image_run = app.execute(&image, &json!({})).await;
    let coupon_run = app.execute(&coupon, &json!({})).await;
    for run in [&order_run, &image_run, &coupon_run] {
        let settled = app.settled(&id(run), 20).await;
        assert!(taken_by_meta(&settled), "{settled}");
    }
    let components = |run: &Value| sent_to(&app, &id(run))[0]["template"]["components"].clone();
    let order_parts = components(&order_run);
    assert_eq!(order_parts[0], json!({"type": "header", "parameters": [{"type": "text", "text": "A-1042"}]}));
    assert_eq!(order_parts[1]["parameters"][1], json!({"type": "text", "text": "A-1042"}));
    assert_eq!(
        order_parts[2],
        json!({"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A-1042%20x"}]})
    );
    assert_eq!(order_parts[3]["sub_type"], "quick_reply");
    assert_eq!(order_parts[3]["index"], "1");
    let image_parts = components(&image_run);
    assert_eq!(
        image_parts[0],
        json!({"type": "header", "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/c.jpg"}}]})
    );
    assert_eq!(image_parts[1]["parameters"][0], json!({"type": "text", "parameter_name": "first_name", "text": "Ana"}));
    let long_code = app
        .create_action(&action_for(json!({"template_name": "discount_code", "language_code": "en_US",
            "body_params": ["Ana", "10%"], "button_params": ["{{code}}"]})))
        .await;
    let too_long = app.post(&format!("/v2/_actions/{long_code}/_execute"), &json!({"variables": {"code": "SIXTEEN_CHARS_XX"}})).await;
    assert_eq!(too_long.error_codes(), [("variables.code", "invalid_parameter")], "{}", too_long.text);
    let media_variable = app
        .create_action(&action_for(json!({"template_name": "appointment_reminder", "header_params": ["{{image}}"],
            "body_params": ["Ana", "May 3"]})))
        .await;
    let plain_http = app
        .post(&format!("/v2/_actions/{media_variable}/_execute"), &json!({"variables": {"image": "http://cdn.example.com/c.jpg"}}))
        .await;
    assert_eq!(plain_http.error_codes(), [("variables.image", "invalid_media_parameter")], "{}", plain_http.text);
    let coupon_parts = components(&coupon_run);
    assert_eq!(
        coupon_parts[1],
        json!({"type": "button", "sub_type": "copy_code", "index": "0", "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}]})
    );
}

#[tokio::test]
async fn error_classes_retry_or_fail_as_meta_means_them() {
    let app = spawn_app_with(|s| s.delivery_max_attempts = 3).await;
    app.register_sender().await;
    let action = app.create_action(&non_mandatory_body()).await;
    let run = |to: &'static str| {
        let body = json!({"to": format!("+{to}"), "variables": {"customer_name": "Ana"}});
        let app = &app;
        let action = action.clone();
        async move { id(&app.execute(&action, &body).await) }
    };

    // Transient (throughput) then accepted: retried.
    let throttled = run(THROTTLED_RECIPIENT).await;
    let settled = app.settled(&throttled, 20).await;
    assert!(taken_by_meta(&settled) && settled["attempts"] == 2, "{settled}");

    // Transient every time: the attempts run out.
    app.sandbox
        .script("14155550101", (0..3).map(|_| Scripted::Refuse { status: 400, code: 131016, message: "Service unavailable".into() }));
    let exhausted = app.settled(&run("14155550101").await, 20).await;
    assert_eq!((exhausted["status"].as_str(), exhausted["attempts"].as_u64()), (Some("failed"), Some(3)), "{exhausted}");
    assert_eq!(exhausted["error"]["provider_code"], 131016);
    assert!(exhausted["error"]["message"].as_str().unwrap().starts_with("gave up after 3 attempts"));

    // Permanent: failed at once with Meta's code and text.
    app.sandbox.script("14155550102", [Scripted::Refuse { status: 400, code: 131009, message: "Parameter value is not valid".into() }]);
    let permanent = app.settled(&run("14155550102").await, 20).await;
    assert_eq!((permanent["status"].as_str(), permanent["attempts"].as_u64()), (Some("failed"), Some(1)));
    assert_eq!(
        permanent["error"],
        json!({"code": "provider_error", "message": "(131009) Parameter value is not valid", "provider_code": 131009})
    );

    // Pair rate limit: backs off that pair (4^0 = 1 s), then goes.
    app.sandbox.script("14155550103", [Scripted::Refuse { status: 400, code: 131056, message: "Pair rate limit".into() }]);
    let paired = app.settled(&run("14155550103").await, 20).await;
    assert!(taken_by_meta(&paired) && paired["attempts"] == 2, "{paired}");

    // Accepted, then reported undeliverable by webhook (131026).
    let undeliverable = run(UNDELIVERABLE_RECIPIENT).await;
    let failed = app.reaches(&undeliverable, "failed").await;
    assert_eq!(failed["error"]["provider_code"], 131026);
    assert_eq!(statuses(&failed), ["queued", "sending", "accepted", "sent", "failed"]);

    // A 5xx without a body: unknown outcome, reconciled, then sent again.
    app.sandbox.script("14155550104", [Scripted::Bodiless500]);
    let unknown = app.settled(&run("14155550104").await, 20).await;
    assert!(taken_by_meta(&unknown) && unknown["attempts"] == 2, "{unknown}");
    assert_eq!(sent_to(&app, &id(&unknown)).len(), 1, "Meta took only the second");
}

#[tokio::test]
async fn a_send_meta_took_but_never_answered_is_settled_by_its_status_with_no_leftover_error() {
    // A reconcile window far longer than the test: only Meta's status can settle it.
    let app = spawn_app_with(|s| s.delivery_reconcile_ms = 60_000).await;
    app.register_sender().await;
    let action = app.create_action(&non_mandatory_body()).await;
    app.sandbox.script("14155550105", [Scripted::TakenButUnanswered]);
    let body = json!({"to": "+14155550105", "variables": {"customer_name": "Ana"}});
    let execution = id(&app.execute(&action, &body).await);
    let settled = app.settled(&execution, 20).await;
    assert!(taken_by_meta(&settled) && settled["attempts"] == 1, "{settled}");
    assert!(settled.get("error").is_none(), "reconciled: no stale outcome_unknown: {settled}");
    assert_eq!(settled["wamid"], app.sandbox.sent()[0].wamid.as_str(), "the wamid of Meta's status is adopted");
    assert_eq!(sent_to(&app, &execution).len(), 1, "and it is not sent again");
}

#[tokio::test]
async fn an_unknown_outcome_with_no_attempts_left_fails_after_the_reconcile_window() {
    let app = spawn_app_with(|s| s.delivery_max_attempts = 1).await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    app.sandbox.script("12817126508", [Scripted::Bodiless500]);
    let execution = id(&app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await);
    let failed = app.settled(&execution, 20).await;
    assert_eq!((failed["status"].as_str(), failed["attempts"].as_u64()), (Some("failed"), Some(1)), "{failed}");
    assert_eq!(failed["error"]["code"], "outcome_unknown");
    assert!(app.sandbox.sent().is_empty(), "not sent a second time");
}

/// Polls until the sandbox's sender is marked unhealthy (its token refused).
async fn sender_marked_unhealthy(app: &TestApp) {
    let path = format!("/v2/_whatsapp/senders/{SENDER}");
    common::eventually("the sender is marked unhealthy", async || app.get(&path).await.body["data"]["healthy"] == false).await;
}

#[tokio::test]
async fn deleting_a_held_sender_fails_its_sends_instead_of_leaving_them_stuck() {
    let (app, action) = app_with_seed_action().await;
    app.sandbox.script("12817126508", [Scripted::Refuse { status: 401, code: 190, message: "Error validating access token".into() }]);
    let execution = id(&app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await);
    sender_marked_unhealthy(&app).await;
    assert_eq!(app.call(Method::DELETE, &format!("/v2/_whatsapp/senders/{SENDER}"), None).await.status, 200);
    let failed = app.settled(&execution, 30).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "sender_removed");
}

#[tokio::test]
async fn a_refused_token_holds_the_senders_sends_until_it_is_synced() {
    let (app, action) = app_with_seed_action().await;
    app.sandbox.script("12817126508", [Scripted::Refuse { status: 401, code: 190, message: "Error validating access token".into() }]);
    let execution = id(&app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await);
    sender_marked_unhealthy(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = app.get(&format!("/v2/_executions/{execution}")).await.body["data"].clone();
    assert_eq!(held["status"], "sending", "held, not failed: {held}");

    let synced = app.call(Method::POST, &format!("/v2/_whatsapp/senders/{SENDER}/_sync"), None).await;
    assert_eq!(synced.body["data"]["healthy"], true);
    let delivered = app.reaches(&execution, "read").await;
    assert_eq!(delivered["wamid"].as_str().map(|w| w.starts_with("wamid.")), Some(true));
}

#[tokio::test]
async fn a_nul_character_anywhere_a_client_writes_is_a_4xx_and_nothing_is_stored() {
    // PostgreSQL cannot store U+0000 in text: on either database a request holding one means the same
    // (a 400 naming the field, a 404 for an id in the path, a 401 for a token's tenant).
    let (app, action) = app_with_seed_action().await;
    let execute = format!("/v2/_actions/{action}/_execute");
    let body = json!({"call_id": "call\u{0}1", "variables": {"customer_name": "A\u{0}na"}});
    let refused = app.post(&execute, &body).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let mut codes = refused.error_codes();
    codes.sort();
    let expected = [("call_id", "invalid_character"), ("variables.customer_name", "invalid_character")];
    assert_eq!(codes, expected);

    let mut action_body = seed_body();
    action_body["name"] = json!("Call\u{0}permission");
    action_body["webhook"]["body_params"][0] = json!("{{customer\u{0}name}}");
    let refused = app.post("/v2/_actions", &action_body).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let mut codes = refused.error_codes();
    codes.sort();
    let expected = [("name", "invalid_character"), ("webhook.body_params[0]", "invalid_character")];
    assert_eq!(codes, expected);

    let listed = app.get("/v2/_executions?call_id=call%001").await;
    assert_eq!(listed.status, 400, "{}", listed.text);
    assert_eq!(listed.error_codes(), [("call_id", "invalid_character")]);

    let sender = app.get(&format!("/v2/_whatsapp/senders/{SENDER}%00")).await;
    assert_eq!((sender.status, sender.error_codes()), (404, vec![("phone_number_id", "not_found")]));
    let token = app.token_for("tenant\u{0}", &[Scope::ActionsRead]);
    let unnamed = app.send(Method::GET, "/v2/_actions", Some(&token), None).await;
    assert_eq!((unnamed.status, unnamed.error_codes()[0].1), (401, "invalid_token"), "{}", unnamed.text);

    let executions = app.get("/v2/_executions").await;
    assert_eq!(executions.body["data"]["data"], json!([]), "{}", executions.text);
    let actions = app.get("/v2/_actions?per_page=100").await;
    assert_eq!(actions.body["data"]["data"].as_array().map(Vec::len), Some(1), "{}", actions.text);
}

#[tokio::test]
async fn an_empty_body_sent_as_json_runs_the_action_as_configured() {
    let app = spawn_app().await;
    app.register_sender().await;
    let mut body = seed_body();
    body["webhook"]["body_params"] = json!(["Ana"]);
    let action = app.create_action(&body).await;
    for (path, status) in [(format!("/v2/_actions/{action}/_execute"), 202), (format!("/v2/_actions/{action}/_preview"), 200)] {
        let request = app.http.post(format!("{}{path}", app.base)).bearer_auth(app.token(&[])).header("content-type", "application/json");
        let reply = common::read(request.send().await.unwrap()).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
    }
}

#[tokio::test]
async fn the_call_id_filter_is_trimmed_as_execute_trims_it() {
    let (app, action) = app_with_seed_action().await;
    let executed = app.execute(&action, &json!({"call_id": " sp1 ", "variables": {"customer_name": "Ana"}})).await;
    assert_eq!(executed["call_id"], "sp1");
    let listed = app.get("/v2/_executions?call_id=%20sp1%20").await;
    assert_eq!(listed.body["data"]["pagination"]["total_records"], 1, "{}", listed.text);
    for empty in ["", "%20%20"] {
        let refused = app.get(&format!("/v2/_executions?call_id={empty}")).await;
        assert_eq!(refused.error_codes(), [("call_id", "invalid_query_parameter")], "no execution has an empty call id: {}", refused.text);
    }
}
