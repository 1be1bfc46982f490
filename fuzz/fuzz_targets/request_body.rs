//! Request bodies as every endpoint reads them: a JSON object, or (legacy) form-encoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::http::body::{parse_object, parse_params};

fuzz_target!(|data: &[u8]| {
    let _ = parse_object::<serde_json::Value>(Some("application/json"), data);
    let _ = parse_object::<serde_json::Value>(None, data);
    let _ = parse_params(Some("application/x-www-form-urlencoded"), data);
    let _ = parse_params(Some("application/json; charset=utf-8"), data);
});
