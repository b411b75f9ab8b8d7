//! The data dir's files as a test sees them: snapshot and WAL names, WAL
//! segments (a 24-byte header starting with `TOKDWAL\0`, then frames
//! `[payload length u32][LSN u64][CRC32 u32][payload]`, little endian, then
//! zeros to the segment's pre-allocated size), and byte-level damage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bytes of a WAL frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Bytes of a WAL segment header: magic, format version, first LSN, CRC.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// First bytes of a WAL segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TOKDWAL\0";
/// Bytes of a snapshot header before its payload.
pub const SNAPSHOT_HEADER_BYTES: usize = 36;

/// Files in `dir` named `prefix…suffix`, sorted by name (for WAL segments and
/// snapshots: oldest first).
pub fn named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the data dir is readable")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    found.sort();
    found
}

/// Snapshot files, oldest first.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    named(dir, "snapshot-", ".mpk")
}

/// WAL segments, oldest first.
pub fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    named(dir, "wal-", ".log")
}

/// The newest WAL segment.
pub fn last_segment(dir: &Path) -> PathBuf {
    wal_segments(dir)
        .pop()
        .expect("the data dir has a WAL segment")
}

/// The file's name.
pub fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// One frame of a WAL segment.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Byte offset of its header.
    pub offset: usize,
    /// Header plus payload.
    pub len: usize,
    /// Its LSN.
    pub lsn: u64,
}

/// The frames of a segment, walking the length fields after its header up to
/// the zeros after the last one (the file must be whole: written by a server,
/// not damaged yet).
pub fn frames(segment: &Path) -> Vec<Frame> {
    let data = std::fs::read(segment).expect("the segment is readable");
    assert!(
        data.starts_with(SEGMENT_MAGIC),
        "{} starts with its header",
        segment.display()
    );
    let mut frames = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos < data.len() && data[pos..].iter().any(|b| *b != 0) {
        assert!(pos + FRAME_HEADER_BYTES <= data.len(), "short frame header");
        let length = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(data[pos + 4..pos + 12].try_into().unwrap());
        let len = FRAME_HEADER_BYTES + length;
        assert!(pos + len <= data.len(), "frame runs past the end");
        frames.push(Frame {
            offset: pos,
            len,
            lsn,
        });
        pos += len;
    }
    for pair in frames.windows(2) {
        assert_eq!(pair[1].lsn, pair[0].lsn + 1, "consecutive LSNs");
    }
    frames
}

/// Where the last frame of a segment ends: zeros follow up to its size.
pub fn frames_end(segment: &Path) -> usize {
    frames(segment)
        .last()
        .map_or(SEGMENT_HEADER_BYTES, |f| f.offset + f.len)
}

/// Writes `bytes` into `path` at `offset`, over what is there (a crash's
/// leftovers in a pre-allocated segment).
pub fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("readable");
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("writable");
}

/// Flips every bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut data = std::fs::read(path).expect("readable");
    data[offset] ^= 0xff;
    std::fs::write(path, data).expect("writable");
}

/// Whether `needle` occurs in any file of `dir`.
pub fn dir_contains(dir: &Path, needle: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .expect("the data dir is readable")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.is_file())
        .find(|p| contains(&std::fs::read(p).unwrap_or_default(), needle.as_bytes()))
}

/// Whether `needle` (which holds no zero byte) occurs in `data`, skipping
/// blocks of zeros at `memcmp` speed: WAL segments are mostly zeros
/// (pre-allocated), and a byte-by-byte search of tens of megabytes in a test
/// build takes seconds.
pub fn contains(data: &[u8], needle: &[u8]) -> bool {
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    assert!(
        !needle.is_empty() && !needle.contains(&0),
        "a needle without zeros"
    );
    // Such a needle cannot start in a block of zeros; one that starts in
    // another block may run into the next.
    data.chunks(BLOCK).enumerate().any(|(i, block)| {
        if block == &ZEROS[..block.len()] {
            return false;
        }
        let start = i * BLOCK;
        let end = (start + block.len() + needle.len() - 1).min(data.len());
        data[start..end].windows(needle.len()).any(|w| w == needle)
    })
}

/// Every file of `dir` with its size and a hash of its bytes (to show a
/// tool changed nothing).
pub fn contents(dir: &Path) -> BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut hasher);
            (name(&p), (data.len(), hasher.finish()))
        })
        .collect()
}

#[test]
fn contains_finds_a_needle_anywhere_among_zeros() {
    let needle = b"pan-4111";
    for len in [10, 4096, 3 * 4096 + 5] {
        for at in 0..=len - needle.len() {
            if at % 997 != 0 && !(4090..4100).contains(&at) && at != len - needle.len() {
                continue;
            }
            let mut data = vec![0u8; len];
            data[at..at + needle.len()].copy_from_slice(needle);
            assert!(contains(&data, needle), "{len} {at}");
            data[at + 3] = b'X';
            assert!(!contains(&data, needle), "{len} {at}");
        }
    }
}
