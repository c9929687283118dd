use serde_json::{Map, Value};

use super::fields::{FieldError, Fields, char_len};
use super::{LanguageCode, Param, PhoneE164, TemplateName};
use crate::error_code::ErrorCode;

pub const NAME_MAX_CHARS: usize = 255;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionType {
    SendWhatsapp,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendWhatsapp => "SEND_WHATSAPP",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        input.trim().eq_ignore_ascii_case("SEND_WHATSAPP").then_some(Self::SendWhatsapp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionTiming {
    During,
}

impl ActionTiming {
    pub const ACCEPTED: &str = "during";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::During => "DURING",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        input.trim().eq_ignore_ascii_case("during").then_some(Self::During)
    }
}

/// A valid action, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    pub name: String,
    pub description: String,
    pub kind: ActionType,
    pub is_active: bool,
    pub timing: ActionTiming,
    pub phone_number: Option<PhoneE164>,
    pub whatsapp: WhatsappTarget,
}

/// The `webhook` object: which template goes to whom, from which sender.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsappTarget {
    pub to: PhoneE164,
    pub from: String,
    pub template_name: TemplateName,
    pub body_params: Vec<Param>,
    pub header_params: Vec<Param>,
    pub button_params: Vec<Param>,
    pub language_code: LanguageCode,
    pub mandatory: bool,
}

/// What the template registry must confirm: available as soon as `from`
/// parses, so its findings join the other violations in one answer. The
/// sender is checked alone when the template's name or language does not
/// parse; a parameter list that does not is left out of the count checks.
#[derive(Debug, Clone)]
pub struct TemplateUse<'a> {
    pub from: &'a str,
    pub template: Option<(TemplateName, LanguageCode)>,
    pub header_params: Option<Vec<&'a str>>,
    pub body_params: Option<Vec<&'a str>>,
    pub button_params: Option<Vec<&'a str>>,
}

/// The outcome of reading an action body: the spec when every field is valid,
/// the template use when its parts are, and every violation found.
pub struct ParsedAction<'a> {
    pub spec: Option<ActionSpec>,
    pub template_use: Option<TemplateUse<'a>>,
    pub errors: Vec<FieldError>,
}

pub fn parse_action_spec(body: &Map<String, Value>) -> ParsedAction<'_> {
    let mut errors = Vec::new();
    let mut fields = Fields::new(body, &mut errors);

    let name = text(&mut fields, "name", NAME_MAX_CHARS);
    let description = text(&mut fields, "description", DESCRIPTION_MAX_CHARS);
    let kind = fields.required_str("type").and_then(|raw| {
        let parsed = ActionType::parse(raw);
        if parsed.is_none() {
            fields.error("type", ErrorCode::UnsupportedActionType, format!("'{raw}' is not supported; the only type is SEND_WHATSAPP"));
        }
        parsed
    });
    let is_active = fields.optional_bool("is_active");
    let timing = fields.required_str("action_timing").and_then(|raw| {
        let parsed = ActionTiming::parse(raw);
        if parsed.is_none() {
            fields.error(
                "action_timing",
                ErrorCode::InvalidActionTiming,
                format!("'{raw}' is not accepted; accepted values: {}", ActionTiming::ACCEPTED),
            );
        }
        parsed
    });
    let phone_number = match fields.optional_str("phone_number") {
        // An empty override is the common way form-built clients say "none".
        Some(raw) if !raw.trim().is_empty() => phone(&mut fields, "phone_number", raw).map(Some),
        _ => Some(None),
    };
    let (whatsapp, template_use) = match fields.required_object("webhook") {
        Some(mut webhook) => parse_webhook(&mut webhook),
        None => (None, None),
    };

    let spec = match (name, description, kind, timing, phone_number, whatsapp) {
        (Some(name), Some(description), Some(kind), Some(timing), Some(phone_number), Some(whatsapp)) if errors.is_empty() => {
            Some(ActionSpec { name, description, kind, is_active: is_active.unwrap_or(true), timing, phone_number, whatsapp })
        }
        _ => None,
    };
    ParsedAction { spec, template_use, errors }
}

fn parse_webhook<'a>(fields: &mut Fields<'a, '_>) -> (Option<WhatsappTarget>, Option<TemplateUse<'a>>) {
    let to = fields.required_str("to").and_then(|raw| phone(fields, "to", raw));
    let from = fields.required_str("from").and_then(|raw| {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            fields.error("from", ErrorCode::UnknownSender, "must be the WhatsApp phone-number ID of a registered sender");
            None
        } else {
            Some(trimmed)
        }
    });
    let template_name = fields.required_str("template_name").and_then(|raw| match TemplateName::parse(raw) {
        Ok(name) => Some(name),
        Err(message) => {
            fields.error("template_name", ErrorCode::InvalidTemplateName, message);
            None
        }
    });
    let language_code = match fields.optional_str("language_code") {
        None => LanguageCode::parse(LanguageCode::DEFAULT).ok(),
        Some(raw) => match LanguageCode::parse(raw) {
            Ok(code) => Some(code),
            Err(message) => {
                fields.error("language_code", ErrorCode::InvalidLanguageCode, message);
                None
            }
        },
    };
    let lists = ["header_params", "body_params", "button_params"].map(|name| {
        let raw = if fields.object_has(name) { fields.optional_str_list(name) } else { Some(Vec::new()) };
        let params = raw.as_ref().map(|items| params(fields, name, items));
        (raw, params)
    });
    let mandatory = fields.optional_bool("mandatory");
    let [(header_raw, header), (body_raw, body), (button_raw, button)] = lists;

    let template_use = from.map(|from| TemplateUse {
        from,
        template: template_name.clone().zip(language_code.clone()),
        header_params: header_raw,
        body_params: body_raw,
        button_params: button_raw,
    });
    let target = match (to, from, template_name, language_code, header.flatten(), body.flatten(), button.flatten()) {
        (Some(to), Some(from), Some(template_name), Some(language_code), Some(header_params), Some(body_params), Some(button_params)) => {
            Some(WhatsappTarget {
                to,
                from: from.to_owned(),
                template_name,
                body_params,
                header_params,
                button_params,
                language_code,
                mandatory: mandatory.unwrap_or(false),
            })
        }
        _ => None,
    };
    (target, template_use)
}

