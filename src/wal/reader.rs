//! Replay: reads the records after an LSN back from the segment files, recovering a torn tail
//! and refusing anything else that is damaged.
//!
//! # Clean end, torn tail or corruption
//!
//! A frame is *bad* when its header is short, its length is over the limit or runs past the end
//! of the file, its CRC does not match, or its LSN is not the one expected (one more than the
//! previous record's, or the segment name's LSN for the first record).
//!
//! - Where the valid frames stop, only zeros to the end of the file (a pre-allocated segment),
//!   or nothing at all (a segment of an earlier build), is the **clean end** of the segment:
//!   nothing is cut, nothing is written.
//! - In the **last** segment, other bytes there are a torn tail (a write cut short by a crash —
//!   some bytes of a frame, then zeros — or stale blocks exposed after a power loss) only when
//!   no valid frame with the expected LSN or a later one starts at any byte offset from the bad
//!   frame to the end of the file (the bad frame itself counts: a valid frame whose LSN skips
//!   ahead means records are missing). Then everything from the bad frame on is garbage that
//!   was never acknowledged: those bytes are zeroed (and fsynced), so the segment ends cleanly
//!   there again and the next append overwrites them, and the cut is reported. Valid frames with
//!   *older* LSNs do not count: they are what stale blocks of a deleted segment look like. Runs
//!   of zeros are skipped at memory speed in that search (no frame starts inside one), so a
//!   torn frame followed by tens of megabytes of zeros costs little more than reading them.
//! - A last segment whose header was cut short (a crash while it was being created) holds no
//!   records: it is zeroed, and replaced when the WAL opens.
//! - Anything else — a bad frame followed by anything but zeros in an earlier segment (those
//!   were fsynced before the next one was named), a bad frame with a valid later record at or
//!   after it, a segment that does not start where the previous one ended — is
//!   [`WalError::Corrupt`] naming the file and byte offset.
//!
//! Everything is checked before anything on disk changes: [`read_from_read_only`] only reports
//! the torn tail, which [`repair_torn_tail`] then cuts, so a replay that fails further on (a
//! newer format, damage) leaves the files as they were.

use super::frame::{self, FRAME_HEADER_BYTES};
use super::segment::{
    first_nonzero, is_zeros, last_nonzero, list_segments, Layout, SegmentInfo, ZERO_CHUNK,
};
use super::{Lsn, WalError, WalOptions};
use crate::storage::Storage;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's payload: a view into the segment buffer, so holding it keeps that segment's
    /// bytes alive; copy it if it is kept long.
    pub payload: Bytes,
    /// The segment file it was read from, to name in errors about the record.
    pub file: Arc<Path>,
}

/// A torn tail that replay cut off (or, read-only, found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file that was (or is to be) cut.
    pub file: PathBuf,
    /// Where its records now end: the byte offset of the bad frame.
    pub offset: u64,
    /// How many bytes were cut off: from `offset` to the last byte that is not zero, all of which
    /// are zeroed (the file keeps its length: zeros after the last frame are its clean end).
    pub dropped_bytes: u64,
    /// What was wrong with the frame at `offset`.
    pub reason: String,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "torn WAL tail dropped: {} cut at byte offset {} ({} bytes zeroed: {})",
            self.file.display(),
            self.offset,
            self.dropped_bytes,
            self.reason
        )
    }
}

/// Result of checking the frames of one segment in order.
pub(crate) struct SegmentScan {
    /// Where the valid, in-sequence frames from the start of the file end.
    pub(crate) valid_len: usize,
    /// LSN the next frame must have.
    pub(crate) next_lsn: Lsn,
    /// The first bad frame, when bytes other than zeros follow the valid frames: its offset and
    /// what is wrong with it. `None` is a clean end: zeros, or nothing, after the valid frames.
    pub(crate) bad: Option<(usize, String)>,
}

