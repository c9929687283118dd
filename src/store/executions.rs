//! Executions: created once per call id or idempotency key, moved only
//! forward by compare-and-set, their timeline one row per status reached;
//! Meta's webhook events applied once each, whichever replica they reach.

use uuid::Uuid;

use super::db::{DbError, DbResult, ListQuery, Row, Tx, Value, args, batch, to_json};
use super::events;
use super::{
    EventParties, Executed, ExecutionError, ExecutionFilter, ExecutionRecord, FailureCode, IDEMPOTENCY_WINDOW_SECONDS, NewExecution, Page,
    Signal, Store, StoreResult, TimelineEntry, WebhookEvent,
};
use crate::clock;
use crate::domain::{ExecutionStatus, TenantId};

/// Most executions one pass of the expiry sweep ends.
const EXPIRE_BATCH: u32 = 500;

/// Statuses as an SQL list, `('a', 'b')`; their names are fixed words, never input.
pub(super) fn status_list(statuses: impl IntoIterator<Item = ExecutionStatus>) -> String {
    let names: Vec<String> = statuses.into_iter().map(|status| format!("'{}'", status.as_str())).collect();
    format!("({})", names.join(", "))
}

/// The one place an execution's status changes: a compare-and-set from the
/// statuses `next` may follow (and `only_if`, SQL over the row, when given),
/// setting `error` with it. A move appends its timeline row and its event,
/// ends the job of an execution that ended, and signals waiters. False when
/// nothing moved.
pub(super) fn advance(
    tx: &mut Tx<'_>,
    id: Uuid,
    next: ExecutionStatus,
    error: Option<&ExecutionError>,
    only_if: Option<&str>,
) -> DbResult<bool> {
    let allowed = ExecutionStatus::allowed_before(next);
    if allowed.is_empty() {
        return Ok(false);
    }
    if next.is_terminal() {
        lock_job(tx, id)?;
    }
    let now = clock::now();
    let condition = only_if.map(|sql| format!(" AND {sql}")).unwrap_or_default();
    let from = status_list(allowed);
    // An ended execution has no attempt open.
    let closing = if next.is_terminal() { ", attempt_open = FALSE" } else { "" };
    let moved = match error {
        Some(error) => tx.execute(
            &format!(
                "UPDATE executions SET status = $2, updated_at = $3, error = $4{closing} WHERE id = $1 AND status IN {from}{condition}"
            ),
            args![id, next.as_str(), now.as_str(), to_json(error)?],
        )?,
        None => tx.execute(
            &format!("UPDATE executions SET status = $2, updated_at = $3{closing} WHERE id = $1 AND status IN {from}{condition}"),
            args![id, next.as_str(), now.as_str()],
        )?,
    };
    if moved == 0 {
        return Ok(false);
    }
    tx.execute("INSERT INTO execution_events (execution_id, status, at) VALUES ($1, $2, $3)", args![id, next.as_str(), now.as_str()])?;
    events::executions_reached(tx, &[id], next, &now)?;
    if next.is_terminal() {
        tx.execute("DELETE FROM delivery_jobs WHERE execution_id = $1", args![id])?;
    }
    tx.signal(Signal::Execution(id));
    Ok(true)
}

/// `advance` for each execution the rows name in their first column, in id
/// order (each locks its job, and jobs are locked in id order); how many moved.
pub(super) fn advance_each(
    tx: &mut Tx<'_>,
    rows: Vec<Row>,
    next: ExecutionStatus,
    error: Option<&ExecutionError>,
    only_if: Option<&str>,
) -> DbResult<usize> {
    let mut ids = rows.iter().map(|row| row.uuid(0)).collect::<DbResult<Vec<Uuid>>>()?;
    ids.sort_unstable();
    let mut moved = 0;
    for id in ids {
        if advance(tx, id, next, error, only_if)? {
            moved += 1;
        }
    }
    Ok(moved)
}

/// `CASE` SQL giving the error an execution keeps once Meta shows it has the
/// message: what made its send wait or retry no longer holds, but an ended
/// execution keeps why it ended.
pub(super) fn error_once_sent() -> String {
    format!("CASE WHEN status IN {} THEN error ELSE NULL END", status_list(ExecutionStatus::ended()))
}

