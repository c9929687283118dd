//! Create's and execute's body validation: any bytes a client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) {
        let _ = actiond::domain::parse_action_spec(&body);
        let _ = actiond::http::executions::parse_execute(&body);
    }
});
