//! What a template needs at send time, read from its components as Meta's
//! template API returns them, and the check that an action fills it exactly.
//! Meta's error 132000 (parameter count mismatch) is the failure users of other
//! platforms meet most; here it is caught when the action is saved.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::domain::{FieldError, Param, TemplateUse, TenantId, is_media_reference};
use crate::error_code::ErrorCode;
use crate::store::{Store, StoreResult, TemplateRecord};

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}").unwrap());

/// Buttons whose send-time parameters are not strings (products, catalogs).
const UNFILLABLE_BUTTONS: &[&str] = &["CATALOG", "MPM", "SPM"];

/// Meta caps a COPY_CODE button's value at 15 characters.
pub const COPY_CODE_MAX_CHARS: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    None,
    /// A text header and its placeholders (Meta allows at most one).
    Text(Vec<String>),
    /// IMAGE, VIDEO, GIF or DOCUMENT: one media parameter on every send.
    Media(MediaKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    /// WhatsApp plays GIF headers as looping MP4 video; they are sent as video.
    Gif,
    Document,
}

impl MediaKind {
    /// The header format as Meta names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Video => "VIDEO",
            Self::Gif => "GIF",
            Self::Document => "DOCUMENT",
        }
    }

    /// The parameter type of the send payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video | Self::Gif => "video",
            Self::Document => "document",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Button {
    /// Needs no parameter to send (its payload is optional).
    QuickReply,
    /// A URL button; `true` when its URL ends in a placeholder to fill.
    Url(bool),
    CopyCode,
    /// An authentication template's one-time-password button, filled with the code.
    Otp,
    /// Phone number, flow and other buttons that take no parameter.
    Static(String),
}

impl Button {
    pub fn takes_parameter(&self) -> bool {
        matches!(self, Self::Url(true) | Self::CopyCode | Self::Otp)
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Url(_) => "URL button with a {{1}} suffix",
            Self::CopyCode => "COPY_CODE button",
            Self::Otp => "OTP button",
            Self::QuickReply | Self::Static(_) => "button",
        }
    }
}

/// The parameters a template takes, component by component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateShape {
    pub header: Header,
    /// Body placeholders in order of first appearance (`1`, `2` or names).
    pub body: Vec<String>,
    pub named: bool,
    /// Every button, in the template's order (its index is the send's `index`).
    pub buttons: Vec<Button>,
    /// Parts actiond cannot fill from string parameters (a LOCATION header,
    /// carousels, limited-time offers, catalog and product buttons).
    pub unsupported: Vec<String>,
}

/// The counts a template expects, as the templates API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ParameterCounts {
    pub header_params: usize,
    pub body_params: usize,
    pub button_params: usize,
}

impl TemplateShape {
    pub fn of(template: &TemplateRecord) -> Self {
        Self::of_parts(&template.parameter_format, &template.components)
    }

    /// Why actiond cannot send the template, when it has parts strings
    /// cannot fill: "has a CAROUSEL component, which …".
    pub fn unsupported_parts(&self) -> Option<String> {
        (!self.unsupported.is_empty())
            .then(|| format!("has {}, which actiond cannot fill from string parameters", self.unsupported.join(" and ")))
    }

    /// The shape of a template given as Meta's `parameter_format` and `components`.
    pub fn of_parts(parameter_format: &str, components: &Value) -> Self {
        let mut shape = Self {
            header: Header::None,
            body: Vec::new(),
            named: parameter_format.eq_ignore_ascii_case("NAMED"),
            buttons: Vec::new(),
            unsupported: Vec::new(),
        };
        for component in components.as_array().into_iter().flatten() {
            let text = component["text"].as_str().unwrap_or_default();
            match upper(&component["type"]).as_str() {
                "HEADER" => {
                    shape.header = match upper(&component["format"]).as_str() {
                        "" | "TEXT" => Header::Text(placeholders(text)),
                        "IMAGE" => Header::Media(MediaKind::Image),
                        "VIDEO" => Header::Media(MediaKind::Video),
                        "GIF" => Header::Media(MediaKind::Gif),
                        "DOCUMENT" => Header::Media(MediaKind::Document),
                        other => {
                            shape.unsupported.push(format!("a {other} header"));
                            Header::None
                        }
                    }
                }
                "BODY" => shape.body = placeholders(text),
                "BUTTONS" => {
                    shape.buttons = component["buttons"].as_array().into_iter().flatten().map(button).collect();
                    for button in &shape.buttons {
                        if let Button::Static(kind) = button
                            && UNFILLABLE_BUTTONS.contains(&kind.as_str())
                        {
                            shape.unsupported.push(format!("a {kind} button"));
                        }
                    }
                }
                "FOOTER" => {}
                other => shape.unsupported.push(format!("a {other} component")),
            }
        }
        // Meta reports named placeholders by format; names in the text say it too.
        shape.named |= shape.body.iter().any(|p| !p.chars().all(|c| c.is_ascii_digit()));
        shape
    }

