mod common;

// Bearer-token authentication over real HTTP: JWKS keys (RS256, ES256) from a
// stand-in key server, HS256 with the harness secret, and every way a token
// must be turned away.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actiond::auth;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Reply, SECRET, TestApp, seed_body, spawn_app, spawn_app_with};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const ACTIONS: &str = "/v2/_actions";

// ---- keys and tokens ----

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The RSA key whose public half the JWKS serves as kid rsa-1.
fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap()
}

/// An RSA key the JWKS knows nothing of.
fn other_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap()
}

/// The P-256 key the JWKS serves as kid ec-1.
fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims valid for ten minutes.
fn claims(tenant: &str) -> Value {
    json!({"sub": tenant, "exp": now() + 600})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("the test key signs")
}

fn rs256(kid: &str, claims: &Value) -> String {
    sign(Algorithm::RS256, Some(kid), claims, &rsa_key())
}

/// HS256 with the harness secret, the default app's only verifier.
fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &EncodingKey::from_secret(SECRET.as_bytes()))
}

/// `{"alg":"none"}`: no signature at all.
fn unsigned(claims: &Value) -> String {
    let part = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", part(json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})), part(claims.clone()))
}

// ---- the JWKS stand-in ----

/// Serves tests/fixtures/jwks.json and counts how often it was fetched; a
/// test may make it slow and failing, as a key server in trouble is.
struct KeyServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    trouble: Arc<AtomicBool>,
}

/// How long a key server in trouble takes to fail.
const TROUBLED_FETCH: Duration = Duration::from_secs(3);

impl KeyServer {
    async fn start() -> Self {
        let jwks: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let trouble = Arc::new(AtomicBool::new(false));
        let (counter, in_trouble) = (fetches.clone(), trouble.clone());
        let router = Router::new().route(
            "/jwks.json",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if in_trouble.load(Ordering::SeqCst) {
                    tokio::time::sleep(TROUBLED_FETCH).await;
                    return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                Ok(axum::Json(jwks))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, fetches, trouble }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// An app that verifies tokens only against the key server: no HS256 secret.
async fn jwks_app() -> (TestApp, KeyServer) {
    let keys = KeyServer::start().await;
    let url = keys.url.clone();
    let app = spawn_app_with(move |s| {
        s.jwt_secret = None;
        s.jwt_jwks_url = Some(url);
    })
    .await;
    (app, keys)
}

// ---- requests and assertions ----

async fn list(app: &TestApp, token: &str) -> Reply {
    app.send(Method::GET, ACTIONS, Some(token), None).await
}

fn assert_status(reply: &Reply, status: u16, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text);
}

/// The 401 envelope: the challenge header, the stable code and the ctx_id.
fn assert_invalid_token(reply: &Reply, case: &str) {
    assert_status(reply, 401, case);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer error=\"invalid_token\""), "{case}");
    assert_eq!(reply.body["errors"][0]["code"], "invalid_token", "{case}: {}", reply.text);
    reply.assert_ctx_id();
}

fn assert_insufficient_scope(reply: &Reply, case: &str) {
    assert_status(reply, 403, case);
    assert_eq!(reply.body["errors"][0]["code"], "insufficient_scope", "{case}: {}", reply.text);
    reply.assert_ctx_id();
}

// ---- JWKS ----

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_jwks() {
    let (app, keys) = jwks_app().await;
    let claims = claims(&app.tenant);

    assert_status(&list(&app, &rs256("rsa-1", &claims)).await, 200, "RS256 with kid rsa-1");
    assert_status(&list(&app, &sign(Algorithm::ES256, Some("ec-1"), &claims, &ec_key())).await, 200, "ES256 with kid ec-1");
    // Both keys came from one fetch; known kids are served from the cache.
    assert_eq!(keys.fetches(), 1);
}

