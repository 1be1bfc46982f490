//! The backup file reader: anything but a whole, unaltered backup is an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = mxisd::store::backup::read(&mut input, &mut |_| Ok(()), &mut |_| Ok(()));
});
