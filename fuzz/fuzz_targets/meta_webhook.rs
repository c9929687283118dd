//! Meta's webhook: the signature header and the events of any payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = actiond::whatsapp::webhook::parse_signature(header);
    }
    if let Ok(payload) = serde_json::from_slice::<Value>(data) {
        let _ = actiond::whatsapp::webhook::events(&payload);
    }
});
