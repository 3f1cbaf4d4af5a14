//! `export`: see [`tollgate_fuzz::export`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::export(data));
