//! The offline tools: `tokend inspect` and `tokend compact`, on a data dir no
//! server holds (both take the data dir lock).
//!
//! `inspect` runs the restore a start runs, read-only ([`restore::read`]),
//! so what it reports is what a start would find, and it changes nothing.
//! Both open sealed values with the keyring of `TOKEND_DATA_KEY`, as a start
//! does: `inspect` fails, naming the key id, when a value does not open, and
//! otherwise counts the values each key opened; `compact` writes every value
//! sealed under the first key.

use crate::clock::{Clock, SystemClock};
use crate::keyring::Keyring;
use crate::model::Status;
use crate::shard::ShardState;
use crate::snapshot::file::{ListedSnapshot, SnapshotFiles};
use crate::snapshot::snapshotter::{write_image, Cut};
use crate::snapshot::EngineCapture;
use crate::storage::{FsStorage, Storage};
use crate::store::lock::DataDirLock;
use crate::store::restore::{self, Restored};
use crate::store::{Store, StoreConfig};
use crate::wal::{segment, WalOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Tombstone retention assumed by the offline tools: they keep every token
/// that a server with the default retention would keep.
const RETENTION_MS: i64 = crate::config::TOMBSTONE_RETENTION_SECS_DEFAULT as i64 * 1000;

/// Writes lines of a report, turning a write failure into the tool's error.
struct Report<'a> {
    /// Where the lines go.
    out: &'a mut dyn Write,
}

impl Report<'_> {
    fn line(&mut self, line: impl std::fmt::Display) -> Result<(), String> {
        writeln!(self.out, "{line}").map_err(|e| e.to_string())
    }
}

/// Prints a summary of `dir`, opening sealed values with `keyring`; `Err`
/// (exit 1) on corruption or on a sealed value that does not open.
pub fn inspect(dir: &Path, keyring: Arc<Keyring>, out: &mut dyn Write) -> Result<(), String> {
    let _lock = DataDirLock::acquire(dir).map_err(|e| e.to_string())?;
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let mut report = Report { out };
    report.line(format_args!("data dir: {}", dir.display()))?;
    let mut problems = list_snapshots(&storage, dir, &mut report)?;
    list_segments(&storage, dir, &mut report)?;
    let options = WalOptions {
        keyring: Arc::clone(&keyring),
        ..WalOptions::default()
    };
    let restored = match restore::read(&storage, dir, &options, None, RETENTION_MS) {
        Ok(restored) => restored,
        Err(e) => {
            report.line(format_args!("restore: FAILED: {e}"))?;
            return Err(format!("corruption found: {e}"));
        }
    };
    summarize(&restored, &mut report)?;
    report_sealed(&keyring, &mut report)?;
    problems.extend(
        restored
            .report
            .snapshots
            .damaged
            .iter()
            .map(|(file, why)| format!("{}: {why}", file.display())),
    );
    problems.dedup();
    if problems.is_empty() {
        report.line("verdict: ok")?;
        Ok(())
    } else {
        for problem in &problems {
            report.line(format_args!("problem: {problem}"))?;
        }
        Err(format!("{} problem(s) found", problems.len()))
    }
}

/// Lists every snapshot file with its state; returns the damaged ones as
/// problems.
fn list_snapshots(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    report: &mut Report<'_>,
) -> Result<Vec<String>, String> {
    let files = SnapshotFiles::new(Arc::clone(storage), dir.to_path_buf());
    let listed: Vec<ListedSnapshot> = files.list().map_err(|e| e.to_string())?;
    report.line(format_args!("snapshots: {}", listed.len()))?;
    let mut problems = Vec::new();
    for entry in &listed {
        let state = match &entry.problem {
            None => "ok".to_owned(),
            Some(problem) => {
                problems.push(format!("{}: {problem}", entry.file.display()));
                let kind = if entry.newer {
                    "NEWER FORMAT"
                } else {
                    "DAMAGED"
                };
                format!("{kind}: {problem}")
            }
        };
        report.line(format_args!(
            "  {}  lsn {}  {} bytes  {state}",
            file_name(&entry.file),
            entry.lsn,
            entry.bytes
        ))?;
    }
    Ok(problems)
}

