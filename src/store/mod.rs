//! The one storage interface. Handlers see only this trait, so a second SQL
//! dialect slots in beside SQLite without touching them. Every method takes the
//! tenant first: there is no way to read or write across tenants.

mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sqlite::SqliteStore;

use crate::domain::{ActionSpec, TenantId};

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

/// What a sync needs to call the Graph API again.
pub struct SenderCredentials {
    pub waba_id: String,
    pub sealed_access_token: Vec<u8>,
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
    async fn delete_action(&self, tenant: &TenantId, id: Uuid) -> StoreResult<bool>;

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
    async fn delete_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<bool>;
    /// Every language version of one template name in a sender's WABA.
    async fn templates_named(&self, tenant: &TenantId, phone_number_id: &str, name: &str) -> StoreResult<Vec<TemplateRecord>>;
    /// Templates of one sender, or of all the tenant's senders, with the sender's id.
    async fn list_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: Option<&str>,
        page: Page,
    ) -> StoreResult<(Vec<(String, TemplateRecord)>, u64)>;
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
