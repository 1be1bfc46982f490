//! Reading a configuration file: every problem is a message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mxisd::config::load_str(
            text,
            "fuzz.yaml",
            std::path::PathBuf::from("/nonexistent/mxisd-fuzz"),
            &|_| None,
        );
    }
});
