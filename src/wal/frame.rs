//! The on-disk frame of one WAL record.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length, u32 little endian
//!      4     8  LSN, u64 little endian
//!     12     4  CRC32 (IEEE) over bytes 0..12 followed by the payload
//!     16     n  payload
//! ```
//!
//! The CRC covers the length and the LSN as well as the payload, so a frame whose header was
//! damaged, or a frame copied to another place, cannot pass as another record.

use super::Lsn;

/// Bytes of the frame header (length, LSN, CRC).
pub const FRAME_HEADER_BYTES: usize = 16;

/// Offset of the CRC inside the header; the bytes before it are covered by the CRC.
const CRC_OFFSET: usize = 12;

/// Why bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header remain.
    ShortHeader {
        /// Bytes remaining at the frame's offset.
        available: usize,
    },
    /// The length field is above the configured record limit.
    LengthOverLimit {
        /// The length field.
        length: u32,
        /// `record_bytes_max`.
        max: usize,
    },
    /// The payload would end past the end of the data.
    LengthPastEnd {
        /// The length field.
        length: u32,
        /// Payload bytes actually remaining.
        available: usize,
    },
    /// The stored CRC does not match the header and payload.
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ShortHeader { available } => write!(
                f,
                "short frame header: {available} of {FRAME_HEADER_BYTES} bytes"
            ),
            FrameError::LengthOverLimit { length, max } => write!(
                f,
                "frame length {length} is over the record limit of {max} bytes"
            ),
            FrameError::LengthPastEnd { length, available } => write!(
                f,
                "frame length {length} runs past the end of the file ({available} bytes left)"
            ),
            FrameError::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// A frame that checked out: its LSN and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's log sequence number, as stored.
    pub lsn: Lsn,
    /// The record's payload.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Total bytes of the frame on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload.len()
    }
}

/// CRC state over a payload, computed before the LSN is known so that the expensive part of
/// encoding can run outside the WAL's append lock.
#[derive(Clone)]
pub struct PayloadCrc {
    /// CRC state over the payload bytes alone.
    hasher: crc32fast::Hasher,
}

impl PayloadCrc {
    /// Hashes the payload.
    pub fn new(payload: &[u8]) -> Self {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(payload);
        PayloadCrc { hasher }
    }
}

fn header_prefix(length: u32, lsn: Lsn) -> [u8; CRC_OFFSET] {
    let mut prefix = [0u8; CRC_OFFSET];
    prefix[0..4].copy_from_slice(&length.to_le_bytes());
    prefix[4..12].copy_from_slice(&lsn.to_le_bytes());
    prefix
}

fn frame_crc(prefix: &[u8; CRC_OFFSET], payload_crc: &PayloadCrc) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix);
    // CRC32 of a concatenation from the CRCs of its parts: the payload was hashed beforehand.
    hasher.combine(&payload_crc.hasher);
    hasher.finalize()
}

/// Appends the frame of `payload` with `lsn` to `out`. `payload_crc` must be
/// `PayloadCrc::new(payload)`.
///
/// The caller has checked `payload.len()` against `record_bytes_max` (which is far below
/// `u32::MAX`); a longer payload is a programming error.
pub fn encode_into(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8], payload_crc: &PayloadCrc) {
    let Ok(length) = u32::try_from(payload.len()) else {
        panic!(
            "WAL payload of {} bytes does not fit a frame",
            payload.len()
        );
    };
    let prefix = header_prefix(length, lsn);
    debug_assert_eq!(
        payload_crc.hasher.clone().finalize(),
        crc32fast::hash(payload),
        "payload_crc does not belong to payload"
    );
    let crc = frame_crc(&prefix, payload_crc);
    let start = out.len();
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    // The frame just written must read back as itself.
    debug_assert_eq!(
        decode(&out[start..], usize::MAX).map(|f| (f.lsn, f.payload.len())),
        Ok((lsn, payload.len()))
    );
}

/// Reads the header at the start of `buf`: (payload length, LSN), without any check.
pub fn peek_header(buf: &[u8]) -> Option<(u32, Lsn)> {
    let length = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?);
    let lsn = u64::from_le_bytes(buf.get(4..12)?.try_into().ok()?);
    Some((length, lsn))
}

/// Decodes the frame at the start of `buf`, checking the length against `record_bytes_max`
/// before looking at (or allocating for) the payload, and the CRC.
pub fn decode(buf: &[u8], record_bytes_max: usize) -> Result<Frame<'_>, FrameError> {
    let Some((length, lsn)) = peek_header(buf).filter(|_| buf.len() >= FRAME_HEADER_BYTES) else {
        return Err(FrameError::ShortHeader {
            available: buf.len(),
        });
    };
    let payload_len = length as usize;
    if payload_len > record_bytes_max {
        return Err(FrameError::LengthOverLimit {
            length,
            max: record_bytes_max,
        });
    }
    let rest = &buf[FRAME_HEADER_BYTES..];
    let Some(payload) = rest.get(..payload_len) else {
        return Err(FrameError::LengthPastEnd {
            length,
            available: rest.len(),
        });
    };
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&buf[CRC_OFFSET..FRAME_HEADER_BYTES]);
    let stored = u32::from_le_bytes(stored);
    let computed = frame_crc(&header_prefix(length, lsn), &PayloadCrc::new(payload));
    if stored != computed {
        return Err(FrameError::CrcMismatch { stored, computed });
    }
    Ok(Frame { lsn, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, lsn, payload, &PayloadCrc::new(payload));
        out
    }

    #[test]
    fn round_trip_and_layout() {
        let bytes = encode(0x0102_0304_0506_0708, b"abc");
        assert_eq!(bytes.len(), FRAME_HEADER_BYTES + 3);
        assert_eq!(&bytes[0..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[4..12], &0x0102_0304_0506_0708u64.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[0..12]);
        h.update(b"abc");
        assert_eq!(&bytes[12..16], &h.finalize().to_le_bytes());
        let frame = decode(&bytes, 1024).unwrap();
        assert_eq!(frame.lsn, 0x0102_0304_0506_0708);
        assert_eq!(frame.payload, b"abc");
        assert_eq!(frame.encoded_len(), bytes.len());
    }

    #[test]
    fn empty_payload_round_trips() {
        let bytes = encode(9, b"");
        assert_eq!(decode(&bytes, 0).unwrap().payload, b"");
    }

    #[test]
    fn all_zero_bytes_are_not_a_frame() {
        assert!(matches!(
            decode(&[0u8; 64], 1024),
            Err(FrameError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(5, b"hello world");
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut], 1024).unwrap_err();
            if cut < FRAME_HEADER_BYTES {
                assert_eq!(err, FrameError::ShortHeader { available: cut });
            } else {
                assert!(matches!(err, FrameError::LengthPastEnd { .. }), "{err}");
            }
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = encode(77, b"some payload bytes");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged, 1 << 20).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn length_over_limit_is_refused_before_reading_the_payload() {
        let mut bytes = encode(1, &[1u8; 100]);
        bytes.truncate(FRAME_HEADER_BYTES);
        assert_eq!(
            decode(&bytes, 99),
            Err(FrameError::LengthOverLimit {
                length: 100,
                max: 99
            })
        );
    }
}
