//! Meta's webhook: the signature over the raw bytes, and the events of one
//! POST (many entries, changes, statuses and messages) read into the store's
//! events, each with the key that makes it apply once. Unknown shapes are
//! skipped, never an error: a new Meta field must not break the pipeline.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::errors::describe;
use crate::clock;
use crate::domain::{ExecutionStatus, holds_nul};
use crate::store::{EventParties, ExecutionError, ExecutionReply, FailureCode, WebhookEvent};

/// The HMAC an `X-Hub-Signature-256` value carries: `sha256=` and 64 hex
/// digits, nothing else.
pub fn parse_signature(header: &str) -> Option<[u8; 32]> {
    let hex = header.trim().strip_prefix("sha256=")?.as_bytes();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |byte: u8| (byte as char).to_digit(16).map(|value| value as u8);
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(digest)
}

/// Whether `signature` is the HMAC-SHA256 of the raw body under the app
/// secret, compared in constant time.
pub fn signature_is_valid(app_secret: &str, body: &[u8], signature: &[u8; 32]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

/// The `X-Hub-Signature-256` value for `body`, as Meta (and the sandbox) sign it.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A signed payload read as JSON. Where the whole does not parse (a lone
/// surrogate in a person's text, a number past f64, depth past 128), each
/// array item is read alone and the ones that fail become `null`: one bad
/// message costs itself, not the batch's other events. `null` when nothing
/// can be read.
pub fn read_payload(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(%error, "a signed webhook payload does not parse whole; its events are read one by one");
            let mut reader = serde_json::Deserializer::from_slice(body);
            serde::de::DeserializeSeed::deserialize(ItemByItem { arrays: ITEM_BY_ITEM_ARRAYS }, &mut reader).unwrap_or(Value::Null)
        }
    }
}

/// How many levels of arrays `read_payload` reads item by item: a payload's
/// `entry`, its `changes`, and their `statuses` and `messages`. Deeper ones
/// are read whole, under serde_json's depth limit: each item read alone
/// starts a reader of its own, whose limit starts anew, so unbounded it
/// would let a deep nest of arrays overflow the stack.
const ITEM_BY_ITEM_ARRAYS: usize = 3;

