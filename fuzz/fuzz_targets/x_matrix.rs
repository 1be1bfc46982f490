//! The X-Matrix Authorization header of federation requests.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mxisd::federation::xmatrix::parse_header(text);
    }
});
