//! Values read back from the store: a damaged record is an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxisd::store::codec::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<mxisd::store::bindings::ThreePidRecord>(data);
    let _ = decode::<mxisd::store::sessions::SessionRecord>(data);
    let _ = decode::<mxisd::store::invites::InviteRecord>(data);
    let _ = decode::<mxisd::store::accounts::UserRecord>(data);
    let _ = decode::<mxisd::store::accounts::TokenRecord>(data);
});
