//! What the recipient reads: a template's own texts with its placeholders
//! filled by an execution's parameters, as `_preview` shows them.

use serde::Serialize;

use super::payload::{RenderedParams, percent_encode};
use super::templates::{button, fill_placeholders, upper};
use crate::store::TemplateRecord;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenderedMessage {
    /// The header's text, or a media header's URL or media id; null without a header.
    #[schema(required = true)]
    pub header: Option<String>,
    pub body: String,
    /// Null without a footer.
    #[schema(required = true)]
    pub footer: Option<String>,
    /// In the template's order.
    pub buttons: Vec<RenderedButton>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenderedButton {
    /// Meta's button type: QUICK_REPLY, URL, COPY_CODE, PHONE_NUMBER, OTP, …
    #[serde(rename = "type")]
    #[schema(example = "URL")]
    pub kind: String,
    /// The button's label; a COPY_CODE button without one shows its code.
    pub text: String,
    /// A URL button's address, its placeholder filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
}

/// The template's header, body, footer and buttons with `params` filled in,
/// as Meta fills them: button parameters go, in order, to the buttons that
/// take one; a URL button's suffix is percent-encoded.
pub fn render(template: &TemplateRecord, params: &RenderedParams<'_>) -> RenderedMessage {
    let mut message = RenderedMessage { header: None, body: String::new(), footer: None, buttons: Vec::new() };
    let mut button_params = params.buttons.iter();
    for component in template.components.as_array().into_iter().flatten() {
        let text = component["text"].as_str().unwrap_or_default();
        match upper(&component["type"]).as_str() {
            "HEADER" => {
                message.header = match upper(&component["format"]).as_str() {
                    "" | "TEXT" => Some(fill_placeholders(text, params.header)),
                    _ => params.header.first().cloned(),
                }
            }
            "BODY" => message.body = fill_placeholders(text, params.body),
            "FOOTER" => message.footer = Some(text.to_owned()),
            "BUTTONS" => {
                for value in component["buttons"].as_array().into_iter().flatten() {
                    let mut rendered = RenderedButton {
                        kind: upper(&value["type"]),
                        text: value["text"].as_str().unwrap_or_default().to_owned(),
                        url: value["url"].as_str().map(str::to_owned),
                    };
                    if button(value).takes_parameter()
                        && let Some(param) = button_params.next()
                    {
                        match &mut rendered.url {
                            Some(url) => *url = fill_placeholders(url, &[percent_encode(param)]),
                            None if rendered.text.is_empty() => rendered.text = param.clone(),
                            None => {}
                        }
                    }
                    message.buttons.push(rendered);
                }
            }
            _ => {}
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(components: serde_json::Value) -> TemplateRecord {
        TemplateRecord {
            id: "1".into(),
            name: "t".into(),
            language: "en".into(),
            status: "APPROVED".into(),
            category: "UTILITY".into(),
            parameter_format: "POSITIONAL".into(),
            components,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_part_is_filled_as_meta_fills_it() {
        let template = template(json!([
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
            {"type": "BODY", "text": "Hi {{1}}, order {{2}} is {{3}}. Thanks, {{1}}!"},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [
                {"type": "URL", "text": "Track", "url": "https://shop.example.com/track/{{1}}"},
                {"type": "QUICK_REPLY", "text": "Talk to an agent"},
                {"type": "COPY_CODE", "example": "SAVE10"}
            ]}
        ]));
        let (header, body, buttons) = (strings(&["A-1"]), strings(&["Ana", "A-1", "on its way"]), strings(&["A 1/2", "SAVE10"]));
        let rendered = render(&template, &RenderedParams { header: &header, body: &body, buttons: &buttons });
        assert_eq!(rendered.header.as_deref(), Some("Order A-1"));
        assert_eq!(rendered.body, "Hi Ana, order A-1 is on its way. Thanks, Ana!");
        assert_eq!(rendered.footer.as_deref(), Some("Reply STOP to opt out"));
        let shown: Vec<(&str, &str, Option<&str>)> =
            rendered.buttons.iter().map(|b| (b.kind.as_str(), b.text.as_str(), b.url.as_deref())).collect();
        assert_eq!(
            shown,
            [
                ("URL", "Track", Some("https://shop.example.com/track/A%201%2F2")),
                ("QUICK_REPLY", "Talk to an agent", None),
                ("COPY_CODE", "SAVE10", None)
            ]
        );
    }

    #[test]
    fn named_placeholders_and_a_media_header() {
        let template = template(json!([
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Hello {{first_name}}, see you on {{date}}, {{ first_name }}."}
        ]));
        let (header, body) = (strings(&["https://example.com/a.jpg"]), strings(&["Ana", "May 3"]));
        let rendered = render(&template, &RenderedParams { header: &header, body: &body, buttons: &[] });
        assert_eq!(rendered.header.as_deref(), Some("https://example.com/a.jpg"));
        assert_eq!(rendered.body, "Hello Ana, see you on May 3, Ana.");
        assert_eq!((rendered.footer, rendered.buttons.len()), (None, 0));
    }
}
