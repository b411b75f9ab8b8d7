//! [`Wal`]: appends with group commit.
//!
//! Appenders (shard threads, any number, concurrently) only encode their record into a shared
//! in-memory buffer under a short lock; that fixes the LSN and the order on disk. One dedicated
//! OS thread (never an async worker: it blocks in fsync) repeatedly takes the whole buffer,
//! writes it with one call per segment, fsyncs once for the batch when the mode asks for it,
//! then publishes the new durable LSN and wakes exactly the waiters it covers.
//!
//! A failed write or fsync poisons the WAL for good: after a failed fsync the kernel may have
//! dropped the data and a retry could report success, so nothing written since the last good
//! fsync can ever be acknowledged. A refused append (too large, or more buffered than the limit)
//! poisons it too: every caller has already applied the change it logs, so memory would hold a
//! change the log does not. The cause is kept in one [`Poison`] cell. A restart recovers from
//! what is on disk.

use super::frame::{self, encode_into, PayloadCrc, FRAME_HEADER_BYTES};
use super::reader::{read_and_scan, Scanned, SegmentEnd};
use super::segment::{
    list_segments, ActiveSegment, Layout, SegmentInfo, SpareFile, FORMAT_VERSION,
};
use super::spare::{run_preparer, SpareSlot};
use super::wake::{self, Threads};
use super::{FsyncMode, Lsn, WalError, WalOptions};
use crate::log::{Durable, DurableWatch, Log, LogError, LogRecord, Poison};
use crate::metrics::store::WalMetrics;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A spare batch buffer bigger than this is freed rather than kept for reuse, so one huge
/// record does not pin its memory for the life of the process.
const SPARE_BUFFER_BYTES_MAX: usize = 8 << 20;

/// The write-ahead log, open for appending. Share it (e.g. in an `Arc`) between appenders.
///
/// Dropping it writes and fsyncs whatever is buffered, then stops the writer thread; call
/// [`Wal::flush`] first to learn whether that succeeded.
pub struct Wal {
    /// State shared with the writer thread.
    shared: Arc<Shared>,
    /// The writer thread, joined by [`Wal::close`] or on drop.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The thread that prepares the next segment, joined after the writer.
    preparer: Mutex<Option<JoinHandle<()>>>,
}

/// Counters of the writer thread, for metrics and for checking that group commit groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches taken from the buffer and written.
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Fsyncs of records (batch commits, the closing of a segment, flushes); those that prepare
    /// and install a new segment are not counted.
    pub fsyncs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Segments started after the first (full, or [`Wal::rotate`]).
    pub rotations: u64,
    /// Rotations that had to wait for the next segment to be pre-allocated (its preparation fell
    /// behind the appends, and appends waited meanwhile).
    pub spare_waits: u64,
    /// Wake-ups of threads whose tasks wait for durability: one per thread
    /// per batch that covers one of its waiters, however many wait there.
    pub thread_wakes: u64,
}

/// State shared by appenders, waiters and the writer thread.
pub(super) struct Shared {
    /// Itself, for the per-thread drainers that outlive a wait (see `wake`).
    pub(super) me: std::sync::Weak<Shared>,
    /// Threads whose tasks wait for durability, each woken once per batch.
    pub(super) threads: Threads,
    /// Set (after `AppendState::stopped`) once the writer thread is gone:
    /// read lock-free by waits.
    writer_gone: AtomicBool,
    /// Options the WAL was opened with.
    options: WalOptions,
    /// The data directory.
    dir: PathBuf,
    /// File access.
    storage: Arc<dyn Storage>,
    /// The append buffer and what goes with it; held only for short, non-blocking sections.
    state: Mutex<AppendState>,
    /// Wakes the writer thread when there is work (first record in an empty buffer, flush,
    /// close).
    work: Condvar,
    /// Wakes `flush` callers (paired with `state`) when the synced LSN moves or the WAL fails.
    flushed: Condvar,
    /// Copy of `AppendState::next_lsn`, so `wait_durable` can reject unknown LSNs lock-free.
    next_lsn: AtomicU64,
    /// Highest LSN acknowledged under the fsync mode (fsynced for `Always`, written otherwise).
    durable_lsn: AtomicU64,
    /// Highest LSN fsynced.
    synced_lsn: AtomicU64,
    /// Tasks waiting in `durable`.
    waiters: Mutex<Waiters>,
    /// Set once a write, an fsync or an append fails: nothing is acknowledged from then on.
    poison: Poison,
    /// Segments on disk, oldest first; the last is the one being appended to.
    segments: Mutex<Vec<SegmentInfo>>,
    /// The next segment, pre-allocated by the preparer thread.
    spare: Arc<SpareSlot>,
    /// Bytes written since the last `cut_before`, for the engine's snapshot trigger.
    bytes_since_cut: AtomicU64,
    /// Writer counters.
    stats: Mutex<WalStats>,
    /// Fsync latencies and batch sizes, for `/metrics` (lock-free).
    metrics: WalMetrics,
}

