//! Event endpoints and their outbox. An event is written, one delivery row
//! per subscribed endpoint, in the transaction of the change it reports, so
//! none is lost and none invented. Deliveries are leased like delivery jobs:
//! a claim skips rows another replica is claiming, every later write
//! presents the lease's token, and a dead replica's lease runs out.

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::db::{DbError, DbResult, Dialect, ListQuery, Row, Tx, args, batch, to_json};
use super::executions::select_executions;
use super::{Page, Signal, Store, StoreResult};
use crate::clock;
use crate::domain::{ExecutionStatus, TenantId};
use crate::events::{EventSettings, EventType};

/// An event endpoint as the API shows it; its secret never is, but on
/// creation and rotation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointRecord {
    pub id: Uuid,
    pub url: String,
    /// The event types sent to it; `null` for every type.
    #[schema(value_type = Option<Vec<EventType>>)]
    pub events: Option<Vec<String>>,
    pub description: String,
    /// A disabled endpoint is sent nothing; its undelivered events wait for it to be enabled.
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

pub struct NewEndpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Option<Vec<EventType>>,
    pub description: String,
    pub sealed_secret: Vec<u8>,
}

/// The fields a PATCH gives; `events: Some(None)` subscribes to every type.
#[derive(Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Option<Vec<EventType>>>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
}

/// One delivery attempt, as the attempts list shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    pub kind: String,
    /// From 1.
    pub attempt: u32,
    /// The endpoint's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
    /// When the next attempt is due, while one is scheduled after this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// A delivery the dispatcher holds a lease on, with what it takes to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub lease_token: i64,
    pub event_id: String,
    pub endpoint_id: Uuid,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub url: String,
    /// The current secret, then the replaced one while it still signs.
    pub sealed_secrets: Vec<Vec<u8>>,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    Delivered { status_code: u16 },
    Failed { status_code: Option<u16>, error: String },
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptRecorded {
    Delivered,
    Retrying,
    /// The last attempt failed: the event is marked failed.
    GaveUp,
    /// Another replica took the delivery over meanwhile: nothing written.
    LeaseLost,
}

const ENDPOINT_COLUMNS: &str = "id, url, events, description, disabled, created_at, updated_at";

fn endpoint_from_row(row: &Row) -> DbResult<EndpointRecord> {
    let events = row.opt_str(2)?.map(|list| list.split(',').filter(|kind| !kind.is_empty()).map(str::to_owned).collect());
    Ok(EndpointRecord {
        id: row.uuid(0)?,
        url: row.text(1)?,
        events,
        description: row.text(3)?,
        disabled: row.boolean(4)?,
        created_at: row.text(5)?,
        updated_at: row.text(6)?,
    })
}

/// The stored form of a filter, `,a,b,`, that `LIKE '%,a,%'` matches.
fn stored_filter(events: &Option<Vec<EventType>>) -> Option<String> {
    events.as_ref().map(|kinds| {
        let names: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        format!(",{},", names.join(","))
    })
}

fn select_endpoint(tx: &mut Tx<'_>, tenant: &str, id: Uuid) -> DbResult<Option<EndpointRecord>> {
    tx.query_opt(&format!("SELECT {ENDPOINT_COLUMNS} FROM event_endpoints WHERE tenant = $1 AND id = $2"), args![tenant, id])?
        .map(|row| endpoint_from_row(&row))
        .transpose()
}

/// The enabled endpoints of the tenant that take events of this type.
fn subscribed(tx: &mut Tx<'_>, tenant: &str, kind: EventType) -> DbResult<Vec<Uuid>> {
    // The pattern is written into the statement, not bound: SQLite prepares a
    // LIKE against a bound pattern again at every run, and this runs in every
    // batch of sends. Types are our own constants; they hold no `'` or `%`,
    // and their `_` can match no other stored type.
    let rows = tx.query(
        &format!(
            "SELECT id FROM event_endpoints WHERE tenant = $1 AND disabled = FALSE AND (events IS NULL OR events LIKE '%,{},%')",
            kind.as_str()
        ),
        args![tenant],
    )?;
    rows.iter().map(|row| row.uuid(0)).collect()
}

/// The columns a new delivery row sets, in the order both dialects' inserts give them.
const NEW_DELIVERY_COLUMNS: &str = "event_id, endpoint_id, type, body, state, attempts, due_at, lease_token, lease_until, created_at";

