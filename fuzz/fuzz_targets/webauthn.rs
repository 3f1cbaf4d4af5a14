//! `webauthn`: see [`tollgate_fuzz::webauthn`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::webauthn(data));
