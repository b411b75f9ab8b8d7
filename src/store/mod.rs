//! The durable store of one data dir: its lock, its write-ahead log and its
//! snapshot files, and the restore that reads them back at start.
//!
//! - [`lock`]: one process per data dir;
//! - [`restore`]: snapshot + log → catalog and shards, read-only, with the
//!   repairs a start makes once it succeeded.
//!
//! Layout of a data dir:
//!
//! ```text
//! LOCK                          exclusive lock of the running process
//! admin-key.sha256              digest of a generated admin key
//! wal-<first LSN, 20 digits>.log  WAL segments (header, then frames: length, LSN, CRC, payload,
//!                               then zeros: pre-allocated)
//! spare-segment.tmp             the next WAL segment, pre-allocated ahead of time
//! snapshot-<LSN, 20 digits>.mpk   snapshots (header + image); the newest two are kept
//! ```

pub mod lock;
pub mod restore;

use crate::snapshot::file::{SnapshotError, SnapshotFiles};
use crate::storage::Storage;
use crate::wal::{Wal, WalError, WalOptions};
use lock::DataDirLock;
use restore::{RestoreError, Restored};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir is locked by another process, or the lock failed.
    #[error("{0}")]
    Lock(std::io::Error),
    /// The log is damaged (names file and offset), of a newer format, or an
    /// I/O error occurred.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot file could not be read, or is of a newer format.
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

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

/// An open data dir.
pub struct Store {
    /// Held until [`Store::close`]: released explicitly at shutdown rather
    /// than whenever the last reference to the store happens to drop.
    lock: parking_lot::Mutex<Option<DataDirLock>>,
    /// The log, open for appending.
    wal: Arc<Wal>,
    /// The snapshot files.
    files: Arc<SnapshotFiles>,
}

impl Store {
    /// Locks the data dir and restores its state for `shard_count` shards:
    /// reads everything first, and changes the files (cuts a torn tail, sets
    /// damaged snapshots aside) only once that succeeded.
    pub fn open(
        config: &StoreConfig,
        shard_count: usize,
        retention_ms: i64,
    ) -> Result<(Store, Restored), StoreError> {
        let lock = DataDirLock::acquire(&config.data_dir).map_err(StoreError::Lock)?;
        let storage = &config.storage;
        let dir = &config.data_dir;
        let restored = restore::read(storage, dir, &config.wal, Some(shard_count), retention_ms)?;
        restore::repair(storage, dir, &restored.report)?;
        let wal = Wal::open_at(
            Arc::clone(storage),
            dir.clone(),
            config.wal.clone(),
            restored.next_lsn,
            restored.report.log_end.as_ref(),
        )?;
        let store = Store {
            lock: parking_lot::Mutex::new(Some(lock)),
            wal: Arc::new(wal),
            files: Arc::new(SnapshotFiles::new(Arc::clone(storage), dir.clone())),
        };
        Ok((store, restored))
    }

    /// The log.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The snapshot files.
    pub fn snapshot_files(&self) -> &Arc<SnapshotFiles> {
        &self.files
    }

    /// Ends the store's use of the data dir: flushes and closes the log, so
    /// every later append is refused, and releases the lock so another
    /// process (or a restart in the same process) can open the dir at once.
    pub fn close(&self) -> Result<(), WalError> {
        let closed = self.wal.close();
        let stats = self.wal.stats();
        tracing::info!(
            batches = stats.batches,
            records = stats.records,
            fsyncs = stats.fsyncs,
            bytes = stats.bytes,
            rotations = stats.rotations,
            spare_waits = stats.spare_waits,
            "WAL closed"
        );
        self.lock.lock().take();
        closed
    }
}
