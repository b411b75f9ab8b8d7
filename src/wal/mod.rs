//! The write-ahead log: opaque records with consecutive LSNs, framed and checksummed
//! ([`frame`]), in pre-allocated segment files ([`segment`]), appended with group commit
//! ([`Wal`]) and replayed with torn-tail recovery ([`read_from`]).
//!
//! Durability rules: with [`FsyncMode::Always`] a record is acknowledged only after it is
//! fsynced; a torn last record is dropped; damage anywhere else is an error naming the file and
//! byte offset, never a silent truncation of acknowledged data.
//!
//! The WAL stores opaque payloads; as the engine's [`Log`](crate::log::Log) it stores
//! [`LogRecord`](crate::log::LogRecord)s (see `writer`).

pub mod frame;
mod reader;
pub mod segment;
mod spare;
mod wake;
mod writer;

pub use reader::{
    read_from, read_from_read_only, read_tail, repair_torn_tail, Record, Replay, SegmentEnd, Tail,
    Truncation,
};
pub use segment::{list_segments, SegmentInfo};
pub use writer::{Wal, WalStats};

pub use crate::log::Lsn;

use crate::keyring::Keyring;
use crate::log::LogError;
use std::path::PathBuf;
use std::sync::Arc;

/// Hard ceiling for `record_bytes_max`: a frame's length field is a u32 and a record is held in
/// memory whole.
pub const RECORD_BYTES_LIMIT: usize = 1 << 30;

/// When appended records are fsynced, and so when [`Wal::wait_durable`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum FsyncMode {
    /// Acknowledge only after the record is fsynced; one fsync covers a whole batch.
    #[default]
    Always,
    /// Write each batch to the OS at once (a killed process loses nothing), acknowledge after the
    /// write, fsync every `fsync_interval_ms` (a power loss may lose that window).
    Interval,
    /// Write and acknowledge; fsync only when a segment is closed and on [`Wal::flush`].
    Never,
}

impl FsyncMode {
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Interval => "interval",
            FsyncMode::Never => "never",
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FsyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "interval" => Ok(FsyncMode::Interval),
            "never" => Ok(FsyncMode::Never),
            other => Err(format!(
                "unknown fsync mode {other:?}: expected always, interval or never"
            )),
        }
    }
}

/// Tuning and limits of a [`Wal`] (and of [`read_from`], which needs the same limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// When to fsync, hence when appends are acknowledged.
    pub fsync: FsyncMode,
    /// Period of the background fsync in [`FsyncMode::Interval`]; the window a power loss may
    /// lose.
    pub fsync_interval_ms: u64,
    /// Size of a segment file: each is pre-allocated to it (written with zeros, so that commits
    /// overwrite in place and commit no metadata), and a new one is started before a record
    /// that does not fit; a record larger than that gets a segment of its own, as long as it
    /// needs. Old records are dropped a segment at a time after a snapshot. The data dir holds
    /// at least two segments of this size (the one appended to and the next, prepared ahead).
    pub segment_bytes_max: u64,
    /// Largest payload accepted by `append` and by replay; checked before any allocation sized
    /// by a length read from disk, so a damaged length field cannot exhaust memory.
    pub record_bytes_max: usize,
    /// Most bytes of encoded records waiting for the writer thread; `append` refuses more (with
    /// [`WalError::Overloaded`]) instead of growing memory without bound when the disk is slower
    /// than the load.
    pub buffer_bytes_max: usize,
    /// Seals token values in the records appended, and opens them in the records (and, through
    /// the store's restore, the snapshots) read back; no keys: values are written plain.
    pub keyring: Arc<Keyring>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            fsync: FsyncMode::Always,
            fsync_interval_ms: 1000,
            segment_bytes_max: 64 << 20,
            record_bytes_max: 64 << 20,
            buffer_bytes_max: 256 << 20,
            keyring: Arc::new(Keyring::off()),
        }
    }
}

