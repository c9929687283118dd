//! SQLite under the store. One writer thread owns the only writing connection
//! and commits many operations per transaction (group commit); each is
//! answered only after the commit that holds it, with WAL and
//! `synchronous=FULL`, so an acknowledged write survives a kill -9 or a power
//! loss. Readers use their own connections and never wait for the writer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql};
use tokio::sync::oneshot;

use super::db::{DbError, DbResult, Row, Tx, Value};
use super::signals::Signals;
use super::{StoreError, StoreResult};
use crate::clock;

pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_executions.sql")),
    (3, include_str!("../../migrations/sqlite/0003_replicas.sql")),
    (4, include_str!("../../migrations/sqlite/0004_wa_id.sql")),
    (5, include_str!("../../migrations/sqlite/0005_list_indexes.sql")),
    (6, include_str!("../../migrations/sqlite/0006_events.sql")),
    (7, include_str!("../../migrations/sqlite/0007_event_due_by_endpoint.sql")),
    (8, include_str!("../../migrations/sqlite/0008_jobs_without_sender_index.sql")),
    (9, include_str!("../../migrations/sqlite/0009_action_versions.sql")),
    (10, include_str!("../../migrations/sqlite/0010_job_slots.sql")),
    (11, include_str!("../../migrations/sqlite/0011_parked_webhook_events.sql")),
    (12, include_str!("../../migrations/sqlite/0012_template_changes.sql")),
];
const READERS: usize = 4;
/// Prepared statements kept per connection: more than the writer's distinct
/// statements, each one text whatever its batch's size (`db::batch`). At 256,
/// when an `IN` list of each length was a statement of its own, they held
/// 7 MB under load.
const STATEMENT_CACHE: usize = 64;
/// Most operations one transaction commits; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;

pub struct SqliteDb {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<Readers>,
    /// Held for the store's life: one process per database file.
    _lock: std::fs::File,
}

struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &str, signals: Arc<Signals>) -> Result<Self, String> {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(format!("{path}.lock")).map_err(|e| e.to_string())?;
        lock.try_lock().map_err(|_| "another actiond process is using this SQLite file; one process per file".to_owned())?;
        let writer = connect(path).map_err(|e| e.to_string())?;
        writer.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
        migrate(&writer).map_err(|e| e.to_string())?;
        let connections =
            (0..READERS).map(|_| connect_reader(path).map(Mutex::new)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, queue, signals))
            .map_err(|e| e.to_string())?;
        Ok(Self { writer: jobs, readers: Arc::new(Readers { connections, next: AtomicUsize::new(0) }), _lock: lock })
    }

    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job { op, result: None, reply };
        self.writer.send(Box::new(job)).map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    pub async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let index = readers.next.fetch_add(1, Ordering::Relaxed) % readers.connections.len();
            let connection = readers.connections[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            op(&mut Tx::sqlite(&connection)).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// A read of a few rows by key, on the calling thread when a reader
    /// connection is free: it takes microseconds, less than handing it to
    /// the blocking pool and back costs. Else as `read`.
    pub async fn lookup<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        if let Some(connection) = self.readers.connections.iter().find_map(|connection| connection.try_lock().ok()) {
            return op(&mut Tx::sqlite(&connection)).map_err(StoreError::from);
        }
        self.read(op).await
    }
}

fn connect(path: &str) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    // A statement's journal (a batch's UPDATE over many rows) stays in
    // memory rather than spilling to a temporary file past 64 KiB.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // rusqlite keeps 16 prepared statements by default: fewer than the
    // writer's distinct statements, so each would be parsed again and again.
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Otherwise SQLite plans a `LIMIT $n` with the value bound, and a new
    // binding expires the plan: the claims' statements were parsed again on
    // every run. One plan whatever the values (the query planner stability
    // guarantee) keeps them prepared; no plan here depends on a bound value.
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(connection)
}

/// A reader keeps 512 KiB of pages rather than SQLite's 2 MiB: its reads
/// are look-ups by key, served as well from the OS's cache, and four full
/// caches were a tenth of the server's memory under load.
fn connect_reader(path: &str) -> rusqlite::Result<Connection> {
    let connection = connect(path)?;
    connection.pragma_update(None, "cache_size", -512)?;
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
            transaction
                .execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", rusqlite::params![version, clock::now()])?;
            transaction.commit()?;
        }
    }
    Ok(())
}

