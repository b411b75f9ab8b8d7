//! Snapshots: the whole engine state as of an LSN, written durably so that
//! a restart replays only the log after it.
//!
//! - [`capture`]: the components (catalog, each shard) captured one after
//!   another, each at its own LSN, and assembled into an image;
//! - [`image`]: the image — catalog, per-shard LSNs and token sections — and
//!   its versioned encoding;
//! - [`section`]: the binary encoding of one shard's tokens;
//! - [`load`]: an image back into shard states, sections decoded in parallel;
//! - [`file`](mod@file): checksummed snapshot files, written durably, the newest two
//!   kept;
//! - [`snapshotter`]: takes snapshots (on demand, on a schedule, at
//!   shutdown) and cuts the log they cover.
//!
//! A snapshot file's header carries [`FORMAT_VERSION`], which says how its
//! payload is laid out. Every version from [`FORMAT_VERSION_MIN`] up is
//! read; a newer one is refused with an error naming the file.

pub mod capture;
pub mod file;
pub mod image;
pub mod load;
pub mod section;
pub mod snapshotter;

pub use capture::EngineCapture;
pub use file::SnapshotFiles;
pub use image::SnapshotImage;
pub use snapshotter::{ShardAddresses, Snapshotter};

use crate::log::Lsn;
use std::path::PathBuf;

/// The snapshot format this build writes: a named MessagePack header, then
/// token sections whose rarely present fields are tagged (see [`image`] and
/// [`section`]).
pub const FORMAT_VERSION: u32 = 2;

/// The oldest snapshot format this build reads: version 1, a positional
/// MessagePack header and untagged token sections.
pub const FORMAT_VERSION_MIN: u32 = 1;

/// A snapshot that was written and is durable.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The LSN every component includes: the log after it restores the rest.
    pub lsn: Lsn,
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Tokens in it.
    pub tokens: usize,
}