/// A JSON value whose arrays, `arrays` levels deep, are read an item at a
/// time (see `read_payload`).
#[derive(Clone, Copy)]
struct ItemByItem {
    arrays: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemByItem {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemByItem {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(Value::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(number.into())
    }

    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(number.into())
    }

    fn visit_f64<E>(self, number: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, text: &str) -> Result<Value, E> {
        Ok(Value::String(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Value, E> {
        Ok(Value::String(text))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let Some(inner) = self.arrays.checked_sub(1) else {
            return Value::deserialize(serde::de::value::SeqAccessDeserializer::new(items));
        };
        let mut read = Vec::new();
        // Skipping over an item checks only its syntax, so a bad one is
        // held whole here and fails alone when read.
        while let Some(raw) = items.next_element::<&serde_json::value::RawValue>()? {
            let mut reader = serde_json::Deserializer::from_str(raw.get());
            read.push(serde::de::DeserializeSeed::deserialize(ItemByItem { arrays: inner }, &mut reader).unwrap_or(Value::Null));
        }
        Ok(Value::Array(read))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<Value, A::Error> {
        let mut read = serde_json::Map::new();
        while let Some(name) = fields.next_key::<String>()? {
            read.insert(name, fields.next_value_seed(self)?);
        }
        Ok(Value::Object(read))
    }
}

/// Every event of one webhook POST.
pub fn events(payload: &Value) -> Vec<WebhookEvent> {
    let mut events = Vec::new();
    for entry in payload["entry"].as_array().into_iter().flatten() {
        let waba_id = text(&entry["id"]);
        for change in entry["changes"].as_array().into_iter().flatten() {
            let value = &change["value"];
            match change["field"].as_str() {
                Some("messages") => {
                    let phone_number_id = text(&value["metadata"]["phone_number_id"]);
                    let parties = |person: &Value| EventParties { phone_number_id: phone_number_id.clone(), person: text(person) };
                    let statuses = value["statuses"].as_array().into_iter().flatten();
                    events.extend(statuses.filter_map(|status| status_event(status, parties(&status["recipient_id"]))));
                    let messages = value["messages"].as_array().into_iter().flatten();
                    events.extend(messages.filter_map(|message| reply_event(message, parties(&message["from"]))));
                }
                Some("message_template_status_update") => events.extend(template_event(&waba_id, entry, value)),
                _ => {}
            }
        }
    }
    events.retain(storable);
    events
}

/// Meta's ids and names are stored and looked up as text, which on
/// PostgreSQL cannot hold NUL: an event naming one with NUL names nothing
/// actiond sent or knows, and is skipped (acknowledged, as any event that
/// matches nothing), rather than failing the whole POST for Meta to retry.
fn storable(event: &WebhookEvent) -> bool {
    let texts: Vec<&str> = match event {
        WebhookEvent::Status { key, parties, wamid, .. } => vec![key, &parties.phone_number_id, &parties.person, wamid],
        WebhookEvent::Reply { key, parties, context_wamid, .. } => {
            vec![key, &parties.phone_number_id, &parties.person, context_wamid.as_deref().unwrap_or_default()]
        }
        WebhookEvent::TemplateStatus { key, waba_id, name, language, event, reason } => {
            vec![key, waba_id, name, language, event, reason.as_deref().unwrap_or_default()]
        }
    };
    let storable = !texts.into_iter().any(holds_nul);
    if !storable {
        tracing::warn!("a webhook event names an id holding NUL; skipped");
    }
    storable
}

/// IDs and timestamps are strings in Meta's payloads, except where they are not.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn status_event(status: &Value, parties: EventParties) -> Option<WebhookEvent> {
    let wamid = status["id"].as_str()?.to_owned();
    let name = status["status"].as_str()?;
    let next = match name {
        "sent" => ExecutionStatus::Sent,
        "delivered" => ExecutionStatus::Delivered,
        "read" => ExecutionStatus::Read,
        "failed" => ExecutionStatus::Failed,
        _ => return None,
    };
    let error = (next == ExecutionStatus::Failed).then(|| {
        let first = &status["errors"][0];
        let title = first["message"].as_str().or(first["title"].as_str()).unwrap_or("Meta reported the message failed");
        let message = describe(title, first["error_data"]["details"].as_str());
        ExecutionError::new(FailureCode::ProviderError, message, first["code"].as_i64())
    });
    Some(WebhookEvent::Status {
        key: format!("status:{wamid}:{name}"),
        parties,
        execution_hint: status["biz_opaque_callback_data"].as_str().and_then(|id| Uuid::parse_str(id).ok()),
        wamid,
        status: next,
        error,
    })
}

fn reply_event(message: &Value, parties: EventParties) -> Option<WebhookEvent> {
    let id = message["id"].as_str()?;
    let owned = |value: &Value| value.as_str().map(str::to_owned);
    let (kind, text, payload) = match message["type"].as_str()? {
        "text" => ("text", owned(&message["text"]["body"]), None),
        "button" => ("button", owned(&message["button"]["text"]), owned(&message["button"]["payload"])),
        "interactive" => {
            let subtype = message["interactive"]["type"].as_str()?;
            let answer = &message["interactive"][subtype];
            let (text, payload) = match subtype {
                "button_reply" | "list_reply" => (owned(&answer["title"]), owned(&answer["id"])),
                // A completed WhatsApp Flow: its answers are the JSON text Meta sends.
                "nfm_reply" => (owned(&answer["body"]), owned(&answer["response_json"])),
                // A call permission request answered: `accept` or `reject`.
                "call_permission_reply" => (owned(&answer["response"]), None),
                // A kind of answer this version does not know is still the
                // person's answer to the message: kept whole, as JSON text.
                _ => (None, Some(answer).filter(|answer| !answer.is_null()).map(Value::to_string)),
            };
            ("interactive", text, payload)
        }
        // A voice note, a photo or a file sent in answer: its caption, if any, and
        // the media id with which the business fetches it from Meta.
        media @ ("image" | "video" | "document" | "audio" | "sticker") => {
            (media, owned(&message[media]["caption"]), owned(&message[media]["id"]))
        }
        _ => return None,
    };
    let context_wamid = message["context"]["id"].as_str().map(str::to_owned);
    // A quick reply's payload is `<execution id>:<button index>` (see payload.rs).
    let execution_hint = payload.as_deref().and_then(|p| p.split(':').next()).and_then(|id| Uuid::parse_str(id).ok());
    if context_wamid.is_none() && execution_hint.is_none() {
        return None;
    }
    let received_at =
        message["timestamp"].as_str().and_then(|t| t.parse().ok()).and_then(clock::from_unix_seconds).unwrap_or_else(clock::now);
    Some(WebhookEvent::Reply {
        key: format!("message:{id}"),
        parties,
        context_wamid,
        execution_hint,
        reply: ExecutionReply { kind: kind.into(), text, payload, received_at },
    })
}

fn template_event(waba_id: &str, entry: &Value, value: &Value) -> Option<WebhookEvent> {
    let event = value["event"].as_str()?.to_ascii_uppercase();
    let name = value["message_template_name"].as_str()?.to_owned();
    let language = value["message_template_language"].as_str()?.to_owned();
    // The same template may go PAUSED, APPROVED, PAUSED: each change is its own event.
    let digest = Sha256::digest(format!("{}{}", entry["time"], value).as_bytes());
    let key = format!(
        "template:{}:{}",
        text(&value["message_template_id"]),
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
    );
    // Meta writes "NONE" when it gives no reason.
    let reason = value["reason"].as_str().filter(|reason| !reason.is_empty() && *reason != "NONE").map(str::to_owned);
    Some(WebhookEvent::TemplateStatus { key, waba_id: waba_id.to_owned(), name, language, event, reason })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signatures_are_checked_over_the_raw_bytes() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = sign("app-secret", body);
        let signature = parse_signature(&header).expect("sign writes sha256=<64 hex>");
        assert!(signature_is_valid("app-secret", body, &signature));
        assert!(!signature_is_valid("other-secret", body, &signature));
        assert!(!signature_is_valid("app-secret", b"{}", &signature));
        for malformed in ["sha256=zz", header.trim_start_matches("sha256="), &header[..header.len() - 1], &format!("{header}0")] {
            assert!(parse_signature(malformed).is_none(), "{malformed}");
        }
        assert!(parse_signature(&format!("sha256=+{}", &header[8..])).is_none(), "a sign is not a hex digit");
    }

    #[test]
    fn reads_a_batch_of_statuses_replies_and_template_updates() {
        let execution = Uuid::now_v7();
        let payload = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "102", "changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "650175178190170"},
                "statuses": [
                    {"id": "wamid.A", "status": "delivered", "timestamp": "1750030073", "recipient_id": "12817126508",
                     "biz_opaque_callback_data": execution.to_string()},
                    {"id": "wamid.B", "status": "failed", "errors": [{"code": 131026, "title": "Message undeliverable", "error_data": {"details": "not on WhatsApp"}}]},
                    {"id": "wamid.C", "status": "played"}
                ],
                "messages": [
                    {"id": "wamid.R1", "from": "1", "timestamp": "1750091045", "type": "button", "context": {"id": "wamid.A"},
                     "button": {"payload": format!("{execution}:0"), "text": "Yes"}},
                    {"id": "wamid.R2", "type": "text", "text": {"body": "no context: not a reply"}}
                ]}}]},
            {"id": "103", "time": 1750000000, "changes": [{"field": "message_template_status_update", "value":
                {"event": "PAUSED", "message_template_id": 1234, "message_template_name": "order_update", "message_template_language": "en"}}]}
        ]});
        let events = events(&payload);
        assert_eq!(events.len(), 4, "{events:?}");
        match &events[0] {
            WebhookEvent::Status { key, parties, execution_hint, status, .. } => {
                assert_eq!(
                    (key.as_str(), *execution_hint, *status),
                    ("status:wamid.A:delivered", Some(execution), ExecutionStatus::Delivered)
                );
                assert_eq!((parties.phone_number_id.as_str(), parties.person.as_str()), ("650175178190170", "12817126508"));
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            WebhookEvent::Status { error: Some(error), .. } => {
                assert_eq!(error.provider_code, Some(131026));
                assert_eq!(error.message, "Message undeliverable: not on WhatsApp");
            }
            other => panic!("{other:?}"),
        }
        match &events[2] {
            WebhookEvent::Reply { key, parties, context_wamid, execution_hint, reply } => {
                assert_eq!(key, "message:wamid.R1");
                assert_eq!((parties.phone_number_id.as_str(), parties.person.as_str()), ("650175178190170", "1"));
                assert_eq!(context_wamid.as_deref(), Some("wamid.A"));
                assert_eq!(*execution_hint, Some(execution));
                assert_eq!((reply.kind.as_str(), reply.text.as_deref()), ("button", Some("Yes")));
                assert_eq!(reply.received_at, "2025-06-16T16:24:05.000000Z");
            }
            other => panic!("{other:?}"),
        }
        match &events[3] {
            WebhookEvent::TemplateStatus { waba_id, name, event, .. } => {
                assert_eq!((waba_id.as_str(), name.as_str(), event.as_str()), ("103", "order_update", "PAUSED"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_replies_carry_their_title_and_id() {
        let payload = json!({"entry": [{"changes": [{"field": "messages", "value": {"messages": [
            {"id": "wamid.L", "type": "interactive", "context": {"id": "wamid.A"},
             "interactive": {"type": "list_reply", "list_reply": {"id": "slot-2", "title": "Tuesday 10:00", "description": "Clinic"}}}]}}]}]});
        match &events(&payload)[..] {
            [WebhookEvent::Reply { reply, context_wamid, .. }] => {
                assert_eq!(
                    (reply.kind.as_str(), reply.text.as_deref(), reply.payload.as_deref()),
                    ("interactive", Some("Tuesday 10:00"), Some("slot-2"))
                );
                assert_eq!(context_wamid.as_deref(), Some("wamid.A"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn media_flow_and_call_permission_answers_are_replies_and_other_kinds_are_not() {
        let answer = |kind: &str, content: Value| {
            let mut message = json!({"id": format!("wamid.{kind}"), "type": kind, "context": {"id": "wamid.A"}});
            message[kind] = content;
            message
        };
        let payload = json!({"entry": [{"changes": [{"field": "messages", "value": {"messages": [
            answer("audio", json!({"id": "1013859600285441", "mime_type": "audio/ogg; codecs=opus", "voice": true})),
            answer("image", json!({"id": "2754859441498128", "caption": "the receipt", "mime_type": "image/jpeg"})),
            answer("interactive", json!({"type": "nfm_reply",
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{\"slot\": \"10:00\"}"}})),
            answer("interactive", json!({"type": "call_permission_reply",
                "call_permission_reply": {"response": "accept", "is_permanent": false, "response_source": "user_action"}})),
            answer("interactive", json!({"type": "rating_reply", "rating_reply": {"stars": 5}})),
            answer("location", json!({"latitude": 37.4, "longitude": -122.1})),
            answer("unsupported", json!({}))
        ]}}]}]});
        let replies: Vec<_> = events(&payload)
            .into_iter()
            .map(|event| match event {
                WebhookEvent::Reply { reply, .. } => (reply.kind, reply.text, reply.payload),
                other => panic!("{other:?}"),
            })
            .collect();
        let reply =
            |kind: &str, text: Option<&str>, payload: Option<&str>| (kind.to_owned(), text.map(str::to_owned), payload.map(str::to_owned));
        assert_eq!(
            replies,
            [
                reply("audio", None, Some("1013859600285441")),
                reply("image", Some("the receipt"), Some("2754859441498128")),
                reply("interactive", Some("Sent"), Some("{\"slot\": \"10:00\"}")),
                reply("interactive", Some("accept"), None),
                reply("interactive", None, Some(r#"{"stars":5}"#)),
            ]
        );
    }

    #[test]
    fn events_naming_an_id_with_nul_are_skipped() {
        let payload = json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "650175178190170"},
            "statuses": [
                {"id": "wamid.A\u{0}", "status": "sent", "recipient_id": "12817126508"},
                {"id": "wamid.B", "status": "sent", "recipient_id": "12817126508"}
            ],
            "messages": [{"id": "wamid.C", "from": "1281\u{0}", "type": "text", "text": {"body": "Yes"}, "context": {"id": "wamid.B"}}]
        }}]}]});
        let events = events(&payload);
        assert!(matches!(events.as_slice(), [WebhookEvent::Status { wamid, .. }] if wamid == "wamid.B"), "{events:?}");
    }

    #[test]
    fn an_item_that_cannot_be_read_costs_only_itself() {
        // One batch of two entries: a status whose price is past f64, and a
        // reply whose text holds `text` (raw JSON), beside two good statuses.
        let batch = |text: &str| {
            let value = r#"{"metadata": {"phone_number_id": "5"}, "statuses": [
                {"id": "wamid.A", "status": "delivered", "recipient_id": "12817126508"},
                {"id": "wamid.C", "status": "read", "recipient_id": "12817126508", "pricing": {"rate": 1e400}}],
                "messages": [{"id": "in-1", "from": "12817126508", "type": "text", "text": {"body": "TEXT"}, "context": {"id": "wamid.A"}}]}"#;
            let second = r#"{"statuses": [{"id": "wamid.B", "status": "read", "recipient_id": "12817126508"}]}"#;
            let change = |value: &str| format!(r#"{{"changes": [{{"field": "messages", "value": {value}}}]}}"#);
            format!(r#"{{"entry": [{}, {}]}}"#, change(&value.replace("TEXT", text)), change(second))
        };
        let read = |body: String| -> Vec<String> {
            events(&read_payload(body.as_bytes()))
                .into_iter()
                .map(|event| match event {
                    WebhookEvent::Status { wamid, .. } => wamid,
                    WebhookEvent::Reply { reply, .. } => format!("reply {}", reply.text.unwrap_or_default()),
                    WebhookEvent::TemplateStatus { name, .. } => name,
                })
                .collect()
        };
        assert_eq!(
            read(batch(r"hi \ud83d\ude00")),
            ["wamid.A", "reply hi \u{1F600}", "wamid.B"],
            "a number past f64 costs its status only"
        );
        assert_eq!(read(batch(r"hi \ud83d")), ["wamid.A", "wamid.B"], "a lone surrogate costs its reply only");
        assert_eq!(read_payload(br#"{"entry": "\ud83d"}"#), Value::Null, "nothing outside an array can be saved");
    }

    #[test]
    fn a_deep_nest_of_arrays_is_refused_without_exhausting_the_stack() {
        for depth in [200, 100_000] {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(r#"{{"entry": [{{"id": "1", "changes": [{nest}]}}, {nest}], "object": {nest}}}"#);
            assert!(events(&read_payload(body.as_bytes())).is_empty(), "{depth}");
        }
    }

    #[test]
    fn unknown_shapes_are_skipped() {
        assert!(events(&json!({"entry": "nope"})).is_empty());
        assert!(events(&json!({"entry": [{"changes": [{"field": "account_update", "value": {}}]}]})).is_empty());
        assert!(events(&json!([1, 2])).is_empty());
    }
}
