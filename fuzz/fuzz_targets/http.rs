//! `http`: see [`tollgate_fuzz::http`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::http(data));
