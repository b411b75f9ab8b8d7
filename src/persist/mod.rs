//! Durability: what is logged and what is snapshotted.
//!
//! - [`record`]: the WAL record (a catalog change or a shard command);
//! - [`image`]: the snapshot image (catalog plus per-shard tokens, each with
//!   the LSN it includes);
//! - [`restore`]: snapshot image + logged records → catalog and shards.

pub mod image;
pub mod record;
pub mod restore;