/// What is wrong at `pos`, where the valid frames of `data` stop, given the frame error there;
/// `None` when only zeros follow (the clean end of a pre-allocated segment, or the end of the
/// file).
fn bad_frame_at(data: &[u8], pos: usize, error: String) -> Option<(usize, String)> {
    let nonzero = first_nonzero(&data[pos..])?;
    if nonzero >= FRAME_HEADER_BYTES {
        // The frame header there is all zeros: say where the bytes that make it more than a
        // clean end are, which the frame error would not.
        return Some((
            pos,
            format!(
                "zeros after the last record, then other bytes at byte offset {}",
                pos + nonzero
            ),
        ));
    }
    Some((pos, error))
}

/// Checks the frames from byte `from` of a segment whose first record must be `first_lsn`.
pub(crate) fn scan_segment(
    data: &[u8],
    from: usize,
    first_lsn: Lsn,
    record_bytes_max: usize,
) -> SegmentScan {
    let mut pos = from;
    let mut next_lsn = first_lsn;
    while pos < data.len() {
        match frame::decode(&data[pos..], record_bytes_max) {
            Ok(f) if f.lsn == next_lsn => {
                pos += f.encoded_len();
                next_lsn += 1;
            }
            Ok(f) => {
                let reason = format!("LSN {} where {next_lsn} was expected", f.lsn);
                return SegmentScan {
                    valid_len: pos,
                    next_lsn,
                    bad: Some((pos, reason)),
                };
            }
            Err(e) => {
                return SegmentScan {
                    valid_len: pos,
                    next_lsn,
                    bad: bad_frame_at(data, pos, e.to_string()),
                }
            }
        }
    }
    SegmentScan {
        valid_len: pos,
        next_lsn,
        bad: None,
    }
}

/// Looks for a valid frame with LSN `expected_lsn` or later at any byte offset from `from` on:
/// evidence that the bad frame before it is damage in the middle of the log, not a torn tail.
///
/// Frames with older LSNs are ignored: stale blocks of a deleted segment that a power loss
/// exposed at the end of a file are tail garbage too.
///
/// Linear in the bytes searched, and fast over zeros: where a header would read LSN 0 (its
/// bytes 4..12 zero), which no expected LSN is, the search jumps to the first offset whose LSN
/// bytes reach the next non-zero byte, found a block at a time.
pub(crate) fn find_later_frame(
    data: &[u8],
    from: usize,
    expected_lsn: Lsn,
    record_bytes_max: usize,
) -> Option<(usize, Lsn)> {
    // Every frame takes at least a header, so no genuine frame after `from` can carry an LSN
    // above this; the bound only saves CRC work on random bytes.
    let lsn_max = expected_lsn.saturating_add((data.len() / FRAME_HEADER_BYTES) as u64);
    let last_start = data.len().checked_sub(FRAME_HEADER_BYTES)?;
    // End of the LSN field in a frame header (it starts at byte 4).
    const LSN_END: usize = 12;
    let mut q = from;
    while q <= last_start {
        let (length, lsn) = frame::peek_header(&data[q..])?;
        if lsn == 0 && expected_lsn > 0 {
            // data[q + 4..q + 12] is zeros, and so is everything up to the next non-zero byte:
            // a header needs one among its LSN bytes, so the first that can start a frame is 11
            // bytes before it (its LSN's last byte).
            let next = q + LSN_END + first_nonzero(&data[q + LSN_END..])?;
            let skipped = next + 1 - LSN_END;
            assert!(skipped > q, "the search moves on");
            q = skipped;
            continue;
        }
        let plausible = lsn >= expected_lsn
            && lsn <= lsn_max
            && (length as usize) <= record_bytes_max
            && (length as usize) <= data.len() - q - FRAME_HEADER_BYTES;
        if plausible {
            if let Ok(f) = frame::decode(&data[q..], record_bytes_max) {
                return Some((q, f.lsn));
            }
        }
        q += 1;
    }
    None
}

/// A segment read whole and its frames checked.
pub(crate) struct Scanned {
    /// Its bytes.
    pub(crate) data: Vec<u8>,
    /// How they are laid out.
    pub(crate) layout: Layout,
    /// Its frames; a header cut short is a bad frame at offset 0.
    pub(crate) scan: SegmentScan,
}

