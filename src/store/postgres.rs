//! PostgreSQL under the store, shared by any number of replicas. Each of
//! `ACTIOND_DATABASE_MAX_CONNECTIONS` session threads owns one connection and
//! drives it itself, so the statements of an operation cost round trips to
//! the server and no hand-offs between threads; an operation runs on the
//! first free session, in its own transaction, and is tried again whole on
//! a deadlock. Migrations run once under an advisory lock; one more
//! connection per replica `LISTEN`s and `NOTIFY`s, so a change committed on
//! any replica wakes the waiters of every one.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::db::{DbError, DbResult, Row, Tx, Value};
use super::signals::{Signal, Signals};
use super::{StoreError, StoreResult};
use crate::clock;

pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_wa_id.sql")),
    (3, include_str!("../../migrations/postgres/0003_list_indexes.sql")),
    (4, include_str!("../../migrations/postgres/0004_events.sql")),
    (5, include_str!("../../migrations/postgres/0005_event_due_by_endpoint.sql")),
    (6, include_str!("../../migrations/postgres/0006_jobs_without_sender_index.sql")),
    (7, include_str!("../../migrations/postgres/0007_action_versions.sql")),
    (8, include_str!("../../migrations/postgres/0008_job_slots.sql")),
    (9, include_str!("../../migrations/postgres/0009_parked_webhook_events.sql")),
    (10, include_str!("../../migrations/postgres/0010_template_changes.sql")),
];
/// The channel every replica listens on.
const CHANNEL: &str = "actiond";
/// Any constant will do: it only has to be the same for every replica.
const MIGRATION_LOCK: i64 = 0x0061_6374_696f_6e64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operation waits for a free session before it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Operations queued for a session, past which another is answered 503 at
/// once: while every session is stuck, those given up on stay queued until a
/// session takes them, and a client retrying must not grow that without end.
/// A busy replica queues about as many as it has requests in flight.
pub(super) const QUEUE_LIMIT: usize = 8_192;
/// A deadlock is broken by aborting one side; it is tried again this often.
const CONTENTION_RETRIES: u32 = 5;
/// Signals per notification: a payload must stay under 8,000 bytes.
const SIGNALS_PER_NOTIFY: usize = 150;
/// Signals waiting for the listener's connection, past which an execution's
/// is dropped (that connection is down or slow): its waiters on other
/// replicas see the change at their recheck instead.
const OUTBOX_LIMIT: usize = 10_000;
/// How long the listener's connection may take to send a notification
/// before it is thought lost (a half-open connection would hang for minutes).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// A request sent ahead of the one whose answer is wanted: all that matters
/// of its own answer is whether it ran.
type SentAhead<'a> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + 'a>>;
/// An operation waiting for a session.
type Job = Box<dyn FnOnce(&mut PgSession) + Send>;

/// The sessions: how many may run, how many do, and what they are doing.
struct PoolState {
    size: usize,
    config: tokio_postgres::Config,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    started: AtomicUsize,
    idle: AtomicUsize,
    connected: AtomicUsize,
    busy: AtomicUsize,
    waiting: AtomicUsize,
    /// Operations sent and not yet taken off the queue, given up on or not.
    queued: AtomicUsize,
    /// Where a commit's signals go: this replica's waiters, and the outbox to every other one.
    signals: Arc<Signals>,
    outbox: Arc<Outbox>,
}

impl PoolState {
    /// Starts another session when every one is busy and there is room:
    /// a replica holds as many connections as it has needed at once.
    fn grow(self: &Arc<Self>) {
        if self.idle.load(Ordering::SeqCst) > 0 {
            return;
        }
        let started = self.started.fetch_add(1, Ordering::SeqCst);
        if started >= self.size {
            self.started.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let state = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("postgres-{started}")).spawn(move || serve_sessions(state));
        if let Err(error) = spawned {
            self.started.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(%error, "cannot start a PostgreSQL session");
        }
    }
}

