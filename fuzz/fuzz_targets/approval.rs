//! `approval`: see [`tollgate_fuzz::approval`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::approval(data));
