//! `intent`: see [`tollgate_fuzz::intent`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::intent(data));
