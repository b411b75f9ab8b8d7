#![no_main]
//! cargo-fuzz target: see `tokend::fuzzing::request_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::request_body::run(data));