    pub fn counts(&self) -> ParameterCounts {
        ParameterCounts {
            header_params: match &self.header {
                Header::Text(placeholders) => placeholders.len(),
                Header::Media(_) => 1,
                Header::None => 0,
            },
            body_params: self.body.len(),
            button_params: self.buttons.iter().filter(|b| b.takes_parameter()).count(),
        }
    }
}

pub(crate) fn upper(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_ascii_uppercase()
}

pub(crate) fn button(value: &Value) -> Button {
    match upper(&value["type"]).as_str() {
        "QUICK_REPLY" => Button::QuickReply,
        "URL" => Button::Url(PLACEHOLDER.is_match(value["url"].as_str().unwrap_or_default())),
        "COPY_CODE" => Button::CopyCode,
        "OTP" => Button::Otp,
        other => Button::Static(other.to_owned()),
    }
}

/// Distinct placeholders in order of first appearance.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for captures in PLACEHOLDER.captures_iter(text) {
        let name = captures[1].to_owned();
        if !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// `text` with each placeholder replaced by the value at its place in
/// `placeholders(text)`; one without a value stays as written.
pub fn fill_placeholders(text: &str, values: &[String]) -> String {
    let names = placeholders(text);
    PLACEHOLDER
        .replace_all(text, |captures: &regex::Captures<'_>| {
            let position = names.iter().position(|name| *name == captures[1]);
            position.and_then(|index| values.get(index)).cloned().unwrap_or_else(|| captures[0].to_owned())
        })
        .into_owned()
}

