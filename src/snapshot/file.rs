//! Durable snapshot files: `snapshot-{lsn:020}.mpk` (`-{generation}` before `.mpk` for a
//! second snapshot at the same LSN) in the data directory, each a payload (the engine's state
//! as of an LSN: a [`SnapshotImage`](super::image::SnapshotImage)) behind a checksummed header.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TOKDSNAP"
//!      8     4  format version, u32 little endian (see `snapshot::FORMAT_VERSION`)
//!     12     8  LSN, u64 little endian: the state includes every WAL record up to it
//!     20     8  payload length, u64 little endian
//!     28     4  CRC32 of the payload
//!     32     4  CRC32 of bytes 0..32
//!     36     n  payload, laid out as the format version says
//! ```
//!
//! A snapshot is written to a temporary file, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either the complete file or none (plus a stray temporary file,
//! removed at the next start). The newest two are kept: when the newest turns out damaged, the
//! previous one plus the WAL after it still restores the state. A snapshot whose header checks
//! out but names a format version above this build's is not damaged: it is refused, and nothing
//! falls back past it.
//!
//! Reading changes nothing ([`SnapshotFiles::read_newest_valid`]); what a start must clean up —
//! damaged snapshots to set aside, unfinished temporary files — is reported, and done by
//! [`SnapshotFiles::set_aside`] only once the whole restore has succeeded.

use super::{FORMAT_VERSION, FORMAT_VERSION_MIN};
use crate::log::Lsn;
use crate::storage::Storage;
use bytes::Bytes;
use parking_lot::Mutex;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TOKDSNAP";
/// Bytes of the header before the payload.
pub const SNAPSHOT_HEADER_BYTES: usize = 36;
/// How many snapshots are kept after a new one is durable.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Default limit of a snapshot payload, checked before writing and before reading.
pub const SNAPSHOT_PAYLOAD_BYTES_MAX: u64 = 8 << 30;

/// Bytes of a snapshot written between two fsyncs (see `write_tmp`): a
/// fraction of a millisecond of a disk's bandwidth, which is as long as a WAL
/// fsync issued meanwhile can wait behind one. Redeem p99 during a snapshot of
/// a million tokens, against normal, over three runs each: 2–3.7× with 4 MiB
/// chunks, 1.4–2.0× with 256 KiB, 1.25–1.33× with 64 KiB, for a snapshot that
/// takes 1.2–1.4 s instead of 0.5–0.8 s.
pub const SNAPSHOT_SYNC_CHUNK_BYTES: usize = 64 << 10;
/// File name prefix of snapshots.
const PREFIX: &str = "snapshot-";
/// File name suffix of snapshots.
const SUFFIX: &str = ".mpk";
/// Suffix added to a snapshot file while it is being written.
const TMP_SUFFIX: &str = ".tmp";
/// Suffix added to a damaged snapshot set aside by a load, so it no longer counts as one of the
/// kept snapshots but stays for inspection.
const DAMAGED_SUFFIX: &str = ".damaged";
/// Offset of the header CRC; the bytes before it are covered by it.
const HEADER_CRC_OFFSET: usize = 32;

/// Errors of the snapshot store. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An I/O operation failed.
    #[error("snapshot I/O error: {op} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A payload (to write) or a file (to read) over the configured limit.
    #[error("snapshot {path} of {bytes} bytes is over the limit of {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Payload or file size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Snapshot files exist but none is valid: starting from an empty state would lose data.
    #[error("no valid snapshot: {}", describe_damage(.damaged))]
    AllDamaged {
        /// Each damaged file and what is wrong with it.
        damaged: Vec<(PathBuf, String)>,
    },
    /// A snapshot written by a newer build, in a format this build does not read.
    #[error(
        "snapshot {file} has format version {found}; this build reads versions \
         {FORMAT_VERSION_MIN} to {FORMAT_VERSION}: run a tokend that reads it (nothing was changed)"
    )]
    NewerFormat {
        /// The snapshot file.
        file: PathBuf,
        /// Its format version.
        found: u32,
    },
}

