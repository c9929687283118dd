//! Schemas of the request fields whose rules JSON Schema can say only with a
//! pattern: the server trims text, reads some words in any letter case and
//! phone numbers with punctuation. Each pattern matches exactly what the
//! parser in `crate::domain` (or the handler) accepts, so a contract tester's
//! valid data passes validation and its invalid data is refused; the tests
//! below hold the two together. What no schema can know (whether a sender is
//! registered, a template approved, a number assigned) stays in descriptions.

use serde_json::json;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

use crate::domain::LANGUAGE_CODES;

/// What `str::trim` removes (Unicode White_Space), as the inside of a regex class.
const SPACE: &str = r"\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Text of 1..=`max` characters once trimmed, without the NUL character no text field may hold.
fn trimmed(max: usize) -> String {
    format!(r"^[{SPACE}]*[^{SPACE}\u0000](?:[^\u0000]{{0,{}}}[^{SPACE}\u0000])?[{SPACE}]*$", max - 2)
}

/// Any text without the NUL character, for the fields and query parameters with no other rule.
pub const WITHOUT_NUL: &str = r"^[^\u0000]*$";

/// `inner`, surrounded by anything trimming removes.
fn padded(inner: &str) -> String {
    format!(r"^[{SPACE}]*{inner}[{SPACE}]*$")
}

/// An ASCII word in any letter case.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| if c.is_ascii_alphabetic() { format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()) } else { c.to_string() })
        .collect()
}

/// A phone number in international form as `PhoneE164::parse` reads it: one
/// optional leading `+`, 1-15 digits among spaces, dashes, dots and parentheses.
const PHONE: &str = r"\+?[ ().-]*(?:[0-9][ ().-]*){1,15}";

const PHONE_RULE: &str = "A phone number in international form (digits, an optional leading +, spaces, dashes, dots and parentheses), \
     valid by libphonenumber's rules for its country code; stored as E.164 digits without +.";

fn string(pattern: String, description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).description(Some(description))
}

fn nullable(builder: ObjectBuilder, kind: Type) -> ObjectBuilder {
    builder.schema_type(SchemaType::from_iter([kind, Type::Null]))
}

pub fn name() -> Object {
    string(trimmed(crate::domain::NAME_MAX_CHARS), "Action display name, 1-255 characters after trimming.")
        .examples([json!("My Whatsapp Action")])
        .build()
}

pub fn description() -> Object {
    string(trimmed(crate::domain::DESCRIPTION_MAX_CHARS), "Action purpose, 1-2,000 characters after trimming.")
        .examples([json!("Send WhatsApp when user requests messaging")])
        .build()
}

pub fn action_type() -> Object {
    string(padded(&any_case("SEND_WHATSAPP")), "`SEND_WHATSAPP`, any letter case.").examples([json!("SEND_WHATSAPP")]).build()
}

pub fn action_timing() -> Object {
    string(padded(&any_case("during")), "When to trigger: `during`, any letter case; stored as DURING.").examples([json!("during")]).build()
}

pub fn phone() -> Object {
    string(padded(PHONE), PHONE_RULE).examples([json!("12817126508")]).build()
}

/// A phone number, or nothing: `null`, empty or blank mean none.
pub fn optional_phone() -> Object {
    let description = format!("{PHONE_RULE} Null, empty or blank means none.");
    nullable(string(padded(&format!("(?:{PHONE})?")), &description), Type::String).build()
}

pub fn sender() -> Object {
    string(
        format!(r"^[^\u0000]*[^{SPACE}\u0000][^\u0000]*$"),
        "WhatsApp phone-number ID of a sender registered for this tenant (`GET /v2/_whatsapp/senders`).",
    )
    .examples([json!("650175178190170")])
    .build()
}

pub fn template_name() -> Object {
    let schema = string(
        "^[a-z0-9_]{1,512}$".to_owned(),
        "An APPROVED template of the sender's WhatsApp Business Account in `language_code` (`GET /v2/_whatsapp/templates`).",
    )
    .examples([json!("call_permission_request")])
    .build();
    not(schema, r"\n")
}

/// `schema`, refusing strings that `pattern` finds. For patterns ending in
/// `$`, `\n` is listed here too: Python's `$` (which contract testers
/// generate with) also matches before a final newline; ECMA's and Rust's do not.
fn not(mut schema: Object, pattern: &str) -> Object {
    // utoipa 5 has no `not`; the extensions map is written into the schema as is.
    schema.extensions.get_or_insert_with(Default::default).insert("not".to_owned(), json!({ "pattern": pattern }));
    schema
}