/// What appenders share under [`Shared::state`].
struct AppendState {
    /// Encoded frames not yet taken by the writer thread, in LSN order.
    buf: Vec<u8>,
    /// Number of frames in `buf`, so the writer knows the batch's first LSN.
    buf_records: u64,
    /// LSN the next append gets.
    next_lsn: Lsn,
    /// A `flush` caller wants an fsync even if the mode would not do one now.
    flush_requested: bool,
    /// A `rotate` caller wants the current segment closed after the flush.
    rotate_requested: bool,
    /// Rotation requests served so far (a `rotate` caller waits for its own).
    rotations_done: u64,
    /// The writer thread is gone (close, poison or panic): nothing will be written any more.
    stopped: bool,
    /// The `Wal` is being dropped: write what is left, fsync, stop.
    closing: bool,
}

/// Tasks waiting for durability.
#[derive(Default)]
struct Waiters {
    /// Senders by the LSN they wait for; each gets `Ok` once its LSN is acknowledged, or the
    /// reason it never will be.
    by_lsn: BTreeMap<Lsn, Vec<oneshot::Sender<Result<(), LogError>>>>,
    /// The writer thread has stopped: a new waiter would never be answered.
    closed: bool,
}

impl Wal {
    /// Opens the WAL in `dir` for appending, the next record getting `next_lsn` (use
    /// [`super::Replay::next_lsn`] after replaying; 1 for an empty log).
    ///
    /// Replay first: the last segment must end in a whole frame (replay cuts a torn tail).
    /// Appends continue the last segment when it ends at `next_lsn - 1`; when the log ends
    /// earlier (a snapshot newer than the log), a new segment starts at `next_lsn`.
    ///
    /// A new segment, and the spare for the first rotation, are pre-allocated before this
    /// returns: opening a fresh data dir writes two segments of zeros (`segment_bytes_max`
    /// each); a spare left by an earlier run is reused.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        options: WalOptions,
        next_lsn: Lsn,
    ) -> Result<Wal, WalError> {
        Self::open_at(storage, dir, options, next_lsn, None)
    }

    /// [`Wal::open`] right after a replay of the same directory: `end` is where the replay
    /// found the last segment's frames ending ([`super::Replay::end`]; its torn tail, if any,
    /// already cut), so the segment is not read and checked a second time. An `end` that is not
    /// the last segment's any more is ignored.
    pub fn open_at(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        options: WalOptions,
        next_lsn: Lsn,
        end: Option<&SegmentEnd>,
    ) -> Result<Wal, WalError> {
        options.validate()?;
        if next_lsn == 0 {
            return Err(WalError::InvalidOptions("the first LSN is 1, not 0".into()));
        }
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(|e| WalError::io("creating directory", &dir, e))?;
        let size = options.segment_bytes_max;
        let mut segments = list_segments(storage.as_ref(), &dir)?;
        let active = match segments.last() {
            None => ActiveSegment::create(storage.as_ref(), &dir, next_lsn, size)?,
            Some(last) => {
                let end = match end.filter(|end| end.info == *last) {
                    Some(end) => end.clone(),
                    None => read_end(storage.as_ref(), last, &options)?,
                };
                continue_or_start(storage.as_ref(), &dir, &options, end, next_lsn)?
            }
        };
        if segments.last() != Some(&active.info) {
            segments.push(active.info.clone());
        }
        // Prepared here, so that the first rotation never waits for one.
        let spare = SpareFile::open(storage.as_ref(), &dir, size)?.fill()?;
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            threads: Threads::default(),
            writer_gone: AtomicBool::new(false),
            options,
            dir,
            storage,
            state: Mutex::new(AppendState {
                buf: Vec::new(),
                buf_records: 0,
                next_lsn,
                flush_requested: false,
                rotate_requested: false,
                rotations_done: 0,
                stopped: false,
                closing: false,
            }),
            work: Condvar::new(),
            flushed: Condvar::new(),
            next_lsn: AtomicU64::new(next_lsn),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            synced_lsn: AtomicU64::new(next_lsn - 1),
            waiters: Mutex::new(Waiters::default()),
            poison: Poison::default(),
            segments: Mutex::new(segments),
            spare: Arc::new(SpareSlot::new(spare)),
            bytes_since_cut: AtomicU64::new(0),
            stats: Mutex::new(WalStats::default()),
            metrics: WalMetrics::default(),
        });
        let thread_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("tokend-wal".into())
            .spawn(move || Writer::new(thread_shared, active, next_lsn - 1).run())
            .map_err(|e| WalError::io("starting the writer thread of", &shared.dir, e))?;
        let wal = Wal {
            shared,
            writer: Mutex::new(Some(writer)),
            preparer: Mutex::new(None),
        };
        let thread_shared = Arc::clone(&wal.shared);
        let preparer = std::thread::Builder::new()
            .name("tokend-wal-spare".into())
            .spawn(move || {
                let shared = thread_shared;
                run_preparer(
                    Arc::clone(&shared.spare),
                    Arc::clone(&shared.storage),
                    shared.dir.clone(),
                    shared.options.segment_bytes_max,
                    |e| shared.fail(format_args!("preparing the next segment: {e}")),
                )
            })
            // Dropping `wal` on this error stops its writer thread.
            .map_err(|e| WalError::io("starting the spare thread of", &wal.shared.dir, e))?;
        *wal.preparer.lock() = Some(preparer);
        Ok(wal)
    }

    /// Appends a record and returns its LSN. Cheap and non-blocking (a short lock and a copy);
    /// the record is durable once [`Wal::wait_durable`] for its LSN returns `Ok`.
    ///
    /// LSNs are assigned in the order records reach the buffer, which is their order on disk.
    /// A record refused as too large, or for want of buffer space, poisons the WAL (see the module
    /// docs) and consumes no LSN.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let max = self.shared.options.record_bytes_max;
        if payload.len() > max {
            return Err(self.shared.refuse(WalError::RecordTooLarge {
                bytes: payload.len(),
                max,
            }));
        }
        // The payload's CRC does not depend on the LSN: compute it before taking the lock.
        let crc = PayloadCrc::new(payload);
        let frame_len = FRAME_HEADER_BYTES + payload.len();
        let mut st = self.shared.state.lock();
        self.shared.poison.check()?;
        if st.stopped || st.closing {
            return Err(WalError::Closed);
        }
        let buffer_max = self.shared.options.buffer_bytes_max;
        if st.buf.len() + frame_len > buffer_max {
            let buffered_bytes = st.buf.len();
            drop(st);
            return Err(self.shared.refuse(WalError::Overloaded {
                buffered_bytes,
                max: buffer_max,
            }));
        }
        let lsn = st.next_lsn;
        let was_empty = st.buf.is_empty();
        encode_into(&mut st.buf, lsn, payload, &crc);
        st.buf_records += 1;
        st.next_lsn = lsn + 1;
        self.shared.next_lsn.store(lsn + 1, Ordering::Release);
        drop(st);
        // The writer sleeps only on an empty buffer, so only the first record needs to wake it.
        if was_empty {
            self.shared.work.notify_one();
        }
        Ok(lsn)
    }

    /// The wait for the record `lsn` to be acknowledgeable under the fsync mode (fsynced for
    /// `Always`; handed to the OS for `Interval` and `Never`). It fails once the WAL is poisoned,
    /// even for a record that reached the disk: a poisoned log acknowledges nothing.
    pub fn durable(&self, lsn: Lsn) -> Durable {
        let shared = &self.shared;
        if let Err(e) = shared.poison.check() {
            return Durable::ready(Err(e));
        }
        let next_lsn = shared.next_lsn.load(Ordering::Acquire);
        if lsn >= next_lsn {
            return Durable::ready(Err(LogError::NotAppended { lsn, next_lsn }));
        }
        if shared.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Durable::ready(Ok(()));
        }
        if wake::available() {
            return Durable::watch(Arc::clone(shared) as Arc<dyn DurableWatch>, lsn);
        }
        let mut waiters = shared.waiters.lock();
        // Checked again under the lock: a failure sets the poison, and the writer publishes the
        // LSN, before taking this lock to answer waiters, so either it shows now or this waiter
        // will be answered.
        if let Err(e) = shared.poison.check() {
            return Durable::ready(Err(e));
        }
        if shared.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Durable::ready(Ok(()));
        }
        if waiters.closed {
            return Durable::ready(Err(LogError::Closed));
        }
        let (tx, rx) = oneshot::channel();
        waiters.by_lsn.entry(lsn).or_default().push(tx);
        Durable::pending(rx)
    }

    /// [`Wal::durable`], with the WAL's error type.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        Ok(self.durable(lsn).await?)
    }

    /// Writes and fsyncs everything appended before the call, in any mode. Blocks the calling
    /// thread (use it at shutdown or from a blocking task, not on an async worker).
    pub fn flush(&self) -> Result<(), WalError> {
        self.flush_and_wait(false)
    }

    /// Flushes, then closes the current segment and starts a new one, so that
    /// every record appended before the call sits in a closed segment that
    /// [`Wal::cut_before`] can delete. Blocks like [`Wal::flush`].
    pub fn rotate(&self) -> Result<(), WalError> {
        self.flush_and_wait(true)
    }

    /// Asks the writer for a flush (and a rotation) and waits until it is
    /// served, or the WAL can serve nothing more.
    fn flush_and_wait(&self, rotate: bool) -> Result<(), WalError> {
        let mut st = self.shared.state.lock();
        let target = st.next_lsn - 1;
        let rotations_before = st.rotations_done;
        st.flush_requested = true;
        st.rotate_requested |= rotate;
        self.shared.work.notify_one();
        loop {
            // Poison first: the writer may go on syncing after a failure elsewhere (a refused
            // append, the preparation of the next segment), but a poisoned log acknowledges
            // nothing, a flush included.
            self.shared.poison.check()?;
            let served = if rotate {
                st.rotations_done > rotations_before
            } else {
                self.shared.synced_lsn.load(Ordering::Acquire) >= target
            };
            if served {
                return Ok(());
            }
            if st.stopped {
                return Err(WalError::Closed);
            }
            self.shared.flushed.wait(&mut st);
        }
    }

    /// `Err(Poisoned)` once a write, an fsync or an append has failed: callers that change state
    /// before appending check this first, so a poisoned log stops changes instead of only refusing
    /// to record them. One atomic load.
    pub fn check_writable(&self) -> Result<(), WalError> {
        Ok(self.shared.poison.check()?)
    }

    /// Writes and fsyncs what is buffered, then stops the writer thread: later appends are
    /// refused with [`WalError::Closed`]. Blocks like [`Wal::flush`]; closing again is a no-op.
    pub fn close(&self) -> Result<(), WalError> {
        let flushed = self.flush();
        self.stop_threads();
        match flushed {
            Err(WalError::Closed) => Ok(()),
            other => other,
        }
    }

    /// Tells the writer to write what is left and stop, and waits for it; then stops the
    /// preparer (after the writer: a last rotation may wait for its spare). A spare being
    /// prepared is left as it is: the next open goes on with it.
    fn stop_threads(&self) {
        self.shared.state.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            // A panic in the writer thread has already failed every waiter (see ExitGuard).
            let _ = writer.join();
        }
        self.shared.spare.stop();
        if let Some(preparer) = self.preparer.lock().take() {
            // A panic in the preparer has already poisoned the WAL.
            let _ = preparer.join();
        }
    }

    /// Highest LSN acknowledged under the fsync mode (what [`Wal::durable`] waits for).
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Highest LSN known to be fsynced.
    pub fn synced_lsn(&self) -> Lsn {
        self.shared.synced_lsn.load(Ordering::Acquire)
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn.load(Ordering::Acquire)
    }

    /// Bytes written to the WAL since it was opened or since the last [`Wal::cut_before`]; the
    /// engine snapshots when this passes a threshold.
    pub fn bytes_since_cut(&self) -> u64 {
        self.shared.bytes_since_cut.load(Ordering::Acquire)
    }

    /// Writer counters so far.
    pub fn stats(&self) -> WalStats {
        WalStats {
            thread_wakes: self.shared.threads.wakes(),
            ..*self.shared.stats.lock()
        }
    }

    /// Fsync latencies and batch sizes recorded by the writer thread.
    pub fn metrics(&self) -> &WalMetrics {
        &self.shared.metrics
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.shared.options
    }

    /// Deletes the segments all of whose records have LSN < `lsn` (never the segment being
    /// appended to), makes the deletion durable, and resets [`Wal::bytes_since_cut`]. Returns
    /// the deleted files.
    ///
    /// Call it with one past the LSN of the oldest snapshot still kept, so that a damaged newest
    /// snapshot can fall back to the previous one plus the log.
    pub fn cut_before(&self, lsn: Lsn) -> Result<Vec<PathBuf>, WalError> {
        let doomed: Vec<SegmentInfo> = {
            let mut segments = self.shared.segments.lock();
            // Segment i holds LSNs below segment i+1's first LSN; the last one is never cut.
            let count = segments
                .windows(2)
                .take_while(|pair| pair[1].first_lsn <= lsn)
                .count();
            segments.drain(..count).collect()
        };
        self.shared.bytes_since_cut.store(0, Ordering::Release);
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let storage = self.shared.storage.as_ref();
        for segment in &doomed {
            storage
                .remove_file(&segment.path)
                .map_err(|e| WalError::io("removing", &segment.path, e))?;
        }
        storage
            .sync_dir(&self.shared.dir)
            .map_err(|e| WalError::io("fsyncing directory", &self.shared.dir, e))?;
        Ok(doomed.into_iter().map(|s| s.path).collect())
    }
}

