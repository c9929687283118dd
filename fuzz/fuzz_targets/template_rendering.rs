//! Template rendering: a template's components as Meta might return them,
//! parameters with `{{variables}}`, the call's variables, and the message
//! built from them, and the text a preview shows. Input: `{"format",
//! "components", "params", "variables"}`.
#![no_main]

use std::collections::HashMap;

use actiond::domain::Param;
use actiond::store::TemplateRecord;
use actiond::whatsapp::payload::{RenderedParams, template_message};
use actiond::whatsapp::rendering::render;
use actiond::whatsapp::templates::TemplateShape;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else { return };
    let template = TemplateRecord {
        id: "1".into(),
        name: "fuzzed".into(),
        language: "en".into(),
        status: "APPROVED".into(),
        category: "UTILITY".into(),
        parameter_format: input["format"].as_str().unwrap_or("POSITIONAL").into(),
        components: input["components"].clone(),
    };
    let shape = TemplateShape::of(&template);
    let _ = shape.counts();
    let variables: HashMap<String, String> = input["variables"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
        .collect();
    let rendered: Vec<String> = input["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|text| Param::parse(text.as_str()?).ok())
        .filter_map(|param| param.render(&variables).ok())
        .collect();
    let params = RenderedParams { header: &rendered, body: &rendered, buttons: &rendered };
    let _ = template_message(&shape, "fuzzed", "en", "+15550001111", &params, "execution");
    let _ = render(&template, &params);
});
