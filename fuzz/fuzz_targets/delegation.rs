//! `delegation`: see [`tollgate_fuzz::delegation`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::delegation(data));
