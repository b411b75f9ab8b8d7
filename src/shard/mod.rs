//! Shards: each owns a slice of the tokens (chosen by token id) and is the
//! single writer of that slice. A shard decides, applies and logs through
//! the [`Log`](crate::log::Log) seam; it does no I/O of its own.
//!
//! - [`command`]: how each command applies, with its own outcome type;
//! - [`outcome`]: the outcomes and the rejection reasons;
//! - [`state`]: the state, its reads, and its timers (token expiry, hold
//!   expiry, purges); its `lifecycle` part decides holds, captures,
//!   releases, voids and the dry-run redeem behind validation;
//! - [`table`]: the compact token storage (fixed-size slots in shared chunks);
//! - [`deadlines`]: the `(deadline, slot)` heaps behind the timers;
//! - [`capture`]: a shard's tokens as of an LSN, for snapshots;
//! - [`actor`]: the actix actor that serializes access to one state;
//! - [`wire`]: requests and replies as bytes, for a shard on another node.

pub mod actor;
pub mod capture;
pub mod command;
pub mod deadlines;
pub mod outcome;
pub mod state;
pub mod table;
pub mod wire;

pub use actor::Shard;
pub use capture::ShardCapture;
pub use command::TokenCommand;
pub use outcome::{Changed, Checked, Created, Deleted, Redeemed, Rejection};
pub use state::{ListPage, ListQuery, ShardState, TimerReport};