/// Reads the segment `info` and checks its header and frames.
pub(crate) fn read_and_scan(
    storage: &dyn Storage,
    info: &SegmentInfo,
    options: &WalOptions,
) -> Result<Scanned, WalError> {
    let data = read_segment(storage, info, options)?;
    let layout = Layout::of(&data, info)?;
    let mut scan = scan_segment(
        &data,
        layout.frames_at(),
        info.first_lsn,
        options.record_bytes_max,
    );
    if layout == Layout::TornHeader {
        scan.bad = Some((
            0,
            "segment header cut short (a crash while the segment was created)".to_owned(),
        ));
    }
    Ok(Scanned { data, layout, scan })
}

/// Reads a segment file whole, within the size the options allow.
pub(crate) fn read_segment(
    storage: &dyn Storage,
    info: &SegmentInfo,
    options: &WalOptions,
) -> Result<Vec<u8>, WalError> {
    let max = options.segment_read_bytes_max();
    let bytes = storage
        .file_len(&info.path)
        .map_err(|e| WalError::io("measuring", &info.path, e))?;
    if bytes > max {
        return Err(WalError::SegmentTooLarge {
            file: info.path.clone(),
            bytes,
            max,
        });
    }
    storage
        .read_file(&info.path, max)
        .map_err(|e| WalError::io("reading", &info.path, e))
}

/// The records after some LSN, in LSN order, one segment in memory at a time (plus the last
/// segment, which is read and checked up front).
///
/// Iterate to the end: an `Err` item (corruption, I/O) ends the iteration and must stop
/// start-up. After a complete iteration, [`Replay::next_lsn`] is the LSN to open the WAL with.
pub struct Replay {
    /// Where segments are read from.
    storage: Arc<dyn Storage>,
    /// Limits for reading.
    options: WalOptions,
    /// Segments still to read, oldest first; the last one is the WAL's last segment.
    segments: std::vec::IntoIter<SegmentInfo>,
    /// The last segment's contents, checked and truncated in [`read_from`], until reached.
    last_segment: Option<Bytes>,
    /// Where the last segment's valid frames end (`None`: the WAL has no segments).
    end: Option<SegmentEnd>,
    /// Where the last segment's frames start.
    last_frames_at: usize,
    /// The segment being read.
    current: Option<OpenSegment>,
    /// LSN the next segment must start at; `None` before the first segment read.
    expected_lsn: Option<Lsn>,
    /// Records up to this LSN are skipped.
    after_lsn: Lsn,
    /// The torn tail cut off by [`read_from`], if any.
    truncation: Option<Truncation>,
    /// Set after an error is returned, to end the iteration.
    failed: bool,
}

/// A segment being read by [`Replay`].
struct OpenSegment {
    /// Its path, for error messages.
    path: Arc<Path>,
    /// Its bytes (valid frames only, for the last segment).
    data: Bytes,
    /// Offset of the next frame.
    pos: usize,
    /// LSN the next frame must have.
    next_lsn: Lsn,
}

/// Starts replaying the WAL in `dir`: every record with LSN > `after_lsn`, in order.
///
/// Checks the last segment at once: a torn tail is cut off (its bytes zeroed and fsynced, see
/// [`Replay::truncation`]); damage that is not a torn tail is returned as
/// [`WalError::Corrupt`]. Earlier segments are checked as the iteration reaches them.
pub fn read_from(
    storage: Arc<dyn Storage>,
    dir: &Path,
    after_lsn: Lsn,
    options: &WalOptions,
) -> Result<Replay, WalError> {
    read(storage, dir, after_lsn, options, TailRepair::Cut)
}

/// Like [`read_from`], but changes nothing on disk: a torn tail is reported
/// in [`Replay::truncation`] (as what the next start would cut off) and
/// skipped in memory only. For `tokend inspect`.
pub fn read_from_read_only(
    storage: Arc<dyn Storage>,
    dir: &Path,
    after_lsn: Lsn,
    options: &WalOptions,
) -> Result<Replay, WalError> {
    read(storage, dir, after_lsn, options, TailRepair::ReportOnly)
}

/// What replay does with a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailRepair {
    /// Cut it off the file (start-up).
    Cut,
    /// Leave the file alone (inspection).
    ReportOnly,
}

