//! Target `log_record`: log records decoded, re-encoded, and applied in
//! order as restore applies the records after a snapshot.
//!
//! Input: records one after another, each a 2-byte little-endian length and
//! that many bytes (the last one takes whatever is left). Each record is
//! decoded as [`LogRecord::decode`] decodes a WAL payload: one that decodes
//! must encode to bytes that decode to the same record (and encode to the
//! same bytes again). Then every record, decodable or not, goes through
//! [`Restorer::replay`] against the state the earlier records built, so the
//! catalog's and the shards' apply run on decoded values too; a refusal is
//! fine, a panic is not.

use crate::log::{LogRecord, Lsn};
use crate::store::restore::Restorer;
use crate::wal::Record;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// Largest input worth trying: a short history of real records.
pub const INPUT_BYTES_MAX: usize = 16 << 10;

/// Shards the records are applied to (more than one, so that routing runs).
const SHARDS: usize = 2;

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let mut restorer = match Restorer::new(
        None,
        SHARDS,
        super::RETENTION_MS,
        Arc::clone(super::no_keys()),
    ) {
        Ok(restorer) => restorer,
        Err(e) => panic!("an empty restore failed: {e}"),
    };
    let file: Arc<Path> = Arc::from(Path::new("fuzz-input"));
    let mut rest = data;
    let mut lsn: Lsn = 0;
    while !rest.is_empty() {
        let (payload, after) = match rest {
            [lo, hi, tail @ ..] => {
                let len = usize::from(u16::from_le_bytes([*lo, *hi]));
                tail.split_at(len.min(tail.len()))
            }
            _ => (rest, &[][..]),
        };
        rest = after;
        lsn += 1;
        check(payload);
        let record = Record {
            lsn,
            payload: Bytes::copy_from_slice(payload),
            file: Arc::clone(&file),
        };
        if let Err(e) = restorer.replay(&record) {
            assert!(!e.to_string().is_empty());
        }
    }
    assert!(restorer.last_lsn() <= lsn);
}

/// Decodes `payload` as a log record; one that decodes must round-trip.
pub fn check(payload: &[u8]) {
    let record = match LogRecord::decode(payload, super::no_keys()) {
        Ok(record) => record,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let bytes = record.encode(super::no_keys());
    match LogRecord::decode(&bytes, super::no_keys()) {
        Ok(again) => {
            assert_eq!(again, record, "a record does not decode to itself");
            assert_eq!(
                again.encode(super::no_keys()),
                bytes,
                "a record's encoding is not stable"
            );
        }
        Err(e) => panic!("a record this build encoded does not decode: {e}"),
    }
}
