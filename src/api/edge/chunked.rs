//! Following a chunked request body to its end, without keeping it.
//!
//! The edge passes body bytes through to actix-http untouched; it only needs
//! to know where a chunked body ends, because the next request head starts
//! there. The states and what each accepts are actix-http's own (its
//! `h1::chunked`), so a body this accepts is one actix-http decodes, and a
//! framing error is found here first: the edge then closes the connection
//! rather than let actix-http answer it.

/// Where in a chunked body the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first hex digit of a chunk size.
    SizeFirst,
    /// More hex digits, or what ends them.
    SizeRest,
    /// Blanks after the size.
    SizeLws,
    /// A chunk extension, up to its CR.
    Extension,
    /// The LF ending the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// A trailer field line, up to its CR.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The CR of the final blank line, or a trailer line.
    EndCr,
    /// The LF of the final blank line.
    EndLf,
}

/// A chunked body whose framing is not what actix-http accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {what}")]
pub struct ChunkError {
    /// What is wrong with it.
    what: &'static str,
}

impl ChunkError {
    fn new(what: &'static str) -> Self {
        Self { what }
    }
}

/// A chunked body being followed.
#[derive(Debug, Clone)]
pub struct ChunkedBody {
    /// Where it is.
    state: State,
    /// The chunk size being read, then the data bytes left in the chunk.
    size: u64,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        Self {
            state: State::SizeFirst,
            size: 0,
        }
    }
}

impl ChunkedBody {
    /// Follows `bytes`: `Ok(Some(n))` when the body ends after the first `n`
    /// of them, `Ok(None)` when all of them belong to it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut at = 0;
        while at < bytes.len() {
            if self.state == State::Data {
                let left = usize::try_from(self.size).unwrap_or(usize::MAX);
                let taken = left.min(bytes.len() - at);
                at += taken;
                self.size -= taken as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            if self.step(byte)? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// One byte outside chunk data; `true` when it ends the body.
    fn step(&mut self, byte: u8) -> Result<bool, ChunkError> {
        use State::*;
        self.state = match (self.state, byte) {
            (SizeFirst, b) => {
                self.size = u64::from(hex(b).ok_or(ChunkError::new("invalid chunk size"))?);
                SizeRest
            }
            (SizeRest, b' ' | b'\t') => SizeLws,
            (SizeRest | SizeLws, b';') => Extension,
            (SizeRest | SizeLws, b'\r') => SizeLf,
            (SizeRest, b) => {
                let digit = hex(b).ok_or(ChunkError::new("invalid chunk size"))?;
                self.size = self
                    .size
                    .checked_mul(16)
                    .ok_or(ChunkError::new("chunk size too large"))?
                    + u64::from(digit);
                SizeRest
            }
            (SizeLws, b' ' | b'\t') => SizeLws,
            (SizeLws, _) => return Err(ChunkError::new("invalid blank after the chunk size")),
            (Extension, b'\r') => SizeLf,
            (Extension, 0x00..=0x08 | 0x0a..=0x1f | 0x7f) => {
                return Err(ChunkError::new("invalid byte in a chunk extension"))
            }
            (Extension, _) => Extension,
            (SizeLf, b'\n') if self.size > 0 => Data,
            (SizeLf, b'\n') => EndCr,
            (SizeLf, _) => return Err(ChunkError::new("no LF after the chunk size")),
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return Err(ChunkError::new("no CR after chunk data")),
            (DataLf, b'\n') => SizeFirst,
            (DataLf, _) => return Err(ChunkError::new("no LF after chunk data")),
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            (TrailerLf, _) => return Err(ChunkError::new("no LF after a trailer")),
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (EndLf, b'\n') => {
                *self = Self::default();
                return Ok(true);
            }
            (EndLf, _) => return Err(ChunkError::new("no LF at the end of the body")),
            (Data, _) => unreachable!("chunk data is skipped in feed"),
        };
        Ok(false)
    }
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` one split at a time, at every split point.
    fn end_of(body: &[u8]) -> Vec<Result<Option<usize>, ChunkError>> {
        (0..=body.len())
            .map(|split| {
                let mut scanner = ChunkedBody::default();
                match scanner.feed(&body[..split]) {
                    Ok(Some(n)) => Ok(Some(n)),
                    Ok(None) => scanner
                        .feed(&body[split..])
                        .map(|end| end.map(|n| n + split)),
                    Err(e) => Err(e),
                }
            })
            .collect()
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_wherever_it_is_split() {
        let body = b"5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nGET /";
        let end = body.len() - 5;
        for found in end_of(body) {
            assert_eq!(found, Ok(Some(end)));
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n\r\n",
            b"5\r\nhelloX",
            b"5\rX",
            b"5 x\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut scanner = ChunkedBody::default();
            assert!(
                scanner.feed(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        let mut scanner = ChunkedBody::default();
        assert_eq!(scanner.feed(b"5\r\nhel"), Ok(None));
        assert_eq!(scanner.feed(b"lo\r\n0\r\n\r\n"), Ok(Some(9)));
    }
}