#[tokio::test]
async fn jwks_setup_rejects_forged_stale_and_malformed_tokens() {
    let (app, _keys) = jwks_app().await;
    let tenant = app.tenant.as_str();
    // The baseline passes, so each rejection below is down to its one defect.
    assert_status(&list(&app, &rs256("rsa-1", &claims(tenant))).await, 200, "baseline");

    // Alg confusion: the public key, which anyone has, used as an HMAC secret.
    let public_key_as_secret = EncodingKey::from_secret(&fixture("rsa_public.pem"));
    let cases = [
        ("signed by an unrelated key under kid rsa-1", Some(sign(Algorithm::RS256, Some("rsa-1"), &claims(tenant), &other_rsa_key()))),
        ("HS256 keyed with the RSA public key", Some(sign(Algorithm::HS256, Some("rsa-1"), &claims(tenant), &public_key_as_secret))),
        ("alg none", Some(unsigned(&claims(tenant)))),
        ("unknown kid", Some(rs256("rsa-unknown", &claims(tenant)))),
        ("expired 120 s ago (past the leeway)", Some(rs256("rsa-1", &json!({"sub": tenant, "exp": now() - 120})))),
        ("nbf 300 s ahead", Some(rs256("rsa-1", &json!({"sub": tenant, "exp": now() + 600, "nbf": now() + 300})))),
        ("no Authorization header", None),
        ("Bearer not-a-jwt", Some("not-a-jwt".to_owned())),
    ];
    for (case, token) in cases {
        assert_invalid_token(&app.send(Method::GET, ACTIONS, token.as_deref(), None).await, case);
    }
}

#[tokio::test]
async fn a_flood_of_unknown_kids_does_not_hammer_the_key_server() {
    let (app, keys) = jwks_app().await;
    assert_status(&list(&app, &rs256("rsa-1", &claims(&app.tenant))).await, 200, "first request");
    assert_eq!(keys.fetches(), 1, "the first request fetches the keys");

    // Concurrent, so they contend for the cache at once.
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..20 {
        let request = app.http.get(format!("{}{ACTIONS}", app.base)).bearer_auth(rs256(&format!("forged-{i}"), &claims(&app.tenant)));
        flood.spawn(async move { common::read(request.send().await.expect("the app answers")).await });
    }
    while let Some(reply) = flood.join_next().await {
        assert_invalid_token(&reply.unwrap(), "unknown kid");
    }
    assert!(keys.fetches() <= 2, "at most one refetch per interval, got {} fetches", keys.fetches());
    // The flood did not evict the real key.
    assert_status(&list(&app, &rs256("rsa-1", &claims(&app.tenant))).await, 200, "after the flood");
}

#[tokio::test]
async fn a_fetch_for_an_unknown_kid_never_holds_up_known_kids_and_a_failing_key_server_keeps_the_last_keys() {
    let (app, keys) = jwks_app().await;
    let tenant = app.tenant.clone();
    let known = || rs256("rsa-1", &claims(&tenant));
    assert_status(&list(&app, &known()).await, 200, "first request");
    // An unknown kid may fetch again once 30 s have passed since the last fetch.
    tokio::time::sleep(auth::JWKS_REFETCH_INTERVAL + Duration::from_secs(1)).await;
    keys.trouble.store(true, Ordering::SeqCst);

    let forged = rs256("rsa-new", &claims(&tenant));
    let app = Arc::new(app);
    let waiting = tokio::spawn({
        let app = Arc::clone(&app);
        async move { list(&app, &forged).await }
    });
    while keys.fetches() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The fetch is under way and takes 3 s: a known kid is answered without
    // it, while the unknown kid's request still waits for it.
    assert_status(&list(&app, &known()).await, 200, "known kid during the fetch");
    assert!(!waiting.is_finished(), "a known kid was answered before the fetch ended");
    assert_invalid_token(&waiting.await.unwrap(), "the unknown kid, after the failed fetch");
    // The failed fetch left the last good keys serving, and the next unknown kid does not refetch.
    assert_status(&list(&app, &known()).await, 200, "known kid after the failed fetch");
    assert_invalid_token(&list(&app, &rs256("rsa-newer", &claims(&tenant))).await, "another unknown kid");
    assert_eq!(keys.fetches(), 2, "one fetch per 30 s, failed or not");
}

// ---- issuer and audience (HS256) ----

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "actiond";

async fn app_with_issuer_and_audience() -> TestApp {
    spawn_app_with(|s| {
        s.jwt_issuer = Some(ISSUER.into());
        s.jwt_audience = Some(AUDIENCE.into());
    })
    .await
}

