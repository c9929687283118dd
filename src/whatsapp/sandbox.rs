//! A local simulator of the parts of Meta's Graph API that actiond calls. Dev
//! mode mounts it under `/_sandbox/graph` (and `POST /_sandbox/reply`, behind
//! the API's tokens, in `http::sandbox`);
//! the tests serve it on its own port. It answers as Meta does, errors
//! included, and posts signed status webhooks back, so the code under test is
//! the code that runs against Meta.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::templates::TemplateShape;
use super::webhook::sign;

pub const SANDBOX_PHONE_NUMBER_ID: &str = "650175178190170";
pub const SANDBOX_WABA_ID: &str = "102290129340398";
pub const SANDBOX_ACCESS_TOKEN: &str = "sandbox-access-token";
pub const SANDBOX_DISPLAY_NUMBER: &str = "15550783881";
/// A recipient Meta accepts and later reports undeliverable (131026); a
/// fictional 555-01XX number.
pub const UNDELIVERABLE_RECIPIENT: &str = "12025550131";
/// A recipient throttled on every other send (130429), so retries succeed.
pub const THROTTLED_RECIPIENT: &str = "12025550129";
/// Failed webhook posts are tried again this many times, as Meta retries.
const WEBHOOK_TRIES: u32 = 20;
/// The sandbox remembers this many sent messages, the newest; a dev server
/// that runs for months keeps no more.
const SENT_REMEMBERED: usize = 10_000;

#[derive(Clone)]
pub struct Sandbox {
    state: Arc<Mutex<SandboxState>>,
}

struct SandboxState {
    /// The WABA's phone numbers: `SANDBOX_PHONE_NUMBER_ID` and any after it.
    phone_number_ids: Vec<String>,
    waba_id: String,
    access_token: String,
    templates: Vec<Value>,
    page_size: usize,
    webhook: Option<WebhookTarget>,
    /// When each status webhook follows a send: sent, delivered, read.
    status_delays: [Duration; 3],
    scripts: HashMap<String, VecDeque<Scripted>>,
    /// Sends to `THROTTLED_RECIPIENT`, which is refused every other time.
    throttled_sends: u32,
    /// Shared with the status webhooks each one's send set off.
    sent: VecDeque<Arc<SentMessage>>,
    sent_total: usize,
    /// The WhatsApp id Meta gives a number, where it is not the number itself.
    wa_ids: HashMap<String, String>,
    /// How long an accepted send waits for its answer: a crash inside it
    /// leaves Meta with a message its sender never heard of.
    answer_delay: Duration,
}

#[derive(Clone)]
struct WebhookTarget {
    url: String,
    app_secret: String,
}

/// What the sandbox does with the next send to a recipient.
#[derive(Debug, Clone)]
pub enum Scripted {
    Accept,
    /// Meta's error object, with this HTTP status.
    Refuse {
        status: u16,
        code: i64,
        message: String,
    },
    /// A 5xx with no body: the sender cannot know whether Meta took it.
    Bodiless500,
    /// Meta took the message (its statuses follow) but the answer was lost:
    /// a 5xx with no body.
    TakenButUnanswered,
    /// Accepted, then reported `sent` and `failed` with this code.
    FailLater {
        code: i64,
        message: String,
    },
}

