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
//!               zeros to the end of the file
//! ```
//!
//! A segment is pre-allocated: before it gets its name, the whole file (`segment_bytes_max`
//! bytes) is written with zeros and fsynced, then its header written and fsynced, so appending a
//! frame overwrites zeros in blocks that are already allocated and written, and the `fdatasync`
//! that commits it has no metadata to commit (no size change, no block allocation, no journal
//! commit on ext4). Writing the zeros for real matters: `fallocate` leaves "unwritten" extents,
//! and the first write into one changes metadata. The next segment is prepared that way ahead of
//! time as a spare file ([`SPARE_FILE_NAME`], see [`SpareFile`]), so a rotation only writes a
//! header and renames the spare. The end of the records is where the frames stop and the zeros
//! begin, never the file's length.
//!
//! Only the newest segment is ever appended to. A segment's header is durable before it is named,
//! its name is made durable before any record is written into it, and a segment is fsynced
//! before the next one is named, so damage in any segment but the last cannot be a torn write.
//!
//! Segments written before pre-allocation end at their last frame (or in a torn one): they read
//! the same, since nothing (rather than zeros) after the last frame is a clean end too; the last
//! one is continued in place. Segments written before segments had headers (format version 0)
//! start with their first frame; they are read as such, and never appended to again. A segment
//! of a format version above [`FORMAT_VERSION`] is refused ([`WalError::NewerFormat`]), never
//! guessed at. The format version is still 1: the bytes a segment holds up to its last frame are
//! laid out as before, and zeros after it are only new to builds older than this one, which
//! need not read what later builds write.

use super::{Lsn, WalError};
use crate::storage::{Storage, StorageFile};
use std::io;
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

/// Name of the spare segment in the data directory: the next segment, pre-allocated ahead of
/// time. Not a segment's name (replay ignores it), and not under the `wal-` prefix, so that
/// nothing that lists segments by name can take it for one.
pub const SPARE_FILE_NAME: &str = "spare-segment.tmp";

/// Zeros written (and fsynced) at a time while a spare is prepared: the WAL's own fsyncs share
/// the disk, and one fsync of a whole segment of zeros (tens of megabytes) would make every
/// commit issued meanwhile wait behind it. The snapshot writer's chunks are smaller (64 KiB),
/// but a spare must be ready within the time the appends take to fill a segment, and each of
/// these fsyncs commits a size change as well.
pub const SPARE_SYNC_CHUNK_BYTES: usize = 256 << 10;

/// A block of zeros to compare with: comparing a slice with it is one `memcmp`, fast even in an
/// unoptimized build.
pub(crate) static ZEROS: [u8; 4096] = [0; 4096];

/// Zeros to write from: a whole chunk in one write (a zeroed static costs no memory until read).
pub(crate) static ZERO_CHUNK: [u8; SPARE_SYNC_CHUNK_BYTES] = [0; SPARE_SYNC_CHUNK_BYTES];

/// Offset of the first non-zero byte of `data`, if any.
pub fn first_nonzero(data: &[u8]) -> Option<usize> {
    let mut base = 0;
    for block in data.chunks(ZEROS.len()) {
        if block != &ZEROS[..block.len()] {
            return block.iter().position(|&b| b != 0).map(|i| base + i);
        }
        base += block.len();
    }
    None
}

