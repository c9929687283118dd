//! PostgreSQL under the store, shared by any number of replicas. A pool of
//! connections (deadpool); each operation runs in its own transaction on a
//! blocking thread, statement by statement, and is tried again whole on a
//! deadlock. Migrations run once under an advisory lock; one more connection
//! per replica `LISTEN`s, so a change committed on any replica wakes the
//! waiters of every one.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, NoTls};

use super::db::{DbError, DbResult, Row, Tx, Value};
use super::signals::{Signal, Signals};
use super::{StoreError, StoreResult, redacted};
use crate::clock;

pub const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/postgres/0001_init.sql"))];
/// The channel every replica listens on.
const CHANNEL: &str = "actiond";
/// Any constant will do: it only has to be the same for every replica.
const MIGRATION_LOCK: i64 = 0x0061_6374_696f_6e64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free connection before it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// A deadlock is broken by aborting one side; it is tried again this often.
const CONTENTION_RETRIES: u32 = 5;
/// Signals per notification: a payload must stay under 8,000 bytes.
const SIGNALS_PER_NOTIFY: usize = 150;

pub struct PgDb {
    pool: Pool,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgDb {
    /// Connects, applies migrations under the lock, and starts listening.
    pub async fn open(url: &str, max_connections: usize, signals: Arc<Signals>) -> Result<Self, String> {
        let shown = redacted(url);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("ACTIOND_DATABASE_URL: {shown} is not a PostgreSQL URL: {e}"))?;
        config.connect_timeout(CONNECT_TIMEOUT).application_name("actiond").keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("ACTIOND_DATABASE_URL: {e}"))?;
        let client = pool.get().await.map_err(|e| format!("ACTIOND_DATABASE_URL: cannot connect to {shown}: {}", one_line(&e)))?;
        migrate(&client).await.map_err(|e| format!("ACTIOND_DATABASE_URL: cannot migrate {shown}: {}", one_line(&e)))?;
        drop(client);
        let listener = tokio::spawn(listen(config, signals));
        Ok(Self { pool, listener })
    }

    async fn session(&self) -> StoreResult<PgSession> {
        let client = self.pool.get().await.map_err(|e| StoreError::Unavailable(format!("no database connection: {}", one_line(&e))))?;
        Ok(PgSession { client: Some(client), handle: Handle::current(), open: false, begin_pending: false })
    }

    /// Runs `op` in a transaction; its signals are sent with the commit.
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        let mut session = self.session().await?;
        tokio::task::spawn_blocking(move || {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match session.transaction(&op) {
                    Err(DbError::Contention(reason)) if attempt <= CONTENTION_RETRIES => {
                        tracing::debug!(%reason, attempt, "a transaction met another; trying it again");
                    }
                    result => return result.map_err(StoreError::from),
                }
            }
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Runs `op` outside a transaction: each statement sees what is committed when it runs.
    pub async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        let mut session = self.session().await?;
        tokio::task::spawn_blocking(move || op(&mut Tx::postgres(&mut session)).map_err(StoreError::from))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// The pool as Prometheus sees it.
    pub fn report_pool(&self) {
        let status = self.pool.status();
        metrics::gauge!("actiond_db_pool_max_connections").set(status.max_size as f64);
        metrics::gauge!("actiond_db_pool_connections", "state" => "idle").set(status.available as f64);
        metrics::gauge!("actiond_db_pool_connections", "state" => "in_use").set(status.size.saturating_sub(status.available) as f64);
        metrics::gauge!("actiond_db_pool_waiting").set(status.waiting as f64);
    }
}

/// One pooled connection, driven from a blocking thread.
pub struct PgSession {
    client: Option<Object>,
    handle: Handle,
    /// A transaction is open: should the session be dropped now (a panic),
    /// its connection is closed rather than handed to the next request.
    open: bool,
    /// The open transaction's `BEGIN` is still to be sent, with its first statement.
    begin_pending: bool,
}

