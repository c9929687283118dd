//! The template message Meta's `POST /{phone_number_id}/messages` takes, built
//! from a template's shape and an execution's rendered parameters
//! (reference §1: component shapes at send time).

use serde_json::{Value, json};

use super::templates::{Button, Header, TemplateShape};

/// Rendered parameters, one list per component, in the template's order.
pub struct RenderedParams<'a> {
    pub header: &'a [String],
    pub body: &'a [String],
    pub buttons: &'a [String],
}

/// The quick-reply payload of button `index`: it names the execution, so a
/// tap identifies what it answers even without the reply's context.
pub fn quick_reply_payload(execution_id: &str, index: usize) -> String {
    format!("{execution_id}:{index}")
}

pub fn template_message(
    shape: &TemplateShape,
    template_name: &str,
    language: &str,
    to_international: &str,
    params: &RenderedParams<'_>,
    execution_id: &str,
) -> Value {
    let mut components = Vec::new();
    match &shape.header {
        Header::Text(placeholders) if !placeholders.is_empty() => {
            let parameters: Vec<Value> =
                placeholders.iter().zip(params.header).map(|(name, text)| text_parameter(shape.named, name, text)).collect();
            components.push(json!({"type": "header", "parameters": parameters}));
        }
        Header::Media(kind) => {
            let value = params.header.first().map(String::as_str).unwrap_or_default();
            let media = if value.chars().all(|c| c.is_ascii_digit()) { json!({"id": value}) } else { json!({"link": value}) };
            let kind = kind.as_str();
            components.push(json!({"type": "header", "parameters": [{"type": kind, kind: media}]}));
        }
        Header::Text(_) | Header::None => {}
    }
    if !shape.body.is_empty() {
        let parameters: Vec<Value> =
            shape.body.iter().zip(params.body).map(|(name, text)| text_parameter(shape.named, name, text)).collect();
        components.push(json!({"type": "body", "parameters": parameters}));
    }
    let mut button_params = params.buttons.iter();
    for (index, button) in shape.buttons.iter().enumerate() {
        let index_text = index.to_string();
        let component = match button {
            Button::QuickReply => Some(json!({"type": "button", "sub_type": "quick_reply", "index": index_text,
                "parameters": [{"type": "payload", "payload": quick_reply_payload(execution_id, index)}]})),
            Button::Url(true) => button_params.next().map(|suffix| {
                json!({"type": "button", "sub_type": "url", "index": index_text,
                       "parameters": [{"type": "text", "text": percent_encode(suffix)}]})
            }),
            Button::CopyCode => button_params.next().map(|code| {
                json!({"type": "button", "sub_type": "copy_code", "index": index_text,
                       "parameters": [{"type": "coupon_code", "coupon_code": code}]})
            }),
            Button::Otp => button_params.next().map(
                |code| json!({"type": "button", "sub_type": "url", "index": index_text, "parameters": [{"type": "text", "text": code}]}),
            ),
            Button::Url(false) | Button::Static(_) => None,
        };
        components.extend(component);
    }
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to_international,
        "type": "template",
        "biz_opaque_callback_data": execution_id,
        "template": {
            "name": template_name,
            "language": {"policy": "deterministic", "code": language},
            "components": components,
        }
    })
}

/// A text parameter; a named template's names the placeholder it fills, in
/// the header as in the body (reference §1, positional vs named).
fn text_parameter(named: bool, name: &str, text: &str) -> Value {
    if named { json!({"type": "text", "parameter_name": name, "text": text}) } else { json!({"type": "text", "text": text}) }
}

/// Meta requires a URL button's suffix percent-encoded by the sender.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::templates::MediaKind;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_header_body_url_and_quick_reply() {
        let shape = TemplateShape {
            header: Header::Text(vec!["1".into()]),
            body: vec!["1".into(), "2".into()],
            named: false,
            buttons: vec![Button::Url(true), Button::QuickReply, Button::Static("PHONE_NUMBER".into())],
            unsupported: vec![],
        };
        let (header, body, buttons) = (strings(&["A-1"]), strings(&["Ana", "shipped"]), strings(&["A 1/ü"]));
        let params = RenderedParams { header: &header, body: &body, buttons: &buttons };
        let message = template_message(&shape, "order_update", "en", "+12817126508", &params, "exec-1");
        assert_eq!(
            message,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+12817126508", "type": "template",
            "biz_opaque_callback_data": "exec-1",
            "template": {"name": "order_update", "language": {"policy": "deterministic", "code": "en"}, "components": [
                {"type": "header", "parameters": [{"type": "text", "text": "A-1"}]},
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "shipped"}]},
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A%201%2F%C3%BC"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "payload", "payload": "exec-1:1"}]}
            ]}})
        );
    }

    #[test]
    fn media_headers_named_body_and_copy_code() {
        let shape = TemplateShape {
            header: Header::Media(MediaKind::Image),
            body: vec!["first_name".into()],
            named: true,
            buttons: vec![Button::CopyCode],
            unsupported: vec![],
        };
        let (body, buttons) = (strings(&["Ana"]), strings(&["SAVE10"]));
        for (header, media) in
            [("https://cdn.example/a.jpg", json!({"link": "https://cdn.example/a.jpg"})), ("4490012", json!({"id": "4490012"}))]
        {
            let header = vec![header.to_owned()];
            let params = RenderedParams { header: &header, body: &body, buttons: &buttons };
            let components = template_message(&shape, "t", "es", "+1", &params, "e")["template"]["components"].clone();
            assert_eq!(
                components,
                json!([
                    {"type": "header", "parameters": [{"type": "image", "image": media}]},
                    {"type": "body", "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ana"}]},
                    {"type": "button", "sub_type": "copy_code", "index": "0", "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}]}
                ])
            );
        }
    }

    #[test]
    fn a_named_templates_text_header_names_its_placeholder() {
        let shape =
            TemplateShape { header: Header::Text(vec!["order".into()]), body: vec![], named: true, buttons: vec![], unsupported: vec![] };
        let header = strings(&["A-1042"]);
        let params = RenderedParams { header: &header, body: &[], buttons: &[] };
        let components = template_message(&shape, "t", "en", "+1", &params, "e")["template"]["components"].clone();
        assert_eq!(components, json!([{"type": "header", "parameters": [{"type": "text", "parameter_name": "order", "text": "A-1042"}]}]));
    }
}
