//! The data dir lock: one process at a time owns a data dir. A second server,
//! or `inspect`/`compact` on a live dir, fails with a clear message instead
//! of two writers interleaving a log.

use crate::storage::private;
use std::fs::File;
use std::io;
use std::path::Path;

/// The lock file inside the data dir.
pub const FILE_NAME: &str = "LOCK";

/// Holds the exclusive lock until dropped (the OS also releases it when the
/// process dies, so a `kill -9` never leaves a stale lock).
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file; the lock lives as long as this handle.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir`, creating the dir if needed.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        private::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let file = private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data dir {} is in use by another tokend process (lock {})",
                    dir.display(),
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        assert!(DataDirLock::acquire(dir.path()).is_ok());
    }
}
