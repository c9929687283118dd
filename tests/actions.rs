//! The actions API over real HTTP: the seed's create, reads, PUT, PATCH,
//! DELETE, every validation rule, the template check and idempotency.

mod common;

use actiond::auth::Scope;
use common::{SENDER, app_with_sender, seed_body};
use reqwest::Method;
use serde_json::{Value, json};

fn with_webhook(changes: Value) -> Value {
    let mut body = seed_body();
    for (key, value) in changes.as_object().unwrap() {
        body["webhook"][key] = value.clone();
    }
    body
}

#[tokio::test]
async fn the_seed_request_gets_exactly_the_seed_answer() {
    let app = app_with_sender().await;
    let reply = app.post("/v2/_actions", &seed_body()).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.assert_ctx_id();
    let body = reply.body.as_object().unwrap();
    assert_eq!(body.keys().collect::<Vec<_>>(), ["ctx_id", "data"], "only the seed's fields");
    let data = reply.body["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["action_id", "name", "type"]);
    let id = data["action_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "action_id is a UUID");
    assert_eq!(data["name"], "My Whatsapp Action");
    assert_eq!(data["type"], "SEND_WHATSAPP");
    assert_eq!(reply.header("location"), Some(format!("/v2/_actions/{id}").as_str()));
}

#[tokio::test]
async fn a_created_action_reads_back_normalised() {
    let app = app_with_sender().await;
    let mut body = with_webhook(json!({"to": "+1 (281) 712-6508", "language_code": null, "mandatory": null}));
    body["type"] = json!("send_whatsapp");
    body["action_timing"] = json!("DURING");
    body["name"] = json!("  Padded name  ");
    body["phone_number"] = json!("+44 20 7946 0958");
    body.as_object_mut().unwrap().remove("is_active");
    body["unknown_field"] = json!("ignored");
    let id = app.create_action(&body).await;

    let reply = app.get(&format!("/v2/_actions/{id}")).await;
    assert_eq!(reply.status, 200);
    reply.assert_ctx_id();
    assert_eq!(reply.body["message"], "Request processed successfully");
    let action = &reply.body["data"];
    assert_eq!(action["id"], id.as_str());
    assert_eq!(action["company_id"], app.tenant.as_str());
    assert_eq!(action["name"], "Padded name");
    assert_eq!(action["type"], "SEND_WHATSAPP");
    assert_eq!(action["action_timing"], "DURING");
    assert_eq!(action["is_active"], true);
    assert_eq!(action["phone_number"], "442079460958");
    assert_eq!(action["webhook"]["to"], "12817126508");
    assert_eq!(action["webhook"]["language_code"], "en");
    assert_eq!(action["webhook"]["mandatory"], false);
    assert_eq!(action["webhook"]["body_params"], json!(["{{customer_name}}"]));
    assert_eq!(action["webhook"]["header_params"], json!([]));
    assert!(action.get("unknown_field").is_none());
    let created = time::OffsetDateTime::parse(action["created_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339);
    assert!(created.is_ok(), "created_at is RFC 3339: {}", action["created_at"]);
}

#[tokio::test]
async fn every_violation_is_reported_at_once_and_nothing_is_stored() {
    let app = app_with_sender().await;
    let body = json!({
        "name": "",
        "description": "x".repeat(2001),
        "type": "SEND_SMS",
        "action_timing": "before",
        "is_active": "yes",
        "phone_number": "12345",
        "webhook": {"to": "2817126508", "from": SENDER, "template_name": "Not-Valid", "language_code": "klingon",
                    "body_params": ["ok", "line\nbreak"], "mandatory": "true"}
    });
    let reply = app.post("/v2/_actions", &body).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    reply.assert_ctx_id();
    let expected = [
        ("name", "invalid_length"),
        ("description", "invalid_length"),
        ("type", "unsupported_action_type"),
        ("is_active", "invalid_type"),
        ("action_timing", "invalid_action_timing"),
        ("phone_number", "invalid_phone_number"),
        ("webhook.to", "invalid_phone_number"),
        ("webhook.template_name", "invalid_template_name"),
        ("webhook.language_code", "invalid_language_code"),
        ("webhook.body_params[1]", "invalid_parameter"),
        ("webhook.mandatory", "invalid_type"),
    ];
    assert_eq!(reply.error_codes(), expected);
    assert!(reply.body["detail"].as_str().unwrap().starts_with("11 problems"), "{}", reply.body["detail"]);
    assert!(reply.body["errors"][4]["message"].as_str().unwrap().contains("during"), "names the accepted values");

    let list = app.get("/v2/_actions").await;
    assert_eq!(list.body["data"]["pagination"]["total_records"], 0);
}

#[tokio::test]
async fn missing_fields_and_wrong_types_name_their_path() {
    let app = app_with_sender().await;
    let reply = app.post("/v2/_actions", &json!({"name": 5, "webhook": {"body_params": "x", "header_params": [1]}})).await;
    assert_eq!(reply.status, 400);
    let codes = reply.error_codes();
    for expected in [
        ("name", "invalid_type"),
        ("description", "missing_field"),
        ("type", "missing_field"),
        ("action_timing", "missing_field"),
        ("webhook.to", "missing_field"),
        ("webhook.from", "missing_field"),
        ("webhook.template_name", "missing_field"),
        ("webhook.header_params[0]", "invalid_type"),
        ("webhook.body_params", "invalid_type"),
    ] {
        assert!(codes.contains(&expected), "{expected:?} in {codes:?}");
    }
    let reply =
        app.post("/v2/_actions", &json!({"name": "n", "description": "d", "type": "SEND_WHATSAPP", "action_timing": "during"})).await;
    assert_eq!(reply.error_codes(), [("webhook", "missing_field")]);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused_cleanly() {
    let app = app_with_sender().await;
    let token = app.token(&[]);
    let url = format!("{}/v2/_actions", app.base);
    let send = |content_type: &'static str, body: Vec<u8>| {
        app.http.post(&url).bearer_auth(&token).header("content-type", content_type).body(body).send()
    };

    let reply = common::read(send("application/json", b"{\"name\": ".to_vec()).await.unwrap()).await;
    assert_eq!((reply.status, reply.error_codes()[0].1), (400, "invalid_json"));
    reply.assert_ctx_id();
    let reply = common::read(send("application/json", b"[1, 2]".to_vec()).await.unwrap()).await;
    assert_eq!((reply.status, reply.error_codes()[0].1), (400, "invalid_json"));
    let reply = common::read(send("text/plain", serde_json::to_vec(&seed_body()).unwrap()).await.unwrap()).await;
    assert_eq!((reply.status, reply.error_codes()[0].1), (415, "unsupported_media_type"));
    let mut huge = seed_body();
    huge["description"] = json!("x".repeat(70 * 1024));
    let reply = common::read(send("application/json", serde_json::to_vec(&huge).unwrap()).await.unwrap()).await;
    assert_eq!((reply.status, reply.error_codes()[0].1), (413, "payload_too_large"));
    reply.assert_ctx_id();
    // The same oversized body streamed without a Content-Length.
    let chunks = vec![Ok::<_, std::io::Error>(serde_json::to_vec(&huge).unwrap())];
    let streamed = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status().as_u16(), 413);

    assert_eq!(app.get("/v2/_actions").await.body["data"]["pagination"]["total_records"], 0);
}

#[tokio::test]
async fn templates_are_checked_against_the_registry() {
    let app = app_with_sender().await;
    let cases = [
        (json!({"template_name": "no_such_template"}), "webhook.template_name", "template_not_found", "no template named"),
        (json!({"language_code": "pt_BR"}), "webhook.template_name", "template_not_found", "it exists in: en"),
        (json!({"template_name": "summer_promo", "body_params": ["Ana"]}), "webhook.template_name", "template_not_approved", "is PAUSED"),
        (json!({"from": "999999"}), "webhook.from", "unknown_sender", "not a WhatsApp sender registered"),
        (json!({"body_params": []}), "webhook.body_params", "param_count_mismatch", "expected 1 body param, given 0"),
        (json!({"header_params": ["x"]}), "webhook.header_params", "param_count_mismatch", "has no header"),
        (json!({"button_params": ["x"]}), "webhook.button_params", "param_count_mismatch", "quick replies take none"),
    ];
    for (changes, field, code, message) in cases {
        let reply = app.post("/v2/_actions", &with_webhook(changes.clone())).await;
        assert_eq!(reply.status, 400, "{changes}: {}", reply.text);
        assert_eq!(reply.error_codes(), [(field, code)], "{changes}");
        let text = reply.body["errors"][0]["message"].as_str().unwrap();
        assert!(text.contains(message), "{changes}: {text}");
    }

    // One violation hides no other: an unknown sender beside a name or language that does not
    // parse, and the other lists' counts beside a list of the wrong type.
    let together = [
        (
            json!({"from": "999999", "template_name": "Bad-Name"}),
            vec![("webhook.from", "unknown_sender"), ("webhook.template_name", "invalid_template_name")],
        ),
        (
            json!({"from": "999999", "language_code": "xx_YY"}),
            vec![("webhook.from", "unknown_sender"), ("webhook.language_code", "invalid_language_code")],
        ),
        (
            json!({"body_params": "zz", "button_params": ["b"]}),
            vec![("webhook.body_params", "invalid_type"), ("webhook.button_params", "param_count_mismatch")],
        ),
        (
            json!({"template_name": "order_update", "header_params": [5], "body_params": ["a"]}),
            vec![
                ("webhook.header_params[0]", "invalid_type"),
                ("webhook.body_params", "param_count_mismatch"),
                ("webhook.button_params", "param_count_mismatch"),
            ],
        ),
    ];
    for (changes, expected) in together {
        let reply = app.post("/v2/_actions", &with_webhook(changes.clone())).await;
        let mut found = reply.error_codes();
        found.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(found, expected, "{changes}: {}", reply.text);
    }
}

#[tokio::test]
async fn each_template_shape_takes_exactly_its_parameters() {
    let app = app_with_sender().await;
    // Text header + body of 3 + a URL button with a placeholder (quick reply takes none).
    let order = json!({"template_name": "order_update", "header_params": ["A-1042"], "body_params": ["{{name}}", "A-1042", "shipped"],
                       "button_params": ["A-1042"]});
    app.create_action(&with_webhook(order)).await;
    let short = app
        .post(
            "/v2/_actions",
            &with_webhook(json!({"template_name": "order_update", "header_params": [], "body_params": ["a"], "button_params": []})),
        )
        .await;
    let codes: Vec<&str> = short.error_codes().into_iter().map(|(field, _)| field).collect();
    assert_eq!(codes, ["webhook.header_params", "webhook.body_params", "webhook.button_params"]);
    let body_message = short.body["errors"][1]["message"].as_str().unwrap();
    assert_eq!(
        body_message,
        "template 'order_update' (en) has a body with 3 placeholders ({{1}}, {{2}}, {{3}}): expected 3 body params, given 1"
    );

    // Image header (a URL or media id) + named body placeholders.
    let image = json!({"template_name": "appointment_reminder", "header_params": ["https://cdn.example.com/c.jpg"],
                       "body_params": ["Ana", "May 3"]});
    app.create_action(&with_webhook(image)).await;
    let spanish = json!({"template_name": "appointment_reminder", "language_code": "es", "header_params": ["4490012"],
                         "body_params": ["Ana", "3 de mayo"]});
    app.create_action(&with_webhook(spanish)).await;
    let http_image = app
        .post("/v2/_actions", &with_webhook(json!({"template_name": "appointment_reminder", "header_params": ["http://x.example/c.jpg"], "body_params": ["Ana", "May 3"]})))
        .await;
    assert_eq!(http_image.error_codes(), [("webhook.header_params[0]", "invalid_media_parameter")]);
    let named_short = app
        .post(
            "/v2/_actions",
            &with_webhook(json!({"template_name": "appointment_reminder", "header_params": ["1"], "body_params": ["Ana"]})),
        )
        .await;
    assert!(named_short.body["errors"][0]["message"].as_str().unwrap().contains("({{first_name}}, {{date}}), filled in that order"));

    // COPY_CODE button in an en_US template.
    let coupon =
        json!({"template_name": "discount_code", "language_code": "en_US", "body_params": ["Ana", "10%"], "button_params": ["SAVE10"]});
    app.create_action(&with_webhook(coupon)).await;
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let app = app_with_sender().await;
    let mut ids = Vec::new();
    for index in 0..12 {
        let mut body = seed_body();
        body["name"] = json!(format!("action {index}"));
        body["is_active"] = json!(index % 3 != 0);
        ids.push(app.create_action(&body).await);
    }
    let first = app.get("/v2/_actions").await;
    assert_eq!(first.status, 200);
    first.assert_ctx_id();
    assert_eq!(first.body["message"], "Request processed successfully");
    let page = &first.body["data"];
    assert_eq!(page["pagination"], json!({"current_page": 1, "per_page": 10, "total_records": 12, "total_pages": 2, "has_next": true}));
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    assert_eq!(page["data"][0]["id"], ids[11].as_str(), "newest first");
    let second = app.get("/v2/_actions?page=2&per_page=10").await;
    assert_eq!(second.body["data"]["data"].as_array().unwrap().len(), 2);
    assert_eq!(second.body["data"]["data"][1]["id"], ids[0].as_str());
    assert_eq!(second.body["data"]["pagination"]["has_next"], false);

    let inactive = app.get("/v2/_actions?is_active=false&type=send_whatsapp&per_page=100").await;
    assert_eq!(inactive.body["data"]["pagination"]["total_records"], 4);
    let beyond = app.get("/v2/_actions?page=9").await;
    assert_eq!(beyond.body["data"]["data"], json!([]));
    let last_page = app.get("/v2/_actions?page=2147483647").await;
    assert_eq!(last_page.status, 200, "the document's int32 maximum is a page");
    let past_int32 = app.get("/v2/_actions?page=2147483648").await;
    assert_eq!(past_int32.error_codes(), [("page", "invalid_query_parameter")]);
    // As the document writes them: decimal digits, lower-case booleans, hyphenated UUIDs.
    let loose = app.get("/v2/_actions?page=+2&is_active=TRUE").await;
    let fields: Vec<String> = loose.error_codes().into_iter().map(|(field, code)| format!("{field}:{code}")).collect();
    assert_eq!(fields, ["page:invalid_query_parameter", "is_active:invalid_query_parameter"]);
    let bare_hex = ids[0].replace('-', "");
    assert_eq!(app.get(&format!("/v2/_actions/{bare_hex}")).await.status, 404, "only the hyphenated form names an action");
    let filtered = app.get(&format!("/v2/_executions?action_id={bare_hex}")).await;
    assert_eq!(filtered.error_codes(), [("action_id", "invalid_query_parameter")]);

    let bad = app.get("/v2/_actions?page=0&per_page=101&is_active=maybe&type=CALL").await;
    assert_eq!(bad.status, 400);
    let fields: Vec<String> = bad.error_codes().into_iter().map(|(field, code)| format!("{field}:{code}")).collect();
    assert_eq!(
        fields,
        [
            "page:invalid_query_parameter",
            "per_page:invalid_query_parameter",
            "type:invalid_query_parameter",
            "is_active:invalid_query_parameter"
        ]
    );
}

#[tokio::test]
async fn put_replaces_patch_merges_and_both_apply_the_rules() {
    let app = app_with_sender().await;
    let id = app.create_action(&seed_body()).await;
    let path = format!("/v2/_actions/{id}");

    let mut replacement = with_webhook(
        json!({"template_name": "discount_code", "language_code": "en_US", "body_params": ["Ana", "10%"], "button_params": ["SAVE10"]}),
    );
    replacement["name"] = json!("Replaced");
    replacement.as_object_mut().unwrap().remove("is_active");
    let put = app.call(Method::PUT, &path, Some(&replacement)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.body["data"]["name"], "Replaced");
    assert_eq!(put.body["data"]["webhook"]["template_name"], "discount_code");
    assert_ne!(put.body["data"]["updated_at"], put.body["data"]["created_at"]);

    let patch = app
        .call(Method::PATCH, &path, Some(&json!({"is_active": false, "phone_number": "+1 281 712 6508", "webhook": {"mandatory": true}})))
        .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    let action = &patch.body["data"];
    assert_eq!((action["is_active"].clone(), action["phone_number"].clone()), (json!(false), json!("12817126508")));
    assert_eq!(action["webhook"]["mandatory"], true);
    assert_eq!(action["webhook"]["template_name"], "discount_code", "untouched fields stay");
    assert_eq!(action["name"], "Replaced");

    let cleared = app.call(Method::PATCH, &path, Some(&json!({"phone_number": null}))).await;
    assert_eq!(cleared.body["data"]["phone_number"], Value::Null);

    // A patch that breaks the template's parameter count is refused and changes nothing.
    let broken = app.call(Method::PATCH, &path, Some(&json!({"webhook": {"body_params": ["only one"]}}))).await;
    assert_eq!(broken.status, 400);
    assert_eq!(broken.error_codes(), [("webhook.body_params", "param_count_mismatch")]);
    let removed = app.call(Method::PATCH, &path, Some(&json!({"name": null}))).await;
    assert_eq!(removed.error_codes(), [("name", "missing_field")]);
    let invalid_put = app.call(Method::PUT, &path, Some(&json!({"name": "x"}))).await;
    assert_eq!(invalid_put.status, 400);
    assert_eq!(app.get(&path).await.body["data"]["webhook"]["body_params"], json!(["Ana", "10%"]));
}

#[tokio::test]
async fn patches_racing_on_one_action_each_keep_their_change() {
    let app = app_with_sender().await;
    let id = app.create_action(&seed_body()).await;
    let path = format!("/v2/_actions/{id}");
    for round in 0..10 {
        let mandatory = round % 2 == 0;
        let patches = [
            json!({"name": format!("name {round}")}),
            json!({"description": format!("description {round}")}),
            json!({"webhook": {"mandatory": mandatory}}),
            json!({"phone_number": format!("+1 281 712 65{round:02}")}),
        ];
        let replies = futures::future::join_all(patches.iter().map(|patch| app.call(Method::PATCH, &path, Some(patch)))).await;
        for reply in &replies {
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        let action = app.get(&path).await.body["data"].clone();
        assert_eq!(
            (&action["name"], &action["description"], &action["webhook"]["mandatory"], &action["phone_number"]),
            (
                &json!(format!("name {round}")),
                &json!(format!("description {round}")),
                &json!(mandatory),
                &json!(format!("128171265{round:02}"))
            ),
            "round {round}: no PATCH wrote over another's field"
        );
    }
}

#[tokio::test]
async fn delete_removes_and_unknown_ids_are_404() {
    let app = app_with_sender().await;
    let id = app.create_action(&seed_body()).await;
    let path = format!("/v2/_actions/{id}");
    let deleted = app.call(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 200);
    deleted.assert_ctx_id();
    assert_eq!(deleted.body["data"], json!({"action_id": id, "deleted": true}));
    for method in [Method::GET, Method::DELETE] {
        let reply = app.call(method, &path, None).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_codes(), [("action_id", "not_found")]);
    }
    assert_eq!(app.call(Method::PUT, &path, Some(&seed_body())).await.status, 404);
    assert_eq!(app.call(Method::PATCH, &path, Some(&json!({}))).await.status, 404);
    assert_eq!(app.get("/v2/_actions/not-a-uuid").await.status, 404);
}

#[tokio::test]
async fn another_tenants_action_is_exactly_like_a_missing_one() {
    let app = app_with_sender().await;
    let id = app.create_action(&seed_body()).await;
    let intruder = app.token_for("another-tenant", &[]);
    let missing = format!("/v2/_actions/{}", uuid::Uuid::now_v7());
    let theirs = format!("/v2/_actions/{id}");
    for (method, body) in
        [(Method::GET, None), (Method::PUT, Some(seed_body())), (Method::PATCH, Some(json!({"name": "x"}))), (Method::DELETE, None)]
    {
        let foreign = app.send(method.clone(), &theirs, Some(&intruder), body.as_ref()).await;
        let absent = app.send(method.clone(), &missing, Some(&intruder), body.as_ref()).await;
        assert_eq!(foreign.status, 404, "{method} {}", foreign.text);
        assert_eq!(
            (foreign.status, foreign.body["detail"].clone(), foreign.error_codes()),
            (absent.status, absent.body["detail"].clone(), absent.error_codes())
        );
    }
    let list = app.send(Method::GET, "/v2/_actions", Some(&intruder), None).await;
    assert_eq!(list.body["data"]["pagination"]["total_records"], 0);
    assert_eq!(app.get(&theirs).await.body["data"]["name"], "My Whatsapp Action", "untouched by the other tenant");
    // The other tenant cannot use this tenant's sender either.
    let borrowed = app.send(Method::POST, "/v2/_actions", Some(&intruder), Some(&seed_body())).await;
    assert_eq!(borrowed.error_codes(), [("webhook.from", "unknown_sender")]);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_for_the_same_body() {
    let app = app_with_sender().await;
    let token = app.token(&[]);
    let create = |key: &'static str, body: Value| {
        let request = app.http.post(format!("{}/v2/_actions", app.base)).bearer_auth(&token).header("idempotency-key", key).json(&body);
        async move { common::read(request.send().await.unwrap()).await }
    };
    let first = create("order-42", seed_body()).await;
    assert_eq!(first.status, 201);
    let again = create("order-42", seed_body()).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["data"], first.body["data"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    again.assert_ctx_id();
    assert_ne!(again.body["ctx_id"], first.body["ctx_id"], "each request has its own ctx_id");

    let mut different = seed_body();
    different["name"] = json!("Another name");
    let reused = create("order-42", different).await;
    assert_eq!(reused.status, 409);
    assert_eq!(reused.error_codes(), [("Idempotency-Key", "idempotency_key_reused")]);

    let bad = create("has space", seed_body()).await;
    assert_eq!(bad.error_codes(), [("Idempotency-Key", "invalid_idempotency_key")]);
    let mut unnamed = seed_body();
    unnamed["name"] = json!("");
    let both = create("has space", unnamed).await;
    let expected = [("Idempotency-Key", "invalid_idempotency_key"), ("name", "invalid_length")];
    assert_eq!(both.error_codes(), expected, "the body's violations beside the key's");
    assert_eq!(app.get("/v2/_actions").await.body["data"]["pagination"]["total_records"], 1);

    // Keys belong to a tenant: another tenant's same key does not replay this
    // tenant's answer (it is judged on its own, and that tenant has no sender).
    let other = app.token_for("other-tenant", &[]);
    let theirs = common::read(
        app.http
            .post(format!("{}/v2/_actions", app.base))
            .bearer_auth(&other)
            .header("idempotency-key", "order-42")
            .json(&seed_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(theirs.error_codes(), [("webhook.from", "unknown_sender")]);
}

#[tokio::test]
async fn the_same_key_sent_concurrently_creates_one_action() {
    let app = app_with_sender().await;
    let token = app.token(&[]);
    let requests = (0..16).map(|_| {
        let request =
            app.http.post(format!("{}/v2/_actions", app.base)).bearer_auth(&token).header("idempotency-key", "burst-1").json(&seed_body());
        async move { common::read(request.send().await.unwrap()).await }
    });
    let replies = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 201, "{}", reply.text);
            reply.body["data"]["action_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one action for one key");
    assert_eq!(app.get("/v2/_actions").await.body["data"]["pagination"]["total_records"], 1);
}

#[tokio::test]
async fn an_idempotency_key_older_than_24_hours_starts_anew() {
    let app = app_with_sender().await;
    let token = app.token(&[]);
    let create = |body: Value| {
        let request = app.http.post(format!("{}/v2/_actions", app.base)).bearer_auth(&token).header("idempotency-key", "daily").json(&body);
        async move { common::read(request.send().await.unwrap()).await }
    };
    let first = create(seed_body()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    app.database.execute("UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000000Z'");

    let mut different = seed_body();
    different["name"] = json!("Another name");
    let again = create(different).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, None), "{}", again.text);
    assert_ne!(again.body["data"]["action_id"], first.body["data"]["action_id"], "a new action");
    // The key now holds the new answer for its own 24 h.
    let replayed = create(seed_body()).await;
    assert_eq!(replayed.status, 409, "{}", replayed.text);
    assert_eq!(app.get("/v2/_actions").await.body["data"]["pagination"]["total_records"], 2);
}

#[tokio::test]
async fn scopes_guard_each_route() {
    let app = app_with_sender().await;
    let id = app.create_action(&seed_body()).await;
    let reader = app.token(&[Scope::ActionsRead]);
    let writer = app.token(&[Scope::ActionsWrite]);
    assert_eq!(app.send(Method::GET, &format!("/v2/_actions/{id}"), Some(&reader), None).await.status, 200);
    let denied = app.send(Method::DELETE, &format!("/v2/_actions/{id}"), Some(&reader), None).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_codes(), [("Authorization", "insufficient_scope")]);
    assert!(denied.body["detail"].as_str().unwrap().contains("actions:write"));
    assert_eq!(app.send(Method::GET, "/v2/_actions", Some(&writer), None).await.status, 403);
    assert_eq!(app.send(Method::POST, "/v2/_actions", Some(&writer), Some(&seed_body())).await.status, 201);
    assert_eq!(app.send(Method::POST, "/v2/_whatsapp/senders", Some(&writer), Some(&json!({}))).await.status, 403);
    // The scope is checked before the body is read: a reader's broken body is still a 403.
    let broken =
        app.http.post(format!("{}/v2/_actions", app.base)).bearer_auth(&reader).header("content-type", "text/plain").body("{").send().await;
    assert_eq!(broken.unwrap().status().as_u16(), 403);
}
