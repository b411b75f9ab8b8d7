//! Rebuilding the engine state from a data dir: the newest snapshot image,
//! then every logged record after it, each applied only to the components
//! that do not include it yet.
//!
//! One routine serves the server's start and `tokend inspect`: [`read`]
//! changes nothing on disk and reports what a start must clean up (a torn
//! tail to cut, damaged snapshots to set aside, unfinished snapshot files);
//! a start then calls [`repair`]. So a data dir that does not restore — a
//! newer format, damage — is left exactly as it was.

use super::StoreError;
use crate::catalog::{Catalog, CatalogError};
use crate::clock::Millis;
use crate::command::{Create, ShardCommand};
use crate::keyring::Keyring;
use crate::log::{LogRecord, Lsn};
use crate::shard::ShardState;
use crate::snapshot::file::{LoadedSnapshot, NewestValid, SnapshotFiles};
use crate::snapshot::image::SnapshotImage;
use crate::snapshot::load;
use crate::storage::Storage;
use crate::wal::{self, Record, SegmentEnd, Truncation, WalOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often restore reports progress on large data.
const PROGRESS_PERIOD: Duration = Duration::from_secs(2);

/// Why the logged state does not rebuild.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot's catalog does not rebuild.
    #[error("snapshot {file}: catalog: {source}")]
    Catalog {
        /// The snapshot file.
        file: PathBuf,
        /// Why.
        source: CatalogError,
    },
    /// The snapshot's tokens do not rebuild.
    #[error("snapshot {file}: {reason}")]
    Tokens {
        /// The snapshot file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A logged record does not decode (damaged, or of a newer format) or
    /// apply.
    #[error("WAL record at LSN {lsn} in {}: {reason}", file.display())]
    Record {
        /// The segment file.
        file: Arc<Path>,
        /// Its LSN.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
}

/// Counts reported when restore ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Tokens loaded from the snapshot.
    pub snapshot_tokens: usize,
    /// Logged records read after the snapshot's oldest component.
    pub records_read: usize,
    /// Logged records applied.
    pub records_applied: usize,
    /// Logged records skipped because the snapshot already included them.
    pub records_skipped: usize,
    /// LSN of the first record read, if any.
    pub first_lsn: Option<Lsn>,
    /// LSN of the last record read, if any.
    pub last_lsn: Option<Lsn>,
}

/// The snapshot a restore started from.
#[derive(Debug, Clone)]
pub struct SnapshotUsed {
    /// The file.
    pub file: PathBuf,
    /// The LSN in its name.
    pub lsn: Lsn,
    /// Its format version.
    pub format_version: u32,
}

/// What a restore found on disk besides the state.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// The snapshot restored from (none: the log alone).
    pub snapshot: Option<SnapshotUsed>,
    /// Damaged snapshots skipped and unfinished ones: a start sets them
    /// aside.
    pub snapshots: NewestValid,
    /// The torn tail found at the end of the log: a start cuts it off.
    pub torn_tail: Option<Truncation>,
    /// Where the valid frames of the log's last segment end (none: no segments): once
    /// [`repair`] has cut the torn tail, the WAL opens there without reading the segment again.
    pub log_end: Option<SegmentEnd>,
    /// Counters.
    pub stats: RestoreStats,
}

/// The rebuilt state.
pub struct Restored {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// One state per shard.
    pub shards: Vec<ShardState>,
    /// The LSN the log continues at.
    pub next_lsn: Lsn,
    /// What was found on the way.
    pub report: RestoreReport,
}