/// The statement with PostgreSQL's `$N` placeholders as SQLite's `?N`
/// (SQLite reads `$N` as a name, numbered by first appearance).
fn sqlite_sql(sql: &str) -> String {
    // Bytes, not chars: `$`, `'` and digits are ASCII, and the text between
    // them is copied whole. It runs for every statement executed.
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut quoted = false;
    for (index, byte) in bytes.iter().enumerate() {
        match byte {
            b'\'' => quoted = !quoted,
            b'$' if !quoted && bytes.get(index + 1).is_some_and(u8::is_ascii_digit) => {
                out.push_str(&sql[copied..index]);
                out.push('?');
                copied = index + 1;
            }
            _ => {}
        }
    }
    out.push_str(&sql[copied..]);
    out
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match self {
            Value::Null => Borrowed(ValueRef::Null),
            Value::Int(number) => Borrowed(ValueRef::Integer(*number)),
            Value::Bool(flag) => Borrowed(ValueRef::Integer(i64::from(*flag))),
            Value::Text(text) => Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Bytes(bytes) => Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

fn failure(error: rusqlite::Error) -> DbError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => DbError::Contention(error.to_string()),
        Some(
            rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::ReadOnly,
        ) => DbError::Unavailable(error.to_string()),
        _ => DbError::Internal(error.to_string()),
    }
}

pub(super) fn execute(connection: &Connection, sql: &str, args: &[Value]) -> DbResult<u64> {
    let mut statement = connection.prepare_cached(&sqlite_sql(sql)).map_err(failure)?;
    let changed = statement.execute(rusqlite::params_from_iter(args)).map_err(failure)?;
    Ok(changed as u64)
}

pub(super) fn query(connection: &Connection, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
    let mut statement = connection.prepare_cached(&sqlite_sql(sql)).map_err(failure)?;
    let columns = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(args)).map_err(failure)?;
    let mut result = Vec::new();
    while let Some(row) = rows.next().map_err(failure)? {
        let values = (0..columns)
            .map(|column| {
                Ok(match row.get_ref(column).map_err(failure)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(number) => Value::Int(number),
                    ValueRef::Real(number) => Value::Int(number as i64),
                    // Checked as one string, word by word; `from_utf8_lossy` walks it byte by byte.
                    ValueRef::Text(text) => Value::Text(
                        String::from_utf8(text.to_vec()).unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned()),
                    ),
                    ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
                })
            })
            .collect::<DbResult<Vec<_>>>()?;
        result.push(Row(values));
    }
    Ok(result)
}

/// A write waiting for the writer: run inside the batch's transaction, then
/// told whether that transaction committed.
trait WriteJob: Send {
    fn run(&mut self, connection: &Connection) -> bool;
    fn finish(self: Box<Self>, committed: Result<(), String>, signals: &Signals);
}

struct Job<T, F> {
    op: F,
    result: Option<(DbResult<T>, Vec<super::signals::Signal>)>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: Fn(&mut Tx<'_>) -> DbResult<T> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let mut tx = Tx::sqlite(connection);
        let result = (self.op)(&mut tx);
        let succeeded = result.is_ok();
        self.result = Some((result, tx.take_signals()));
        succeeded
    }