/// `CASE` SQL giving the status an execution has after a move to `next`:
/// `next` from the statuses the transition table allows, else its own.
pub(super) fn moved_to(next: ExecutionStatus) -> String {
    format!("CASE WHEN status IN {} THEN '{}' ELSE status END", status_list(ExecutionStatus::allowed_before(next)), next.as_str())
}

/// Appends `status` to the timeline of each of these executions that is in
/// it now and has not reached it before, with its event, and signals their
/// change. Runs after the statement that moved them, whose row locks it
/// relies on.
pub(super) fn record_events(tx: &mut Tx<'_>, ids: &[Uuid], status: ExecutionStatus) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let now = clock::now();
    let dialect = tx.dialect();
    let reached = tx.query(
        &format!(
            "INSERT INTO execution_events (execution_id, status, at) SELECT e.id, e.status, $2 FROM executions e \
             WHERE {} AND e.status = $1 \
             AND NOT EXISTS (SELECT 1 FROM execution_events ev WHERE ev.execution_id = e.id AND ev.status = $1) \
             RETURNING execution_id",
            dialect.among_batch("e.id", 3)
        ),
        &[Value::from(status.as_str()), Value::from(now.as_str()), batch(&ids)?],
    )?;
    let reached: Vec<Uuid> = reached.iter().map(|row| row.uuid(0)).collect::<DbResult<_>>()?;
    events::executions_reached(tx, &reached, status, &now)?;
    for id in ids {
        tx.signal(Signal::Execution(*id));
    }
    Ok(())
}

/// Locks the execution's job, if it has one. Every transaction that writes
/// both takes the job's row before the execution's, so none waits on
/// another in a circle.
pub(super) fn lock_job(tx: &mut Tx<'_>, id: Uuid) -> DbResult<Option<i64>> {
    let sql = format!("SELECT lease_token FROM delivery_jobs WHERE execution_id = $1{}", tx.dialect().for_update());
    tx.query_opt(&sql, args![id])?.map(|row| row.int(0)).transpose()
}

const EXECUTION_COLUMNS: &str = "e.id, e.action_id, e.call_id, e.recipient, e.status, e.mandatory, e.wamid, e.attempts, e.error, e.reply, \
     e.created_at, e.updated_at, e.reply_deadline, ev.status, ev.at";

/// Executions from rows of EXECUTION_COLUMNS, one row per timeline entry,
/// each execution's rows together and in order.
fn executions_from_rows(rows: &[Row]) -> DbResult<Vec<ExecutionRecord>> {
    let mut executions: Vec<ExecutionRecord> = Vec::new();
    for row in rows {
        let id = row.uuid(0)?;
        if executions.last().is_none_or(|last| last.execution_id != id) {
            let status = row.text(4)?;
            executions.push(ExecutionRecord {
                execution_id: id,
                action_id: row.uuid(1)?,
                call_id: row.opt_text(2)?,
                to: row.text(3)?,
                status: ExecutionStatus::parse(&status).ok_or_else(|| DbError::Internal(format!("unknown status {status}")))?,
                mandatory: row.boolean(5)?,
                wamid: row.opt_text(6)?,
                attempts: row.count(7)?,
                error: row.opt_json(8)?,
                reply: row.opt_json(9)?,
                timeline: Vec::new(),
                created_at: row.text(10)?,
                updated_at: row.text(11)?,
                reply_deadline: row.opt_text(12)?,
            });
        }
        if let (Some(status), Some(at)) = (row.opt_text(13)?, row.opt_text(14)?) {
            let status = ExecutionStatus::parse(&status).ok_or_else(|| DbError::Internal(format!("unknown status {status}")))?;
            executions.last_mut().expect("pushed above").timeline.push(TimelineEntry { status, at });
        }
    }
    Ok(executions)
}

/// The execution with its timeline, in one statement (one snapshot).
fn select_execution(tx: &mut Tx<'_>, tenant: &str, id: Uuid) -> DbResult<Option<ExecutionRecord>> {
    Ok(select_executions(tx, tenant, &[id])?.pop())
}

