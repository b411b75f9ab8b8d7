//! The durable store of one data dir: the lock, the write-ahead log and the
//! snapshot files, and the restore that reads them back at start.
//!
//! Layout of a data dir:
//!
//! ```text
//! LOCK                          exclusive lock of the running process
//! admin-key.sha256              digest of a generated admin key
//! wal-<first LSN, 20 digits>.log  WAL segments (frames: length, LSN, CRC, payload)
//! snapshot-<LSN, 20 digits>.mpk   snapshots (header + image, see `image`); the newest two are kept
//! ```

use super::image::SnapshotImage;
use super::lock::DataDirLock;
use super::record::WalRecord;
use super::restore::{RestoreError, Restorer, PROGRESS_PERIOD};
use crate::catalog::Catalog;
use crate::shard::ShardState;
use crate::snapshot_file::{SnapshotError, SnapshotStore, WrittenSnapshot};
use crate::storage::Storage;
use crate::wal::{self, Lsn, Wal, WalError, WalOptions};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Why the store could not open or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir is locked by another process, or the lock failed.
    #[error("{0}")]
    Lock(std::io::Error),
    /// The log is damaged (names file and offset) or an I/O error occurred.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot file could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A snapshot whose checksum is right does not decode.
    #[error("snapshot {file} does not decode: {reason}")]
    Image {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The logged state does not rebuild.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Where and how to keep data.
#[derive(Clone)]
pub struct StoreConfig {
    /// The data dir.
    pub data_dir: PathBuf,
    /// WAL fsync mode and limits.
    pub wal: WalOptions,
    /// File I/O (the real file system, or a fault-injecting wrapper in tests).
    pub storage: Arc<dyn Storage>,
}

/// What restore found.
pub struct Restored {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// One state per shard.
    pub shards: Vec<ShardState>,
}

/// A snapshot that was written.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The LSN every component includes.
    pub lsn: Lsn,
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Tokens in it.
    pub tokens: usize,
}

/// The open store.
pub struct Store {
    /// Held until [`Store::close`]: released explicitly at shutdown rather
    /// than whenever the last reference to the store happens to drop.
    lock: parking_lot::Mutex<Option<DataDirLock>>,
    /// The log.
    wal: Wal,
    /// Snapshot files.
    snapshots: SnapshotStore,
    /// Set when an append is refused (overload, oversized record): the caller
    /// had already applied the change in memory, so memory and log differ and
    /// nothing more may be acknowledged — the same rule as a failed write.
    refused: std::sync::OnceLock<Arc<str>>,
}

/// What `compact` did.
#[derive(Debug, Clone)]
pub struct CompactInfo {
    /// The snapshot written.
    pub snapshot: SnapshotInfo,
    /// WAL segments deleted.
    pub dropped_segments: usize,
}

