//! The one storage interface. Handlers and the worker see only `Store`; its
//! operations are written once, as plain functions of a transaction
//! (`db::Tx`), and run on SQLite (one process, group commit) or PostgreSQL
//! (any number of replicas). Every state change is a conditional statement
//! (or runs on a row locked first) that holds when replicas race. Every
//! method of the API's side takes the tenant first: there is no way to read
//! or write across tenants.

mod actions;
mod db;
mod events;
mod executions;
mod jobs;
mod postgres;
mod remembered;
mod senders;
pub mod signals;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{ActionSpec, ExecutionStatus, TenantId};
use db::{DbResult, Tx, args};
pub use events::{AttemptRecord, AttemptRecorded, AttemptResult, ClaimedDelivery, EndpointPatch, EndpointRecord, NewEndpoint};
pub use jobs::{SendRequest, Started};
use postgres::PgDb;
use signals::Signal;
pub use signals::Signals;
use sqlite::SqliteDb;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The action object of the API, exactly as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionRecord {
    pub id: Uuid,
    /// The tenant that owns the action.
    pub company_id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    #[schema(example = "SEND_WHATSAPP")]
    pub kind: String,
    pub is_active: bool,
    #[schema(example = "DURING")]
    pub action_timing: String,
    /// Recipient override, E.164 digits without `+`.
    pub phone_number: Option<String>,
    pub webhook: WebhookRecord,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// Raised by every write: what a merge writes over.
    #[serde(skip)]
    pub version: i64,
}

/// What an update of an action found.
pub enum ActionUpdate {
    Updated(Box<ActionRecord>),
    Missing,
    /// Another write moved the action past the version the update was made over.
    Changed,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    /// E.164 digits without `+`.
    #[schema(example = "12817126508")]
    pub to: String,
    /// WhatsApp phone-number ID of the sender.
    #[schema(example = "650175178190170")]
    pub from: String,
    #[schema(example = "call_permission_request")]
    pub template_name: String,
    pub body_params: Vec<String>,
    pub header_params: Vec<String>,
    pub button_params: Vec<String>,
    #[schema(example = "en")]
    pub language_code: String,
    pub mandatory: bool,
}

impl WebhookRecord {
    pub fn from_spec(spec: &ActionSpec) -> Self {
        let strings = |params: &[crate::domain::Param]| params.iter().map(|p| p.as_str().to_owned()).collect();
        let target = &spec.whatsapp;
        Self {
            to: target.to.digits().to_owned(),
            from: target.from.clone(),
            template_name: target.template_name.as_str().to_owned(),
            body_params: strings(&target.body_params),
            header_params: strings(&target.header_params),
            button_params: strings(&target.button_params),
            language_code: target.language_code.as_str().to_owned(),
            mandatory: target.mandatory,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ActionFilter<'a> {
    pub kind: Option<&'a str>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// From 1.
    pub number: u32,
    pub size: u32,
}

impl Page {
    pub fn offset(self) -> u64 {
        u64::from(self.number - 1) * u64::from(self.size)
    }
}

/// The response of the request that first used an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: serde_json::Value,
}

pub enum Created {
    New,
    /// The key was already used: here is what it answered first.
    Replay(IdempotentResponse),
}

#[derive(Debug, Clone)]
pub struct NewSender {
    pub phone_number_id: String,
    pub waba_id: String,
    pub sealed_access_token: Vec<u8>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    /// The sender's template status changes by Meta's webhook when its
    /// templates were read, if it was registered then with the same WABA:
    /// a status changed since is kept (see `replace_templates`).
    pub templates_read_after: Option<i64>,
}

/// A sender as the API shows it; its access token is never part of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SenderRecord {
    #[schema(example = "650175178190170")]
    pub phone_number_id: String,
    pub waba_id: String,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// Meta's GREEN / YELLOW / RED rating when registered or last synced.
    pub quality_rating: Option<String>,
    /// False after Meta refused the sender's token; a sync with valid credentials restores it.
    pub healthy: bool,
    pub template_count: u32,
    pub created_at: String,
    pub updated_at: String,
    pub synced_at: String,
}

pub enum SenderSaved {
    Created(SenderRecord),
    Updated(SenderRecord),
    /// Another tenant registered this phone-number ID.
    Taken,
}

