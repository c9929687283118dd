//! Throughput of the release binary on SQLite, on PostgreSQL with one
//! replica and with two, measured in one run so that their ratios mean
//! something on a noisy machine. What it reports:
//! - create: `POST /v2/_actions` per second from 32 concurrent clients;
//! - dispatch: sends per second the Graph stand-in receives while a backlog
//!   of held jobs drains (released at once by a sender sync);
//! - latency: with executes offered at a steady rate, the time from an
//!   execution's commit (`queued`) to Meta's acceptance (`accepted`);
//! - events: the same backlog drained again with an event endpoint taking
//!   every execution event at a fast local receiver (and the events
//!   delivered per second), at one that hangs (events written, not
//!   delivered), with that endpoint's backlog waiting, each beside drains
//!   without an endpoint before and after.
//!
//! Run: `cargo build --release && cargo bench --bench throughput` (PostgreSQL
//! as for the tests; BENCH_SECONDS, BENCH_BACKLOG, BENCH_RATE to resize,
//! BENCH_ONLY=0|1|2 for one configuration by its replica count, 0 for SQLite;
//! ACTIOND_DATABASE_MAX_CONNECTIONS is passed to the replicas).
//! The stand-in sends no status webhooks here: this measures actiond's own work.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actiond::crypto::Sealer;
use actiond::whatsapp::sandbox::{SANDBOX_ACCESS_TOKEN, Sandbox};
use common::database::TestDatabase;
use common::process::{Server, actiond, production_env, temp_dir, token};
use common::receiver::Receiver;
use common::{SENDER, non_mandatory_body, seed_body, sender_body, spawn_sandbox};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::{Value, json};

const CREATE_CLIENTS: usize = 32;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// One configuration under test: its replicas, the stand-in, a tenant with a sender and an action.
struct Setup {
    name: &'static str,
    replicas: Vec<Server>,
    bases: Vec<String>,
    sandbox: Sandbox,
    http: reqwest::Client,
    tenant: String,
    action: String,
    _database: TestDatabase,
}

