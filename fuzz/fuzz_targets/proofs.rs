//! `proofs`: see [`tollgate_fuzz::proofs`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::proofs(data));