/// Reads the last segment `last` to find where its frames end; damage there is an error
/// (replay cuts a torn tail before the WAL opens).
fn read_end(
    storage: &dyn Storage,
    last: &SegmentInfo,
    options: &WalOptions,
) -> Result<SegmentEnd, WalError> {
    // Only the layout and the end of the frames are needed: the bytes go at once.
    let Scanned { layout, scan, .. } = read_and_scan(storage, last, options)?;
    if let Some((offset, reason)) = scan.bad {
        return Err(WalError::Corrupt {
            file: last.path.clone(),
            offset: offset as u64,
            reason: format!("{reason} (replay the WAL before opening it: replay cuts a torn tail)"),
        });
    }
    Ok(SegmentEnd {
        info: last.clone(),
        layout,
        valid_len: scan.valid_len as u64,
        next_lsn: scan.next_lsn,
    })
}

/// Decides where appends go when segments exist, given where the last one's frames `end`:
/// continue the last one, or start a new one (after a headerless segment of an earlier build,
/// which is never appended to, or when the log ends before `next_lsn`).
fn continue_or_start(
    storage: &dyn Storage,
    dir: &Path,
    options: &WalOptions,
    end: SegmentEnd,
    next_lsn: Lsn,
) -> Result<ActiveSegment, WalError> {
    let last_lsn = end.next_lsn - 1;
    if next_lsn <= last_lsn {
        return Err(WalError::LsnBehind {
            next_lsn,
            last_lsn,
            file: end.info.path,
        });
    }
    match end.layout {
        // Appends go on right after the last frame: over the zeros of a pre-allocated segment,
        // or at the end of one an earlier build wrote (which grows until the next rotation).
        Layout::Headed {
            version: FORMAT_VERSION,
        } if next_lsn == end.next_lsn => {
            ActiveSegment::open_existing(storage, end.info, end.valid_len)
        }
        // Either the empty (or zeroed) file is replaced by a new segment now, or the log ends
        // before `next_lsn` (records that were never fsynced are covered by a snapshot) and a
        // segment starts at `next_lsn`, so that names keep matching contents.
        _ => ActiveSegment::create(storage, dir, next_lsn, options.segment_bytes_max),
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The writer thread's state.
struct Writer {
    /// Shared with the `Wal`.
    shared: Arc<Shared>,
    /// The segment being appended to.
    segment: ActiveSegment,
    /// Highest LSN written to the OS.
    written_lsn: Lsn,
    /// Highest LSN fsynced.
    synced_lsn: Lsn,
    /// When the last fsync happened (for `Interval`).
    last_sync: Instant,
    /// The previous batch's buffer, emptied, handed back to appenders to avoid reallocating.
    spare: Vec<u8>,
}

/// Answers all waiters when the writer thread ends for any reason, a panic included, so that no
/// waiter hangs.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the WAL writer thread panicked");
        }
        self.0.state.lock().stopped = true;
        self.0.writer_gone.store(true, Ordering::SeqCst);
        self.0.threads.wake_all();
        self.0.flushed.notify_all();
        let left = {
            let mut waiters = self.0.waiters.lock();
            waiters.closed = true;
            std::mem::take(&mut waiters.by_lsn)
        };
        let outcome = self.0.poison.check().and(Err(LogError::Closed));
        for sender in left.into_values().flatten() {
            let _ = sender.send(outcome.clone());
        }
    }
}