/// Rebuilds the state of the data dir `dir`, changing nothing on disk, for
/// `shard_count` shards (`None`: as many as the snapshot had, or one).
pub fn read(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    wal_options: &WalOptions,
    shard_count: Option<usize>,
    retention_ms: i64,
) -> Result<Restored, StoreError> {
    let started = Instant::now();
    // The WAL's last segment is read and checked on a thread of its own while the snapshot is
    // read and decoded: neither needs the other, and reading the snapshot file keeps one core
    // busy and leaves the other idle.
    let (snapshot, tail) = std::thread::scope(|scope| {
        let tail = std::thread::Builder::new()
            .name("tokend-wal-tail".into())
            .spawn_scoped(scope, || wal::read_tail(storage.as_ref(), dir, wal_options));
        let snapshot = read_snapshot(storage, dir);
        let tail = match tail {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to spare: read it here.
            Err(_) => wal::read_tail(storage.as_ref(), dir, wal_options),
        };
        (snapshot, tail)
    });
    // A snapshot's problem is reported before the log's, as when they were read in turn.
    let SnapshotRead {
        found,
        used: snapshot,
        image,
    } = snapshot?;
    let covered = image.as_ref().map_or(0, |(image, _)| image.covered_lsn());
    let shard_count = shard_count.unwrap_or_else(|| {
        image
            .as_ref()
            .map_or(1, |(image, _)| (image.shard_count as usize).max(1))
    });
    let mut restorer = Restorer::new(
        image,
        shard_count,
        retention_ms,
        Arc::clone(&wal_options.keyring),
    )?;
    let mut replay = tail?.replay_read_only(Arc::clone(storage), covered, wal_options)?;
    let mut last_report = Instant::now();
    for record in &mut replay {
        restorer.replay(&record?)?;
        if last_report.elapsed() >= PROGRESS_PERIOD {
            last_report = Instant::now();
            report_progress(&restorer, started);
        }
    }
    let next_lsn = replay.next_lsn().max(restorer.last_lsn + 1);
    let stats = restorer.stats;
    let tokens = restorer.token_count();
    let elapsed = started.elapsed();
    tracing::info!(
        tokens,
        snapshot_tokens = stats.snapshot_tokens,
        records_applied = stats.records_applied,
        records_skipped = stats.records_skipped,
        next_lsn,
        elapsed_ms = elapsed.as_millis() as u64,
        tokens_per_sec = (tokens as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        "restore done"
    );
    Ok(Restored {
        catalog: restorer.catalog,
        shards: restorer.shards,
        next_lsn,
        report: RestoreReport {
            snapshot,
            snapshots: found,
            torn_tail: replay.truncation().cloned(),
            log_end: replay.end().cloned(),
            stats,
        },
    })
}

/// Cleans up what [`read`] found, durably: cuts the log's torn tail and sets
/// damaged and unfinished snapshots aside.
pub fn repair(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    report: &RestoreReport,
) -> Result<(), StoreError> {
    if let Some(torn) = &report.torn_tail {
        wal::repair_torn_tail(storage.as_ref(), torn)?;
        tracing::warn!("{torn}");
    }
    SnapshotFiles::new(Arc::clone(storage), dir.to_path_buf()).set_aside(&report.snapshots)?;
    Ok(())
}

/// The newest valid snapshot of a data dir, decoded.
struct SnapshotRead {
    /// What was found beside it (damaged and unfinished files).
    found: NewestValid,
    /// Which file it is (none: start from the log alone).
    used: Option<SnapshotUsed>,
    /// Its image, and the file it was read from.
    image: Option<(SnapshotImage, PathBuf)>,
}

/// Reads and decodes the newest valid snapshot in `dir`.
fn read_snapshot(storage: &Arc<dyn Storage>, dir: &Path) -> Result<SnapshotRead, StoreError> {
    let files = SnapshotFiles::new(Arc::clone(storage), dir.to_path_buf());
    let mut found = files.read_newest_valid()?;
    let loaded = found.loaded.take();
    let used = loaded.as_ref().map(|l| SnapshotUsed {
        file: l.file.clone(),
        lsn: l.lsn,
        format_version: l.format_version,
    });
    let image = loaded.map(decode_image).transpose()?;
    Ok(SnapshotRead { found, used, image })
}

fn decode_image(loaded: LoadedSnapshot) -> Result<(SnapshotImage, PathBuf), StoreError> {
    let image = SnapshotImage::decode(&loaded.payload, loaded.format_version).map_err(|e| {
        StoreError::Image {
            file: loaded.file.clone(),
            reason: e.to_string(),
        }
    })?;
    tracing::info!(
        file = %loaded.file.display(),
        lsn = loaded.lsn,
        format_version = loaded.format_version,
        tokens = image.token_count(),
        "loading snapshot"
    );
    Ok((image, loaded.file))
}

fn report_progress(restorer: &Restorer, started: Instant) {
    let tokens = restorer.token_count();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        tokens,
        records_applied = restorer.stats.records_applied,
        tokens_per_sec = (tokens as f64 / secs) as u64,
        "restoring"
    );
}

/// Restore in progress.
pub struct Restorer {
    /// The rebuilt catalog.
    catalog: Arc<Catalog>,
    /// The rebuilt shards, for the current shard count.
    shards: Vec<ShardState>,
    /// LSN of the last catalog change in the snapshot.
    catalog_lsn: Lsn,
    /// Per snapshot shard, the LSN of its last included record.
    shard_lsns: Vec<Lsn>,
    /// Shard count of the snapshot: logged token commands are attributed to
    /// the shard that owned them when they were logged.
    logged_shard_count: usize,
    /// The last LSN seen.
    last_lsn: Lsn,
    /// Counters.
    stats: RestoreStats,
    /// Opens the sealed values of the snapshot and the records.
    keyring: Arc<Keyring>,
}