/// What a sync or a send needs to call the Graph API.
#[derive(Debug, Clone)]
pub struct SenderCredentials {
    pub waba_id: String,
    pub sealed_access_token: Vec<u8>,
    pub healthy: bool,
}

/// What a sync reads before it asks the Graph API for the templates: the
/// credentials it asks with, and how many template status changes Meta's
/// webhook had made to the sender by then.
#[derive(Debug, Clone)]
pub struct SyncBasis {
    pub credentials: SenderCredentials,
    pub template_changes: i64,
}

/// One language version of a template in a sender's WABA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateRecord {
    /// Meta's id of this language version.
    pub id: String,
    pub name: String,
    pub language: String,
    /// APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …; only APPROVED can be sent.
    pub status: String,
    pub category: String,
    /// POSITIONAL ({{1}}) or NAMED ({{first_name}}).
    pub parameter_format: String,
    /// The components as Meta returns them.
    pub components: serde_json::Value,
}

/// Why an execution failed: actiond's code, and Meta's when Meta said no.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionError {
    /// `provider_error` when Meta refused the message, else actiond's reason
    /// (`transport_error`, `outcome_unknown`, `sender_removed`,
    /// `sender_credentials_unreadable`, `template_not_approved`).
    pub code: String,
    pub message: String,
    /// Meta's `error.code`, when it gave one.
    pub provider_code: Option<i64>,
}

/// The codes of `ExecutionError`, each written here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// Meta refused the message; its code is the provider code.
    ProviderError,
    /// The request to Meta failed before Meta took it.
    TransportError,
    /// Meta's answer was lost: it may or may not have the message.
    OutcomeUnknown,
    SenderRemoved,
    SenderCredentialsUnreadable,
    /// The template stopped being sendable before the message went.
    TemplateNotApproved,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProviderError => "provider_error",
            Self::TransportError => "transport_error",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::SenderRemoved => "sender_removed",
            Self::SenderCredentialsUnreadable => "sender_credentials_unreadable",
            Self::TemplateNotApproved => "template_not_approved",
        }
    }
}

impl ExecutionError {
    pub fn new(code: FailureCode, message: impl Into<String>, provider_code: Option<i64>) -> Self {
        Self { code: code.as_str().to_owned(), message: message.into(), provider_code }
    }

    /// The sender was deleted (or its row gone) with the message unsent.
    pub fn sender_removed() -> Self {
        Self::new(FailureCode::SenderRemoved, "the sender was deleted before the message was sent", None)
    }
}

/// The recipient's answer to the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionReply {
    /// `text`, `button` (a template quick reply), `interactive` (a button or list
    /// reply, a completed Flow, a call permission answered), or the media sent in
    /// answer: `image`, `video`, `document`, `audio` (a voice note too) or `sticker`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, the tapped button's label, the Flow's body, `accept` or `reject`
    /// for a call permission, or the media's caption.
    pub text: Option<String>,
    /// The tapped button's payload or reply id, the Flow's `response_json`, the
    /// media id with which the business downloads the media from Meta, or the
    /// JSON of an interactive answer of another kind.
    pub payload: Option<String>,
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub status: ExecutionStatus,
    pub at: String,
}

/// The execution object of the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecutionRecord {
    pub execution_id: Uuid,
    pub action_id: Uuid,
    pub call_id: Option<String>,
    /// Recipient, E.164 digits without `+`.
    pub to: String,
    pub status: ExecutionStatus,
    pub mandatory: bool,
    /// Meta's message id once the Graph API accepted the message.
    pub wamid: Option<String>,
    /// Sends tried so far.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ExecutionReply>,
    /// Each status reached, once, with its time.
    pub timeline: Vec<TimelineEntry>,
    pub created_at: String,
    pub updated_at: String,
    /// A mandatory execution expires when no reply came by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_deadline: Option<String>,
}

/// An execution to store with its delivery job.
pub struct NewExecution {
    pub id: Uuid,
    pub action_id: Uuid,
    pub call_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub to: String,
    pub sender: String,
    pub template_name: String,
    pub language: String,
    pub mandatory: bool,
    /// The template message exactly as it will be sent.
    pub payload: serde_json::Value,
    /// Seconds a mandatory execution waits for its reply.
    pub reply_timeout: u32,
}