fn describe_damage(damaged: &[(PathBuf, String)]) -> String {
    damaged
        .iter()
        .map(|(file, why)| format!("{}: {why}", file.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A snapshot just made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSnapshot {
    /// Its file.
    pub file: PathBuf,
    /// Its LSN.
    pub lsn: Lsn,
    /// Size of the file.
    pub bytes: u64,
    /// LSN of the oldest snapshot still kept: the WAL must keep every record after it (cut it
    /// before `oldest_kept_lsn + 1`), so that a damaged newest snapshot can fall back.
    pub oldest_kept_lsn: Lsn,
    /// How many snapshots are kept now, this one included (1 right after the
    /// first snapshot: there is nothing to fall back on yet).
    pub kept: usize,
    /// Older snapshots deleted because more than [`SNAPSHOTS_KEPT`] existed.
    pub removed: Vec<PathBuf>,
}

/// A snapshot read back and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot {
    /// The LSN the state is as of: replay the WAL after it.
    pub lsn: Lsn,
    /// The file's format version: how the payload is laid out.
    pub format_version: u32,
    /// The payload as written.
    pub payload: Bytes,
    /// The file it came from.
    pub file: PathBuf,
}

/// What a read of the snapshot files found, with nothing changed on disk.
#[derive(Debug, Default)]
pub struct NewestValid {
    /// The newest snapshot that checks out, if any.
    pub loaded: Option<LoadedSnapshot>,
    /// Newer snapshots that did not check out, and why: a start sets them aside.
    pub damaged: Vec<(PathBuf, String)>,
    /// Temporary files of snapshots a crash left unfinished: a start removes them.
    pub unfinished: Vec<PathBuf>,
}

/// One snapshot file as seen by [`SnapshotFiles::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSnapshot {
    /// LSN from the file name.
    pub lsn: Lsn,
    /// The file.
    pub file: PathBuf,
    /// Size of the file.
    pub bytes: u64,
    /// Why it is not valid, or `None` when header and payload check out.
    pub problem: Option<String>,
    /// Intact but of a format newer than this build reads (then `problem`
    /// says which): not damage, and a start refuses it.
    pub newer: bool,
    /// Set aside by a load after it was found damaged (no longer one of the kept snapshots).
    pub set_aside: bool,
}

impl ListedSnapshot {
    /// Header and payload check out and the file is one of the live snapshots.
    pub fn is_valid(&self) -> bool {
        self.problem.is_none() && !self.set_aside
    }
}

/// The snapshot files of a data directory.
pub struct SnapshotFiles {
    /// File access.
    storage: Arc<dyn Storage>,
    /// The data directory.
    dir: PathBuf,
    /// Largest payload written or read; bounds the memory a load can take.
    payload_bytes_max: u64,
    /// Serializes writes, so that two snapshots never race on the retention of old ones.
    write_lock: Mutex<()>,
}

/// Orders snapshots: by LSN, then by generation among snapshots of the same
/// LSN (a quiet engine snapshots again without new records; each snapshot
/// still gets its own file, so "the newest two" are always two files).
type SnapshotKey = (Lsn, u32);

/// The LSN and generation in a snapshot file name (`snapshot-{lsn:020}.mpk`
/// is generation 0, `snapshot-{lsn:020}-{gen}.mpk` the later ones), or `None`
/// when the name is not a snapshot's.
fn parse_name(name: &str) -> Option<SnapshotKey> {
    let body = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (digits, generation) = match body.split_once('-') {
        None => (body, 0),
        Some((digits, generation)) => {
            let valid = !generation.is_empty()
                && generation.len() <= 9
                && generation.bytes().all(|b| b.is_ascii_digit());
            (
                digits,
                if valid {
                    generation.parse().ok()?
                } else {
                    return None;
                },
            )
        }
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, generation))
}

/// The file name of the first snapshot at `lsn`.
pub fn snapshot_file_name(lsn: Lsn) -> String {
    snapshot_file_name_of((lsn, 0))
}

