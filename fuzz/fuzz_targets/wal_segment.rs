#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::wal_segment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::wal_segment::run(data));