/// A message the sandbox accepted.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub wamid: String,
    /// The phone number id it was sent from.
    pub from: String,
    pub to: String,
    pub wa_id: String,
    pub payload: Value,
    /// When the sandbox took it.
    pub at: std::time::Instant,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let state = SandboxState {
            phone_number_ids: vec![SANDBOX_PHONE_NUMBER_ID.into()],
            waba_id: SANDBOX_WABA_ID.into(),
            access_token: SANDBOX_ACCESS_TOKEN.into(),
            templates: default_templates(),
            page_size: 25,
            webhook: None,
            status_delays: [Duration::from_millis(200), Duration::from_millis(600), Duration::from_millis(1200)],
            scripts: HashMap::new(),
            throttled_sends: 0,
            sent: VecDeque::new(),
            sent_total: 0,
            wa_ids: HashMap::new(),
            answer_delay: Duration::ZERO,
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut SandboxState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Gives the WABA `count` phone numbers (at least one), numbered on
    /// from `SANDBOX_PHONE_NUMBER_ID`: senders that each take their own
    /// sends, with the same token and templates.
    pub fn set_phone_numbers(&self, count: usize) {
        let first: u64 = SANDBOX_PHONE_NUMBER_ID.parse().expect("the sandbox's phone number id is a number");
        self.with_state(|s| s.phone_number_ids = (0..count.max(1) as u64).map(|i| (first + i).to_string()).collect());
    }

    /// The WABA's phone number ids, `SANDBOX_PHONE_NUMBER_ID` first.
    pub fn phone_number_ids(&self) -> Vec<String> {
        self.with_state(|s| s.phone_number_ids.clone())
    }

    fn has_phone_number(&self, node: &str) -> bool {
        self.with_state(|s| s.phone_number_ids.iter().any(|id| id == node))
    }

    /// Sets a template's status in every language, as a Meta review would.
    pub fn set_template_status(&self, name: &str, status: &str) {
        self.with_state(|s| {
            for template in s.templates.iter_mut().filter(|t| t["name"] == name) {
                template["status"] = json!(status);
            }
        });
    }

    /// Replaces a template's components in every language, as an edit Meta
    /// approved would.
    pub fn set_template_components(&self, name: &str, components: Value) {
        self.with_state(|s| {
            for template in s.templates.iter_mut().filter(|t| t["name"] == name) {
                template["components"] = components.clone();
            }
        });
    }

    /// Templates per page of `message_templates`, to exercise pagination.
    pub fn set_page_size(&self, page_size: usize) {
        self.with_state(|s| s.page_size = page_size.max(1));
    }

    /// Where status and reply webhooks go, signed with `app_secret`.
    pub fn set_webhook(&self, url: &str, app_secret: &str) {
        let target = WebhookTarget { url: url.to_owned(), app_secret: app_secret.to_owned() };
        self.with_state(|s| s.webhook = Some(target));
    }

    /// The delays after a send of its sent, delivered and read webhooks.
    pub fn set_status_delays(&self, delays: [Duration; 3]) {
        self.with_state(|s| s.status_delays = delays);
    }

    /// The access token Meta accepts from now on, as when the old one is revoked.
    pub fn set_access_token(&self, token: &str) {
        self.with_state(|s| s.access_token = token.to_owned());
    }

    /// Makes Meta name this number by another WhatsApp id, as it does for
    /// some countries' numbers: in the send's answer, its statuses and its replies.
    pub fn set_wa_id(&self, number: &str, wa_id: &str) {
        self.with_state(|s| s.wa_ids.insert(number.to_owned(), wa_id.to_owned()));
    }

    /// How long each accepted send waits before it is answered.
    pub fn set_answer_delay(&self, delay: Duration) {
        self.with_state(|s| s.answer_delay = delay);
    }

    /// Queues what the next sends to `recipient` (E.164 digits) meet.
    pub fn script(&self, recipient: &str, outcomes: impl IntoIterator<Item = Scripted>) {
        self.with_state(|s| s.scripts.entry(recipient.to_owned()).or_default().extend(outcomes));
    }

    /// How many messages it accepted so far.
    pub fn sent_count(&self) -> usize {
        self.with_state(|s| s.sent_total)
    }

    /// Every message accepted so far, oldest first.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.with_state(|s| s.sent.iter().map(|message| SentMessage::clone(message)).collect())
    }

    /// Meta's Graph API: phone number, templates, messages.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{node}", get(node))
            .route("/{version}/{node}/message_templates", get(message_templates))
            .route("/{version}/{node}/messages", post(messages))
            .with_state(self.clone())
    }

    /// The execution id a sent message carries, found by its wamid.
    pub fn execution_of(&self, wamid: &str) -> Option<String> {
        self.with_state(|s| {
            let message = s.sent.iter().rev().find(|m| m.wamid == wamid)?;
            message.payload["biz_opaque_callback_data"].as_str().map(str::to_owned)
        })
    }

    /// Answers a sent message as its recipient would: a text, or a tap on the
    /// quick-reply button with this label. The reply webhook is posted signed.
    pub async fn reply(&self, request: ReplyRequest) -> Result<Value, ReplyRefused> {
        let (configured, message, templates) = self.with_state(|s| {
            let message = s.sent.iter().rev().find(|m| {
                request.wamid.as_deref() == Some(m.wamid.as_str())
                    || request.execution_id.as_deref().is_some_and(|id| m.payload["biz_opaque_callback_data"] == id)
            });
            (s.webhook.is_some(), message.cloned(), s.templates.clone())
        });
        if !configured {
            return Err(ReplyRefused::Message("the sandbox has no webhook target to answer through".into()));
        }
        let message =
            message.ok_or_else(|| ReplyRefused::Message("no message the sandbox accepted has that wamid or execution_id".into()))?;
        let reply_id = wamid();
        let mut inbound = json!({"from": message.wa_id, "id": reply_id, "timestamp": unix_now().to_string(),
                                 "context": {"from": SANDBOX_DISPLAY_NUMBER, "id": message.wamid}});
        match (&request.button, &request.text) {
            (Some(label), _) => {
                let index = quick_reply_index(&templates, &message.payload, label).ok_or_else(|| {
                    ReplyRefused::Button(format!("the template of that message has no quick-reply button labelled '{label}'"))
                })?;
                let payload = message.payload["template"]["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["sub_type"] == "quick_reply" && c["index"].as_str().and_then(|i| i.parse().ok()) == Some(index))
                    .and_then(|c| c["parameters"][0]["payload"].as_str())
                    .unwrap_or(label)
                    .to_owned();
                inbound["type"] = json!("button");
                inbound["button"] = json!({"payload": payload, "text": label});
            }
            (None, Some(text)) => {
                inbound["type"] = json!("text");
                inbound["text"] = json!({"body": text});
            }
            (None, None) => return Err(ReplyRefused::Text("give text or button".into())),
        }
        let value = json!({"contacts": [{"profile": {"name": "Sandbox Recipient"}, "wa_id": message.wa_id}], "messages": [inbound]});
        self.post_webhook(&message.from, value).await.map_err(ReplyRefused::Message)?;
        Ok(json!({"message_id": reply_id, "context": message.wamid}))
    }

    /// Posts one signed webhook about `phone_number_id`'s messages, retrying
    /// as Meta does; each try goes to the target configured at that moment,
    /// as Meta's goes to the callback URL.
    async fn post_webhook(&self, phone_number_id: &str, value: Value) -> Result<(), String> {
        let waba_id = self.with_state(|s| s.waba_id.clone());
        let mut value = value;
        value["messaging_product"] = json!("whatsapp");
        value["metadata"] = json!({"display_phone_number": SANDBOX_DISPLAY_NUMBER, "phone_number_id": phone_number_id});
        let body = json!({"object": "whatsapp_business_account",
                          "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}]})
        .to_string();
        let client = reqwest::Client::new();
        let mut last = String::new();
        for attempt in 0..WEBHOOK_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8)))).await;
            }
            let Some(target) = self.with_state(|s| s.webhook.clone()) else { return Err("no webhook target".into()) };
            let sent = client
                .post(&target.url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sign(&target.app_secret, body.as_bytes()))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => last = format!("the webhook answered {}", response.status()),
                Err(error) => last = error.without_url().to_string(),
            }
        }
        Err(last)
    }

    /// Posts the statuses Meta would, one after another, in the background.
    fn report_statuses(&self, message: &Arc<SentMessage>, failure: Option<(i64, String)>) {
        if self.with_state(|s| s.webhook.is_none()) {
            return;
        }
        let delays = self.with_state(|s| s.status_delays);
        let mut plan = vec![("sent", delays[0], None)];
        match failure {
            Some(error) => plan.push(("failed", delays[1], Some(error))),
            None => plan.extend([("delivered", delays[1], None), ("read", delays[2], None)]),
        }
        let (sandbox, message) = (self.clone(), Arc::clone(message));
        tokio::spawn(async move {
            let mut elapsed = Duration::ZERO;
            for (status, at, error) in plan {
                tokio::time::sleep(at.saturating_sub(elapsed)).await;
                elapsed = elapsed.max(at);
                let mut entry = json!({"id": message.wamid, "status": status, "timestamp": unix_now().to_string(),
                                       "recipient_id": message.wa_id,
                                       "biz_opaque_callback_data": message.payload["biz_opaque_callback_data"]});
                if let Some((code, text)) = error {
                    let details = "The recipient's number is not on WhatsApp or cannot receive this message";
                    entry["errors"] = json!([{"code": code, "title": text, "message": text, "error_data": {"details": details}}]);
                }
                if let Err(error) = sandbox.post_webhook(&message.from, json!({"statuses": [entry]})).await {
                    tracing::warn!(%error, "the sandbox could not post a status webhook");
                }
            }
        });
    }
}

