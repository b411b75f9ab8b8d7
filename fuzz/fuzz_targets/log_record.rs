#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::log_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::log_record::run(data));
