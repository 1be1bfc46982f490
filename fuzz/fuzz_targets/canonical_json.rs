//! Canonical JSON: never panics, and is a fixed point (canonical of canonical is itself).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::crypto::canonical::to_canonical;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(once) = to_canonical(&value) {
        let again: serde_json::Value = serde_json::from_str(&once).expect("canonical JSON parses");
        assert_eq!(to_canonical(&again).ok().as_deref(), Some(once.as_str()));
    }
});
