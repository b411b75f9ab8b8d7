#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::wal_frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::wal_frame::run(data));
