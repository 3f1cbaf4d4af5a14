//! `json`: see [`tollgate_fuzz::json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::json(data));