pub fn language_code() -> Object {
    // Meta's spelling is matched exactly, else in any letter case with - for _.
    let codes: Vec<String> = LANGUAGE_CODES.iter().map(|code| any_case(code).replace('_', "[-_]")).collect();
    let description = "One of WhatsApp's template language codes (en, en_US, pt_BR, …), any letter case, - or _. Default `en`.";
    nullable(string(padded(&format!("(?:{})", codes.join("|"))), description), Type::String).examples([json!("en")]).build()
}

/// Characters `str::trim` removes, less those a parameter may not hold.
const SPACE_IN_PARAM: &str = r"\u000B\f \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// A placeholder whose inside, trimmed, is not a variable name.
fn invalid_placeholder() -> String {
    let s = SPACE_IN_PARAM;
    format!(
        r"\{{\{{(?:[{s}]*|[{s}]*[^{{}}A-Za-z_{s}][^{{}}]*|[{s}]*[A-Za-z_][A-Za-z0-9_.]*(?:[^{{}}A-Za-z0-9_.{s}][^{{}}]*|[{s}]+[^{{}}{s}][^{{}}]*))\}}\}}"
    )
}

/// A template parameter list, `Param::parse` for each item.
pub fn params() -> ArrayBuilder {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(crate::domain::PARAM_MAX_CHARS))
        // No newline, tab or NUL, and at most 4 spaces in a row.
        .pattern(Some(r"^(?:[^\n\r\t \u0000]| {1,4}[^\n\r\t \u0000])* {0,4}$"))
        .description(Some(
            "1-1,024 characters without newline or tab or more than 4 consecutive spaces. May hold {{variable}} placeholders, \
             each named by ^[A-Za-z_][A-Za-z0-9_.]*$, filled from the call's variables.",
        ));
    let item = not(item.build(), &format!(r"\n|{}", invalid_placeholder()));
    ArrayBuilder::new().schema_type(SchemaType::from_iter([Type::Array, Type::Null])).items(item)
}

pub fn body_params() -> utoipa::openapi::schema::Array {
    params()
        .description(Some("One per body placeholder; named placeholders are filled in order of first appearance."))
        .examples([json!(["{{customer_name}}"])])
        .build()
}

pub fn header_params() -> utoipa::openapi::schema::Array {
    params().description(Some("One for a text header with a placeholder; one https:// URL or media id for a media header.")).build()
}

pub fn button_params() -> utoipa::openapi::schema::Array {
    params().description(Some("One per URL button with a placeholder and per COPY_CODE button, in button order.")).build()
}

pub fn call_id() -> Object {
    let description = "The call this execution belongs to, 1-255 characters after trimming; the same call id executes an action once.";
    nullable(string(trimmed(crate::http::executions::CALL_ID_MAX), description), Type::String).examples([json!("call-7f3a")]).build()
}

pub fn variables() -> Object {
    // A whole number within 64 bits is rendered as sent; another would not be.
    let value = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Integer, Type::Boolean, Type::Null]))
        .pattern(Some(WITHOUT_NUL))
        .minimum(Some(i64::MIN))
        .maximum(Some(u64::MAX));
    nullable(ObjectBuilder::new(), Type::Object)
        .additional_properties(Some(value))
        .description(Some(
            "Values for the {{variable}} placeholders of the action's parameters: text, a boolean, or a whole number within 64 \
             bits (any other number is refused, as it would not be rendered as sent); null leaves one unset.",
        ))
        .examples([json!({"customer_name": "Ana"})])
        .build()
}

/// Meta's numeric ids, as the sender routes read them.
pub fn whatsapp_id() -> Object {
    string(padded(&format!("[0-9]{{1,{}}}", crate::http::senders::WHATSAPP_ID_MAX)), "Meta's numeric ID (1-32 digits).")
        .examples([json!("650175178190170")])
        .build()
}

pub fn access_token() -> Object {
    string(
        padded(&format!("[!-~]{{1,{}}}", crate::http::senders::ACCESS_TOKEN_MAX)),
        "A system-user access token: printable ASCII without spaces, at most 4,096 characters. Sealed at rest; never returned or logged.",
    )
    .examples([json!("EAAG...")])
    .build()
}

/// An event endpoint's URL as `events::target::parse` reads it: `https://`
/// in any letter case, a host without credentials, no space, control
/// character or backslash. Where it points is checked by the server alone.
pub fn endpoint_url() -> Object {
    let text = r"[^\s\\\x00-\x1F\x7F-\x9F]";
    let host = r"[^\s\\\x00-\x1F\x7F-\x9F/?#@]";
    let description = "Where events are posted: an https:// URL (http:// too with ACTIOND_EVENTS_ALLOW_LOCAL), at most 2,048 characters, \
         that is not and does not resolve to a loopback, private, link-local, multicast or otherwise internal address.";
    string(padded(&format!("{}://{host}+(?:[/?#]{text}*)?", any_case("https"))), description)
        .max_length(Some(crate::events::target::URL_MAX))
        .examples([json!("https://voice.example.com/actiond/events")])
        .build()
}

