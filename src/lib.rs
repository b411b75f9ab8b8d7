//! tokend: a spend-once token engine.
//!
//! Accounts issue tokens into collections; each token is redeemed exactly
//! once, or expires. The engine keeps every token in memory, owned by one of
//! several shard actors (chosen by token id) that decides every change to its
//! tokens in a single order; a thin actix-web layer routes HTTP requests to
//! the owning shard.
//!
//! # Layout
//!
//! - [`config`]: command line and environment (`tokend serve`).
//! - [`app`]: `Application::build(config)` — engine plus HTTP server.
//! - [`api`]: the HTTP layer: routes, auth, request parsing and validation,
//!   JSON rendering, and the one mapping of errors to status codes.
//! - [`metrics`]: the per-application metrics registry behind `GET /metrics`
//!   (served, and requests recorded, by [`api::metrics`]): a lock-free
//!   histogram, requests by route and status, tokens by status (counted by
//!   the shards), WAL fsyncs and batches, snapshots, restore.
//! - [`engine`]: routes token operations to shards, splits multi-shard
//!   creates, merges lists; catalog operations.
//! - [`shard`]: the shard actor, its commands, its pure `apply`, its compact
//!   token table (copy-on-write slot chunks) and its expiry/purge timers.
//! - [`catalog`]: accounts, API keys and collections (lock-free reads, one
//!   writer).
//! - [`model`]: accounts, keys, scopes, collections, tokens, metadata.
//! - [`ids`]: identifiers and token → shard routing.
//! - [`persist`]: what is logged and snapshotted (binary per-shard snapshot
//!   sections), the durable store of a data dir (lock, WAL, snapshots) and
//!   parallel restore.
//! - [`wal`]: the write-ahead log: checksummed frames with LSNs in segment
//!   files, group commit, torn-tail recovery.
//! - [`snapshot_file`]: checksummed snapshot files, written durably.
//! - [`storage`]: the file I/O trait (and a fault-injecting implementation).
//! - [`offline`]: `tokend inspect` and `tokend compact`.
//! - [`malloc`]: glibc allocator tuning for the server process.
//! - [`clock`]: time as an input (`SystemClock`, `ManualClock` for tests).
//! - [`timestamp`]: RFC 3339 parsing and rendering.
//! - [`admin_key`]: the admin key bootstrap.

pub mod admin_key;
pub mod api;
pub mod app;
pub mod catalog;
pub mod clock;
pub mod command;
pub mod config;
pub mod engine;
pub mod ids;
pub mod log;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod shard;
pub mod snapshot;
pub mod storage;
pub mod store;
pub mod timestamp;
pub mod wal;