impl Setup {
    async fn start(name: &'static str, database: TestDatabase, replicas: usize) -> Self {
        let (sandbox, graph_url) = spawn_sandbox().await;
        let dir = temp_dir();
        let key = Sealer::generate_key();
        let mut servers = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..replicas {
            let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
            production_env(&mut command, &database, &graph_url, &key);
            command.env("ACTIOND_SENDER_MPS", "100000").env("ACTIOND_LOG", "warn,actiond=info").env("ACTIOND_EVENTS_ALLOW_LOCAL", "true");
            if let Ok(connections) = std::env::var("ACTIOND_DATABASE_MAX_CONNECTIONS") {
                command.env("ACTIOND_DATABASE_MAX_CONNECTIONS", connections);
            }
            let mut server = Server::start(command);
            bases.push(server.address());
            servers.push(server);
        }
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(60)).build().unwrap();
        let tenant = token(&format!("bench-{}", uuid::Uuid::new_v4()));
        let mut setup = Self { name, replicas: servers, bases, sandbox, http, tenant, action: String::new(), _database: database };
        assert_eq!(setup.post(0, "/v2/_whatsapp/senders", &sender_body()).await.0, 201);
        let (status, created) = setup.post(0, "/v2/_actions", &non_mandatory_body()).await;
        assert_eq!(status, 201, "{created}");
        setup.action = created["data"]["action_id"].as_str().unwrap().to_owned();
        setup
    }

    async fn post(&self, replica: usize, path: &str, body: &Value) -> (u16, Value) {
        let base = &self.bases[replica % self.bases.len()];
        let response = self.http.post(format!("{base}{path}")).bearer_auth(&self.tenant).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Actions created per second by `CREATE_CLIENTS` clients spread over the replicas.
    async fn create_rate(&self, seconds: f64) -> f64 {
        let created = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let clients = (0..CREATE_CLIENTS).map(|client| {
            let created = Arc::clone(&created);
            async move {
                let mut round = client;
                while Instant::now() < deadline {
                    let (status, body) = self.post(round, "/v2/_actions", &seed_body()).await;
                    assert_eq!(status, 201, "{body}");
                    created.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
            }
        });
        join_all(clients).await;
        created.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    }

    async fn execute(&self, replica: usize, recipient: usize) -> String {
        let body = json!({"to": recipient_number(recipient), "variables": {"customer_name": "Ana"}});
        let (status, executed) = self.post(replica, &format!("/v2/_actions/{}/_execute", self.action), &body).await;
        assert_eq!(status, 202, "{executed}");
        executed["data"]["execution_id"].as_str().unwrap().to_owned()
    }

    async fn queue_depth(&self) -> f64 {
        let mut depth = 0.0;
        for base in &self.bases {
            let text = self.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            let line = text.lines().find(|line| line.starts_with("actiond_delivery_queue_depth"));
            depth += line.and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(f64::MAX);
        }
        depth
    }

    /// Sends per second while a backlog of `count` held jobs drains: the
    /// sender's token is refused until the backlog is stored, then a sync
    /// proves a good one and releases every job at once. With the moment of the release.
    async fn dispatch_rate(&self, count: usize, first_recipient: usize) -> (f64, Instant) {
        self.sandbox.set_access_token("revoked-for-the-benchmark");
        let executes = (0..count).map(|index| self.execute(index, first_recipient + index));
        futures::stream::iter(executes).buffer_unordered(CREATE_CLIENTS).collect::<Vec<String>>().await;
        while self.queue_depth().await > 0.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.sandbox.set_access_token(SANDBOX_ACCESS_TOKEN);
        let sent_before = self.sandbox.sent_count();
        let started = Instant::now();
        let (status, _) = self.post(0, &format!("/v2/_whatsapp/senders/{SENDER}/_sync"), &json!({})).await;
        assert_eq!(status, 200);
        while self.sandbox.sent_count() < sent_before + count {
            assert!(started.elapsed() < Duration::from_secs(120), "the backlog did not drain");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (count as f64 / started.elapsed().as_secs_f64(), started)
    }

    /// Registers an endpoint at `receiver` for every execution event; its id.
    async fn endpoint(&self, receiver: &Receiver) -> String {
        let every_execution_event =
            ["accepted", "sent", "delivered", "read", "replied", "failed", "expired", "cancelled"].map(|s| format!("execution.{s}"));
        let (status, created) =
            self.post(0, "/v2/_webhook_endpoints", &json!({"url": receiver.url, "events": every_execution_event})).await;
        assert_eq!(status, 201, "{created}");
        created["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn change_endpoint(&self, method: reqwest::Method, id: &str, body: Option<Value>) {
        let base = &self.bases[0];
        let mut request = self.http.request(method, format!("{base}/v2/_webhook_endpoints/{id}")).bearer_auth(&self.tenant);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 200);
    }

    /// Sends per second draining `count` jobs: without events, with an
    /// endpoint taking every execution event at a fast receiver, with one
    /// whose receiver hangs (the events are written, 16 are in flight, the
    /// rest wait), with that endpoint's backlog of `count` events waiting
    /// while no new ones are written, and without again.
    async fn event_rates(&self, count: usize, first_recipient: usize) -> EventRates {
        let mut recipient = first_recipient;
        let mut drain = || {
            recipient += count;
            self.dispatch_rate(count, recipient - count)
        };
        let (before, _) = drain().await;
        let fast = Receiver::start().await;
        let endpoint = self.endpoint(&fast).await;
        let (flowing, released) = drain().await;
        // The stand-in sends no statuses: each send makes one event, execution.accepted.
        while fast.count() < count {
            assert!(released.elapsed() < Duration::from_secs(300), "the events did not drain: {}", fast.count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let events_per_second = count as f64 / released.elapsed().as_secs_f64();
        self.change_endpoint(reqwest::Method::DELETE, &endpoint, None).await;
        let hanging = Receiver::start().await;
        hanging.delay(Duration::from_secs(600));
        let endpoint = self.endpoint(&hanging).await;
        let (written, _) = drain().await;
        // The backlog stays; new sends make no event of a type it takes.
        self.change_endpoint(reqwest::Method::PATCH, &endpoint, Some(json!({"events": ["template.status_changed"]}))).await;
        let (backlog, _) = drain().await;
        self.change_endpoint(reqwest::Method::DELETE, &endpoint, None).await;
        let (after, _) = drain().await;
        EventRates { without: (before + after) / 2.0, flowing, events_per_second, written, backlog }
    }

    /// Offers `rate` executes a second for `seconds`; the commit → accepted
    /// latency of each, sorted, in milliseconds.
    async fn accept_latencies(&self, rate: f64, seconds: f64, first_recipient: usize) -> Vec<f64> {
        let count = (rate * seconds) as usize;
        let started = Instant::now();
        let executes = (0..count).map(|index| async move {
            tokio::time::sleep_until((started + Duration::from_secs_f64(index as f64 / rate)).into()).await;
            self.execute(index, first_recipient + index).await
        });
        let ids = join_all(executes).await;
        let mut latencies = Vec::with_capacity(ids.len());
        for id in ids {
            let base = &self.bases[0];
            let url = format!("{base}/v2/_executions/{id}?wait=30");
            let execution: Value = self.http.get(url).bearer_auth(&self.tenant).send().await.unwrap().json().await.unwrap();
            let at = |status: &str| {
                let entry = execution["data"]["timeline"].as_array().unwrap().iter().find(|entry| entry["status"] == status).cloned();
                let text = entry.unwrap_or_else(|| panic!("no {status} in {execution}"))["at"].as_str().unwrap().to_owned();
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap()
            };
            latencies.push((at("accepted") - at("queued")).as_seconds_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

/// Sends per second beside events, from `Setup::event_rates`.
#[derive(Debug)]
struct EventRates {
    without: f64,
    flowing: f64,
    events_per_second: f64,
    written: f64,
    backlog: f64,
}

/// Distinct valid US numbers, one per execution, so Meta's pair rate never holds one back.
fn recipient_number(index: usize) -> String {
    let exchanges = ["415", "212", "312", "617", "206", "303", "512", "404"];
    format!("+1{}555{:04}", exchanges[(index / 10_000) % exchanges.len()], index % 10_000)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    if std::env::var_os("ACTIOND_BIN").is_none() {
        let release = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/actiond");
        assert!(std::path::Path::new(release).exists(), "build the release binary first: cargo build --release");
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe { std::env::set_var("ACTIOND_BIN", release) };
    }
    let seconds = setting("BENCH_SECONDS", 10.0);
    let backlog = setting("BENCH_BACKLOG", 5_000);
    let rate = setting("BENCH_RATE", 500.0);
    let sqlite_dir = temp_dir();
    let mut rows = Vec::new();
    let mut event_rows = Vec::new();
    let only: Option<usize> = std::env::var("BENCH_ONLY").ok().and_then(|v| v.parse().ok());
    for (name, replicas) in [("sqlite, 1 process", 0), ("postgres, 1 replica", 1), ("postgres, 2 replicas", 2)] {
        if only.is_some_and(|only| only != replicas) {
            continue;
        }
        let database = match replicas {
            0 => TestDatabase::sqlite_at(&format!("sqlite://{}", sqlite_dir.join("bench.db").display())),
            _ => TestDatabase::postgres(),
        };
        let setup = Setup::start(name, database, replicas.max(1)).await;
        let creates = setup.create_rate(seconds).await;
        let (dispatch, _) = setup.dispatch_rate(backlog, 0).await;
        let latencies = setup.accept_latencies(rate, seconds, backlog).await;
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        eprintln!("{name}: {creates:.0} creates/s, {dispatch:.0} sends/s, accepted at {rate}/s p50 {p50:.1} ms p99 {p99:.1} ms");
        let events = setup.event_rates(backlog, backlog + (rate * seconds) as usize).await;
        eprintln!("{name}: {events:?}");
        rows.push((setup.name, creates, dispatch, p50, p99));
        event_rows.push((setup.name, events));
        drop(setup.replicas);
    }
    let _ = std::fs::remove_dir_all(&sqlite_dir);
    println!("\n| configuration | creates/s | × SQLite | sends/s (backlog) | × SQLite | commit → accepted at {rate}/s: p50 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (sqlite_creates, sqlite_dispatch) = (rows[0].1, rows[0].2);
    for (name, creates, dispatch, p50, p99) in &rows {
        println!(
            "| {name} | {creates:.0} | {:.2} | {dispatch:.0} | {:.2} | {p50:.1} ms | {p99:.1} ms |",
            creates / sqlite_creates,
            dispatch / sqlite_dispatch
        );
    }
    println!(
        "\n| configuration | sends/s without events | events flowing (× without) | events delivered/s | events written, none delivered (×) | a {backlog}-event backlog waiting (×) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, rates) in &event_rows {
        let ratio = |rate: f64| rate / rates.without;
        println!(
            "| {name} | {:.0} | {:.0} ({:.2}) | {:.0} | {:.0} ({:.2}) | {:.0} ({:.2}) |",
            rates.without,
            rates.flowing,
            ratio(rates.flowing),
            rates.events_per_second,
            rates.written,
            ratio(rates.written),
            rates.backlog,
            ratio(rates.backlog)
        );
    }
    if let [sqlite, one, two] = rows.as_slice() {
        println!(
            "\ntwo PostgreSQL replicas ÷ one: creates {:.2}, sends {:.2}; PostgreSQL ÷ SQLite creates: {:.2}",
            two.1 / one.1,
            two.2 / one.2,
            one.1 / sqlite.1
        );
    }
}
