//! An ordered set of `(deadline, token id)` pairs, drained by the shard's
//! timer: expiry (active → expired) and tombstone purges each use one.
//!
//! Entries are never removed early: when a token is redeemed or deleted
//! before its deadline, the stale entry stays and is recognised as stale when
//! it comes due. That keeps the redeem path free of this structure.

use crate::clock::Millis;
use crate::ids::TokenId;
use std::collections::BTreeSet;

/// Deadlines in time order.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// Ordered by deadline, then id (ids make equal deadlines distinct).
    entries: BTreeSet<(Millis, TokenId)>,
}

impl Deadlines {
    /// Schedules `id` at `deadline_ms`.
    pub fn push(&mut self, deadline_ms: Millis, id: TokenId) {
        self.entries.insert((deadline_ms, id));
    }

    /// Removes and returns the next entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, TokenId)> {
        let first = *self.entries.first()?;
        if first.0 > now {
            return None;
        }
        self.entries.pop_first()
    }

    /// How many entries are scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut d = Deadlines::default();
        let (a, b) = (TokenId::random(), TokenId::random());
        d.push(20, a);
        d.push(10, b);
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.pop_due(25), Some((10, b)));
        assert_eq!(d.pop_due(25), Some((20, a)));
        assert!(d.is_empty());
    }
}
