//! Meta's webhook: the signature header and the events of any payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = actiond::whatsapp::webhook::parse_signature(header);
    }
    let _ = actiond::whatsapp::webhook::events(&actiond::whatsapp::webhook::read_payload(data));
});
