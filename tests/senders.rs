//! WhatsApp senders and templates over real HTTP, against the Graph sandbox.

mod common;

use actiond::auth::Scope;
use actiond::whatsapp::sandbox::{SANDBOX_ACCESS_TOKEN, SANDBOX_WABA_ID};
use common::{SENDER, seed_body, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::json;

fn sender_path() -> String {
    format!("/v2/_whatsapp/senders/{SENDER}")
}

#[tokio::test]
async fn registering_checks_credentials_fetches_templates_and_hides_the_token() {
    let app = spawn_app().await;
    let reply = app.register_sender().await;
    reply.assert_ctx_id();
    assert_eq!(reply.header("location"), Some(sender_path().as_str()));
    let sender = &reply.body["data"];
    assert_eq!(sender["phone_number_id"], SENDER);
    assert_eq!(sender["waba_id"], SANDBOX_WABA_ID);
    assert_eq!(sender["verified_name"], "actiond Sandbox");
    assert_eq!(sender["healthy"], true);
    assert_eq!(sender["template_count"], 6);
    assert!(!reply.text.contains(SANDBOX_ACCESS_TOKEN), "the token never appears in a response");

    let listed = app.get("/v2/_whatsapp/senders").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    let fetched = app.get(&sender_path()).await;
    assert_eq!(fetched.body["data"]["phone_number_id"], SENDER);
    for reply in [&listed, &fetched] {
        assert!(!reply.text.contains(SANDBOX_ACCESS_TOKEN));
    }

    // At rest the token is sealed: its bytes are nowhere in what the database holds.
    let stored = app.stored_sender_bytes();
    assert!(!stored.is_empty());
    assert!(!stored.windows(SANDBOX_ACCESS_TOKEN.len()).any(|w| w == SANDBOX_ACCESS_TOKEN.as_bytes()), "token sealed at rest");
}

#[tokio::test]
async fn template_pages_are_followed_to_the_end() {
    let app = spawn_app().await;
    app.sandbox.set_page_size(2);
    let reply = app.register_sender().await;
    assert_eq!(reply.body["data"]["template_count"], 6, "three pages of two");
    let templates = app.get(&format!("/v2/_whatsapp/templates?sender={SENDER}&per_page=100")).await;
    assert_eq!(templates.status, 200);
    assert_eq!(templates.body["data"]["pagination"]["total_records"], 6);
    let order_update = templates.body["data"]["data"].as_array().unwrap().iter().find(|t| t["name"] == "order_update").unwrap().clone();
    assert_eq!(order_update["parameters"], json!({"header_params": 1, "body_params": 3, "button_params": 1}));
    assert_eq!(order_update["sender"], SENDER);
    assert_eq!(order_update["status"], "APPROVED");
}

#[tokio::test]
async fn credentials_meta_refuses_are_a_400_and_an_unreachable_graph_a_502() {
    let app = spawn_app().await;
    let wrong_token = json!({"phone_number_id": SENDER, "waba_id": SANDBOX_WABA_ID, "access_token": "EAAG-wrong"});
    let reply = app.post("/v2/_whatsapp/senders", &wrong_token).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_codes(), [("access_token", "invalid_sender_credentials")]);
    assert!(reply.body["detail"].as_str().unwrap().contains("code 190"), "{}", reply.body["detail"]);
    assert!(!reply.text.contains("EAAG-wrong"));

    let wrong_waba = json!({"phone_number_id": SENDER, "waba_id": "777", "access_token": SANDBOX_ACCESS_TOKEN});
    let reply = app.post("/v2/_whatsapp/senders", &wrong_waba).await;
    assert_eq!(reply.error_codes(), [("waba_id", "invalid_sender_credentials")]);
    let both_wrong = json!({"phone_number_id": "111", "waba_id": "777", "access_token": SANDBOX_ACCESS_TOKEN});
    let reply = app.post("/v2/_whatsapp/senders", &both_wrong).await;
    let refused = [("phone_number_id", "invalid_sender_credentials"), ("waba_id", "invalid_sender_credentials")];
    assert_eq!(reply.error_codes(), refused, "both ids named in one answer");

    let invalid = app.post("/v2/_whatsapp/senders", &json!({"phone_number_id": "abc", "waba_id": 5, "access_token": ""})).await;
    assert_eq!(invalid.status, 400);
    let fields: Vec<String> = invalid.error_codes().into_iter().map(|(f, c)| format!("{f}:{c}")).collect();
    assert_eq!(fields, ["phone_number_id:invalid_whatsapp_id", "waba_id:invalid_type", "access_token:invalid_length"]);
    let not_a_token = json!({"phone_number_id": SENDER, "waba_id": SANDBOX_WABA_ID, "access_token": "EAAG\u{7}é token"});
    let reply = app.post("/v2/_whatsapp/senders", &not_a_token).await;
    assert_eq!(reply.status, 400, "a token that cannot be a header is the client's error, not a 502");
    assert_eq!(reply.error_codes(), [("access_token", "invalid_sender_credentials")]);
    assert_eq!(app.get("/v2/_whatsapp/senders").await.body["data"], json!([]), "nothing stored");

    // Meta throttled or down, or a proxy's error without Meta's code: not the
    // client's credentials, so a 502.
    let body = json!({"phone_number_id": SENDER, "waba_id": SANDBOX_WABA_ID, "access_token": SANDBOX_ACCESS_TOKEN});
    let throttled = json!({"error": {"message": "(#131016) Service unavailable", "type": "OAuthException", "code": 131016}});
    let uncoded = json!({"error": {"message": "Bad gateway"}});
    for (status, answer) in [(503, throttled), (502, uncoded)] {
        let graph = axum::Router::new()
            .fallback(move || async move { (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer.clone())) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let graph_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, graph).await });
        let app = spawn_app_with(|s| s.whatsapp_graph_url = graph_url).await;
        let reply = app.post("/v2/_whatsapp/senders", &body).await;
        assert_eq!((reply.status, reply.error_codes()), (502, vec![("graph", "graph_unavailable")]), "{}", reply.text);
    }

    // A Graph API that cannot be reached: a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let offline = spawn_app_with(|s| s.whatsapp_graph_url = format!("http://{closed}")).await;
    let reply = offline.post("/v2/_whatsapp/senders", &body).await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(reply.error_codes()[0].1, "graph_unavailable");
    reply.assert_ctx_id();
}

