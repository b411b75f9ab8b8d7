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
//! Modules depend one way: each uses only modules on lower lines
//! (`tests/layering.rs` fails on an upward edge or a cycle).
//!
//! ```text
//! app       fuzzing                 the server: HTTP, engine, snapshot schedule; fuzz targets
//! offline   api       cluster       `tokend inspect`/`compact`; HTTP; NATS cluster
//! engine                            routes to shards (here or forwarded), waits
//! store                             a data dir: lock, open, restore
//! snapshot                          captures, images, files, the snapshotter
//! shard     config                  single writers: decide, apply, append
//! wal       catalog                 the local log; accounts, keys, collections
//! log                               the seam: append, durable, poisoned; records
//! command   metrics   admin_key     commands as plain data; /metrics; admin key
//! model     timestamp
//! clock     ids       storage   malloc    keyring
//! ```
//!
//! A shard decides and appends through the [`log::Log`] seam and does no I/O
//! of its own; the engine waits on the same seam for the LSN an answer
//! depends on. [`wal`] implements the seam on local segment files;
//! [`snapshot`] and [`store`] own everything else on disk. In cluster mode
//! [`cluster`] implements it on a NATS JetStream subject per shard instead,
//! and runs the shard map that says which node holds which shard.
//!
//! - [`config`]: command line and environment (`tokend serve`).
//! - [`app`]: `Application::build(config)` — engine plus HTTP server.
//! - [`logging`]: log events to stderr as text or JSON lines (`--log-format`,
//!   `RUST_LOG`).
//! - [`api`]: the HTTP layer: routes, one extractor for a request's key,
//!   scope and body (with the per-key rate limit), planning of token
//!   creates, JSON rendering, the one mapping of errors to status codes,
//!   request ids and the request log, and the connection edge under
//!   actix-http (timeouts, connection caps, the head cap).
//! - [`engine`]: routes token operations to shards (held here, or on
//!   another node through [`engine::Remote`]) within each shard's bound on
//!   requests held (503 `OVERLOADED` past it), splits multi-shard creates,
//!   merges lists; catalog operations; owns the snapshotter; starts the
//!   shards on the HTTP workers' threads that adopt them.
//! - [`cluster`]: cluster mode on NATS JetStream: replicated shard logs
//!   fenced by the expected subject sequence, a leased shard map, takeovers
//!   and hand-offs, forwarding, the catalog replica.
//! - [`shard`]: the shard actor, its typed commands (one outcome type each),
//!   its state and timers, its compact token table (copy-on-write slot
//!   chunks), its captures, and its requests and replies as bytes.
//! - [`catalog`]: accounts, API keys and collections (lock-free reads, one
//!   writer), and their snapshot image.
//! - [`command`]: the commands that change state, as plain data shared by
//!   the deciders and the log.
//! - [`log`]: the seam every change goes through: append, durable, poisoned;
//!   the versioned log record; the one poison cell.
//! - [`wal`]: the write-ahead log: segment files with a versioned header,
//!   checksummed frames with LSNs, group commit that wakes each waiting
//!   thread once per batch, torn-tail recovery.
//! - [`snapshot`]: captures, the versioned image and its binary token
//!   sections, parallel loading, checksummed files, and the snapshotter that
//!   takes them and cuts the log.
//! - [`store`]: a data dir: its lock, opening it, and the one restore routine
//!   (read-only for `tokend inspect`, then repaired at start).
//! - [`metrics`]: the per-application metrics registry behind `GET /metrics`
//!   (served, and requests recorded, by [`api::metrics`]): a lock-free
//!   histogram, requests by route and status, tokens by status (counted by
//!   the shards), WAL fsyncs and batches, snapshots, restore; it reads the
//!   engine through [`metrics::EngineReadings`].
//! - [`model`]: accounts, keys, scopes, collections, tokens, metadata, and a
//!   token's lifecycle (holds and voided redemptions).
//! - [`ids`]: identifiers and token → shard routing.
//! - [`storage`]: the file I/O trait (and a fault-injecting implementation),
//!   and owner-only creation of data-dir files and directories.
//! - [`keyring`]: the data keys from `TOKEND_DATA_KEY` that seal token
//!   `data` and `encryption` in the WAL and snapshots.
//! - [`offline`]: `tokend inspect` and `tokend compact`.
//! - [`malloc`]: glibc allocator tuning for the server process.
//! - [`clock`]: time as an input (`SystemClock`, `ManualClock` for tests).
//! - [`timestamp`]: RFC 3339 parsing and rendering.
//! - [`admin_key`]: the admin key bootstrap.
//! - [`fuzzing`]: one entry point per fuzz target (every decoder of
//!   untrusted or on-disk bytes), shared by `fuzz/` and the corpus replay.

pub mod admin_key;
pub mod api;
pub mod app;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod engine;
pub mod fuzzing;
pub mod ids;
pub mod keyring;
pub mod log;
pub mod logging;
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