/// Those of these executions that are the tenant's, with their timelines, in one statement.
pub(super) fn select_executions(tx: &mut Tx<'_>, tenant: &str, ids: &[Uuid]) -> DbResult<Vec<ExecutionRecord>> {
    let dialect = tx.dialect();
    let rows = tx.query(
        &format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions e LEFT JOIN execution_events ev ON ev.execution_id = e.id \
             WHERE {} = $1 AND {} ORDER BY e.id, ev.id",
            dialect.filter_only("e.tenant"),
            dialect.among_batch("e.id", 2)
        ),
        &[Value::from(tenant), batch(&ids)?],
    )?;
    executions_from_rows(&rows)
}

/// How a repeated execute was recognised, and the execution it repeats.
enum Repeat {
    Key(Uuid),
    Call(Uuid),
}

impl Repeat {
    fn execution_id(&self) -> Uuid {
        match self {
            Repeat::Key(id) | Repeat::Call(id) => *id,
        }
    }
}

/// The execution this idempotency key (within its 24 h) or this call id (for
/// this action) already started; the key first, as `create_execution` claims it.
fn select_existing(tx: &mut Tx<'_>, tenant: &str, action_id: Uuid, call_id: Option<&str>, key: Option<&str>) -> DbResult<Option<Repeat>> {
    if let Some(key) = key
        && let Some(row) = tx.query_opt(
            "SELECT execution_id FROM execution_keys WHERE tenant = $1 AND key = $2 AND created_at > $3",
            args![tenant, key, clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)],
        )?
    {
        return row.uuid(0).map(|id| Some(Repeat::Key(id)));
    }
    match call_id {
        Some(call_id) => Ok(call_execution(tx, tenant, action_id, call_id)?.map(Repeat::Call)),
        None => Ok(None),
    }
}

/// The execution of this action that has this call id, if any.
fn call_execution(tx: &mut Tx<'_>, tenant: &str, action_id: Uuid, call_id: &str) -> DbResult<Option<Uuid>> {
    tx.query_opt("SELECT id FROM executions WHERE tenant = $1 AND action_id = $2 AND call_id = $3", args![tenant, action_id, call_id])?
        .map(|row| row.uuid(0))
        .transpose()
}

/// Binds `key` to execution `id` unless a live one holds it; `None` when
/// bound, else the execution that holds it. A key past its 24 h starts anew.
fn claim_key(tx: &mut Tx<'_>, tenant: &str, key: &str, id: Uuid, now: &str) -> DbResult<Option<Uuid>> {
    let claimed = tx.query_opt(
        "INSERT INTO execution_keys (tenant, key, execution_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant, key) DO UPDATE SET execution_id = excluded.execution_id, created_at = excluded.created_at \
         WHERE execution_keys.created_at <= $5 RETURNING execution_id",
        args![tenant, key, id, now, clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)],
    )?;
    if claimed.is_some() {
        return Ok(None);
    }
    let holder = key_holder(tx, tenant, key)?;
    // A key bound late to an old execution can outlive it (retention deletes
    // executions, not keys): then it starts anew. Read by a statement of its
    // own, which sees what a racing claim committed, and taken over only
    // while it still names the execution found gone.
    if tx.query_opt("SELECT 1 FROM executions WHERE id = $1", args![holder])?.is_none() {
        let taken = tx.execute(
            "UPDATE execution_keys SET execution_id = $3, created_at = $4 WHERE tenant = $1 AND key = $2 AND execution_id = $5",
            args![tenant, key, id, now, holder],
        )?;
        return if taken == 1 { Ok(None) } else { key_holder(tx, tenant, key).map(Some) };
    }
    Ok(Some(holder))
}

fn key_holder(tx: &mut Tx<'_>, tenant: &str, key: &str) -> DbResult<Uuid> {
    tx.query_one("SELECT execution_id FROM execution_keys WHERE tenant = $1 AND key = $2", args![tenant, key])?.uuid(0)
}