impl DurableWatch for Shared {
    fn poll_durable(
        &self,
        lsn: Lsn,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), LogError>> {
        wake::poll_durable(self, lsn, cx)
    }
}

impl Shared {
    /// The outcome of a wait for `lsn` as of now: `None` while it may still
    /// become durable. A poisoned WAL acknowledges nothing, as in
    /// [`Wal::durable`].
    pub(super) fn outcome(&self, lsn: Lsn) -> Option<Result<(), LogError>> {
        if let Err(e) = self.poison.check() {
            return Some(Err(e));
        }
        if self.durable_lsn.load(Ordering::SeqCst) >= lsn {
            return Some(Ok(()));
        }
        if self.writer_gone.load(Ordering::SeqCst) {
            return Some(Err(LogError::Closed));
        }
        None
    }

    /// Whether nothing more will be acknowledged (poisoned or stopped).
    pub(super) fn finished(&self) -> bool {
        self.poison.check().is_err() || self.writer_gone.load(Ordering::SeqCst)
    }

    /// The highest acknowledged LSN.
    pub(super) fn durable_lsn(&self) -> Lsn {
        self.durable_lsn.load(Ordering::SeqCst)
    }

    /// Poisons the WAL with `cause` (the first cause wins) and fails every waiter: nothing more
    /// will be acknowledged.
    fn fail(&self, cause: impl std::fmt::Display) {
        if self.poison.set(&cause) {
            tracing::error!(%cause, "WAL poisoned: nothing more will be acknowledged");
        }
        // Taking the state lock orders this wake-up after a flusher's check of the poison.
        drop(self.state.lock());
        self.flushed.notify_all();
        self.threads.wake_all();
        let failed = std::mem::take(&mut self.waiters.lock().by_lsn);
        let outcome = self.poison.check();
        for sender in failed.into_values().flatten() {
            // A waiter that gave up (dropped its future) is not an error.
            let _ = sender.send(outcome.clone());
        }
    }

