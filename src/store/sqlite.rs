//! SQLite behind the store interface. One writer thread owns the only writing
//! connection and commits many requests per transaction (group commit); each
//! request is answered only after the commit that holds it, with WAL and
//! `synchronous=FULL`, so an acknowledged write survives a kill -9 or a power
//! loss. Readers use their own connections and never wait for the writer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::clock;

const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/sqlite/0001_init.sql")), (2, include_str!("../../migrations/sqlite/0002_executions.sql"))];
const READERS: usize = 4;
/// Most requests one transaction commits; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;
const IDEMPOTENCY_WINDOW_SECONDS: i64 = 24 * 60 * 60;
/// Meta resends a webhook event for up to 7 days; its key is kept a day longer.
const WEBHOOK_EVENT_RETENTION_SECONDS: i64 = 8 * 24 * 60 * 60;

pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<Readers>,
    /// Held for the store's life: one process per database file.
    _lock: std::fs::File,
}

struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &str) -> Result<Self, String> {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(format!("{path}.lock")).map_err(|e| e.to_string())?;
        lock.try_lock().map_err(|_| format!("another actiond process is using {path}; one process per SQLite file"))?;
        let writer = connect(path).map_err(|e| e.to_string())?;
        writer.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
        migrate(&writer).map_err(|e| e.to_string())?;
        // The lock above makes this the only process on the file, so a lease found
        // at start belongs to a process that died: its jobs are due again now.
        writer.execute("UPDATE delivery_jobs SET lease_until = 0", []).map_err(|e| e.to_string())?;
        let connections = (0..READERS).map(|_| connect(path).map(Mutex::new)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || run_writer(writer, queue)).map_err(|e| e.to_string())?;
        Ok(Self { writer: jobs, readers: Arc::new(Readers { connections, next: AtomicUsize::new(0) }), _lock: lock })
    }

    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job { op: Some(op), result: None, reply };
        self.writer.send(Box::new(job)).map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let index = readers.next.fetch_add(1, Ordering::Relaxed) % readers.connections.len();
            let connection = readers.connections[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            op(&connection).map_err(internal)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

fn connect(path: &str) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL) STRICT")?;
    for (version, sql) in MIGRATIONS {
        let applied: bool =
            connection.query_row("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0))?;
        if !applied {
            let transaction = connection.unchecked_transaction()?;
            transaction.execute_batch(sql)?;
            transaction.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, clock::now()])?;
            transaction.commit()?;
        }
    }
    Ok(())
}

fn internal(error: rusqlite::Error) -> StoreError {
    StoreError::Internal(error.to_string())
}

/// A write waiting for the writer: run inside the batch's transaction, then told
/// whether that transaction committed.
trait WriteJob: Send {
    fn run(&mut self, connection: &Connection) -> bool;
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Job<T, F> {
    op: Option<F>,
    result: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let op = self.op.take().expect("a write job runs once");
        let result = op(connection);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let outcome = match (committed, self.result) {
            (Ok(()), Some(result)) => result.map_err(internal),
            (Ok(()), None) => Err(StoreError::Internal("the write panicked".into())),
            (Err(error), _) => Err(StoreError::Unavailable(format!("commit failed: {error}"))),
        };
        let _ = self.reply.send(outcome);
    }
}

fn run_writer(connection: Connection, queue: mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&connection, &mut batch);
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// Runs each job under its own savepoint, so one failing job undoes only its
/// own writes, then commits them all at once.
fn commit_batch(connection: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    connection.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let result = (|| {
        for job in batch.iter_mut() {
            connection.execute_batch("SAVEPOINT job")?;
            let succeeded = catch_unwind(AssertUnwindSafe(|| job.run(connection))).unwrap_or(false);
            if !succeeded {
                connection.execute_batch("ROLLBACK TO job")?;
            }
            connection.execute_batch("RELEASE job")?;
        }
        connection.execute_batch("COMMIT")
    })();
    result.map_err(|error| {
        let _ = connection.execute_batch("ROLLBACK");
        error.to_string()
    })
}

const ACTION_COLUMNS: &str = "id, tenant, name, description, type, is_active, action_timing, phone_number, webhook, created_at, updated_at";