pub enum Executed {
    New(ExecutionRecord),
    /// The same call id or idempotency key was executed before: nothing new is sent.
    Existing(ExecutionRecord),
    /// The action was deleted before the execution could be stored: nothing is.
    ActionGone,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionFilter<'a> {
    pub action_id: Option<Uuid>,
    pub call_id: Option<&'a str>,
    pub status: Option<ExecutionStatus>,
}

/// A claim on one job: whoever holds the latest token owns the attempt, and
/// every write of that attempt presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub execution_id: Uuid,
    pub token: i64,
}

/// A job the worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub lease: Lease,
    pub tenant: TenantId,
    pub sender: String,
    pub recipient: String,
    /// The template message's JSON text, as stored: sent as it is.
    pub payload: String,
    pub attempts: u32,
    /// An earlier attempt began and recorded no outcome: its process stopped
    /// mid-send, so Meta may have the message.
    pub attempt_open: bool,
    /// The code of the last failure recorded, if any.
    pub last_error: Option<String>,
    /// The claim found a lease its holder never released: a replica died or stalled.
    pub taken_over: bool,
    /// The sender's credentials as the claim found them; `None` once it was deleted.
    pub credentials: Option<SenderCredentials>,
    /// Meta refused this pair lately (131056): known once the send started,
    /// so that its acceptance clears the back-off.
    pub pair_refused: bool,
}

/// Whether the write of an attempt's outcome was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// The job ended meanwhile (Meta's status settled it, it was cancelled):
    /// there was nothing left to record.
    JobEnded,
    /// Another worker claimed the job since: this attempt's outcome is not ours to write.
    LeaseLost,
}

/// What became of one send attempt, as the worker records it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Meta took the message: its id, and the `wa_id` it gave the recipient.
    Accepted {
        wamid: String,
        wa_id: Option<String>,
    },
    /// Try again at `due_ms`; the error says why the last try failed.
    Retry {
        due_ms: i64,
        error: ExecutionError,
    },
    Failed(ExecutionError),
    /// Sent with credentials Meta refused, when new ones had come meanwhile:
    /// the attempt (counted) is over and the job goes again at `due_ms`.
    Deferred {
        due_ms: i64,
    },
    /// Sender credentials refused: hold the job with its sender's others.
    Held,
}

/// Where a message event comes from: the business number it was sent
/// through (`metadata.phone_number_id`) and the person on the other side (a
/// status's `recipient_id`, a reply's `from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventParties {
    pub phone_number_id: String,
    pub person: String,
}

/// One event from Meta's webhook, with the key that makes it apply once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookEvent {
    Status {
        key: String,
        parties: EventParties,
        wamid: String,
        execution_hint: Option<Uuid>,
        status: ExecutionStatus,
        error: Option<ExecutionError>,
    },
    Reply {
        key: String,
        parties: EventParties,
        context_wamid: Option<String>,
        execution_hint: Option<Uuid>,
        reply: ExecutionReply,
    },
    /// `event` is Meta's word (APPROVED, PAUSED, REINSTATED, FLAGGED, …);
    /// `reason` Meta's, when it gave one.
    TemplateStatus {
        key: String,
        waba_id: String,
        name: String,
        language: String,
        event: String,
        reason: Option<String>,
    },
}

impl WebhookEvent {
    /// What makes the event apply once, however many copies come.
    pub fn key(&self) -> &str {
        match self {
            Self::Status { key, .. } | Self::Reply { key, .. } | Self::TemplateStatus { key, .. } => key,
        }
    }
}

pub struct Store {
    db: Db,
    signals: Arc<Signals>,
    templates: senders::TemplateRegistry,
    actions: actions::ActionRegistry,
}

enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Store {
    /// Opens the store the URL names, `sqlite://PATH` or `postgres://…`, and
    /// applies its migrations (on PostgreSQL under a lock, once for all
    /// replicas). Errors name ACTIOND_DATABASE_URL and never its value.
    pub async fn open(database_url: &str, max_connections: usize) -> Result<Self, String> {
        let signals = Arc::new(Signals::default());
        let db = if let Some(path) = database_url.strip_prefix("sqlite://") {
            let signals = Arc::clone(&signals);
            let path = path.to_owned();
            let opened = tokio::task::spawn_blocking(move || SqliteDb::open(&path, signals)).await.map_err(|e| e.to_string())?;
            Db::Sqlite(opened.map_err(|e| format!("ACTIOND_DATABASE_URL: cannot open the SQLite file: {e}"))?)
        } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            Db::Postgres(PgDb::open(database_url, max_connections, Arc::clone(&signals)).await?)
        } else {
            return Err("ACTIOND_DATABASE_URL: must start with sqlite:// or postgres://".to_owned());
        };
        Ok(Self { db, signals, templates: Default::default(), actions: Default::default() })
    }

    /// Where this replica's waiters and worker hear of committed changes.
    pub fn signals(&self) -> Arc<Signals> {
        Arc::clone(&self.signals)
    }

    /// Runs `op` in a transaction; it may run more than once (PostgreSQL
    /// tries a deadlocked transaction again), so it must only touch the database.
    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite(db) => db.write(op).await,
            Db::Postgres(db) => db.write(op).await,
        }
    }

    /// `write` for a change to actions, senders or templates: every replica
    /// forgets what it remembered of them, this one at once.
    async fn write_configuration<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        let written = self
            .write(move |tx| {
                tx.signal(Signal::Configuration);
                op(tx)
            })
            .await;
        self.signals.deliver(&[Signal::Configuration]);
        written
    }

    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite(db) => db.read(op).await,
            Db::Postgres(db) => db.read(op).await,
        }
    }

    /// A read of a few rows by key (the lookups of every request): on
    /// SQLite it runs on the calling thread when it can.
    async fn lookup<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite(db) => db.lookup(op).await,
            Db::Postgres(db) => db.read(op).await,
        }
    }

    /// Reachable, taking writes, and every migration applied.
    pub async fn ready(&self) -> StoreResult<()> {
        let latest = match self.db {
            Db::Sqlite(_) => sqlite::MIGRATIONS,
            Db::Postgres(_) => postgres::MIGRATIONS,
        }
        .last()
        .map_or(0, |(version, _)| *version);
        // A store that answers reads but refuses writes (a read-only database,
        // a full disk) is not ready either: the probe rewrites one row as it
        // is. One that stopped answering (a lock held on the table, a server
        // gone silent) is not ready after READY_WAIT; the probe changes
        // nothing, so it may finish unwatched.
        let probe = self.write(|tx| {
            let applied = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?.int(0)?;
            tx.execute("UPDATE schema_migrations SET version = version WHERE version = $1", args![applied])?;
            Ok(applied)
        });
        let unanswered = || StoreError::Unavailable(format!("the database did not answer within {} s", READY_WAIT.as_secs()));
        let applied = tokio::time::timeout(READY_WAIT, probe).await.map_err(|_| unanswered())??;
        if applied < latest {
            return Err(StoreError::Unavailable(format!("migrations applied up to {applied}, expected {latest}")));
        }
        Ok(())
    }

    /// A lost notification (a listener reconnecting, a missed `NOTIFY`)
    /// costs a waiter at most `WAIT_RECHECK`: this loop reads, every
    /// `WAIT_RECHECK`, when each watched execution last changed (one query per
    /// 500, however many wait on them) and wakes the watchers of those that
    /// moved since it last looked, or that it sees for the first time.
    pub async fn recheck_waiters(self: Arc<Self>) {
        let mut seen: HashMap<Uuid, String> = HashMap::new();
        let mut ticks = tokio::time::interval(WAIT_RECHECK);
        loop {
            ticks.tick().await;
            let watched = self.signals.watched();
            let mut current = HashMap::with_capacity(watched.len());
            for chunk in watched.chunks(500) {
                match self.execution_versions(chunk.to_vec()).await {
                    Ok(versions) => current.extend(versions),
                    Err(error) => tracing::debug!(%error, "cannot recheck the executions waited for"),
                }
            }
            let moved: Vec<Signal> =
                current.iter().filter(|(id, at)| seen.get(*id) != Some(*at)).map(|(id, _)| Signal::Execution(*id)).collect();
            self.signals.deliver(&moved);
            seen = current;
        }
    }

    /// Tells the other replicas of this one's last changes, waiting at most
    /// `within` (on SQLite there are none to tell).
    pub async fn flush_signals(&self, within: Duration) {
        if let Db::Postgres(db) = &self.db {
            db.flush_signals(within).await;
        }
    }

    /// Publishes the state of the store's connections as metrics.
    pub fn report_metrics(&self) {
        if let Db::Postgres(db) = &self.db {
            db.report_pool();
        }
    }

    /// Forgets what no longer matters: executions (with their events) not
    /// touched within `retention` and with nothing left to send, and events
    /// to endpoints delivered or given up on before it, in batches of
    /// `PRUNE_BATCH` so no transaction grows with history; webhook event keys
    /// past Meta's 7-day resend window, idempotency keys past their 24 h,
    /// pacing rows gone idle. Returns how many executions it deleted.
    pub async fn prune(&self, now_us: i64, retention: std::time::Duration) -> StoreResult<u64> {
        let cutoff = crate::clock::seconds_ago(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
        let mut deleted = 0;
        loop {
            let cutoff = cutoff.clone();
            let batch = self
                .write(move |tx| {
                    tx.execute(
                        "DELETE FROM executions WHERE id IN (SELECT e.id FROM executions e WHERE e.created_at < $1 AND e.updated_at < $1 \
                         AND NOT EXISTS (SELECT 1 FROM delivery_jobs j WHERE j.execution_id = e.id) ORDER BY e.created_at LIMIT $2)",
                        args![cutoff.as_str(), PRUNE_BATCH],
                    )
                })
                .await?;
            deleted += batch;
            if batch < PRUNE_BATCH {
                break;
            }
        }
        loop {
            let cutoff = cutoff.clone();
            if self.write(move |tx| events::prune_settled(tx, &cutoff, PRUNE_BATCH)).await? < PRUNE_BATCH {
                break;
            }
        }
        self.write(move |tx| {
            let events = crate::clock::seconds_ago(WEBHOOK_EVENT_RETENTION_SECONDS);
            let keys = crate::clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS);
            tx.execute("DELETE FROM webhook_events WHERE received_at < $1", args![events.clone()])?;
            tx.execute("DELETE FROM parked_webhook_events WHERE received_at < $1", args![events])?;
            tx.execute("DELETE FROM idempotency_keys WHERE created_at < $1", args![keys.clone()])?;
            tx.execute("DELETE FROM execution_keys WHERE created_at < $1", args![keys])?;
            // A key whose time has passed and has no back-off is the same as no row.
            tx.execute("DELETE FROM pacing WHERE tat < $1 AND backoff_until < $1", args![now_us])?;
            Ok(())
        })
        .await?;
        Ok(deleted)
    }
}

