//! The file-system surface the durability code uses, as a trait so that every write and every
//! fsync can be counted and made to fail in tests (see [`FaultyStorage`]).
//!
//! Files and directories are created owner-only ([`private`]).
//!
//! The trait is deliberately small: exactly the operations the WAL and the snapshot files need,
//! each with the durability meaning spelled out, so that a wrapper can reason about them.
//! [`MemoryStorage`] holds files in memory, for reading data dirs that are only bytes (fuzzing).

mod fault;
mod fs;
mod memory;
pub mod private;

pub use fault::{FaultyStorage, HeldSyncs};
pub use fs::FsStorage;
pub use memory::MemoryStorage;

use std::io;
use std::path::Path;

/// A file opened for writing (a WAL segment written in place, or a new snapshot file filled
/// from the start).
///
/// Nothing written is durable until [`StorageFile::sync`] returns `Ok`.
pub trait StorageFile: Send {
    /// Writes the whole buffer at the end of the file (to the OS page cache, not yet durable).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Writes the whole buffer at byte `offset` (to the OS page cache, not yet durable),
    /// overwriting what is there; the file grows only when the buffer ends past its end (a gap
    /// before `offset` reads as zeros). Overwriting bytes of a file whose blocks are written and
    /// durable changes no metadata, so the next [`StorageFile::sync`] has only data to flush.
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (fdatasync: data plus the size needed to read it).
    ///
    /// After an error the state of the unsynced data is unknown (Linux may drop the dirty pages
    /// and report success on the next call), so callers must treat an error as fatal.
    fn sync(&mut self) -> io::Result<()>;

    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Returns true when the file has no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Cuts the file to `len` bytes and makes the new length durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// File-system operations used by the WAL and the snapshot store.
pub trait Storage: Send + Sync + 'static {
    /// Creates `dir` and its parents when missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Names (not paths) of the entries of `dir`, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Opens the existing file `path` for writing in place ([`StorageFile::write_all_at`];
    /// [`StorageFile::write_all`] writes at its end). Fails when it does not exist.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Creates `path`, failing when it exists, and opens it for writing.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Reads the whole file; fails with `InvalidData` when it is longer than `bytes_max`, before
    /// allocating for it.
    fn read_file(&self, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>>;

    /// Length of the file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;

    /// Atomically renames `from` to `to`, replacing `to`. Durable after [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable after [`Storage::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Creates `path` (which must not exist), writes `data` into it and fsyncs it.
    ///
    /// The file's name is durable only after [`Storage::sync_dir`].
    fn write_new_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = self.create_new(path)?;
        file.write_all(data)?;
        file.sync()
    }
}
