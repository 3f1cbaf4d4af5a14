//! `event`: see [`tollgate_fuzz::event`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::event(data));
