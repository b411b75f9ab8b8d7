//! The offline tools: `tokend inspect` and `tokend compact`, on a data dir no
//! server holds (both take the data dir lock).

use crate::clock::{Clock, SystemClock};
use crate::model::Status;
use crate::persist::image::SnapshotImage;
use crate::persist::image::FORMAT_VERSION;
use crate::persist::lock::DataDirLock;
use crate::persist::restore::{catalog_image, shard_image, Restorer};
use crate::persist::store::{Store, StoreConfig};
use crate::snapshot_file::SnapshotStore;
use crate::storage::{FsStorage, Storage};
use crate::wal::{self, segment, WalOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Tombstone retention assumed by the offline tools: they keep every token
/// that a server with the default retention would keep.
const RETENTION_MS: i64 = crate::config::TOMBSTONE_RETENTION_SECS_DEFAULT as i64 * 1000;

/// Prints a summary of `dir`; `Err` (exit 1) on corruption.
pub fn inspect(dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let _lock = DataDirLock::acquire(dir).map_err(|e| e.to_string())?;
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let options = WalOptions::default();
    let mut problems: Vec<String> = Vec::new();
    let say =
        |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(|e| e.to_string());

    say(out, format!("data dir: {}", dir.display()))?;
    let snapshots = SnapshotStore::new(Arc::clone(&storage), dir.to_path_buf());
    let listed = snapshots.list().map_err(|e| e.to_string())?;
    say(out, format!("snapshots: {}", listed.len()))?;
    for entry in &listed {
        let state = match &entry.problem {
            None => "ok".to_owned(),
            Some(problem) => {
                problems.push(format!("{}: {problem}", entry.file.display()));
                format!("DAMAGED: {problem}")
            }
        };
        say(
            out,
            format!(
                "  {}  lsn {}  {} bytes  {state}",
                file_name(&entry.file),
                entry.lsn,
                entry.bytes
            ),
        )?;
    }
    let loaded = snapshots.read_newest_valid().map_err(|e| e.to_string())?;
    let image: Option<SnapshotImage> = match &loaded {
        None => None,
        Some(loaded) => match SnapshotImage::decode(&loaded.payload) {
            Ok(image) => {
                say(
                    out,
                    format!(
                        "restoring from: {} (lsn {})",
                        file_name(&loaded.file),
                        loaded.lsn
                    ),
                )?;
                Some(image)
            }
            Err(e) => return Err(format!("{}: {e}", loaded.file.display())),
        },
    };
    let covered = image.as_ref().map_or(0, SnapshotImage::covered_lsn);
    let segments = segment::list_segments(storage.as_ref(), dir).map_err(|e| e.to_string())?;
    say(out, format!("wal segments: {}", segments.len()))?;
    for s in &segments {
        let bytes = storage.file_len(&s.path).map_err(|e| e.to_string())?;
        say(
            out,
            format!(
                "  {}  first lsn {}  {bytes} bytes",
                file_name(&s.path),
                s.first_lsn
            ),
        )?;
    }
    let shards = image.as_ref().map_or(1, |i| i.shard_count as usize).max(1);
    let mut restorer = Restorer::new(image, shards, RETENTION_MS).map_err(|e| e.to_string())?;
    let replay = wal::read_from_read_only(Arc::clone(&storage), dir, covered, &options);
    let mut replay = match replay {
        Ok(replay) => replay,
        Err(e) => {
            say(out, format!("wal: CORRUPT: {e}"))?;
            return Err(format!("corruption found: {e}"));
        }
    };
    if let Some(torn) = replay.truncation() {
        say(
            out,
            format!("wal: torn tail (a crash mid-write; dropped at next start): {torn}"),
        )?;
    }
    let mut first_lsn = None;
    let mut last_lsn = None;
    let mut records = 0usize;
    for record in &mut replay {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                say(out, format!("wal: CORRUPT: {e}"))?;
                return Err(format!("corruption found: {e}"));
            }
        };
        first_lsn.get_or_insert(record.lsn);
        last_lsn = Some(record.lsn);
        records += 1;
        if let Err(e) = restorer.replay(record.lsn, &record.payload) {
            problems.push(e.to_string());
        }
    }
    match (first_lsn, last_lsn) {
        (Some(first), Some(last)) => say(
            out,
            format!(
                "wal records after the snapshot: {records} (lsn {first}..={last}), checksums ok"
            ),
        )?,
        _ => say(out, "wal records after the snapshot: 0".to_owned())?,
    }
    let (catalog, states) = restorer.finish();
    let now = SystemClock.now_ms();
    let mut counts: BTreeMap<&str, usize> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut total = 0usize;
    for token in states.iter().flat_map(|s| s.tokens()) {
        total += 1;
        *counts.entry(token.status_at(now).as_str()).or_default() += 1;
    }
    let image = catalog_image(&catalog);
    say(
        out,
        format!(
            "accounts: {}  api keys: {}  collections: {}",
            image.accounts.len(),
            image.api_keys.len(),
            image.collections.len()
        ),
    )?;
    let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    say(out, format!("tokens: {total} ({})", by_status.join(", ")))?;
    if problems.is_empty() {
        say(out, "verdict: ok".to_owned())?;
        Ok(())
    } else {
        for problem in &problems {
            say(out, format!("problem: {problem}"))?;
        }
        Err(format!("{} problem(s) found", problems.len()))
    }
}

/// Restores `dir`, writes a fresh snapshot and drops the WAL it covers.
pub fn compact(dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let config = StoreConfig {
        data_dir: dir.to_path_buf(),
        wal: WalOptions::default(),
        storage: Arc::new(FsStorage),
    };
    let shards = 1;
    let (store, restored) =
        Store::open(&config, shards, RETENTION_MS).map_err(|e| e.to_string())?;
    let lsn = store.last_lsn();
    let image = SnapshotImage {
        format_version: FORMAT_VERSION,
        taken_at_ms: SystemClock.now_ms(),
        shard_count: shards as u32,
        catalog_lsn: lsn,
        catalog: catalog_image(&restored.catalog),
        shards: restored
            .shards
            .iter()
            .map(|s| shard_image(s, lsn))
            .collect(),
    };
    let info = store.compact(&image).map_err(|e| e.to_string())?;
    writeln!(
        out,
        "wrote {} (lsn {}, {} tokens, {} bytes); dropped {} WAL segment(s)",
        file_name(&info.snapshot.file),
        info.snapshot.lsn,
        info.snapshot.tokens,
        info.snapshot.bytes,
        info.dropped_segments
    )
    .map_err(|e| e.to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