pub struct PgDb {
    jobs: mpsc::Sender<Job>,
    state: Arc<PoolState>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgDb {
    /// Connects, applies migrations under the lock, starts the sessions and listens.
    pub async fn open(url: &str, max_connections: usize, signals: Arc<Signals>) -> Result<Self, String> {
        // Errors never show the URL: any part of it may hold a credential.
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("ACTIOND_DATABASE_URL: not a PostgreSQL URL: {e}"))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err("ACTIOND_DATABASE_URL: sslmode=require is not supported: actiond speaks to PostgreSQL without TLS".into());
        }
        config.connect_timeout(CONNECT_TIMEOUT).application_name("actiond").keepalives_idle(Duration::from_secs(30));
        let (client, connection) =
            config.connect(NoTls).await.map_err(|e| format!("ACTIOND_DATABASE_URL: cannot connect: {}", connect_failure(&e, &config)))?;
        let driver = tokio::spawn(connection);
        migrate(&client).await.map_err(|e| format!("ACTIOND_DATABASE_URL: cannot migrate: {}", one_line(&e)))?;
        drop(client);
        let _ = driver.await;
        let (jobs, queue) = mpsc::channel::<Job>();
        let state = Arc::new(PoolState {
            size: max_connections.max(1),
            config: config.clone(),
            queue: Arc::new(Mutex::new(queue)),
            started: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            signals: Arc::clone(&signals),
            outbox: Arc::default(),
        });
        let listener = tokio::spawn(listen(config, signals, Arc::clone(&state.outbox)));
        Ok(Self { jobs, state, listener })
    }

    /// Runs `op` on the first free session; 503 when none came free within
    /// `POOL_WAIT`, also when every session is stuck (a lock held, a server
    /// that stopped answering). Whichever comes first takes the operation: a
    /// session starting it, or its caller giving up, so an operation given up
    /// on never runs later, and one that started is waited for.
    async fn run<T: Send + 'static>(&self, op: impl FnOnce(&mut PgSession) -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
        let (reply, mut answer) = oneshot::channel();
        let taken = Arc::new(AtomicBool::new(false));
        let (taken_by_session, state) = (Arc::clone(&taken), Arc::clone(&self.state));
        let job = move |session: &mut PgSession| {
            if !taken_by_session.swap(true, Ordering::AcqRel) {
                state.waiting.fetch_sub(1, Ordering::Relaxed);
                let _ = reply.send(op(session));
            }
        };
        if self.state.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE_LIMIT {
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Unavailable(format!("{QUEUE_LIMIT} operations are queued for a database session already")));
        }
        self.state.waiting.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(Box::new(job)).is_err() {
            self.state.waiting.fetch_sub(1, Ordering::Relaxed);
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Unavailable("the database sessions have stopped".into()));
        }
        self.state.grow();
        let answered = match tokio::time::timeout(POOL_WAIT, &mut answer).await {
            Ok(answered) => answered,
            Err(_) if !taken.swap(true, Ordering::AcqRel) => {
                self.state.waiting.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable(format!("no database session came free within {} s", POOL_WAIT.as_secs())));
            }
            Err(_) => answer.await,
        };
        answered.map_err(|_| StoreError::Internal("a database session failed inside an operation".into()))?
    }

    /// Runs `op` in a transaction; its signals are delivered once it commits.
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        self.run(move |session| {
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
    }

    /// Runs `op` outside a transaction: each statement sees what is committed when it runs.
    pub async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> DbResult<T> + Send + 'static,
    {
        self.run(move |session| {
            session.start_operation(false);
            op(&mut Tx::postgres(session)).map_err(StoreError::from)
        })
        .await
    }

    /// Waits, at most `within`, for the outbox to be sent: a replica that
    /// stops tells the others of its last changes. Only at shutdown, so it
    /// looks every few milliseconds rather than being told.
    pub async fn flush_signals(&self, within: Duration) {
        let flushed = async {
            while !self.state.outbox.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(within, flushed).await.is_err() {
            tracing::warn!("the other replicas were not told of this replica's last changes; they find them at their rechecks");
        }
    }

    /// The sessions as Prometheus sees them.
    pub fn report_pool(&self) {
        let state = &self.state;
        let (connected, busy) = (state.connected.load(Ordering::Relaxed), state.busy.load(Ordering::Relaxed));
        metrics::gauge!("actiond_db_pool_max_connections").set(state.size as f64);
        metrics::gauge!("actiond_db_pool_connections", "state" => "idle").set(connected.saturating_sub(busy) as f64);
        metrics::gauge!("actiond_db_pool_connections", "state" => "in_use").set(busy as f64);
        metrics::gauge!("actiond_db_pool_waiting").set(state.waiting.load(Ordering::Relaxed) as f64);
    }
}

/// One session thread: takes operations off the queue until the store is dropped.
fn serve_sessions(state: Arc<PoolState>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return tracing::error!(%error, "cannot start a PostgreSQL session"),
    };
    let mut session = PgSession {
        runtime,
        config: state.config.clone(),
        client: None,
        statements: HashMap::new(),
        state: Arc::clone(&state),
        begin_pending: false,
        in_transaction: false,
        first_statement: false,
        deferred: Vec::new(),
    };
    loop {
        state.idle.fetch_add(1, Ordering::SeqCst);
        let next = state.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        state.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(job) = next else { break };
        state.queued.fetch_sub(1, Ordering::AcqRel);
        state.busy.fetch_add(1, Ordering::Relaxed);
        if catch_unwind(AssertUnwindSafe(|| job(&mut session))).is_err() {
            // The connection may be mid-transaction: it is not used again.
            session.disconnect();
        }
        state.busy.fetch_sub(1, Ordering::Relaxed);
    }
    session.disconnect();
}

