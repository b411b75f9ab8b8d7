//! Durability: what is logged and what is snapshotted.
//!
//! - [`record`]: the WAL record (a catalog change or a shard command);
//! - [`image`]: the snapshot image (catalog plus per-shard tokens, each with
//!   the LSN it includes);
//! - [`section`]: the binary encoding of one shard's tokens in an image;
//! - [`lock`]: one process per data dir;
//! - [`restore`]: snapshot image + logged records → catalog and shards;
//! - [`store`]: a data dir's lock, log and snapshots, opened with restore.

pub mod image;
pub mod lock;
pub mod record;
pub mod restore;
pub mod section;
pub mod store;
