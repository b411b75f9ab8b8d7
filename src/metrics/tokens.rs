//! Tokens by status: counted by each shard where its state changes, and
//! published for scrapes without ever asking the shard.
//!
//! A shard is the single writer of its tokens, so it keeps its counts in
//! plain integers ([`StatusCounts`], a field of its state) updated by the same
//! code that changes a status: create, redeem, delete, the expiry timer,
//! purges and restore. After each message turn that changed something the
//! shard copies them into its [`TokenGauges`] (a handful of relaxed stores),
//! which a scrape reads from any thread. Restore rebuilds the counts with the
//! tokens, so they survive a restart.
//!
//! The counts follow the status the shard has applied: a token past its
//! `expiresAt` counts as active (and a held one whose hold lapsed as held)
//! until the timers move it (every 100 ms in `tokend serve`), although
//! reads already show its new status.

use crate::model::Status;
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// The slot of each status in the count arrays, in [`Status::ALL`] order.
fn slot(status: Status) -> usize {
    match status {
        Status::Active => 0,
        Status::Held => 1,
        Status::Redeemed => 2,
        Status::Expired => 3,
        Status::Deleted => 4,
    }
}

/// Tokens held per status (tombstones included until purged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Count per status, indexed by [`slot`]; plain integers because only
    /// the owning shard's thread changes them.
    counts: [u64; Status::ALL.len()],
}

impl StatusCounts {
    /// A token of `status` appeared (created, restored).
    pub fn add(&mut self, status: Status) {
        self.counts[slot(status)] += 1;
    }

    /// A token of `status` went away (purged, or replaced after its purge).
    pub fn remove(&mut self, status: Status) {
        let count = &mut self.counts[slot(status)];
        debug_assert!(
            *count > 0,
            "removing a {status:?} token that was never counted"
        );
        *count = count.saturating_sub(1);
    }

    /// A token changed status.
    pub fn moved(&mut self, from: Status, to: Status) {
        self.remove(from);
        self.add(to);
    }

    /// Tokens of `status`.
    pub fn get(&self, status: Status) -> u64 {
        self.counts[slot(status)]
    }

    /// Tokens of every status.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another shard's counts to these.
    pub fn add_all(&mut self, other: &StatusCounts) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }
}

/// One shard's [`StatusCounts`] as other threads see them.
///
/// A sequence lock keeps a scrape from reading a redeem half-published (the
/// active count already lowered, the redeemed count not yet raised): the
/// shard, the only writer, makes `version` odd while it stores, and a reader
/// retries until it reads the same even version before and after.
#[derive(Debug, Default)]
pub struct TokenGauges {
    /// Even when the counts are consistent; bumped before and after each
    /// publication.
    version: AtomicU64,
    /// The published counts, indexed by [`slot`].
    counts: [AtomicU64; Status::ALL.len()],
}

impl TokenGauges {
    /// Publishes `counts`. Only the owning shard calls this (single writer).
    pub fn publish(&self, counts: &StatusCounts) {
        let version = self.version.load(Ordering::Relaxed);
        self.version
            .store(version.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd version before the stores of the counts.
        fence(Ordering::Release);
        for (gauge, count) in self.counts.iter().zip(counts.counts) {
            gauge.store(count, Ordering::Relaxed);
        }
        self.version
            .store(version.wrapping_add(2), Ordering::Release);
    }

    /// The last published counts, consistent with each other.
    pub fn read(&self) -> StatusCounts {
        loop {
            let before = self.version.load(Ordering::Acquire);
            let mut counts = [0; Status::ALL.len()];
            for (count, gauge) in counts.iter_mut().zip(&self.counts) {
                *count = gauge.load(Ordering::Relaxed);
            }
            // Orders the loads of the counts before the second version load.
            fence(Ordering::Acquire);
            let after = self.version.load(Ordering::Relaxed);
            if before == after && before.is_multiple_of(2) {
                return StatusCounts { counts };
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_follow_moves_and_sum_over_shards() {
        let mut a = StatusCounts::default();
        a.add(Status::Active);
        a.add(Status::Active);
        a.moved(Status::Active, Status::Redeemed);
        let mut b = StatusCounts::default();
        b.add(Status::Deleted);
        b.add(Status::Expired);
        b.remove(Status::Expired);
        a.add_all(&b);
        assert_eq!(a.get(Status::Active), 1);
        assert_eq!(a.get(Status::Redeemed), 1);
        assert_eq!(a.get(Status::Expired), 0);
        assert_eq!(a.get(Status::Deleted), 1);
        assert_eq!(a.total(), 3);
    }

    #[test]
    fn readers_never_see_a_half_published_move() {
        let gauges = Arc::new(TokenGauges::default());
        let mut counts = StatusCounts::default();
        for _ in 0..1_000 {
            counts.add(Status::Active);
        }
        gauges.publish(&counts);
        let reader = {
            let gauges = Arc::clone(&gauges);
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    assert_eq!(gauges.read().total(), 1_000);
                }
            })
        };
        for _ in 0..1_000 {
            counts.moved(Status::Active, Status::Redeemed);
            gauges.publish(&counts);
        }
        reader.join().unwrap();
        assert_eq!(gauges.read().get(Status::Redeemed), 1_000);
    }
}
