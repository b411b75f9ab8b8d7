#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::snapshot_section`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::snapshot_section::run(data));