fn snapshot_file_name_of((lsn, generation): SnapshotKey) -> String {
    if generation == 0 {
        format!("{PREFIX}{lsn:020}{SUFFIX}")
    } else {
        format!("{PREFIX}{lsn:020}-{generation}{SUFFIX}")
    }
}

fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&lsn.to_le_bytes());
    header[20..28].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[28..32].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..HEADER_CRC_OFFSET]);
    header[HEADER_CRC_OFFSET..].copy_from_slice(&header_crc.to_le_bytes());
    header
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Why a snapshot file cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Invalid {
    /// Damaged (or not a snapshot): the previous one may be used instead.
    Damaged(String),
    /// Intact, but written in a newer format: nothing may be used instead.
    Newer(u32),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Damaged(why) => f.write_str(why),
            Invalid::Newer(version) => write!(
                f,
                "format version {version}, newer than this build reads ({FORMAT_VERSION})"
            ),
        }
    }
}

/// Checks a whole snapshot file named for `lsn`; returns its format version and the payload's
/// byte range.
fn validate(file: &[u8], lsn: Lsn) -> Result<(u32, std::ops::Range<usize>), Invalid> {
    let damaged = |why: String| Err(Invalid::Damaged(why));
    if file.len() < SNAPSHOT_HEADER_BYTES {
        return damaged(format!(
            "{} bytes, shorter than the {SNAPSHOT_HEADER_BYTES}-byte header",
            file.len()
        ));
    }
    if file[0..8] != SNAPSHOT_MAGIC {
        return damaged("bad magic bytes".into());
    }
    let stored_header_crc = u32_at(file, HEADER_CRC_OFFSET);
    let header_crc = crc32fast::hash(&file[..HEADER_CRC_OFFSET]);
    if stored_header_crc != header_crc {
        return damaged(format!(
            "header CRC mismatch: stored {stored_header_crc:#010x}, computed {header_crc:#010x}"
        ));
    }
    // The header checks out, so its fields are what was written.
    let version = u32_at(file, 8);
    if version > FORMAT_VERSION {
        return Err(Invalid::Newer(version));
    }
    if version < FORMAT_VERSION_MIN {
        return damaged(format!("format version {version}, which no build wrote"));
    }
    let header_lsn = u64_at(file, 12);
    if header_lsn != lsn {
        return damaged(format!("header says LSN {header_lsn}, file name {lsn}"));
    }
    let payload_len = u64_at(file, 20);
    let actual = (file.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if payload_len != actual {
        return damaged(format!(
            "header says {payload_len} payload bytes, file has {actual}"
        ));
    }
    let stored_crc = u32_at(file, 28);
    let payload = &file[SNAPSHOT_HEADER_BYTES..];
    let crc = crc32fast::hash(payload);
    if stored_crc != crc {
        return damaged(format!(
            "payload CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"
        ));
    }
    Ok((version, SNAPSHOT_HEADER_BYTES..file.len()))
}

impl SnapshotFiles {
    /// The snapshots in `dir`, with the default payload limit.
    pub fn new(storage: Arc<dyn Storage>, dir: impl Into<PathBuf>) -> Self {
        SnapshotFiles {
            storage,
            dir: dir.into(),
            payload_bytes_max: SNAPSHOT_PAYLOAD_BYTES_MAX,
            write_lock: Mutex::new(()),
        }
    }

    /// Sets the largest payload written or read.
    pub fn with_payload_bytes_max(mut self, payload_bytes_max: u64) -> Self {
        self.payload_bytes_max = payload_bytes_max;
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn sync_dir(&self) -> Result<(), SnapshotError> {
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io_error("fsyncing directory", &self.dir, e))
    }

    /// File names in the directory; an absent directory has none.
    fn names(&self) -> Result<Vec<String>, SnapshotError> {
        match self.storage.list_dir(&self.dir) {
            Ok(names) => Ok(names),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error("listing", &self.dir, e)),
        }
    }

    /// Live snapshots, newest first.
    fn snapshots(&self) -> Result<Vec<(Lsn, PathBuf)>, SnapshotError> {
        Ok(self
            .keyed_snapshots()?
            .into_iter()
            .map(|((lsn, _), path)| (lsn, path))
            .collect())
    }

    /// Live snapshots with their generation, newest first.
    fn keyed_snapshots(&self) -> Result<Vec<(SnapshotKey, PathBuf)>, SnapshotError> {
        let mut found: Vec<(SnapshotKey, PathBuf)> = self
            .names()?
            .iter()
            .filter_map(|name| parse_name(name).map(|key| (key, self.path(name))))
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.0));
        Ok(found)
    }

    /// Writes the snapshot of the state as of `lsn` durably, then deletes all but the newest
    /// [`SNAPSHOTS_KEPT`] snapshots.
    ///
    /// Blocks on fsyncs: call it from a blocking thread. The WAL must hold every record up to
    /// `lsn` durably before the snapshot is written (flush it first), so that the log never
    /// ends before the newest snapshot.
    pub fn write(&self, lsn: Lsn, payload: &[u8]) -> Result<WrittenSnapshot, SnapshotError> {
        let _one_writer = self.write_lock.lock();
        // A snapshot at the LSN of an existing one gets the next generation:
        // it never replaces the file it may have to fall back on.
        let generation = self
            .keyed_snapshots()?
            .iter()
            .filter(|((l, _), _)| *l == lsn)
            .map(|((_, g), _)| g + 1)
            .max()
            .unwrap_or(0);
        let name = snapshot_file_name_of((lsn, generation));
        let path = self.path(&name);
        if payload.len() as u64 > self.payload_bytes_max {
            return Err(SnapshotError::TooLarge {
                path,
                bytes: payload.len() as u64,
                max: self.payload_bytes_max,
            });
        }
        self.storage
            .create_dir_all(&self.dir)
            .map_err(|e| io_error("creating directory", &self.dir, e))?;
        let tmp = self.path(&format!("{name}{TMP_SUFFIX}"));
        // A temporary file left by a crash during an earlier attempt at the same LSN.
        match self.storage.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing stale", &tmp, e)),
        }
        let header = encode_header(lsn, payload);
        debug_assert_eq!(
            validate(&[&header[..], payload].concat(), lsn).map(|(_, r)| r.len()),
            Ok(payload.len())
        );
        if let Err(e) = self.write_tmp(&tmp, &header, payload) {
            // Best effort: a leftover temporary file is removed at the next load anyway.
            let _ = self.storage.remove_file(&tmp);
            return Err(e);
        }
        self.storage
            .rename(&tmp, &path)
            .map_err(|e| io_error("renaming into place", &tmp, e))?;
        self.sync_dir()?;

        // Only now that the new snapshot is durable may older ones go.
        let snapshots = self.snapshots()?;
        let mut removed = Vec::new();
        for (_, old) in snapshots.iter().skip(SNAPSHOTS_KEPT) {
            self.storage
                .remove_file(old)
                .map_err(|e| io_error("removing old snapshot", old, e))?;
            removed.push(old.clone());
        }
        if !removed.is_empty() {
            self.sync_dir()?;
        }
        let kept = &snapshots[..snapshots.len().min(SNAPSHOTS_KEPT)];
        let oldest_kept_lsn = kept.iter().map(|(l, _)| *l).min().unwrap_or(lsn);
        Ok(WrittenSnapshot {
            file: path,
            lsn,
            bytes: (SNAPSHOT_HEADER_BYTES + payload.len()) as u64,
            oldest_kept_lsn,
            kept: kept.len(),
            removed,
        })
    }

    /// Writes and fsyncs the temp file [`SNAPSHOT_SYNC_CHUNK_BYTES`] at a time: the
    /// WAL shares the disk, and one fsync of a whole snapshot (tens of
    /// megabytes) would make every WAL fsync issued meanwhile wait behind it,
    /// stalling redeems for as long; in chunks, a WAL fsync waits for at most
    /// one chunk's flush.
    fn write_tmp(&self, tmp: &Path, header: &[u8], payload: &[u8]) -> Result<(), SnapshotError> {
        let mut file = self
            .storage
            .create_new(tmp)
            .map_err(|e| io_error("creating", tmp, e))?;
        file.write_all(header)
            .map_err(|e| io_error("writing", tmp, e))?;
        for chunk in payload.chunks(SNAPSHOT_SYNC_CHUNK_BYTES) {
            file.write_all(chunk)
                .map_err(|e| io_error("writing", tmp, e))?;
            file.sync().map_err(|e| io_error("fsyncing", tmp, e))?;
        }
        if payload.is_empty() {
            file.sync().map_err(|e| io_error("fsyncing", tmp, e))?;
        }
        Ok(())
    }

    /// Reads one snapshot file within the limit.
    fn read(&self, path: &Path) -> Result<Vec<u8>, SnapshotError> {
        let max = self
            .payload_bytes_max
            .saturating_add(SNAPSHOT_HEADER_BYTES as u64);
        let bytes = self
            .storage
            .file_len(path)
            .map_err(|e| io_error("measuring", path, e))?;
        if bytes > max {
            return Err(SnapshotError::TooLarge {
                path: path.to_path_buf(),
                bytes,
                max,
            });
        }
        self.storage
            .read_file(path, max)
            .map_err(|e| io_error("reading", path, e))
    }

    /// Reads the newest snapshot that checks out, changing nothing on disk.
    ///
    /// A damaged snapshot (bad magic, CRC or length) is logged and skipped for the previous one,
    /// and reported in [`NewestValid::damaged`]; unfinished temporary files are reported in
    /// [`NewestValid::unfinished`]. [`SnapshotError::AllDamaged`] when snapshots exist but none is
    /// valid; [`SnapshotError::NewerFormat`] when the newest intact one has a newer format.
    pub fn read_newest_valid(&self) -> Result<NewestValid, SnapshotError> {
        let mut found = NewestValid::default();
        for name in self.names()? {
            if name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX) {
                found.unfinished.push(self.path(&name));
            }
        }
        for (lsn, path) in self.snapshots()? {
            let data = self.read(&path)?;
            match validate(&data, lsn) {
                Ok((format_version, range)) => {
                    found.loaded = Some(LoadedSnapshot {
                        lsn,
                        format_version,
                        payload: Bytes::from(data).slice(range),
                        file: path,
                    });
                    break;
                }
                Err(Invalid::Newer(found)) => {
                    return Err(SnapshotError::NewerFormat { file: path, found });
                }
                Err(Invalid::Damaged(why)) => {
                    tracing::warn!(
                        file = %path.display(),
                        problem = %why,
                        "damaged snapshot skipped, trying the previous one"
                    );
                    found.damaged.push((path, why));
                }
            }
        }
        if found.loaded.is_none() && !found.damaged.is_empty() {
            return Err(SnapshotError::AllDamaged {
                damaged: found.damaged,
            });
        }
        Ok(found)
    }

    /// [`SnapshotFiles::read_newest_valid`], then [`SnapshotFiles::set_aside`] what it skipped.
    pub fn load_newest_valid(&self) -> Result<Option<LoadedSnapshot>, SnapshotError> {
        let found = self.read_newest_valid()?;
        self.set_aside(&found)?;
        Ok(found.loaded)
    }

    /// Cleans up what [`SnapshotFiles::read_newest_valid`] found: removes unfinished temporary
    /// files and sets damaged snapshots aside (renamed with a `.damaged` suffix, so they no
    /// longer count as kept snapshots but stay for inspection), durably.
    pub fn set_aside(&self, found: &NewestValid) -> Result<(), SnapshotError> {
        for path in &found.unfinished {
            tracing::warn!(file = %path.display(), "removing unfinished snapshot file");
            self.storage
                .remove_file(path)
                .map_err(|e| io_error("removing unfinished", path, e))?;
        }
        for (path, _) in &found.damaged {
            let mut aside = path.clone().into_os_string();
            aside.push(DAMAGED_SUFFIX);
            self.storage
                .rename(path, Path::new(&aside))
                .map_err(|e| io_error("setting aside damaged", path, e))?;
        }
        if !found.unfinished.is_empty() || !found.damaged.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Every snapshot file, checked, newest first (for the offline `inspect` tool); includes
    /// snapshots set aside as damaged by an earlier load. Changes nothing.
    pub fn list(&self) -> Result<Vec<ListedSnapshot>, SnapshotError> {
        let mut found: Vec<(SnapshotKey, PathBuf, bool)> = self
            .names()?
            .iter()
            .filter_map(|name| {
                let (base, set_aside) = match name.strip_suffix(DAMAGED_SUFFIX) {
                    Some(base) => (base, true),
                    None => (name.as_str(), false),
                };
                parse_name(base).map(|key| (key, self.path(name), set_aside))
            })
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        found
            .into_iter()
            .map(|((lsn, _), file, set_aside)| {
                let (bytes, invalid) = match self.read(&file) {
                    Ok(data) => (data.len() as u64, validate(&data, lsn).err()),
                    Err(SnapshotError::TooLarge { bytes, max, .. }) => (
                        bytes,
                        Some(Invalid::Damaged(format!(
                            "{bytes} bytes, over the limit of {max}"
                        ))),
                    ),
                    Err(e) => return Err(e),
                };
                Ok(ListedSnapshot {
                    lsn,
                    file,
                    bytes,
                    newer: matches!(invalid, Some(Invalid::Newer(_))),
                    problem: invalid.map(|e| e.to_string()),
                    set_aside,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
        [&encode_header(lsn, payload)[..], payload].concat()
    }

    #[test]
    fn header_layout() {
        let bytes = file(0x0102, b"xyz");
        assert_eq!(&bytes[0..8], b"TOKDSNAP");
        assert_eq!(u32_at(&bytes, 8), FORMAT_VERSION);
        assert_eq!(u64_at(&bytes, 12), 0x0102);
        assert_eq!(u64_at(&bytes, 20), 3);
        assert_eq!(u32_at(&bytes, 28), crc32fast::hash(b"xyz"));
        assert_eq!(u32_at(&bytes, 32), crc32fast::hash(&bytes[..32]));
        assert_eq!(validate(&bytes, 0x0102), Ok((FORMAT_VERSION, 36..39)));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let bytes = file(7, b"snapshot payload");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(validate(&damaged, 7).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(validate(&bytes[..cut], 7).is_err(), "cut {cut}");
        }
        assert!(validate(&bytes, 8)
            .unwrap_err()
            .to_string()
            .contains("file name 8"));
    }

    #[test]
    fn an_intact_header_of_a_newer_format_is_not_damage() {
        let mut bytes = file(7, b"payload");
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..SNAPSHOT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(validate(&bytes, 7), Err(Invalid::Newer(FORMAT_VERSION + 1)));
        bytes[8..12].copy_from_slice(&FORMAT_VERSION_MIN.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..SNAPSHOT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(validate(&bytes, 7).map(|(v, _)| v), Ok(FORMAT_VERSION_MIN));
    }

    #[test]
    fn names() {
        assert_eq!(snapshot_file_name(5), "snapshot-00000000000000000005.mpk");
        assert_eq!(parse_name(&snapshot_file_name(5)), Some((5, 0)));
        assert_eq!(
            snapshot_file_name_of((5, 3)),
            "snapshot-00000000000000000005-3.mpk"
        );
        assert_eq!(parse_name(&snapshot_file_name_of((5, 3))), Some((5, 3)));
        assert_eq!(parse_name("snapshot-00000000000000000005-.mpk"), None);
        assert_eq!(parse_name("snapshot-00000000000000000005-x.mpk"), None);
        assert_eq!(parse_name("snapshot-00000000000000000005.mpk.tmp"), None);
        assert_eq!(parse_name("snapshot-5.mpk"), None);
    }
}