fn action_from_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    let id: String = row.get(0)?;
    let webhook: String = row.get(8)?;
    Ok(ActionRecord {
        id: Uuid::parse_str(&id).map_err(|e| conversion(0, e))?,
        company_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        kind: row.get(4)?,
        is_active: row.get(5)?,
        action_timing: row.get(6)?,
        phone_number: row.get(7)?,
        webhook: serde_json::from_str(&webhook).map_err(|e| conversion(8, e))?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

fn conversion(column: usize, error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(error))
}

const INSERT_ACTION: &str = "INSERT INTO actions (id, tenant, name, description, type, is_active, action_timing, phone_number, webhook, \
     created_at, updated_at) VALUES (:id, :tenant, :name, :description, :type, :is_active, :action_timing, :phone_number, :webhook, :now, :now)";
const UPDATE_ACTION: &str = "UPDATE actions SET name = :name, description = :description, type = :type, is_active = :is_active, \
     action_timing = :action_timing, phone_number = :phone_number, webhook = :webhook, updated_at = :now WHERE tenant = :tenant AND id = :id";

/// Binds an action's spec to INSERT_ACTION or UPDATE_ACTION, which take the same names.
fn write_action(c: &Connection, sql: &str, tenant: &str, id: Uuid, spec: &ActionSpec, webhook: &str, now: &str) -> rusqlite::Result<usize> {
    c.execute(
        sql,
        rusqlite::named_params! {
            ":id": id.to_string(),
            ":tenant": tenant,
            ":name": spec.name,
            ":description": spec.description,
            ":type": spec.kind.as_str(),
            ":is_active": spec.is_active,
            ":action_timing": spec.timing.as_str(),
            ":phone_number": spec.phone_number.as_ref().map(|p| p.digits()),
            ":webhook": webhook,
            ":now": now,
        },
    )
}

fn select_action(connection: &Connection, tenant: &str, id: &str) -> rusqlite::Result<Option<ActionRecord>> {
    connection
        .query_row(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE tenant = ?1 AND id = ?2"), [tenant, id], action_from_row)
        .optional()
}

fn select_idempotent(connection: &Connection, tenant: &str, key: &str) -> rusqlite::Result<Option<IdempotentResponse>> {
    connection
        .query_row(
            "SELECT request_hash, status, response FROM idempotency_keys WHERE tenant = ?1 AND key = ?2 AND created_at > ?3",
            params![tenant, key, clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)],
            |row| {
                let response: String = row.get(2)?;
                Ok(IdempotentResponse {
                    request_hash: row.get(0)?,
                    status: row.get(1)?,
                    body: serde_json::from_str(&response).map_err(|e| conversion(2, e))?,
                })
            },
        )
        .optional()
}

const SENDER_COLUMNS: &str = "s.phone_number_id, s.waba_id, s.display_phone_number, s.verified_name, s.quality_rating, s.healthy, \
     (SELECT COUNT(*) FROM templates t WHERE t.phone_number_id = s.phone_number_id), s.created_at, s.updated_at, s.synced_at";

fn sender_from_row(row: &Row<'_>) -> rusqlite::Result<SenderRecord> {
    Ok(SenderRecord {
        phone_number_id: row.get(0)?,
        waba_id: row.get(1)?,
        display_phone_number: row.get(2)?,
        verified_name: row.get(3)?,
        quality_rating: row.get(4)?,
        healthy: row.get(5)?,
        template_count: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        synced_at: row.get(9)?,
    })
}

fn select_sender(connection: &Connection, tenant: &str, phone_number_id: &str) -> rusqlite::Result<Option<SenderRecord>> {
    connection
        .query_row(
            &format!("SELECT {SENDER_COLUMNS} FROM senders s WHERE s.tenant = ?1 AND s.phone_number_id = ?2"),
            [tenant, phone_number_id],
            sender_from_row,
        )
        .optional()
}

fn insert_templates(connection: &Connection, tenant: &str, phone_number_id: &str, templates: &[TemplateRecord]) -> rusqlite::Result<()> {
    connection.execute("DELETE FROM templates WHERE phone_number_id = ?1", [phone_number_id])?;
    let mut insert = connection.prepare_cached(
        "INSERT OR REPLACE INTO templates (tenant, phone_number_id, name, language, id, status, category, parameter_format, components) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for template in templates {
        insert.execute(params![
            tenant,
            phone_number_id,
            template.name,
            template.language,
            template.id,
            template.status,
            template.category,
            template.parameter_format,
            template.components.to_string(),
        ])?;
    }
    Ok(())
}

const TEMPLATE_COLUMNS: &str = "phone_number_id, id, name, language, status, category, parameter_format, components";

fn template_from_row(row: &Row<'_>) -> rusqlite::Result<(String, TemplateRecord)> {
    let components: String = row.get(7)?;
    Ok((
        row.get(0)?,
        TemplateRecord {
            id: row.get(1)?,
            name: row.get(2)?,
            language: row.get(3)?,
            status: row.get(4)?,
            category: row.get(5)?,
            parameter_format: row.get(6)?,
            components: serde_json::from_str(&components).map_err(|e| conversion(7, e))?,
        },
    ))
}

const EXECUTION_COLUMNS: &str = "id, action_id, call_id, recipient, status, mandatory, wamid, attempts, error, reply, timeline, \
     created_at, updated_at, reply_deadline";

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(column)?;
    text.map(|text| serde_json::from_str(&text).map_err(|e| conversion(column, e))).transpose()
}

fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let uuid = |column: usize| -> rusqlite::Result<Uuid> {
        let text: String = row.get(column)?;
        Uuid::parse_str(&text).map_err(|e| conversion(column, e))
    };
    let status: String = row.get(4)?;
    Ok(ExecutionRecord {
        execution_id: uuid(0)?,
        action_id: uuid(1)?,
        call_id: row.get(2)?,
        to: row.get(3)?,
        status: ExecutionStatus::parse(&status).ok_or_else(|| conversion(4, std::fmt::Error))?,
        mandatory: row.get(5)?,
        wamid: row.get(6)?,
        attempts: row.get(7)?,
        error: json_column(row, 8)?,
        reply: json_column(row, 9)?,
        timeline: json_column(row, 10)?.unwrap_or_default(),
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        reply_deadline: row.get(13)?,
    })
}

fn select_execution(c: &Connection, tenant: &str, id: &str) -> rusqlite::Result<Option<ExecutionRecord>> {
    c.query_row(&format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE tenant = ?1 AND id = ?2"), [tenant, id], execution_from_row)
        .optional()
}

fn to_json(value: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The one place an execution's status changes: forward only, each status
/// once on the timeline, and an ended execution's job gone with it.
fn advance(c: &Connection, id: &str, next: ExecutionStatus) -> rusqlite::Result<bool> {
    let Some((status, timeline)) = c
        .query_row("SELECT status, timeline FROM executions WHERE id = ?1", [id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()?
    else {
        return Ok(false);
    };
    let current = ExecutionStatus::parse(&status).ok_or_else(|| conversion(0, std::fmt::Error))?;
    if !current.may_become(next) {
        return Ok(false);
    }
    let now = clock::now();
    let mut timeline: Vec<TimelineEntry> = serde_json::from_str(&timeline).map_err(|e| conversion(1, e))?;
    timeline.push(TimelineEntry { status: next, at: now.clone() });
    c.execute(
        "UPDATE executions SET status = ?2, timeline = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, next.as_str(), to_json(&timeline)?, now],
    )?;
    if next.is_terminal() {
        c.execute("DELETE FROM delivery_jobs WHERE execution_id = ?1", [id])?;
    }
    Ok(true)
}

/// Records why an execution failed or is retrying; an ended execution keeps its own.
fn set_error(c: &Connection, id: &str, error: Option<&ExecutionError>) -> rusqlite::Result<()> {
    let error = error.map(to_json).transpose()?;
    c.execute(&format!("UPDATE executions SET error = ?2 WHERE id = ?1 AND status NOT IN {ENDED}"), params![id, error])?;
    Ok(())
}

/// The statuses that end an execution, as SQL.
const ENDED: &str = "('replied', 'failed', 'expired', 'cancelled')";

/// The id of the execution with this call id (for this action) or this
/// idempotency key (within its 24 h).
fn select_existing(
    c: &Connection,
    tenant: &str,
    action_id: &str,
    call_id: Option<&str>,
    key: Option<&str>,
) -> rusqlite::Result<Option<String>> {
    if let Some(call_id) = call_id
        && let Some(id) = c
            .query_row(
                "SELECT id FROM executions WHERE tenant = ?1 AND action_id = ?2 AND call_id = ?3",
                [tenant, action_id, call_id],
                |r| r.get(0),
            )
            .optional()?
    {
        return Ok(Some(id));
    }
    match key {
        Some(key) => c
            .query_row(
                "SELECT id FROM executions WHERE tenant = ?1 AND idempotency_key = ?2 AND created_at > ?3",
                params![tenant, key, clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)],
                |r| r.get(0),
            )
            .optional(),
        None => Ok(None),
    }
}

/// Sends held for a sender go again once new credentials are proven.
fn release_sender_jobs(c: &Connection, tenant: &str, phone_number_id: &str) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE delivery_jobs SET held = 0, due_at = MIN(due_at, ?3) WHERE tenant = ?1 AND sender = ?2 AND held = 1",
        params![tenant, phone_number_id, clock::now_ms()],
    )?;
    Ok(())
}

/// The template status a `message_template_status_update` event leaves, or
/// `None` for a notice that changes nothing (FLAGGED warns; it still sends).
fn template_status_after(event: &str) -> Option<&'static str> {
    match event {
        "APPROVED" | "REINSTATED" | "UNARCHIVED" => Some("APPROVED"),
        "PAUSED" => Some("PAUSED"),
        "DISABLED" => Some("DISABLED"),
        "DELETED" => Some("DELETED"),
        "REJECTED" => Some("REJECTED"),
        "PENDING_DELETION" => Some("PENDING_DELETION"),
        "ARCHIVED" => Some("ARCHIVED"),
        "LIMIT_EXCEEDED" => Some("LIMIT_EXCEEDED"),
        "PENDING" => Some("PENDING"),
        "IN_APPEAL" => Some("IN_APPEAL"),
        _ => None,
    }
}

