//! Events to voice platforms (CONTRACT §10): endpoints, Standard Webhooks
//! signatures checked here from the specification, retries with the same
//! id, rotation, filters, the SSRF rules, and isolation of a slow endpoint.

mod common;

use std::time::Duration;

use actiond::auth::Scope;
use actiond::whatsapp::sandbox::ReplyRequest;
use common::receiver::Receiver;
use common::{TestApp, app_with_seed_action, spawn_app_with, spawn_stepwise_with};
use reqwest::Method;
use serde_json::{Value, json};

/// Registers an endpoint at `url` with `extra` fields; its data with the secret.
async fn endpoint(app: &TestApp, url: &str, extra: Value) -> Value {
    let mut body = json!({"url": url});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let reply = app.post("/v2/_webhook_endpoints", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"].clone()
}

async fn attempts(app: &TestApp, endpoint_id: &str) -> Vec<Value> {
    let reply = app.get(&format!("/v2/_webhook_endpoints/{endpoint_id}/attempts")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["data"]["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn endpoints_are_managed_and_their_secret_is_shown_once() {
    let (app, _) = app_with_seed_action().await;
    let reply = app
        .post(
            "/v2/_webhook_endpoints",
            &json!({"url": "https://voice.example.com/hooks", "events": ["execution.replied"], "description": " Vapi "}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.assert_ctx_id();
    let created = &reply.body["data"];
    let id = created["id"].as_str().unwrap();
    assert_eq!(reply.header("location"), Some(format!("/v2/_webhook_endpoints/{id}").as_str()));
    assert_eq!(created["events"], json!(["execution.replied"]));
    assert_eq!((created["description"].as_str(), created["disabled"].as_bool()), (Some("Vapi"), Some(false)));
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");

    let fetched = app.get(&format!("/v2/_webhook_endpoints/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert!(fetched.body["data"].get("secret").is_none() && !fetched.text.contains(secret), "{}", fetched.text);
    let listed = app.get("/v2/_webhook_endpoints?per_page=1").await;
    assert_eq!(listed.body["data"]["pagination"]["total_records"], 1);
    assert!(!listed.text.contains(secret));

    let patched = app
        .call(Method::PATCH, &format!("/v2/_webhook_endpoints/{id}"), Some(&json!({"events": null, "disabled": true, "description": null})))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["data"]["events"], Value::Null);
    assert_eq!((patched.body["data"]["disabled"].as_bool(), patched.body["data"]["description"].as_str()), (Some(true), Some("")));
    let refused = app
        .call(
            Method::PATCH,
            &format!("/v2/_webhook_endpoints/{id}"),
            Some(&json!({"url": null, "events": ["execution.nope"], "disabled": "no"})),
        )
        .await;
    assert_eq!(refused.status, 400);
    let mut codes = refused.error_codes();
    codes.sort();
    assert_eq!(codes, [("disabled", "invalid_type"), ("events[0]", "unknown_event_type"), ("url", "missing_field")]);

    let rotated = app.post(&format!("/v2/_webhook_endpoints/{id}/_rotate_secret"), &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["data"]["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    let reader = app.token(&[Scope::ActionsRead]);
    let forbidden =
        app.send(Method::POST, "/v2/_webhook_endpoints", Some(&reader), Some(&json!({"url": "https://voice.example.com/"}))).await;
    assert_eq!(forbidden.status, 403);
    let other_tenant = app.token_for("someone-else", &[]);
    assert_eq!(app.send(Method::GET, &format!("/v2/_webhook_endpoints/{id}"), Some(&other_tenant), None).await.status, 404);

    assert_eq!(app.call(Method::DELETE, &format!("/v2/_webhook_endpoints/{id}"), None).await.status, 200);
    assert_eq!(app.get(&format!("/v2/_webhook_endpoints/{id}")).await.status, 404);
    assert_eq!(app.get("/v2/_webhook_endpoints/not-a-uuid").await.status, 404);
}

#[tokio::test]
async fn creation_refuses_bad_urls_forbidden_targets_and_unknown_types() {
    let app = spawn_app_with(|settings| settings.events_allow_local = Some(false)).await;
    for (url, code) in [
        ("http://voice.example.com/hooks", "invalid_url"),
        ("https://user:pw@voice.example.com/", "invalid_url"),
        ("not a url", "invalid_url"),
        ("https://127.0.0.1/hooks", "forbidden_webhook_target"),
        ("https://localhost:8443/hooks", "forbidden_webhook_target"),
        ("https://[::ffff:127.0.0.1]/", "forbidden_webhook_target"),
        ("https://[::1]/", "forbidden_webhook_target"),
        ("https://10.1.2.3/", "forbidden_webhook_target"),
        ("https://192.168.0.10/", "forbidden_webhook_target"),
        ("https://169.254.169.254/latest/meta-data", "forbidden_webhook_target"),
        ("https://[fd00::1]/", "forbidden_webhook_target"),
        ("https://224.0.0.1/", "forbidden_webhook_target"),
    ] {
        let reply = app.post("/v2/_webhook_endpoints", &json!({"url": url})).await;
        assert_eq!(reply.status, 400, "{url}: {}", reply.text);
        assert_eq!(reply.error_codes(), [("url", code)], "{url}");
    }
    let unknown = app
        .post("/v2/_webhook_endpoints", &json!({"url": "https://voice.example.com/", "events": ["execution.replied", "sms.sent"]}))
        .await;
    assert_eq!(unknown.error_codes(), [("events[1]", "unknown_event_type")]);
    let empty = app.post("/v2/_webhook_endpoints", &json!({"url": "https://voice.example.com/", "events": []})).await;
    assert_eq!(empty.error_codes(), [("events", "invalid_length")]);

    let public = endpoint(&app, "https://93.184.216.34/hooks", json!({})).await;
    let id = public["id"].as_str().unwrap();
    let moved = app.call(Method::PATCH, &format!("/v2/_webhook_endpoints/{id}"), Some(&json!({"url": "https://127.0.0.2/"}))).await;
    assert_eq!(moved.error_codes(), [("url", "forbidden_webhook_target")]);
}

#[tokio::test]
async fn every_bad_event_type_is_reported_at_once_in_the_lists_order() {
    let app = spawn_app_with(|_| {}).await;
    let id = endpoint(&app, "https://voice.example.com/", json!({})).await["id"].as_str().unwrap().to_owned();
    let events = json!(["webhook.test", 1, "bogus", "execution.replied"]);
    let created = app.post("/v2/_webhook_endpoints", &json!({"url": "https://voice.example.com/", "events": events})).await;
    let patched = app.call(Method::PATCH, &format!("/v2/_webhook_endpoints/{id}"), Some(&json!({"events": events}))).await;
    let expected = [("events[0]", "unknown_event_type"), ("events[1]", "invalid_type"), ("events[2]", "unknown_event_type")];
    for reply in [created, patched] {
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.error_codes(), expected);
    }
}

#[tokio::test]
async fn a_reply_reaches_the_receiver_as_a_signed_execution_replied_event() {
    let (app, action) = app_with_seed_action().await;
    let receiver = Receiver::start().await;
    let secret = endpoint(&app, &receiver.url, json!({})).await["secret"].as_str().unwrap().to_owned();
    let execution = app.execute(&action, &json!({"call_id": "call-events", "variables": {"customer_name": "Ana"}})).await;
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    app.reaches(&id, "read").await;
    app.sandbox
        .reply(ReplyRequest { execution_id: Some(id.clone()), text: Some("yes please".into()), ..Default::default() })
        .await
        .unwrap();

    let replied = receiver.event("execution.replied").await;
    assert!(replied.signed_by(&secret), "signature {}", replied.header("webhook-signature"));
    assert_eq!(replied.header("content-type"), "application/json");
    let sent_at: i64 = replied.header("webhook-timestamp").parse().unwrap();
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - sent_at).abs() < 60);
    let event = replied.json();
    assert_eq!(event["data"]["execution_id"], id.as_str());
    assert_eq!((event["data"]["status"].as_str(), event["data"]["reply"]["text"].as_str()), (Some("replied"), Some("yes please")));
    let timeline = app.get(&format!("/v2/_executions/{id}")).await.body["data"]["timeline"].clone();
    let replied_at = timeline.as_array().unwrap().iter().find(|entry| entry["status"] == "replied").unwrap()["at"].clone();
    assert_eq!(event["timestamp"], replied_at, "the event's time is the change's");

    // Every status the execution reached has its one event, each with its own id.
    let mut ids = Vec::new();
    for kind in ["execution.accepted", "execution.sent", "execution.delivered", "execution.read", "execution.replied"] {
        let events = receiver.events_of(kind, 1).await;
        assert_eq!(events.len(), 1, "{kind} once");
        assert!(events[0].signed_by(&secret));
        ids.push(events[0].header("webhook-id").to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert!(receiver.received().iter().all(|r| r.json()["type"] != "execution.queued" && r.json()["type"] != "execution.sending"));
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_id_and_every_attempt_listed() {
    let app = spawn_stepwise_with(|settings| settings.events_retry_scale = 0.0001).await;
    let receiver = Receiver::start().await;
    receiver.answer([(500, None), (503, None)]);
    let created = endpoint(&app, &receiver.url, json!({"events": ["execution.failed"]})).await;
    let id = created["id"].as_str().unwrap();
    let queued = app.post(&format!("/v2/_webhook_endpoints/{id}/_test"), &json!({})).await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let event_id = queued.body["data"]["event_id"].as_str().unwrap().to_owned();

    assert_eq!(app.dispatcher.run_once().await, 1);
    let first = attempts(&app, id).await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0]["attempt"].as_u64(), first[0]["status_code"].as_u64()), (Some(1), Some(500)));
    assert_eq!(first[0]["type"], "webhook.test");
    assert!(first[0]["next_attempt_at"].is_string(), "a retry is scheduled: {}", first[0]);

    for _ in 0..50 {
        if receiver.received().len() == 3 {
            break;
        }
        app.dispatcher.run_once().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.header("webhook-id") == event_id), "one id on every retry");
    assert!(received.iter().all(|r| r.signed_by(created["secret"].as_str().unwrap())));

    let all = attempts(&app, id).await;
    let listed: Vec<(u64, u64)> = all.iter().map(|a| (a["attempt"].as_u64().unwrap(), a["status_code"].as_u64().unwrap())).collect();
    assert_eq!(listed, [(3, 200), (2, 503), (1, 500)], "newest first");
    assert!(all.iter().all(|a| a.get("next_attempt_at").is_none() && a["event_id"] == event_id.as_str()), "{all:?}");
    assert!(all[1]["error"].as_str().unwrap().contains("503"));
}

#[tokio::test]
async fn redirects_are_not_followed_and_a_silent_endpoint_fails_the_attempt() {
    let app = spawn_stepwise_with(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer([(307, Some("/elsewhere"))]);
    let created = endpoint(&app, &receiver.url, json!({})).await;
    let id = created["id"].as_str().unwrap();
    app.post(&format!("/v2/_webhook_endpoints/{id}/_test"), &json!({})).await;
    app.dispatcher.run_once().await;
    assert_eq!(receiver.received().len(), 1, "only the endpoint itself was asked");
    let listed = attempts(&app, id).await;
    assert_eq!(listed[0]["status_code"], 307);
}

#[tokio::test]
async fn rotation_signs_each_delivery_with_both_secrets() {
    let (app, _) = app_with_seed_action().await;
    let receiver = Receiver::start().await;
    let created = endpoint(&app, &receiver.url, json!({})).await;
    let (id, old) = (created["id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    let new = app.post(&format!("/v2/_webhook_endpoints/{id}/_rotate_secret"), &json!({})).await.body["data"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(&format!("/v2/_webhook_endpoints/{id}/_test"), &json!({})).await;
    let test = receiver.event("webhook.test").await;
    let signatures: Vec<&str> = test.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "v1,<new> v1,<old>");
    assert!(test.signed_by(&new) && test.signed_by(old));
    assert_eq!(test.json()["data"]["endpoint_id"], id);
}

#[tokio::test]
async fn filters_and_disabling_decide_what_an_endpoint_gets() {
    let (app, action) = app_with_seed_action().await;
    let (replies_only, everything) = (Receiver::start().await, Receiver::start().await);
    let filtered = endpoint(&app, &replies_only.url, json!({"events": ["execution.replied"]})).await;
    let paused = endpoint(&app, &everything.url, json!({})).await;
    let paused_id = paused["id"].as_str().unwrap();
    app.call(Method::PATCH, &format!("/v2/_webhook_endpoints/{paused_id}"), Some(&json!({"disabled": true}))).await;

    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    app.reaches(&id, "read").await;
    app.post(&format!("/v2/_webhook_endpoints/{}/_test", filtered["id"].as_str().unwrap()), &json!({})).await;
    replies_only.event("webhook.test").await;
    assert!(replies_only.received().iter().all(|r| r.json()["type"] == "webhook.test"), "nothing but what it asked for");
    assert!(everything.received().is_empty(), "a disabled endpoint gets nothing");

    // Enabled again, it is sent what it subscribed to from then on.
    app.call(Method::PATCH, &format!("/v2/_webhook_endpoints/{paused_id}"), Some(&json!({"disabled": false}))).await;
    app.sandbox.reply(ReplyRequest { execution_id: Some(id), text: Some("ok".into()), ..Default::default() }).await.unwrap();
    everything.event("execution.replied").await;
    replies_only.event("execution.replied").await;
}

#[tokio::test]
async fn a_paused_template_an_action_uses_and_a_refused_token_are_reported() {
    let (app, action) = app_with_seed_action().await;
    let receiver = Receiver::start().await;
    let secret = endpoint(&app, &receiver.url, json!({"events": ["template.status_changed", "sender.unhealthy"]})).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.sandbox.set_template_status("call_permission_request", "PAUSED");
    let synced = app.post(&format!("/v2/_whatsapp/senders/{}/_sync", common::SENDER), &json!({})).await;
    assert_eq!(synced.status, 200, "{}", synced.text);
    let paused = receiver.event("template.status_changed").await;
    assert!(paused.signed_by(&secret));
    let data = paused.json()["data"].clone();
    assert_eq!(data["actions"], json!([action]));
    assert_eq!(
        (data["name"].as_str(), data["status"].as_str(), data["sender"].as_str()),
        (Some("call_permission_request"), Some("PAUSED"), Some(common::SENDER))
    );

    app.sandbox.set_template_status("call_permission_request", "APPROVED");
    app.post(&format!("/v2/_whatsapp/senders/{}/_sync", common::SENDER), &json!({})).await;
    app.sandbox.set_access_token("a-token-meta-no-longer-takes");
    app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"variables": {"customer_name": "Ana"}})).await;
    let unhealthy = receiver.event("sender.unhealthy").await;
    let sender = unhealthy.json()["data"].clone();
    assert_eq!((sender["phone_number_id"].as_str(), sender["healthy"].as_bool()), (Some(common::SENDER), Some(false)));
    assert!(sender.get("access_token").is_none() && !unhealthy.body.contains("a-token"), "no credentials in events");
    assert_eq!(receiver.events_of("template.status_changed", 1).await.len(), 1, "APPROVED again is not reported");
}

#[tokio::test]
async fn a_hanging_endpoint_delays_neither_messages_nor_another_tenants_events() {
    let (app, action) = app_with_seed_action().await;
    let (hanging, healthy) = (Receiver::start().await, Receiver::start().await);
    hanging.delay(Duration::from_secs(30));
    let stuck = endpoint(&app, &hanging.url, json!({})).await;
    for _ in 0..40 {
        app.post(&format!("/v2/_webhook_endpoints/{}/_test", stuck["id"].as_str().unwrap()), &json!({})).await;
    }
    let other_token = app.token_for("another-voice-platform", &[]);
    let other = app.send(Method::POST, "/v2/_webhook_endpoints", Some(&other_token), Some(&json!({"url": healthy.url}))).await;
    let other_id = other.body["data"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.send(Method::POST, &format!("/v2/_webhook_endpoints/{other_id}/_test"), Some(&other_token), Some(&json!({}))).await;
    healthy.event("webhook.test").await;
    let execution = app.execute(&action, &json!({"variables": {"customer_name": "Ana"}})).await;
    app.reaches(execution["execution_id"].as_str().unwrap(), "read").await;
    // No attempt to the hanging endpoint has ended: each lasts its 10 s
    // timeout, so nothing above waited on one, however slow the machine.
    let stuck_attempts = attempts(&app, stuck["id"].as_str().unwrap()).await;
    assert!(stuck_attempts.is_empty(), "the event and the message went ahead of the hanging endpoint: {stuck_attempts:?}");
    let in_flight = hanging.received().len();
    assert!((1..=16).contains(&in_flight), "at most 16 in flight to one endpoint: {in_flight}");
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled() {
    // 5 days × 3e-5 is 13 s; the 8 attempts' schedule 3 s, which leaves the
    // attempts 10 s on a loaded machine before the limit.
    let app = spawn_app_with(|settings| settings.events_retry_scale = 0.000_03).await;
    let receiver = Receiver::start().await;
    receiver.answer(std::iter::repeat_n((500, None), 100));
    let created = endpoint(&app, &receiver.url, json!({})).await;
    let id = created["id"].as_str().unwrap();
    app.post(&format!("/v2/_webhook_endpoints/{id}/_test"), &json!({})).await;
    common::eventually("8 attempts in all", async || attempts(&app, id).await.len() >= 8).await;
    let given_up = attempts(&app, id).await;
    assert_eq!(given_up.len(), 8, "8 attempts in all");
    assert!(given_up.iter().all(|a| a.get("next_attempt_at").is_none()));
    assert_eq!(app.get(&format!("/v2/_webhook_endpoints/{id}")).await.body["data"]["disabled"], false);

    // Failing for the whole limit: moved back, not waited for.
    app.database.execute(&format!("UPDATE event_endpoints SET failing_since = failing_since - 13000 WHERE id = '{id}'"));
    app.post(&format!("/v2/_webhook_endpoints/{id}/_test"), &json!({})).await;
    for _ in 0..500 {
        if app.get(&format!("/v2/_webhook_endpoints/{id}")).await.body["data"]["disabled"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the endpoint failing for 5 (scaled) days was not disabled");
}
