//! `checkpoint`: see [`tollgate_fuzz::checkpoint`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::checkpoint(data));