/// Stores an event of each of `datas` for these endpoints, `{type,
/// timestamp, data}` with a new id, due now. Returns the events' ids.
fn store_events<D: Serialize>(tx: &mut Tx<'_>, endpoints: &[Uuid], kind: EventType, at: &str, datas: &[D]) -> DbResult<Vec<Uuid>> {
    let events: Vec<(Uuid, String)> = datas
        .iter()
        .map(|data| Ok((Uuid::now_v7(), to_json(&json!({"type": kind.as_str(), "timestamp": at, "data": data}))?)))
        .collect::<DbResult<_>>()?;
    let (due, created) = (clock::now_ms(), clock::now());
    match tx.dialect() {
        // A statement per row, prepared once: SQLite has no round trips,
        // and one statement reading a JSON array of the rows measured slower.
        Dialect::Sqlite => {
            for (event_id, body) in &events {
                for endpoint in endpoints {
                    tx.execute(
                        &format!(
                            "INSERT INTO event_deliveries ({NEW_DELIVERY_COLUMNS}) VALUES ($1, $2, $3, $4, 'pending', 0, $5, 0, 0, $6)"
                        ),
                        args![*event_id, *endpoint, kind.as_str(), body.as_str(), due, created.as_str()],
                    )?;
                }
            }
        }
        // A statement per row would be a round trip per row inside the
        // change's transaction: one statement takes them all, as a JSON array.
        Dialect::Postgres => {
            let rows: Vec<(Uuid, Uuid, &str)> = events
                .iter()
                .flat_map(|(event_id, body)| endpoints.iter().map(move |endpoint| (*event_id, *endpoint, body.as_str())))
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO event_deliveries ({NEW_DELIVERY_COLUMNS}) \
                     SELECT r ->> 0, r ->> 1, $2, r ->> 2, 'pending', 0, $3, 0, 0, $4 FROM json_array_elements($1::json) r"
                ),
                args![to_json(&rows)?, kind.as_str(), due, created],
            )?;
        }
    }
    tx.signal(Signal::Events);
    Ok(events.into_iter().map(|(event_id, _)| event_id).collect())
}

/// Reports a change of the tenant's to the endpoints that take its type.
pub(super) fn emit(tx: &mut Tx<'_>, tenant: &str, kind: EventType, at: &str, data: &impl Serialize) -> DbResult<()> {
    let endpoints = subscribed(tx, tenant, kind)?;
    if !endpoints.is_empty() {
        store_events(tx, &endpoints, kind, at, std::slice::from_ref(data))?;
    }
    Ok(())
}

/// Reports that these executions reached `status` at `at`, each as it
/// stands in this transaction; a batch costs a look-up of its tenants and
/// one read of the executions of those that listen. Only the statuses voice
/// platforms are told of make an event.
pub(super) fn executions_reached(tx: &mut Tx<'_>, ids: &[Uuid], status: ExecutionStatus, at: &str) -> DbResult<()> {
    let Some(kind) = EventType::of_status(status) else { return Ok(()) };
    if ids.is_empty() {
        return Ok(());
    }
    let dialect = tx.dialect();
    let owners = tx.query(&format!("SELECT DISTINCT tenant FROM executions WHERE {}", dialect.among_batch("id", 1)), &[batch(&ids)?])?;
    for owner in owners {
        let tenant = owner.text(0)?;
        let endpoints = subscribed(tx, &tenant, kind)?;
        if endpoints.is_empty() {
            continue;
        }
        let executions = select_executions(tx, &tenant, ids)?;
        store_events(tx, &endpoints, kind, at, &executions)?;
    }
    Ok(())
}

