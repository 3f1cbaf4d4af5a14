//! `bundle`: see [`tollgate_fuzz::bundle`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::bundle(data));
