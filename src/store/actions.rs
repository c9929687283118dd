//! Actions, and the idempotency keys of their creation.

use uuid::Uuid;

use super::db::{DbError, DbResult, ListQuery, Row, Tx, Value, args, to_json};
use super::executions::{advance_each, status_list};
use super::remembered::Remembered;
use super::{
    ActionFilter, ActionRecord, ActionUpdate, Created, IDEMPOTENCY_WINDOW_SECONDS, IdempotentResponse, Page, Store, StoreResult,
    WebhookRecord,
};
use crate::clock;
use crate::domain::{ActionSpec, ExecutionStatus, TenantId};

/// What `action_to_run` read lately, by tenant and id: an execute then reads
/// no action from the database.
pub(super) type ActionRegistry = Remembered<(String, Uuid), Option<ActionRecord>>;

const ACTION_COLUMNS: &str =
    "id, tenant, name, description, type, is_active, action_timing, phone_number, webhook, created_at, updated_at, version";

fn action_from_row(row: &Row) -> DbResult<ActionRecord> {
    Ok(ActionRecord {
        id: row.uuid(0)?,
        company_id: row.text(1)?,
        name: row.text(2)?,
        description: row.text(3)?,
        kind: row.text(4)?,
        is_active: row.boolean(5)?,
        action_timing: row.text(6)?,
        phone_number: row.opt_text(7)?,
        webhook: row.json(8)?,
        created_at: row.text(9)?,
        updated_at: row.text(10)?,
        version: row.int(11)?,
    })
}

// INSERT_ACTION and UPDATE_ACTION take the same placeholders, bound by `StoredAction::args`.
const INSERT_ACTION: &str = "INSERT INTO actions (id, tenant, name, description, type, is_active, action_timing, phone_number, webhook, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)";
const UPDATE_ACTION: &str = "UPDATE actions SET name = $3, description = $4, type = $5, is_active = $6, action_timing = $7, \
     phone_number = $8, webhook = $9, updated_at = $10, version = version + 1 WHERE id = $1 AND tenant = $2";

/// What an INSERT or UPDATE of an action binds: the spec as it is stored.
#[derive(Clone)]
struct StoredAction {
    name: String,
    description: String,
    kind: &'static str,
    is_active: bool,
    timing: &'static str,
    phone_number: Option<String>,
    webhook: String,
}

impl StoredAction {
    fn of(spec: &ActionSpec) -> StoreResult<Self> {
        Ok(Self {
            name: spec.name.clone(),
            description: spec.description.clone(),
            kind: spec.kind.as_str(),
            is_active: spec.is_active,
            timing: spec.timing.as_str(),
            phone_number: spec.phone_number.as_ref().map(|p| p.digits().to_owned()),
            webhook: to_json(&WebhookRecord::from_spec(spec))?,
        })
    }

    fn args(&self, tenant: &str, id: Uuid, now: &str) -> [Value; 10] {
        [
            id.into(),
            tenant.into(),
            self.name.as_str().into(),
            self.description.as_str().into(),
            self.kind.into(),
            self.is_active.into(),
            self.timing.into(),
            self.phone_number.clone().into(),
            self.webhook.as_str().into(),
            now.into(),
        ]
    }
}

fn select_action(tx: &mut Tx<'_>, tenant: &str, id: Uuid) -> DbResult<Option<ActionRecord>> {
    tx.query_opt(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE tenant = $1 AND id = $2"), args![tenant, id])?
        .map(|row| action_from_row(&row))
        .transpose()
}

fn select_idempotent(tx: &mut Tx<'_>, tenant: &str, key: &str) -> DbResult<Option<IdempotentResponse>> {
    let row = tx.query_opt(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE tenant = $1 AND key = $2 AND created_at > $3",
        args![tenant, key, clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)],
    )?;
    row.map(|row| {
        Ok(IdempotentResponse {
            request_hash: row.text(0)?,
            status: u16::try_from(row.int(1)?).map_err(|e| DbError::Internal(e.to_string()))?,
            body: row.json(2)?,
        })
    })
    .transpose()
}