/// One connection, driven by the thread that owns it.
pub struct PgSession {
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    client: Option<Client>,
    /// Statements prepared on this connection, by their text.
    statements: HashMap<String, Statement>,
    state: Arc<PoolState>,
    /// The open transaction's `BEGIN` is still to be sent, with its first statement.
    begin_pending: bool,
    /// A `BEGIN` went out on this connection and its transaction has not
    /// ended: if the connection is lost, the operation fails rather than go
    /// on, outside any transaction, on a new one.
    in_transaction: bool,
    /// No statement of the current operation has run: one that finds the
    /// connection dead may run again on a new one.
    first_statement: bool,
    /// Statements of the open transaction whose results no one reads, still
    /// to be sent (`Tx::execute_later`).
    deferred: Vec<(String, Vec<Value>)>,
}

impl PgSession {
    fn disconnect(&mut self) {
        if self.client.take().is_some() {
            self.state.connected.fetch_sub(1, Ordering::Relaxed);
        }
        self.statements.clear();
    }

    /// The connection, opened again if it was lost. Its driver runs only
    /// while this thread waits on it, so it is given a turn first to notice
    /// a connection the server closed meanwhile.
    fn connect(&mut self) -> DbResult<()> {
        if self.client.is_some() {
            self.runtime.block_on(tokio::task::yield_now());
        }
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.disconnect();
        }
        if self.client.is_none() {
            if self.in_transaction {
                return Err(DbError::Unavailable("the database connection was lost inside a transaction".into()));
            }
            let (client, connection) = self
                .runtime
                .block_on(self.config.connect(NoTls))
                .map_err(|error| DbError::Unavailable(connect_failure(&error, &self.config)))?;
            self.runtime.spawn(async move {
                let _ = connection.await;
            });
            self.client = Some(client);
            self.state.connected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs SQL without parameters; a failure closes the connection, whose state is then unknown.
    fn batch(&mut self, sql: &str) -> DbResult<()> {
        self.connect()?;
        let client = self.client.as_ref().expect("connected above");
        let result = self.runtime.block_on(client.batch_execute(sql)).map_err(failure);
        if result.is_err() {
            self.disconnect();
        }
        result
    }

    /// Forgets what the last operation left: it may have ended early (a panic).
    fn start_operation(&mut self, transaction: bool) {
        self.begin_pending = transaction;
        self.in_transaction = false;
        self.first_statement = true;
        self.deferred.clear();
    }

    /// Runs `op` in a transaction. Round trips are what a transaction costs
    /// here, so `BEGIN` travels with the first statement, the statements no
    /// one reads (`Tx::execute_later`) with the next one (see `commit`).
    fn transaction<T>(&mut self, op: &impl Fn(&mut Tx<'_>) -> DbResult<T>) -> DbResult<T> {
        self.start_operation(true);
        let mut tx = Tx::postgres(self);
        let result = op(&mut tx);
        let signals = tx.take_signals();
        let result = result.and_then(|value| self.commit(signals).map(|()| value));
        if result.is_err() && self.in_transaction && self.client.is_some() {
            // A failure of its own closes the connection, which ends the transaction as well.
            let _ = self.batch("ROLLBACK");
        }
        self.in_transaction = false;
        result
    }

    /// Sends the transaction's deferred statements with its `COMMIT`, in one
    /// round trip. A commit is not tried again on a lost connection, since
    /// the server may have committed before it broke; so when nothing of the
    /// transaction has been sent yet, its statements first go with its
    /// `BEGIN` as a first statement does, and run again on a new connection
    /// if this one is found dead (after a restart, say).
    ///
    /// A transaction that notifies holds a lock every notifying transaction
    /// of the server takes, until its commit is flushed to disk: their
    /// commits run one at a time, each waiting for its own flush. So only a
    /// change to configuration notifies in its own commit (no replica may
    /// commit one unheard, since they would keep what it replaced). The other
    /// signals reach this replica's waiters at once and the other replicas
    /// through the outbox, which gathers those of many commits into one
    /// notification (see `relay`). A replica that dies before its outbox is
    /// sent costs the others a late wake-up (their workers look again within
    /// a second, a `?wait` within 2 s), never a wrong answer.
    fn commit(&mut self, signals: Vec<Signal>) -> DbResult<()> {
        if self.begin_pending {
            // No statement means no transaction to commit.
            let Some((sql, args)) = self.deferred.pop() else { return Ok(()) };
            self.execute(&sql, &args)?;
        }
        let deferred = std::mem::take(&mut self.deferred);
        let (configuration, others): (Vec<Signal>, Vec<Signal>) = signals.into_iter().partition(|signal| *signal == Signal::Configuration);
        let end = format!("{}COMMIT", notifications(&configuration));
        self.connect()?;
        self.pipeline(false, &deferred, async |client: &Client| client.batch_execute(&end).await)?;
        if !others.is_empty() {
            self.state.signals.deliver(&others);
            self.state.outbox.post(&others);
        }
        Ok(())
    }

    fn parameters(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        args.iter().map(|arg| arg as &(dyn ToSql + Sync)).collect()
    }

    /// Runs one statement, after the transaction's `BEGIN` and its deferred
    /// statements when those are still to be sent: all go in one round trip.
    fn run<T>(&mut self, sql: &str, statement: impl AsyncFn(&Client, &Statement) -> Result<T, tokio_postgres::Error>) -> DbResult<T> {
        let begin = std::mem::take(&mut self.begin_pending);
        let retry = std::mem::take(&mut self.first_statement);
        let deferred = std::mem::take(&mut self.deferred);
        let once = |session: &mut Self| {
            session.connect()?;
            let prepared = session.prepare(sql)?;
            session.pipeline(begin, &deferred, async |client: &Client| statement(client, &prepared).await)
        };
        match once(self) {
            // A connection that died idle (the server restarted) fails its
            // first statement; nothing ran, so it runs again on a new one.
            Err(DbError::Unavailable(reason)) if retry => {
                tracing::debug!(%reason, "a database connection was lost while idle; connecting again");
                // Its transaction, if its BEGIN went out, was lost with it.
                self.in_transaction = false;
                once(self)
            }
            result => result,
        }
    }

    /// `sql` prepared on the connection `connect` made, once for the
    /// connection's life. Never on another: a statement prepared on a
    /// connection cannot run on the next one.
    fn prepare(&mut self, sql: &str) -> DbResult<Statement> {
        if let Some(prepared) = self.statements.get(sql) {
            return Ok(prepared.clone());
        }
        let client = self.client.as_ref().ok_or_else(lost)?;
        let prepared = self.runtime.block_on(client.prepare(sql)).map_err(|error| self.failed(error))?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// Sends `BEGIN` when `begin`, the deferred statements, then `last`, one
    /// after another without waiting (see `pipelined`). The answer is the
    /// first failure among them, or `last`'s.
    fn pipeline<T>(
        &mut self,
        begin: bool,
        deferred: &[(String, Vec<Value>)],
        last: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> DbResult<T> {
        let statements = deferred.iter().map(|(sql, _)| self.prepare(sql)).collect::<DbResult<Vec<_>>>()?;
        self.in_transaction |= begin;
        let client = self.client.as_ref().ok_or_else(lost)?;
        let result = self.runtime.block_on(async {
            let mut ahead: Vec<SentAhead<'_>> = Vec::new();
            if begin {
                ahead.push(Box::pin(client.batch_execute("BEGIN")));
            }
            for (statement, (_, args)) in statements.iter().zip(deferred) {
                ahead.push(Box::pin(async move { client.execute(statement, &Self::parameters(args)).await.map(drop) }));
            }
            pipelined(ahead, last(client)).await
        });
        result.map_err(|error| self.failed(error))
    }

    /// The error, and the connection closed when it was lost.
    fn failed(&mut self, error: tokio_postgres::Error) -> DbError {
        let error = failure(error);
        if matches!(error, DbError::Unavailable(_)) {
            self.disconnect();
        }
        error
    }

    /// Keeps a statement to send with the transaction's next one.
    pub(super) fn execute_later(&mut self, sql: &str, args: &[Value]) {
        self.deferred.push((sql.to_owned(), args.to_vec()));
    }

    pub(super) fn execute(&mut self, sql: &str, args: &[Value]) -> DbResult<u64> {
        self.run(sql, async |client: &Client, statement: &Statement| client.execute(statement, &Self::parameters(args)).await)
    }

    pub(super) fn query(&mut self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
        let rows = self.run(sql, async |client: &Client, statement: &Statement| client.query(statement, &Self::parameters(args)).await)?;
        rows.iter().map(row).collect()
    }
}

/// Signals committed on this replica that the other replicas have yet to
/// hear of. The listener's connection sends what has gathered in one
/// notification at a time, so under load one carries the signals of many
/// commits, and few transactions take the server's notification lock.
#[derive(Default)]
struct Outbox {
    pending: Mutex<HashSet<Signal>>,
    posted: Notify,
    /// Signals were taken and are not sent yet.
    sending: AtomicBool,
}

impl Outbox {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<Signal>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn post(&self, signals: &[Signal]) {
        self.keep(signals);
        self.posted.notify_one();
    }

    /// Keeps signals for the next send, without asking for one.
    fn keep(&self, signals: &[Signal]) {
        let mut pending = self.pending();
        for signal in signals {
            if pending.len() < OUTBOX_LIMIT || !matches!(signal, Signal::Execution(_)) {
                pending.insert(*signal);
            }
        }
    }

    fn take(&self) -> Vec<Signal> {
        let mut pending = self.pending();
        self.sending.store(!pending.is_empty(), Ordering::SeqCst);
        pending.drain().collect()
    }

    /// The taken signals are sent.
    fn settled(&self) {
        self.sending.store(false, Ordering::SeqCst);
    }

    /// The taken signals could not be sent: they wait for the next send.
    fn unsent(&self, signals: &[Signal]) {
        self.keep(signals);
        self.settled();
    }

    /// Nothing waits to be sent, and nothing is being sent.
    fn is_empty(&self) -> bool {
        let pending = self.pending();
        pending.is_empty() && !self.sending.load(Ordering::SeqCst)
    }
}

/// `SELECT pg_notify(…);` statements carrying these signals.
fn notifications(signals: &[Signal]) -> String {
    signals
        .chunks(SIGNALS_PER_NOTIFY)
        .map(|chunk| {
            // The payload is ids and letters of our own making: no quote can be in it.
            let payload = chunk.iter().map(|signal| signal.encode()).collect::<Vec<_>>().join(",");
            format!("SELECT pg_notify('{CHANNEL}', '{payload}'); ")
        })
        .collect()
}

/// Polls the requests in order, then `last`, until all are answered:
/// tokio-postgres writes a request as it is first polled, so they reach the
/// server in this order, together. The first failure ends it, and nothing
/// after a failed request is sent: one that failed before reaching the
/// server (its parameters would not encode) aborted no transaction, and a
/// `COMMIT` sent after it would commit the rest.
async fn pipelined<T>(
    ahead: Vec<SentAhead<'_>>,
    last: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let mut ahead: Vec<_> = ahead.into_iter().map(futures_util::future::maybe_done).collect();
    let mut last = std::pin::pin!(futures_util::future::maybe_done(last));
    std::future::poll_fn(|cx| {
        let mut answered = true;
        for request in &mut ahead {
            let mut request = Pin::new(request);
            answered &= request.as_mut().poll(cx).is_ready();
            if let Some(Err(_)) = request.as_mut().output_mut() {
                return Poll::Ready(request.take_output().expect("answered above"));
            }
        }
        if last.as_mut().poll(cx).is_ready() && answered { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await?;
    last.take_output().expect("answered above")
}

fn lost() -> DbError {
    DbError::Unavailable("no database connection".into())
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
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::DISK_FULL =>
        {
            DbError::Unavailable(text)
        }
        Some(_) => DbError::Internal(text),
        // No SQLSTATE: the connection itself failed.
        None => DbError::Unavailable(text),
    }
}

/// A failed connection's error on one line, with every part of the URL that
/// may appear in it hidden (the server quotes the role and the database it
/// refuses): any part may be a secret.
fn connect_failure(error: &tokio_postgres::Error, config: &tokio_postgres::Config) -> String {
    let quoted = [config.get_user(), config.get_dbname()].into_iter().flatten().map(|name| format!("\"{name}\""));
    let password = config.get_password().map(|password| String::from_utf8_lossy(password).into_owned());
    let hosts = config.get_hosts().iter().map(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    });
    let quoted = quoted.map(|part| (part, "\"***\""));
    let bare = password.into_iter().chain(hosts).map(|part| (part, "***"));
    quoted.chain(bare).filter(|(part, _)| !part.is_empty()).fold(one_line(error), |text, (part, hidden)| text.replace(&part, hidden))
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

async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
    // `IF NOT EXISTS` on a migrated database is no news worth a log line.
    client.batch_execute("SET client_min_messages = warning").await?;
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

/// Receives every replica's signals and sends this one's for as long as the
/// replica runs, reconnecting after a failure; on each (re)connection
/// everyone looks again, since what was committed in between sent its
/// notifications to no one.
async fn listen(config: tokio_postgres::Config, signals: Arc<Signals>, outbox: Arc<Outbox>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (forward, mut received) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(notification)) => {
                                if forward.send((notification.process_id(), notification.payload().to_owned())).is_err() {
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
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    client.query_one("SELECT pg_backend_pid()", &[]).await?.try_get::<_, i32>(0)
                };
                match listening.await {
                    Ok(own) => {
                        signals.wake_all();
                        relay(&client, own, &mut received, &signals, &outbox).await;
                    }
                    Err(error) => tracing::warn!(error = %one_line(&error), "cannot LISTEN on PostgreSQL"),
                }
                driver.abort();
            }
            Err(error) => tracing::warn!(error = %connect_failure(&error, &config), "the PostgreSQL listener cannot connect; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Until the listener's connection fails: delivers here what the other
/// replicas notify, and notifies them of what gathered in the outbox, one
/// transaction at a time. It does not wait for its flush, so it holds the
/// server's notification lock only while it commits in memory. Signals
/// that could not be sent are kept for the next send, which the next
/// commit asks for (or the next connection, at once): meanwhile the other
/// replicas' workers and waiters find the changes at their rechecks.
async fn relay(
    client: &Client,
    own: i32,
    received: &mut tokio::sync::mpsc::UnboundedReceiver<(i32, String)>,
    signals: &Signals,
    outbox: &Outbox,
) {
    let inbound = async {
        while let Some((sender, payload)) = received.recv().await {
            // This replica's own signals reached its waiters as they committed.
            if sender != own {
                let decoded: Vec<Signal> = payload.split(',').filter_map(Signal::decode).collect();
                signals.deliver(&decoded);
            }
        }
    };
    let outbound = async {
        // Whatever a lost connection left in the outbox goes first.
        outbox.posted.notify_one();
        loop {
            outbox.posted.notified().await;
            let pending = outbox.take();
            if pending.is_empty() {
                continue;
            }
            let sql = format!("BEGIN; SET LOCAL synchronous_commit = off; {}COMMIT", notifications(&pending));
            match tokio::time::timeout(NOTIFY_TIMEOUT, client.batch_execute(&sql)).await {
                Ok(Ok(())) => outbox.settled(),
                // The server refused it (a full notification queue, a read-only server): the connection stays.
                Ok(Err(error)) if error.code().is_some() && !client.is_closed() => {
                    outbox.unsent(&pending);
                    tracing::warn!(error = %one_line(&error), "cannot notify the other replicas");
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                failed => {
                    outbox.unsent(&pending);
                    let error = match failed {
                        Ok(Err(error)) => one_line(&error),
                        _ => format!("no answer within {} s", NOTIFY_TIMEOUT.as_secs()),
                    };
                    tracing::warn!(%error, "cannot notify the other replicas; connecting again");
                    return;
                }
            }
        }
    };
    // Side by side, so a notification on its way out holds up none coming in.
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_sends_each_signal_once_however_many_commits_posted_it() {
        let outbox = Outbox::default();
        let execution = Signal::Execution(uuid::Uuid::now_v7());
        outbox.post(&[Signal::Jobs, execution]);
        outbox.post(&[Signal::Jobs, Signal::Events]);
        let mut taken = outbox.take();
        taken.sort_by_key(|signal| signal.encode());
        let mut expected = vec![Signal::Jobs, execution, Signal::Events];
        expected.sort_by_key(|signal| signal.encode());
        assert_eq!(taken, expected);
        assert!(outbox.take().is_empty());
    }

    #[test]
    fn the_outbox_is_empty_only_once_what_it_gave_out_is_sent() {
        let outbox = Outbox::default();
        assert!(outbox.is_empty());
        outbox.post(&[Signal::Jobs]);
        let taken = outbox.take();
        assert!(!outbox.is_empty(), "taken, not sent yet");
        outbox.unsent(&taken);
        assert!(!outbox.is_empty(), "kept for the next send");
        assert_eq!(outbox.take(), [Signal::Jobs]);
        outbox.settled();
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_executions_but_never_a_wake_up_of_the_workers() {
        let outbox = Outbox::default();
        let executions: Vec<Signal> = (0..OUTBOX_LIMIT + 5).map(|_| Signal::Execution(uuid::Uuid::now_v7())).collect();
        outbox.post(&executions);
        outbox.post(&[Signal::Jobs, Signal::Events]);
        let taken = outbox.take();
        assert_eq!(taken.len(), OUTBOX_LIMIT + 2);
        assert!(taken.contains(&Signal::Jobs) && taken.contains(&Signal::Events));
    }
}
