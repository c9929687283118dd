//! Meta's webhook and the worker's own moves over real HTTP: signatures,
//! duplicates, out-of-order statuses, template updates, cancellation, expiry,
//! and pacing driven one worker pass at a time.

mod common;

use std::time::Duration;

use actiond::whatsapp::sandbox::ReplyRequest;
use actiond::whatsapp::webhook::sign;
use common::{APP_SECRET, SENDER, TestApp, non_mandatory_body, seed_body, spawn_app, spawn_app_stepwise, spawn_stepwise_with};
use reqwest::Method;
use serde_json::{Value, json};

/// Posts a webhook payload signed with `secret` (or unsigned).
async fn post_webhook(app: &TestApp, payload: &Value, secret: Option<&str>) -> common::Reply {
    let body = payload.to_string();
    let mut request = app.http.post(format!("{}/v2/_whatsapp/webhook", app.base)).header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request.header("x-hub-signature-256", sign(secret, body.as_bytes()));
    }
    common::read(request.body(body).send().await.unwrap()).await
}

/// The number seed_body's action sends to.
const RECIPIENT: &str = "12817126508";

fn statuses_payload(entries: &[(&str, &str)]) -> Value {
    let statuses: Vec<Value> = entries
        .iter()
        .map(|(wamid, status)| json!({"id": wamid, "status": status, "timestamp": "1750030073", "recipient_id": RECIPIENT}))
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": SENDER}, "statuses": statuses}}]}]})
}

/// Meta's webhook carrying one message from `from` quoting `wamid`; `kind`
/// is the message's type and `content` what Meta sends under that type.
fn message_payload(from: &str, id: &str, wamid: &str, kind: &str, content: Value) -> Value {
    let mut message = json!({"from": from, "id": id, "timestamp": "1750091045", "type": kind, "context": {"id": wamid}});
    message[kind] = content;
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": SENDER}, "messages": [message]}}]}]})
}