/// Lists every WAL segment with its first LSN and size.
fn list_segments(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    report: &mut Report<'_>,
) -> Result<(), String> {
    let segments = segment::list_segments(storage.as_ref(), dir).map_err(|e| e.to_string())?;
    report.line(format_args!("wal segments: {}", segments.len()))?;
    for s in &segments {
        let bytes = storage.file_len(&s.path).map_err(|e| e.to_string())?;
        report.line(format_args!(
            "  {}  first lsn {}  {bytes} bytes",
            file_name(&s.path),
            s.first_lsn
        ))?;
    }
    Ok(())
}

/// What the restore read: the snapshot, the log after it, the catalog and
/// the tokens by status.
fn summarize(restored: &Restored, report: &mut Report<'_>) -> Result<(), String> {
    let found = &restored.report;
    if let Some(snapshot) = &found.snapshot {
        report.line(format_args!(
            "restoring from: {} (lsn {}, format version {})",
            file_name(&snapshot.file),
            snapshot.lsn,
            snapshot.format_version
        ))?;
    }
    if let Some(torn) = &found.torn_tail {
        report.line(format_args!(
            "wal: torn tail (a crash mid-write; dropped at next start): {torn}"
        ))?;
    }
    let stats = &found.stats;
    match (stats.first_lsn, stats.last_lsn) {
        (Some(first), Some(last)) => report.line(format_args!(
            "wal records after the snapshot: {} (lsn {first}..={last}), checksums ok",
            stats.records_read
        ))?,
        _ => report.line("wal records after the snapshot: 0")?,
    }
    let image = restored.catalog.capture();
    report.line(format_args!(
        "accounts: {}  api keys: {}  collections: {}",
        image.accounts.len(),
        image.api_keys.len(),
        image.collections.len()
    ))?;
    let (total, counts) = count_by_status(&restored.shards);
    let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    report.line(format_args!("tokens: {total} ({})", by_status.join(", ")))
}

/// How many sealed values (in the snapshot and the log read) each key
/// opened.
fn report_sealed(keyring: &Keyring, report: &mut Report<'_>) -> Result<(), String> {
    let Some(sealing) = keyring.sealing_key_id() else {
        return report.line("encryption at rest: off (TOKEND_DATA_KEY unset); no sealed values");
    };
    let counts: Vec<String> = keyring
        .opened_counts()
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    report.line(format_args!(
        "encryption at rest: on, sealing key {sealing}; sealed values read by key: {}",
        counts.join(", ")
    ))
}

/// Every token, and how many of each status, as of now.
fn count_by_status(shards: &[ShardState]) -> (usize, BTreeMap<&'static str, usize>) {
    let now = SystemClock.now_ms();
    let mut counts: BTreeMap<&str, usize> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut total = 0usize;
    for token in shards.iter().flat_map(|s| s.tokens()) {
        total += 1;
        *counts.entry(token.status_at(now).as_str()).or_default() += 1;
    }
    (total, counts)
}

/// Restores `dir`, writes a fresh snapshot and drops the WAL it covers;
/// sealed values open with `keyring`, and every value is written sealed
/// under its first key (plain when it has none).
pub fn compact(dir: &Path, keyring: Arc<Keyring>, out: &mut dyn Write) -> Result<(), String> {
    let config = StoreConfig {
        data_dir: dir.to_path_buf(),
        wal: WalOptions {
            keyring,
            ..WalOptions::default()
        },
        storage: Arc::new(FsStorage),
    };
    let (store, restored) = Store::open(&config, 1, RETENTION_MS).map_err(|e| e.to_string())?;
    let lsn = store.wal().next_lsn() - 1;
    let capture = EngineCapture::at_rest(
        &restored.catalog,
        &restored.shards,
        lsn,
        SystemClock.now_ms(),
    );
    let image = capture.into_image(&config.wal.keyring);
    let (info, dropped) = write_image(store.wal(), store.snapshot_files(), &image, Cut::Covered)
        .map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    writeln!(
        out,
        "wrote {} (lsn {}, {} tokens, {} bytes); dropped {dropped} WAL segment(s)",
        file_name(&info.file),
        info.lsn,
        info.tokens,
        info.bytes,
    )
    .map_err(|e| e.to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