impl WalOptions {
    /// Checks the options against each other and the hard limits.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |msg: String| Err(WalError::InvalidOptions(msg));
        if self.record_bytes_max > RECORD_BYTES_LIMIT {
            return bad(format!(
                "record_bytes_max {} is over the limit of {RECORD_BYTES_LIMIT}",
                self.record_bytes_max
            ));
        }
        if self.segment_bytes_max == 0 {
            return bad("segment_bytes_max must be at least 1".into());
        }
        let frame_max = self.record_bytes_max + frame::FRAME_HEADER_BYTES;
        if self.buffer_bytes_max < frame_max {
            return bad(format!(
                "buffer_bytes_max {} cannot hold one record of record_bytes_max {}",
                self.buffer_bytes_max, self.record_bytes_max
            ));
        }
        if self.fsync == FsyncMode::Interval && self.fsync_interval_ms == 0 {
            return bad("fsync_interval_ms must be at least 1 in interval mode".into());
        }
        Ok(())
    }

    /// Largest segment file replay reads: a segment holds at most `segment_bytes_max` bytes,
    /// unless its only record is larger (a header and one frame); earlier builds closed a segment
    /// after the write that passed `segment_bytes_max`, so by at most one frame more.
    pub fn segment_read_bytes_max(&self) -> u64 {
        self.segment_bytes_max.saturating_add(
            (segment::HEADER_BYTES + frame::FRAME_HEADER_BYTES + self.record_bytes_max) as u64,
        )
    }
}

/// Errors of the WAL. Every variant about a file names it; corruption names the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation failed.
    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Damaged data that cannot be a torn tail: start-up must stop.
    #[error("WAL corrupt: {file} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the first bad frame in that file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An earlier write or fsync failed; nothing more is acknowledged until a restart recovers
    /// from the files.
    #[error("WAL poisoned by an earlier failure ({cause}); restart to recover")]
    Poisoned {
        /// The failure that poisoned the WAL.
        cause: Arc<str>,
    },
    /// A record larger than `record_bytes_max`.
    #[error("WAL record of {bytes} bytes is over the limit of {max}")]
    RecordTooLarge {
        /// Payload size.
        bytes: usize,
        /// `record_bytes_max`.
        max: usize,
    },
    /// More than `buffer_bytes_max` is waiting to be written; the record was not appended.
    #[error("WAL overloaded: {buffered_bytes} bytes waiting to be written, limit {max}")]
    Overloaded {
        /// Bytes waiting.
        buffered_bytes: usize,
        /// `buffer_bytes_max`.
        max: usize,
    },
    /// `wait_durable` for an LSN that was never appended.
    #[error("LSN {lsn} was never appended (next LSN is {next_lsn})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The next LSN to be assigned.
        next_lsn: Lsn,
    },
    /// `Wal::open` was asked to continue at an LSN the log already holds.
    #[error(
        "cannot continue the WAL at LSN {next_lsn}: {file} already holds records up to {last_lsn}"
    )]
    LsnBehind {
        /// The LSN asked for.
        next_lsn: Lsn,
        /// Last LSN present.
        last_lsn: Lsn,
        /// The segment holding it.
        file: PathBuf,
    },
    /// A segment file bigger than any the current options can produce.
    #[error("WAL segment {file} is {bytes} bytes, more than {max} (segment_bytes_max + one record); raise segment_bytes_max or record_bytes_max")]
    SegmentTooLarge {
        /// The segment file.
        file: PathBuf,
        /// Its size.
        bytes: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// Options that contradict each other or the hard limits.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// A segment written by a newer build, in a format this build does not read.
    #[error(
        "WAL segment {file} has format version {found}; this build reads versions up to \
         {supported}: run a tokend that reads it (nothing was changed)"
    )]
    NewerFormat {
        /// The segment file.
        file: PathBuf,
        /// Its format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The WAL's writer thread has stopped (the WAL is being dropped).
    #[error("WAL closed")]
    Closed,
}

impl From<LogError> for WalError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Poisoned { cause } => WalError::Poisoned { cause },
            LogError::Closed => WalError::Closed,
            LogError::NotAppended { lsn, next_lsn } => WalError::NotAppended { lsn, next_lsn },
            // Only a replicated log is fenced; the WAL has one writer.
            LogError::Fenced { cause } => WalError::Poisoned { cause },
        }
    }
}

impl WalError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn fsync_mode_names() {
        for mode in FsyncMode::value_variants() {
            let name = mode.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name, mode.as_str());
            assert_eq!(name.parse::<FsyncMode>().unwrap(), *mode);
        }
        assert!("sometimes".parse::<FsyncMode>().is_err());
    }

    #[test]
    fn default_options_are_valid_and_bad_ones_are_refused() {
        WalOptions::default().validate().unwrap();
        let small_buffer = WalOptions {
            buffer_bytes_max: 10,
            ..WalOptions::default()
        };
        assert!(small_buffer.validate().is_err());
        let zero_interval = WalOptions {
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 0,
            ..WalOptions::default()
        };
        assert!(zero_interval.validate().is_err());
    }
}
