//! WhatsApp senders and their templates. A phone-number ID belongs to one
//! tenant: registration is one conditional upsert, so two tenants racing for
//! it on two replicas get one 201 and one 409.

use std::collections::HashSet;

use super::db::{DbResult, ListQuery, Row, Tx, args};
use super::events;
use super::executions::advance_each;
use super::remembered::Remembered;
use super::{
    ExecutionError, NewSender, Page, SenderCredentials, SenderRecord, SenderSaved, Signal, Store, StoreResult, SyncBasis, TemplateRecord,
};
use crate::clock;
use crate::domain::{ExecutionStatus, TenantId};
use crate::events::EventType;

const SENDER_COLUMNS: &str = "s.phone_number_id, s.waba_id, s.display_phone_number, s.verified_name, s.quality_rating, s.healthy, \
     (SELECT COUNT(*) FROM templates t WHERE t.phone_number_id = s.phone_number_id), s.created_at, s.updated_at, s.synced_at";

fn sender_from_row(row: &Row) -> DbResult<SenderRecord> {
    Ok(SenderRecord {
        phone_number_id: row.text(0)?,
        waba_id: row.text(1)?,
        display_phone_number: row.opt_text(2)?,
        verified_name: row.opt_text(3)?,
        quality_rating: row.opt_text(4)?,
        healthy: row.boolean(5)?,
        template_count: row.count(6)?,
        created_at: row.text(7)?,
        updated_at: row.text(8)?,
        synced_at: row.text(9)?,
    })
}

fn select_sender(tx: &mut Tx<'_>, tenant: &str, phone_number_id: &str) -> DbResult<Option<SenderRecord>> {
    tx.query_opt(
        &format!("SELECT {SENDER_COLUMNS} FROM senders s WHERE s.tenant = $1 AND s.phone_number_id = $2"),
        args![tenant, phone_number_id],
    )?
    .map(|row| sender_from_row(&row))
    .transpose()
}

/// Writes the sender's templates as Meta listed them, and removes those it
/// no longer lists. A row whose status Meta's webhook changed after
/// `read_after` (the sender's `template_changes` when the list was read)
/// keeps that status: the list may predate it. Returns the rows as they
/// stood before: name, language, status and `status_change`.
fn replace_template_rows(
    tx: &mut Tx<'_>,
    tenant: &str,
    phone_number_id: &str,
    templates: &[TemplateRecord],
    read_after: Option<i64>,
) -> DbResult<Vec<Row>> {
    let listed: HashSet<(&str, &str)> = templates.iter().map(|t| (t.name.as_str(), t.language.as_str())).collect();
    let before =
        tx.query("SELECT name, language, status, status_change FROM templates WHERE phone_number_id = $1", args![phone_number_id])?;
    for row in &before {
        let (name, language) = (row.text(0)?, row.text(1)?);
        if !listed.contains(&(name.as_str(), language.as_str())) {
            tx.execute(
                "DELETE FROM templates WHERE phone_number_id = $1 AND name = $2 AND language = $3",
                args![phone_number_id, name, language],
            )?;
        }
    }
    for template in templates {
        // Meta lists one language version once; a repeat keeps the last.
        tx.execute(
            "INSERT INTO templates (tenant, phone_number_id, name, language, id, status, category, parameter_format, components) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant, phone_number_id, name, language) DO UPDATE SET \
             id = excluded.id, category = excluded.category, parameter_format = excluded.parameter_format, \
             components = excluded.components, \
             status = CASE WHEN templates.status_change > $10 THEN templates.status ELSE excluded.status END",
            args![
                tenant,
                phone_number_id,
                template.name.as_str(),
                template.language.as_str(),
                template.id.as_str(),
                template.status.as_str(),
                template.category.as_str(),
                template.parameter_format.as_str(),
                template.components.to_string(),
                read_after
            ],
        )?;
    }
    Ok(before)
}

const TEMPLATE_COLUMNS: &str = "phone_number_id, id, name, language, status, category, parameter_format, components";

fn template_from_row(row: &Row) -> DbResult<(String, TemplateRecord)> {
    Ok((
        row.text(0)?,
        TemplateRecord {
            id: row.text(1)?,
            name: row.text(2)?,
            language: row.text(3)?,
            status: row.text(4)?,
            category: row.text(5)?,
            parameter_format: row.text(6)?,
            components: row.json(7)?,
        },
    ))
}

