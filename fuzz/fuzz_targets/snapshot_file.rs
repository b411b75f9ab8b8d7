#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::snapshot_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::snapshot_file::run(data));
