//! The real binary, end to end: `serve` refusing bad settings, `serve --dev`
//! with its printed token and curl line, kill -9 durability, SIGTERM, JSON
//! logs, and the `token`, `migrate`, `openapi` and `sandbox` commands.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use actiond::auth::{AuthSettings, Authenticator, Scope};
use actiond::crypto::Sealer;
use actiond::whatsapp::sandbox::SANDBOX_PHONE_NUMBER_ID;
use common::database::{TestDatabase, all_postgres_migrations};
use common::process::{Server, actiond, production_env, temp_dir, token};
use common::{SECRET, seed_body, spawn_sandbox};
use serde_json::{Value, json};

#[test]
fn serve_refuses_missing_or_bad_settings_and_names_them() {
    let dir = temp_dir();
    let output = actiond(&dir, &["serve"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ACTIOND_JWT_SECRET") && stderr.contains("ACTIOND_JWT_JWKS_URL"), "{stderr}");
    assert!(stderr.contains("ACTIOND_ENCRYPTION_KEY"), "{stderr}");

    let output = actiond(&dir, &["serve"])
        .env("ACTIOND_JWT_SECRET", "short")
        .env("ACTIOND_ENCRYPTION_KEY", "bm90LTMyLWJ5dGVz")
        .env("ACTIOND_LISTEN", "nowhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for expected in ["ACTIOND_JWT_SECRET must be at least 32 bytes", "ACTIOND_ENCRYPTION_KEY must decode to 32 bytes", "ACTIOND_LISTEN"] {
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }

    // A bad value is named, never shown: values can hold credentials.
    for (setting, value) in [
        ("ACTIOND_RATE_LIMIT_PER_SECOND", "lots-s3cr3t"),
        ("ACTIOND_DATABASE_MAX_CONNECTIONS", "-1-s3cr3t"),
        ("ACTIOND_LISTEN", "nowhere-s3cr3t"),
        ("ACTIOND_JWT_JWKS_URL", "not a url s3cr3t"),
        ("ACTIOND_WHATSAPP_GRAPH_URL", "graph s3cr3t"),
        ("ACTIOND_DATABASE_URL", "mysql://app:s3cr3t@db/actiond"),
    ] {
        let mut command = actiond(&dir, &["serve"]);
        command.env("ACTIOND_JWT_SECRET", SECRET).env("ACTIOND_ENCRYPTION_KEY", Sealer::generate_key()).env(setting, value);
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{setting}={value} starts");
        assert!(stderr.contains(setting) && !stderr.contains("s3cr3t"), "{setting} named, its value not shown: {stderr}");
    }
    // A number out of range says what range is.
    let mut command = actiond(&dir, &["serve"]);
    command.env("ACTIOND_JWT_SECRET", SECRET).env("ACTIOND_ENCRYPTION_KEY", Sealer::generate_key());
    let stderr = String::from_utf8_lossy(&command.env("ACTIOND_RATE_LIMIT_PER_SECOND", "-1").output().unwrap().stderr).into_owned();
    assert!(stderr.contains("ACTIOND_RATE_LIMIT_PER_SECOND: must be a whole number from 0 to 4294967295"), "{stderr}");

    std::fs::write(dir.join("actiond.toml"), "jwt_secret = \"42\"\n").unwrap();
    let output = actiond(&dir, &["--config", "actiond.toml", "serve"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ACTIOND_JWT_SECRET must be at least 32 bytes"),
        "the file's bad key is named"
    );
    // In the file too: a text setting written as a number is refused (a bare
    // 1_000 would read back as 1000), and a file that is not TOML is named
    // with its line, not quoted, since the line may hold a secret.
    for (file, expected) in [
        ("whatsapp_verify_token = 1_000\n", "ACTIOND_WHATSAPP_VERIFY_TOKEN: is text; in --config, write it as a quoted string"),
        ("listen = \"127.0.0.1:0\"\ndatabase_url = \"postgres://app:s3cr3t@db/actiond\n", "--config actiond.toml: line 2:"),
        ("jwt_secret = 1234567890123456789012345678901234567890\n", "--config actiond.toml: line 1:"),
    ] {
        std::fs::write(dir.join("actiond.toml"), file).unwrap();
        let output = actiond(&dir, &["--config", "actiond.toml", "token", "--tenant", "t"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{file}: {stderr}");
        assert!(!stderr.contains("s3cr3t") && !stderr.contains("1234567890") && !stderr.contains("1_000"), "{stderr}");
    }
    std::fs::write(dir.join("actiond.toml"), format!("jwt_secret = \"{SECRET}\"\nevents_retry_scale = 0.5\n")).unwrap();
    let output = actiond(&dir, &["--config", "actiond.toml", "token", "--tenant", "t"]).output().unwrap();
    assert!(output.status.success(), "a TOML decimal for the decimal setting: {}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_secret_that_looks_like_a_number_is_taken_verbatim() {
    // Forty digits: read as a number, it would lose most of them.
    let secret = "1234567890123456789012345678901234567890";
    let dir = temp_dir();
    let database = TestDatabase::fresh(&dir);
    let (_sandbox, graph_url) = spawn_sandbox().await;
    let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
    production_env(&mut command, &database, &graph_url, &Sealer::generate_key());
    command.env("ACTIOND_JWT_SECRET", secret).env("ACTIOND_WHATSAPP_VERIFY_TOKEN", "0042");
    let mut server = Server::start(command);
    let base = server.address();
    let http = reqwest::Client::new();

    let token = actiond::auth::mint(secret, "numeric", &[], Duration::from_secs(600), None, None);
    let listed = http.get(format!("{base}/v2/_actions")).bearer_auth(token).send().await.unwrap();
    assert_eq!(listed.status(), 200, "a token signed with the forty digits verifies");
    let handshake =
        http.get(format!("{base}/v2/_whatsapp/webhook?hub.mode=subscribe&hub.verify_token=0042&hub.challenge=7")).send().await.unwrap();
    assert_eq!((handshake.status().as_u16(), handshake.text().await.unwrap()), (200, "7".to_owned()), "0042, not 42");
    server.terminate();
}

#[test]
fn dev_mode_prints_a_token_and_a_curl_line_that_works_and_keeps_its_secrets() {
    let dir = temp_dir();
    let start = || {
        let mut command = actiond(&dir, &["serve", "--dev", "--log-format", "json"]);
        command.env("ACTIOND_LISTEN", "127.0.0.1:0");
        Server::start(command)
    };
    let mut server = start();
    let curl = server.stdout_line(|line| line.starts_with("curl "));
    let output = Command::new("sh").arg("-c").arg(&curl).output().expect("curl runs");
    let created: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stdout)));
    let action_id = created["data"]["action_id"].as_str().expect("the printed curl line creates an action").to_owned();
    assert_eq!(created["data"]["type"], "SEND_WHATSAPP");
    assert!(dir.join("actiond-dev/actiond.db").exists() && dir.join("actiond-dev/jwt_secret").exists());
    assert!(server.terminate().success(), "SIGTERM exits cleanly");

    // A restart reuses the data directory: the same secret verifies the old token.
    let mut again = start();
    let curl_again = again.stdout_line(|line| line.starts_with("curl "));
    let base = curl_again.split_whitespace().nth(4).unwrap().trim_end_matches("/v2/_actions").to_owned();
    let old_token = curl.split("Bearer ").nth(1).unwrap().split('\'').next().unwrap();
    let fetched = Command::new("curl")
        .args(["-s", &format!("{base}/v2/_actions/{action_id}"), "-H", &format!("Authorization: Bearer {old_token}")])
        .output()
        .unwrap();
    let fetched: Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(fetched["data"]["id"], action_id.as_str());
    assert_eq!(fetched["data"]["company_id"], "dev");
    assert!(again.terminate().success());
    let logs = again.drain_stderr().join("\n");
    assert!(!logs.contains(actiond::whatsapp::sandbox::SANDBOX_ACCESS_TOKEN), "no access token in the logs");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dev_mode_with_jwks_keys_and_no_secret_prints_no_token_it_cannot_sign() {
    let dir = temp_dir();
    let mut command = actiond(&dir, &["serve", "--dev", "--log-format", "json"]);
    command.env("ACTIOND_LISTEN", "127.0.0.1:0").env("ACTIOND_JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json");
    let mut server = Server::start(command);
    server.stdout_line(|line| line.starts_with("No token printed: ACTIOND_JWT_JWKS_URL is set"));
    let curl = server.stdout_line(|line| line.starts_with("curl "));
    assert!(curl.contains(r#"-H "Authorization: Bearer $TOKEN""#), "{curl}");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}

/// `serve --dev` on a free port in `dir`: the server, the curl line it
/// printed, its base URL and the dev tenant's token from that line.
fn dev_server(dir: &std::path::Path) -> (Server, String, String, String) {
    let mut command = actiond(dir, &["serve", "--dev", "--log-format", "json"]);
    command.env("ACTIOND_LISTEN", "127.0.0.1:0");
    let mut server = Server::start(command);
    let curl = server.stdout_line(|line| line.starts_with("curl "));
    let base = curl.split_whitespace().nth(4).unwrap().trim_end_matches("/v2/_actions").to_owned();
    let token = curl.split("Bearer ").nth(1).unwrap().split('\'').next().unwrap().to_owned();
    (server, curl, base, token)
}

#[tokio::test]
async fn the_dev_sandbox_answers_only_the_tenant_that_owns_the_execution() {
    let dir = temp_dir();
    let (mut server, curl, base, owner) = dev_server(&dir);
    let secret = std::fs::read_to_string(dir.join("actiond-dev/jwt_secret")).unwrap();
    let minted = |tenant: &str, scopes: &[Scope]| actiond::auth::mint(secret.trim(), tenant, scopes, Duration::from_secs(600), None, None);
    let http = reqwest::Client::new();
    let created = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let action = created["data"]["action_id"].as_str().unwrap();
    let executed: Value = http
        .post(format!("{base}/v2/_actions/{action}/_execute?wait=10"))
        .bearer_auth(&owner)
        .json(&json!({"variables": {"customer_name": "Ana"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let execution = executed["data"]["execution_id"].as_str().unwrap().to_owned();
    let mut wamid = Value::Null;
    for _ in 0..100 {
        let current: Value =
            http.get(format!("{base}/v2/_executions/{execution}")).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
        wamid = current["data"]["wamid"].clone();
        if wamid.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wamid = wamid.as_str().expect("the sandbox took the message").to_owned();

    let reply = |token: Option<String>, body: Value| {
        let mut request = http.post(format!("{base}/_sandbox/reply")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let by_id = json!({"execution_id": execution, "button": "Yes"});
    let by_wamid = json!({"wamid": wamid, "button": "Yes"});
    assert_eq!(reply(None, by_id.clone()).await.0, 401, "no token");
    assert_eq!(reply(Some(minted("dev", &[Scope::ActionsRead])), by_id.clone()).await.0, 403, "no actions:execute");
    for body in [&by_id, &by_wamid] {
        let (status, answer) = reply(Some(minted("another-tenant", &[])), body.clone()).await;
        assert_eq!((status, answer["errors"][0]["code"].as_str()), (404, Some("not_found")), "another tenant's execution: {answer}");
    }
    let (status, answer) = reply(Some(owner.clone()), json!({"execution_id": execution})).await;
    assert_eq!((status, answer["errors"][0]["field"].as_str()), (400, Some("text")), "no answer given: {answer}");
    let (status, answer) = reply(Some(owner.clone()), json!({"execution_id": execution, "button": "Maybe"})).await;
    let refused = (answer["errors"][0]["field"].as_str(), answer["errors"][0]["code"].as_str());
    assert_eq!((status, refused), (400, (Some("button"), Some("sandbox_reply_refused"))), "no such button: {answer}");
    let (status, answer) = reply(Some(owner.clone()), by_wamid).await;
    assert_eq!((status, answer["data"]["context"].as_str()), (200, Some(wamid.as_str())), "{answer}");
    let settled: Value =
        http.get(format!("{base}/v2/_executions/{execution}?wait=10")).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
    assert_eq!(settled["data"]["status"], "replied", "{settled}");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn acknowledged_creates_survive_kill_9() {
    let (_sandbox, graph_url) = spawn_sandbox().await;
    let dir = temp_dir();
    let database = TestDatabase::fresh(&dir);
    let key = Sealer::generate_key();
    let start = || {
        let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
        production_env(&mut command, &database, &graph_url, &key);
        Server::start(command)
    };
    let http = reqwest::Client::new();
    let tenant = token("durable");
    let mut server = start();
    let base = server.address();
    let registered =
        http.post(format!("{base}/v2/_whatsapp/senders")).bearer_auth(&tenant).json(&common::sender_body()).send().await.unwrap();
    assert_eq!(registered.status().as_u16(), 201);

    let creates = (0..40).map(|_| http.post(format!("{base}/v2/_actions")).bearer_auth(&tenant).json(&seed_body()).send());
    let mut acknowledged = Vec::new();
    for reply in futures::future::join_all(creates).await {
        let reply = reply.unwrap();
        assert_eq!(reply.status().as_u16(), 201);
        let body: Value = reply.json().await.unwrap();
        acknowledged.push(body["data"]["action_id"].as_str().unwrap().to_owned());
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs.
    server.child.wait().unwrap();

    let mut restarted = start();
    let base = restarted.address();
    for id in &acknowledged {
        let reply = http.get(format!("{base}/v2/_actions/{id}")).bearer_auth(&tenant).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 200, "action {id} acknowledged before kill -9 is there after");
    }
    let listed: Value = http.get(format!("{base}/v2/_actions")).bearer_auth(&tenant).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"]["pagination"]["total_records"], 40);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn after_kill_9_every_acknowledged_execution_is_delivered_once() {
    let (sandbox, graph_url) = spawn_sandbox().await;
    let dir = temp_dir();
    let database = TestDatabase::fresh(&dir);
    let key = Sealer::generate_key();
    let start = || {
        let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
        production_env(&mut command, &database, &graph_url, &key);
        // 5 messages a second: the kill lands with sends done, in flight and queued.
        // Nothing releases a dead process's leases: they run out after 2 s.
        command
            .env("ACTIOND_WHATSAPP_APP_SECRET", common::APP_SECRET)
            .env("ACTIOND_DELIVERY_RECONCILE_MS", "8000")
            .env("ACTIOND_DELIVERY_LEASE_MS", "2000")
            .env("ACTIOND_SENDER_MPS", "5");
        Server::start(command)
    };
    let http = reqwest::Client::new();
    let tenant = token("crash");
    let mut server = start();
    let base = server.address();
    sandbox.set_webhook(&format!("{base}/v2/_whatsapp/webhook"), common::APP_SECRET);
    assert_eq!(
        http.post(format!("{base}/v2/_whatsapp/senders"))
            .bearer_auth(&tenant)
            .json(&common::sender_body())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let action = common::non_mandatory_body();
    let created: Value =
        http.post(format!("{base}/v2/_actions")).bearer_auth(&tenant).json(&action).send().await.unwrap().json().await.unwrap();
    let action_id = created["data"]["action_id"].as_str().unwrap().to_owned();

    let executes = (0..30).map(|index| {
        let body = json!({"to": format!("+1415555{:04}", 200 + index), "variables": {"customer_name": "Ana"}});
        http.post(format!("{base}/v2/_actions/{action_id}/_execute")).bearer_auth(&tenant).json(&body).send()
    });
    let mut acknowledged = Vec::new();
    for reply in futures::future::join_all(executes).await {
        let reply = reply.unwrap();
        assert_eq!(reply.status().as_u16(), 202);
        let body: Value = reply.json().await.unwrap();
        acknowledged.push(body["data"]["execution_id"].as_str().unwrap().to_owned());
    }
    // Past the burst of 5, then killed: paced at 5 a second, the other 24
    // take about 5 s more.
    common::eventually("sending began", async || sandbox.sent().len() >= 6).await;
    server.child.kill().unwrap(); // SIGKILL, mid-delivery.
    server.child.wait().unwrap();
    let sent_before = sandbox.sent().len();
    assert!(sent_before > 0 && sent_before < acknowledged.len(), "killed mid-delivery: {sent_before} of {} sent", acknowledged.len());

    // The restarted process listens elsewhere; Meta's (the sandbox's) webhooks follow it.
    let mut restarted = start();
    let base = restarted.address();
    sandbox.set_webhook(&format!("{base}/v2/_whatsapp/webhook"), common::APP_SECRET);
    for id in &acknowledged {
        let reply = http.get(format!("{base}/v2/_executions/{id}?wait=30")).bearer_auth(&tenant).send().await.unwrap();
        let execution: Value = reply.json().await.unwrap();
        let status = execution["data"]["status"].as_str().unwrap_or_default().to_owned();
        assert!(
            ["accepted", "sent", "delivered", "read"].contains(&status.as_str()),
            "execution {id} acknowledged before kill -9: {status}"
        );
    }
    let sent = sandbox.sent();
    for id in &acknowledged {
        let copies = sent.iter().filter(|m| m.payload["biz_opaque_callback_data"] == id.as_str()).count();
        assert_eq!(copies, 1, "execution {id} sent exactly once");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn json_logs_carry_the_ctx_id_of_their_request() {
    let (_sandbox, graph_url) = spawn_sandbox().await;
    let dir = temp_dir();
    let database = TestDatabase::fresh(&dir);
    let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
    production_env(&mut command, &database, &graph_url, &Sealer::generate_key());
    let mut server = Server::start(command);
    let base = server.address();
    let reply = reqwest::Client::new().get(format!("{base}/v2/_actions")).bearer_auth(token("logs")).send().await.unwrap();
    let ctx_id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
    let second = actiond(&dir, &["migrate"]).env("ACTIOND_DATABASE_URL", &database.url).output().unwrap();
    if database.is_postgres() {
        assert!(second.status.success(), "replicas share a PostgreSQL database: {}", String::from_utf8_lossy(&second.stderr));
    } else {
        assert!(!second.status.success(), "one process per SQLite file");
        assert!(String::from_utf8_lossy(&second.stderr).contains("another actiond process"));
    }
    let line = server.stderr_line(|l| l.contains("request finished"));
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(log["span"]["ctx_id"], ctx_id.as_str());
    assert_eq!(log["span"]["tenant"], "logs");
    assert_eq!(log["fields"]["status"], 200);
    assert_eq!(log["span"]["route"], "/v2/_actions");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn token_migrate_and_openapi_commands() {
    let dir = temp_dir();
    let output = actiond(&dir, &["token", "--tenant", "acme", "--scope", "actions:read", "--ttl", "10m"])
        .env("ACTIOND_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let minted = String::from_utf8(output.stdout).unwrap();
    let verifier = Authenticator::new(AuthSettings { secret: Some(SECRET), jwks_url: None, issuer: None, audience: None }).unwrap();
    let caller = verifier.verify(minted.trim()).await.unwrap();
    assert_eq!(caller.tenant.as_str(), "acme");
    assert!(caller.has(Scope::ActionsRead) && !caller.has(Scope::ActionsWrite));

    let refused =
        actiond(&dir, &["token", "--tenant", "acme", "--scope", "everything"]).env("ACTIOND_JWT_SECRET", SECRET).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--scope everything"));
    for blank in ["", "  "] {
        let nameless = actiond(&dir, &["token", "--tenant", blank]).env("ACTIOND_JWT_SECRET", SECRET).output().unwrap();
        assert!(
            !nameless.status.success() && String::from_utf8_lossy(&nameless.stderr).contains("--tenant"),
            "a token the server would refuse"
        );
    }
    let unsigned = actiond(&dir, &["token", "--tenant", "acme"]).output().unwrap();
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("ACTIOND_JWT_SECRET"));

    let database = dir.join("migrated.db");
    let migrated = actiond(&dir, &["migrate"]).env("ACTIOND_DATABASE_URL", format!("sqlite://{}", database.display())).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert!(database.exists());
    let empty = TestDatabase::empty_postgres();
    for run in ["first", "second"] {
        let migrated = actiond(&dir, &["migrate"]).env("ACTIOND_DATABASE_URL", &empty.url).output().unwrap();
        let stderr = String::from_utf8_lossy(&migrated.stderr);
        assert!(migrated.status.success(), "{run} migrate of PostgreSQL: {stderr}");
        assert!(!stderr.contains("NOTICE"), "no notice of a table that exists: {stderr}");
    }
    let applied = empty.query_bytes("SELECT convert_to(string_agg(version::text, ',' ORDER BY version), 'UTF8') FROM schema_migrations");
    assert_eq!(applied, [all_postgres_migrations()], "each migration applied once");

    let document = actiond(&dir, &["openapi"]).output().unwrap();
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert!(document.stdout == committed, "`actiond openapi` prints the committed openapi.json");
    // A reader that stops early (`| head -c 100`) ends it quietly.
    let mut early = actiond(&dir, &["openapi"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0; 100];
    early.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let stopped = early.wait_with_output().unwrap();
    assert!(stopped.status.success() && stopped.stderr.is_empty(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dev_mode_posts_a_signed_execution_replied_event_to_a_local_receiver() {
    let receiver = common::receiver::Receiver::start().await;
    let dir = temp_dir();
    let (mut server, curl, base, token) = dev_server(&dir);
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{base}{path}")).bearer_auth(&token).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let endpoint = post("/v2/_webhook_endpoints".into(), json!({"url": receiver.url, "events": ["execution.replied"]})).await;
    let secret = endpoint["data"]["secret"].as_str().unwrap_or_else(|| panic!("{endpoint}")).to_owned();
    let created: Value = serde_json::from_slice(&Command::new("sh").arg("-c").arg(&curl).output().unwrap().stdout).unwrap();
    let action = created["data"]["action_id"].as_str().unwrap();
    let executed = post(format!("/v2/_actions/{action}/_execute"), json!({"variables": {"customer_name": "Ana"}})).await;
    let execution = executed["data"]["execution_id"].as_str().unwrap().to_owned();
    let mut answered = Value::Null;
    for _ in 0..100 {
        answered = post("/_sandbox/reply".into(), json!({"execution_id": execution, "button": "Yes"})).await;
        if answered["data"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered["data"].is_object(), "the sandbox answered: {answered}");

    let replied = receiver.event("execution.replied").await;
    assert!(replied.signed_by(&secret), "signed with the secret shown at creation");
    let event = replied.json();
    assert_eq!((event["data"]["execution_id"].as_str(), event["data"]["status"].as_str()), (Some(execution.as_str()), Some("replied")));
    assert_eq!(receiver.received().len(), 1, "only the type the endpoint asked for");
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn serve_refuses_event_endpoints_on_loopback_or_plain_http() {
    let dir = temp_dir();
    let database = TestDatabase::fresh(&dir);
    let (_sandbox, graph_url) = spawn_sandbox().await;
    let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
    production_env(&mut command, &database, &graph_url, &Sealer::generate_key());
    let mut server = Server::start(command);
    let base = server.address();
    let http = reqwest::Client::new();
    for (url, code) in [("http://127.0.0.1:9/hooks", "invalid_url"), ("https://127.0.0.1:9/hooks", "forbidden_webhook_target")] {
        let answer: Value = http
            .post(format!("{base}/v2/_webhook_endpoints"))
            .bearer_auth(token("events"))
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((answer["errors"][0]["field"].as_str(), answer["errors"][0]["code"].as_str()), (Some("url"), Some(code)), "{answer}");
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}: {}", server.drain_stderr().join("\n"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn serve_sends_through_the_sandbox_run_alone() {
    let dir = temp_dir();
    let mut sandbox = Server::start(actiond(&dir, &["sandbox", "--listen", "127.0.0.1:0", "--phone-numbers", "2"]));
    let banner = sandbox.stdout_line(|line| line.starts_with("the sandbox Graph API is at "));
    let graph_url = banner.trim_start_matches("the sandbox Graph API is at ").split(": ").next().unwrap().to_owned();
    assert!(banner.contains(actiond::whatsapp::sandbox::SANDBOX_ACCESS_TOKEN), "{banner}");
    let first: u64 = SANDBOX_PHONE_NUMBER_ID.parse().unwrap();
    let second = (first + 1).to_string();
    assert!(banner.contains(&format!("sender {first},{second}, WABA")), "{banner}");
    let database = TestDatabase::fresh(&dir);
    let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
    production_env(&mut command, &database, &graph_url, &Sealer::generate_key());
    let mut server = Server::start(command);
    let base = server.address();
    let http = reqwest::Client::new();
    let tenant = token("alone");
    let registered =
        http.post(format!("{base}/v2/_whatsapp/senders")).bearer_auth(&tenant).json(&common::sender_body()).send().await.unwrap();
    assert_eq!(registered.status().as_u16(), 201, "the stand-in proves the sender's token and lists its templates");
    let mut another = common::sender_body();
    another["phone_number_id"] = json!(second);
    let registered = http.post(format!("{base}/v2/_whatsapp/senders")).bearer_auth(&tenant).json(&another).send().await.unwrap();
    assert_eq!(registered.status().as_u16(), 201, "its WABA's second number is a sender too");
    let created: Value = http
        .post(format!("{base}/v2/_actions"))
        .bearer_auth(&tenant)
        .json(&common::non_mandatory_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action_id = created["data"]["action_id"].as_str().unwrap().to_owned();
    let executed = http
        .post(format!("{base}/v2/_actions/{action_id}/_execute?wait=10"))
        .bearer_auth(&tenant)
        .json(&json!({"variables": {"customer_name": "Ana"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(executed.status().as_u16(), 200);
    let execution: Value = executed.json().await.unwrap();
    assert_eq!(execution["data"]["status"], "accepted", "{execution}");
    assert!(execution["data"]["wamid"].as_str().unwrap().starts_with("wamid."), "{execution}");
    // It posts no status webhooks: the execution stays accepted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = execution["data"]["execution_id"].as_str().unwrap();
    let later: Value = http.get(format!("{base}/v2/_executions/{id}")).bearer_auth(&tenant).send().await.unwrap().json().await.unwrap();
    assert_eq!(later["data"]["status"], "accepted", "{later}");
    assert!(server.terminate().success() && sandbox.terminate().success(), "both stop cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(dir);
}
