//! [`FaultyStorage`]: the real file system with counted, injectable write and fsync failures.
//!
//! Public (not test-only) so that integration tests of the whole server can use it too.

use super::{FsStorage, Storage, StorageFile};
use parking_lot::{Condvar, Mutex};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Wraps [`FsStorage`], counting writes and fsyncs, and failing the Nth one on request.
///
/// Faults model what Linux does, so that code which mishandles them loses data in tests too:
/// - a failing write first writes the first half of its buffer (a short write, then `ENOSPC`);
/// - a failing file fsync first drops what was written since the last successful fsync (the
///   kernel dropped the dirty pages): bytes overwritten in place get their durable contents
///   back, and the file is cut back to the length it had then; a later fsync succeeds, so code
///   that retries a failed fsync would acknowledge data that is gone.
///
/// Counts start at 1 and run over all files of this storage. File fsyncs can also be held
/// ([`FaultyStorage::hold_syncs`]) to make a test's interleaving deterministic without sleeps.
#[derive(Clone, Default)]
pub struct FaultyStorage {
    /// The real file system underneath.
    inner: FsStorage,
    /// Counters and fault plan, shared with the files this storage opened.
    state: Arc<FaultState>,
}

/// Counters and armed faults; 0 in a `*_fails_at` field means "never".
#[derive(Default)]
struct FaultState {
    /// Number of `write_all` calls so far (including failed ones).
    writes: AtomicU64,
    /// Number of file fsync calls so far (including failed ones).
    syncs: AtomicU64,
    /// Number of directory fsync calls so far (including failed ones).
    dir_syncs: AtomicU64,
    /// Number of whole-file reads so far: tests check what is read twice.
    reads: AtomicU64,
    /// The write call number that fails, or 0.
    write_fails_at: AtomicU64,
    /// The file fsync call number that fails, or 0.
    sync_fails_at: AtomicU64,
    /// The directory fsync call number that fails, or 0.
    dir_sync_fails_at: AtomicU64,
    /// The gate that holds file fsyncs while a test arranges things.
    gate: Mutex<Gate>,
    /// Signalled when the gate opens or a sync starts waiting at it.
    gate_changed: Condvar,
}

/// Holds file fsyncs of a [`FaultyStorage`] until dropped.
pub struct HeldSyncs {
    /// The storage's state, whose gate this opens on drop.
    state: Arc<FaultState>,
}

impl Drop for HeldSyncs {
    fn drop(&mut self) {
        self.state.gate.lock().held = false;
        self.state.gate_changed.notify_all();
    }
}

/// State of the fsync gate.
#[derive(Default)]
struct Gate {
    /// While true, file fsyncs wait before doing anything.
    held: bool,
    /// How many file fsyncs are waiting at the gate now.
    waiting: usize,
}

impl FaultyStorage {
    /// A storage with no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`th write call (counted from this storage's creation) fail; `None` disarms.
    pub fn fail_write_at(&self, n: Option<u64>) {
        self.state
            .write_fails_at
            .store(n.unwrap_or(0), Ordering::SeqCst);
    }

    /// Makes the `n`th file fsync call fail; `None` disarms.
    pub fn fail_sync_at(&self, n: Option<u64>) {
        self.state
            .sync_fails_at
            .store(n.unwrap_or(0), Ordering::SeqCst);
    }

    /// Makes the `n`th directory fsync call fail; `None` disarms.
    pub fn fail_dir_sync_at(&self, n: Option<u64>) {
        self.state
            .dir_sync_fails_at
            .store(n.unwrap_or(0), Ordering::SeqCst);
    }