fn existing(tx: &mut Tx<'_>, tenant: &str, id: Uuid) -> DbResult<Executed> {
    select_execution(tx, tenant, id)?.map(Executed::Existing).ok_or_else(|| DbError::Internal(format!("execution {id} vanished")))
}

impl Store {
    /// The execution that already has this idempotency key (used in the last
    /// 24 h) or this call id (for this action), if any, in one read; a key
    /// new to a repeat of the call is then bound to its execution (a write).
    pub async fn existing_execution(
        &self,
        tenant: &TenantId,
        action_id: Uuid,
        call_id: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> StoreResult<Option<ExecutionRecord>> {
        // Nothing to find, so no trip to the store (on PostgreSQL, a session thread and back).
        if call_id.is_none() && idempotency_key.is_none() {
            return Ok(None);
        }
        let (tenant, call_id, key) = (tenant.as_str().to_owned(), call_id.map(str::to_owned), idempotency_key.map(str::to_owned));
        let found = {
            let (tenant, key) = (tenant.clone(), key.clone());
            self.lookup(move |tx| match select_existing(tx, &tenant, action_id, call_id.as_deref(), key.as_deref())? {
                Some(repeat) => Ok(select_execution(tx, &tenant, repeat.execution_id())?.map(|execution| (repeat, execution))),
                None => Ok(None),
            })
            .await?
        };
        match (found, key) {
            // A key new to a repeat of the call is bound to the call's
            // execution, as `create_execution` binds it: retried alone, it
            // answers the same execution and sends nothing.
            (Some((Repeat::Call(id), _)), Some(key)) => {
                self.write(move |tx| {
                    let holder = claim_key(tx, &tenant, &key, id, &clock::now())?.unwrap_or(id);
                    select_execution(tx, &tenant, holder)
                })
                .await
            }
            (found, _) => Ok(found.map(|(_, execution)| execution)),
        }
    }

    /// When each of these executions last changed (those that exist).
    pub async fn execution_versions(&self, ids: Vec<Uuid>) -> StoreResult<Vec<(Uuid, String)>> {
        self.read(move |tx| {
            let dialect = tx.dialect();
            let sql = format!("SELECT id, updated_at FROM executions WHERE {}", dialect.among_batch("id", 1));
            tx.query(&sql, &[batch(&ids)?])?.iter().map(|row| Ok((row.uuid(0)?, row.text(1)?))).collect()
        })
        .await
    }

    /// Stores the execution and its delivery job in one transaction, or
    /// returns the execution that already has this call id or idempotency
    /// key. Both are claimed by conditional inserts, so requests racing on
    /// any number of replicas create one execution.
    pub async fn create_execution(&self, tenant: &TenantId, execution: NewExecution) -> StoreResult<Executed> {
        let tenant = tenant.as_str().to_owned();
        let payload = execution.payload.to_string();
        self.write(move |tx| {
            let now = clock::now();
            let id = execution.id;
            if let Some(key) = &execution.idempotency_key
                && let Some(first) = claim_key(tx, &tenant, key, id, &now)?
            {
                return existing(tx, &tenant, first);
            }
            let deadline = execution
                .mandatory
                .then(|| clock::format(time::OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(execution.reply_timeout))));
            // Stored only while the action is: its DELETE, which cancels its
            // executions, waits for this one to commit or makes it find none.
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO executions (id, tenant, action_id, call_id, recipient, sender, template_name, language, \
                     mandatory, payload, status, reply_timeout, reply_deadline, created_at, updated_at) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13, $13 \
                     WHERE EXISTS (SELECT 1 FROM actions WHERE tenant = $2 AND id = $3{}) ON CONFLICT DO NOTHING",
                    tx.dialect().for_key_share()
                ),
                args![
                    id,
                    tenant.as_str(),
                    execution.action_id,
                    execution.call_id.clone(),
                    execution.to.as_str(),
                    execution.sender.as_str(),
                    execution.template_name.as_str(),
                    execution.language.as_str(),
                    execution.mandatory,
                    payload.as_str(),
                    execution.reply_timeout,
                    deadline.clone(),
                    now.as_str()
                ],
            )?;
            if inserted == 0 {
                // The call id was executed before: this request, and its key, answer with that execution.
                let call_id = execution.call_id.as_deref().unwrap_or_default();
                // Else the action is gone (a key claimed above names no
                // execution, and is taken over as one whose execution was pruned).
                let Some(first) = call_execution(tx, &tenant, execution.action_id, call_id)? else { return Ok(Executed::ActionGone) };
                if let Some(key) = &execution.idempotency_key {
                    tx.execute(
                        "UPDATE execution_keys SET execution_id = $3 WHERE tenant = $1 AND key = $2",
                        args![tenant.as_str(), key.as_str(), first],
                    )?;
                }
                return existing(tx, &tenant, first);
            }
            let queued = ExecutionStatus::Queued.as_str();
            tx.execute_later(
                "INSERT INTO execution_events (execution_id, status, at) VALUES ($1, $2, $3)",
                args![id, queued, now.as_str()],
            )?;
            tx.execute_later(
                "INSERT INTO delivery_jobs (execution_id, tenant, sender, due_at) VALUES ($1, $2, $3, $4)",
                args![id, tenant.as_str(), execution.sender.as_str(), clock::now_ms()],
            )?;
            tx.signal(Signal::Jobs);
            Ok(Executed::New(ExecutionRecord {
                execution_id: id,
                action_id: execution.action_id,
                call_id: execution.call_id.clone(),
                to: execution.to.clone(),
                status: ExecutionStatus::Queued,
                mandatory: execution.mandatory,
                wamid: None,
                attempts: 0,
                error: None,
                reply: None,
                timeline: vec![TimelineEntry { status: ExecutionStatus::Queued, at: now.clone() }],
                created_at: now.clone(),
                updated_at: now.clone(),
                reply_deadline: deadline,
            }))
        })
        .await
    }

    pub async fn get_execution(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ExecutionRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.lookup(move |tx| select_execution(tx, &tenant, id)).await
    }

    pub async fn list_executions(
        &self,
        tenant: &TenantId,
        filter: ExecutionFilter<'_>,
        page: Page,
    ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
        let tenant = tenant.as_str().to_owned();
        let action_id = filter.action_id;
        let call_id = filter.call_id.map(str::to_owned);
        let status = filter.status.map(|s| s.as_str());
        self.read(move |tx| {
            let query =
                ListQuery::for_tenant(&tenant).filter("action_id", action_id).filter("call_id", call_id.clone()).filter("status", status);
            let (limit, args) = query.page(page);
            let [count, rows] = execution_list_sql(&query.condition(), &limit);
            let total = tx.query_one(&count, query.args())?;
            let rows = tx.query(&rows, &args)?;
            Ok((executions_from_rows(&rows)?, total.int(0)? as u64))
        })
        .await
    }

    /// Applies Meta's webhook events, each once however many copies reach
    /// however many replicas: an event's key is claimed by a conditional
    /// insert in the transaction that applies it. Each event has its own
    /// transaction, so two deliveries of one batch in different orders never
    /// hold each other's keys.
    pub async fn apply_webhook_events(&self, events: Vec<WebhookEvent>) -> StoreResult<()> {
        for event in events {
            let changes_templates = matches!(event, WebhookEvent::TemplateStatus { .. });
            let apply = move |tx: &mut Tx<'_>| {
                let key = event.key();
                let fresh = tx.execute(
                    "INSERT INTO webhook_events (key, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    args![key, clock::now()],
                )?;
                // An event that matched nothing is not marked seen: Meta's resend
                // may find the execution its first copy arrived too early for.
                if fresh == 1 && !apply_event(tx, &event)? {
                    tx.execute("DELETE FROM webhook_events WHERE key = $1", args![key])?;
                }
                Ok(())
            };
            if changes_templates { self.write_configuration(apply).await? } else { self.write(apply).await? }
        }
        Ok(())
    }

    /// Expires mandatory executions whose reply deadline has passed; how many.
    pub async fn expire_due(&self) -> StoreResult<usize> {
        self.write(move |tx| {
            let ended = status_list(ExecutionStatus::ended());
            let due = tx.query(
                &format!(
                    "SELECT id FROM executions WHERE reply_deadline <= $1 AND reply_deadline IS NOT NULL AND status NOT IN {ended} LIMIT $2"
                ),
                args![clock::now(), EXPIRE_BATCH],
            )?;
            advance_each(tx, due, ExecutionStatus::Expired, None, None)
        })
        .await
    }
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