/// Reports that Meta paused, disabled or rejected a template of the
/// tenant's sender, when an action of the tenant uses it.
pub(super) fn template_status_changed(
    tx: &mut Tx<'_>,
    tenant: &str,
    sender: &str,
    name: &str,
    language: &str,
    status: &str,
    reason: Option<&str>,
) -> DbResult<()> {
    if !crate::events::TEMPLATE_STATUSES_REPORTED.contains(&status) {
        return Ok(());
    }
    let dialect = tx.dialect();
    let rows = tx.query(
        &format!(
            "SELECT id FROM actions WHERE tenant = $1 AND {} = $2 AND {} = $3 AND {} = $4 ORDER BY created_at, id",
            dialect.json_text("webhook", "from"),
            dialect.json_text("webhook", "template_name"),
            dialect.json_text("webhook", "language_code")
        ),
        args![tenant, sender, name, language],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let actions: Vec<Uuid> = rows.iter().map(|row| row.uuid(0)).collect::<DbResult<_>>()?;
    let mut data = json!({"sender": sender, "name": name, "language": language, "status": status, "actions": actions});
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    emit(tx, tenant, EventType::TemplateStatusChanged, &clock::now(), &data)
}

/// Pauses a disabled endpoint's undelivered events, or resumes an enabled
/// one's, due now. Leases are left as they are: an attempt under way is
/// recorded by its lease, and a resumed event is not sent again beside it.
fn set_paused(tx: &mut Tx<'_>, id: Uuid, paused: bool) -> DbResult<()> {
    let (from, to) = if paused { ("pending", "paused") } else { ("paused", "pending") };
    let moved = tx.execute(
        "UPDATE event_deliveries SET state = $3, due_at = $4 WHERE endpoint_id = $1 AND state = $2",
        args![id, from, to, clock::now_ms()],
    )?;
    if moved > 0 && !paused {
        tx.signal(Signal::Events);
    }
    Ok(())
}

/// Whether the tenant's endpoint is disabled, its row locked until the
/// transaction ends so that enabling or disabling it waits (PostgreSQL);
/// `None` when there is no such endpoint.
fn lock_endpoint(tx: &mut Tx<'_>, tenant: &str, id: Uuid) -> DbResult<Option<bool>> {
    let sql = format!("SELECT disabled FROM event_endpoints WHERE tenant = $1 AND id = $2{}", tx.dialect().for_update());
    tx.query_opt(&sql, args![tenant, id])?.map(|row| row.boolean(0)).transpose()
}

impl Store {
    pub async fn create_endpoint(&self, tenant: &TenantId, endpoint: NewEndpoint) -> StoreResult<EndpointRecord> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO event_endpoints (id, tenant, url, events, description, disabled, sealed_secret, previous_until, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, FALSE, $6, 0, $7, $7)",
                args![
                    endpoint.id,
                    tenant.as_str(),
                    endpoint.url.as_str(),
                    stored_filter(&endpoint.events),
                    endpoint.description.as_str(),
                    &endpoint.sealed_secret,
                    clock::now()
                ],
            )?;
            select_endpoint(tx, &tenant, endpoint.id)?.ok_or_else(|| DbError::Internal("the endpoint just stored is gone".into()))
        })
        .await
    }

    pub async fn get_endpoint(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<EndpointRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |tx| select_endpoint(tx, &tenant, id)).await
    }

    /// The tenant's endpoints, newest first.
    pub async fn list_endpoints(&self, tenant: &TenantId, page: Page) -> StoreResult<(Vec<EndpointRecord>, u64)> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |tx| {
            let query = ListQuery::for_tenant(&tenant);
            let (limit, args) = query.page(page);
            let total = tx.query_one(&format!("SELECT COUNT(*) FROM event_endpoints WHERE {}", query.condition()), query.args())?;
            let rows = tx.query(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM event_endpoints WHERE {} ORDER BY created_at DESC, id DESC {limit}",
                    query.condition()
                ),
                &args,
            )?;
            Ok((rows.iter().map(endpoint_from_row).collect::<DbResult<_>>()?, total.int(0)? as u64))
        })
        .await
    }

    /// Applies the fields given; `None` when the tenant has no such endpoint.
    /// Disabling pauses the endpoint's undelivered events; enabling resumes
    /// them at once and forgets how long it had been failing.
    pub async fn update_endpoint(&self, tenant: &TenantId, id: Uuid, patch: EndpointPatch) -> StoreResult<Option<EndpointRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |tx| {
            let Some(was_disabled) = lock_endpoint(tx, &tenant, id)? else { return Ok(None) };
            let events = patch.events.as_ref().map(stored_filter);
            tx.execute(
                "UPDATE event_endpoints SET url = COALESCE($3, url), description = COALESCE($4, description), \
                 disabled = COALESCE($5, disabled), events = CASE WHEN $6 THEN $7 ELSE events END, updated_at = $8, \
                 failing_since = CASE WHEN $5 = FALSE THEN NULL ELSE failing_since END WHERE tenant = $1 AND id = $2",
                args![
                    tenant.as_str(),
                    id,
                    patch.url.clone(),
                    patch.description.clone(),
                    patch.disabled,
                    events.is_some(),
                    events.flatten(),
                    clock::now()
                ],
            )?;
            if let Some(disabled) = patch.disabled
                && disabled != was_disabled
            {
                set_paused(tx, id, disabled)?;
            }
            select_endpoint(tx, &tenant, id)
        })
        .await
    }

    /// Deletes the endpoint with its undelivered events and its attempts.
    pub async fn delete_endpoint(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool> {
        let tenant = tenant.as_str().to_owned();
        // Its deliveries, and their attempts, go with it (ON DELETE CASCADE).
        self.write(move |tx| Ok(tx.execute("DELETE FROM event_endpoints WHERE tenant = $1 AND id = $2", args![tenant.as_str(), id])? > 0))
            .await
    }

    /// Makes `sealed_secret` the endpoint's secret; the one it replaces
    /// signs beside it until `previous_until_ms`. False when there is no such endpoint.
    pub async fn rotate_endpoint_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        sealed_secret: Vec<u8>,
        previous_until_ms: i64,
    ) -> StoreResult<bool> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |tx| {
            let rotated = tx.execute(
                "UPDATE event_endpoints SET sealed_previous_secret = sealed_secret, sealed_secret = $3, previous_until = $4, \
                 updated_at = $5 WHERE tenant = $1 AND id = $2",
                args![tenant.as_str(), id, &sealed_secret, previous_until_ms, clock::now()],
            )?;
            Ok(rotated > 0)
        })
        .await
    }

    /// Queues a `webhook.test` event for the endpoint, whatever it
    /// subscribed to; its id, or `None` when there is no such endpoint.
    pub async fn queue_test_event(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Uuid>> {
        let tenant = tenant.as_str().to_owned();
        self.write(move |tx| {
            let Some(disabled) = lock_endpoint(tx, &tenant, id)? else { return Ok(None) };
            let event_id = store_events(tx, &[id], EventType::WebhookTest, &clock::now(), &[json!({"endpoint_id": id})])?[0];
            if disabled {
                tx.execute("UPDATE event_deliveries SET state = 'paused' WHERE event_id = $1 AND endpoint_id = $2", args![event_id, id])?;
            }
            Ok(Some(event_id))
        })
        .await
    }

    /// The endpoint's delivery attempts, newest first; `None` when the
    /// tenant has no such endpoint.
    pub async fn list_attempts(&self, tenant: &TenantId, id: Uuid, page: Page) -> StoreResult<Option<(Vec<AttemptRecord>, u64)>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |tx| {
            if select_endpoint(tx, &tenant, id)?.is_none() {
                return Ok(None);
            }
            let total = tx.query_one("SELECT COUNT(*) FROM event_attempts WHERE endpoint_id = $1", args![id])?;
            let rows = tx.query(
                "SELECT d.event_id, d.type, a.attempt, a.status_code, a.error, a.at, \
                 CASE WHEN d.state = 'pending' AND d.attempts = a.attempt THEN d.due_at END \
                 FROM event_attempts a JOIN event_deliveries d ON d.id = a.delivery_id \
                 WHERE a.endpoint_id = $1 ORDER BY a.id DESC LIMIT $2 OFFSET $3",
                args![id, page.size, page.offset()],
            )?;
            let attempts = rows
                .iter()
                .map(|row| {
                    Ok(AttemptRecord {
                        event_id: row.uuid(0)?,
                        kind: row.text(1)?,
                        attempt: row.count(2)?,
                        status_code: row.opt_int(3)?.and_then(|code| u16::try_from(code).ok()),
                        error: row.opt_text(4)?,
                        at: row.text(5)?,
                        next_attempt_at: row.opt_int(6)?.and_then(clock::from_unix_ms),
                    })
                })
                .collect::<DbResult<_>>()?;
            Ok(Some((attempts, total.int(0)? as u64)))
        })
        .await
    }

    /// Leases up to `limit` due deliveries until `lease_until_ms`, skipping
    /// those another replica is claiming, and at most `per_endpoint` in
    /// flight to one endpoint (counting every replica's, as the claim found
    /// them), so that a slow endpoint holds only its own share of the
    /// dispatcher. Candidates are taken endpoint by endpoint: however large
    /// one endpoint's backlog, it never stands in front of another's events,
    /// and a claim's cost grows with the number of endpoints, not of events.
    pub async fn claim_event_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.write(move |tx| {
            // Each enabled endpoint offers its first `per_endpoint` due rows,
            // read from the (endpoint_id, state, due_at) index: a probe per
            // endpoint, whatever its backlog. Claims take rows in due order,
            // so those in flight are among the first: the rows offered and
            // not leased are what the endpoint may still take. PostgreSQL
            // reads a per-endpoint LIMIT from a LATERAL join only (a
            // correlated IN makes it scan the table); SQLite has no LATERAL.
            let first_due = "SELECT x.id FROM event_deliveries x WHERE x.endpoint_id = w.id AND x.state = 'pending' \
                 AND x.due_at <= $1 ORDER BY x.due_at LIMIT $4";
            let dialect = tx.dialect();
            let offered = match dialect {
                Dialect::Postgres => {
                    format!("SELECT c.id FROM event_endpoints w CROSS JOIN LATERAL ({first_due}) c WHERE w.disabled = FALSE")
                }
                Dialect::Sqlite => {
                    format!("SELECT c.id FROM event_endpoints w JOIN event_deliveries c ON c.id IN ({first_due}) WHERE w.disabled = FALSE")
                }
            };
            let free = format!(
                "SELECT d.id FROM event_deliveries d WHERE {} AND d.lease_until <= $1 ORDER BY d.due_at LIMIT $3{}",
                dialect.among("d.id", &offered),
                dialect.skip_locked()
            );
            let claimed = tx.query(
                &format!(
                    "UPDATE event_deliveries SET lease_token = lease_token + 1, lease_until = $2 WHERE {} \
                     RETURNING id, lease_token, event_id, endpoint_id, body, attempts",
                    dialect.among("id", &free)
                ),
                args![now_ms, lease_until_ms, limit, per_endpoint],
            )?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            let mut endpoint_ids: Vec<String> = claimed.iter().map(|row| row.text(3)).collect::<DbResult<_>>()?;
            endpoint_ids.sort_unstable();
            endpoint_ids.dedup();
            let endpoints = tx.query(
                &format!(
                    "SELECT id, url, sealed_secret, sealed_previous_secret, previous_until FROM event_endpoints WHERE {}",
                    dialect.among_batch("id", 1)
                ),
                &[batch(&endpoint_ids)?],
            )?;
            let mut deliveries = Vec::with_capacity(claimed.len());
            for row in &claimed {
                let endpoint_id = row.uuid(3)?;
                let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.uuid(0).is_ok_and(|id| id == endpoint_id)) else { continue };
                let mut sealed_secrets = vec![endpoint.bytes(2)?];
                if endpoint.int(4)? > now_ms
                    && let Some(previous) = endpoint.opt_bytes(3)?
                {
                    sealed_secrets.push(previous);
                }
                deliveries.push(ClaimedDelivery {
                    id: row.int(0)?,
                    lease_token: row.int(1)?,
                    event_id: row.text(2)?,
                    endpoint_id,
                    body: row.text(4)?,
                    attempts: row.count(5)?,
                    url: endpoint.text(1)?,
                    sealed_secrets,
                });
            }
            Ok(deliveries)
        })
        .await
    }

    /// Records these attempts in one transaction, each under its lease, in
    /// (endpoint, delivery) order so that two replicas' batches lock rows in
    /// the same order; what became of each, in the order given.
    pub async fn record_event_attempts(
        &self,
        attempts: Vec<(ClaimedDelivery, AttemptResult)>,
        settings: EventSettings,
    ) -> StoreResult<Vec<AttemptRecorded>> {
        let mut order: Vec<usize> = (0..attempts.len()).collect();
        order.sort_by_key(|&index| (attempts[index].0.endpoint_id, attempts[index].0.id));
        self.write(move |tx| {
            let mut recorded = vec![AttemptRecorded::LeaseLost; attempts.len()];
            for &index in &order {
                let (delivery, result) = &attempts[index];
                recorded[index] = record_attempt(tx, delivery, result, settings)?;
            }
            Ok(recorded)
        })
        .await
    }

    /// When the next pending delivery is due, if any.
    pub async fn next_event_due(&self) -> StoreResult<Option<i64>> {
        // Each enabled endpoint's first, from the (endpoint_id, state, due_at) index.
        self.read(|tx| {
            tx.query_one(
                "SELECT MIN((SELECT x.due_at FROM event_deliveries x WHERE x.endpoint_id = w.id AND x.state = 'pending' \
                 ORDER BY x.due_at LIMIT 1)) FROM event_endpoints w WHERE w.disabled = FALSE",
                &[],
            )?
            .opt_int(0)
        })
        .await
    }

    /// The endpoints with the most undelivered events (at most `limit`), and
    /// the number undelivered in all.
    pub async fn event_backlog(&self, limit: u32) -> StoreResult<(Vec<(Uuid, u64)>, u64)> {
        self.read(move |tx| {
            let rows = tx.query(
                "SELECT endpoint_id, COUNT(*) FROM event_deliveries WHERE state = 'pending' GROUP BY endpoint_id \
                 ORDER BY COUNT(*) DESC, endpoint_id LIMIT $1",
                args![limit],
            )?;
            let total = tx.query_one("SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'", &[])?.int(0)? as u64;
            let largest = rows.iter().map(|row| Ok((row.uuid(0)?, row.int(1)? as u64))).collect::<DbResult<_>>()?;
            Ok((largest, total))
        })
        .await
    }
}