/// A required text trimmed and held to `1..=max` characters.
fn text(fields: &mut Fields<'_, '_>, name: &str, max: usize) -> Option<String> {
    let trimmed = fields.required_str(name)?.trim();
    let length = char_len(trimmed);
    if length == 0 || length > max {
        fields.error(name, ErrorCode::InvalidLength, format!("must be 1-{max} characters after trimming, got {length}"));
        return None;
    }
    Some(trimmed.to_owned())
}

fn phone(fields: &mut Fields<'_, '_>, name: &str, raw: &str) -> Option<PhoneE164> {
    match PhoneE164::parse(raw) {
        Ok(phone) => Some(phone),
        Err(reason) => {
            fields.error(name, ErrorCode::InvalidPhoneNumber, format!("'{raw}' {reason}"));
            None
        }
    }
}

/// Every parameter of a list, or `None` when any of them is invalid.
fn params(fields: &mut Fields<'_, '_>, name: &str, items: &[&str]) -> Option<Vec<Param>> {
    let mut valid = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match Param::parse(item) {
            Ok(param) => valid.push(param),
            Err(message) => fields.error(&format!("{name}[{index}]"), ErrorCode::InvalidParameter, message),
        }
    }
    (valid.len() == items.len()).then_some(valid)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn seed_body() -> Value {
        json!({
            "name": "  My Whatsapp Action ",
            "description": "Send WhatsApp when user requests messaging",
            "type": "send_whatsapp",
            "action_timing": "During",
            "webhook": {
                "to": "+1 (281) 712-6508",
                "from": "650175178190170",
                "template_name": "call_permission_request",
                "body_params": ["{{customer_name}}"]
            }
        })
    }

    fn parse(body: &Value) -> ParsedAction<'_> {
        parse_action_spec(body.as_object().unwrap())
    }

    #[test]
    fn reads_the_seed_body_with_defaults() {
        let body = seed_body();
        let parsed = parse(&body);
        assert_eq!(parsed.errors, vec![]);
        let spec = parsed.spec.unwrap();
        assert_eq!(spec.name, "My Whatsapp Action");
        assert_eq!(spec.kind.as_str(), "SEND_WHATSAPP");
        assert_eq!(spec.timing.as_str(), "DURING");
        assert!(spec.is_active);
        assert_eq!(spec.phone_number, None);
        assert_eq!(spec.whatsapp.to.digits(), "12817126508");
        assert_eq!(spec.whatsapp.language_code.as_str(), "en");
        assert!(!spec.whatsapp.mandatory);
        assert_eq!(spec.whatsapp.header_params, vec![]);
        let template_use = parsed.template_use.unwrap();
        assert_eq!(template_use.body_params, Some(vec!["{{customer_name}}"]));
    }

    #[test]
    fn reports_every_violation_at_once() {
        let body = json!({
            "name": " ",
            "type": "SEND_SMS",
            "is_active": "yes",
            "action_timing": "after",
            "phone_number": "555",
            "webhook": {"to": 12817126508u64, "from": "1", "template_name": "Bad-Name", "language_code": "xx",
                        "body_params": ["ok", "tab\there"], "header_params": "nope", "mandatory": 1}
        });
        let parsed = parse(&body);
        let found: Vec<(&str, &str)> = parsed.errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
        assert_eq!(
            found,
            vec![
                ("name", "invalid_length"),
                ("description", "missing_field"),
                ("type", "unsupported_action_type"),
                ("is_active", "invalid_type"),
                ("action_timing", "invalid_action_timing"),
                ("phone_number", "invalid_phone_number"),
                ("webhook.to", "invalid_type"),
                ("webhook.template_name", "invalid_template_name"),
                ("webhook.language_code", "invalid_language_code"),
                ("webhook.header_params", "invalid_type"),
                ("webhook.body_params[1]", "invalid_parameter"),
                ("webhook.mandatory", "invalid_type"),
            ]
        );
        assert!(parsed.spec.is_none());
        // The sender can still be checked, alone: neither the template nor its language parsed.
        let template_use = parsed.template_use.unwrap();
        assert_eq!((template_use.from, template_use.template.is_none(), template_use.header_params), ("1", true, None));
        assert_eq!(template_use.body_params, Some(vec!["ok", "tab\there"]));
    }

    #[test]
    fn template_use_survives_unrelated_errors() {
        let mut body = seed_body();
        body["name"] = json!("");
        let parsed = parse(&body);
        assert!(parsed.spec.is_none());
        assert_eq!(parsed.template_use.unwrap().template.unwrap().0.as_str(), "call_permission_request");
    }

    #[test]
    fn missing_webhook_is_one_error() {
        let mut body = seed_body();
        body.as_object_mut().unwrap().remove("webhook");
        let parsed = parse(&body);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].field, "webhook");
        assert_eq!(parsed.errors[0].code, ErrorCode::MissingField);
    }
}
