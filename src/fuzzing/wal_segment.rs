//! Target `wal_segment`: WAL segment files replayed as a start replays them,
//! torn tails recovered and damage refused.
//!
//! Input: a flags byte, then the segment bytes.
//!
//! - [`FLAG_FIX_CRCS`]: the segment header's and every complete frame's
//!   CRC are recomputed first, so that the fuzzer's changes to lengths,
//!   LSNs and payloads reach the checks behind the CRCs.
//! - [`FLAG_TWO_SEGMENTS`]: two more bytes (little endian, modulo the length
//!   left) say where the bytes split into two segments, the first of which
//!   is not the last (damage there is never a torn tail).
//!
//! A segment is named for the LSN in its header when it has one, else the
//! first for LSN 1 and the second for the LSN after the first one's valid
//! frames. The files are replayed from memory ([`MemoryStorage`]) three
//! times: read-only ([`wal::read_from_read_only`], which must change
//! nothing), repairing ([`wal::read_from`], which must find the same, and
//! leave the torn tail zeroed and the file's length as it was), and
//! read-only again, which must then find no torn tail and the same records.
//! Records come out with consecutive LSNs, and each payload goes through
//! [`super::log_record::check`].

use crate::log::Lsn;
use crate::storage::{MemoryStorage, Storage};
use crate::wal::frame::{self, PayloadCrc, FRAME_HEADER_BYTES};
use crate::wal::segment::{self, HEADER_BYTES, MAGIC};
use crate::wal::{self, Truncation, WalOptions};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest input worth trying: real segments of a few dozen records.
pub const INPUT_BYTES_MAX: usize = 32 << 10;

/// Flag: recompute the CRCs of the header and of every complete frame.
pub const FLAG_FIX_CRCS: u8 = 1;
/// Flag: split the bytes into two segments.
pub const FLAG_TWO_SEGMENTS: u8 = 2;

/// Where the segments are put in memory.
const DIR: &str = "/fuzz/wal";

/// Bytes of a segment header before its CRC.
const HEADER_CRC_OFFSET: usize = HEADER_BYTES - 4;

/// Limits small enough for quick runs, large enough for the seeds.
fn options() -> WalOptions {
    WalOptions {
        record_bytes_max: 64 << 10,
        segment_bytes_max: 64 << 10,
        buffer_bytes_max: 1 << 20,
        ..WalOptions::default()
    }
}

/// What one replay of the directory found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Every record read, in order, until the end or the first error.
    records: Vec<(Lsn, Bytes)>,
    /// The error that stopped the replay, if any.
    error: Option<String>,
    /// The torn tail found (read-only) or cut (repairing).
    truncation: Option<Truncation>,
    /// Where the log continues, after a replay without error.
    next_lsn: Option<Lsn>,
}

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut segments: Vec<Vec<u8>> = if flags & FLAG_TWO_SEGMENTS != 0 {
        let Some((split, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let at = usize::from(u16::from_le_bytes(*split)) % (rest.len() + 1);
        vec![rest[..at].to_vec(), rest[at..].to_vec()]
    } else {
        vec![rest.to_vec()]
    };
    if flags & FLAG_FIX_CRCS != 0 {
        segments.iter_mut().for_each(|s| fix_crcs(s));
    }
    let storage = MemoryStorage::new();
    let dir = Path::new(DIR);
    let mut first_lsn = header_lsn(&segments[0]).unwrap_or(1);
    for (i, bytes) in segments.iter().enumerate() {
        if i > 0 {
            let after = first_lsn.saturating_add(valid_frames(&segments[i - 1], first_lsn));
            first_lsn = header_lsn(bytes).unwrap_or(after);
        }
        storage.insert(
            dir.join(segment::segment_file_name(first_lsn)),
            bytes.clone(),
        );
    }
    let files = files_of(&storage);

    let read_only = replay(&storage, dir, false);
    assert_eq!(
        files_of(&storage),
        files,
        "a read-only replay changed files"
    );
    check_records(&read_only);
    let repaired = replay(&storage, dir, true);
    assert_eq!(repaired, read_only, "repairing found something else");
    if read_only.error.is_some() {
        return;
    }
    if let Some(torn) = &read_only.truncation {
        // Cut: zeroed from its offset on, the file keeping its length.
        let before = files.iter().find(|(path, _)| *path == torn.file);
        let before_len = before.and_then(|(_, bytes)| bytes.as_ref()).map(Vec::len);
        let after = storage.get(&torn.file).unwrap_or_default();
        assert_eq!(
            Some(after.len()),
            before_len,
            "cutting changed the file's length"
        );
        let offset = usize::try_from(torn.offset).unwrap_or(usize::MAX);
        assert!(
            after.get(offset..).is_some_and(segment::is_zeros),
            "the torn tail was not cut"
        );
    }
    let again = replay(&storage, dir, false);
    assert_eq!(
        again,
        Outcome {
            truncation: None,
            ..read_only
        },
        "a repaired log does not replay the same"
    );
}

/// Every file and its bytes.
fn files_of(storage: &MemoryStorage) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    storage
        .paths()
        .into_iter()
        .map(|path| {
            let bytes = storage.get(&path);
            (path, bytes)
        })
        .collect()
}