impl Restorer {
    /// Starts from `image` (read from the file named beside it), or from
    /// nothing, for `shard_count` shards; sealed values open with `keyring`.
    pub fn new(
        image: Option<(SnapshotImage, PathBuf)>,
        shard_count: usize,
        retention_ms: i64,
        keyring: Arc<Keyring>,
    ) -> Result<Self, RestoreError> {
        let Some((image, file)) = image else {
            return Ok(Self {
                catalog: Arc::new(Catalog::new()),
                shards: (0..shard_count)
                    .map(|_| ShardState::new(retention_ms))
                    .collect(),
                catalog_lsn: 0,
                shard_lsns: Vec::new(),
                logged_shard_count: shard_count,
                last_lsn: 0,
                stats: RestoreStats::default(),
                keyring,
            });
        };
        let covered = image.covered_lsn();
        let catalog =
            Arc::new(
                image
                    .catalog
                    .restore()
                    .map_err(|source| RestoreError::Catalog {
                        file: file.clone(),
                        source,
                    })?,
            );
        let shard_lsns: Vec<Lsn> = image.shards.iter().map(|s| s.lsn).collect();
        let started = Instant::now();
        let shards =
            load::shard_states(&image.shards, &catalog, shard_count, retention_ms, &keyring)
                .map_err(|reason| RestoreError::Tokens { file, reason })?;
        let snapshot_tokens = shards.iter().map(ShardState::len).sum();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            tokens = snapshot_tokens,
            elapsed_ms = (secs * 1000.0) as u64,
            tokens_per_sec = (snapshot_tokens as f64 / secs) as u64,
            "snapshot tokens loaded"
        );
        Ok(Self {
            catalog,
            shards,
            catalog_lsn: image.catalog_lsn,
            logged_shard_count: (image.shard_count as usize).max(1),
            shard_lsns,
            last_lsn: covered,
            stats: RestoreStats {
                snapshot_tokens,
                ..RestoreStats::default()
            },
            keyring,
        })
    }

    /// Applies a logged record (records come in LSN order).
    pub fn replay(&mut self, record: &Record) -> Result<(), RestoreError> {
        let lsn = record.lsn;
        debug_assert!(
            lsn > self.last_lsn || self.last_lsn == 0,
            "records in LSN order"
        );
        self.last_lsn = self.last_lsn.max(lsn);
        self.stats.records_read += 1;
        self.stats.first_lsn.get_or_insert(lsn);
        self.stats.last_lsn = Some(lsn);
        let failed = |reason: String| RestoreError::Record {
            file: Arc::clone(&record.file),
            lsn,
            reason,
        };
        match LogRecord::decode(&record.payload, &self.keyring)
            .map_err(|e| failed(e.to_string()))?
        {
            LogRecord::Catalog(command) => {
                if lsn <= self.catalog_lsn {
                    self.stats.records_skipped += 1;
                    return Ok(());
                }
                self.catalog
                    .apply(&command)
                    .map_err(|e| failed(e.to_string()))?;
            }
            LogRecord::Shard { now_ms, command } => {
                let Some(token) = command.token_id() else {
                    // A create of no tokens changes nothing anywhere.
                    self.stats.records_skipped += 1;
                    return Ok(());
                };
                let logged_shard = token.shard(self.logged_shard_count);
                let included = self.shard_lsns.get(logged_shard).copied().unwrap_or(0);
                if lsn <= included {
                    self.stats.records_skipped += 1;
                    return Ok(());
                }
                self.apply_shard_command(lsn, command, now_ms);
            }
        }
        self.stats.records_applied += 1;
        Ok(())
    }

    fn apply_shard_command(&mut self, lsn: Lsn, command: ShardCommand, now_ms: Millis) {
        let count = self.shards.len();
        let parts: Vec<(usize, ShardCommand)> = match command {
            // A create's tokens shared one shard when logged; with another
            // shard count now they may not.
            ShardCommand::Create(Create { tokens }) => {
                let mut split: BTreeMap<usize, Vec<_>> = BTreeMap::new();
                for token in tokens {
                    split.entry(token.id.shard(count)).or_default().push(token);
                }
                split
                    .into_iter()
                    .map(|(shard, tokens)| (shard, ShardCommand::Create(Create { tokens })))
                    .collect()
            }
            other => match other.token_id() {
                Some(id) => vec![(id.shard(count), other)],
                None => Vec::new(),
            },
        };
        for (shard, part) in parts {
            if let Err(rejection) = self.shards[shard].apply(&part, now_ms, &self.catalog) {
                // Only a configuration change (a shorter tombstone retention)
                // makes a logged command refuse now; the state it would have
                // changed is gone either way.
                tracing::warn!(lsn, %rejection, "logged command no longer applies; skipped");
            }
        }
    }

    /// Tokens held so far.
    pub fn token_count(&self) -> usize {
        self.shards.iter().map(ShardState::len).sum()
    }

    /// The LSN of the last record seen (snapshot or log).
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The rebuilt state.
    pub fn finish(self) -> (Arc<Catalog>, Vec<ShardState>) {
        (self.catalog, self.shards)
    }
}