fn statuses(execution: &Value) -> Vec<String> {
    execution["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

/// An accepted execution whose statuses only this test's webhooks move.
async fn accepted_execution(app: &TestApp) -> (String, String) {
    app.sandbox.set_status_delays([Duration::from_secs(3600); 3]);
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    let accepted = app.reaches(&id, "accepted").await;
    (id, accepted["wamid"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn forged_or_unsigned_webhooks_change_nothing() {
    let app = spawn_app().await;
    let (id, wamid) = accepted_execution(&app).await;
    let payload = statuses_payload(&[(&wamid, "read")]);
    for secret in [None, Some("not-the-app-secret")] {
        let refused = post_webhook(&app, &payload, secret).await;
        assert_eq!(refused.status, 401, "{secret:?}");
        refused.assert_ctx_id();
        assert_eq!(refused.error_codes(), [("X-Hub-Signature-256", "invalid_signature")]);
        assert!(refused.header("www-authenticate").is_some_and(|challenge| challenge.contains("X-Hub-Signature-256")));
    }
    let tampered = app
        .http
        .post(format!("{}/v2/_whatsapp/webhook", app.base))
        .header("x-hub-signature-256", sign(APP_SECRET, payload.to_string().as_bytes()))
        .body(statuses_payload(&[(&wamid, "delivered")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status().as_u16(), 401, "a signature is for its exact bytes");
    assert_eq!(app.get(&format!("/v2/_executions/{id}")).await.body["data"]["status"], "accepted");
}

#[tokio::test]
async fn statuses_apply_once_forward_only_whatever_the_order() {
    let app = spawn_app().await;
    let (id, wamid) = accepted_execution(&app).await;
    let read_first = post_webhook(&app, &statuses_payload(&[(&wamid, "read"), (&wamid, "delivered")]), Some(APP_SECRET)).await;
    assert_eq!(read_first.status, 200, "{}", read_first.text);
    assert_eq!(read_first.body["data"]["events"], 2);
    for _ in 0..3 {
        assert_eq!(post_webhook(&app, &statuses_payload(&[(&wamid, "sent"), (&wamid, "read")]), Some(APP_SECRET)).await.status, 200);
    }
    let execution = app.get(&format!("/v2/_executions/{id}")).await.body["data"].clone();
    assert_eq!(execution["status"], "read");
    assert_eq!(
        statuses(&execution),
        ["queued", "sending", "accepted", "read"],
        "a late delivered or sent undoes nothing, and read is recorded once"
    );

    let unknown = post_webhook(&app, &statuses_payload(&[("wamid.NOT-OURS", "delivered")]), Some(APP_SECRET)).await;
    assert_eq!(unknown.status, 200, "unknown ids are acknowledged");
    let garbage = app
        .http
        .post(format!("{}/v2/_whatsapp/webhook", app.base))
        .header("x-hub-signature-256", sign(APP_SECRET, b"not json"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 200, "a signed poison payload is acknowledged, not retried for days");
}

#[tokio::test]
async fn a_duplicate_reply_is_applied_once_and_a_failed_status_carries_metas_code() {
    let app = spawn_app().await;
    let (id, wamid) = accepted_execution(&app).await;
    let button = json!({"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}});
    let reply = message_payload(RECIPIENT, "wamid.REPLY1", &wamid, "interactive", button);
    assert_eq!(post_webhook(&app, &reply, Some(APP_SECRET)).await.status, 200);
    let mut again = reply.clone();
    again["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]["button_reply"]["title"] = json!("Changed");
    assert_eq!(post_webhook(&app, &again, Some(APP_SECRET)).await.status, 200);
    let replied = app.get(&format!("/v2/_executions/{id}")).await.body["data"].clone();
    assert_eq!(replied["status"], "replied");
    assert_eq!(replied["reply"]["text"], "Yes", "the re-sent event was not applied again");
    assert_eq!(replied["reply"]["type"], "interactive");

    let failed_after = post_webhook(&app, &statuses_payload(&[(&wamid, "failed")]), Some(APP_SECRET)).await;
    assert_eq!(failed_after.status, 200);
    assert_eq!(app.get(&format!("/v2/_executions/{id}")).await.body["data"]["status"], "replied", "a replied execution has ended");
}

#[tokio::test]
async fn a_voice_note_in_answer_settles_a_mandatory_execution() {
    let app = spawn_app().await;
    let (id, wamid) = accepted_execution(&app).await;
    let audio = json!({"id": "1013859600285441", "mime_type": "audio/ogg; codecs=opus", "voice": true});
    let voice_note = message_payload(RECIPIENT, "wamid.VOICE1", &wamid, "audio", audio);
    assert_eq!(post_webhook(&app, &voice_note, Some(APP_SECRET)).await.status, 200);
    let replied = app.get(&format!("/v2/_executions/{id}")).await.body["data"].clone();
    assert_eq!(replied["status"], "replied", "{replied}");
    assert_eq!(
        (&replied["reply"]["type"], &replied["reply"]["text"], &replied["reply"]["payload"]),
        (&json!("audio"), &Value::Null, &json!("1013859600285441")),
        "the media id is what the business fetches the voice note with"
    );
}

#[tokio::test]
async fn events_apply_only_to_the_sender_and_recipient_of_their_execution() {
    let app = spawn_app().await;
    let (id, wamid) = accepted_execution(&app).await;
    let with = |status: &str, phone_number_id: &str, recipient: &str| {
        let mut payload = statuses_payload(&[(&wamid, status)]);
        let value = &mut payload["entry"][0]["changes"][0]["value"];
        value["metadata"]["phone_number_id"] = json!(phone_number_id);
        value["statuses"][0]["recipient_id"] = json!(recipient);
        payload
    };
    for (case, payload) in
        [("another sender", with("read", "999000111", RECIPIENT)), ("another recipient", with("read", SENDER, "447700900123"))]
    {
        assert_eq!(post_webhook(&app, &payload, Some(APP_SECRET)).await.status, 200, "{case}: acknowledged");
        assert_eq!(app.get(&format!("/v2/_executions/{id}")).await.body["data"]["status"], "accepted", "{case}: ignored");
    }
    let stray_reply = message_payload("447700900123", "wamid.STRAY", &wamid, "text", json!({"body": "yes"}));
    assert_eq!(post_webhook(&app, &stray_reply, Some(APP_SECRET)).await.status, 200);
    let after = app.get(&format!("/v2/_executions/{id}")).await.body["data"].clone();
    assert!(after["reply"].is_null(), "a reply from someone else is not the recipient's: {after}");
    assert_eq!(post_webhook(&app, &with("delivered", SENDER, RECIPIENT), Some(APP_SECRET)).await.status, 200);
    assert_eq!(app.get(&format!("/v2/_executions/{id}")).await.body["data"]["status"], "delivered", "its own parties move it");
}

#[tokio::test]
async fn events_naming_the_recipient_by_the_wa_id_meta_gave_it_apply() {
    let app = spawn_app().await;
    // Meta names some countries' numbers by another id (a Mexican mobile gains a 1, say).
    app.sandbox.set_wa_id(RECIPIENT, "1112817126508");
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    app.reaches(&id, "read").await;
    let replied = app.sandbox.reply(ReplyRequest { execution_id: Some(id.clone()), text: Some("yes".into()), ..Default::default() }).await;
    assert!(replied.is_ok(), "{replied:?}");
    assert_eq!(app.reaches(&id, "replied").await["reply"]["text"], "yes");
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge() {
    let app = spawn_app().await;
    let ok = app
        .send(Method::GET, "/v2/_whatsapp/webhook?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444", None, None)
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text, "1158201444");
    assert!(ok.header("content-type").unwrap().starts_with("text/plain"));
    assert!(ok.header("x-request-id").is_some());
    let wrong = app.send(Method::GET, "/v2/_whatsapp/webhook?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1", None, None).await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.error_codes()[0].1, "verification_failed");
}

#[tokio::test]
async fn the_handshake_refuses_a_missing_empty_or_nul_challenge() {
    let app = spawn_app().await;
    let handshake = "/v2/_whatsapp/webhook?hub.mode=subscribe&hub.verify_token=verify-me";
    for (challenge, code) in [("", "missing_field"), ("&hub.challenge=", "missing_field"), ("&hub.challenge=a%00b", "invalid_character")] {
        let reply = app.send(Method::GET, &format!("{handshake}{challenge}"), None, None).await;
        assert_eq!(reply.status, 400, "{challenge}: {}", reply.text);
        assert_eq!(reply.error_codes(), [("hub.challenge", code)], "{challenge}");
        reply.assert_ctx_id();
    }
}

#[tokio::test]
async fn a_paused_template_stops_its_pending_sends() {
    let app = spawn_app_stepwise().await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let pending = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let update = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "time": 1750000000, "changes": [{
        "field": "message_template_status_update",
        "value": {"event": "PAUSED", "message_template_id": 1000000000000001u64, "message_template_name": "call_permission_request",
                  "message_template_language": "en", "reason": "FIRST_PAUSE"}}]}]});
    assert_eq!(post_webhook(&app, &update, Some(APP_SECRET)).await.status, 200);
    let failed = app.get(&format!("/v2/_executions/{}", pending["execution_id"].as_str().unwrap())).await.body["data"].clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "template_not_approved");
    assert!(failed["error"]["message"].as_str().unwrap().contains("became PAUSED"));
    assert_eq!(app.worker.run_once().await, 0, "nothing left to send");
    assert!(app.sandbox.sent().is_empty());
    let templates = app.get(&format!("/v2/_whatsapp/templates?sender={SENDER}&per_page=100")).await;
    let template =
        templates.body["data"]["data"].as_array().unwrap().iter().find(|t| t["name"] == "call_permission_request").unwrap().clone();
    assert_eq!(template["status"], "PAUSED", "the registry follows the update");
    let refused = app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"variables": {"customer_name": "Ana"}})).await;
    assert_eq!((refused.status, refused.error_codes()[0].1), (409, "template_unavailable"));

    // A quality warning changes nothing; a reinstatement makes it sendable again.
    let mut flagged = update.clone();
    flagged["entry"][0]["changes"][0]["value"]["event"] = json!("FLAGGED");
    flagged["entry"][0]["time"] = json!(1750000100);
    assert_eq!(post_webhook(&app, &flagged, Some(APP_SECRET)).await.status, 200);
    let mut reinstated = update.clone();
    reinstated["entry"][0]["changes"][0]["value"]["event"] = json!("REINSTATED");
    reinstated["entry"][0]["time"] = json!(1750000200);
    assert_eq!(post_webhook(&app, &reinstated, Some(APP_SECRET)).await.status, 200);
    let again = app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"variables": {"customer_name": "Ana"}})).await;
    assert_eq!(again.status, 202, "REINSTATED means APPROVED: {}", again.text);
}