/// Records one attempt under its lease: delivered, or failed and scheduled
/// again or given up after the last. A failure starts (or continues) the
/// endpoint's failing time, and an endpoint failing past the limit is
/// disabled; a success ends it.
fn record_attempt(
    tx: &mut Tx<'_>,
    delivery: &ClaimedDelivery,
    result: &AttemptResult,
    settings: EventSettings,
) -> DbResult<AttemptRecorded> {
    let (id, token, endpoint) = (delivery.id, delivery.lease_token, delivery.endpoint_id);
    let attempt = delivery.attempts + 1;
    let now_ms = clock::now_ms();
    let (fenced, recorded) = match result {
        AttemptResult::Delivered { .. } => (
            tx.execute(
                "UPDATE event_deliveries SET state = 'delivered', attempts = $3, lease_until = 0 WHERE id = $1 AND lease_token = $2",
                args![id, token, attempt],
            )?,
            AttemptRecorded::Delivered,
        ),
        AttemptResult::Failed { .. } => match settings.retry_after(attempt) {
            Some(wait) => (
                tx.execute(
                    "UPDATE event_deliveries SET attempts = $3, due_at = $4, lease_until = 0 WHERE id = $1 AND lease_token = $2",
                    args![id, token, attempt, now_ms + wait.as_millis() as i64],
                )?,
                AttemptRecorded::Retrying,
            ),
            None => (
                tx.execute(
                    "UPDATE event_deliveries SET state = 'failed', attempts = $3, lease_until = 0 WHERE id = $1 AND lease_token = $2",
                    args![id, token, attempt],
                )?,
                AttemptRecorded::GaveUp,
            ),
        },
    };
    if fenced == 0 {
        return Ok(AttemptRecorded::LeaseLost);
    }
    let (status_code, error) = match result {
        AttemptResult::Delivered { status_code } => (Some(*status_code), None),
        AttemptResult::Failed { status_code, error } => (*status_code, Some(error.clone())),
    };
    tx.execute(
        "INSERT INTO event_attempts (delivery_id, endpoint_id, attempt, status_code, error, at) VALUES ($1, $2, $3, $4, $5, $6)",
        args![id, endpoint, attempt, status_code.map(u32::from), error, clock::now()],
    )?;
    if recorded == AttemptRecorded::Delivered {
        tx.execute("UPDATE event_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL", args![endpoint])?;
        return Ok(recorded);
    }
    let failing = tx.query_opt(
        "UPDATE event_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1 RETURNING failing_since, disabled",
        args![endpoint, now_ms],
    )?;
    if let Some(failing) = failing
        && !failing.boolean(1)?
        && now_ms - failing.int(0)? >= settings.failing_limit().as_millis() as i64
    {
        tx.execute("UPDATE event_endpoints SET disabled = TRUE, updated_at = $2 WHERE id = $1", args![endpoint, clock::now()])?;
        set_paused(tx, endpoint, true)?;
        tracing::warn!(endpoint = %endpoint, "an event endpoint failed continuously past the limit and was disabled");
    }
    Ok(recorded)
}

/// Deletes up to `batch` settled deliveries (with their attempts) created
/// before `cutoff`; how many.
pub(super) fn prune_settled(tx: &mut Tx<'_>, cutoff: &str, batch: u64) -> DbResult<u64> {
    tx.execute(
        "DELETE FROM event_deliveries WHERE id IN (SELECT id FROM event_deliveries \
         WHERE state IN ('delivered', 'failed') AND created_at < $1 ORDER BY created_at LIMIT $2)",
        args![cutoff, batch],
    )
}
