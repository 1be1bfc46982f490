//! Rendering e-mail and SMS templates with placeholders the fuzzer also chooses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::notify::template::{render_text, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, value) = text.split_once('\0').unwrap_or((text, "v%a%"));
    let mut vars = Vars::new();
    vars.set("a", value)
        .set("token", value)
        .set_truncated("sender_display_name", value, 20);
    let _ = render_text(template, &vars);
});