fn read(
    storage: Arc<dyn Storage>,
    dir: &Path,
    after_lsn: Lsn,
    options: &WalOptions,
    repair: TailRepair,
) -> Result<Replay, WalError> {
    read_tail(storage.as_ref(), dir, options)?.replay(storage, after_lsn, options, repair)
}

/// The WAL's segments, the last one already read and checked: the part of a replay that does
/// not depend on where it starts, so a start can do it while it reads the snapshot.
pub struct Tail {
    /// Every segment, oldest first.
    segments: Vec<SegmentInfo>,
    /// The last of them, checked; `None` when there are no segments.
    last: Option<LastSegment>,
}

/// Lists the segments in `dir` and reads and checks the last one, changing nothing on disk:
/// [`Tail::replay`] then starts the replay (and cuts a torn tail, if asked).
pub fn read_tail(
    storage: &dyn Storage,
    dir: &Path,
    options: &WalOptions,
) -> Result<Tail, WalError> {
    options.validate()?;
    let segments = list_segments(storage, dir)?;
    let last = match segments.last() {
        Some(last) => Some(check_last_segment(storage, last, options)?),
        None => None,
    };
    Ok(Tail { segments, last })
}

impl Tail {
    /// [`read_from_read_only`] from this tail: every record with LSN > `after_lsn`, a torn tail
    /// only reported; `options` must be the ones the tail was read with.
    pub fn replay_read_only(
        self,
        storage: Arc<dyn Storage>,
        after_lsn: Lsn,
        options: &WalOptions,
    ) -> Result<Replay, WalError> {
        self.replay(storage, after_lsn, options, TailRepair::ReportOnly)
    }

    /// Replays every record with LSN > `after_lsn` (see [`read_from`]); `options` must be the
    /// ones the tail was read with.
    fn replay(
        self,
        storage: Arc<dyn Storage>,
        after_lsn: Lsn,
        options: &WalOptions,
        repair: TailRepair,
    ) -> Result<Replay, WalError> {
        let Tail { segments, last } = self;
        let wanted = after_lsn.saturating_add(1);
        // Start at the last segment that begins at or before the first wanted record: every
        // earlier one holds only records below that segment's first LSN.
        let start = segments
            .iter()
            .rposition(|s| s.first_lsn <= wanted)
            .unwrap_or(0);
        let segments: Vec<SegmentInfo> = segments.into_iter().skip(start).collect();
        let Some(tail) = last else {
            return Ok(Replay::empty(storage, options.clone(), after_lsn));
        };
        if let Some(first) = segments.first().filter(|f| f.first_lsn > wanted) {
            return Err(WalError::Corrupt {
                file: first.path.clone(),
                offset: 0,
                reason: format!(
                    "the oldest segment starts at LSN {} but records from LSN {wanted} are \
                     needed: LSNs {wanted}..{} are missing",
                    first.first_lsn,
                    first.first_lsn - 1
                ),
            });
        }
        if let Some(truncation) = &tail.truncation {
            if repair == TailRepair::Cut {
                repair_torn_tail(storage.as_ref(), truncation)?;
            }
        }
        Ok(Replay {
            storage,
            options: options.clone(),
            segments: segments.into_iter(),
            last_frames_at: tail.frames_at,
            end: Some(tail.end),
            last_segment: Some(Bytes::from(tail.data)),
            current: None,
            expected_lsn: None,
            after_lsn,
            truncation: tail.truncation,
            failed: false,
        })
    }
}

/// Where the frames of the WAL's last segment end, as replay found them: what
/// [`super::Wal::open_at`] needs to go on appending without reading the segment again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEnd {
    /// The segment.
    pub info: SegmentInfo,
    /// How it is laid out.
    pub layout: Layout,
    /// Bytes up to the end of its last valid frame.
    pub valid_len: u64,
    /// The LSN after its last valid frame.
    pub next_lsn: Lsn,
}

