//! `webhook`: see [`tollgate_fuzz::webhook`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::webhook(data));
