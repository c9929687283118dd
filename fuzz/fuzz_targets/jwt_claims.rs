//! A verified token's claims, whatever their types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) {
        let _ = actiond::auth::caller_from(&claims);
    }
});