    fn finish(self: Box<Self>, committed: Result<(), String>, signals: &Signals) {
        let outcome = match (committed, self.result) {
            (Ok(()), Some((Ok(value), emitted))) => {
                signals.deliver(&emitted);
                Ok(value)
            }
            (Ok(()), Some((Err(error), _))) => Err(error.into()),
            (Ok(()), None) => Err(StoreError::Internal("the write panicked".into())),
            (Err(error), _) => Err(StoreError::Unavailable(format!("commit failed: {error}"))),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Takes every write waiting, commits them in one transaction and answers
/// them. Its metrics: the transactions' total duration against the time
/// elapsed is the writer's busy share (near 1, each write waits for the
/// transaction in progress), and writes per transaction how many share
/// each commit's fsync.
fn run_writer(connection: Connection, queue: mpsc::Receiver<Box<dyn WriteJob>>, signals: Arc<Signals>) {
    while let Ok(first) = queue.recv() {
        let started = Instant::now();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs = batch.len() as u64;
        let committed = commit_batch(&connection, &mut batch);
        for job in batch {
            job.finish(committed.clone(), &signals);
        }
        metrics::histogram!("actiond_sqlite_transaction_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("actiond_sqlite_writes_total").increment(jobs);
    }
}

/// Runs the batch's jobs in one transaction and commits them at once. They
/// first run side by side: a savepoint per job would make SQLite copy every
/// page each job touches to a sub-journal, and nearly every job succeeds. If
/// one fails, that transaction is undone and the batch runs again with a
/// savepoint per job, so that the failing job undoes only its own writes
/// (a write may run more than once).
fn commit_batch(connection: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    let every_job_succeeded = run_batch(connection, batch, false)?;
    if !every_job_succeeded && batch.len() > 1 {
        run_batch(connection, batch, true)?;
    }
    Ok(())
}

/// One transaction over the batch; whether every job succeeded. Without
/// savepoints, a job that fails rolls the whole transaction back.
fn run_batch(connection: &Connection, batch: &mut [Box<dyn WriteJob>], savepoints: bool) -> Result<bool, String> {
    control(connection, "BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let result = (|| {
        for job in batch.iter_mut() {
            if savepoints {
                control(connection, "SAVEPOINT job")?;
            }
            let succeeded = catch_unwind(AssertUnwindSafe(|| job.run(connection))).unwrap_or(false);
            match (succeeded, savepoints) {
                (true, false) => {}
                (false, false) => {
                    control(connection, "ROLLBACK")?;
                    return Ok(false);
                }
                (true, true) => control(connection, "RELEASE job")?,
                (false, true) => {
                    control(connection, "ROLLBACK TO job")?;
                    control(connection, "RELEASE job")?;
                }
            }
        }
        control(connection, "COMMIT").map(|()| true)
    })();
    result.map_err(|error| {
        let _ = control(connection, "ROLLBACK");
        error.to_string()
    })
}

/// Runs a transaction-control statement from the connection's statement
/// cache: every transaction runs them, so they are parsed once, not each time.
fn control(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus};

    use tokio::sync::oneshot;

    use super::{Job, WriteJob, commit_batch, connect, migrate, sqlite_sql};
    use crate::store::Page;
    use crate::store::actions::action_list_sql;
    use crate::store::db::{DbError, DbResult, Tx};
    use crate::store::db::{ListQuery, Value};
    use crate::store::executions::execution_list_sql;
    use crate::store::senders::template_list_sql;
    use crate::store::signals::Signals;
    use crate::store::{StoreError, StoreResult};

    type Op = Box<dyn Fn(&mut Tx<'_>) -> DbResult<u64> + Send>;

    /// A batch whose jobs write side by side; its replies, in order.
    fn commit_jobs(connection: &Connection, ops: Vec<Op>) -> Vec<StoreResult<u64>> {
        let mut replies = Vec::new();
        let mut batch: Vec<Box<dyn WriteJob>> = Vec::new();
        for op in ops {
            let (reply, answer) = oneshot::channel();
            batch.push(Box::new(Job { op, result: None, reply }));
            replies.push(answer);
        }
        let committed = commit_batch(connection, &mut batch);
        let signals = Signals::default();
        for job in batch {
            job.finish(committed.clone(), &signals);
        }
        replies.into_iter().map(|mut answer| answer.try_recv().expect("every job is answered")).collect()
    }

    #[test]
    fn a_failing_or_panicking_job_undoes_only_its_own_writes() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)").unwrap();
        let insert = |v: i64| move |tx: &mut Tx<'_>| tx.execute("INSERT INTO t (v) VALUES ($1)", &[Value::Int(v)]);
        let replies = commit_jobs(
            &connection,
            vec![
                Box::new(insert(1)),
                Box::new(move |tx: &mut Tx<'_>| {
                    insert(2)(tx)?;
                    Err(DbError::Internal("refused after writing".into()))
                }),
                Box::new(move |tx: &mut Tx<'_>| {
                    insert(3)(tx)?;
                    panic!("a bug after writing")
                }),
                Box::new(insert(4)),
            ],
        );
        assert!(matches!(replies[0], Ok(1)) && matches!(replies[3], Ok(1)), "{replies:?}");
        assert!(matches!(&replies[1], Err(StoreError::Internal(message)) if message.contains("refused after writing")), "{replies:?}");
        assert!(matches!(&replies[2], Err(StoreError::Internal(message)) if message.contains("panicked")), "{replies:?}");
        let kept: Vec<i64> = connection
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, [1, 4]);
        // A batch that all succeeds commits without the second pass; a lone failing job leaves nothing.
        assert!(commit_jobs(&connection, vec![Box::new(insert(5)), Box::new(insert(6))]).iter().all(Result::is_ok));
        assert!(commit_jobs(&connection, vec![Box::new(|_: &mut Tx<'_>| Err(DbError::Internal("no".into())))])[0].is_err());
        assert_eq!(connection.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0)).unwrap(), 4);
        assert!(connection.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn a_statement_limited_by_a_parameter_stays_prepared_across_bindings() {
        let connection = connect(":memory:").unwrap();
        connection.execute_batch("CREATE TABLE t (v INTEGER NOT NULL); INSERT INTO t VALUES (1), (2), (3)").unwrap();
        for limit in [1, 2, 3] {
            let mut statement = connection.prepare_cached("SELECT v FROM t ORDER BY v LIMIT ?1").unwrap();
            assert_eq!(statement.query_map([limit], |row| row.get::<_, i64>(0)).unwrap().count(), limit as usize);
        }
        let statement = connection.prepare_cached("SELECT v FROM t ORDER BY v LIMIT ?1").unwrap();
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0, "a new LIMIT did not make SQLite parse it again");
    }

    #[test]
    fn placeholders_become_numbered_question_marks_outside_literals() {
        assert_eq!(sqlite_sql("SELECT $1, '$2', $10 WHERE a = $2"), "SELECT ?1, '$2', ?10 WHERE a = ?2");
        assert_eq!(sqlite_sql("SELECT 'é$1', $1 || 'ü'"), "SELECT 'é$1', ?1 || 'ü'");
        assert_eq!(sqlite_sql("SELECT $"), "SELECT $");
    }

    /// Builds a list's count and page statements from a condition and a LIMIT.
    type ListSql = fn(&str, &str) -> [String; 2];

    /// SQLite's plan of a statement, one line per step.
    fn plan(connection: &Connection, sql: &str, args: &[Value]) -> String {
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {}", sqlite_sql(sql))).expect("the statement prepares");
        let steps = statement.query_map(rusqlite::params_from_iter(args), |row| row.get::<_, String>(3)).expect("it explains");
        steps.map(|step| step.expect("a plan step")).collect::<Vec<_>>().join("\n")
    }

    /// Every list and its count, under every combination of its filters,
    /// searches an index by the tenant and a filter given: none reads a whole
    /// table (`SCAN <table>`) or all of a tenant's rows to find a few, so a
    /// page costs what matches, not what the tenant has ever stored.
    #[test]
    fn every_list_is_answered_from_an_index() {
        let connection = connect(":memory:").unwrap();
        migrate(&connection).unwrap();
        let lists: [(&str, ListSql, &[&str]); 3] = [
            ("executions", execution_list_sql, &["action_id", "call_id", "status"]),
            ("actions", action_list_sql, &["type", "is_active"]),
            ("templates", template_list_sql, &["phone_number_id"]),
        ];
        for (table, statements, filters) in lists {
            for chosen in 0..1u32 << filters.len() {
                let chosen: Vec<&str> = filters.iter().enumerate().filter(|(bit, _)| chosen & 1 << bit != 0).map(|(_, c)| *c).collect();
                // A plan does not depend on the values compared.
                let query = filters.iter().fold(ListQuery::for_tenant("t"), |query, column| {
                    query.filter(column, chosen.contains(column).then_some(Value::from("x")))
                });
                // Every action has the one type there is: that filter narrows nothing.
                let narrowing: Vec<&&str> = chosen.iter().filter(|column| **column != "type").collect();
                let (limit, args) = query.page(Page { number: 3, size: 10 });
                let [count, rows] = statements(&query.condition(), &limit);
                for (sql, args) in [(count, query.args()), (rows, args.as_slice())] {
                    let steps = plan(&connection, &sql, args);
                    assert!(steps.contains(&format!("SEARCH {table} USING")), "{sql}\n{steps}");
                    assert!(!steps.contains(&format!("SCAN {table}")), "{sql}\n{steps}");
                    // The index narrows by a filter given, not only by the tenant.
                    let narrowed = narrowing.iter().any(|column| steps.contains(&format!("AND {column}=?")));
                    assert!(narrowing.is_empty() || narrowed, "{sql}\n{steps}");
                }
            }
        }
    }
}