/// An endpoint's event filter: absent (or `null` in a PATCH) for every type.
pub fn event_types() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(crate::events::EventType::SUBSCRIBABLE.iter().map(|kind| kind.as_str()))),
        )
        .min_items(Some(1))
        .description(Some("The event types to send; left out (or null) for every type. `webhook.test` cannot be chosen: `_test` sends it to any endpoint."))
        .examples([json!(["execution.replied", "execution.failed"])])
        .build()
}

pub fn endpoint_description() -> Object {
    let max = crate::http::endpoints::ENDPOINT_DESCRIPTION_MAX;
    let inner = format!(r"(?:[^{SPACE}\u0000](?:[^\u0000]{{0,{}}}[^{SPACE}\u0000])?)?", max - 2);
    let description = "What the endpoint is for, at most 1,024 characters after trimming; null clears it.";
    nullable(string(padded(&inner), description), Type::String).examples([json!("Vapi production")]).build()
}

#[cfg(test)]
mod tests {
    use regex::Regex;
    use serde_json::{Map, Value};

    use super::*;
    use crate::domain::{LanguageCode, Param, PhoneE164, parse_action_spec};

    fn pattern(schema: &Object) -> Regex {
        Regex::new(schema.pattern.as_deref().expect("a pattern")).expect("the pattern compiles")
    }

    /// Whether create's parser accepts `value` at `field` (its own errors only).
    fn accepted(field: &str, value: &str) -> bool {
        let mut body: Map<String, Value> = serde_json::from_value(json!({"webhook": {}})).unwrap();
        match field.strip_prefix("webhook.") {
            Some(inner) => body["webhook"][inner] = json!(value),
            None => drop(body.insert(field.to_owned(), json!(value))),
        }
        !parse_action_spec(&body).errors.iter().any(|e| e.field == field)
    }

    const TEXTS: &[&str] = &[
        "",
        " ",
        "a",
        " a ",
        "\u{3000}a\u{85}",
        "\u{1c}a",
        "a\u{feff}",
        "\n\t",
        "send_whatsapp",
        " Send_WhatsApp\n",
        "SEND WHATSAPP",
        "during",
        "DURING ",
        "dur ing",
        "\u{0}",
        "a\u{0}b",
    ];

    #[test]
    fn the_endpoint_url_pattern_matches_the_parser() {
        let pattern = pattern(&endpoint_url());
        for url in [
            "https://hooks.example.com/a?b#c",
            " HTTPS://hooks.example.com:8443\n",
            "http://hooks.example.com/",
            "https:hooks.example.com",
            "https:///path",
            "https://@hooks.example.com/",
            "https://a b/",
            "https://a/\\b",
            "https://a/\u{1}",
            "https://a/\u{85}b",
            "https://a/\u{85}",
            "ftp://a/",
            "https://",
        ] {
            let parsed = crate::events::target::parse(url, false).is_ok();
            assert_eq!(pattern.is_match(url), parsed, "{url:?}");
        }
    }

    #[test]
    fn trimmed_text_patterns_match_the_parser() {
        let long = "x".repeat(255);
        let samples: Vec<String> =
            TEXTS.iter().map(|s| s.to_string()).chain([long.clone(), format!(" {long} "), format!("{long}x")]).collect();
        for (field, schema) in [("name", name()), ("type", action_type()), ("action_timing", action_timing())] {
            let regex = pattern(&schema);
            for sample in &samples {
                assert_eq!(regex.is_match(sample), accepted(field, sample), "{field}: {sample:?}");
            }
        }
    }

    #[test]
    fn phone_pattern_holds_what_the_parser_can_accept() {
        let regex = pattern(&phone());
        for sample in [
            "+1 (281) 712-6508",
            "12817126508",
            " +44 20 7946 0958 ",
            "+",
            "++12817126508",
            "(+1)2817126508",
            "1\u{a0}2817126508",
            "1234567890123456",
        ] {
            if PhoneE164::parse(sample).is_ok() {
                assert!(regex.is_match(sample), "{sample:?} is accepted but refused by the pattern");
            }
            if !regex.is_match(sample) {
                assert!(PhoneE164::parse(sample).is_err(), "{sample:?}");
            }
        }
        assert!(!regex.is_match("+1 (281) 712-6508x"));
        assert!(pattern(&optional_phone()).is_match("  "));
    }

