//! The test seam: a real app on port 0 with a fresh database (SQLite or
//! PostgreSQL, see `database`), the Graph API sandbox on its own port as
//! Meta's stand-in, and a fresh tenant each.
#![allow(dead_code)] // Each test crate uses a different part of the harness.

pub mod database;
pub mod process;
pub mod receiver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actiond::App;
use actiond::auth::{Scope, mint};
use actiond::crypto::Sealer;
use actiond::settings::Settings;
use actiond::whatsapp::sandbox::{SANDBOX_ACCESS_TOKEN, SANDBOX_PHONE_NUMBER_ID, SANDBOX_WABA_ID, Sandbox};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use self::database::TestDatabase;

/// Polls `condition` every 20 ms until it holds, failing with `what` after
/// 30 s: a passing run takes milliseconds, the rest is for a loaded machine.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";
pub const APP_SECRET: &str = "integration-test-meta-app-secret";
pub const SENDER: &str = SANDBOX_PHONE_NUMBER_ID;

pub struct TestApp {
    pub base: String,
    pub address: SocketAddr,
    pub tenant: String,
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    directory: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    pub worker: std::sync::Arc<actiond::delivery::Worker>,
    pub dispatcher: std::sync::Arc<actiond::events::Dispatcher>,
    background_delivery: bool,
    /// Dropped after the app stops: a PostgreSQL database is dropped with it.
    pub database: TestDatabase,
}

/// A reply read whole: status, headers and the JSON body (Null if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(field, code)` of every error entry.
    pub fn error_codes(&self) -> Vec<(&str, &str)> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors.iter().map(|e| (e["field"].as_str().unwrap_or_default(), e["code"].as_str().unwrap_or_default())).collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the envelope invariant: the body's ctx_id is the X-Request-ID.
    pub fn assert_ctx_id(&self) {
        let header = self.header("x-request-id").expect("X-Request-ID header");
        assert!(Uuid::parse_str(header).is_ok(), "X-Request-ID is a UUID: {header}");
        assert_eq!(self.body["ctx_id"].as_str(), Some(header), "body ctx_id equals X-Request-ID: {}", self.text);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app whose tenant has the sandbox sender registered.
pub async fn app_with_sender() -> TestApp {
    let app = spawn_app().await;
    app.register_sender().await;
    app
}

/// An app with the sandbox sender and the seed's action: the app and the action's id.
pub async fn app_with_seed_action() -> (TestApp, String) {
    let app = app_with_sender().await;
    let action = app.create_action(&seed_body()).await;
    (app, action)
}

/// Serves a sandbox as the Graph API on its own port.
pub async fn spawn_sandbox() -> (Sandbox, String) {
    let sandbox = Sandbox::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (sandbox, url)
}

pub fn test_settings(database: &TestDatabase, graph_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        jwt_secret: Some(SECRET.into()),
        encryption_key: Some(Sealer::generate_key()),
        whatsapp_graph_url: graph_url.into(),
        rate_limit_per_second: 0,
        whatsapp_app_secret: Some(APP_SECRET.into()),
        whatsapp_verify_token: Some("verify-me".into()),
        delivery_backoff_ms: 10,
        delivery_reconcile_ms: 300,
        // Event endpoints in tests are receivers on loopback.
        events_allow_local: Some(true),
        ..Settings::default()
    }
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(adjust, true).await
}

/// An app whose worker runs only when the test calls `run_once`.
pub async fn spawn_app_stepwise() -> TestApp {
    spawn(|_| {}, false).await
}

pub async fn spawn_stepwise_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(adjust, false).await
}

async fn spawn(adjust: impl FnOnce(&mut Settings), background_delivery: bool) -> TestApp {
    // The app's logs, shown with a failing test's output (ACTIOND_LOG sets the filter).
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACTIOND_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let (sandbox, sandbox_url) = spawn_sandbox().await;
    let quick = Duration::from_millis(10);
    sandbox.set_status_delays([quick, quick * 2, quick * 3]);
    let directory = std::env::temp_dir().join(format!("actiond-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let database = TestDatabase::fresh(&directory);
    let mut settings = test_settings(&database, &sandbox_url);
    adjust(&mut settings);
    start(settings, sandbox, sandbox_url, directory, database, background_delivery).await
}

async fn start(
    settings: Settings,
    sandbox: Sandbox,
    sandbox_url: String,
    directory: PathBuf,
    database: TestDatabase,
    background_delivery: bool,
) -> TestApp {
    let mut app = App::build(&settings, None).await.expect("the app builds");
    if !background_delivery {
        app = app.without_background_delivery();
    }
    let address = app.address();
    sandbox.set_webhook(&format!("http://{address}/v2/_whatsapp/webhook"), APP_SECRET);
    let worker = app.worker();
    let dispatcher = app.dispatcher();
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = stop.await;
    }));
    TestApp {
        base: format!("http://{address}"),
        address,
        tenant: format!("tenant-{}", Uuid::new_v4()),
        sandbox,
        sandbox_url,
        settings,
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        directory,
        shutdown: Some(shutdown),
        worker,
        dispatcher,
        background_delivery,
        database,
    }
}

