//! [`Histogram`]: a Prometheus histogram that records with atomic adds only.
//!
//! `prometheus_client`'s own histogram takes a write lock for every
//! observation. On the request path of a server answering tens of thousands
//! of requests a second on a few cores, that lock is contention for nothing:
//! this one keeps one atomic counter per bucket and an atomic sum, so an
//! observation is a binary search of a short table of integer bounds and two
//! relaxed `fetch_add`s. It is encoded through `prometheus_client`'s encoder,
//! like that crate's own metrics.
//!
//! Values are recorded as integers in a base unit (nanoseconds, records,
//! bytes) and exposed multiplied by a scale (1e-9 turns nanoseconds into the
//! seconds Prometheus expects), so no float arithmetic or CAS loop is needed
//! on the recording side.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Nanoseconds per second, the scale of duration histograms.
const NANOS_PER_SEC: f64 = 1e9;

/// A histogram with fixed buckets; clones share the same counters.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// The counters, shared by every clone (a registry holds one, the code
    /// that records another).
    inner: Arc<Inner>,
}

/// The counters of a [`Histogram`].
#[derive(Debug)]
struct Inner {
    /// Upper bounds (inclusive, as Prometheus' `le`) of the finite buckets,
    /// strictly ascending, in the recorded unit.
    bounds: Box<[u64]>,
    /// Observations per bucket, not cumulative (the encoder accumulates):
    /// one per bound, then one for `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of every observed value, in the recorded unit.
    sum: AtomicU64,
    /// Factor from the recorded unit to the exposed one (1e-9 for nanoseconds
    /// exposed as seconds, 1 for counts).
    scale: f64,
}

/// What a histogram held at one moment, in the exposed unit.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
    /// `(upper bound, observations in this bucket only)`, the last bound
    /// being `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// A histogram over integer values with these bucket bounds (strictly
    /// ascending, in the recorded unit), exposed multiplied by `scale`.
    ///
    /// # Panics
    ///
    /// When the bounds are not strictly ascending: bucket tables are
    /// constants of the program, so that is a programming error.
    pub fn new(bounds: &[u64], scale: f64) -> Self {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "histogram bounds must be strictly ascending: {bounds:?}"
        );
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds: bounds.into(),
                counts,
                sum: AtomicU64::new(0),
                scale,
            }),
        }
    }

    /// A histogram of durations, bounds given in seconds; record with
    /// [`Histogram::observe_duration`], exposed in seconds.
    pub fn seconds(bounds_seconds: &[f64]) -> Self {
        let bounds: Vec<u64> = bounds_seconds
            .iter()
            .map(|secs| (secs * NANOS_PER_SEC).round() as u64)
            .collect();
        Self::new(&bounds, 1.0 / NANOS_PER_SEC)
    }

    /// A histogram of counts (records, bytes) with `count` bounds `start`,
    /// `start * factor`, `start * factor²`, …
    pub fn exponential(start: u64, factor: u64, count: usize) -> Self {
        let bounds: Vec<u64> = std::iter::successors(Some(start), |b| b.checked_mul(factor))
            .take(count)
            .collect();
        Self::new(&bounds, 1.0)
    }

    /// Records one value (in the recorded unit): a search of the bound table
    /// and two relaxed atomic adds, no lock, no allocation.
    pub fn observe(&self, value: u64) {
        let inner = &*self.inner;
        // The first bucket whose bound is at or above the value; past the
        // last bound, the `+Inf` bucket.
        let bucket = inner.bounds.partition_point(|&bound| bound < value);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration (for histograms made by [`Histogram::seconds`]).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Runs `f` and records how long it took, whatever it returned.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = f();
        self.observe_duration(started.elapsed());
        result
    }

    /// The current counts. Observations that race with this read may be in
    /// the buckets but not yet in the sum (or the reverse); the count is the
    /// sum of the buckets, so buckets and count always agree.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .map(|&bound| bound as f64 * inner.scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum: inner.sum.load(Ordering::Relaxed) as f64 * inner.scale,
            buckets,
        }
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            snapshot.sum,
            snapshot.count,
            &snapshot.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_is_not_below_them() {
        let h = Histogram::new(&[10, 20, 40], 1.0);
        for value in [0, 10, 11, 20, 40, 41, 1_000] {
            h.observe(value);
        }
        let s = h.snapshot();
        let counts: Vec<u64> = s.buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [2, 2, 1, 2]);
        assert_eq!(s.count, 7);
        assert_eq!(s.sum, 1_122.0);
        assert_eq!(s.buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn durations_are_exposed_in_seconds() {
        let h = Histogram::seconds(&[0.001, 0.01]);
        h.observe_duration(Duration::from_micros(500));
        h.observe_duration(Duration::from_millis(5));
        h.observe_duration(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (0.001, 1));
        assert_eq!(s.buckets[1], (0.01, 1));
        assert_eq!(s.buckets[2], (f64::INFINITY, 1));
        assert!((s.sum - 2.0055).abs() < 1e-9, "sum {}", s.sum);
    }

    #[test]
    fn exponential_bounds_multiply_and_stop_before_overflow() {
        let s = Histogram::exponential(1, 4, 4).snapshot();
        let bounds: Vec<f64> = s.buckets.iter().map(|(b, _)| *b).collect();
        assert_eq!(bounds, [1.0, 4.0, 16.0, 64.0, f64::INFINITY]);
        let huge = Histogram::exponential(u64::MAX / 2, 4, 10).snapshot();
        assert_eq!(huge.buckets.len(), 2);
    }

    #[test]
    #[should_panic(expected = "strictly ascending")]
    fn unsorted_bounds_are_refused() {
        Histogram::new(&[2, 1], 1.0);
    }

    #[test]
    fn encodes_cumulative_buckets_through_the_registry() {
        let h = Histogram::new(&[1, 2], 1.0);
        h.observe(1);
        h.observe(2);
        h.observe(5);
        let mut registry = Registry::default();
        registry.register("batch_records", "Records per batch", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE batch_records histogram\n"), "{text}");
        assert!(text.contains("batch_records_count 3\n"), "{text}");
        assert!(text.contains("batch_records_sum 8.0\n"), "{text}");
        assert!(
            text.contains("batch_records_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("batch_records_bucket{le=\"2.0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("batch_records_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
    }
}