impl Drop for PgSession {
    fn drop(&mut self) {
        if self.open
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

impl PgSession {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("a session keeps its client until dropped")
    }

    fn batch(&mut self, sql: &str) -> DbResult<()> {
        let client = self.client();
        self.handle.block_on(client.batch_execute(sql)).map_err(failure)
    }

    /// Runs `op` in a transaction. Round trips are what a transaction costs
    /// here, so `BEGIN` travels with the first statement, and the
    /// notifications of its signals with `COMMIT`.
    fn transaction<T>(&mut self, op: &impl Fn(&mut Tx<'_>) -> DbResult<T>) -> DbResult<T> {
        self.begin_pending = true;
        self.open = true;
        let mut tx = Tx::postgres(self);
        let result = op(&mut tx);
        let signals = tx.take_signals();
        if std::mem::take(&mut self.begin_pending) {
            // No statement ran: there is no transaction to end.
            self.open = false;
            return result;
        }
        let mut end = String::new();
        if result.is_ok() {
            for chunk in signals.chunks(SIGNALS_PER_NOTIFY) {
                // The payload is ids and letters of our own making: no quote can be in it.
                let payload = chunk.iter().map(|signal| signal.encode()).collect::<Vec<_>>().join(",");
                end.push_str(&format!("SELECT pg_notify('{CHANNEL}', '{payload}'); "));
            }
            end.push_str("COMMIT");
        } else {
            end.push_str("ROLLBACK");
        }
        self.batch(&end)?;
        self.open = false;
        result
    }

    fn parameters(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        args.iter().map(|arg| arg as &(dyn ToSql + Sync)).collect()
    }

    /// Runs one statement, after the transaction's `BEGIN` when that is still
    /// to be sent: both go in one round trip (tokio-postgres pipelines them).
    fn run<T, F>(&mut self, statement: F) -> DbResult<T>
    where
        F: for<'c> AsyncFnOnce(&'c Object) -> Result<T, tokio_postgres::Error>,
    {
        let begin = std::mem::take(&mut self.begin_pending);
        let client = self.client();
        self.handle.block_on(async {
            if begin {
                let (begun, result) = futures_util::join!(client.batch_execute("BEGIN"), statement(client));
                begun.map_err(failure)?;
                result.map_err(failure)
            } else {
                statement(client).await.map_err(failure)
            }
        })
    }

    pub(super) fn execute(&mut self, sql: &str, args: &[Value]) -> DbResult<u64> {
        self.run(async |client: &Object| {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, &Self::parameters(args)).await
        })
    }

    pub(super) fn query(&mut self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
        let rows = self.run(async |client: &Object| {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, &Self::parameters(args)).await
        })?;
        rows.iter().map(row).collect()
    }
}

fn row(row: &tokio_postgres::Row) -> DbResult<Row> {
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let value = match *column.type_() {
                Type::BOOL => row.try_get::<_, Option<bool>>(index).map(|v| v.map(Value::Bool)),
                Type::INT2 => row.try_get::<_, Option<i16>>(index).map(|v| v.map(|n| Value::Int(n.into()))),
                Type::INT4 => row.try_get::<_, Option<i32>>(index).map(|v| v.map(|n| Value::Int(n.into()))),
                Type::INT8 => row.try_get::<_, Option<i64>>(index).map(|v| v.map(Value::Int)),
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index).map(|v| v.map(Value::Bytes)),
                _ => row.try_get::<_, Option<String>>(index).map(|v| v.map(Value::Text)),
            };
            value.map(|v| v.unwrap_or(Value::Null)).map_err(|e| DbError::Internal(format!("column {}: {e}", column.name())))
        })
        .collect::<DbResult<Vec<_>>>()?;
    Ok(Row(values))
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(number) => match *ty {
                Type::INT2 => i16::try_from(*number)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*number)?.to_sql(ty, out),
                _ => number.to_sql(ty, out),
            },
            Value::Bool(flag) => flag.to_sql(ty, out),
            Value::Text(text) => text.as_str().to_sql(ty, out),
            Value::Bytes(bytes) => bytes.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn failure(error: tokio_postgres::Error) -> DbError {
    let text = one_line(&error);
    match error.code() {
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE => DbError::Contention(text),
        Some(code)
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            DbError::Unavailable(text)
        }
        Some(_) => DbError::Internal(text),
        // No SQLSTATE: the connection itself failed.
        None => DbError::Unavailable(text),
    }
}

/// An error with its causes, on one line (connection errors say what
/// failed, never the URL or its password).
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

async fn migrate(client: &Object) -> Result<(), tokio_postgres::Error> {
    client.query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let applied = async {
        client.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)").await?;
        for (version, sql) in MIGRATIONS {
            let done = client.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?.is_some();
            if !done {
                client.batch_execute("BEGIN").await?;
                let result = async {
                    client.batch_execute(sql).await?;
                    client
                        .execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &clock::now()])
                        .await?;
                    client.batch_execute("COMMIT").await
                }
                .await;
                if result.is_err() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                result?;
            }
        }
        Ok(())
    }
    .await;
    client.query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    applied
}

/// Receives every replica's signals for as long as the replica runs,
/// reconnecting after a failure; on each (re)connection everyone looks again,
/// since what was committed in between sent its notifications to no one.
async fn listen(config: tokio_postgres::Config, signals: Arc<Signals>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (forward, mut received) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(notification)) => {
                                if forward.send(notification.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(error = %one_line(&error), "the PostgreSQL listener lost its connection");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        signals.wake_all();
                        while let Some(payload) = received.recv().await {
                            let decoded: Vec<Signal> = payload.split(',').filter_map(Signal::decode).collect();
                            signals.deliver(&decoded);
                        }
                    }
                    Err(error) => tracing::warn!(error = %one_line(&error), "cannot LISTEN on PostgreSQL"),
                }
                driver.abort();
            }
            Err(error) => tracing::warn!(error = %one_line(&error), "the PostgreSQL listener cannot connect; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