/// The sender's ($1, $2) jobs held or not, as a subquery that locks them in
/// id order, the order every transaction takes jobs in.
fn sender_jobs(tx: &Tx<'_>, held: bool) -> String {
    format!(
        "SELECT execution_id FROM delivery_jobs WHERE tenant = $1 AND sender = $2 AND held = {} ORDER BY execution_id{}",
        if held { "TRUE" } else { "FALSE" },
        tx.dialect().for_update()
    )
}

/// Sends held for a sender go again once new credentials are proven, due
/// now and paced afresh: a slot one held was for a later time.
fn release_sender_jobs(tx: &mut Tx<'_>, tenant: &str, phone_number_id: &str) -> DbResult<()> {
    let released = tx.execute(
        &format!(
            "UPDATE delivery_jobs SET held = FALSE, slotted = 0, due_at = CASE WHEN due_at < $3 THEN due_at ELSE $3 END \
             WHERE execution_id IN ({})",
            sender_jobs(tx, true)
        ),
        args![tenant, phone_number_id, clock::now_ms()],
    )?;
    if released > 0 {
        tx.signal(Signal::Jobs);
    }
    Ok(())
}

/// What `templates_named` read lately, by tenant, sender (phone-number id)
/// and template name: a create or execute then reads no template from the
/// database.
pub(super) type TemplateRegistry = Remembered<(String, String, String), TemplatesFound>;
/// What `templates_named` answers.
type TemplatesFound = Option<Vec<TemplateRecord>>;

impl Store {
    pub async fn save_sender(&self, tenant: &TenantId, sender: NewSender, templates: Vec<TemplateRecord>) -> StoreResult<SenderSaved> {
        let tenant = tenant.as_str().to_owned();
        self.write_configuration(move |tx| {
            let now = clock::now();
            // Inserts, or updates the tenant's own; another tenant's row makes no change and returns nothing.
            let saved = tx.query_opt(
                "INSERT INTO senders (phone_number_id, tenant, waba_id, sealed_access_token, display_phone_number, verified_name, \
                 quality_rating, healthy, created_at, updated_at, synced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $8, $8) \
                 ON CONFLICT (phone_number_id) DO UPDATE SET waba_id = excluded.waba_id, \
                 sealed_access_token = excluded.sealed_access_token, display_phone_number = excluded.display_phone_number, \
                 verified_name = excluded.verified_name, quality_rating = excluded.quality_rating, healthy = TRUE, \
                 updated_at = excluded.updated_at, synced_at = excluded.synced_at WHERE senders.tenant = excluded.tenant \
                 RETURNING created_at",
                args![
                    sender.phone_number_id.as_str(),
                    tenant.as_str(),
                    sender.waba_id.as_str(),
                    &sender.sealed_access_token,
                    sender.display_phone_number.clone(),
                    sender.verified_name.clone(),
                    sender.quality_rating.clone(),
                    now.as_str()
                ],
            )?;
            let Some(saved) = saved else { return Ok(SenderSaved::Taken) };
            let created = saved.text(0)? == now;
            replace_template_rows(tx, &tenant, &sender.phone_number_id, &templates, sender.templates_read_after)?;
            release_sender_jobs(tx, &tenant, &sender.phone_number_id)?;
            let record = select_sender(tx, &tenant, &sender.phone_number_id)?
                .ok_or_else(|| super::db::DbError::Internal("the sender just saved is gone".into()))?;
            Ok(if created { SenderSaved::Created(record) } else { SenderSaved::Updated(record) })
        })
        .await
    }

