//! Target `wal_frame`: WAL frames decoded one after another, as replay
//! scans a segment.
//!
//! Input: one byte choosing `record_bytes_max` (see [`RECORD_BYTES_MAX_CHOICES`]),
//! then frame bytes. Every frame that decodes must re-encode to exactly its
//! own bytes and respect the limit; every refusal must say truly why. The
//! scan stops at the first bad frame, as a segment scan does (the search
//! for a valid frame after it is the `wal_segment` target's).

use crate::wal::frame::{self, FrameError, PayloadCrc, FRAME_HEADER_BYTES};
use crate::wal::RECORD_BYTES_LIMIT;

/// Largest input worth trying: a few frames of real records.
pub const INPUT_BYTES_MAX: usize = 16 << 10;

/// The `record_bytes_max` values the first input byte picks from (modulo):
/// none, small, the default, and the hard ceiling.
pub const RECORD_BYTES_MAX_CHOICES: [usize; 4] = [0, 64, 64 << 20, RECORD_BYTES_LIMIT];

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&choice, mut rest)) = data.split_first() else {
        return;
    };
    let record_bytes_max =
        RECORD_BYTES_MAX_CHOICES[usize::from(choice) % RECORD_BYTES_MAX_CHOICES.len()];
    let mut encoded = Vec::new();
    while !rest.is_empty() {
        match frame::decode(rest, record_bytes_max) {
            Ok(decoded) => {
                let len = decoded.encoded_len();
                assert!(decoded.payload.len() <= record_bytes_max, "over the limit");
                assert!(len <= rest.len(), "a frame longer than its bytes");
                encoded.clear();
                frame::encode_into(
                    &mut encoded,
                    decoded.lsn,
                    decoded.payload,
                    &PayloadCrc::new(decoded.payload),
                );
                assert_eq!(
                    encoded[..],
                    rest[..len],
                    "a decoded frame does not re-encode to its own bytes"
                );
                rest = &rest[len..];
            }
            Err(error) => {
                check_refusal(&error, rest, record_bytes_max);
                return;
            }
        }
    }
}

/// Checks that `error` is true of the frame at the start of `bytes`.
fn check_refusal(error: &FrameError, bytes: &[u8], record_bytes_max: usize) {
    assert!(!error.to_string().is_empty());
    match *error {
        FrameError::ShortHeader { available } => {
            assert_eq!(available, bytes.len());
            assert!(available < FRAME_HEADER_BYTES);
        }
        FrameError::LengthOverLimit { length, max } => {
            assert_eq!(max, record_bytes_max);
            assert!(length as usize > max);
        }
        FrameError::LengthPastEnd { length, available } => {
            assert_eq!(available, bytes.len() - FRAME_HEADER_BYTES);
            assert!(length as usize > available);
        }
        FrameError::CrcMismatch { stored, computed } => assert_ne!(stored, computed),
    }
}