fn listed(names: &[String]) -> String {
    names.iter().map(|n| format!("{{{{{n}}}}}")).collect::<Vec<_>>().join(", ")
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Checks the template the action names against the sender's registry:
/// the sender, the template in that language, its status and its parameters.
pub async fn check_template_use(store: &Store, tenant: &TenantId, template_use: &TemplateUse<'_>) -> StoreResult<Vec<FieldError>> {
    let unknown_sender = || {
        let message = format!(
            "'{}' is not a WhatsApp sender registered for this tenant; register it with POST /v2/_whatsapp/senders",
            template_use.from
        );
        vec![FieldError::new("webhook.from", ErrorCode::UnknownSender, message)]
    };
    let Some((name, language)) = &template_use.template else {
        // No template to look up: the sender is checked alone.
        return Ok(if store.get_sender(tenant, template_use.from).await?.is_none() { unknown_sender() } else { Vec::new() });
    };
    let (name, language) = (name.as_str(), language.as_str());
    let Some(versions) = store.templates_named(tenant, template_use.from, name).await? else {
        return Ok(unknown_sender());
    };
    let Some(template) = versions.iter().find(|t| t.language == language) else {
        let message = if versions.is_empty() {
            format!("the sender's WhatsApp Business Account has no template named '{name}' (sync the sender if it was created recently)")
        } else {
            let languages: Vec<&str> = versions.iter().map(|t| t.language.as_str()).collect();
            format!("template '{name}' has no '{language}' version; it exists in: {}", languages.join(", "))
        };
        return Ok(vec![FieldError::new("webhook.template_name", ErrorCode::TemplateNotFound, message)]);
    };
    Ok(check_against(template, template_use))
}

/// The pure part of the check: status and parameters against one template.
pub fn check_against(template: &TemplateRecord, template_use: &TemplateUse<'_>) -> Vec<FieldError> {
    let label = format!("template '{}' ({})", template.name, template.language);
    let mut errors = Vec::new();
    if template.status != "APPROVED" {
        errors.push(FieldError::new(
            "webhook.template_name",
            ErrorCode::TemplateNotApproved,
            format!("{label} is {}; only APPROVED templates can be sent", template.status),
        ));
    }
    let shape = TemplateShape::of(template);
    let counts = shape.counts();

    if let Some(why) = shape.unsupported_parts() {
        errors.push(FieldError::new("webhook.template_name", ErrorCode::UnsupportedTemplate, format!("{label} {why}")));
    }
    // A list that did not parse was reported as it is; its count is not checked.
    let header = template_use.header_params.as_deref();
    let header_given = header.map_or(0, <[&str]>::len);
    match &shape.header {
        _ if header.is_none() => {}
        Header::Media(kind) => {
            if header_given != 1 {
                errors.push(mismatch(
                    "webhook.header_params",
                    format!("{label} has an {} header, which takes 1 media parameter (an https:// URL or a media id)", kind.label()),
                    1,
                    header_given,
                ));
            } else if let Some(media) = header.and_then(<[&str]>::first)
                && let Ok(param) = Param::parse(media)
                && !is_media_reference(&param)
            {
                errors.push(FieldError::new(
                    "webhook.header_params[0]",
                    ErrorCode::InvalidMediaParameter,
                    format!("{label} has an {} header: the parameter must be an https:// URL or a media id", kind.label()),
                ));
            }
        }
        Header::Text(placeholders) if header_given != placeholders.len() => {
            let what = if placeholders.is_empty() {
                "has no header placeholder".to_owned()
            } else {
                format!("has a text header with {} ({})", plural(placeholders.len(), "placeholder"), listed(placeholders))
            };
            errors.push(mismatch("webhook.header_params", format!("{label} {what}"), placeholders.len(), header_given));
        }
        Header::None if header_given != 0 => {
            errors.push(mismatch("webhook.header_params", format!("{label} has no header"), 0, header_given));
        }
        Header::Text(_) | Header::None => {}
    }

    if let Some(body) = &template_use.body_params
        && body.len() != counts.body_params
    {
        let body_given = body.len();
        let what = if shape.body.is_empty() {
            "has no body placeholder".to_owned()
        } else if shape.named {
            format!("has a body with {} ({}), filled in that order", plural(shape.body.len(), "named placeholder"), listed(&shape.body))
        } else {
            format!("has a body with {} ({})", plural(shape.body.len(), "placeholder"), listed(&shape.body))
        };
        errors.push(mismatch("webhook.body_params", format!("{label} {what}"), counts.body_params, body_given));
    }

    let Some(buttons) = &template_use.button_params else { return errors };
    let button_given = buttons.len();
    if button_given != counts.button_params {
        let taking: Vec<String> = shape
            .buttons
            .iter()
            .enumerate()
            .filter(|(_, b)| b.takes_parameter())
            .map(|(index, b)| format!("button {index}: {}", b.describe()))
            .collect();
        let what = if taking.is_empty() {
            "has no button that takes a parameter (quick replies take none)".to_owned()
        } else {
            let verb = if taking.len() == 1 { "takes" } else { "take" };
            format!("has {} that {verb} a parameter ({})", plural(taking.len(), "button"), taking.join("; "))
        };
        errors.push(mismatch("webhook.button_params", format!("{label} {what}"), counts.button_params, button_given));
    } else {
        let parameterised = shape.buttons.iter().filter(|b| b.takes_parameter());
        for (index, (button, value)) in parameterised.zip(buttons).enumerate() {
            if matches!(button, Button::CopyCode) && value.chars().count() > COPY_CODE_MAX_CHARS && !value.contains("{{") {
                errors.push(FieldError::new(
                    format!("webhook.button_params[{index}]"),
                    ErrorCode::InvalidParameter,
                    format!("{label}: a COPY_CODE value is at most {COPY_CODE_MAX_CHARS} characters"),
                ));
            }
        }
    }
    errors
}

fn mismatch(field: &str, what: String, expected: usize, given: usize) -> FieldError {
    let noun = field.trim_start_matches("webhook.").trim_end_matches('s').replace('_', " ");
    FieldError::new(field, ErrorCode::ParamCountMismatch, format!("{what}: expected {}, given {given}", plural(expected, &noun)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{LanguageCode, TemplateName};

    fn template(status: &str, format: &str, components: Value) -> TemplateRecord {
        TemplateRecord {
            id: "1".into(),
            name: "order_update".into(),
            language: "en".into(),
            status: status.into(),
            category: "UTILITY".into(),
            parameter_format: format.into(),
            components,
        }
    }

    fn rich() -> TemplateRecord {
        template(
            "APPROVED",
            "POSITIONAL",
            json!([
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships {{3}}. Again: {{1}}"},
                {"type": "FOOTER", "text": "Thanks"},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Yes"},
                    {"type": "URL", "text": "Track", "url": "https://x.example/t/{{1}}"},
                    {"type": "URL", "text": "Home", "url": "https://x.example/"},
                    {"type": "COPY_CODE", "example": "SAVE10"},
                    {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550001111"}
                ]}
            ]),
        )
    }

    fn usage<'a>(header: Vec<&'a str>, body: Vec<&'a str>, buttons: Vec<&'a str>) -> TemplateUse<'a> {
        TemplateUse {
            from: "1",
            template: Some((TemplateName::parse("order_update").unwrap(), LanguageCode::parse("en").unwrap())),
            header_params: Some(header),
            body_params: Some(body),
            button_params: Some(buttons),
        }
    }

    fn codes(errors: &[FieldError]) -> Vec<(&str, &str)> {
        errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect()
    }

    #[test]
    fn counts_each_component() {
        let shape = TemplateShape::of(&rich());
        assert_eq!(shape.counts(), ParameterCounts { header_params: 1, body_params: 3, button_params: 2 });
        assert_eq!(shape.body, ["1", "2", "3"]);
        assert!(!shape.named);
    }

    #[test]
    fn exact_parameters_pass() {
        let errors = check_against(&rich(), &usage(vec!["42"], vec!["Ana", "A-1", "today"], vec!["A-1", "SAVE10"]));
        assert_eq!(errors, vec![]);
    }

    #[test]
    fn every_mismatch_is_named_with_expected_and_given() {
        let errors = check_against(&rich(), &usage(vec![], vec!["Ana"], vec!["A-1", "SAVE10", "x"]));
        assert_eq!(
            codes(&errors),
            [
                ("webhook.header_params", "param_count_mismatch"),
                ("webhook.body_params", "param_count_mismatch"),
                ("webhook.button_params", "param_count_mismatch")
            ]
        );
        assert_eq!(
            errors[1].message,
            "template 'order_update' (en) has a body with 3 placeholders ({{1}}, {{2}}, {{3}}): expected 3 body params, given 1"
        );
        assert!(
            errors[2].message.contains("button 1: URL button with a {{1}} suffix; button 3: COPY_CODE button"),
            "{}",
            errors[2].message
        );
        assert!(errors[2].message.ends_with("expected 2 button params, given 3"), "{}", errors[2].message);
    }

    #[test]
    fn named_placeholders_are_listed_in_order() {
        let named =
            template("APPROVED", "NAMED", json!([{"type": "BODY", "text": "Hi {{first_name}}, order {{order_id}} for {{first_name}}"}]));
        let errors = check_against(&named, &usage(vec![], vec!["Ana"], vec![]));
        assert_eq!(
            errors[0].message,
            "template 'order_update' (en) has a body with 2 named placeholders ({{first_name}}, {{order_id}}), filled in that order: expected 2 body params, given 1"
        );
    }

    #[test]
    fn status_other_than_approved_is_named() {
        let paused = template("PAUSED", "POSITIONAL", json!([{"type": "BODY", "text": "Hi"}]));
        let errors = check_against(&paused, &usage(vec![], vec![], vec![]));
        assert_eq!(codes(&errors), [("webhook.template_name", "template_not_approved")]);
        assert!(errors[0].message.contains("is PAUSED"));
    }

    #[test]
    fn media_headers_take_one_url_or_id() {
        let image = template("APPROVED", "POSITIONAL", json!([{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "Look"}]));
        assert_eq!(check_against(&image, &usage(vec!["https://cdn.example/a.png"], vec![], vec![])), vec![]);
        assert_eq!(check_against(&image, &usage(vec!["4490123"], vec![], vec![])), vec![]);
        assert_eq!(
            codes(&check_against(&image, &usage(vec!["http://cdn.example/a.png"], vec![], vec![]))),
            [("webhook.header_params[0]", "invalid_media_parameter")]
        );
        assert_eq!(codes(&check_against(&image, &usage(vec![], vec![], vec![]))), [("webhook.header_params", "param_count_mismatch")]);
    }

    #[test]
    fn copy_codes_are_held_to_fifteen_characters() {
        let errors = check_against(&rich(), &usage(vec!["1"], vec!["a", "b", "c"], vec!["x", "SIXTEEN_CHARS_XX"]));
        assert_eq!(codes(&errors), [("webhook.button_params[1]", "invalid_parameter")]);
    }

    #[test]
    fn parts_that_strings_cannot_fill_are_unsupported() {
        for components in [
            json!([{"type": "HEADER", "format": "LOCATION"}, {"type": "BODY", "text": "Here"}]),
            json!([{"type": "BODY", "text": "Look"}, {"type": "CAROUSEL", "cards": []}]),
            json!([{"type": "BODY", "text": "Shop"}, {"type": "BUTTONS", "buttons": [{"type": "CATALOG", "text": "View"}]}]),
        ] {
            let errors = check_against(&template("APPROVED", "POSITIONAL", components.clone()), &usage(vec![], vec![], vec![]));
            assert_eq!(codes(&errors), [("webhook.template_name", "unsupported_template")], "{components}");
        }
    }

    #[test]
    fn gif_headers_take_one_media_parameter() {
        let gif = template("APPROVED", "POSITIONAL", json!([{"type": "HEADER", "format": "GIF"}, {"type": "BODY", "text": "Hi"}]));
        assert_eq!(TemplateShape::of(&gif).counts().header_params, 1);
        assert_eq!(check_against(&gif, &usage(vec!["https://cdn.example/a.mp4"], vec![], vec![])), vec![]);
    }
}