thread_local! {
    /// Encoding buffer reused by every append on this thread.
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl Store {
    /// Locks the data dir and restores its state for `shard_count` shards.
    pub fn open(
        config: &StoreConfig,
        shard_count: usize,
        retention_ms: i64,
    ) -> Result<(Store, Restored), StoreError> {
        let started = Instant::now();
        let lock = DataDirLock::acquire(&config.data_dir).map_err(StoreError::Lock)?;
        let storage = Arc::clone(&config.storage);
        let snapshots = SnapshotStore::new(Arc::clone(&storage), config.data_dir.clone());
        let loaded = snapshots.load_newest_valid()?;
        let image = match loaded {
            None => None,
            Some(loaded) => {
                let image =
                    SnapshotImage::decode(&loaded.payload).map_err(|e| StoreError::Image {
                        file: loaded.file.clone(),
                        reason: e.to_string(),
                    })?;
                tracing::info!(
                    file = %loaded.file.display(),
                    lsn = loaded.lsn,
                    tokens = image.token_count(),
                    "loading snapshot"
                );
                Some(image)
            }
        };
        let covered = image.as_ref().map_or(0, SnapshotImage::covered_lsn);
        let mut restorer = Restorer::new(image, shard_count, retention_ms)?;
        let mut replay =
            wal::read_from(Arc::clone(&storage), &config.data_dir, covered, &config.wal)?;
        if let Some(truncation) = replay.truncation() {
            tracing::warn!("{truncation}");
        }
        let mut last_report = Instant::now();
        for record in &mut replay {
            let record = record?;
            restorer.replay(record.lsn, &record.payload)?;
            if last_report.elapsed() >= PROGRESS_PERIOD {
                last_report = Instant::now();
                report_progress(&restorer, started);
            }
        }
        let next_lsn = replay.next_lsn().max(restorer.last_lsn() + 1);
        let wal = Wal::open(
            storage,
            config.data_dir.clone(),
            config.wal.clone(),
            next_lsn,
        )?;
        let stats = restorer.stats();
        let tokens = restorer.token_count();
        let (catalog, shards) = restorer.finish();
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
        let store = Store {
            lock: parking_lot::Mutex::new(Some(lock)),
            wal,
            snapshots,
            refused: std::sync::OnceLock::new(),
        };
        Ok((store, Restored { catalog, shards }))
    }

    /// Logs `record`; the change is acknowledged once [`Store::wait_durable`]
    /// for the returned LSN succeeds.
    pub fn append(&self, record: &WalRecord) -> Result<Lsn, WalError> {
        self.check_refused()?;
        let appended = ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            record.encode_into(&mut buf);
            self.wal.append(&buf)
        });
        if let Err(e) = &appended {
            let cause: Arc<str> = Arc::from(e.to_string());
            if self.refused.set(Arc::clone(&cause)).is_ok() {
                tracing::error!(%cause, "WAL append refused; no further change is acknowledged");
            }
        }
        appended
    }

    /// `Err` once the store can acknowledge nothing more (a failed write or
    /// fsync, or a refused append). Shards check it before applying a change,
    /// so that a poisoned engine stops changing state — reads then show only
    /// what was there.
    pub fn check_writable(&self) -> Result<(), WalError> {
        self.check_refused()?;
        self.wal.check_writable()
    }

    fn check_refused(&self) -> Result<(), WalError> {
        match self.refused.get() {
            Some(cause) => Err(WalError::Poisoned {
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// The LSN of the last appended record (0 when none).
    pub fn last_lsn(&self) -> Lsn {
        self.wal.next_lsn() - 1
    }

    /// Resolves once everything up to `lsn` is acknowledgeable under the fsync
    /// mode; an error means it never will be (the log is poisoned).
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        self.check_refused()?;
        if lsn == 0 {
            return Ok(());
        }
        self.wal.wait_durable(lsn).await
    }

    /// Ends the store's use of the data dir: flushes, refuses every later
    /// append, and releases the lock so another process (or a restart in the
    /// same process) can open the dir at once.
    pub fn close(&self) -> Result<(), WalError> {
        let flushed = self.flush();
        let stats = self.wal.stats();
        tracing::info!(
            batches = stats.batches,
            records = stats.records,
            fsyncs = stats.fsyncs,
            bytes = stats.bytes,
            "WAL closed"
        );
        let _ = self.refused.set(Arc::from("the store is closed"));
        self.lock.lock().take();
        flushed
    }

    /// Writes and fsyncs everything appended (shutdown).
    pub fn flush(&self) -> Result<(), WalError> {
        self.check_refused()?;
        self.wal.flush()
    }

    /// Bytes logged since the last cut (drives size-triggered snapshots).
    pub fn wal_bytes_since_cut(&self) -> u64 {
        self.wal.bytes_since_cut()
    }

    /// The WAL writer's fsync and batch metrics.
    pub fn wal_metrics(&self) -> &crate::metrics::store::WalMetrics {
        self.wal.metrics()
    }

    /// Writes `image` durably, then drops the log segments that no kept
    /// snapshot needs: the log reaches back to the older of the two kept
    /// snapshots, so a damaged newest one falls back to the previous one plus
    /// the log. Blocking: run off the async workers.
    pub fn write_snapshot(&self, image: &SnapshotImage) -> Result<SnapshotInfo, StoreError> {
        let (info, written) = self.write_image(image)?;
        // With a single snapshot on disk there is nothing to fall back on:
        // the log stays whole until a second one exists. A cut before LSN 1
        // removes nothing, but still restarts the log-size count that
        // triggers the next snapshot.
        let keep_from = if written.kept >= 2 {
            written.oldest_kept_lsn + 1
        } else {
            1
        };
        self.wal.cut_before(keep_from)?;
        Ok(info)
    }

    /// Writes `image`, checks that it reads back, and drops every log segment
    /// it covers (`tokend compact`: the operator asked for exactly that).
    pub fn compact(&self, image: &SnapshotImage) -> Result<CompactInfo, StoreError> {
        let (info, _) = self.write_image(image)?;
        let loaded = self.snapshots.load_newest_valid()?;
        if loaded.as_ref().map(|l| l.lsn) != Some(info.lsn) {
            return Err(StoreError::Image {
                file: info.file.clone(),
                reason: "the new snapshot does not read back; the log was kept".into(),
            });
        }
        let dropped = self.wal.cut_before(info.lsn + 1)?;
        Ok(CompactInfo {
            snapshot: info,
            dropped_segments: dropped.len(),
        })
    }

    fn write_image(
        &self,
        image: &SnapshotImage,
    ) -> Result<(SnapshotInfo, WrittenSnapshot), StoreError> {
        let bytes = image.encode().map_err(|e| StoreError::Image {
            file: PathBuf::new(),
            reason: e.to_string(),
        })?;
        // Close the active segment first, so every record the snapshot covers
        // sits in a closed segment that a cut can delete (a deleted token's
        // data must leave the disk by the second snapshot after the delete).
        self.wal.rotate()?;
        let lsn = image.covered_lsn();
        let written = self.snapshots.write(lsn, &bytes)?;
        Ok((
            SnapshotInfo {
                lsn,
                file: written.file.clone(),
                bytes: written.bytes,
                tokens: image.token_count(),
            },
            written,
        ))
    }
}

fn report_progress(restorer: &Restorer, started: Instant) {
    let tokens = restorer.token_count();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        tokens,
        records_applied = restorer.stats().records_applied,
        tokens_per_sec = (tokens as f64 / secs) as u64,
        "restoring"
    );
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}
