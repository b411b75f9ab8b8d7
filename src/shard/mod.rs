//! Shards: each owns a slice of the tokens (chosen by token id) and is the
//! single writer of that slice.
//!
//! - [`command`]: the serializable commands and their outcomes;
//! - [`state`]: the state and the pure `apply`;
//! - [`deadlines`]: the ordered `(deadline, id)` sets behind the timers;
//! - [`actor`]: the actix actor that serializes access to one state.

pub mod actor;
pub mod command;
pub mod deadlines;
pub mod state;

pub use actor::Shard;
pub use command::{Created, Expiry, NewToken, Outcome, Rejection, ShardCommand};
pub use state::{ListPage, ListQuery, ShardState, TimerReport};