impl TestApp {
    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Every byte the database holds of the senders table: the files of a
    /// SQLite database, the rows (and raw sealed tokens) of a PostgreSQL one.
    pub fn stored_sender_bytes(&self) -> Vec<u8> {
        if self.database.is_postgres() {
            let mut stored: Vec<u8> = self.database.query_bytes("SELECT sealed_access_token FROM senders").concat();
            stored.extend(self.database.query_bytes("SELECT convert_to(s::text, 'UTF8') FROM senders s").concat());
            return stored;
        }
        let path = self.settings.database_url.trim_start_matches("sqlite://").to_owned();
        ["", "-wal"].iter().filter_map(|suffix| std::fs::read(format!("{path}{suffix}")).ok()).flatten().collect()
    }

    /// A token for this app's tenant; no scopes given means every scope.
    pub fn token(&self, scopes: &[Scope]) -> String {
        self.token_for(&self.tenant, scopes)
    }

    pub fn token_for(&self, tenant: &str, scopes: &[Scope]) -> String {
        mint(SECRET, tenant, scopes, Duration::from_secs(600), None, None)
    }

    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("the app answers")).await
    }

    /// A request as this app's tenant with every scope.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.send(method, path, Some(&self.token(&[])), body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Registers the sandbox's sender for this app's tenant.
    pub async fn register_sender(&self) -> Reply {
        let reply = self.register_sender_as(&self.token(&[])).await;
        assert_eq!(reply.status, 201, "sender registration: {}", reply.text);
        reply
    }

    pub async fn register_sender_as(&self, token: &str) -> Reply {
        self.send(Method::POST, "/v2/_whatsapp/senders", Some(token), Some(&sender_body())).await
    }

    /// Executes an action, asserting a 2xx, and returns the execution.
    pub async fn execute(&self, action_id: &str, body: &Value) -> Value {
        let reply = self.post(&format!("/v2/_actions/{action_id}/_execute"), body).await;
        assert!(reply.status == 202 || reply.status == 200, "execute: {}", reply.text);
        reply.body["data"].clone()
    }

    /// The execution after waiting up to `seconds` for it to settle.
    pub async fn settled(&self, execution_id: &str, seconds: u32) -> Value {
        let reply = self.get(&format!("/v2/_executions/{execution_id}?wait={seconds}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["data"].clone()
    }

    /// Polls until the execution reaches `status`; for statuses that do not
    /// settle a wait, such as `read` of a mandatory execution.
    pub async fn reaches(&self, execution_id: &str, status: &str) -> Value {
        let mut execution = Value::Null;
        eventually(&format!("execution {execution_id} reached {status}"), async || {
            execution = self.get(&format!("/v2/_executions/{execution_id}")).await.body["data"].clone();
            execution["status"] == status
        })
        .await;
        execution
    }

    /// Creates an action from `body`, asserting the 201, and returns its id.
    pub async fn create_action(&self, body: &Value) -> String {
        let reply = self.post("/v2/_actions", body).await;
        assert_eq!(reply.status, 201, "create: {}", reply.text);
        reply.body["data"]["action_id"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        if !self.directory.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

/// The registration of the sandbox's sender, with its valid credentials.
pub fn sender_body() -> Value {
    json!({"phone_number_id": SANDBOX_PHONE_NUMBER_ID, "waba_id": SANDBOX_WABA_ID, "access_token": SANDBOX_ACCESS_TOKEN})
}

/// The seed's action made non-mandatory: it settles once Meta accepts it.
pub fn non_mandatory_body() -> Value {
    let mut body = seed_body();
    body["webhook"]["mandatory"] = json!(false);
    body
}

/// The seed page's request, filled with the sandbox's sender and a template
/// that takes one body parameter.
pub fn seed_body() -> Value {
    json!({
        "name": "My Whatsapp Action",
        "description": "Send WhatsApp when user requests messaging",
        "type": "SEND_WHATSAPP",
        "is_active": true,
        "action_timing": "during",
        "webhook": {
            "to": "12817126508",
            "from": SENDER,
            "template_name": "call_permission_request",
            "body_params": ["{{customer_name}}"],
            "header_params": [],
            "button_params": [],
            "language_code": "en",
            "mandatory": true
        }
    })
}