    #[test]
    fn language_pattern_matches_the_parser() {
        let regex = pattern(&language_code());
        for sample in ["en", "EN", "en_US", "en-us", " pt-BR ", "xx", "en_", "enUS", "zh_cn"] {
            assert_eq!(regex.is_match(sample), LanguageCode::parse(sample).is_ok(), "{sample:?}");
        }
    }

    #[test]
    fn param_schema_matches_the_parser() {
        let schema = serde_json::to_value(params().build()).unwrap();
        let shape = Regex::new(schema["items"]["pattern"].as_str().unwrap()).unwrap();
        let refused = Regex::new(schema["items"]["not"]["pattern"].as_str().unwrap()).unwrap();
        for sample in [
            "Ana",
            "{{name}}",
            "{{ customer.name }}",
            "{{}}",
            "{{ }}",
            "{{1x}}",
            "{{a b}}",
            "{{a-b}}",
            "{{{a}}",
            "a    b",
            "a     b",
            "a\tb",
            "{{a}} {{",
            "{{\u{a0}a\u{a0}}}",
            "{{a}}{{9}}",
            "Ana\n",
        ] {
            let schema_says = shape.is_match(sample) && !refused.is_match(sample);
            assert_eq!(schema_says, Param::parse(sample).is_ok(), "{sample:?}");
        }
    }

    /// The server refuses NUL in every text it reads, so every string a
    /// request can carry says so: a pattern, or a set of values.
    #[test]
    fn no_request_string_admits_every_text() {
        fn walk(document: &Value, value: &Value, path: &str) {
            if let Some(name) = value["$ref"].as_str().and_then(|target| target.strip_prefix("#/components/schemas/")) {
                return walk(document, &document["components"]["schemas"][name], &format!("{path} > {name}"));
            }
            let kinds = match &value["type"] {
                Value::Array(kinds) => kinds.clone(),
                kind => vec![kind.clone()],
            };
            if kinds.contains(&json!("string")) && value["in"] != "header" && value["in"] != "path" {
                let ruled = ["pattern", "enum", "format", "const"].iter().any(|rule| value.get(*rule).is_some());
                assert!(ruled, "{path} admits any text, NUL too");
                if let Some(pattern) = value["pattern"].as_str() {
                    let regex = Regex::new(pattern).unwrap();
                    for text in ["\u{0}", "a\u{0}b", "1\u{0}", "\u{0}1"] {
                        assert!(!regex.is_match(text), "{path}: {pattern} admits {text:?}");
                    }
                }
            }
            match value {
                Value::Object(fields) => fields.iter().for_each(|(key, value)| walk(document, value, &format!("{path}/{key}"))),
                Value::Array(items) => items.iter().for_each(|value| walk(document, value, path)),
                _ => {}
            }
        }
        let document: Value = serde_json::from_str(&crate::openapi::document()).unwrap();
        for (route, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let path = format!("{method} {route}");
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "query" && !parameter["name"].as_str().unwrap().starts_with("hub.") {
                        walk(&document, &parameter["schema"], &format!("{path} ?{}", parameter["name"]));
                    }
                }
                walk(&document, &operation["requestBody"], &path);
            }
        }
    }

    /// Python's `$` also matches before a final newline, so a pattern ending
    /// in `$` admits "text\n" to a tester generating data with Python unless
    /// its last class holds `\n` too (trimming takes it) or a `not` refuses it.
    #[test]
    fn no_pattern_admits_a_trailing_newline_the_server_refuses() {
        fn walk(value: &Value, path: &str) {
            if value["in"] == "header" {
                return; // A header value cannot hold a newline.
            }
            if let Some(pattern) = value.get("pattern").and_then(Value::as_str)
                && pattern.ends_with('$')
            {
                // So does a last class of any text but NUL: it holds the newline as well.
                let trimmed = pattern.ends_with(&format!("[{SPACE}]*$")) || pattern.ends_with(r"[^\u0000]*$");
                let refused = value["not"]["pattern"].as_str().is_some_and(|not| not.starts_with(r"\n"));
                assert!(trimmed || refused, "{path}: {pattern}");
            }
            match value {
                Value::Object(fields) => fields.iter().for_each(|(key, value)| walk(value, &format!("{path}/{key}"))),
                Value::Array(items) => items.iter().for_each(|value| walk(value, path)),
                _ => {}
            }
        }
        walk(&serde_json::from_str(&crate::openapi::document()).unwrap(), "");
    }
}