    /// Write calls so far.
    pub fn writes(&self) -> u64 {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// File fsync calls so far.
    pub fn syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::SeqCst)
    }

    /// Directory fsync calls so far.
    pub fn dir_syncs(&self) -> u64 {
        self.state.dir_syncs.load(Ordering::SeqCst)
    }

    /// Whole-file reads so far.
    pub fn reads(&self) -> u64 {
        self.state.reads.load(Ordering::SeqCst)
    }

    /// From now on, file fsyncs wait until the returned guard is dropped.
    ///
    /// Declare the guard after whatever would block on a held fsync when dropped (a WAL joins
    /// its writer thread), so that a failing assertion fails the test instead of hanging it.
    #[must_use = "fsyncs are released when the guard is dropped"]
    pub fn hold_syncs(&self) -> HeldSyncs {
        self.state.gate.lock().held = true;
        HeldSyncs {
            state: Arc::clone(&self.state),
        }
    }

    /// Blocks until at least `n` file fsyncs are waiting at the held gate.
    pub fn wait_for_held_syncs(&self, n: usize) {
        let mut gate = self.state.gate.lock();
        while gate.waiting < n {
            self.state.gate_changed.wait(&mut gate);
        }
    }
}

impl FaultState {
    /// Counts one call and says whether it is the armed failing one.
    fn hit(counter: &AtomicU64, fails_at: &AtomicU64) -> bool {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        n == fails_at.load(Ordering::SeqCst)
    }