#[tokio::test]
async fn a_phone_number_id_belongs_to_one_tenant() {
    let app = spawn_app().await;
    app.register_sender().await;
    let again = app.register_sender_as(&app.token(&[])).await;
    assert_eq!(again.status, 200, "the owner registering again replaces credentials: {}", again.text);
    let other = app.token_for("someone-else", &[]);
    let taken = app.register_sender_as(&other).await;
    assert_eq!(taken.status, 409);
    assert_eq!(taken.error_codes(), [("phone_number_id", "sender_taken")]);
    let missing = "/v2/_whatsapp/senders/123456789";
    for (method, suffix) in [(Method::GET, ""), (Method::DELETE, ""), (Method::POST, "/_sync")] {
        let foreign = app.send(method.clone(), &format!("{}{suffix}", sender_path()), Some(&other), None).await;
        let absent = app.send(method.clone(), &format!("{missing}{suffix}"), Some(&other), None).await;
        assert_eq!(foreign.status, 404, "{method} {suffix}");
        assert_eq!(foreign.error_codes(), [("phone_number_id", "not_found")]);
        assert_eq!(
            (foreign.status, &foreign.body["detail"], foreign.error_codes()),
            (absent.status, &absent.body["detail"], absent.error_codes())
        );
    }
    let theirs = app.send(Method::GET, &format!("/v2/_whatsapp/templates?sender={SENDER}"), Some(&other), None).await;
    assert_eq!(theirs.status, 404);
    let all = app.send(Method::GET, "/v2/_whatsapp/templates", Some(&other), None).await;
    assert_eq!(all.body["data"]["pagination"]["total_records"], 0);
    assert_eq!(app.get(&sender_path()).await.status, 200, "still the owner's");
}

#[tokio::test]
async fn an_unknown_sender_filter_is_named_as_the_client_sent_it() {
    let app = spawn_app().await;
    let reply = app.get("/v2/_whatsapp/templates?sender=999").await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.error_codes(), [("sender", "not_found")]);
}

#[tokio::test]
async fn sync_picks_up_template_changes_and_delete_forgets_the_sender() {
    let app = spawn_app().await;
    app.register_sender().await;
    let action = app.create_action(&seed_body()).await;

    app.sandbox.set_template_status("call_permission_request", "PAUSED");
    let synced = app.call(Method::POST, &format!("{}/_sync", sender_path()), None).await;
    assert_eq!(synced.status, 200, "{}", synced.text);
    assert_eq!(synced.body["data"]["template_count"], 6);
    let refused = app.post("/v2/_actions", &seed_body()).await;
    assert_eq!(refused.error_codes(), [("webhook.template_name", "template_not_approved")]);
    assert!(refused.body["errors"][0]["message"].as_str().unwrap().contains("is PAUSED"));

    // An edit Meta approved adds a part string parameters cannot fill: the
    // action saved before can no longer run.
    app.sandbox.set_template_status("call_permission_request", "APPROVED");
    let carousel = json!([{"type": "BODY", "text": "Hi {{1}}"}, {"type": "CAROUSEL", "cards": []}]);
    app.sandbox.set_template_components("call_permission_request", carousel);
    assert_eq!(app.call(Method::POST, &format!("{}/_sync", sender_path()), None).await.status, 200);
    let executed = app.post(&format!("/v2/_actions/{action}/_execute"), &json!({"variables": {"customer_name": "Ana"}})).await;
    assert_eq!((executed.status, executed.error_codes()), (409, vec![("action_id", "template_unavailable")]), "{}", executed.text);
    assert!(executed.body["errors"][0]["message"].as_str().unwrap().contains("a CAROUSEL component"), "{}", executed.text);

    let deleted = app.call(Method::DELETE, &sender_path(), None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["data"], json!({"phone_number_id": SENDER, "deleted": true}));
    assert_eq!(app.get(&sender_path()).await.status, 404);
    assert_eq!(app.get("/v2/_whatsapp/templates").await.body["data"]["pagination"]["total_records"], 0);
    let unknown = app.post("/v2/_actions", &seed_body()).await;
    assert_eq!(unknown.error_codes(), [("webhook.from", "unknown_sender")]);
}

#[tokio::test]
async fn sender_routes_need_whatsapp_admin() {
    let app = spawn_app().await;
    let reader = app.token(&[Scope::ActionsRead, Scope::ActionsWrite, Scope::ActionsExecute]);
    assert_eq!(app.register_sender_as(&reader).await.status, 403);
    assert_eq!(app.send(Method::GET, "/v2/_whatsapp/senders", Some(&reader), None).await.status, 403);
    assert_eq!(
        app.send(Method::GET, "/v2/_whatsapp/templates", Some(&reader), None).await.status,
        200,
        "templates are readable with actions:read"
    );
    let admin = app.token(&[Scope::WhatsappAdmin]);
    assert_eq!(app.register_sender_as(&admin).await.status, 201);
}