/// The last segment, checked: its valid frames, and the torn tail after them.
struct LastSegment {
    /// Its bytes, up to the end of its last valid frame (the zeros and the torn tail after it
    /// are not kept).
    data: Vec<u8>,
    /// Where its frames start.
    frames_at: usize,
    /// Where its valid frames end.
    end: SegmentEnd,
    /// What was cut off `data`, if anything.
    truncation: Option<Truncation>,
}

/// Reads and checks the last segment, telling a torn tail (cut off `data`, to be cut off the
/// file) from damage (an error): see the module docs.
fn check_last_segment(
    storage: &dyn Storage,
    last: &SegmentInfo,
    options: &WalOptions,
) -> Result<LastSegment, WalError> {
    let Scanned {
        mut data,
        layout,
        scan,
    } = read_and_scan(storage, last, options)?;
    let mut truncation = None;
    if let Some((offset, reason)) = scan.bad {
        debug_assert!(layout == Layout::TornHeader || offset == scan.valid_len);
        if let Some((later, lsn)) =
            find_later_frame(&data, offset, scan.next_lsn, options.record_bytes_max)
        {
            return Err(WalError::Corrupt {
                file: last.path.clone(),
                offset: offset as u64,
                reason: format!(
                    "{reason}; a valid record with LSN {lsn} is at byte offset {later}, \
                     so this is damage, not a torn tail"
                ),
            });
        }
        // Bytes other than zeros follow the bad frame (or it would be a clean end).
        let garbage_end = last_nonzero(&data[offset..]).map_or(offset, |i| offset + i + 1);
        assert!(
            garbage_end > offset,
            "a torn tail holds bytes that are not zeros"
        );
        truncation = Some(Truncation {
            file: last.path.clone(),
            offset: offset as u64,
            dropped_bytes: (garbage_end - offset) as u64,
            reason,
        });
    }
    // Only the valid frames are kept: in a pre-allocated segment the rest is mostly zeros, and
    // the buffer is held until replay reaches it.
    data.truncate(scan.valid_len);
    data.shrink_to_fit();
    Ok(LastSegment {
        frames_at: layout.frames_at().min(data.len()),
        end: SegmentEnd {
            info: last.clone(),
            layout,
            valid_len: scan.valid_len as u64,
            next_lsn: scan.next_lsn,
        },
        data,
        truncation,
    })
}

/// Cuts the torn tail `truncation` off its segment, durably (what [`read_from`] does itself):
/// its bytes are overwritten with zeros and fsynced, so the segment ends cleanly where its valid
/// frames do, keeps its pre-allocated length, and the next append overwrites the zeros. Done
/// before the WAL opens, so before any new record can be acknowledged; a failed fsync stops the
/// start (it is not retried).
pub fn repair_torn_tail(storage: &dyn Storage, truncation: &Truncation) -> Result<(), WalError> {
    let path = &truncation.file;
    let mut file = storage
        .open_write(path)
        .map_err(|e| WalError::io("opening to cut", path, e))?;
    let end = truncation.offset.saturating_add(truncation.dropped_bytes);
    let mut at = truncation.offset;
    while at < end {
        let n = (end - at).min(ZERO_CHUNK.len() as u64) as usize;
        file.write_all_at(at, &ZERO_CHUNK[..n])
            .map_err(|e| WalError::io("zeroing the torn tail of", path, e))?;
        at += n as u64;
    }
    file.sync().map_err(|e| WalError::io("fsyncing", path, e))
}

impl Replay {
    fn empty(storage: Arc<dyn Storage>, options: WalOptions, after_lsn: Lsn) -> Self {
        Replay {
            storage,
            options,
            segments: Vec::new().into_iter(),
            last_segment: None,
            end: None,
            last_frames_at: 0,
            current: None,
            expected_lsn: None,
            after_lsn,
            truncation: None,
            failed: false,
        }
    }

    /// The torn tail cut off when replay started, for the caller to log.
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    /// Where the last segment's valid frames end (`None`: no segments): once the torn tail (if
    /// any) is cut, [`super::Wal::open_at`] goes on from there without reading it again.
    pub fn end(&self) -> Option<&SegmentEnd> {
        self.end.as_ref()
    }