/// Why the sandbox could not answer, by the request field it concerns.
#[derive(Debug)]
pub enum ReplyRefused {
    /// The message named (by execution_id or wamid) cannot be answered.
    Message(String),
    /// Its template has no quick-reply button of that label.
    Button(String),
    /// Neither a text nor a button was given.
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplyRequest {
    /// The message answered: its wamid, or the execution id it carries.
    pub wamid: Option<String>,
    pub execution_id: Option<String>,
    pub text: Option<String>,
    /// The label of the quick-reply button tapped.
    pub button: Option<String>,
}

fn quick_reply_index(templates: &[Value], payload: &Value, label: &str) -> Option<usize> {
    let name = &payload["template"]["name"];
    let language = &payload["template"]["language"]["code"];
    let template = templates.iter().find(|t| &t["name"] == name && &t["language"] == language)?;
    let buttons = template["components"].as_array()?.iter().find(|c| c["type"] == "BUTTONS")?["buttons"].as_array()?;
    buttons.iter().position(|b| b["type"] == "QUICK_REPLY" && b["text"] == label)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A message id in Meta's shape: `wamid.` and base64.
fn wamid() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("wamid.HBgL{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// `POST /{version}/{phone_number_id}/messages`, judged as Meta judges a template send.
async fn messages(
    State(sandbox): State<Sandbox>,
    Path((_version, node)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&sandbox, &headers) {
        return invalid_token();
    }
    if !sandbox.has_phone_number(&node) {
        return unknown_node(&node);
    }
    // Not through axum's `Json`: its tracking of the path to each value, for
    // its errors, made this parse, most of a send's cost here, 38 % dearer.
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return meta_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
    };
    if let Some(refusal) = template_refusal(&sandbox, &message) {
        return refusal;
    }
    let to = message["to"].as_str().unwrap_or_default().trim_start_matches('+').to_owned();
    let outcome = sandbox.with_state(|s| {
        if let Some(scripted) = s.scripts.get_mut(&to).and_then(VecDeque::pop_front) {
            return scripted;
        }
        if to == THROTTLED_RECIPIENT {
            s.throttled_sends += 1;
        }
        match to.as_str() {
            UNDELIVERABLE_RECIPIENT => Scripted::FailLater { code: 131026, message: "Message undeliverable".into() },
            THROTTLED_RECIPIENT if s.throttled_sends % 2 == 1 => {
                Scripted::Refuse { status: 400, code: 130429, message: "Rate limit hit: too many messages from this phone number".into() }
            }
            _ => Scripted::Accept,
        }
    });
    let answered = !matches!(outcome, Scripted::TakenButUnanswered);
    let failure = match outcome {
        Scripted::Refuse { status, code, message } => {
            return meta_error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), code, &message);
        }
        Scripted::Bodiless500 => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Scripted::FailLater { code, message } => Some((code, message)),
        Scripted::Accept | Scripted::TakenButUnanswered => None,
    };
    let wa_id = sandbox.with_state(|s| s.wa_ids.get(&to).cloned()).unwrap_or_else(|| to.clone());
    let sent = Arc::new(SentMessage { wamid: wamid(), from: node, to: to.clone(), wa_id, payload: message, at: std::time::Instant::now() });
    let answer_delay = sandbox.with_state(|s| {
        if s.sent.len() == SENT_REMEMBERED {
            s.sent.pop_front();
        }
        s.sent.push_back(Arc::clone(&sent));
        s.sent_total += 1;
        s.answer_delay
    });
    sandbox.report_statuses(&sent, failure);
    tokio::time::sleep(answer_delay).await;
    if !answered {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": format!("+{to}"), "wa_id": sent.wa_id}],
                "messages": [{"id": sent.wamid, "message_status": "accepted"}]}))
    .into_response()
}