/// Offset of the last non-zero byte of `data`, if any.
pub fn last_nonzero(data: &[u8]) -> Option<usize> {
    let mut end = data.len();
    for block in data.rchunks(ZEROS.len()) {
        let start = end - block.len();
        if block != &ZEROS[..block.len()] {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

/// Whether every byte of `data` is zero (true for no bytes).
pub fn is_zeros(data: &[u8]) -> bool {
    first_nonzero(data).is_none()
}

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
    /// No bytes at all: no records (a segment of an earlier build that was never written to, or
    /// one cut back to nothing after a torn creation).
    Empty,
    /// Zeros where the header belongs: a pre-allocated file whose header never reached the disk,
    /// or a segment whose torn header was zeroed. Zeros to the end hold no records; anything
    /// else after them is a bad frame at offset 0.
    Unwritten,
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
        // A frame of format version 0 has a non-zero CRC in its first 16 bytes, a header its
        // magic: zeros here are neither.
        if is_zeros(&data[..data.len().min(HEADER_BYTES)]) {
            return Ok(Layout::Unwritten);
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
            // A header is written whole before any frame: with nothing but zeros after it, this
            // is a creation the crash cut short, and the file holds no records.
            if is_zeros(&data[HEADER_BYTES..]) {
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
            Layout::Empty | Layout::Unwritten | Layout::TornHeader | Layout::Headerless => 0,
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

/// The spare segment being prepared: a file of `size` zero bytes, written and fsynced, named
/// [`SPARE_FILE_NAME`] until [`ActiveSegment::install`] gives it a header and a segment's name.
///
/// A spare left by an earlier run is reused: it holds only zeros (and, if a crash came between
/// writing a header into it and renaming it, that header, which the next header overwrites),
/// so preparing it goes on from its length, and ends with an fsync in case the pages written
/// last never reached the disk. One longer than `size` (`segment_bytes_max` was lowered) is
/// replaced.
pub(crate) struct SpareFile {
    /// Its path, for renaming and for errors.
    path: PathBuf,
    /// The open file.
    file: Box<dyn StorageFile>,
    /// Bytes of zeros written from the start so far.
    filled: u64,
    /// The size it must reach: `segment_bytes_max`.
    size: u64,
    /// Whether everything written is known to be durable.
    synced: bool,
}

impl SpareFile {
    /// Opens the spare in `dir` (creating it, or reusing one an earlier run left) to be filled
    /// to `size` bytes.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, size: u64) -> Result<Self, WalError> {
        let path = dir.join(SPARE_FILE_NAME);
        let existing = match storage.file_len(&path) {
            Ok(len) => Some(len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(WalError::io("measuring", &path, e)),
        };
        let reusable = existing.filter(|len| *len <= size);
        if existing.is_some() && reusable.is_none() {
            storage
                .remove_file(&path)
                .map_err(|e| WalError::io("removing", &path, e))?;
        }
        let file = match reusable {
            Some(_) => storage.open_write(&path),
            None => storage.create_new(&path),
        }
        .map_err(|e| WalError::io("creating", &path, e))?;
        Ok(SpareFile {
            path,
            file,
            filled: reusable.unwrap_or(0),
            size,
            synced: false,
        })
    }

    /// Writes the next [`SPARE_SYNC_CHUNK_BYTES`] of zeros and fsyncs them; `true` once the
    /// whole file is written and durable.
    ///
    /// A failed fsync is not retried (nor the spare used): see [`WalError::Poisoned`].
    pub(crate) fn fill_step(&mut self) -> Result<bool, WalError> {
        if self.filled < self.size {
            let n = (self.size - self.filled).min(ZERO_CHUNK.len() as u64) as usize;
            self.file
                .write_all_at(self.filled, &ZERO_CHUNK[..n])
                .map_err(|e| WalError::io("pre-allocating", &self.path, e))?;
            self.filled += n as u64;
        } else if self.synced {
            return Ok(true);
        }
        self.file
            .sync()
            .map_err(|e| WalError::io("fsyncing", &self.path, e))?;
        self.synced = self.filled >= self.size;
        Ok(self.synced)
    }

    /// Fills the whole spare at once, on the calling thread.
    pub(crate) fn fill(mut self) -> Result<Self, WalError> {
        while !self.fill_step()? {}
        Ok(self)
    }

    /// Whether the spare is whole and durable, ready for [`ActiveSegment::install`].
    pub(crate) fn is_ready(&self) -> bool {
        self.synced && self.filled >= self.size
    }
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    /// Which segment this is.
    pub(crate) info: SegmentInfo,
    /// The open file, written at `len` with positioned writes.
    file: Box<dyn StorageFile>,
    /// Where its records end and the next frame goes: the end of its last frame, not the file's
    /// length (zeros follow up to the pre-allocated size). Tracked here so that writing needs no
    /// metadata call.
    pub(crate) len: u64,
}

impl ActiveSegment {
    /// Creates the segment starting at `first_lsn`, pre-allocated to `size` bytes, on the
    /// calling thread: a spare is prepared (or one left by an earlier run finished) and
    /// installed.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_lsn: Lsn,
        size: u64,
    ) -> Result<Self, WalError> {
        let spare = SpareFile::open(storage, dir, size)?.fill()?;
        Self::install(storage, dir, spare, first_lsn)
    }

    /// Makes the prepared `spare` the segment starting at `first_lsn`: writes its header and
    /// fsyncs it, renames the spare to the segment's name and fsyncs the directory, so that a
    /// segment's name never shows a file without its header, and a crash cannot lose the file
    /// while keeping later ones. A file of that name may only be one that holds no records
    /// (empty, or zeros: one cut back after a torn creation); it is replaced.
    pub(crate) fn install(
        storage: &dyn Storage,
        dir: &Path,
        spare: SpareFile,
        first_lsn: Lsn,
    ) -> Result<Self, WalError> {
        assert!(spare.is_ready(), "a spare is installed before it is ready");
        let path = dir.join(segment_file_name(first_lsn));
        check_replaceable(storage, &path)?;
        let SpareFile {
            path: spare_path,
            mut file,
            ..
        } = spare;
        file.write_all_at(0, &encode_header(first_lsn))
            .map_err(|e| WalError::io("writing", &spare_path, e))?;
        file.sync()
            .map_err(|e| WalError::io("fsyncing", &spare_path, e))?;
        drop(file);
        storage
            .rename(&spare_path, &path)
            .map_err(|e| WalError::io("renaming the spare segment to", &path, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| WalError::io("fsyncing directory", dir, e))?;
        // Opened again by its new name: a storage may tie an open file to its path.
        let file = storage
            .open_write(&path)
            .map_err(|e| WalError::io("opening", &path, e))?;
        Ok(ActiveSegment {
            info: SegmentInfo { first_lsn, path },
            file,
            len: HEADER_BYTES as u64,
        })
    }

    /// Reopens an existing segment for appending after its last frame, which ends at `len`
    /// (only zeros, or nothing, follow: the caller checked).
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
        // The caller verified `len` bytes of frames; a shorter file changed since.
        if actual < len {
            return Err(WalError::Corrupt {
                file: info.path,
                offset: actual,
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

    /// Writes whole frames after the last one (not yet durable), over the zeros there.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.file
            .write_all_at(self.len, bytes)
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

/// Refuses to replace the file `path` unless it holds no records: missing, empty or zeros.
fn check_replaceable(storage: &dyn Storage, path: &Path) -> Result<(), WalError> {
    let len = match storage.file_len(path) {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WalError::io("measuring", path, e)),
    };
    if len == 0 {
        return Ok(());
    }
    let data = storage
        .read_file(path, len)
        .map_err(|e| WalError::io("reading", path, e))?;
    // A new segment's name must be free: a leftover with records would lose them.
    match first_nonzero(&data) {
        None => Ok(()),
        Some(offset) => Err(WalError::Corrupt {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: format!("new segment file already holds {len} bytes, not all zeros"),
        }),
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
            ActiveSegment::create(&s, dir.path(), lsn, 256).unwrap();
        }
        // A spare being prepared is not a segment.
        SpareFile::open(&s, dir.path(), 256).unwrap();
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
    fn a_new_segment_starts_with_its_header_and_is_zeros_to_its_full_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let size = 3 * SPARE_SYNC_CHUNK_BYTES as u64 + 5;
        let segment = ActiveSegment::create(&s, dir.path(), 42, size).unwrap();
        assert_eq!(segment.len, HEADER_BYTES as u64);
        let data = std::fs::read(&segment.info.path).unwrap();
        assert_eq!(data.len() as u64, size);
        assert!(is_zeros(&data[HEADER_BYTES..]));
        // The spare was renamed, not copied.
        assert!(!dir.path().join(SPARE_FILE_NAME).exists());
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
        for len in [1, HEADER_BYTES - 1, HEADER_BYTES, 4096] {
            assert_eq!(
                Layout::of(&vec![0; len], &info).unwrap(),
                Layout::Unwritten,
                "{len} zeros"
            );
        }
        // Zeros after a header are no frames yet.
        let mut preallocated = header.to_vec();
        preallocated.resize(4096, 0);
        assert_eq!(
            Layout::of(&preallocated, &info).unwrap(),
            Layout::Headed { version: 1 }
        );
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
        // The same damage with nothing, or only zeros, after the header is a torn creation.
        assert_eq!(
            Layout::of(&damaged[..HEADER_BYTES], &info).unwrap(),
            Layout::TornHeader
        );
        let mut torn_preallocated = damaged[..HEADER_BYTES].to_vec();
        torn_preallocated.resize(4096, 0);
        assert_eq!(
            Layout::of(&torn_preallocated, &info).unwrap(),
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
    fn creating_over_a_file_with_bytes_other_than_zeros_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join(segment_file_name(5));
        s.write_new_file(&path, b"\0\0old").unwrap();
        assert!(matches!(
            ActiveSegment::create(&s, dir.path(), 5, 64),
            Err(WalError::Corrupt { offset: 2, .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0old", "left alone");
        // A file of zeros (a torn creation cut back) holds no records: it is replaced.
        std::fs::write(&path, [0u8; 10]).unwrap();
        let segment = ActiveSegment::create(&s, dir.path(), 5, 64).unwrap();
        assert_eq!(segment.info.path, path);
        assert_eq!(
            std::fs::read(&path).unwrap()[..HEADER_BYTES],
            encode_header(5)
        );
    }

    #[test]
    fn zero_runs_are_found_from_either_end() {
        for len in [0, 1, 7, 4095, 4096, 4097, 3 * 4096 + 11] {
            let zeros = vec![0u8; len];
            assert_eq!(first_nonzero(&zeros), None, "{len}");
            assert_eq!(last_nonzero(&zeros), None, "{len}");
            assert!(is_zeros(&zeros));
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at >= len {
                    continue;
                }
                let mut one = zeros.clone();
                one[at] = 9;
                assert_eq!(first_nonzero(&one), Some(at), "{len} {at}");
                assert_eq!(last_nonzero(&one), Some(at), "{len} {at}");
                assert!(!is_zeros(&one));
            }
        }
        let mut two = vec![0u8; 10_000];
        two[5] = 1;
        two[9_000] = 1;
        assert_eq!(first_nonzero(&two), Some(5));
        assert_eq!(last_nonzero(&two), Some(9_000));
    }

    #[test]
    fn a_spare_left_by_an_earlier_run_is_finished_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join(SPARE_FILE_NAME);
        let size = SPARE_SYNC_CHUNK_BYTES as u64 + 100;
        // Cut short (a kill while it was prepared): filled on from its length.
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let spare = SpareFile::open(&s, dir.path(), size).unwrap();
        assert_eq!(spare.filled, 1000);
        let spare = spare.fill().unwrap();
        assert!(spare.is_ready());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        drop(spare);
        // Whole: ready after one fsync.
        let mut spare = SpareFile::open(&s, dir.path(), size).unwrap();
        assert!(!spare.is_ready());
        assert!(spare.fill_step().unwrap());
        drop(spare);
        // Longer than the segments now are: replaced.
        let spare = SpareFile::open(&s, dir.path(), 500)
            .unwrap()
            .fill()
            .unwrap();
        assert!(spare.is_ready());
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 500]);
    }
}