    /// Poisons the WAL because it refused `error`'s record, and returns the error.
    fn refuse(&self, error: WalError) -> WalError {
        self.fail(format_args!("a record was refused: {error}"));
        error
    }

    /// Publishes the acknowledged LSN and answers exactly the waiters it covers.
    fn acknowledge(&self, lsn: Lsn) {
        // Stored before taking the waiters lock (see `Wal::durable`) and
        // before reading the threads' lowest LSNs (see `wake`).
        self.durable_lsn.store(lsn, Ordering::SeqCst);
        self.threads.wake_covered(lsn);
        let ready = {
            let mut waiters = self.waiters.lock();
            let later = waiters.by_lsn.split_off(&(lsn + 1));
            std::mem::replace(&mut waiters.by_lsn, later)
        };
        // Sent outside the lock: waking is the slow part with hundreds of waiters.
        for sender in ready.into_values().flatten() {
            // A waiter that gave up (dropped its future) is not an error.
            let _ = sender.send(Ok(()));
        }
    }
}

/// One batch taken from the buffer.
struct Batch {
    /// Encoded frames.
    bytes: Vec<u8>,
    /// LSN of the first frame in `bytes`.
    first_lsn: Lsn,
    /// Number of frames in `bytes`.
    records: u64,
    /// A flush was requested: fsync after writing whatever the mode.
    flush: bool,
    /// A rotation was requested: close the segment after the flush.
    rotate: bool,
    /// The WAL is closing: this is the last batch.
    closing: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>, segment: ActiveSegment, last_lsn: Lsn) -> Self {
        Writer {
            shared,
            segment,
            written_lsn: last_lsn,
            synced_lsn: last_lsn,
            last_sync: Instant::now(),
            spare: Vec::new(),
        }
    }

    fn run(mut self) {
        let _guard = ExitGuard(Arc::clone(&self.shared));
        loop {
            let batch = self.take_batch();
            let closing = batch.closing;
            if let Err(e) = self.commit(batch) {
                self.shared.fail(e);
                return;
            }
            if closing {
                return;
            }
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.shared.options.fsync_interval_ms)
    }

    /// Waits for work and takes the whole buffer.
    fn take_batch(&mut self) -> Batch {
        let interval_mode = self.shared.options.fsync == FsyncMode::Interval;
        let mut st = self.shared.state.lock();
        loop {
            let unsynced = self.written_lsn > self.synced_lsn;
            let sync_due = interval_mode && unsynced && self.last_sync.elapsed() >= self.interval();
            if !st.buf.is_empty() || st.flush_requested || st.closing || sync_due {
                break;
            }
            if interval_mode && unsynced {
                let deadline = self.last_sync + self.interval();
                self.shared.work.wait_until(&mut st, deadline);
            } else {
                self.shared.work.wait(&mut st);
            }
        }
        let bytes = std::mem::replace(&mut st.buf, std::mem::take(&mut self.spare));
        let records = std::mem::take(&mut st.buf_records);
        Batch {
            first_lsn: st.next_lsn - records,
            records,
            bytes,
            flush: std::mem::take(&mut st.flush_requested),
            rotate: std::mem::take(&mut st.rotate_requested),
            closing: st.closing,
        }
    }

    /// Writes a batch, fsyncs as the mode (or a flush, or closing) asks, and acknowledges.
    fn commit(&mut self, mut batch: Batch) -> Result<(), WalError> {
        let records = batch.records;
        if records > 0 {
            self.write_batch(&batch.bytes, batch.first_lsn)?;
            // Every frame of the batch was walked and written.
            assert_eq!(self.written_lsn, batch.first_lsn + records - 1);
            self.shared
                .bytes_since_cut
                .fetch_add(batch.bytes.len() as u64, Ordering::AcqRel);
            self.shared
                .metrics
                .batch_written(records, batch.bytes.len());
            let mut stats = self.shared.stats.lock();
            stats.batches += 1;
            stats.records += records;
            stats.bytes += batch.bytes.len() as u64;
        }
        let unsynced = self.written_lsn > self.synced_lsn;
        let must_sync = match self.shared.options.fsync {
            FsyncMode::Always => unsynced,
            FsyncMode::Interval => {
                unsynced
                    && (batch.flush || batch.closing || self.last_sync.elapsed() >= self.interval())
            }
            FsyncMode::Never => unsynced && (batch.flush || batch.closing),
        };
        if must_sync {
            self.sync()?;
        }
        // Nothing is acknowledged before this point: under `Always` only fsynced records.
        let ack = match self.shared.options.fsync {
            FsyncMode::Always => self.synced_lsn,
            FsyncMode::Interval | FsyncMode::Never => self.written_lsn,
        };
        debug_assert!(ack <= self.written_lsn && self.synced_lsn <= self.written_lsn);
        if ack > self.shared.durable_lsn.load(Ordering::Acquire) {
            self.shared.acknowledge(ack);
        }
        if batch.rotate {
            // Everything written is fsynced (a rotation implies a flush), so
            // the closed segment holds only durable records.
            if self.segment.holds_records() {
                self.rotate(self.written_lsn + 1)?;
            }
            self.shared.state.lock().rotations_done += 1;
        }
        if batch.flush || must_sync {
            // Taking the lock orders this wake-up after a flusher's check of the synced LSN.
            let _st = self.shared.state.lock();
            self.shared.flushed.notify_all();
        }
        batch.bytes.clear();
        if batch.bytes.capacity() <= SPARE_BUFFER_BYTES_MAX {
            self.spare = batch.bytes;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.shared
            .metrics
            .fsync_seconds
            .time(|| self.segment.sync())?;
        self.synced_lsn = self.written_lsn;
        self.last_sync = Instant::now();
        self.shared.stats.lock().fsyncs += 1;
        self.shared
            .synced_lsn
            .store(self.synced_lsn, Ordering::Release);
        Ok(())
    }

    /// Writes the frames of `bytes` (first LSN `first_lsn`), rotating to a new segment before a
    /// frame that does not fit in the current one's `segment_bytes_max` bytes, unless that
    /// holds no record yet (then the frame goes there and the file grows past its pre-allocated
    /// size: a record larger than a segment gets one of its own).
    fn write_batch(&mut self, bytes: &[u8], first_lsn: Lsn) -> Result<(), WalError> {
        let segment_max = self.shared.options.segment_bytes_max;
        let mut pos = 0;
        let mut lsn = first_lsn;
        while pos < bytes.len() {
            // Take the frames that fit.
            let start = pos;
            while pos < bytes.len() {
                let header = frame::peek_header(&bytes[pos..]);
                // SAFETY-style check: the buffer holds only frames encoded by `append`.
                assert!(
                    matches!(header, Some((_, l)) if l == lsn),
                    "WAL buffer out of step at LSN {lsn}"
                );
                let frame_len = FRAME_HEADER_BYTES + header.map_or(0, |(len, _)| len as usize);
                let end = self.segment.len + (pos - start + frame_len) as u64;
                let first_in_segment = pos == start && !self.segment.holds_records();
                if end > segment_max && !first_in_segment {
                    break;
                }
                pos += frame_len;
                lsn += 1;
            }
            assert!(pos <= bytes.len(), "frame runs past the WAL batch");
            if pos > start {
                self.segment.write(&bytes[start..pos])?;
                self.written_lsn = lsn - 1;
            }
            if pos < bytes.len() {
                self.rotate(lsn)?;
            }
        }
        Ok(())
    }

    /// Closes the current segment durably and starts a new one at `first_lsn`: the spare the
    /// preparer made ready gets its header and the segment's name (waiting for it if it is not
    /// ready yet), and the preparer starts on the next.
    fn rotate(&mut self, first_lsn: Lsn) -> Result<(), WalError> {
        // The closed segment is fsynced in every mode: damage in a non-last segment can then
        // only be corruption, never a torn write.
        if self.written_lsn > self.synced_lsn {
            self.sync()?;
        }
        debug_assert_eq!(self.written_lsn + 1, first_lsn);
        let Some((spare, waited)) = self.shared.spare.take() else {
            // The preparer failed and poisoned the WAL with why (or the WAL is closing, which
            // it is not while the writer runs).
            self.shared.poison.check()?;
            return Err(WalError::Closed);
        };
        let next = ActiveSegment::install(
            self.shared.storage.as_ref(),
            &self.shared.dir,
            spare,
            first_lsn,
        )?;
        self.shared.spare.want_next();
        self.shared.segments.lock().push(next.info.clone());
        self.segment = next;
        let mut stats = self.shared.stats.lock();
        stats.rotations += 1;
        stats.spare_waits += u64::from(waited);
        Ok(())
    }
}