/// What an event of Meta's names.
enum Named {
    /// An execution whose parties the event's are.
    Execution(Uuid),
    /// An execution of the event's sender whose send Meta has not answered
    /// yet, from a person other than the number it was sent to: the answer
    /// tells whether that is the WhatsApp id Meta gives the number.
    Unanswered(Uuid),
    Nothing,
}

/// The execution an event of Meta's names, by its wamid or else the
/// execution id the send carried (biz_opaque_callback_data, a quick-reply
/// payload), if the event's parties are the execution's: its sender, and
/// its recipient by the number it was sent to or by the `wa_id` Meta gave
/// it. An event that names an execution and fails that check is logged and
/// ignored.
fn find_execution(tx: &mut Tx<'_>, wamid: Option<&str>, hint: Option<Uuid>, parties: &EventParties) -> DbResult<Named> {
    const COLUMNS: &str = "SELECT id, sender, recipient, wa_id, wamid FROM executions";
    let mut found = match wamid {
        Some(wamid) => tx.query_opt(&format!("{COLUMNS} WHERE wamid = $1"), args![wamid])?,
        None => None,
    };
    if found.is_none()
        && let Some(hint) = hint
    {
        found = tx.query_opt(&format!("{COLUMNS} WHERE id = $1"), args![hint])?;
    }
    let Some(row) = found else { return Ok(Named::Nothing) };
    let id = row.uuid(0)?;
    let person = parties.person.as_str();
    let (sender, wa_id) = (row.text(1)?, row.opt_str(3)?);
    if sender == parties.phone_number_id && (row.text(2)? == person || wa_id == Some(person)) {
        return Ok(Named::Execution(id));
    }
    if sender == parties.phone_number_id && wa_id.is_none() && row.opt_str(4)?.is_none() {
        return Ok(Named::Unanswered(id));
    }
    tracing::warn!(execution = %id, phone_number_id = %parties.phone_number_id, "a Meta event names an execution of another sender or recipient; ignored");
    Ok(Named::Nothing)
}

