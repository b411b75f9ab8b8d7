//! Shards: each owns a slice of the tokens (chosen by token id) and is the
//! single writer of that slice.
//!
//! - [`command`]: the serializable commands and their outcomes;
//! - [`state`]: the state and the pure `apply`;
//! - [`table`]: the compact token storage (fixed-size slots in shared chunks);
//! - [`deadlines`]: the `(deadline, slot)` heaps behind the timers;
//! - [`actor`]: the actix actor that serializes access to one state.

pub mod actor;
pub mod command;
pub mod deadlines;
pub mod state;
pub mod table;

pub use actor::Shard;
pub use command::{Created, Expiry, NewToken, Outcome, Rejection, ShardCommand};
pub use state::{ListPage, ListQuery, ShardState, TimerReport};