    /// A sync: the sender's templates as Meta listed them to the credentials
    /// in `basis`. They are written only while the sender still has those
    /// credentials; one registered anew meanwhile read its own templates, and
    /// is answered as it stands. A status Meta's webhook changed since `basis`
    /// was read is kept. `None`: no such sender.
    pub async fn replace_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: &str,
        basis: SyncBasis,
        templates: Vec<TemplateRecord>,
    ) -> StoreResult<Option<SenderRecord>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.write_configuration(move |tx| {
            let read_with = &basis.credentials;
            let changed = tx.execute(
                "UPDATE senders SET healthy = TRUE, synced_at = $3, updated_at = $3 \
                 WHERE tenant = $1 AND phone_number_id = $2 AND waba_id = $4 AND sealed_access_token = $5",
                args![tenant.as_str(), phone_number_id.as_str(), clock::now(), read_with.waba_id.as_str(), &read_with.sealed_access_token],
            )?;
            if changed == 0 {
                return select_sender(tx, &tenant, &phone_number_id);
            }
            let before = replace_template_rows(tx, &tenant, &phone_number_id, &templates, Some(basis.template_changes))?;
            // A template that stopped being sendable since the last look is
            // reported; one whose change came by webhook since was reported
            // then, and kept.
            for template in &templates {
                let was = before.iter().find(|row| {
                    row.opt_str(0).ok().flatten() == Some(template.name.as_str())
                        && row.opt_str(1).ok().flatten() == Some(template.language.as_str())
                        && row.opt_int(3).ok().flatten().is_none_or(|change| change <= basis.template_changes)
                });
                if let Some(was) = was
                    && was.text(2)? != template.status
                {
                    events::template_status_changed(
                        tx,
                        &tenant,
                        &phone_number_id,
                        &template.name,
                        &template.language,
                        &template.status,
                        None,
                    )?;
                }
            }
            release_sender_jobs(tx, &tenant, &phone_number_id)?;
            select_sender(tx, &tenant, &phone_number_id)
        })
        .await
    }

    pub async fn get_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SenderRecord>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.read(move |tx| select_sender(tx, &tenant, &phone_number_id)).await
    }

    /// What a sync, or a registration anew, reads before it asks the Graph API.
    pub async fn sync_basis(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<Option<SyncBasis>> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.read(move |tx| {
            let row = tx.query_opt(
                "SELECT waba_id, sealed_access_token, healthy, template_changes FROM senders WHERE tenant = $1 AND phone_number_id = $2",
                args![tenant, phone_number_id],
            )?;
            row.map(|r| {
                let credentials = SenderCredentials { waba_id: r.text(0)?, sealed_access_token: r.bytes(1)?, healthy: r.boolean(2)? };
                Ok(SyncBasis { credentials, template_changes: r.int(3)? })
            })
            .transpose()
        })
        .await
    }

    pub async fn list_senders(&self, tenant: &TenantId) -> StoreResult<Vec<SenderRecord>> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |tx| {
            let rows = tx.query(
                &format!("SELECT {SENDER_COLUMNS} FROM senders s WHERE s.tenant = $1 ORDER BY s.created_at, s.phone_number_id"),
                args![tenant],
            )?;
            rows.iter().map(sender_from_row).collect()
        })
        .await
    }

    /// Deletes the sender and its templates, and fails its sends not yet
    /// made. False when there was no such sender.
    pub async fn delete_sender(&self, tenant: &TenantId, phone_number_id: &str) -> StoreResult<bool> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.to_owned());
        self.write_configuration(move |tx| {
            let deleted = tx.execute(
                "DELETE FROM senders WHERE tenant = $1 AND phone_number_id = $2",
                args![tenant.as_str(), phone_number_id.as_str()],
            )?;
            if deleted == 0 {
                return Ok(false);
            }
            let unsent = tx.query(
                "SELECT execution_id FROM delivery_jobs WHERE tenant = $1 AND sender = $2",
                args![tenant.as_str(), phone_number_id.as_str()],
            )?;
            let error = ExecutionError::sender_removed();
            advance_each(tx, unsent, ExecutionStatus::Failed, Some(&error), None)?;
            Ok(true)
        })
        .await
    }

    /// Every language version of one template name in a sender's WABA, in
    /// one read or from the registry; `None` when the tenant has no such sender.
    pub async fn templates_named(&self, tenant: &TenantId, phone_number_id: &str, name: &str) -> StoreResult<TemplatesFound> {
        let key = (tenant.as_str().to_owned(), phone_number_id.to_owned(), name.to_owned());
        let read = || {
            let (tenant, phone_number_id, name) = (tenant.as_str().to_owned(), phone_number_id.to_owned(), name.to_owned());
            self.lookup(move |tx| {
                let columns = TEMPLATE_COLUMNS.split(", ").map(|column| format!("t.{column}")).collect::<Vec<_>>().join(", ");
                let rows = tx.query(
                    &format!(
                        "SELECT {columns} FROM senders s LEFT JOIN templates t \
                     ON t.tenant = s.tenant AND t.phone_number_id = s.phone_number_id AND t.name = $3 \
                     WHERE s.tenant = $1 AND s.phone_number_id = $2 ORDER BY t.language"
                    ),
                    args![tenant, phone_number_id, name],
                )?;
                if rows.is_empty() {
                    return Ok(None);
                }
                // A sender without the template still gives its one row, of NULLs.
                let found = rows.iter().filter(|row| row.opt_str(0).is_ok_and(|id| id.is_some()));
                Ok(Some(found.map(|row| template_from_row(row).map(|(_, template)| template)).collect::<DbResult<_>>()?))
            })
        };
        self.templates.recall_or_read(key, || self.signals.configuration_generation(), read, |_| true).await
    }

    /// Templates of one sender, or of all the tenant's senders, with the sender's id.
    pub async fn list_templates(
        &self,
        tenant: &TenantId,
        phone_number_id: Option<&str>,
        page: Page,
    ) -> StoreResult<(Vec<(String, TemplateRecord)>, u64)> {
        let (tenant, phone_number_id) = (tenant.as_str().to_owned(), phone_number_id.map(str::to_owned));
        self.read(move |tx| {
            let query = ListQuery::for_tenant(&tenant).filter("phone_number_id", phone_number_id.clone());
            let (limit, args) = query.page(page);
            let [count, rows] = template_list_sql(&query.condition(), &limit);
            let total = tx.query_one(&count, query.args())?;
            let rows = tx.query(&rows, &args)?;
            Ok((rows.iter().map(template_from_row).collect::<DbResult<_>>()?, total.int(0)? as u64))
        })
        .await
    }

    /// Meta refused the sender's token: marks it unhealthy and holds its
    /// jobs until a sync proves new credentials, the first time it is told;
    /// true while `refused_token` (sealed) is still the sender's, false when
    /// new credentials came meanwhile.
    pub async fn hold_sender(&self, tenant: &TenantId, phone_number_id: &str, refused_token: &[u8]) -> StoreResult<bool> {
        let (tenant, phone_number_id, refused_token) = (tenant.as_str().to_owned(), phone_number_id.to_owned(), refused_token.to_vec());
        self.write(move |tx| {
            let marked = tx.execute(
                "UPDATE senders SET healthy = FALSE, updated_at = $4 \
                 WHERE tenant = $1 AND phone_number_id = $2 AND sealed_access_token = $3 AND healthy = TRUE",
                args![tenant.as_str(), phone_number_id.as_str(), &refused_token, clock::now()],
            )?;
            if marked > 0 {
                // Leases are left as they are: a send still with Meta keeps
                // its heartbeat, so released it is not claimed again while
                // it runs, and a dead replica's lease is still taken over
                // as one (reconciled first).
                tx.execute(
                    &format!("UPDATE delivery_jobs SET held = TRUE WHERE execution_id IN ({})", sender_jobs(tx, false)),
                    args![tenant.as_str(), phone_number_id.as_str()],
                )?;
                if let Some(sender) = select_sender(tx, &tenant, &phone_number_id)? {
                    events::emit(tx, &tenant, EventType::SenderUnhealthy, &sender.updated_at.clone(), &sender)?;
                }
                return Ok(true);
            }
            // Held already, by an earlier refusal of this same token?
            let still = tx.query_opt(
                "SELECT 1 FROM senders WHERE tenant = $1 AND phone_number_id = $2 AND sealed_access_token = $3 AND healthy = FALSE",
                args![tenant.as_str(), phone_number_id.as_str(), &refused_token],
            )?;
            Ok(still.is_some())
        })
        .await
    }
}

/// The template list's statements for a `ListQuery`'s condition and page:
/// its count and its page, in the primary key's order.
pub(super) fn template_list_sql(condition: &str, limit: &str) -> [String; 2] {
    [
        format!("SELECT COUNT(*) FROM templates WHERE {condition}"),
        format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE {condition} ORDER BY phone_number_id, name, language {limit}"),
    ]
}
