//! `tokend`: a spend-once token engine.
//!
//! This part of the crate holds the engine-agnostic durability primitives: a fault-injectable
//! [`storage`] trait, the group-committing write-ahead log ([`wal`]) and checksummed snapshot
//! files ([`snapshot_file`]). Payloads are opaque bytes to all of them.

pub mod snapshot_file;
pub mod storage;
pub mod wal;