impl Store {
    pub async fn idempotent_response(&self, tenant: &TenantId, key: &str) -> StoreResult<Option<IdempotentResponse>> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.to_owned());
        self.read(move |tx| select_idempotent(tx, &tenant, &key)).await
    }

    /// Stores the action and, with a key, the response to replay — or, when
    /// the key is taken (by a request that raced this one, on any replica),
    /// stores nothing and returns the first response.
    pub async fn create_action(
        &self,
        tenant: &TenantId,
        id: Uuid,
        spec: &ActionSpec,
        idempotency: Option<(&str, IdempotentResponse)>,
    ) -> StoreResult<Created> {
        let tenant = tenant.as_str().to_owned();
        let action = StoredAction::of(spec)?;
        let idempotency = idempotency.map(|(key, response)| (key.to_owned(), response));
        self.write(move |tx| {
            let now = clock::now();
            if let Some((key, response)) = &idempotency {
                // Claims the key unless a live one holds it; an expired one is taken over.
                let claimed = tx.query_opt(
                    "INSERT INTO idempotency_keys (tenant, key, request_hash, status, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, key) DO UPDATE SET request_hash = excluded.request_hash, \
                     status = excluded.status, response = excluded.response, created_at = excluded.created_at \
                     WHERE idempotency_keys.created_at <= $7 RETURNING key",
                    args![
                        tenant.as_str(),
                        key.as_str(),
                        response.request_hash.as_str(),
                        u32::from(response.status),
                        response.body.to_string(),
                        now.as_str(),
                        clock::seconds_ago(IDEMPOTENCY_WINDOW_SECONDS)
                    ],
                )?;
                if claimed.is_none() {
                    let first = select_idempotent(tx, &tenant, key)?;
                    return first.map(Created::Replay).ok_or_else(|| DbError::Contention("the idempotency key expired meanwhile".into()));
                }
            }
            tx.execute_later(INSERT_ACTION, &action.args(&tenant, id, &now))?;
            Ok(Created::New)
        })
        .await
    }

    pub async fn get_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ActionRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.lookup(move |tx| select_action(tx, &tenant, id)).await
    }

    /// The action as an execute runs it: from the registry when this
    /// replica read it since the last change to actions it heard of. Reads
    /// that must see a write just made on another replica use `get_action`.
    /// Actions not found are not remembered.
    pub async fn action_to_run(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ActionRecord>> {
        let key = (tenant.as_str().to_owned(), id);
        let generation = || self.signals.configuration_generation();
        self.actions.recall_or_read(key, generation, || self.get_action(tenant, id), Option::is_some).await
    }

    pub async fn list_actions(&self, tenant: &TenantId, filter: ActionFilter<'_>, page: Page) -> StoreResult<(Vec<ActionRecord>, u64)> {
        let tenant = tenant.as_str().to_owned();
        let kind = filter.kind.map(str::to_owned);
        let is_active = filter.is_active;
        self.read(move |tx| {
            let query = ListQuery::for_tenant(&tenant).filter("type", kind.clone()).filter("is_active", is_active);
            let (limit, args) = query.page(page);
            let [count, rows] = action_list_sql(&query.condition(), &limit);
            let total = tx.query_one(&count, query.args())?;
            let rows = tx.query(&rows, &args)?;
            Ok((rows.iter().map(action_from_row).collect::<DbResult<_>>()?, total.int(0)? as u64))
        })
        .await
    }

    /// Replaces the action's spec; with `over`, only while the action is still
    /// at that version (a write in between answers `Changed`).
    pub async fn update_action(&self, tenant: &TenantId, id: Uuid, spec: &ActionSpec, over: Option<i64>) -> StoreResult<ActionUpdate> {
        let tenant = tenant.as_str().to_owned();
        let action = StoredAction::of(spec)?;
        self.write_configuration(move |tx| {
            let mut args = action.args(&tenant, id, &clock::now()).to_vec();
            let changed = match over {
                None => tx.execute(UPDATE_ACTION, &args)?,
                Some(version) => {
                    args.push(version.into());
                    tx.execute(&format!("{UPDATE_ACTION} AND version = $11"), &args)?
                }
            };
            Ok(match select_action(tx, &tenant, id)? {
                None => ActionUpdate::Missing,
                Some(action) if changed > 0 => ActionUpdate::Updated(Box::new(action)),
                Some(_) => ActionUpdate::Changed,
            })
        })
        .await
    }

    /// Deletes the action and cancels its executions still unsettled (for a
    /// mandatory one: not ended; for another: not yet accepted by Meta).
    /// False when there was no such action.
    pub async fn delete_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool> {
        let tenant = tenant.as_str().to_owned();
        self.write_configuration(move |tx| {
            if tx.execute("DELETE FROM actions WHERE tenant = $1 AND id = $2", args![tenant.as_str(), id])? == 0 {
                return Ok(false);
            }
            let ended = status_list(ExecutionStatus::ended());
            let open = tx.query(
                &format!("SELECT id FROM executions WHERE tenant = $1 AND action_id = $2 AND status NOT IN {ended}"),
                args![tenant.as_str(), id],
            )?;
            let unaccepted = status_list([ExecutionStatus::Queued, ExecutionStatus::Sending]);
            let unsettled = format!("(mandatory = TRUE OR status IN {unaccepted})");
            advance_each(tx, open, ExecutionStatus::Cancelled, None, Some(&unsettled))?;
            Ok(true)
        })
        .await
    }
}

/// The action list's statements for a `ListQuery`'s condition and page: its
/// count and its page, newest first.
pub(super) fn action_list_sql(condition: &str, limit: &str) -> [String; 2] {
    [
        format!("SELECT COUNT(*) FROM actions WHERE {condition}"),
        format!("SELECT {ACTION_COLUMNS} FROM actions WHERE {condition} ORDER BY created_at DESC, id DESC {limit}"),
    ]
}
