//! Segment files: the WAL is a sequence of files `wal-{first_lsn:020}.log` in the data
//! directory, each a header and then consecutive frames starting at the LSN in its name.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TOKDWAL\0"
//!      8     4  format version, u32 little endian (1)
//!     12     8  first LSN, u64 little endian (the one in the file name)
//!     20     4  CRC32 of bytes 0..20
//!     24        frames
//! ```
//!
//! Only the newest segment is ever appended to. A segment's name is made durable when it is
//! created, its header by the first fsync of its records, and a segment is fsynced before the
//! next one is created, so damage in any segment but the last cannot be a torn write.
//!
//! Segments written before segments had headers (format version 0) start with their first frame;
//! they are read as such, and never appended to again. A segment of a format version above
//! [`FORMAT_VERSION`] is refused ([`WalError::NewerFormat`]), never guessed at.

use super::{Lsn, WalError};
use crate::storage::{Storage, StorageFile};
use std::path::{Path, PathBuf};

/// First bytes of every segment (format version 1 and later).
pub const MAGIC: [u8; 8] = *b"TOKDWAL\0";
/// The segment format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header before the first frame.
pub const HEADER_BYTES: usize = 24;
/// Offset of the header CRC; the bytes before it are covered by it.
const HEADER_CRC_OFFSET: usize = 20;

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

/// The header of the segment whose first record has `first_lsn`.
pub fn encode_header(first_lsn: Lsn) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&header[..HEADER_CRC_OFFSET]);
    header[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// How a segment's bytes are laid out, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// No bytes at all: no records (a segment of either format that was never written to, or
    /// one cut back to nothing after a torn creation).
    Empty,
    /// A segment created but not finished (a crash between creating the file and making its
    /// header durable): it holds no records. Only the last segment can be one.
    TornHeader,
    /// Frames from byte 0, no header: format version 0.
    Headerless,
    /// A header of a known format version, frames after it.
    Headed {
        /// The header's format version.
        version: u32,
    },
}