/// The execution a webhook event concerns: by Meta's wamid, else by the id
/// actiond put in the message (biz_opaque_callback_data, a quick-reply payload).
fn find_execution(c: &Connection, wamid: Option<&str>, hint: Option<Uuid>) -> rusqlite::Result<Option<String>> {
    if let Some(wamid) = wamid
        && let Some(id) = c.query_row("SELECT id FROM executions WHERE wamid = ?1", [wamid], |r| r.get(0)).optional()?
    {
        return Ok(Some(id));
    }
    match hint {
        Some(hint) => c.query_row("SELECT id FROM executions WHERE id = ?1", [hint.to_string()], |r| r.get(0)).optional(),
        None => Ok(None),
    }
}

/// Applies one event; false when it concerns nothing actiond knows (yet).
fn apply_event(c: &Connection, event: WebhookEvent, changed: &mut Vec<Uuid>) -> rusqlite::Result<bool> {
    let mut touched = |id: &str| {
        if let Ok(id) = Uuid::parse_str(id) {
            changed.push(id);
        }
    };
    match event {
        WebhookEvent::Status { wamid, execution_hint, status, error, .. } => {
            let Some(id) = find_execution(c, Some(&wamid), execution_hint)? else { return Ok(false) };
            // A status for a send whose answer was lost: Meta has the message, so
            // its wamid is adopted and the job, waiting to reconcile, is done.
            let adopted = c.execute("UPDATE executions SET wamid = ?2 WHERE id = ?1 AND wamid IS NULL", [&id, &wamid])?;
            if adopted > 0 {
                c.execute("DELETE FROM delivery_jobs WHERE execution_id = ?1", [&id])?;
            }
            if let Some(error) = &error {
                set_error(c, &id, Some(error))?;
            }
            if advance(c, &id, status)? || adopted > 0 {
                touched(&id);
            }
        }
        WebhookEvent::Reply { context_wamid, execution_hint, reply, .. } => {
            let Some(id) = find_execution(c, context_wamid.as_deref(), execution_hint)? else { return Ok(false) };
            let recorded = c.execute(
                "UPDATE executions SET reply = ?2, updated_at = ?3 WHERE id = ?1 AND reply IS NULL",
                params![id, to_json(&reply)?, clock::now()],
            )?;
            let mandatory: bool = c.query_row("SELECT mandatory FROM executions WHERE id = ?1", [&id], |r| r.get(0))?;
            if recorded > 0 && (!mandatory || advance(c, &id, ExecutionStatus::Replied)?) {
                touched(&id);
            }
        }
        WebhookEvent::TemplateStatus { waba_id, name, language, event, .. } => {
            let Some(status) = template_status_after(&event) else { return Ok(true) };
            c.execute(
                "UPDATE templates SET status = ?4 WHERE name = ?2 AND language = ?3 \
                 AND phone_number_id IN (SELECT phone_number_id FROM senders WHERE waba_id = ?1)",
                params![waba_id, name, language, status],
            )?;
            if status == "APPROVED" {
                return Ok(true);
            }
            // Sends not yet made would fail at Meta (132015/132016): stop them now.
            // One in flight is left to Meta's answer.
            let mut pending = c.prepare(
                "SELECT e.id FROM executions e JOIN delivery_jobs j ON j.execution_id = e.id \
                 WHERE e.template_name = ?2 AND e.language = ?3 AND e.wamid IS NULL AND e.attempt_open = 0 \
                 AND e.sender IN (SELECT phone_number_id FROM senders WHERE waba_id = ?1)",
            )?;
            let ids: Vec<String> = pending.query_map(params![waba_id, name, language], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            let error = ExecutionError {
                code: "template_not_approved".into(),
                message: format!("template '{name}' ({language}) became {status} before the message was sent"),
                provider_code: None,
            };
            for id in ids {
                set_error(c, &id, Some(&error))?;
                if advance(c, &id, ExecutionStatus::Failed)? {
                    touched(&id);
                }
            }
        }
    }
    Ok(true)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ready(&self) -> StoreResult<()> {
        let latest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        let applied: i64 = self.read(|c| c.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))).await?;
        if applied < latest {
            return Err(StoreError::Unavailable(format!("migrations applied up to {applied}, expected {latest}")));
        }
        Ok(())
    }

    async fn idempotent_response(&self, tenant: &TenantId, key: &str) -> StoreResult<Option<IdempotentResponse>> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.to_owned());
        self.read(move |c| select_idempotent(c, &tenant, &key)).await
    }

    async fn create_action(
        &self,
        tenant: &TenantId,
        id: Uuid,
        spec: &ActionSpec,
        idempotency: Option<(&str, IdempotentResponse)>,
    ) -> StoreResult<Created> {
        let tenant = tenant.as_str().to_owned();
        let webhook = serde_json::to_string(&WebhookRecord::from_spec(spec)).map_err(|e| StoreError::Internal(e.to_string()))?;
        let spec = spec.clone();
        let idempotency = idempotency.map(|(key, response)| (key.to_owned(), response));
        self.write(move |c| {
            let now = clock::now();
            if let Some((key, response)) = &idempotency {
                if let Some(first) = select_idempotent(c, &tenant, key)? {
                    return Ok(Created::Replay(first));
                }
                c.execute("DELETE FROM idempotency_keys WHERE tenant = ?1 AND key = ?2", [&tenant, key])?;
                c.execute(
                    "INSERT INTO idempotency_keys (tenant, key, request_hash, status, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![tenant, key, response.request_hash, response.status, response.body.to_string(), now],
                )?;
            }
            write_action(c, INSERT_ACTION, &tenant, id, &spec, &webhook, &now)?;
            Ok(Created::New)
        })
        .await
    }

    async fn get_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ActionRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |c| select_action(c, &tenant, &id.to_string())).await
    }

    async fn list_actions(&self, tenant: &TenantId, filter: ActionFilter<'_>, page: Page) -> StoreResult<(Vec<ActionRecord>, u64)> {
        let tenant = tenant.as_str().to_owned();
        let kind = filter.kind.map(str::to_owned);
        let is_active = filter.is_active;
        self.read(move |c| {
            let condition = "tenant = ?1 AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR is_active = ?3)";
            let total: u64 =
                c.query_row(&format!("SELECT COUNT(*) FROM actions WHERE {condition}"), params![tenant, kind, is_active], |r| r.get(0))?;
            let mut query = c.prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS} FROM actions WHERE {condition} ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
            ))?;
            let rows = query
                .query_map(params![tenant, kind, is_active, page.size, page.offset()], action_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn update_action(&self, tenant: &TenantId, id: Uuid, spec: &ActionSpec) -> StoreResult<Option<ActionRecord>> {
        let tenant = tenant.as_str().to_owned();
        let webhook = serde_json::to_string(&WebhookRecord::from_spec(spec)).map_err(|e| StoreError::Internal(e.to_string()))?;
        let spec = spec.clone();
        self.write(move |c| {
            let changed = write_action(c, UPDATE_ACTION, &tenant, id, &spec, &webhook, &clock::now())?;
            if changed == 0 { Ok(None) } else { select_action(c, &tenant, &id.to_string()) }
        })
        .await
    }

    async fn delete_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Vec<Uuid>>> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |c| {
            if c.execute("DELETE FROM actions WHERE tenant = ?1 AND id = ?2", [&tenant, &id.to_string()])? == 0 {
                return Ok(None);
            }
            let mut open = c.prepare("SELECT id, status, mandatory FROM executions WHERE tenant = ?1 AND action_id = ?2")?;
            let rows: Vec<(String, String, bool)> =
                open.query_map([&tenant, &id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
            let mut cancelled = Vec::new();
            for (execution, status, mandatory) in rows {
                let settled = ExecutionStatus::parse(&status).is_none_or(|status| status.settles(mandatory));
                if !settled && advance(c, &execution, ExecutionStatus::Cancelled)? {
                    cancelled.extend(Uuid::parse_str(&execution).ok());
                }
            }
            Ok(Some(cancelled))
        })
        .await
    }

    async fn save_sender(&self, tenant: &TenantId, sender: NewSender, templates: Vec<TemplateRecord>) -> StoreResult<SenderSaved> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |c| {
            let owner: Option<String> =
                c.query_row("SELECT tenant FROM senders WHERE phone_number_id = ?1", [&sender.phone_number_id], |r| r.get(0)).optional()?;
            let now = clock::now();
            if owner.as_deref().is_some_and(|owner| owner != tenant) {
                return Ok(SenderSaved::Taken);
            }
            c.execute(
                "INSERT INTO senders (phone_number_id, tenant, waba_id, sealed_access_token, display_phone_number, verified_name, \
                 quality_rating, healthy, created_at, updated_at, synced_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8, ?8) \
                 ON CONFLICT (phone_number_id) DO UPDATE SET waba_id = excluded.waba_id, \
                 sealed_access_token = excluded.sealed_access_token, display_phone_number = excluded.display_phone_number, \
                 verified_name = excluded.verified_name, quality_rating = excluded.quality_rating, healthy = 1, \
                 updated_at = excluded.updated_at, synced_at = excluded.synced_at",
                params![
                    sender.phone_number_id,
                    tenant,
                    sender.waba_id,
                    sender.sealed_access_token,
                    sender.display_phone_number,
                    sender.verified_name,
                    sender.quality_rating,
                    now
                ],
            )?;
            insert_templates(c, &tenant, &sender.phone_number_id, &templates)?;
            release_sender_jobs(c, &tenant, &sender.phone_number_id)?;
            let saved = select_sender(c, &tenant, &sender.phone_number_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            Ok(if owner.is_some() { SenderSaved::Updated(saved) } else { SenderSaved::Created(saved) })
        })
        .await
    }

    async fn replace_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: &str,
        templates: Vec<TemplateRecord>,
    ) -> StoreResult<Option<SenderRecord>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.write(move |c| {
            let changed = c.execute(
                "UPDATE senders SET healthy = 1, synced_at = ?3, updated_at = ?3 WHERE tenant = ?1 AND phone_number_id = ?2",
                params![tenant, phone_number_id, clock::now()],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            insert_templates(c, &tenant, &phone_number_id, &templates)?;
            release_sender_jobs(c, &tenant, &phone_number_id)?;
            select_sender(c, &tenant, &phone_number_id)
        })
        .await
    }

    async fn get_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SenderRecord>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.read(move |c| select_sender(c, &tenant, &phone_number_id)).await
    }

    async fn sender_credentials(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SenderCredentials>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT waba_id, sealed_access_token, healthy FROM senders WHERE tenant = ?1 AND phone_number_id = ?2",
                [tenant, phone_number_id],
                |r| Ok(SenderCredentials { waba_id: r.get(0)?, sealed_access_token: r.get(1)?, healthy: r.get(2)? }),
            )
            .optional()
        })
        .await
    }

    async fn list_senders(&self, tenant: &TenantId) -> StoreResult<Vec<SenderRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |c| {
            let mut query = c.prepare_cached(&format!(
                "SELECT {SENDER_COLUMNS} FROM senders s WHERE s.tenant = ?1 ORDER BY s.created_at, s.phone_number_id"
            ))?;
            query.query_map([tenant], sender_from_row)?.collect()
        })
        .await
    }

    async fn delete_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<Vec<Uuid>>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.write(move |c| {
            if c.execute("DELETE FROM senders WHERE tenant = ?1 AND phone_number_id = ?2", [&tenant, &phone_number_id])? == 0 {
                return Ok(None);
            }
            let mut unsent = c.prepare("SELECT execution_id FROM delivery_jobs WHERE tenant = ?1 AND sender = ?2")?;
            let ids: Vec<String> = unsent.query_map([&tenant, &phone_number_id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            let error = ExecutionError {
                code: "sender_removed".into(),
                message: "the sender was deleted before the message was sent".into(),
                provider_code: None,
            };
            let mut failed = Vec::new();
            for id in ids {
                set_error(c, &id, Some(&error))?;
                if advance(c, &id, ExecutionStatus::Failed)? {
                    failed.extend(Uuid::parse_str(&id).ok());
                }
            }
            Ok(Some(failed))
        })
        .await
    }

    async fn templates_named(&self, tenant: &TenantId, phone_number_id: &str, name: &str) -> StoreResult<Vec<TemplateRecord>> {
        let (tenant, phone_number_id, name) = (tenant.as_str().to_owned(), phone_number_id.to_owned(), name.to_owned());
        self.read(move |c| {
            let mut query = c.prepare_cached(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE tenant = ?1 AND phone_number_id = ?2 AND name = ?3 ORDER BY language"
            ))?;
            query.query_map([tenant, phone_number_id, name], |row| template_from_row(row).map(|(_, t)| t))?.collect()
        })
        .await
    }

    async fn list_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: Option<&str>,
        page: Page,
    ) -> StoreResult<(Vec<(String, TemplateRecord)>, u64)> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.map(str::to_owned));
        self.read(move |c| {
            let condition = "tenant = ?1 AND (?2 IS NULL OR phone_number_id = ?2)";
            let total: u64 =
                c.query_row(&format!("SELECT COUNT(*) FROM templates WHERE {condition}"), params![tenant, phone_number_id], |r| r.get(0))?;
            let mut query = c.prepare_cached(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE {condition} ORDER BY phone_number_id, name, language LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = query
                .query_map(params![tenant, phone_number_id, page.size, page.offset()], template_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn create_execution(&self, tenant: &TenantId, execution: NewExecution) -> StoreResult<Executed> {
        let tenant = tenant.as_str().to_owned();
        let payload = execution.payload.to_string();
        self.write(move |c| {
            let action_id = execution.action_id.to_string();
            let existing = select_existing(c, &tenant, &action_id, execution.call_id.as_deref(), execution.idempotency_key.as_deref())?;
            if let Some(id) = existing {
                return select_execution(c, &tenant, &id)?.map(Executed::Existing).ok_or(rusqlite::Error::QueryReturnedNoRows);
            }
            let now = clock::now();
            let id = execution.id.to_string();
            let timeline = to_json(&[TimelineEntry { status: ExecutionStatus::Queued, at: now.clone() }])?;
            let deadline = execution
                .mandatory
                .then(|| clock::format(time::OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(execution.reply_timeout))));
            c.execute(
                "INSERT INTO executions (id, tenant, action_id, call_id, idempotency_key, recipient, sender, template_name, language, \
                 mandatory, payload, status, timeline, reply_timeout, reply_deadline, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'queued', ?12, ?13, ?14, ?15, ?15)",
                params![
                    id,
                    tenant,
                    execution.action_id.to_string(),
                    execution.call_id,
                    execution.idempotency_key,
                    execution.to,
                    execution.sender,
                    execution.template_name,
                    execution.language,
                    execution.mandatory,
                    payload,
                    timeline,
                    execution.reply_timeout,
                    deadline,
                    now
                ],
            )?;
            c.execute(
                "INSERT INTO delivery_jobs (execution_id, tenant, sender, due_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, tenant, execution.sender, clock::now_ms()],
            )?;
            select_execution(c, &tenant, &id)?.map(Executed::New).ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    async fn existing_execution(
        &self,
        tenant: &TenantId,
        action_id: Uuid,
        call_id: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> StoreResult<Option<ExecutionRecord>> {
        let (tenant, call_id, key) = (tenant.as_str().to_owned(), call_id.map(str::to_owned), idempotency_key.map(str::to_owned));
        self.read(move |c| match select_existing(c, &tenant, &action_id.to_string(), call_id.as_deref(), key.as_deref())? {
            Some(id) => select_execution(c, &tenant, &id),
            None => Ok(None),
        })
        .await
    }

    async fn get_execution(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ExecutionRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |c| select_execution(c, &tenant, &id.to_string())).await
    }

    async fn list_executions(
        &self,
        tenant: &TenantId,
        filter: ExecutionFilter<'_>,
        page: Page,
    ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
        let tenant = tenant.as_str().to_owned();
        let action_id = filter.action_id.map(|id| id.to_string());
        let call_id = filter.call_id.map(str::to_owned);
        let status = filter.status.map(|s| s.as_str());
        self.read(move |c| {
            let condition =
                "tenant = ?1 AND (?2 IS NULL OR action_id = ?2) AND (?3 IS NULL OR call_id = ?3) AND (?4 IS NULL OR status = ?4)";
            let total: u64 = c.query_row(
                &format!("SELECT COUNT(*) FROM executions WHERE {condition}"),
                params![tenant, action_id, call_id, status],
                |r| r.get(0),
            )?;
            let mut query = c.prepare_cached(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE {condition} ORDER BY created_at DESC, id DESC LIMIT ?5 OFFSET ?6"
            ))?;
            let rows = query
                .query_map(params![tenant, action_id, call_id, status, page.size, page.offset()], execution_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn claim_jobs(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<ClaimedJob>> {
        self.write(move |c| {
            let mut due = c.prepare_cached(
                "SELECT j.execution_id, j.tenant, j.sender, e.recipient, e.payload, e.attempts, e.attempt_open, \
                 json_extract(e.error, '$.code') \
                 FROM delivery_jobs j JOIN executions e ON e.id = j.execution_id \
                 WHERE j.held = 0 AND j.due_at <= ?1 AND j.lease_until <= ?1 ORDER BY j.due_at LIMIT ?2",
            )?;
            let jobs = due
                .query_map(params![now_ms, limit], |row| {
                    let id: String = row.get(0)?;
                    let tenant: String = row.get(1)?;
                    let payload: String = row.get(4)?;
                    Ok(ClaimedJob {
                        execution_id: Uuid::parse_str(&id).map_err(|e| conversion(0, e))?,
                        tenant: TenantId::new(tenant).ok_or_else(|| conversion(1, std::fmt::Error))?,
                        sender: row.get(2)?,
                        recipient: row.get(3)?,
                        payload: serde_json::from_str(&payload).map_err(|e| conversion(4, e))?,
                        attempts: row.get(5)?,
                        attempt_open: row.get(6)?,
                        last_error: row.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease = c.prepare_cached("UPDATE delivery_jobs SET lease_until = ?2 WHERE execution_id = ?1")?;
            for job in &jobs {
                lease.execute(params![job.execution_id.to_string(), lease_until_ms])?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn begin_attempt(&self, execution_id: Uuid) -> StoreResult<bool> {
        self.write(move |c| {
            let id = execution_id.to_string();
            let status: Option<String> = c.query_row("SELECT status FROM executions WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            match status.as_deref().and_then(ExecutionStatus::parse) {
                Some(status) if !status.is_terminal() => {
                    advance(c, &id, ExecutionStatus::Sending)?;
                    c.execute(
                        "UPDATE executions SET attempts = attempts + 1, attempt_open = 1, updated_at = ?2 WHERE id = ?1",
                        [&id, &clock::now()],
                    )?;
                    Ok(true)
                }
                _ => {
                    c.execute("DELETE FROM delivery_jobs WHERE execution_id = ?1", [&id])?;
                    Ok(false)
                }
            }
        })
        .await
    }

    async fn record_outcome(&self, execution_id: Uuid, outcome: Outcome) -> StoreResult<()> {
        self.write(move |c| {
            let id = execution_id.to_string();
            c.execute("UPDATE executions SET attempt_open = 0 WHERE id = ?1", [&id])?;
            match outcome {
                Outcome::Accepted { wamid } => {
                    // A status webhook may have got here first: keep what it recorded.
                    c.execute("UPDATE executions SET wamid = COALESCE(wamid, ?2) WHERE id = ?1", [&id, &wamid])?;
                    set_error(c, &id, None)?;
                    advance(c, &id, ExecutionStatus::Accepted)?;
                    c.execute("DELETE FROM delivery_jobs WHERE execution_id = ?1", [&id])?;
                }
                Outcome::Retry { due_ms, error } => {
                    set_error(c, &id, Some(&error))?;
                    c.execute("UPDATE delivery_jobs SET due_at = ?2, lease_until = 0 WHERE execution_id = ?1", params![id, due_ms])?;
                }
                Outcome::Failed(error) => {
                    set_error(c, &id, Some(&error))?;
                    advance(c, &id, ExecutionStatus::Failed)?;
                }
                Outcome::Deferred { due_ms } => {
                    c.execute("UPDATE delivery_jobs SET due_at = ?2, lease_until = 0 WHERE execution_id = ?1", params![id, due_ms])?;
                }
                Outcome::Held => {
                    c.execute("UPDATE delivery_jobs SET held = 1, lease_until = 0 WHERE execution_id = ?1", [&id])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn hold_sender(&self, tenant: &TenantId, phone_number_id: &str, refused_token: &[u8]) -> StoreResult<bool> {
        let (tenant, phone_number_id, refused_token) = (tenant.as_str().to_owned(), phone_number_id.to_owned(), refused_token.to_vec());
        self.write(move |c| {
            let marked = c.execute(
                "UPDATE senders SET healthy = 0, updated_at = ?4 WHERE tenant = ?1 AND phone_number_id = ?2 AND sealed_access_token = ?3",
                params![tenant, phone_number_id, refused_token, clock::now()],
            )?;
            if marked > 0 {
                c.execute(
                    "UPDATE delivery_jobs SET held = 1, lease_until = 0 WHERE tenant = ?1 AND sender = ?2",
                    [tenant, phone_number_id],
                )?;
            }
            Ok(marked > 0)
        })
        .await
    }

    async fn apply_webhook_events(&self, events: Vec<WebhookEvent>) -> StoreResult<Vec<Uuid>> {
        self.write(move |c| {
            let mut changed = Vec::new();
            let now = clock::now();
            for event in events {
                let key = match &event {
                    WebhookEvent::Status { key, .. } | WebhookEvent::Reply { key, .. } | WebhookEvent::TemplateStatus { key, .. } => {
                        key.clone()
                    }
                };
                let seen: bool = c.query_row("SELECT EXISTS (SELECT 1 FROM webhook_events WHERE key = ?1)", [&key], |r| r.get(0))?;
                // An event that matched nothing is not marked seen: Meta's resend
                // may find the execution its first copy arrived too early for.
                if !seen && apply_event(c, event, &mut changed)? {
                    c.execute("INSERT INTO webhook_events (key, received_at) VALUES (?1, ?2)", [&key, &now])?;
                }
            }
            Ok(changed)
        })
        .await
    }

    async fn expire_due(&self) -> StoreResult<Vec<Uuid>> {
        self.write(move |c| {
            let mut due = c.prepare_cached(
                "SELECT id FROM executions WHERE reply_deadline <= ?1 \
                 AND reply_deadline IS NOT NULL AND status NOT IN ('replied', 'failed', 'expired', 'cancelled')",
            )?;
            let ids: Vec<String> = due.query_map([clock::now()], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            let mut expired = Vec::new();
            for id in ids {
                if advance(c, &id, ExecutionStatus::Expired)? {
                    expired.extend(Uuid::parse_str(&id).ok());
                }
            }
            Ok(expired)
        })
        .await
    }

    async fn prune(&self) -> StoreResult<()> {
        self.write(|c| {
            c.execute("DELETE FROM webhook_events WHERE received_at < ?1", [clock::seconds_ago(WEBHOOK_EVENT_RETENTION_SECONDS)])?;
            c.execute("DELETE FROM idempotency_keys WHERE created_at < ?1", [clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)])?;
            Ok(())
        })
        .await
    }

    async fn queue(&self) -> StoreResult<(u64, Option<i64>)> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*), MIN(MAX(due_at, lease_until)) FROM delivery_jobs WHERE held = 0", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .await
    }
}
