//! The one storage interface. Handlers see only this trait, so a second SQL
//! dialect slots in beside SQLite without touching them. Every method takes the
//! tenant first: there is no way to read or write across tenants.

mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sqlite::SqliteStore;

use crate::domain::{ActionSpec, ExecutionStatus, TenantId};

#[derive(Debug, thiserror::Error)]
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
pub struct SenderCredentials {
    pub waba_id: String,
    pub sealed_access_token: Vec<u8>,
    pub healthy: bool,
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
    /// (`template_paused`, `max_attempts_reached`, `sender_removed`, …).
    pub code: String,
    pub message: String,
    /// Meta's `error.code`, when it gave one.
    pub provider_code: Option<i64>,
}

/// The recipient's answer to the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionReply {
    /// `text`, `button` (a template quick reply) or `interactive` (a button or list reply).
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    /// The tapped button's payload or reply id.
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
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionFilter<'a> {
    pub action_id: Option<Uuid>,
    pub call_id: Option<&'a str>,
    pub status: Option<ExecutionStatus>,
}

/// A job the worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub execution_id: Uuid,
    pub tenant: TenantId,
    pub sender: String,
    pub recipient: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    /// An earlier attempt began and recorded no outcome: the process stopped
    /// mid-send, so Meta may have the message.
    pub attempt_open: bool,
    /// The code of the last failure recorded, if any.
    pub last_error: Option<String>,
}

/// What became of one send attempt, as the worker records it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Accepted {
        wamid: String,
    },
    /// Try again at `due_ms`; the error says why the last try failed.
    Retry {
        due_ms: i64,
        error: ExecutionError,
    },
    Failed(ExecutionError),
    /// Not attempted yet (pacing): the job waits until `due_ms`, no attempt counted.
    Deferred {
        due_ms: i64,
    },
    /// Sender credentials refused: hold the job with its sender's others.
    Held,
}

/// One event from Meta's webhook, with the key that makes it apply once.
#[derive(Debug, Clone)]
pub enum WebhookEvent {
    Status {
        key: String,
        wamid: String,
        execution_hint: Option<Uuid>,
        status: ExecutionStatus,
        error: Option<ExecutionError>,
    },
    Reply {
        key: String,
        context_wamid: Option<String>,
        execution_hint: Option<Uuid>,
        reply: ExecutionReply,
    },
    /// `event` is Meta's word (APPROVED, PAUSED, REINSTATED, FLAGGED, …).
    TemplateStatus {
        key: String,
        waba_id: String,
        name: String,
        language: String,
        event: String,
    },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reachable, and every migration applied.
    async fn ready(&self) -> StoreResult<()>;

    async fn idempotent_response(&self, tenant: &TenantId, key: &str) -> StoreResult<Option<IdempotentResponse>>;
    /// Stores the action and, with a key, the response to replay — or, when the
    /// key was taken meanwhile, stores nothing and returns the first response.
    async fn create_action(
        &self,
        tenant: &TenantId,
        id: Uuid,
        spec: &ActionSpec,
        idempotency: Option<(&str, IdempotentResponse)>,
    ) -> StoreResult<Created>;
    async fn get_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ActionRecord>>;
    async fn list_actions(&self, tenant: &TenantId, filter: ActionFilter<'_>, page: Page) -> StoreResult<(Vec<ActionRecord>, u64)>;
    async fn update_action(&self, tenant: &TenantId, id: Uuid, spec: &ActionSpec) -> StoreResult<Option<ActionRecord>>;
    /// Deletes the action and cancels its unsettled executions; `None` when
    /// there was no such action, else the ids of the cancelled executions.
    async fn delete_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Vec<Uuid>>>;

    async fn save_sender(&self, tenant: &TenantId, sender: NewSender, templates: Vec<TemplateRecord>) -> StoreResult<SenderSaved>;
    async fn replace_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: &str,
        templates: Vec<TemplateRecord>,
    ) -> StoreResult<Option<SenderRecord>>;
    async fn get_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SenderRecord>>;
    async fn sender_credentials(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SenderCredentials>>;
    async fn list_senders(&self, tenant: &TenantId) -> StoreResult<Vec<SenderRecord>>;
    /// Deletes the sender and its templates, and fails its sends not yet made;
    /// `None` when there was no such sender, else the executions failed.
    async fn delete_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<Vec<Uuid>>>;
    /// Every language version of one template name in a sender's WABA.
    async fn templates_named(&self, tenant: &TenantId, phone_number_id: &str, name: &str) -> StoreResult<Vec<TemplateRecord>>;
    /// Templates of one sender, or of all the tenant's senders, with the sender's id.
    async fn list_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: Option<&str>,
        page: Page,
    ) -> StoreResult<(Vec<(String, TemplateRecord)>, u64)>;
    /// The execution that already has this call id (for this action) or this
    /// idempotency key (used in the last 24 h), if any.
    async fn existing_execution(
        &self,
        tenant: &TenantId,
        action_id: Uuid,
        call_id: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> StoreResult<Option<ExecutionRecord>>;
    /// Stores the execution and its delivery job in one transaction, or
    /// returns the execution that already has this call id or idempotency key.
    async fn create_execution(&self, tenant: &TenantId, execution: NewExecution) -> StoreResult<Executed>;
    async fn get_execution(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<ExecutionRecord>>;
    async fn list_executions(&self, tenant: &TenantId, filter: ExecutionFilter<'_>, page: Page)
    -> StoreResult<(Vec<ExecutionRecord>, u64)>;

    // The delivery worker's side: jobs name their tenant, so these take none.
    /// Leases up to `limit` due jobs until `lease_until_ms`.
    async fn claim_jobs(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<ClaimedJob>>;
    /// Marks an attempt as started (status `sending`, one more attempt); false
    /// when the execution has ended meanwhile, and its job is gone.
    async fn begin_attempt(&self, execution_id: Uuid) -> StoreResult<bool>;
    async fn record_outcome(&self, execution_id: Uuid, outcome: Outcome) -> StoreResult<()>;
    /// Meta refused the sender's token: mark it unhealthy and hold its jobs
    /// until a sync proves new credentials. Only if `refused_token` (sealed)
    /// is still the sender's: false when new credentials came meanwhile.
    async fn hold_sender(&self, tenant: &TenantId, phone_number_id: &str, refused_token: &[u8]) -> StoreResult<bool>;
    /// Applies Meta's webhook events, each once; returns the executions changed.
    async fn apply_webhook_events(&self, events: Vec<WebhookEvent>) -> StoreResult<Vec<Uuid>>;
    /// Expires mandatory executions whose reply deadline has passed.
    async fn expire_due(&self) -> StoreResult<Vec<Uuid>>;
    /// Jobs waiting to be sent, and the earliest time one comes due.
    async fn queue(&self) -> StoreResult<(u64, Option<i64>)>;
    /// Forgets what no longer matters: webhook event keys past Meta's 7-day
    /// resend window, idempotency keys past their 24 h.
    async fn prune(&self) -> StoreResult<()>;
}

/// Opens the store the URL names: `sqlite://PATH` (PostgreSQL comes later).
pub fn open(database_url: &str) -> Result<std::sync::Arc<dyn Store>, String> {
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let store = SqliteStore::open(path).map_err(|e| format!("ACTIOND_DATABASE_URL: cannot open {database_url}: {e}"))?;
        return Ok(std::sync::Arc::new(store));
    }
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        return Err("ACTIOND_DATABASE_URL: PostgreSQL is not supported by this build yet; use sqlite://PATH".into());
    }
    Err(format!("ACTIOND_DATABASE_URL: '{database_url}' must start with sqlite://"))
}