thread_local! {
    /// Encoding buffer reused by every [`Log::append`] on this thread.
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// The WAL as the engine's log: records are encoded here and appended as payloads.
impl Log for Wal {
    fn append(&self, record: &LogRecord) -> Result<Lsn, LogError> {
        let appended = ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            record.encode_into(&mut buf, &self.shared.options.keyring);
            Wal::append(self, &buf)
        });
        // A failed append has poisoned the WAL (or found it closed): say which.
        appended.map_err(|_| match self.shared.poison.check() {
            Err(poisoned) => poisoned,
            Ok(()) => LogError::Closed,
        })
    }

    fn durable(&self, lsn: Lsn) -> Durable {
        Wal::durable(self, lsn)
    }

    fn check_writable(&self) -> Result<(), LogError> {
        self.shared.poison.check()
    }

    fn last_lsn(&self) -> Lsn {
        self.next_lsn() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultyStorage, FsStorage};

    fn options() -> WalOptions {
        WalOptions {
            record_bytes_max: 100,
            buffer_bytes_max: 3 * (FRAME_HEADER_BYTES + 100),
            segment_bytes_max: 64 << 10,
            ..WalOptions::default()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_refused_record_consumes_no_lsn_and_poisons_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(Arc::new(FsStorage::new()), dir.path(), options(), 1).unwrap();
        assert_eq!(wal.append(&[1u8; 100]).unwrap(), 1);
        assert!(matches!(
            wal.append(&[0u8; 101]),
            Err(WalError::RecordTooLarge {
                bytes: 101,
                max: 100
            })
        ));
        assert!(matches!(
            wal.check_writable(),
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(wal.append(b""), Err(WalError::Poisoned { .. })));
        assert_eq!(wal.next_lsn(), 2, "no LSN consumed");
        // Nothing is acknowledged any more, not even what was appended before.
        assert!(matches!(
            block_on(wal.wait_durable(1)),
            Err(WalError::Poisoned { .. })
        ));
    }

    #[test]
    fn more_than_the_buffer_holds_is_refused_and_poisons_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let wal = Wal::open(Arc::new(storage.clone()), dir.path(), options(), 1).unwrap();
        // Hold the writer in the fsync of the first record so the buffer fills up.
        let held = storage.hold_syncs();
        assert_eq!(wal.append(&[1u8; 100]).unwrap(), 1);
        storage.wait_for_held_syncs(1);
        let waiting = wal.durable(1);
        for lsn in 2..=4 {
            assert_eq!(wal.append(&[1u8; 100]).unwrap(), lsn);
        }
        assert!(matches!(
            wal.append(&[1u8; 100]),
            Err(WalError::Overloaded { .. })
        ));
        drop(held);
        assert!(matches!(block_on(waiting), Err(LogError::Poisoned { .. })));
        assert!(matches!(wal.append(b""), Err(WalError::Poisoned { .. })));
    }

    #[test]
    fn waiting_for_an_unknown_lsn_fails_and_lsn_zero_is_always_durable() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(Arc::new(FsStorage::new()), dir.path(), options(), 1).unwrap();
        block_on(wal.wait_durable(0)).unwrap();
        assert!(matches!(
            block_on(wal.wait_durable(1)),
            Err(WalError::NotAppended {
                lsn: 1,
                next_lsn: 1
            })
        ));
        assert_eq!(wal.append(b"x").unwrap(), 1);
        block_on(wal.wait_durable(1)).unwrap();
        assert_eq!(wal.durable_lsn(), 1);
        assert_eq!(wal.synced_lsn(), 1);
        assert_eq!(wal.next_lsn(), 2);
    }

    #[test]
    fn open_refuses_lsn_zero_and_bad_options() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
        assert!(matches!(
            Wal::open(Arc::clone(&storage), dir.path(), options(), 0),
            Err(WalError::InvalidOptions(_))
        ));
        let bad = WalOptions {
            segment_bytes_max: 0,
            ..options()
        };
        assert!(matches!(
            Wal::open(storage, dir.path(), bad, 1),
            Err(WalError::InvalidOptions(_))
        ));
    }

    #[test]
    fn open_at_the_end_a_replay_found_reads_nothing_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options();
        let fs: Arc<dyn Storage> = Arc::new(FsStorage::new());
        let wal = Wal::open(Arc::clone(&fs), dir.path(), opts.clone(), 1).unwrap();
        for _ in 0..3 {
            let lsn = wal.append(b"before").unwrap();
            block_on(wal.wait_durable(lsn)).unwrap();
        }
        wal.close().unwrap();
        drop(wal);

        let storage = FaultyStorage::new();
        let replay =
            crate::wal::read_from(Arc::new(storage.clone()), dir.path(), 0, &opts).unwrap();
        let end = replay.end().cloned().unwrap();
        assert_eq!(end.next_lsn, 4);
        let next_lsn = replay.next_lsn();
        assert_eq!(replay.count(), 3);
        let reads = storage.reads();
        let wal = Wal::open_at(
            Arc::new(storage.clone()),
            dir.path(),
            opts.clone(),
            next_lsn,
            Some(&end),
        )
        .unwrap();
        assert_eq!(storage.reads(), reads, "the last segment is not read again");
        let lsn = wal.append(b"after").unwrap();
        assert_eq!(lsn, 4);
        block_on(wal.wait_durable(lsn)).unwrap();
        wal.close().unwrap();
        drop(wal);

        let records: Vec<_> = crate::wal::read_from(Arc::clone(&fs), dir.path(), 0, &opts)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let seen: Vec<(Lsn, &[u8])> = records.iter().map(|r| (r.lsn, &r.payload[..])).collect();
        assert_eq!(
            seen,
            [
                (1, &b"before"[..]),
                (2, b"before"),
                (3, b"before"),
                (4, b"after")
            ]
        );

        // An end that names another segment than the last is not trusted: the last is read.
        let stale = SegmentEnd {
            info: SegmentInfo {
                first_lsn: 1,
                path: dir.path().join("elsewhere.log"),
            },
            ..end
        };
        let reads = storage.reads();
        let wal =
            Wal::open_at(Arc::new(storage.clone()), dir.path(), opts, 5, Some(&stale)).unwrap();
        assert_eq!(storage.reads(), reads + 1);
        assert_eq!(wal.append(b"again").unwrap(), 5);
    }

    #[test]
    fn drop_writes_and_fsyncs_what_is_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let opts = WalOptions {
            fsync: FsyncMode::Never,
            ..options()
        };
        let wal = Wal::open(Arc::new(storage.clone()), dir.path(), opts.clone(), 1).unwrap();
        // Opening pre-allocated the segment and the spare (fsyncs of their own).
        let syncs_at_open = storage.syncs();
        for _ in 0..3 {
            wal.append(b"bye").unwrap();
        }
        drop(wal);
        assert_eq!(storage.syncs() - syncs_at_open, 1);
        let replay = crate::wal::read_from(Arc::new(FsStorage::new()), dir.path(), 0, &opts)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(replay.len(), 3);
    }
}