    /// The LSN to give [`super::Wal::open`] once the iteration has completed without error: one
    /// past the last record in the WAL, or past `after_lsn` when the WAL ends before it (for
    /// example when a snapshot is newer than the WAL kept without fsync).
    pub fn next_lsn(&self) -> Lsn {
        // One past the last record: an empty WAL continues at LSN 1.
        let end_next_lsn = self.end.as_ref().map_or(1, |end| end.next_lsn);
        end_next_lsn.max(self.after_lsn.saturating_add(1))
    }

    fn fail(&mut self, err: WalError) -> Option<Result<Record, WalError>> {
        self.failed = true;
        self.current = None;
        Some(Err(err))
    }

    /// Opens the next segment, checking that it starts where the previous one ended.
    fn open_next(&mut self) -> Result<bool, WalError> {
        let Some(info) = self.segments.next() else {
            return Ok(false);
        };
        if let Some(expected) = self.expected_lsn {
            if info.first_lsn != expected {
                return Err(WalError::Corrupt {
                    file: info.path,
                    offset: 0,
                    reason: format!(
                        "segment starts at LSN {} but the previous segment ended before LSN \
                         {expected}: records are missing or duplicated",
                        info.first_lsn
                    ),
                });
            }
        }
        let (data, frames_at) = if self.segments.as_slice().is_empty() {
            // The last segment was read, checked and cut in `read_from`.
            (
                self.last_segment.take().unwrap_or_default(),
                self.last_frames_at,
            )
        } else {
            let data = read_segment(self.storage.as_ref(), &info, &self.options)?;
            let layout = Layout::of(&data, &info)?;
            if layout == Layout::TornHeader {
                return Err(WalError::Corrupt {
                    file: info.path,
                    offset: 0,
                    reason: "segment header cut short (not the last segment, so not a torn \
                             creation)"
                        .into(),
                });
            }
            (Bytes::from(data), layout.frames_at())
        };
        self.current = Some(OpenSegment {
            path: Arc::from(info.path),
            data,
            pos: frames_at,
            next_lsn: info.first_lsn,
        });
        Ok(true)
    }
}