/// Replays every record of the directory.
fn replay(storage: &MemoryStorage, dir: &Path, repair: bool) -> Outcome {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    let started = if repair {
        wal::read_from(storage, dir, 0, &options())
    } else {
        wal::read_from_read_only(storage, dir, 0, &options())
    };
    let mut replay = match started {
        Ok(replay) => replay,
        Err(e) => {
            return Outcome {
                records: Vec::new(),
                error: Some(e.to_string()),
                truncation: None,
                next_lsn: None,
            }
        }
    };
    let truncation = replay.truncation().cloned();
    let mut records = Vec::new();
    let mut error = None;
    for item in &mut replay {
        match item {
            Ok(record) => records.push((record.lsn, record.payload)),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Outcome {
        next_lsn: error.is_none().then(|| replay.next_lsn()),
        records,
        error,
        truncation,
    }
}

/// Records have consecutive LSNs, the log continues after the last, and
/// every payload is checked as a log record.
fn check_records(outcome: &Outcome) {
    for pair in outcome.records.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "LSNs are not consecutive");
    }
    if let (Some((last, _)), Some(next)) = (outcome.records.last(), outcome.next_lsn) {
        assert_eq!(
            next,
            last + 1,
            "the log does not continue after its last record"
        );
    }
    for (_, payload) in &outcome.records {
        super::log_record::check(payload);
    }
}

/// The first LSN in a segment's header, when it has one.
fn header_lsn(bytes: &[u8]) -> Option<Lsn> {
    if !bytes.starts_with(&MAGIC) {
        return None;
    }
    let field = bytes.get(12..20)?;
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(field);
    Some(u64::from_le_bytes(lsn))
}

/// Where a segment's frames start: after the header when it has one.
fn frames_at(bytes: &[u8]) -> usize {
    if bytes.starts_with(&MAGIC) && bytes.len() >= HEADER_BYTES {
        HEADER_BYTES
    } else {
        0
    }
}

/// How many frames with consecutive LSNs from `first_lsn` the segment holds.
fn valid_frames(bytes: &[u8], first_lsn: Lsn) -> u64 {
    let mut pos = frames_at(bytes);
    let mut count = 0u64;
    while let Ok(decoded) = frame::decode(&bytes[pos..], options().record_bytes_max) {
        if decoded.lsn != first_lsn.saturating_add(count) {
            break;
        }
        pos += decoded.encoded_len();
        count += 1;
    }
    count
}

/// Recomputes the header CRC and the CRC of every complete frame.
fn fix_crcs(bytes: &mut [u8]) {
    let pos = frames_at(bytes);
    if pos == HEADER_BYTES {
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }
    let mut pos = pos;
    let mut encoded = Vec::new();
    while bytes.len() - pos >= FRAME_HEADER_BYTES {
        let Some((length, lsn)) = frame::peek_header(&bytes[pos..]) else {
            break;
        };
        let start = pos + FRAME_HEADER_BYTES;
        let Some(end) = start
            .checked_add(length as usize)
            .filter(|end| *end <= bytes.len())
        else {
            break;
        };
        let payload = &bytes[start..end];
        encoded.clear();
        frame::encode_into(&mut encoded, lsn, payload, &PayloadCrc::new(payload));
        bytes[pos + 12..start].copy_from_slice(&encoded[12..FRAME_HEADER_BYTES]);
        pos = end;
    }
}
