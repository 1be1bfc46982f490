//! Phone numbers: as a 3PID address, and from a country and a national number.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::model::{Medium, ThreePid};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ThreePid::new(Medium::Msisdn, text);
    let _ = ThreePid::new(Medium::Email, text);
    let (country, number) = text.split_at(text.char_indices().nth(2).map_or(text.len(), |(i, _)| i));
    let _ = mxisd::service::session::msisdn_threepid(country, number);
});