impl Layout {
    /// Reads the layout of `data`, the bytes of the segment `info`.
    pub fn of(data: &[u8], info: &SegmentInfo) -> Result<Layout, WalError> {
        if data.is_empty() {
            return Ok(Layout::Empty);
        }
        let magic_len = data.len().min(MAGIC.len());
        if data[..magic_len] != MAGIC[..magic_len] {
            return Ok(Layout::Headerless);
        }
        let corrupt = |reason: String| WalError::Corrupt {
            file: info.path.clone(),
            offset: 0,
            reason,
        };
        let Some(header) = data.get(..HEADER_BYTES) else {
            return Ok(Layout::TornHeader);
        };
        let field = |at: usize, len: usize| -> u64 {
            header[at..at + len]
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        };
        let stored_crc = field(HEADER_CRC_OFFSET, 4) as u32;
        let crc = crc32fast::hash(&header[..HEADER_CRC_OFFSET]);
        if stored_crc != crc {
            // A header is written whole before any frame: with nothing after it, this is a
            // creation the crash cut short, and the file holds no records.
            if data.len() == HEADER_BYTES {
                return Ok(Layout::TornHeader);
            }
            return Err(corrupt(format!(
                "segment header CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"
            )));
        }
        let version = field(8, 4) as u32;
        if version > FORMAT_VERSION {
            return Err(WalError::NewerFormat {
                file: info.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(corrupt("segment header with format version 0".into()));
        }
        let first_lsn = field(12, 8);
        if first_lsn != info.first_lsn {
            return Err(corrupt(format!(
                "segment header says first LSN {first_lsn}, file name {}",
                info.first_lsn
            )));
        }
        Ok(Layout::Headed { version })
    }

    /// Byte offset of the first frame.
    pub fn frames_at(self) -> usize {
        match self {
            Layout::Headed { .. } => HEADER_BYTES,
            Layout::Empty | Layout::TornHeader | Layout::Headerless => 0,
        }
    }
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
    /// Creates the segment starting at `first_lsn`, writes its header and makes its name durable
    /// (fsync of the directory), so that a crash cannot lose the file while keeping later ones.
    /// The header becomes durable with the first fsync of the segment's records; until then a
    /// crash can leave it torn, and the segment holds no records. An empty file of that name (one
    /// cut back after a torn creation) is reused.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_lsn: Lsn,
    ) -> Result<Self, WalError> {
        let path = dir.join(segment_file_name(first_lsn));
        let file = match storage.create_new(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => storage.open_write(&path),
            created => created,
        }
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
        let mut segment = ActiveSegment {
            info: SegmentInfo { first_lsn, path },
            file,
            len,
        };
        segment.write(&encode_header(first_lsn))?;
        storage
            .sync_dir(dir)
            .map_err(|e| WalError::io("fsyncing directory", dir, e))?;
        Ok(segment)
    }

    /// Reopens an existing segment for appending; `len` is its verified length.
    pub(crate) fn open_existing(
        storage: &dyn Storage,
        info: SegmentInfo,
        len: u64,
    ) -> Result<Self, WalError> {
        let file = storage
            .open_write(&info.path)
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

    /// Whether any frame follows the header: a segment without one is not
    /// closed for a new one (both would start at the same LSN).
    pub(crate) fn holds_records(&self) -> bool {
        self.len > HEADER_BYTES as u64
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
    fn a_new_segment_starts_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let segment = ActiveSegment::create(&s, dir.path(), 42).unwrap();
        assert_eq!(segment.len, HEADER_BYTES as u64);
        let data = std::fs::read(&segment.info.path).unwrap();
        assert_eq!(&data[..8], b"TOKDWAL\0");
        assert_eq!(data[8..12], 1u32.to_le_bytes());
        assert_eq!(data[12..20], 42u64.to_le_bytes());
        assert_eq!(data[20..24], crc32fast::hash(&data[..20]).to_le_bytes());
        assert_eq!(
            Layout::of(&data, &segment.info).unwrap(),
            Layout::Headed { version: 1 }
        );
    }

    #[test]
    fn layouts_are_told_apart_and_newer_or_damaged_headers_refused() {
        let info = SegmentInfo {
            first_lsn: 7,
            path: PathBuf::from("wal-00000000000000000007.log"),
        };
        let header = encode_header(7);
        let with_frames = [&header[..], b"frames"].concat();
        assert_eq!(Layout::of(b"", &info).unwrap(), Layout::Empty);
        for cut in 1..HEADER_BYTES {
            assert_eq!(
                Layout::of(&header[..cut], &info).unwrap(),
                Layout::TornHeader,
                "{cut}"
            );
        }
        // A frame's first bytes are its length, never the magic.
        assert_eq!(
            Layout::of(&[5, 0, 0, 0, 7, 0, 0, 0], &info).unwrap(),
            Layout::Headerless
        );
        let mut newer = header;
        newer[8] = 2;
        let crc = crc32fast::hash(&newer[..20]);
        newer[20..].copy_from_slice(&crc.to_le_bytes());
        let newer = [&newer[..], b"frames"].concat();
        assert!(matches!(
            Layout::of(&newer, &info),
            Err(WalError::NewerFormat {
                found: 2,
                supported: 1,
                ..
            })
        ));
        let mut damaged = with_frames.clone();
        damaged[13] ^= 1;
        assert!(matches!(
            Layout::of(&damaged, &info),
            Err(WalError::Corrupt { offset: 0, .. })
        ));
        // The same damage with nothing after the header is a torn creation.
        assert_eq!(
            Layout::of(&damaged[..HEADER_BYTES], &info).unwrap(),
            Layout::TornHeader
        );
        let other = SegmentInfo {
            first_lsn: 8,
            ..info
        };
        assert!(matches!(
            Layout::of(&with_frames, &other),
            Err(WalError::Corrupt { .. })
        ));
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