/// Keeps an event for an execution whose send is not answered yet, until
/// the answer names the WhatsApp id it may come from (`apply_parked`).
fn park(tx: &mut Tx<'_>, id: Uuid, event: &WebhookEvent) -> DbResult<bool> {
    tx.execute(
        "INSERT INTO parked_webhook_events (key, execution_id, event, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        args![event.key(), id, to_json(event)?, clock::now()],
    )?;
    Ok(true)
}

/// Applies the events kept for these executions (`park`), now that their
/// sends' answers named the WhatsApp ids Meta gives their recipients.
pub(super) fn apply_parked(tx: &mut Tx<'_>, ids: &[Uuid]) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("DELETE FROM parked_webhook_events WHERE {} RETURNING event", tx.dialect().among_batch("execution_id", 1));
    for row in tx.query(&sql, &[batch(&ids)?])? {
        apply_event(tx, &row.json::<WebhookEvent>(0)?)?;
    }
    Ok(())
}

/// Applies one event; false when it concerns nothing actiond knows (yet).
fn apply_event(tx: &mut Tx<'_>, event: &WebhookEvent) -> DbResult<bool> {
    match event {
        WebhookEvent::Status { parties, wamid, execution_hint, status, error, .. } => {
            let id = match find_execution(tx, Some(wamid), *execution_hint, parties)? {
                Named::Execution(id) => id,
                Named::Unanswered(id) => return park(tx, id, event),
                Named::Nothing => return Ok(false),
            };
            lock_job(tx, id)?;
            // A status for a send whose answer was lost or is not in yet: Meta
            // has the message, so its wamid is adopted and the job, waiting to
            // reconcile, is done (a late answer still records its wa_id).
            let adopted = tx.execute(
                &format!(
                    "UPDATE executions SET wamid = $2, error = {}, attempt_open = FALSE, updated_at = $3 \
                     WHERE id = $1 AND wamid IS NULL AND NOT EXISTS (SELECT 1 FROM executions other WHERE other.wamid = $2)",
                    error_once_sent()
                ),
                args![id, wamid.as_str(), clock::now()],
            )?;
            if adopted > 0 {
                tx.execute("DELETE FROM delivery_jobs WHERE execution_id = $1", args![id])?;
                tx.signal(Signal::Execution(id));
            }
            advance(tx, id, *status, error.as_ref(), None)?;
        }
        WebhookEvent::Reply { parties, context_wamid, execution_hint, reply, .. } => {
            let id = match find_execution(tx, context_wamid.as_deref(), *execution_hint, parties)? {
                Named::Execution(id) => id,
                Named::Unanswered(id) => return park(tx, id, event),
                Named::Nothing => return Ok(false),
            };
            let recorded = tx.query_opt(
                "UPDATE executions SET reply = $2, updated_at = $3 WHERE id = $1 AND reply IS NULL RETURNING mandatory",
                args![id, to_json(reply)?, clock::now()],
            )?;
            if let Some(row) = recorded {
                tx.signal(Signal::Execution(id));
                if row.boolean(0)? {
                    advance(tx, id, ExecutionStatus::Replied, None, None)?;
                }
            }
        }
        WebhookEvent::TemplateStatus { waba_id, name, language, event, reason, .. } => {
            let Some(status) = template_status_after(event) else { return Ok(true) };
            // Counted, and the count kept on the rows it changes, so that a sync
            // whose Graph read may predate this change keeps it (`replace_templates`).
            tx.execute("UPDATE senders SET template_changes = template_changes + 1 WHERE waba_id = $1", args![waba_id.as_str()])?;
            let changed = tx.query(
                "UPDATE templates SET status = $4, \
                 status_change = (SELECT s.template_changes FROM senders s WHERE s.phone_number_id = templates.phone_number_id) \
                 WHERE name = $2 AND language = $3 AND status <> $4 \
                 AND phone_number_id IN (SELECT phone_number_id FROM senders WHERE waba_id = $1) RETURNING tenant, phone_number_id",
                args![waba_id.as_str(), name.as_str(), language.as_str(), status],
            )?;
            for row in changed {
                let (tenant, sender) = (row.text(0)?, row.text(1)?);
                events::template_status_changed(tx, &tenant, &sender, name, language, status, reason.as_deref())?;
            }
            if status == "APPROVED" {
                return Ok(true);
            }
            // Sends not yet made would fail at Meta (132015/132016): stop them now.
            // One in flight is left to Meta's answer.
            let pending = tx.query(
                "SELECT e.id FROM executions e JOIN delivery_jobs j ON j.execution_id = e.id \
                 WHERE e.template_name = $2 AND e.language = $3 AND e.wamid IS NULL AND e.attempt_open = FALSE \
                 AND e.sender IN (SELECT phone_number_id FROM senders WHERE waba_id = $1)",
                args![waba_id.as_str(), name.as_str(), language.as_str()],
            )?;
            let message = format!("template '{name}' ({language}) became {status} before the message was sent");
            let error = ExecutionError::new(FailureCode::TemplateNotApproved, message, None);
            advance_each(tx, pending, ExecutionStatus::Failed, Some(&error), Some("attempt_open = FALSE AND wamid IS NULL"))?;
        }
    }
    Ok(true)
}

/// The execution list's statements for a `ListQuery`'s condition and page:
/// its count, and the page's executions with their events.
pub(super) fn execution_list_sql(condition: &str, limit: &str) -> [String; 2] {
    [
        format!("SELECT COUNT(*) FROM executions WHERE {condition}"),
        format!(
            "SELECT {EXECUTION_COLUMNS} FROM (SELECT * FROM executions WHERE {condition} ORDER BY created_at DESC, id DESC {limit}) e \
             LEFT JOIN execution_events ev ON ev.execution_id = e.id ORDER BY e.created_at DESC, e.id DESC, ev.id"
        ),
    ]
}
