//! Takes snapshots: on demand (`POST /api/admin/snapshot`), on a schedule,
//! and at shutdown; and cuts the log they cover.
//!
//! A snapshot captures the catalog, then each shard in one message turn of
//! its own (the others keep serving); waits until every change it holds is
//! durable; then encodes and writes it on a thread of its own at a lower
//! priority, closes the active WAL segment, writes the file durably, and
//! only then deletes the log segments that no kept snapshot needs.

use super::capture::EngineCapture;
use super::file::{SnapshotError, SnapshotFiles};
use super::image::{ImageError, SnapshotImage};
use super::SnapshotInfo;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::log::{LogError, Lsn};
use crate::metrics::store::SnapshotMetrics;
use crate::shard::actor::{Capture, Shard};
use crate::wal::{Wal, WalError};
use actix::Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the schedule looks at the clock and the log size.
const SCHEDULE_TICK: Duration = Duration::from_secs(1);

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFailed {
    /// A shard is gone: the engine is shutting down.
    #[error("the engine is shutting down")]
    Unavailable,
    /// The changes it holds never became durable: the log is poisoned.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Encoding or writing it failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why writing a snapshot failed; the previous snapshots and the log are
/// kept.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The image does not encode.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The file could not be written (or read back).
    #[error(transparent)]
    File(#[from] SnapshotError),
    /// The log could not be rotated or cut.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The snapshot did not read back as the newest valid one.
    #[error("the new snapshot {0} does not read back; the log was kept")]
    ReadBack(String),
    /// The thread writing it could not start.
    #[error("cannot start the snapshot thread: {0}")]
    Thread(std::io::Error),
}

/// Which log segments go once a snapshot is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Those wholly covered by the *previous* snapshot: the log always
    /// reaches back to the older of the two kept, so a damaged newest
    /// snapshot falls back to the previous one plus the log.
    KeepFallback,
    /// Every segment the new snapshot covers, once it reads back
    /// (`tokend compact`: the operator asked for exactly that).
    Covered,
}

/// Writes `image` durably and cuts the log as `cut` says; returns what was
/// written and how many segments were deleted. Blocking: run it off the
/// async workers.
pub fn write_image(
    wal: &Wal,
    files: &SnapshotFiles,
    image: &SnapshotImage,
    cut: Cut,
) -> Result<(SnapshotInfo, usize), WriteError> {
    let bytes = image.encode()?;
    // Close the active segment first, so every record the snapshot covers
    // sits in a closed segment that a cut can delete (a deleted token's data
    // must leave the disk by the second snapshot after the delete).
    wal.rotate()?;
    let lsn = image.covered_lsn();
    let written = files.write(lsn, &bytes)?;
    let info = SnapshotInfo {
        lsn,
        file: written.file.clone(),
        bytes: written.bytes,
        tokens: image.token_count(),
    };
    let keep_from = match cut {
        // With a single snapshot on disk there is nothing to fall back on:
        // the log stays whole until a second one exists. A cut before LSN 1
        // removes nothing, but still restarts the log-size count that
        // triggers the next snapshot.
        Cut::KeepFallback if written.kept >= 2 => written.oldest_kept_lsn + 1,
        Cut::KeepFallback => 1,
        Cut::Covered => {
            let newest = files.read_newest_valid()?.loaded.map(|l| l.lsn);
            if newest != Some(lsn) {
                return Err(WriteError::ReadBack(info.file.display().to_string()));
            }
            lsn + 1
        }
    };
    let dropped = wal.cut_before(keep_from)?;
    Ok((info, dropped.len()))
}

/// Where the shards a snapshot captures are now (they may move between
/// threads, each time at a new address).
pub trait ShardAddresses: Send + Sync + 'static {
    /// Every shard's current address, in shard order (`None`: the shard
    /// runs nowhere right now, and a snapshot without it would lose it).
    fn addresses(&self) -> Vec<Option<Addr<Shard>>>;
}

/// Takes the engine's snapshots, one at a time.
pub struct Snapshotter {
    /// Captures itself under its writer lock.
    catalog: Arc<Catalog>,
    /// The shards; each captures itself in one message turn.
    shards: Arc<dyn ShardAddresses>,
    /// Whose records the captures hold; rotated and cut after each snapshot.
    wal: Arc<Wal>,
    /// Where snapshots go.
    files: Arc<SnapshotFiles>,
    /// Stamps the image (engine time).
    clock: Arc<dyn Clock>,
    /// One snapshot at a time: a second caller waits for the first.
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Durations and sizes, for `/metrics`.
    metrics: SnapshotMetrics,
}

