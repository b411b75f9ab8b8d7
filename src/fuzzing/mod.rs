//! Entry points for coverage-guided fuzzing of every decoder of untrusted
//! or on-disk bytes: WAL frames and segments, log records, snapshot files
//! and their token sections, and request bodies.
//!
//! Each target is one function from arbitrary bytes that runs the decoder
//! exactly as the product runs it (the same public functions, on the same
//! limits) and then checks what must hold of its result, typically that a
//! decoded value encodes and decodes back to itself. A panic — from the
//! decoder or from a broken invariant — is a bug found. The `fuzz/` crate's
//! cargo-fuzz targets call these functions, and so does the corpus replay
//! (`tests/fuzz_corpus.rs`, part of `cargo test`), so a committed input
//! keeps being checked on stable Rust, without a fuzzer. See
//! `docs/fuzzing.md`.
//!
//! The leading bytes of some targets' inputs choose how the rest is used
//! (a limit, a format version, whether checksums are recomputed so that the
//! fuzzer can reach past them); each target documents its input.

pub mod log_record;
pub mod request_body;
pub mod snapshot_file;
pub mod snapshot_section;
pub mod wal_frame;
pub mod wal_segment;

use crate::keyring::Keyring;
use std::sync::{Arc, OnceLock};

/// The keyring the targets decode and encode with: none. A sealed value in
/// an input is then refused for its missing key (after its key id is
/// read), and re-encoding stays byte for byte (sealing draws a random
/// nonce, so sealed output would differ on every encode).
fn no_keys() -> &'static Arc<Keyring> {
    static KEYRING: OnceLock<Arc<Keyring>> = OnceLock::new();
    KEYRING.get_or_init(|| Arc::new(Keyring::off()))
}

/// One fuzz target: its name (the `fuzz/fuzz_targets/` file and the
/// `fuzz/corpus/` directory) and its function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the cargo-fuzz target and of its corpus directory.
    pub name: &'static str,
    /// Runs one input; panics on a bug.
    pub run: fn(&[u8]),
    /// Largest input worth trying, in bytes (libFuzzer's `-max_len`): big
    /// enough for the real inputs the corpus was seeded with.
    pub input_bytes_max: usize,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "wal_frame",
        run: wal_frame::run,
        input_bytes_max: wal_frame::INPUT_BYTES_MAX,
    },
    Target {
        name: "wal_segment",
        run: wal_segment::run,
        input_bytes_max: wal_segment::INPUT_BYTES_MAX,
    },
    Target {
        name: "log_record",
        run: log_record::run,
        input_bytes_max: log_record::INPUT_BYTES_MAX,
    },
    Target {
        name: "snapshot_section",
        run: snapshot_section::run,
        input_bytes_max: snapshot_section::INPUT_BYTES_MAX,
    },
    Target {
        name: "snapshot_file",
        run: snapshot_file::run,
        input_bytes_max: snapshot_file::INPUT_BYTES_MAX,
    },
    Target {
        name: "request_body",
        run: request_body::run,
        input_bytes_max: request_body::INPUT_BYTES_MAX,
    },
];

/// Tombstone retention the restoring targets use: the server's default.
pub(crate) const RETENTION_MS: i64 = crate::config::TOMBSTONE_RETENTION_SECS_DEFAULT as i64 * 1000;
