//! A shard's tokens as of one point in the log, for a snapshot.

use super::state::ShardState;
use super::table::TableCapture;
use crate::log::Lsn;

/// A shard's tokens as of one point in the log, taken in one message turn of
/// the shard. Cheap: the shard's slot chunks are shared and copied on write,
/// so the shard goes on serving while the capture is encoded elsewhere.
pub struct ShardCapture {
    /// LSN of the last record the capture includes.
    pub lsn: Lsn,
    /// The tokens as they were.
    pub table: TableCapture,
}

impl ShardCapture {
    /// Captures `state`, which includes every record up to `lsn`.
    pub fn of(state: &ShardState, lsn: Lsn) -> Self {
        Self {
            lsn,
            table: state.capture(),
        }
    }

    /// Number of tokens captured.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no token was captured.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