impl Iterator for Replay {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(seg) = self.current.as_mut() {
                let pos = seg.pos;
                let rest = seg.data.get(pos..).unwrap_or_default();
                if !rest.is_empty() {
                    let decoded = frame::decode(rest, self.options.record_bytes_max)
                        .map(|f| (f.lsn, f.payload.len()));
                    let err = match decoded {
                        Ok((lsn, len)) if lsn == seg.next_lsn => {
                            let payload_start = pos + FRAME_HEADER_BYTES;
                            seg.pos = payload_start + len;
                            seg.next_lsn += 1;
                            if lsn <= self.after_lsn {
                                continue;
                            }
                            let payload = seg.data.slice(payload_start..payload_start + len);
                            let file = Arc::clone(&seg.path);
                            return Some(Ok(Record { lsn, payload, file }));
                        }
                        Ok((lsn, _)) => {
                            Some(format!("LSN {lsn} where {} was expected", seg.next_lsn))
                        }
                        // Zeros after the last frame: the clean end of a pre-allocated segment.
                        Err(_) if is_zeros(rest) => None,
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(err) = err {
                        // Only earlier segments get here: the last one was cut to valid frames.
                        // Those were fsynced before the next segment was named: not a torn
                        // write.
                        let err = WalError::Corrupt {
                            file: seg.path.to_path_buf(),
                            offset: pos as u64,
                            reason: format!("{err} (not the last segment, so not a torn tail)"),
                        };
                        return self.fail(err);
                    }
                }
                self.expected_lsn = Some(seg.next_lsn);
                self.current = None;
            }
            match self.open_next() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return self.fail(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::frame::{encode_into, PayloadCrc};

    fn frames(first: Lsn, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for lsn in first..first + n {
            starts.push(out.len());
            let payload = format!("record {lsn}").into_bytes();
            encode_into(&mut out, lsn, &payload, &PayloadCrc::new(&payload));
        }
        (out, starts)
    }

    #[test]
    fn scan_stops_at_the_first_out_of_sequence_frame() {
        let (mut data, starts) = frames(10, 3);
        let (other, _) = frames(50, 1);
        data.truncate(starts[2]);
        data.extend_from_slice(&other);
        let scan = scan_segment(&data, 0, 10, 1024);
        assert_eq!(scan.valid_len, starts[2]);
        assert_eq!(scan.next_lsn, 12);
        assert_eq!(scan.bad.unwrap().0, starts[2]);
    }

    #[test]
    fn later_frame_search_finds_the_next_record_and_ignores_older_ones() {
        let (data, starts) = frames(1, 5);
        assert_eq!(
            find_later_frame(&data, starts[1] + 1, 2, 1024),
            Some((starts[2], 3))
        );
        // Only records 1 and 2 remain before LSN 6: none is "later".
        assert_eq!(find_later_frame(&data[..starts[2]], 1, 6, 1024), None);
        assert_eq!(find_later_frame(&data, 0, 1, 1024), Some((0, 1)));
        assert_eq!(find_later_frame(&data[..3], 0, 1, 1024), None);
    }

    #[test]
    fn zeros_after_the_frames_are_a_clean_end_and_other_bytes_a_bad_frame() {
        let (mut data, starts) = frames(10, 3);
        let end = data.len();
        data.resize(end + 5000, 0);
        let scan = scan_segment(&data, 0, 10, 1024);
        assert_eq!((scan.valid_len, scan.next_lsn, scan.bad), (end, 13, None));
        // Nothing after the frames (a segment of an earlier build) is a clean end too.
        let scan = scan_segment(&data[..end], 0, 10, 1024);
        assert_eq!((scan.valid_len, scan.bad), (end, None));
        // The last frame's first bytes, then zeros: a bad frame where it starts.
        let mut torn = data.clone();
        torn[starts[2] + 7..end].fill(0);
        let scan = scan_segment(&torn, 0, 10, 1024);
        assert_eq!(scan.valid_len, starts[2]);
        assert_eq!(scan.bad.map(|(at, _)| at), Some(starts[2]));
        // Zeros, then a stray byte far later: bad where the zeros start, saying where it is.
        let mut stray = data.clone();
        stray[end + 4000] = 1;
        let scan = scan_segment(&stray, 0, 10, 1024);
        let (at, reason) = scan.bad.unwrap();
        assert_eq!(at, end);
        assert!(
            reason.contains(&format!("byte offset {}", end + 4000)),
            "{reason}"
        );
    }

    #[test]
    fn later_frame_search_skips_zeros_but_finds_a_frame_at_any_offset_after_them() {
        let (frame, _) = frames(7, 1);
        for gap in 0..64 {
            for lead in [0, 1, 3, 11, 12, 13, 4096] {
                // Garbage, zeros, then a valid frame: the garbage is not a torn tail.
                let mut data = vec![0u8; lead];
                data.push(0x5a);
                data.resize(data.len() + gap, 0);
                let at = data.len();
                data.extend_from_slice(&frame);
                data.resize(data.len() + 100, 0);
                assert_eq!(
                    find_later_frame(&data, 0, 7, 1024),
                    Some((at, 7)),
                    "lead {lead} gap {gap}"
                );
                // And nothing when the frame is older than expected.
                assert_eq!(find_later_frame(&data, 0, 8, 1024), None);
            }
        }
        assert_eq!(find_later_frame(&vec![0u8; 1 << 20], 0, 1, 1024), None);
        // Frames whose first bytes are zeros: an empty payload, and an LSN whose only non-zero
        // byte is its first (byte 4 of the frame) or its last (byte 11).
        for lsn in [1, 1 << 56] {
            let mut frame = Vec::new();
            encode_into(&mut frame, lsn, b"", &PayloadCrc::new(b""));
            for gap in [0, 1, 11, 12, 4095] {
                let mut data = vec![0x77u8];
                data.resize(1 + gap, 0);
                let at = data.len();
                data.extend_from_slice(&frame);
                data.resize(data.len() + 64, 0);
                assert_eq!(
                    find_later_frame(&data, 0, lsn, 1024),
                    Some((at, lsn)),
                    "LSN {lsn} gap {gap}"
                );
            }
        }
    }
}