/// Meta's checks of a template send: the template exists in the language, is
/// APPROVED, and gets as many body parameters as it has placeholders. The
/// error response Meta would give, if any.
fn template_refusal(sandbox: &Sandbox, message: &Value) -> Option<Response> {
    let name = &message["template"]["name"];
    let language = &message["template"]["language"]["code"];
    // Read where the templates are kept, not copied out: this runs for every send.
    let template = sandbox.with_state(|s| {
        let template = s.templates.iter().find(|t| &t["name"] == name && &t["language"] == language)?;
        let parameter_format = template["parameter_format"].as_str().unwrap_or("POSITIONAL");
        let body_params = TemplateShape::of_parts(parameter_format, &template["components"]).counts().body_params;
        Some((template["status"].as_str().map(str::to_owned), body_params))
    });
    let unknown = || meta_error(StatusCode::NOT_FOUND, 132001, "Template name does not exist in the translation");
    let Some((status, expected)) = template else { return Some(unknown()) };
    match status.as_deref() {
        Some("APPROVED") => {}
        Some("PAUSED") => return Some(meta_error(StatusCode::BAD_REQUEST, 132015, "Template is paused due to low quality")),
        _ => return Some(unknown()),
    }
    let given = message["template"]["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "body")
        .and_then(|c| c["parameters"].as_array())
        .map_or(0, Vec::len);
    if given != expected {
        let details = format!("body: number of localizable_params ({given}) does not match the expected number of params ({expected})");
        return Some(meta_error(
            StatusCode::BAD_REQUEST,
            132000,
            &format!("Number of parameters does not match the expected number of params: {details}"),
        ));
    }
    None
}

/// Meta's error object, as its Graph API returns it.
fn meta_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": format!("({code}) {message}"), "type": "OAuthException", "code": code,
                                "fbtrace_id": "AsandboxTrace"}});
    (status, Json(body)).into_response()
}

fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    sandbox.with_state(|s| given == Some(s.access_token.as_str()))
}

fn invalid_token() -> Response {
    meta_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token - Cannot parse access token")
}

fn unknown_node(node: &str) -> Response {
    meta_error(
        StatusCode::BAD_REQUEST,
        100,
        &format!(
            "Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
        ),
    )
}

async fn node(State(sandbox): State<Sandbox>, Path((_version, node)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if !authorized(&sandbox, &headers) {
        return invalid_token();
    }
    if !sandbox.has_phone_number(&node) {
        return unknown_node(&node);
    }
    Json(json!({
        "id": node,
        "display_phone_number": SANDBOX_DISPLAY_NUMBER,
        "verified_name": "actiond Sandbox",
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"}
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<usize>,
    limit: Option<usize>,
}

async fn message_templates(
    State(sandbox): State<Sandbox>,
    Path((_version, node)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sandbox, &headers) {
        return invalid_token();
    }
    let (waba_id, templates, page_size) = sandbox.with_state(|s| (s.waba_id.clone(), s.templates.clone(), s.page_size));
    if node != waba_id {
        return unknown_node(&node);
    }
    let start = page.after.unwrap_or(0).min(templates.len());
    let end = (start + page.limit.unwrap_or(page_size).min(page_size)).min(templates.len());
    let mut paging = json!({"cursors": {"before": start.to_string(), "after": end.to_string()}});
    if end < templates.len() {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        paging["next"] = json!(format!("http://{host}{}?limit={page_size}&after={end}", uri.path()));
    }
    Json(json!({"data": templates[start..end], "paging": paging})).into_response()
}

/// The sandbox WABA's templates: one per shape actiond must fill, and one PAUSED.
fn default_templates() -> Vec<Value> {
    vec![
        json!({"id": "1000000000000001", "name": "call_permission_request", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Hi {{1}}, may we call you back about your request? Reply YES or NO.",
             "example": {"body_text": [["Ana"]]}},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Yes"}, {"type": "QUICK_REPLY", "text": "No"}]}
        ]}),
        json!({"id": "1000000000000002", "name": "order_update", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "POSITIONAL", "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1042"]}},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is {{3}}.",
             "example": {"body_text": [["Ana", "A-1042", "on its way"]]}},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "URL", "text": "Track order", "url": "https://shop.example.com/track/{{1}}", "example": ["https://shop.example.com/track/A-1042"]},
                {"type": "QUICK_REPLY", "text": "Talk to an agent"}
            ]}
        ]}),
        json!({"id": "1000000000000003", "name": "appointment_reminder", "language": "en", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "NAMED", "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://example.com/clinic.jpg"]}},
            {"type": "BODY", "text": "Hello {{first_name}}, see you on {{date}}. Can you make it?",
             "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ana"}, {"param_name": "date", "example": "May 3"}]}},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Confirm"}, {"type": "QUICK_REPLY", "text": "Reschedule"}]}
        ]}),
        json!({"id": "1000000000000004", "name": "appointment_reminder", "language": "es", "status": "APPROVED",
        "category": "UTILITY", "parameter_format": "NAMED", "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://example.com/clinic.jpg"]}},
            {"type": "BODY", "text": "Hola {{first_name}}, te esperamos el {{date}}. ¿Puedes venir?"},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Confirmar"}, {"type": "QUICK_REPLY", "text": "Cambiar"}]}
        ]}),
        json!({"id": "1000000000000005", "name": "discount_code", "language": "en_US", "status": "APPROVED",
        "category": "MARKETING", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Thanks for calling, {{1}}! Here is {{2}} off your next order."},
            {"type": "BUTTONS", "buttons": [{"type": "COPY_CODE", "example": "SAVE10"}]}
        ]}),
        json!({"id": "1000000000000006", "name": "summer_promo", "language": "en", "status": "PAUSED",
        "category": "MARKETING", "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": "Our summer sale starts today, {{1}}!"}
        ]}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneE164;

    #[test]
    fn scripted_recipients_are_valid_numbers() {
        for number in [UNDELIVERABLE_RECIPIENT, THROTTLED_RECIPIENT] {
            assert_eq!(PhoneE164::parse(number).map(|p| p.digits().to_owned()), Ok(number.to_owned()), "{number}");
        }
    }
}