    fn pass_gate(&self) {
        let mut gate = self.gate.lock();
        if !gate.held {
            return;
        }
        gate.waiting += 1;
        self.gate_changed.notify_all();
        while gate.held {
            self.gate_changed.wait(&mut gate);
        }
        gate.waiting -= 1;
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

/// A file of a [`FaultyStorage`].
struct FaultyFile {
    /// The real file.
    inner: Box<dyn StorageFile>,
    /// Shared counters and faults.
    state: Arc<FaultState>,
    /// A second handle on the same file (read and write, not appending), to read what a write
    /// overwrites and to put it back when a failed fsync drops that write.
    raw: File,
    /// Length at the last successful fsync: what survives a failed fsync.
    synced_len: u64,
    /// What writes since the last successful fsync overwrote below `synced_len`, oldest first:
    /// (offset, the bytes there before). A failed fsync puts them back, newest first.
    overwritten: Vec<(u64, Vec<u8>)>,
}

impl FaultyFile {
    /// Keeps the durable bytes a write of `len` bytes at `offset` is about to overwrite.
    fn remember(&mut self, offset: u64, len: usize) -> io::Result<()> {
        let end = offset.saturating_add(len as u64).min(self.synced_len);
        if offset >= end {
            return Ok(());
        }
        let mut old = vec![0u8; (end - offset) as usize];
        self.raw.read_exact_at(&mut old, offset)?;
        self.overwritten.push((offset, old));
        Ok(())
    }

    /// Drops everything written since the last successful fsync, as the kernel does with the
    /// dirty pages of a failed one: overwritten bytes come back, the file shrinks back.
    fn drop_unsynced(&mut self) -> io::Result<()> {
        for (offset, old) in std::mem::take(&mut self.overwritten).into_iter().rev() {
            self.raw.write_all_at(&old, offset)?;
        }
        self.inner.truncate(self.synced_len)
    }
}

impl StorageFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let end = self.inner.len()?;
        self.remember(end, buf.len())?;
        if FaultState::hit(&self.state.writes, &self.state.write_fails_at) {
            self.inner.write_all(&buf[..buf.len() / 2])?;
            return Err(injected("write"));
        }
        self.inner.write_all(buf)
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.remember(offset, buf.len())?;
        if FaultState::hit(&self.state.writes, &self.state.write_fails_at) {
            self.inner.write_all_at(offset, &buf[..buf.len() / 2])?;
            return Err(injected("write"));
        }
        self.inner.write_all_at(offset, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.state.pass_gate();
        if FaultState::hit(&self.state.syncs, &self.state.sync_fails_at) {
            // The kernel dropped the dirty pages: what was written since the last good fsync is
            // gone, yet the next fsync will report success.
            self.drop_unsynced()?;
            return Err(injected("fsync"));
        }
        self.inner.sync()?;
        self.synced_len = self.inner.len()?;
        self.overwritten.clear();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // A truncation is made durable with everything written before it.
        self.inner.truncate(len)?;
        self.synced_len = len;
        self.overwritten.clear();
        Ok(())
    }
}

impl FaultyStorage {
    fn wrap(&self, path: &Path, inner: Box<dyn StorageFile>) -> io::Result<Box<dyn StorageFile>> {
        // What a file holds when opened is taken as durable: it was there before this process.
        let synced_len = inner.len()?;
        let raw = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            state: Arc::clone(&self.state),
            raw,
            synced_len,
            overwritten: Vec::new(),
        }))
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.wrap(path, self.inner.open_write(path)?)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.wrap(path, self.inner.create_new(path)?)
    }

    fn read_file(&self, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
        self.state.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_file(path, bytes_max)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if FaultState::hit(&self.state.dir_syncs, &self.state.dir_sync_fails_at) {
            return Err(injected("directory fsync"));
        }
        self.inner.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_write_fails_after_a_short_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        s.fail_write_at(Some(2));
        let path = dir.path().join("f");
        let mut f = s.create_new(&path).unwrap();
        f.write_all(b"abcd").unwrap();
        assert!(f.write_all(b"efgh").is_err());
        f.write_all(b"ij").unwrap();
        assert_eq!(s.writes(), 3);
        assert_eq!(s.read_file(&path, 100).unwrap(), b"abcdefij");
    }

    #[test]
    fn failed_sync_drops_unsynced_data_and_the_next_sync_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        s.fail_sync_at(Some(2));
        let path = dir.path().join("f");
        let mut f = s.create_new(&path).unwrap();
        f.write_all(b"durable").unwrap();
        f.sync().unwrap();
        f.write_all(b" lost").unwrap();
        assert!(f.sync().is_err());
        assert_eq!(s.read_file(&path, 100).unwrap(), b"durable");
        f.sync().unwrap();
        assert_eq!(s.syncs(), 3);
    }

    #[test]
    fn failed_sync_puts_back_bytes_overwritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        let path = dir.path().join("f");
        s.write_new_file(&path, &[0u8; 16]).unwrap();
        let mut f = s.open_write(&path).unwrap();
        f.write_all_at(0, b"kept").unwrap();
        f.sync().unwrap();
        s.fail_sync_at(Some(s.syncs() + 1));
        f.write_all_at(4, b"gone").unwrap();
        f.write_all_at(2, b"GONE").unwrap();
        f.write_all_at(14, b"grown").unwrap();
        assert!(f.sync().is_err());
        let mut expected = b"kept".to_vec();
        expected.resize(16, 0);
        assert_eq!(s.read_file(&path, 100).unwrap(), expected);
        // A later fsync succeeds, with nothing of the dropped writes.
        f.sync().unwrap();
        assert_eq!(s.read_file(&path, 100).unwrap(), expected);
    }

    #[test]
    fn a_failing_positioned_write_writes_half_of_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        let path = dir.path().join("f");
        s.write_new_file(&path, &[0u8; 8]).unwrap();
        let mut f = s.open_write(&path).unwrap();
        s.fail_write_at(Some(s.writes() + 1));
        assert!(f.write_all_at(2, b"abcd").is_err());
        assert_eq!(s.read_file(&path, 100).unwrap(), b"\0\0ab\0\0\0\0");
    }

    #[test]
    fn nth_dir_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        s.fail_dir_sync_at(Some(1));
        assert!(s.sync_dir(dir.path()).is_err());
        s.sync_dir(dir.path()).unwrap();
        assert_eq!(s.dir_syncs(), 2);
    }

    #[test]
    fn held_syncs_wait_for_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = FaultyStorage::new();
        let mut f = s.create_new(&dir.path().join("f")).unwrap();
        let held = s.hold_syncs();
        let t = std::thread::spawn(move || f.sync());
        s.wait_for_held_syncs(1);
        // The sync is parked at the gate: it has not been counted yet.
        assert_eq!(s.syncs(), 0);
        drop(held);
        t.join().unwrap().unwrap();
        assert_eq!(s.syncs(), 1);
    }
}
