//! The store's contract, run against both dialects: what must hold when
//! requests, webhook deliveries and workers race, on one SQLite process or
//! on two replicas sharing PostgreSQL (two `Store`s on one database here).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actiond::clock::now_ms;
use actiond::delivery::pacing::Pacing;
use actiond::domain::{ExecutionStatus, TenantId, parse_action_spec};
use actiond::store::{
    ActionUpdate, ClaimedJob, EndpointPatch, EventParties, Executed, ExecutionError, ExecutionReply, FailureCode, NewEndpoint,
    NewExecution, NewSender, Outcome, Recorded, SendRequest, SenderSaved, Started, Store, TemplateRecord, WebhookEvent,
};
use common::database::TestDatabase;
use futures::future::{join, join_all};
use serde_json::json;
use uuid::Uuid;

/// Two stores on one database, as two replicas see it: on SQLite, whose file
/// one process owns, the same store twice.
struct Replicas {
    name: &'static str,
    a: Arc<Store>,
    b: Arc<Store>,
    database: TestDatabase,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn both_dialects() -> Vec<Replicas> {
    let dir = std::env::temp_dir().join(format!("actiond-store-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_url = format!("sqlite://{}", dir.join("actiond.db").display());
    let sqlite = Arc::new(Store::open(&sqlite_url, 4).await.unwrap());
    let sqlite_database = TestDatabase::sqlite_at(&sqlite_url);
    let postgres = TestDatabase::postgres();
    let a = Arc::new(Store::open(&postgres.url, 8).await.unwrap());
    let b = Arc::new(Store::open(&postgres.url, 8).await.unwrap());
    vec![
        Replicas { name: "sqlite", a: Arc::clone(&sqlite), b: sqlite, database: sqlite_database, _dir: tempdir::Dir(dir.clone()) },
        Replicas { name: "postgres", a, b, database: postgres, _dir: tempdir::Dir(dir.join("unused")) },
    ]
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(format!("{name}-{}", Uuid::new_v4())).unwrap()
}

fn new_execution(action_id: Uuid, call_id: Option<&str>, key: Option<&str>, to: &str) -> NewExecution {
    NewExecution {
        id: Uuid::now_v7(),
        action_id,
        call_id: call_id.map(str::to_owned),
        idempotency_key: key.map(str::to_owned),
        to: to.to_owned(),
        sender: "650175178190170".into(),
        template_name: "call_permission_request".into(),
        language: "en".into(),
        mandatory: true,
        payload: json!({"to": format!("+{to}")}),
        reply_timeout: 600,
    }
}

/// A new action of the tenant's, the seed's: an execution is stored only for
/// an action that is.
async fn action(store: &Store, tenant: &TenantId) -> Uuid {
    let spec = parse_action_spec(common::seed_body().as_object().unwrap()).spec.expect("the seed body is a valid action");
    let id = Uuid::now_v7();
    store.create_action(tenant, id, &spec, None).await.unwrap();
    id
}

/// Sends `count` copies of one execute to both replicas at once; the ids answered.
async fn race_executes(
    replicas: &Replicas,
    tenant: &TenantId,
    count: usize,
    call_id: Option<&str>,
    key: Option<&str>,
) -> Vec<(bool, Uuid)> {
    let action = action(&replicas.a, tenant).await;
    let creates = (0..count).map(|index| {
        let store = if index % 2 == 0 { &replicas.a } else { &replicas.b };
        store.create_execution(tenant, new_execution(action, call_id, key, "12817126508"))
    });
    join_all(creates)
        .await
        .into_iter()
        .map(|created| match created.unwrap() {
            Executed::New(execution) => (true, execution.execution_id),
            Executed::Existing(execution) => (false, execution.execution_id),
            Executed::ActionGone => panic!("the action is there"),
        })
        .collect()
}

#[tokio::test]
async fn racing_executes_with_one_key_or_call_id_create_one_execution_and_one_job() {
    for replicas in both_dialects().await {
        let tenant = tenant("race");
        for (call_id, key) in [(Some("call-1"), None), (None, Some("key-1")), (Some("call-2"), Some("key-2"))] {
            let answers = race_executes(&replicas, &tenant, 16, call_id, key).await;
            let created = answers.iter().filter(|(new, _)| *new).count();
            let ids: HashSet<Uuid> = answers.iter().map(|(_, id)| *id).collect();
            assert_eq!((created, ids.len()), (1, 1), "{}: {call_id:?} {key:?}", replicas.name);
        }
        let jobs = replicas.a.claim_jobs(now_ms(), now_ms() + 60_000, 100).await.unwrap();
        assert_eq!(jobs.len(), 3, "{}: one job per execution", replicas.name);
    }
}

#[tokio::test]
async fn no_execution_of_a_deleted_action_is_left_open_however_execute_and_delete_race() {
    for replicas in both_dialects().await {
        let tenant = tenant("delete-race");
        for _ in 0..5 {
            let action = action(&replicas.a, &tenant).await;
            let executes = (0..8).map(|index| {
                let store = if index % 2 == 0 { &replicas.a } else { &replicas.b };
                store.create_execution(&tenant, new_execution(action, Some(&format!("call-{index}")), None, "12817126508"))
            });
            let (executed, deleted) = join(join_all(executes), replicas.b.delete_action(&tenant, action)).await;
            assert!(deleted.unwrap(), "{}", replicas.name);
            for executed in executed {
                match executed.unwrap() {
                    Executed::New(execution) => {
                        let now = replicas.a.get_execution(&tenant, execution.execution_id).await.unwrap().unwrap();
                        assert_eq!(now.status, ExecutionStatus::Cancelled, "{}: stored before the delete, cancelled by it", replicas.name);
                    }
                    Executed::ActionGone => {}
                    Executed::Existing(_) => panic!("{}: every call id is new", replicas.name),
                }
            }
        }
        // An execute that read the action before its delete, and stores after it.
        let action = action(&replicas.a, &tenant).await;
        assert!(replicas.b.delete_action(&tenant, action).await.unwrap());
        let late = replicas.a.create_execution(&tenant, new_execution(action, None, Some("late"), "12817126508")).await.unwrap();
        assert!(matches!(late, Executed::ActionGone), "{}: nothing stored", replicas.name);
        let again = race_executes(&replicas, &tenant, 1, None, Some("late")).await[0];
        assert!(again.0, "{}: the key starts anew on another action", replicas.name);
    }
}

#[tokio::test]
async fn an_idempotency_key_past_its_24_hours_starts_a_new_execution() {
    for replicas in both_dialects().await {
        let tenant = tenant("expiry");
        let first = race_executes(&replicas, &tenant, 1, None, Some("daily")).await[0].1;
        let again = race_executes(&replicas, &tenant, 1, None, Some("daily")).await[0];
        assert_eq!(again, (false, first), "{}: within 24 h the key answers the first execution", replicas.name);
        replicas.database.execute("UPDATE execution_keys SET created_at = '2000-01-01T00:00:00.000000Z'");
        let fresh = race_executes(&replicas, &tenant, 1, None, Some("daily")).await[0];
        assert!(fresh.0 && fresh.1 != first, "{}: after 24 h the key starts anew", replicas.name);
    }
}

#[tokio::test]
async fn retention_deletes_old_executions_with_nothing_left_to_send_in_batches() {
    const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);
    for replicas in both_dialects().await {
        let tenant = tenant("retention");
        let mut created = Vec::new();
        let action = action(&replicas.a, &tenant).await;
        for _ in 0..503 {
            let new = new_execution(action, None, None, "12817126508");
            let Executed::New(execution) = replicas.a.create_execution(&tenant, new).await.unwrap() else { panic!("a new execution") };
            created.push(execution.execution_id);
        }
        let (old, recent, pending) = (&created[..501], created[501], created[502]);
        // Settled (their jobs done) but for the last, which has still to be sent.
        replicas.database.execute(&format!("DELETE FROM delivery_jobs WHERE execution_id <> '{pending}'"));
        let aged = "'2000-01-01T00:00:00.000000Z'";
        replicas.database.execute(&format!("UPDATE executions SET created_at = {aged}, updated_at = {aged} WHERE id <> '{recent}'"));

        // 501 rows: one batch of 500, then one of 1; the pending one has a job and stays.
        assert_eq!(replicas.b.prune(0, THIRTY_DAYS).await.unwrap(), 501, "{}", replicas.name);
        for id in [old[0], old[500]] {
            assert!(replicas.a.get_execution(&tenant, id).await.unwrap().is_none(), "{}: old and settled, deleted", replicas.name);
        }
        assert!(replicas.a.get_execution(&tenant, recent).await.unwrap().is_some(), "{}: recent, kept", replicas.name);
        assert!(replicas.a.get_execution(&tenant, pending).await.unwrap().is_some(), "{}: still to send, kept", replicas.name);
    }
}

/// An execution claimed and accepted by Meta with this wamid.
async fn accepted(store: &Store, tenant: &TenantId, wamid: &str) -> Uuid {
    let (id, job) = sending(store, tenant).await;
    assert_eq!(store.record_outcome(&job, Outcome::Accepted { wamid: wamid.into(), wa_id: None }).await.unwrap(), Recorded::Yes);
    id
}

fn send_request(job: &ClaimedJob) -> SendRequest {
    SendRequest { lease: job.lease, sender: job.sender.clone(), recipient: job.recipient.clone() }
}

/// Starts one claimed job's send, with pacing that lets it go.
async fn start(store: &Store, job: &ClaimedJob) -> Started {
    store.start_sends(vec![send_request(job)], Pacing::new(1000), now_ms() * 1000).await.unwrap()[0]
}

/// Claims due jobs until this execution's is among them.
async fn claim_one(store: &Store, id: Uuid) -> ClaimedJob {
    claim_leased(store, id, 60_000).await
}

/// `claim_one` with a lease of `lease_ms`.
async fn claim_leased(store: &Store, id: Uuid, lease_ms: i64) -> ClaimedJob {
    for _ in 0..50 {
        let jobs = store.claim_jobs(now_ms(), now_ms() + lease_ms, 100).await.unwrap();
        if let Some(job) = jobs.into_iter().find(|job| job.lease.execution_id == id) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job of {id} was never claimed");
}

/// The sender and recipient of every execution here but the pacing test's.
fn parties() -> EventParties {
    EventParties { phone_number_id: "650175178190170".into(), person: "12817126508".into() }
}

fn status(wamid: &str, status: ExecutionStatus) -> WebhookEvent {
    WebhookEvent::Status {
        key: format!("status:{wamid}:{}", status.as_str()),
        parties: parties(),
        wamid: wamid.into(),
        execution_hint: None,
        status,
        error: None,
    }
}

fn reply(wamid: &str, message_id: &str, text: &str) -> WebhookEvent {
    WebhookEvent::Reply {
        key: format!("message:{message_id}"),
        parties: parties(),
        context_wamid: Some(wamid.into()),
        execution_hint: None,
        reply: ExecutionReply {
            kind: "text".into(),
            text: Some(text.into()),
            payload: None,
            received_at: "2026-12-03T00:00:00.000000Z".into(),
        },
    }
}

#[tokio::test]
async fn meta_events_racing_on_two_replicas_apply_once_and_forward_only() {
    for replicas in both_dialects().await {
        let tenant = tenant("events");
        let wamid = format!("wamid.{}", Uuid::new_v4().simple());
        let id = accepted(&replicas.a, &tenant, &wamid).await;
        // Every status twice, in every order, from both replicas at once.
        let orders = [
            [ExecutionStatus::Read, ExecutionStatus::Sent, ExecutionStatus::Delivered],
            [ExecutionStatus::Sent, ExecutionStatus::Delivered, ExecutionStatus::Read],
            [ExecutionStatus::Delivered, ExecutionStatus::Read, ExecutionStatus::Sent],
        ];
        let mut deliveries = Vec::new();
        for order in &orders {
            let events: Vec<WebhookEvent> = order.iter().map(|s| status(&wamid, *s)).collect();
            deliveries.push(replicas.a.apply_webhook_events(events.clone()));
            deliveries.push(replicas.b.apply_webhook_events(events));
        }
        for result in join_all(deliveries).await {
            result.unwrap();
        }
        let execution = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        let timeline: Vec<ExecutionStatus> = execution.timeline.iter().map(|entry| entry.status).collect();
        assert_eq!(execution.status, ExecutionStatus::Read, "{}", replicas.name);
        assert!(timeline.windows(2).all(|pair| pair[0] != pair[1] && pair[0].may_become(pair[1])), "{}: {timeline:?}", replicas.name);

        // One reply delivered to both replicas: recorded once, the first to commit wins.
        let copies = [
            replicas.a.apply_webhook_events(vec![reply(&wamid, "in-1", "yes")]),
            replicas.b.apply_webhook_events(vec![reply(&wamid, "in-1", "yes")]),
        ];
        for result in join_all(copies).await {
            result.unwrap();
        }
        replicas.b.apply_webhook_events(vec![reply(&wamid, "in-1", "a resend that changed")]).await.unwrap();
        let replied = replicas.b.get_execution(&tenant, id).await.unwrap().unwrap();
        assert_eq!(replied.status, ExecutionStatus::Replied, "{}", replicas.name);
        assert_eq!(replied.reply.unwrap().text.as_deref(), Some("yes"), "{}", replicas.name);
        let replies = replied.timeline.iter().filter(|entry| entry.status == ExecutionStatus::Replied).count();
        assert_eq!(replies, 1, "{}", replicas.name);
        // An end is final, whichever replica hears of a failure.
        replicas.a.apply_webhook_events(vec![status(&wamid, ExecutionStatus::Failed)]).await.unwrap();
        assert_eq!(replicas.a.get_execution(&tenant, id).await.unwrap().unwrap().status, ExecutionStatus::Replied, "{}", replicas.name);
    }
}

/// The event as `person` would send it: a status's recipient, a reply's author.
fn sent_by(person: &str, mut event: WebhookEvent) -> WebhookEvent {
    if let WebhookEvent::Status { parties, .. } | WebhookEvent::Reply { parties, .. } = &mut event {
        parties.person = person.into();
    }
    event
}

/// A status of this send that names its execution (Meta's
/// `biz_opaque_callback_data`), as it comes before the send's answer is in.
fn status_naming(id: Uuid, wamid: &str, status: ExecutionStatus) -> WebhookEvent {
    WebhookEvent::Status {
        key: format!("status:{wamid}:{}", status.as_str()),
        parties: parties(),
        wamid: wamid.into(),
        execution_hint: Some(id),
        status,
        error: None,
    }
}

#[tokio::test]
async fn a_status_that_comes_before_the_sends_answer_leaves_the_answer_its_wa_id() {
    for replicas in both_dialects().await {
        let tenant = tenant("early");
        let (id, job) = sending(&replicas.a, &tenant).await;
        let wamid = format!("wamid.{}", Uuid::new_v4().simple());
        replicas.b.apply_webhook_events(vec![status_naming(id, &wamid, ExecutionStatus::Sent)]).await.unwrap();
        // Meta's answer names the WhatsApp id the person writes from.
        let answer = Outcome::Accepted { wamid: wamid.clone(), wa_id: Some("5511912345678".into()) };
        assert_eq!(replicas.a.record_outcome(&job, answer).await.unwrap(), Recorded::JobEnded, "{}", replicas.name);
        let from_wa_id = sent_by("5511912345678", reply(&wamid, "in-early", "sim"));
        replicas.b.apply_webhook_events(vec![from_wa_id]).await.unwrap();
        let execution = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        assert_eq!(execution.status, ExecutionStatus::Replied, "{}: the reply from the wa_id counts", replicas.name);
    }
}

#[tokio::test]
async fn a_status_from_a_wa_id_that_comes_before_the_answer_naming_it_waits_for_that_answer() {
    for replicas in both_dialects().await {
        let tenant = tenant("early-wa-id");
        let (id, job) = sending(&replicas.a, &tenant).await;
        let wamid = format!("wamid.{}", Uuid::new_v4().simple());
        let from = |person: &str, status: ExecutionStatus| sent_by(person, status_naming(id, &wamid, status));
        // Meta's statuses name the person by the WhatsApp id its answer is about to give; a stranger's comes too.
        let early = vec![from("5511912345678", ExecutionStatus::Delivered), from("5511900000000", ExecutionStatus::Read)];
        replicas.b.apply_webhook_events(early.clone()).await.unwrap();
        replicas.b.apply_webhook_events(early).await.unwrap();
        let waiting = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        assert_eq!(waiting.status, ExecutionStatus::Sending, "{}: nothing applied before the answer", replicas.name);
        let answer = Outcome::Accepted { wamid: wamid.clone(), wa_id: Some("5511912345678".into()) };
        assert_eq!(replicas.a.record_outcome(&job, answer).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let settled = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        let timeline: Vec<ExecutionStatus> = settled.timeline.iter().map(|entry| entry.status).collect();
        assert_eq!(
            timeline,
            [ExecutionStatus::Queued, ExecutionStatus::Sending, ExecutionStatus::Accepted, ExecutionStatus::Delivered],
            "{}: the wa_id's status applied once, the stranger's not",
            replicas.name
        );
    }
}

#[tokio::test]
async fn a_late_status_keeps_the_error_an_ended_execution_failed_with() {
    for replicas in both_dialects().await {
        let tenant = tenant("late");
        let (id, job) = sending(&replicas.a, &tenant).await;
        let unknown = actiond::store::ExecutionError { code: "outcome_unknown".into(), message: "no answer".into(), provider_code: None };
        assert_eq!(replicas.a.record_outcome(&job, Outcome::Failed(unknown)).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let wamid = format!("wamid.{}", Uuid::new_v4().simple());
        replicas.b.apply_webhook_events(vec![status_naming(id, &wamid, ExecutionStatus::Delivered)]).await.unwrap();
        let execution = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        let error = execution.error.map(|error| error.code);
        assert_eq!((execution.status, error.as_deref()), (ExecutionStatus::Failed, Some("outcome_unknown")), "{}", replicas.name);
    }
}

fn sender(phone_number_id: &str) -> NewSender {
    NewSender {
        phone_number_id: phone_number_id.into(),
        waba_id: "102290129340398".into(),
        sealed_access_token: vec![1, 2, 3],
        display_phone_number: None,
        verified_name: None,
        quality_rating: None,
        templates_read_after: None,
    }
}

fn template(name: &str, status: &str) -> TemplateRecord {
    TemplateRecord {
        id: format!("{name}-en"),
        name: name.into(),
        language: "en".into(),
        status: status.into(),
        category: "UTILITY".into(),
        parameter_format: "POSITIONAL".into(),
        components: json!([{"type": "BODY", "text": "Hi"}]),
    }
}

/// What `read` gives once it gives `expected`, or what it gives after 30 s:
/// another replica's change arrives by notification (in milliseconds, but
/// the machine may be loaded).
async fn seen<T: PartialEq>(expected: T, read: impl AsyncFn() -> T) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = read().await;
        if found == expected || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of the one version of `order_update` the replica's look-up
/// gives, once it gives `expected`.
async fn template_status_seen(store: &Store, tenant: &TenantId, sender: &str, expected: Option<&str>) -> Option<String> {
    seen(expected.map(str::to_owned), async || {
        let found = store.templates_named(tenant, sender, "order_update").await.unwrap();
        found.and_then(|versions| versions.first().map(|version| version.status.clone()))
    })
    .await
}

#[tokio::test]
async fn a_template_change_on_one_replica_reaches_the_other_replicas_registry() {
    for replicas in both_dialects().await {
        let tenant = tenant("registry");
        let phone_number_id = format!("8{}", now_ms());
        replicas.a.save_sender(&tenant, sender(&phone_number_id), vec![template("order_update", "APPROVED")]).await.unwrap();
        for store in [&replicas.a, &replicas.b] {
            let seen = template_status_seen(store, &tenant, &phone_number_id, Some("APPROVED")).await;
            assert_eq!(seen.as_deref(), Some("APPROVED"), "{}: read, and now remembered", replicas.name);
        }
        let read_with = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        replicas.a.replace_templates(&tenant, &phone_number_id, read_with, vec![template("order_update", "PAUSED")]).await.unwrap();
        let on_a = replicas.a.templates_named(&tenant, &phone_number_id, "order_update").await.unwrap().unwrap();
        assert_eq!(on_a[0].status, "PAUSED", "{}: the replica that changed it forgets at once", replicas.name);
        let on_b = template_status_seen(&replicas.b, &tenant, &phone_number_id, Some("PAUSED")).await;
        assert_eq!(on_b.as_deref(), Some("PAUSED"), "{}: the other replica learns of it", replicas.name);
        assert!(replicas.a.delete_sender(&tenant, &phone_number_id).await.unwrap());
        assert!(replicas.a.templates_named(&tenant, &phone_number_id, "order_update").await.unwrap().is_none(), "{}", replicas.name);
        assert_eq!(template_status_seen(&replicas.b, &tenant, &phone_number_id, None).await, None, "{}", replicas.name);
    }
}

#[tokio::test]
async fn a_sync_read_with_credentials_replaced_meanwhile_writes_nothing() {
    for replicas in both_dialects().await {
        let tenant = tenant("sync");
        let phone_number_id = format!("7{}", now_ms());
        replicas.a.save_sender(&tenant, sender(&phone_number_id), vec![template("order_update", "APPROVED")]).await.unwrap();
        let read_with = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        // Registered anew, with another token, while the sync read Meta's list.
        let renewed = NewSender { sealed_access_token: vec![9, 9], ..sender(&phone_number_id) };
        replicas.b.save_sender(&tenant, renewed, vec![template("order_update", "APPROVED")]).await.unwrap();
        let synced = replicas.a.replace_templates(&tenant, &phone_number_id, read_with, vec![template("order_update", "PAUSED")]).await;
        assert!(synced.unwrap().is_some(), "{}: the sender is answered as it stands", replicas.name);
        let on_b = template_status_seen(&replicas.b, &tenant, &phone_number_id, Some("APPROVED")).await;
        assert_eq!(on_b.as_deref(), Some("APPROVED"), "{}: the stale list is not written", replicas.name);
        let kept = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        assert_eq!(kept.credentials.sealed_access_token, [9, 9], "{}", replicas.name);
    }
}

#[tokio::test]
async fn a_sync_keeps_a_template_status_metas_webhook_changed_during_its_read() {
    for replicas in both_dialects().await {
        let tenant = tenant("sync-race");
        let phone_number_id = format!("6{}", now_ms());
        // A WABA of its own: a template event changes every sender of its WABA.
        let waba_id = format!("5{}", now_ms());
        let registered = NewSender { waba_id: waba_id.clone(), ..sender(&phone_number_id) };
        let both = vec![template("order_update", "APPROVED"), template("shipping_update", "APPROVED")];
        replicas.a.save_sender(&tenant, registered, both).await.unwrap();
        let basis = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        // Meta pauses the template while the sync reads a list that still says APPROVED.
        let paused = |key: &str| WebhookEvent::TemplateStatus {
            key: format!("template:{waba_id}:{key}"),
            waba_id: waba_id.clone(),
            name: "order_update".into(),
            language: "en".into(),
            event: "PAUSED".into(),
            reason: None,
        };
        replicas.b.apply_webhook_events(vec![paused("first")]).await.unwrap();
        let listed = vec![template("order_update", "APPROVED")];
        replicas.a.replace_templates(&tenant, &phone_number_id, basis, listed.clone()).await.unwrap();
        let status = template_status_seen(&replicas.b, &tenant, &phone_number_id, Some("PAUSED")).await;
        assert_eq!(status.as_deref(), Some("PAUSED"), "{}: the change the read predates is kept", replicas.name);
        let gone = replicas.a.templates_named(&tenant, &phone_number_id, "shipping_update").await.unwrap();
        assert_eq!(gone, Some(Vec::new()), "{}: a template Meta no longer lists is removed", replicas.name);

        let basis = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        replicas.a.replace_templates(&tenant, &phone_number_id, basis, listed.clone()).await.unwrap();
        let status = template_status_seen(&replicas.b, &tenant, &phone_number_id, Some("APPROVED")).await;
        assert_eq!(status.as_deref(), Some("APPROVED"), "{}: a list read after the change is written", replicas.name);

        // Registered anew while Meta pauses it again: the same holds.
        let basis = replicas.a.sync_basis(&tenant, &phone_number_id).await.unwrap().unwrap();
        replicas.b.apply_webhook_events(vec![paused("second")]).await.unwrap();
        let again = NewSender { waba_id: waba_id.clone(), templates_read_after: Some(basis.template_changes), ..sender(&phone_number_id) };
        replicas.a.save_sender(&tenant, again, listed).await.unwrap();
        let status = template_status_seen(&replicas.b, &tenant, &phone_number_id, Some("PAUSED")).await;
        assert_eq!(status.as_deref(), Some("PAUSED"), "{}: a registration's list does not undo it either", replicas.name);
    }
}

#[tokio::test]
async fn an_event_delivery_under_way_is_not_claimed_again_when_its_endpoint_is_disabled_and_enabled() {
    for replicas in both_dialects().await {
        let tenant = tenant("event-lease");
        let new = NewEndpoint {
            id: Uuid::now_v7(),
            url: "https://hooks.example.com/actiond".into(),
            events: None,
            description: String::new(),
            sealed_secret: vec![1, 2, 3],
        };
        let endpoint = replicas.a.create_endpoint(&tenant, new).await.unwrap();
        replicas.a.queue_test_event(&tenant, endpoint.id).await.unwrap().expect("the endpoint exists");
        let lease = |now: i64| (now, now + 60_000);
        let (now, until) = lease(now_ms());
        assert_eq!(replicas.a.claim_event_deliveries(now, until, 10, 10).await.unwrap().len(), 1, "{}", replicas.name);
        // Turned off and on again on another replica while the attempt is under way.
        for disabled in [true, false] {
            let patch = EndpointPatch { disabled: Some(disabled), ..EndpointPatch::default() };
            replicas.b.update_endpoint(&tenant, endpoint.id, patch).await.unwrap().expect("the endpoint exists");
        }
        let (now, until) = lease(now_ms());
        let again = replicas.b.claim_event_deliveries(now, until, 10, 10).await.unwrap();
        assert!(again.is_empty(), "{}: the resumed event is its attempt's until the lease ends, not sent beside it", replicas.name);
    }
}

/// Whether the action is active as the replica's execute path reads it,
/// once it reads `expected`.
async fn action_active_seen(store: &Store, tenant: &TenantId, id: Uuid, expected: Option<bool>) -> Option<bool> {
    seen(expected, async || store.action_to_run(tenant, id).await.unwrap().map(|action| action.is_active)).await
}

#[tokio::test]
async fn an_action_change_on_one_replica_reaches_the_other_replicas_registry() {
    let body = common::seed_body();
    let spec = |active: bool| {
        let mut body = body.clone();
        body["is_active"] = json!(active);
        parse_action_spec(body.as_object().unwrap()).spec.expect("the seed body is a valid action")
    };
    for replicas in both_dialects().await {
        let tenant = tenant("actions");
        let id = Uuid::now_v7();
        replicas.a.create_action(&tenant, id, &spec(true), None).await.unwrap();
        for store in [&replicas.a, &replicas.b] {
            assert_eq!(action_active_seen(store, &tenant, id, Some(true)).await, Some(true), "{}: read, and now remembered", replicas.name);
        }
        assert!(matches!(replicas.a.update_action(&tenant, id, &spec(false), None).await.unwrap(), ActionUpdate::Updated(_)));
        let on_a = replicas.a.action_to_run(&tenant, id).await.unwrap().unwrap();
        assert!(!on_a.is_active, "{}: the replica that changed it forgets at once", replicas.name);
        assert_eq!(
            action_active_seen(&replicas.b, &tenant, id, Some(false)).await,
            Some(false),
            "{}: the other learns of it",
            replicas.name
        );
        assert!(replicas.a.delete_action(&tenant, id).await.unwrap());
        assert!(replicas.a.action_to_run(&tenant, id).await.unwrap().is_none(), "{}", replicas.name);
        assert_eq!(action_active_seen(&replicas.b, &tenant, id, None).await, None, "{}: nor runs it once deleted", replicas.name);
    }
}

#[tokio::test]
async fn an_update_over_a_version_another_replica_passed_changes_nothing() {
    let spec = |name: &str| {
        let mut body = common::seed_body();
        body["name"] = json!(name);
        parse_action_spec(body.as_object().unwrap()).spec.expect("the seed body is a valid action")
    };
    for replicas in both_dialects().await {
        let tenant = tenant("versions");
        let id = Uuid::now_v7();
        replicas.a.create_action(&tenant, id, &spec("first"), None).await.unwrap();
        let read = replicas.a.get_action(&tenant, id).await.unwrap().unwrap();
        let ActionUpdate::Updated(moved) = replicas.b.update_action(&tenant, id, &spec("second"), Some(read.version)).await.unwrap() else {
            panic!("{}: an update over the current version is written", replicas.name);
        };
        assert!(moved.version > read.version, "{}", replicas.name);
        let stale = replicas.a.update_action(&tenant, id, &spec("third"), Some(read.version)).await.unwrap();
        assert!(matches!(stale, ActionUpdate::Changed), "{}", replicas.name);
        assert_eq!(replicas.a.get_action(&tenant, id).await.unwrap().unwrap().name, "second", "{}", replicas.name);
        assert!(matches!(replicas.a.update_action(&tenant, Uuid::now_v7(), &spec("x"), Some(1)).await.unwrap(), ActionUpdate::Missing));
    }
}

#[tokio::test]
async fn two_tenants_racing_for_one_phone_number_id_get_one_201_and_one_409() {
    for replicas in both_dialects().await {
        for round in 0..5 {
            let phone_number_id = format!("9{round}{}", now_ms());
            let (first, second) = (tenant("first"), tenant("second"));
            let saves = [
                replicas.a.save_sender(&first, sender(&phone_number_id), Vec::new()),
                replicas.b.save_sender(&second, sender(&phone_number_id), Vec::new()),
            ];
            let outcomes: Vec<&str> = join_all(saves)
                .await
                .into_iter()
                .map(|saved| match saved.unwrap() {
                    SenderSaved::Created(_) => "created",
                    SenderSaved::Updated(_) => "updated",
                    SenderSaved::Taken => "taken",
                })
                .collect();
            let mut sorted = outcomes.clone();
            sorted.sort();
            assert_eq!(sorted, ["created", "taken"], "{}: {outcomes:?}", replicas.name);
            let again = replicas.a.save_sender(&first, sender(&phone_number_id), Vec::new()).await.unwrap();
            let owner_is_first = outcomes[0] == "created";
            assert_eq!(matches!(again, SenderSaved::Updated(_)), owner_is_first, "{}: the owner updates its own", replicas.name);
        }
    }
}

#[tokio::test]
async fn workers_on_two_replicas_never_claim_one_job_twice() {
    for replicas in both_dialects().await {
        let tenant = tenant("claims");
        create_executions(&replicas.a, &tenant, (0..120).map(|_| "12817126508".to_owned())).await;
        let claims = (0..8).map(|index| {
            let store = if index % 2 == 0 { Arc::clone(&replicas.a) } else { Arc::clone(&replicas.b) };
            async move {
                let mut mine = Vec::new();
                for _ in 0..10 {
                    let jobs = store.claim_jobs(now_ms(), now_ms() + 60_000, 7).await.unwrap();
                    mine.extend(jobs.into_iter().map(|job| job.lease.execution_id));
                }
                mine
            }
        });
        let claimed: Vec<Uuid> = join_all(claims).await.into_iter().flatten().collect();
        let distinct: HashSet<&Uuid> = claimed.iter().collect();
        assert_eq!(claimed.len(), 120, "{}: every job claimed", replicas.name);
        assert_eq!(distinct.len(), 120, "{}: none twice", replicas.name);
    }
}

/// A new execution of the tenant's, with its job; its id.
async fn created(store: &Store, tenant: &TenantId) -> Uuid {
    let new = new_execution(action(store, tenant).await, None, None, "12817126508");
    let Executed::New(execution) = store.create_execution(tenant, new).await.unwrap() else { panic!("new") };
    execution.execution_id
}

/// New executions of one action of the tenant's, one to each of `recipients`.
async fn create_executions(store: &Store, tenant: &TenantId, recipients: impl IntoIterator<Item = String>) {
    let action = action(store, tenant).await;
    for (index, to) in recipients.into_iter().enumerate() {
        store.create_execution(tenant, new_execution(action, Some(&format!("c{index}")), None, &to)).await.unwrap();
    }
}

/// `count` new executions of the tenant's, each to a recipient of its own
/// (`1415555` and four digits from `first`).
async fn to_distinct_recipients(store: &Store, tenant: &TenantId, count: usize, first: usize) {
    create_executions(store, tenant, (first..first + count).map(|number| format!("1415555{number:04}"))).await;
}

/// A new execution of the tenant's whose send has started: its id and its claimed job.
async fn sending(store: &Store, tenant: &TenantId) -> (Uuid, ClaimedJob) {
    let id = created(store, tenant).await;
    let job = claim_one(store, id).await;
    assert_eq!(start(store, &job).await, Started::Sending { pair_refused: false });
    (id, job)
}

#[tokio::test]
async fn a_retry_shows_its_error_and_moves_updated_at() {
    for replicas in both_dialects().await {
        let tenant = tenant("retry");
        let (id, job) = sending(&replicas.a, &tenant).await;
        let before = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let error = ExecutionError::new(FailureCode::TransportError, "the Graph API could not be reached", None);
        let retry = Outcome::Retry { due_ms: now_ms() + 60_000, error: error.clone() };
        assert_eq!(replicas.a.record_outcome(&job, retry).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let after = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        assert_eq!(after.error, Some(error), "{}", replicas.name);
        // Waiters recheck by updated_at: a change they must see moves it.
        assert!(after.updated_at > before.updated_at, "{}: {} then {}", replicas.name, before.updated_at, after.updated_at);
    }
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_writes_nothing() {
    for replicas in both_dialects().await {
        let tenant = tenant("fencing");
        let id = created(&replicas.a, &tenant).await;
        // Replica a claims with a lease that runs out at once, and stalls.
        let stale = claim_leased(&replicas.a, id, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let fresh = claim_one(&replicas.b, id).await;
        assert!(fresh.taken_over && fresh.lease.token > stale.lease.token, "{}: a takeover with a new token", replicas.name);
        assert_eq!(start(&replicas.a, &stale).await, Started::LeaseLost, "{}", replicas.name);
        assert_eq!(replicas.a.extend_leases(vec![stale.lease], now_ms() + 60_000).await.unwrap(), 1, "{}", replicas.name);
        assert_eq!(start(&replicas.b, &fresh).await, Started::Sending { pair_refused: false }, "{}", replicas.name);
        let late = Outcome::Failed(actiond::store::ExecutionError { code: "late".into(), message: "stale".into(), provider_code: None });
        assert_eq!(
            replicas.a.record_outcome(&stale, late).await.unwrap(),
            Recorded::LeaseLost,
            "{}: the stale outcome is refused",
            replicas.name
        );
        let accepted = Outcome::Accepted { wamid: format!("wamid.{id}"), wa_id: None };
        assert_eq!(replicas.b.record_outcome(&fresh, accepted).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let settled = replicas.a.get_execution(&tenant, id).await.unwrap().unwrap();
        assert_eq!((settled.status, settled.error, settled.attempts), (ExecutionStatus::Accepted, None, 1), "{}", replicas.name);
    }
}

#[tokio::test]
async fn holding_a_sender_leaves_its_sends_in_flight_to_their_worker() {
    for replicas in both_dialects().await {
        let tenant = tenant("held");
        let refused_token = sender("650175178190170").sealed_access_token;
        replicas.a.save_sender(&tenant, sender("650175178190170"), Vec::new()).await.unwrap();
        let in_flight = created(&replicas.a, &tenant).await;
        let job = claim_one(&replicas.a, in_flight).await;
        assert_eq!(start(&replicas.a, &job).await, Started::Sending { pair_refused: false }, "{}", replicas.name);
        let waiting = created(&replicas.a, &tenant).await;
        // Another send was refused for the token, and new credentials came
        // while this one was still with Meta.
        assert!(replicas.b.hold_sender(&tenant, "650175178190170", &refused_token).await.unwrap(), "{}", replicas.name);
        let renewed = NewSender { sealed_access_token: vec![4, 5, 6], ..sender("650175178190170") };
        replicas.b.save_sender(&tenant, renewed, Vec::new()).await.unwrap();
        let claimed: Vec<Uuid> =
            replicas.b.claim_jobs(now_ms(), now_ms() + 60_000, 10).await.unwrap().iter().map(|job| job.lease.execution_id).collect();
        assert_eq!(claimed, [waiting], "{}: the send in flight is not claimed again, the held one is released", replicas.name);
        assert_eq!(replicas.a.extend_leases(vec![job.lease], now_ms() + 60_000).await.unwrap(), 0, "{}: its lease holds", replicas.name);
        let accepted = Outcome::Accepted { wamid: format!("wamid.{in_flight}"), wa_id: None };
        assert_eq!(replicas.a.record_outcome(&job, accepted).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let settled = replicas.a.get_execution(&tenant, in_flight).await.unwrap().unwrap();
        assert_eq!((settled.status, settled.attempts), (ExecutionStatus::Accepted, 1), "{}: sent once", replicas.name);
    }
}

#[tokio::test]
async fn a_heartbeat_keeps_the_lease_it_extends() {
    for replicas in both_dialects().await {
        let tenant = tenant("heartbeat");
        let id = created(&replicas.a, &tenant).await;
        let job = claim_leased(&replicas.a, id, 300).await;
        assert_eq!(replicas.a.extend_leases(vec![job.lease], now_ms() + 60_000).await.unwrap(), 0, "{}", replicas.name);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let claimed = replicas.b.claim_jobs(now_ms(), now_ms() + 60_000, 10).await.unwrap();
        assert!(claimed.iter().all(|j| j.lease.execution_id != id), "{}: the extended lease still holds", replicas.name);
        assert_eq!(start(&replicas.a, &job).await, Started::Sending { pair_refused: false }, "{}", replicas.name);
    }
}

#[tokio::test]
async fn pacing_holds_for_both_replicas_together() {
    for replicas in both_dialects().await {
        let tenant = tenant("pacing");
        to_distinct_recipients(&replicas.a, &tenant, 20, 100).await;
        let pacing = Pacing::new(5);
        // One clock for every claim and slot: a job put off 200 ms is never
        // claimed again here, however slowly the machine runs.
        let now = now_ms();
        let now_us = now * 1000;
        let paces = [&replicas.a, &replicas.b, &replicas.a, &replicas.b].map(|store| async move {
            let jobs = store.claim_jobs(now, now + 60_000, 5).await.unwrap();
            store.start_sends(jobs.iter().map(send_request).collect(), pacing, now_us).await.unwrap()
        });
        let answers: Vec<Started> = join_all(paces).await.into_iter().flatten().collect();
        assert_eq!(answers.len(), 20);
        let admitted = answers.iter().filter(|answer| matches!(answer, Started::Sending { .. })).count();
        assert_eq!(admitted, 5, "{}: one second's worth across both replicas", replicas.name);
        assert_eq!(replicas.a.queue_depth().await.unwrap(), 20, "{}: the rest rescheduled, not lost", replicas.name);
        let begun = replicas.a.list_executions(&tenant, Default::default(), actiond::store::Page { number: 1, size: 100 }).await.unwrap().0;
        let sending = begun.iter().filter(|execution| execution.status == ExecutionStatus::Sending && execution.attempts == 1).count();
        assert_eq!(sending, 5, "{}: the admitted ones begun, the others untouched", replicas.name);
        assert!(replicas.a.next_due().await.unwrap().unwrap() > now, "{}: the rest due later", replicas.name);
    }
}

#[tokio::test]
async fn an_acceptance_keeps_a_pair_refusal_that_came_while_it_was_sent() {
    for replicas in both_dialects().await {
        let tenant = tenant("pair");
        let (sender, recipient) = ("650175178190170", "12817126508");
        let pacing = Pacing::new(1000);
        let now_us = now_ms() * 1000;
        let first = created(&replicas.a, &tenant).await;
        let mut job = claim_one(&replicas.a, first).await;
        replicas.a.pair_refused(sender, recipient, now_us).await.unwrap();
        // Sent once that first back-off (1 s) is over.
        let started = replicas.a.start_sends(vec![send_request(&job)], pacing, now_us + 2_000_000).await.unwrap();
        assert_eq!(started, [Started::Sending { pair_refused: true }], "{}", replicas.name);
        job.pair_refused = true;
        // Meanwhile another send to the pair is refused: 4 s more.
        replicas.b.pair_refused(sender, recipient, now_us + 2_000_000).await.unwrap();
        let accepted = Outcome::Accepted { wamid: format!("wamid.{first}"), wa_id: None };
        assert_eq!(replicas.a.record_outcome(&job, accepted).await.unwrap(), Recorded::Yes, "{}", replicas.name);
        let next = created(&replicas.a, &tenant).await;
        let job = claim_one(&replicas.a, next).await;
        let started = replicas.a.start_sends(vec![send_request(&job)], pacing, now_us + 3_000_000).await.unwrap();
        assert!(matches!(started[..], [Started::Deferred]), "{}: the later refusal's back-off holds: {started:?}", replicas.name);
    }
}

#[tokio::test]
async fn a_backlog_put_off_by_the_senders_rate_comes_due_a_slot_at_a_time() {
    for replicas in both_dialects().await {
        let tenant = tenant("backlog");
        to_distinct_recipients(&replicas.a, &tenant, 10, 200).await;
        // One a second: the slots are far apart next to the test's own pace.
        let (now, pacing) = (now_ms(), Pacing::new(1));
        let jobs = replicas.a.claim_jobs(now, now + 60_000, 20).await.unwrap();
        let started = replicas.a.start_sends(jobs.iter().map(send_request).collect(), pacing, now * 1000).await.unwrap();
        assert_eq!(started.iter().filter(|answer| matches!(answer, Started::Sending { .. })).count(), 1, "{}", replicas.name);
        // Each job put off holds a slot of its own, a second apart; one that
        // comes later queues behind them.
        let Executed::New(late) = replicas
            .a
            .create_execution(&tenant, new_execution(action(&replicas.a, &tenant).await, Some("late"), None, "14155550999"))
            .await
            .unwrap()
        else {
            panic!("a new execution")
        };
        let late = late.execution_id;
        let asked = now_ms();
        let jobs = replicas.b.claim_jobs(asked, asked + 60_000, 20).await.unwrap();
        assert_eq!(jobs.iter().map(|job| job.lease.execution_id).collect::<Vec<_>>(), [late], "{}", replicas.name);
        let started = replicas.b.start_sends(jobs.iter().map(send_request).collect(), pacing, asked * 1000).await.unwrap();
        assert_eq!(started, [Started::Deferred], "{}", replicas.name);
        for second in 1..=3 {
            let due = replicas.a.claim_jobs(now + second * 1000, now + 60_000, 20).await.unwrap();
            assert_eq!(due.len(), 1, "{}: one a second comes due, not all at once", replicas.name);
            let started = replicas.a.start_sends(due.iter().map(send_request).collect(), pacing, (now + second * 1000) * 1000).await;
            assert_eq!(started.unwrap(), [Started::Sending { pair_refused: false }], "{}: it goes in its slot", replicas.name);
        }
        let before: Vec<Uuid> =
            replicas.b.claim_jobs(now + 9_999, now + 60_000, 20).await.unwrap().iter().map(|job| job.lease.execution_id).collect();
        assert_eq!(before.len(), 6, "{}: the rest of the backlog", replicas.name);
        let due: Vec<Uuid> =
            replicas.b.claim_jobs(now + 10_000, now + 60_000, 20).await.unwrap().iter().map(|job| job.lease.execution_id).collect();
        assert_eq!(due, [late], "{}: the late one after them", replicas.name);
    }
}

#[tokio::test]
async fn a_backlog_to_one_recipient_takes_none_of_its_senders_slots() {
    for replicas in both_dialects().await {
        let tenant = tenant("pair-backlog");
        create_executions(&replicas.a, &tenant, (0..50).map(|_| "12817126508".to_owned())).await;
        let (now, pacing) = (now_ms(), Pacing::new(50));
        let jobs = replicas.a.claim_jobs(now, now + 60_000, 50).await.unwrap();
        let started = replicas.a.start_sends(jobs.iter().map(send_request).collect(), pacing, now * 1000).await.unwrap();
        let sending = started.iter().filter(|answer| matches!(answer, Started::Sending { .. })).count();
        assert_eq!(sending, 45, "{}: Meta's burst to one recipient", replicas.name);
        // The sender has 5 of its 50 left for everyone else, whatever that recipient's backlog.
        replicas
            .a
            .create_execution(&tenant, new_execution(action(&replicas.a, &tenant).await, Some("other"), None, "14155550100"))
            .await
            .unwrap();
        let other = replicas.a.claim_jobs(now_ms(), now + 60_000, 50).await.unwrap();
        assert_eq!(other.len(), 1, "{}", replicas.name);
        let started = replicas.a.start_sends(other.iter().map(send_request).collect(), pacing, now * 1000).await.unwrap();
        assert_eq!(started, [Started::Sending { pair_refused: false }], "{}", replicas.name);
        // The backlog comes due one per 6 s, and goes then.
        let due = replicas.a.claim_jobs(now + 6_000, now + 60_000, 50).await.unwrap();
        assert_eq!(due.len(), 1, "{}", replicas.name);
        let started = replicas.a.start_sends(due.iter().map(send_request).collect(), pacing, (now + 6_000) * 1000).await.unwrap();
        assert_eq!(started, [Started::Sending { pair_refused: false }], "{}", replicas.name);
    }
}

#[tokio::test]
async fn jobs_released_by_new_credentials_are_paced_afresh() {
    for replicas in both_dialects().await {
        let tenant = tenant("released");
        replicas.a.save_sender(&tenant, sender("650175178190170"), Vec::new()).await.unwrap();
        to_distinct_recipients(&replicas.a, &tenant, 20, 300).await;
        let now = now_ms();
        let jobs = replicas.a.claim_jobs(now, now + 60_000, 20).await.unwrap();
        replicas.a.start_sends(jobs.iter().map(send_request).collect(), Pacing::new(5), now * 1000).await.unwrap();
        // The fifteen put off hold slots over the next three seconds; the
        // token is refused and new credentials release them all, due now.
        let refused_token = sender("650175178190170").sealed_access_token;
        assert!(replicas.a.hold_sender(&tenant, "650175178190170", &refused_token).await.unwrap(), "{}", replicas.name);
        replicas.a.save_sender(&tenant, NewSender { sealed_access_token: vec![7], ..sender("650175178190170") }, Vec::new()).await.unwrap();
        let released = replicas.a.claim_jobs(now_ms(), now + 60_000, 20).await.unwrap();
        assert_eq!(released.len(), 15, "{}", replicas.name);
        let started = replicas.a.start_sends(released.iter().map(send_request).collect(), Pacing::new(5), now * 1000).await.unwrap();
        assert!(started.iter().all(|answer| *answer == Started::Deferred), "{}: not all sent at once: {started:?}", replicas.name);
    }
}

#[tokio::test]
async fn a_change_on_one_replica_wakes_the_waiters_of_the_other() {
    for replicas in both_dialects().await {
        let tenant = tenant("signals");
        let wamid = format!("wamid.{}", Uuid::new_v4().simple());
        let id = accepted(&replicas.a, &tenant, &wamid).await;
        let notify = replicas.a.signals().watch(id);
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        replicas.b.apply_webhook_events(vec![status(&wamid, ExecutionStatus::Delivered)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), woken).await.unwrap_or_else(|_| panic!("{}: not woken", replicas.name));
    }
}

#[tokio::test]
async fn one_batch_of_outcomes_is_recorded_each_under_its_own_lease() {
    for replicas in both_dialects().await {
        let tenant = tenant("batch");
        let store = &replicas.a;
        let action = action(store, &tenant).await;
        let create = || store.create_execution(&tenant, new_execution(action, None, None, "12817126508"));
        let Executed::New(lost) = create().await.unwrap() else { panic!("new") };
        // Replica a claims the three jobs; the first one's lease runs out below.
        let stale = replicas.a.claim_jobs(now_ms(), now_ms() + 60_000, 1).await.unwrap().pop().unwrap();
        let Executed::New(kept) = create().await.unwrap() else { panic!("new") };
        let Executed::New(ended) = create().await.unwrap() else { panic!("new") };
        let mut held = replicas.a.claim_jobs(now_ms(), now_ms() + 60_000, 10).await.unwrap();
        held.sort_by_key(|job| job.lease.execution_id == ended.execution_id);
        let [kept_job, ended_job] = <[ClaimedJob; 2]>::try_from(held).unwrap();
        for job in [&stale, &kept_job, &ended_job] {
            assert_eq!(start(&replicas.a, job).await, Started::Sending { pair_refused: false }, "{}", replicas.name);
        }
        // Its lease ran out (set here, not waited for: a slow machine cannot outrun it).
        replicas.database.execute(&format!("UPDATE delivery_jobs SET lease_until = 1 WHERE execution_id = '{}'", lost.execution_id));
        let taken = claim_one(&replicas.b, lost.execution_id).await;
        // Meta's status for the third arrives first (its send's answer was slow): its job ends.
        let status = WebhookEvent::Status {
            key: format!("status:wamid.ended-{}:sent", ended.execution_id),
            parties: parties(),
            wamid: format!("wamid.ended-{}", ended.execution_id),
            execution_hint: Some(ended.execution_id),
            status: ExecutionStatus::Sent,
            error: None,
        };
        replicas.b.apply_webhook_events(vec![status]).await.unwrap();
        let accepted =
            |job: &ClaimedJob| (job.clone(), Outcome::Accepted { wamid: format!("wamid.{}", job.lease.execution_id), wa_id: None });
        let recorded = replicas.a.record_outcomes(vec![accepted(&stale), accepted(&kept_job), accepted(&ended_job)]).await.unwrap();
        assert_eq!(recorded, [Recorded::LeaseLost, Recorded::Yes, Recorded::JobEnded], "{}", replicas.name);
        let read = |id| replicas.a.get_execution(&tenant, id);
        let kept = read(kept.execution_id).await.unwrap().unwrap();
        assert_eq!((kept.status, kept.wamid.clone()), (ExecutionStatus::Accepted, Some(format!("wamid.{}", kept.execution_id))));
        let ended = read(ended.execution_id).await.unwrap().unwrap();
        assert_eq!((ended.status, ended.wamid.unwrap()), (ExecutionStatus::Sent, format!("wamid.ended-{}", ended.execution_id)));
        assert_eq!(read(lost.execution_id).await.unwrap().unwrap().status, ExecutionStatus::Sending, "{}: untouched", replicas.name);
        assert_eq!(replicas.b.record_outcome(&taken, accepted(&taken).1).await.unwrap(), Recorded::Yes, "{}", replicas.name);
    }
}
