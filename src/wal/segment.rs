//! Segment files: the WAL is a sequence of files `wal-{first_lsn:020}.log` in the data
//! directory, each holding consecutive frames starting at the LSN in its name.
//!
//! Only the newest segment is ever appended to. A segment is fsynced before the next one is
//! created, so damage in any segment but the last cannot be a torn write.

use super::{Lsn, WalError};
use crate::storage::{Storage, StorageFile};
use std::path::{Path, PathBuf};

/// File name prefix of segments.
const PREFIX: &str = "wal-";
/// File name suffix of segments.
const SUFFIX: &str = ".log";
/// Digits of the zero-padded LSN in a segment name (enough for any u64, and sorts as text).
const LSN_DIGITS: usize = 20;

/// A segment file found in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of the segment's first record, from its name; the records in it must start there.
    pub first_lsn: Lsn,
    /// Full path of the file.
    pub path: PathBuf,
}

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{PREFIX}{first_lsn:0LSN_DIGITS$}{SUFFIX}")
}

/// The first LSN encoded in a segment file name, or `None` when the name is not a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. Files with other names are ignored.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| WalError::io("listing", dir, e))?;
    let mut segments: Vec<SegmentInfo> = names
        .iter()
        .filter_map(|name| {
            parse_segment_file_name(name).map(|first_lsn| SegmentInfo {
                first_lsn,
                path: dir.join(name),
            })
        })
        .collect();
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    /// Which segment this is.
    pub(crate) info: SegmentInfo,
    /// The open file, positioned at its end.
    file: Box<dyn StorageFile>,
    /// Bytes in the file, tracked here so rotation needs no metadata call per write.
    pub(crate) len: u64,
}

impl ActiveSegment {
    /// Creates the segment starting at `first_lsn` and makes its name durable (fsync of the
    /// directory), so that a crash cannot lose the file while keeping later ones.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_lsn: Lsn,
    ) -> Result<Self, WalError> {
        let path = dir.join(segment_file_name(first_lsn));
        let file = storage
            .open_append(&path)
            .map_err(|e| WalError::io("creating", &path, e))?;
        let len = file
            .len()
            .map_err(|e| WalError::io("measuring", &path, e))?;
        // A new segment's file must be empty: a leftover would put old bytes before new frames.
        if len != 0 {
            return Err(WalError::Corrupt {
                file: path,
                offset: 0,
                reason: format!("new segment file already holds {len} bytes"),
            });
        }
        storage
            .sync_dir(dir)
            .map_err(|e| WalError::io("fsyncing directory", dir, e))?;
        Ok(ActiveSegment {
            info: SegmentInfo { first_lsn, path },
            file,
            len,
        })
    }

    /// Reopens an existing segment for appending; `len` is its verified length.
    pub(crate) fn open_existing(
        storage: &dyn Storage,
        info: SegmentInfo,
        len: u64,
    ) -> Result<Self, WalError> {
        let file = storage
            .open_append(&info.path)
            .map_err(|e| WalError::io("opening", &info.path, e))?;
        let actual = file
            .len()
            .map_err(|e| WalError::io("measuring", &info.path, e))?;
        // The caller verified `len` bytes of frames; anything else means the file changed since.
        if actual != len {
            return Err(WalError::Corrupt {
                file: info.path,
                offset: len,
                reason: format!("segment changed while opening: {actual} bytes, {len} verified"),
            });
        }
        Ok(ActiveSegment { info, file, len })
    }

    /// Writes whole frames at the end of the segment (not yet durable).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.file
            .write_all(bytes)
            .map_err(|e| WalError::io("writing", &self.info.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything written durable.
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        self.file
            .sync()
            .map_err(|e| WalError::io("fsyncing", &self.info.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    #[test]
    fn names_round_trip_and_sort_as_text() {
        assert_eq!(segment_file_name(42), "wal-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "wal-42.log",
            "wal-0000000000000000004x.log",
            "wal-00000000000000000042.log.tmp",
            "snapshot-00000000000000000042.mpk",
            "wal-+0000000000000000042.log",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_sorts_by_lsn_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        for lsn in [100, 7, 1] {
            ActiveSegment::create(&s, dir.path(), lsn).unwrap();
        }
        s.write_new_file(&dir.path().join("snapshot-1.mpk"), b"x")
            .unwrap();
        let listed: Vec<Lsn> = list_segments(&s, dir.path())
            .unwrap()
            .iter()
            .map(|i| i.first_lsn)
            .collect();
        assert_eq!(listed, vec![1, 7, 100]);
    }

    #[test]
    fn creating_over_a_non_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        s.write_new_file(&dir.path().join(segment_file_name(5)), b"old")
            .unwrap();
        assert!(matches!(
            ActiveSegment::create(&s, dir.path(), 5),
            Err(WalError::Corrupt { .. })
        ));
    }
}