const IDEMPOTENCY_WINDOW_SECONDS: i64 = 24 * 60 * 60;
/// The longest the readiness probe waits for the database.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const PRUNE_BATCH: u64 = 500;
/// The most a lost notification delays a waiter's wake.
const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// Meta resends a webhook event for up to 7 days; its key is kept a day longer.
const WEBHOOK_EVENT_RETENTION_SECONDS: i64 = 8 * 24 * 60 * 60;

/// The URL with its password, and its query (`?password=` is a password
/// too), replaced by `***`: fit for a log.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unreadable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::db::{DbError, Value};
    use super::{Store, StoreError};

    /// A store on a database of its own, removed when dropped: on
    /// PostgreSQL's test server when `ACTIOND_TEST_DATABASE=postgres`, as for
    /// the black-box suite, else in a SQLite file.
    struct Scratch {
        store: Store,
        postgres: Option<(String, String)>,
        dir: std::path::PathBuf,
    }

    impl Scratch {
        async fn new() -> Self {
            let name = format!("actiond_unit_{}", uuid::Uuid::new_v4().simple());
            let dir = std::env::temp_dir().join(&name);
            let (url, postgres) = if std::env::var("ACTIOND_TEST_DATABASE").as_deref() == Ok("postgres") {
                let admin = std::env::var("ACTIOND_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                Self::admin(&admin, &format!("CREATE DATABASE {name}")).await;
                let url = format!("{}/{name}", admin.rsplit_once('/').expect("a URL with a database").0);
                (url, Some((admin, name)))
            } else {
                (format!("sqlite://{}/actiond.db", dir.display()), None)
            };
            Self { store: Store::open(&url, 2).await.expect("the store opens"), postgres, dir }
        }

        async fn admin(url: &str, sql: &str) {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("the test PostgreSQL answers");
            let driver = tokio::spawn(connection);
            client.batch_execute(sql).await.expect("the test PostgreSQL runs it");
            drop(client);
            let _ = driver.await;
        }
    }

    /// Removed however its test ends: a failed assertion unwinds through here too.
    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some((admin, name)) = self.postgres.take() {
                let sql = format!("DROP DATABASE {name} WITH (FORCE)");
                // A runtime of its own: `drop` cannot await the test's.
                let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                let _ = std::thread::spawn(move || runtime().block_on(Self::admin(&admin, &sql))).join();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test]
    async fn a_deferred_statement_is_seen_by_the_next_and_its_failure_undoes_the_whole_write() {
        let scratch = Scratch::new().await;
        let store = &scratch.store;
        let seen = store
            .write(|tx| {
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('a', 1)", &[])?;
                tx.query_one("SELECT tat FROM pacing WHERE key = 'a'", &[])?.int(0)
            })
            .await;
        assert_eq!(seen.unwrap(), 1, "a deferred statement runs before the next one");

        let failed = store
            .write(|tx| {
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('b', 1)", &[])?;
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('a', 2)", &[])?;
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('c', 1)", &[])?;
                Ok(())
            })
            .await;
        let error = failed.expect_err("the second insert repeats a key");
        assert!(error.to_string().contains("pacing"), "the failure is the failing statement's own, not a later one's: {error}");
        let failed_before_a_statement = store
            .write(|tx| {
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('a', 3)", &[])?;
                tx.execute("INSERT INTO pacing (key, tat) VALUES ('d', 1)", &[])
            })
            .await;
        assert!(failed_before_a_statement.expect_err("a repeated key").to_string().contains("pacing"));
        let unsendable = store
            .write(|tx| {
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('e', 1)", &[])?;
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ($1, $2)", &[Value::from("f")])?;
                tx.execute_later("INSERT INTO pacing (key, tat) VALUES ('g', 1)", &[])
            })
            .await;
        assert!(unsendable.is_err(), "a statement whose parameters do not fit fails its write, and no COMMIT follows it");

        let kept = store.read(|tx| tx.query("SELECT key, tat FROM pacing ORDER BY key", &[])).await.unwrap();
        let kept: Vec<(String, i64)> =
            kept.iter().map(|row| Ok::<_, DbError>((row.text(0)?, row.int(1)?))).collect::<Result<_, _>>().unwrap();
        assert_eq!(kept, [("a".to_owned(), 1)], "nothing of a failed write is kept");
    }

    #[tokio::test]
    async fn past_its_limit_an_operation_is_refused_at_once_while_every_session_is_stuck() {
        let scratch = Scratch::new().await;
        let Some((admin, name)) = &scratch.postgres else { return }; // PostgreSQL's sessions only
        let url = format!("{}/{name}", admin.rsplit_once('/').expect("a URL with a database").0);
        let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the test PostgreSQL answers");
        tokio::spawn(connection);
        locker.batch_execute("BEGIN; LOCK TABLE pacing IN ACCESS EXCLUSIVE MODE").await.unwrap();
        let read = || scratch.store.read(|tx| tx.query("SELECT tat FROM pacing", &[]).map(drop));
        // Both sessions stick in the first two; the rest fill the queue.
        let mut queued: Vec<_> = (0..super::postgres::QUEUE_LIMIT + 2).map(|_| Box::pin(read())).collect();
        for operation in &mut queued {
            let _ = futures::poll!(operation.as_mut());
        }
        match read().await {
            Err(StoreError::Unavailable(message)) => assert!(message.contains("queued"), "{message}"),
            other => panic!("not refused: {:?}", other.map_err(|e| e.to_string())),
        }
        locker.batch_execute("COMMIT").await.unwrap();
    }

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        assert_eq!(super::redacted("postgres://app:s3cret@db:5432/actiond"), "postgres://app:***@db:5432/actiond");
        assert_eq!(super::redacted("postgres://app@db/actiond"), "postgres://app@db/actiond");
        assert_eq!(super::redacted("postgres://app:s3cret@[bad"), "(an unreadable URL)");
        assert_eq!(super::redacted("postgres://app@db/actiond?password=s3cret&sslmode=disable"), "postgres://app@db/actiond?***");
    }
}
