//! Metrics of the durable store: the WAL writer's fsyncs and batches,
//! snapshots, and the restore at start.
//!
//! The WAL writer thread and the snapshot path each own one of these and call
//! a single method per event; the scrape reads them through the engine.

use super::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds of the fsync latency histogram, seconds: from a fast NVMe flush
/// (tens of microseconds) to a stalled disk.
const FSYNC_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Bounds of the snapshot duration histogram, seconds: from an empty engine
/// to tens of millions of tokens.
const SNAPSHOT_SECONDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What the WAL writer thread records: one fsync latency per fsync, one
/// batch size per batch written (group commit shows as batches of many
/// records).
#[derive(Debug, Clone)]
pub struct WalMetrics {
    /// Duration of each fsync of a segment file (batch commits, rotations,
    /// flushes), seconds.
    pub fsync_seconds: Histogram,
    /// Records per batch written.
    pub batch_records: Histogram,
    /// Bytes per batch written (frames, headers included).
    pub batch_bytes: Histogram,
}

impl Default for WalMetrics {
    fn default() -> Self {
        Self {
            fsync_seconds: Histogram::seconds(&FSYNC_SECONDS),
            // 1, 2, 4, … 16 384 records.
            batch_records: Histogram::exponential(1, 2, 15),
            // 256 B, 1 KiB, … 64 MiB (a segment).
            batch_bytes: Histogram::exponential(256, 4, 10),
        }
    }
}

impl WalMetrics {
    /// A batch of `records` frames, `bytes` long, was written.
    pub fn batch_written(&self, records: u64, bytes: usize) {
        self.batch_records.observe(records);
        self.batch_bytes
            .observe(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

/// What snapshots record.
#[derive(Debug)]
pub struct SnapshotMetrics {
    /// Duration of each successful snapshot, from its start (captures, the
    /// wait for the log, encoding, writing, fsyncs) until it is durable.
    pub duration_seconds: Histogram,
    /// Size of the newest snapshot written, bytes (0 before the first).
    pub last_bytes: AtomicU64,
    /// Tokens in the newest snapshot written.
    pub last_tokens: AtomicU64,
    /// Snapshots that failed.
    pub failures: AtomicU64,
}

impl Default for SnapshotMetrics {
    fn default() -> Self {
        Self {
            duration_seconds: Histogram::seconds(&SNAPSHOT_SECONDS),
            last_bytes: AtomicU64::new(0),
            last_tokens: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl SnapshotMetrics {
    /// A snapshot of `bytes` holding `tokens` became durable after `elapsed`.
    pub fn written(&self, elapsed: Duration, bytes: u64, tokens: usize) {
        self.duration_seconds.observe_duration(elapsed);
        self.last_bytes.store(bytes, Ordering::Relaxed);
        self.last_tokens
            .store(u64::try_from(tokens).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A snapshot failed.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// How the restore at start went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestoreReport {
    /// From the start of restore (lock, snapshot load, WAL replay) until the
    /// shards run.
    pub duration: Duration,
    /// Tokens held after restore, tombstones included.
    pub tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_snapshots_are_recorded() {
        let wal = WalMetrics::default();
        wal.batch_written(3, 300);
        wal.batch_written(1, 40);
        let records = wal.batch_records.snapshot();
        assert_eq!(records.count, 2);
        assert_eq!(records.sum, 4.0);
        assert_eq!(wal.batch_bytes.snapshot().sum, 340.0);

        let snapshots = SnapshotMetrics::default();
        snapshots.written(Duration::from_millis(20), 4_096, 7);
        snapshots.failed();
        assert_eq!(snapshots.duration_seconds.snapshot().count, 1);
        assert_eq!(snapshots.last_bytes.load(Ordering::Relaxed), 4_096);
        assert_eq!(snapshots.last_tokens.load(Ordering::Relaxed), 7);
        assert_eq!(snapshots.failures.load(Ordering::Relaxed), 1);
    }
}