#[tokio::test]
async fn issuer_and_audience_must_match_when_configured() {
    let app = app_with_issuer_and_audience().await;
    let token = |iss: &str, aud: &str| hs256(&json!({"sub": app.tenant, "exp": now() + 600, "iss": iss, "aud": aud}));

    assert_status(&list(&app, &token(ISSUER, AUDIENCE)).await, 200, "right iss and aud");
    assert_invalid_token(&list(&app, &token("https://evil.example", AUDIENCE)).await, "wrong iss");
    assert_invalid_token(&list(&app, &token(ISSUER, "another-service")).await, "wrong aud");
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let app = app_with_issuer_and_audience().await;
    let without = |claim: &str| {
        let mut claims = json!({"sub": app.tenant, "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE});
        claims.as_object_mut().unwrap().remove(claim);
        hs256(&claims)
    };

    assert_invalid_token(&list(&app, &without("aud")).await, "missing aud");
    assert_invalid_token(&list(&app, &without("iss")).await, "missing iss");
}

// ---- the Authorization header, scopes and tenants (HS256) ----

#[tokio::test]
async fn a_bare_token_without_the_bearer_prefix_is_accepted() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}{ACTIONS}", app.base)).header("Authorization", app.token(&[])).send().await.unwrap();
    assert_status(&common::read(response).await, 200, "bare token");
}

#[tokio::test]
async fn scopes_from_scope_and_permissions_limit_what_a_token_may_do() {
    let app = spawn_app().await;
    let reader = hs256(&json!({"sub": app.tenant, "exp": now() + 600, "scope": "actions:read"}));
    let writer = hs256(&json!({"sub": app.tenant, "exp": now() + 600, "permissions": ["actions:write"]}));

    assert_status(&list(&app, &reader).await, 200, "read scope lists");
    assert_insufficient_scope(&app.send(Method::POST, ACTIONS, Some(&reader), Some(&seed_body())).await, "read scope creates");
    assert_insufficient_scope(&list(&app, &writer).await, "write permission lists");
}

#[tokio::test]
async fn org_id_not_sub_names_the_tenant() {
    let app = spawn_app().await;
    // One user, two organisations.
    let as_org = |org: &str| hs256(&json!({"sub": "user-1", "org_id": org, "exp": now() + 600}));
    let (ours, theirs) = (as_org(&format!("org-{}", Uuid::new_v4())), as_org(&format!("org-{}", Uuid::new_v4())));

    assert_status(&app.register_sender_as(&ours).await, 201, "sender registration");
    let created = app.send(Method::POST, ACTIONS, Some(&ours), Some(&seed_body())).await;
    assert_status(&created, 201, "create");
    let id = created.body["data"]["action_id"].as_str().expect("action_id");

    let total = |reply: Reply| reply.body["data"]["pagination"]["total_records"].clone();
    assert_eq!(total(list(&app, &ours).await), 1, "the creating org sees its action");
    assert_eq!(total(list(&app, &theirs).await), 0, "the other org sees none");
    assert_status(&app.send(Method::GET, &format!("{ACTIONS}/{id}"), Some(&theirs), None).await, 404, "the other org reads it");
}

#[tokio::test]
async fn a_claim_of_the_wrong_type_makes_the_token_invalid_never_more_rights() {
    let app = spawn_app().await;
    let tenant = app.tenant.as_str();
    let with = |extra: Value| {
        let mut claims = json!({"sub": tenant, "org_id": tenant, "exp": now() + 600});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        hs256(&claims)
    };
    // The baseline passes, so each rejection below is down to its one claim.
    assert_status(&list(&app, &with(json!({"scope": "actions:read"}))).await, 200, "baseline");
    let cases = [
        ("scope null", json!({"scope": null})),
        ("scope an array", json!({"scope": ["actions:read"]})),
        ("scope a number", json!({"scope": 1})),
        ("permissions null", json!({"permissions": null})),
        ("permissions a string", json!({"permissions": "actions:read"})),
        ("permissions holding a number", json!({"permissions": ["actions:read", 7]})),
        ("org_id null beside a valid sub", json!({"org_id": null})),
        ("org_id a number", json!({"org_id": 42})),
        ("sub null beside a valid org_id", json!({"sub": null})),
        ("sub an object", json!({"sub": {"id": tenant}})),
    ];
    for (case, extra) in cases {
        assert_invalid_token(&list(&app, &with(extra)).await, case);
    }
}
