//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same functions the cargo-fuzz targets call (`tokend::fuzzing`), so that
//! every input a fuzzer kept — and every crash it found, once fixed — is
//! checked by plain `cargo test`, on stable, without a fuzzer.
//!
//! A corpus directory that is missing or empty fails the test (a replay of
//! nothing would pass without checking anything), and so does a target
//! without its cargo-fuzz file or a cargo-fuzz file without its target.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use tokend::fuzzing::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> &'static Target {
    match TARGETS.iter().find(|t| t.name == name) {
        Some(target) => target,
        None => panic!("no fuzz target {name} in tokend::fuzzing::TARGETS"),
    }
}

/// Runs every file of the target's corpus; fails naming each input that
/// panicked.
fn replay(name: &str) {
    let target = target(name);
    let dir = fuzz_dir().join("corpus").join(name);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut inputs: Vec<PathBuf> = entries
        .map(|entry| match entry {
            Ok(entry) => entry.path(),
            Err(e) => panic!("listing {}: {e}", dir.display()),
        })
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for path in &inputs {
        let data =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {name} failed:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn wal_frame_corpus() {
    replay("wal_frame");
}

#[test]
fn wal_segment_corpus() {
    replay("wal_segment");
}

#[test]
fn log_record_corpus() {
    replay("log_record");
}

#[test]
fn snapshot_section_corpus() {
    replay("snapshot_section");
}

#[test]
fn snapshot_file_corpus() {
    replay("snapshot_file");
}

#[test]
fn request_body_corpus() {
    replay("request_body");
}

/// Every target has a cargo-fuzz file and a replay above, and every
/// cargo-fuzz file is a target.
#[test]
fn the_fuzz_crate_and_the_targets_agree() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    names.sort();
    assert_eq!(files, names);
    let this = include_str!("fuzz_corpus.rs");
    for name in &names {
        assert!(
            this.contains(&format!("replay(\"{name}\");")),
            "{name} has no replay test"
        );
    }
}