#[tokio::test]
async fn deleting_an_action_cancels_its_pending_executions_and_wakes_waiters() {
    let app = spawn_app_stepwise().await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let pending = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let id = pending["execution_id"].as_str().unwrap().to_owned();
    let waiter = tokio::spawn({
        let (http, url, token) = (app.http.clone(), format!("{}/v2/_executions/{id}?wait=30", app.base), app.token(&[]));
        async move { common::read(http.get(url).bearer_auth(token).send().await.unwrap()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.call(Method::DELETE, &format!("/v2/_actions/{action}"), None).await.status, 200);
    let woken = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken, not timed out").unwrap();
    assert_eq!(woken.body["data"]["status"], "cancelled");
    assert_eq!(app.worker.run_once().await, 0);
    assert!(app.sandbox.sent().is_empty(), "a cancelled execution is never sent");
}

#[tokio::test]
async fn a_mandatory_execution_expires_at_its_reply_deadline() {
    let app = spawn_app().await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;
    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}, "reply_timeout": 10})).await;
    let expired = app.settled(execution["execution_id"].as_str().unwrap(), 25).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(statuses(&expired).last().map(String::as_str), Some("expired"));
}

#[tokio::test]
async fn pacing_spreads_a_burst_to_one_recipient() {
    let app = spawn_app_stepwise().await;
    app.register_sender().await;
    let action = app.create_action(&non_mandatory_body()).await;
    for call in 0..47 {
        app.execute(&action, &json!({"call_id": format!("burst-{call}"), "variables": {"customer_name": "Ana"}})).await;
    }
    assert_eq!(app.worker.run_once().await, 47);
    assert_eq!(app.sandbox.sent().len(), 45, "Meta's burst of 45 to one recipient goes at once");
    let queued = app.get("/v2/_executions?status=queued").await;
    assert_eq!(queued.body["data"]["pagination"]["total_records"], 2, "the rest wait their turn, queued, not failed");
    assert_eq!(app.worker.run_once().await, 0, "rescheduled about 6 s out, not retried in a loop");
}

#[tokio::test]
async fn pacing_holds_a_sender_to_its_messages_per_second() {
    // 2 a second: a pass would have to take half a second to see a token refill.
    let app = spawn_stepwise_with(|s| s.sender_mps = 2).await;
    app.register_sender().await;
    let action = app.create_action(&non_mandatory_body()).await;
    for index in 0..12 {
        app.execute(&action, &json!({"to": format!("+1415555{:04}", 100 + index), "variables": {"customer_name": "Ana"}})).await;
    }
    assert_eq!(app.worker.run_once().await, 12);
    assert_eq!(app.sandbox.sent().len(), 2, "one second's worth at 2 messages per second");
    let queued = app.get("/v2/_executions?status=queued").await;
    assert_eq!(queued.body["data"]["pagination"]["total_records"], 10, "the rest rescheduled, not failed");
}
