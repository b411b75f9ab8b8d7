//! A min-heap of `(deadline, slot)` pairs, drained by the shard's timer:
//! expiry (active → expired) and tombstone purges each use one.
//!
//! Entries are never removed early: when a token is redeemed or deleted
//! before its deadline, the stale entry stays and is recognised as stale when
//! it comes due (the timer checks the slot's current token). That keeps the
//! redeem path free of this structure. An entry is 12 bytes (a binary heap
//! in one vector, no per-entry allocation) and a restore builds the heap from
//! a vector in linear time.

use super::table::SlotId;
use crate::clock::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One scheduled deadline: 12 bytes, ordered by time, then slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    /// High half of the order-preserving unsigned form of the deadline.
    at_hi: u32,
    /// Low half of it.
    at_lo: u32,
    /// The slot whose token is due.
    slot: SlotId,
}

impl Entry {
    fn new(deadline_ms: Millis, slot: SlotId) -> Self {
        // Flipping the sign bit maps i64 order onto u64 order.
        let at = (deadline_ms as u64) ^ (1 << 63);
        Self {
            at_hi: (at >> 32) as u32,
            at_lo: at as u32,
            slot,
        }
    }

    fn deadline_ms(&self) -> Millis {
        let at = (u64::from(self.at_hi) << 32) | u64::from(self.at_lo);
        (at ^ (1 << 63)) as Millis
    }
}

/// Deadlines in time order.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// Earliest on top.
    entries: BinaryHeap<Reverse<Entry>>,
}

impl Deadlines {
    /// Builds the heap from unordered `(deadline, slot)` pairs at once.
    pub fn from_unordered(pairs: impl IntoIterator<Item = (Millis, SlotId)>) -> Self {
        let entries: Vec<Reverse<Entry>> = pairs
            .into_iter()
            .map(|(at, slot)| Reverse(Entry::new(at, slot)))
            .collect();
        Self {
            entries: BinaryHeap::from(entries),
        }
    }

    /// Schedules `slot` at `deadline_ms`.
    pub fn push(&mut self, deadline_ms: Millis, slot: SlotId) {
        self.entries.push(Reverse(Entry::new(deadline_ms, slot)));
    }

    /// Removes and returns the next entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Millis) -> Option<(Millis, SlotId)> {
        let Reverse(first) = *self.entries.peek()?;
        if first.deadline_ms() > now {
            return None;
        }
        self.entries.pop();
        Some((first.deadline_ms(), first.slot))
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
        d.push(20, 1);
        d.push(10, 2);
        d.push(-5, 3);
        d.push(Millis::MAX, 4);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        assert_eq!(d.pop_due(-6), None);
        assert_eq!(d.pop_due(9), Some((-5, 3)));
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.pop_due(25), Some((10, 2)));
        assert_eq!(d.pop_due(25), Some((20, 1)));
        assert_eq!(d.len(), 1);
        let d = Deadlines::from_unordered([(7, 1), (3, 2), (Millis::MIN, 0)]);
        let mut d = d;
        assert_eq!(d.pop_due(100), Some((Millis::MIN, 0)));
        assert_eq!(d.pop_due(100), Some((3, 2)));
        assert_eq!(d.pop_due(100), Some((7, 1)));
        assert!(d.is_empty());
    }
}