impl Snapshotter {
    /// A snapshotter of the engine made of `catalog` and `shards`.
    pub fn new(
        catalog: Arc<Catalog>,
        shards: Arc<dyn ShardAddresses>,
        wal: Arc<Wal>,
        files: Arc<SnapshotFiles>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            catalog,
            shards,
            wal,
            files,
            clock,
            one_at_a_time: tokio::sync::Mutex::new(()),
            metrics: SnapshotMetrics::default(),
        }
    }

    /// Durations and sizes of the snapshots taken.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }

    /// Writes a snapshot of every component and returns once it is durable.
    /// Shards are captured one after another, each in one message turn, so a
    /// snapshot never stops more than one shard at a time; encoding and
    /// writing run off the async workers.
    pub async fn snapshot(&self) -> Result<SnapshotInfo, SnapshotFailed> {
        let _one = self.one_at_a_time.lock().await;
        // Timed from here: the wait for an earlier snapshot is not this one's.
        let started = Instant::now();
        let result = self.take().await;
        match &result {
            Ok(info) => self
                .metrics
                .written(started.elapsed(), info.bytes, info.tokens),
            Err(_) => self.metrics.failed(),
        }
        result
    }

    /// [`Snapshotter::snapshot`], under its one-at-a-time lock.
    async fn take(&self) -> Result<SnapshotInfo, SnapshotFailed> {
        let wal = &self.wal;
        let (catalog, catalog_lsn) = self.catalog.capture_at(|| wal.next_lsn() - 1);
        let addresses = self.shards.addresses();
        let mut shards = Vec::with_capacity(addresses.len());
        for shard in &addresses {
            let shard = shard.as_ref().ok_or(SnapshotFailed::Unavailable)?;
            shards.push(
                shard
                    .send(Capture)
                    .await
                    .map_err(|_| SnapshotFailed::Unavailable)?,
            );
        }
        let capture = EngineCapture {
            taken_at_ms: self.clock.now_ms(),
            catalog,
            catalog_lsn,
            shards,
        };
        // The captures may hold changes whose records are not yet durable:
        // the snapshot is written only once they are (a poisoned log refuses
        // it here).
        wal.durable(capture.newest_lsn()).await?;
        let started = Instant::now();
        let (done, written) = tokio::sync::oneshot::channel();
        let (wal, files) = (Arc::clone(wal), Arc::clone(&self.files));
        std::thread::Builder::new()
            .name("tokend-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let image = capture.into_image(&wal.options().keyring);
                // The caller may have given up waiting (shutdown): nothing to tell.
                let _ = done.send(write_image(&wal, &files, &image, Cut::KeepFallback));
            })
            .map_err(WriteError::Thread)?;
        let (info, _) = written.await.map_err(|_| SnapshotFailed::Unavailable)??;
        tracing::info!(
            lsn = info.lsn,
            tokens = info.tokens,
            bytes = info.bytes,
            file = %info.file.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        Ok(info)
    }

    /// Takes a snapshot every `interval`, and sooner once the log has grown
    /// by `wal_bytes` since it was last cut; runs until dropped.
    ///
    /// A snapshot is skipped while the log has not moved since the last one
    /// was captured: it would hold the same state (what time changes, such
    /// as expiry, is worked out from the clock after a restore as before),
    /// and an idle server of 3 000 000 tokens would otherwise write 170 MB
    /// every interval for nothing.
    pub async fn run_schedule(self: Arc<Self>, interval: Duration, wal_bytes: u64) {
        let mut last = Instant::now();
        // The log's next LSN, read before the last snapshot the schedule
        // took: a change after that read moves it, so an unchanged value
        // means the snapshot already holds everything. `None` until one is
        // taken: the state restored at start may not be in any snapshot.
        let mut taken_at_next_lsn: Option<Lsn> = None;
        loop {
            actix_web::rt::time::sleep(SCHEDULE_TICK).await;
            let due = last.elapsed() >= interval || self.wal.bytes_since_cut() >= wal_bytes;
            if !due {
                continue;
            }
            last = Instant::now();
            let next_lsn = self.wal.next_lsn();
            if taken_at_next_lsn == Some(next_lsn) {
                tracing::debug!(
                    next_lsn,
                    "periodic snapshot skipped: nothing changed since the last"
                );
                continue;
            }
            match self.snapshot().await {
                Ok(_) => taken_at_next_lsn = Some(next_lsn),
                Err(e) => tracing::error!(error = %e, "periodic snapshot failed"),
            }
        }
    }
}

/// Nice value of the snapshot thread: encoding and writing a snapshot of a
/// million tokens keeps a core busy for a good part of a second, and on a
/// small machine the request threads should get that core first, so that
/// redeem latency barely moves while a snapshot runs.
#[cfg(target_os = "linux")]
const SNAPSHOT_THREAD_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority to [`SNAPSHOT_THREAD_NICE`].
/// Best effort: a failure only costs latency during snapshots, so it is
/// logged, not returned. Linux only: elsewhere the nice value is per process.
#[cfg(target_os = "linux")]
fn lower_thread_priority() {
    // SAFETY: setpriority only reads its integer arguments. On Linux the nice
    // value is per thread, and `who = 0` names the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_THREAD_NICE) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the snapshot thread's priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority() {}
