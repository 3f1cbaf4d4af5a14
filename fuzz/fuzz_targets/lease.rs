//! `lease`: see [`tollgate_fuzz::lease`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::lease(data));
