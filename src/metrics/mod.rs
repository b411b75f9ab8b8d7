//! Operational metrics (`GET /metrics`), in the OpenMetrics text format
//! through `prometheus_client`.
//!
//! Each [`crate::app::Application`] has its own [`Metrics`] (its own
//! registry): applications started side by side in one process, as the tests
//! do, never share a counter.
//!
//! - [`histogram`]: a histogram that records with atomic adds only;
//! - [`http`]: requests by route, method and status, with latencies;
//! - [`tokens`]: tokens by status, counted by the shards;
//! - [`store`]: WAL fsyncs and batches, snapshots, restore.
//!
//! Metrics that live in the engine (tokens, WAL, snapshots) are read at
//! scrape time through [`EngineReadings`], from the same engine slot the
//! handlers use, so `/metrics` answers while the engine is still restoring,
//! with what is known then. The engine implements that trait: this module
//! knows nothing of it.

pub mod cluster;
pub mod histogram;
pub mod http;
pub mod store;
pub mod tokens;

use crate::model::Status;
use cluster::ClusterReadings;
use http::HttpMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use store::{RestoreReport, SnapshotMetrics, WalMetrics};
use tokens::StatusCounts;

/// What `/metrics` reads from the engine at each scrape.
pub trait EngineReadings: Send + Sync + 'static {
    /// Tokens held by status, as the shards last published them.
    fn token_counts(&self) -> StatusCounts;
    /// The WAL writer's fsync and batch metrics.
    fn wal_metrics(&self) -> &WalMetrics;
    /// Snapshot durations and sizes.
    fn snapshot_metrics(&self) -> &SnapshotMetrics;
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every metric name.
const PREFIX: &str = "tokend";

/// The metrics of one application.
pub struct Metrics {
    /// Every metric, for encoding.
    registry: Registry,
    /// The request families, which the HTTP workers record into.
    http: HttpMetrics,
    /// Set once restore is done.
    restore: Arc<OnceLock<RestoreReport>>,
    /// Cluster mode: the node's readings, set once it joined.
    cluster: Arc<OnceLock<Arc<dyn ClusterReadings>>>,
}

impl Metrics {
    /// The metrics of an application whose engine will be installed in
    /// `engine` once restored.
    pub fn new<E: EngineReadings>(engine: Arc<OnceLock<E>>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http = HttpMetrics::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request reaching the application to its response being ready, \
             by route pattern, method and status",
            Unit::Seconds,
            http.durations.clone(),
        );
        let restore = Arc::new(OnceLock::new());
        let cluster = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(EngineCollector {
            engine,
            restore: Arc::clone(&restore),
            cluster: Arc::clone(&cluster),
        }));
        Self {
            registry,
            http,
            restore,
            cluster,
        }
    }

    /// Cluster mode: reads the node's cluster status at each scrape (once;
    /// later calls are ignored).
    pub fn cluster(&self, readings: Arc<dyn ClusterReadings>) {
        let _ = self.cluster.set(readings);
    }

    /// The request families (each HTTP worker builds its recorder on them).
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// Records how the restore at start went (once; later calls are ignored).
    pub fn restored(&self, report: RestoreReport) {
        let _ = self.restore.set(report);
    }

    /// Every metric, as OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the engine's metrics at each scrape.
struct EngineCollector<E> {
    /// The engine, once restored (the slot the handlers use).
    engine: Arc<OnceLock<E>>,
    /// How restore went, once it is done.
    restore: Arc<OnceLock<RestoreReport>>,
    /// Cluster mode: the node's readings.
    cluster: Arc<OnceLock<Arc<dyn ClusterReadings>>>,
}

impl<E> std::fmt::Debug for EngineCollector<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector")
            .field("ready", &self.engine.get().is_some())
            .field("restore", &self.restore.get())
            .finish()
    }
}

/// Encodes one unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// Encodes one histogram.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &histogram::Histogram,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?)
}

impl<E: EngineReadings> Collector for EngineCollector<E> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let engine = self.engine.get();
        gauge(
            &mut encoder,
            "ready",
            "1 once restore is done and the shards run, 0 before.",
            None,
            u64::from(engine.is_some()),
        )?;
        if let Some(report) = self.restore.get() {
            encode_restore(&mut encoder, report)?;
        }
        let Some(engine) = engine else {
            return Ok(());
        };
        encode_tokens(&mut encoder, &engine.token_counts())?;
        if let Some(cluster) = self.cluster.get() {
            return encode_cluster(&mut encoder, &cluster.cluster_status());
        }
        encode_wal(&mut encoder, engine.wal_metrics())?;
        encode_snapshots(&mut encoder, engine.snapshot_metrics())
    }
}

/// Encodes one unlabelled counter.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = prometheus_client::metrics::counter::ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// What a cluster node holds and has done.
fn encode_cluster(
    encoder: &mut DescriptorEncoder,
    status: &cluster::ClusterStatus,
) -> Result<(), std::fmt::Error> {
    let serving = status.held.iter().filter(|h| h.serving).count();
    gauge(
        encoder,
        "cluster_shards",
        "Shards of the cluster.",
        None,
        status.shards as u64,
    )?;
    gauge(
        encoder,
        "cluster_shards_serving",
        "Shards this node holds and serves.",
        None,
        serving as u64,
    )?;
    gauge(
        encoder,
        "cluster_shards_loading",
        "Shards this node claimed and is rebuilding from their logs.",
        None,
        (status.held.len() - serving) as u64,
    )?;
    gauge(
        encoder,
        "cluster_live_nodes",
        "Live nodes as this node sees them.",
        None,
        status.live_nodes.len() as u64,
    )?;
    gauge(
        encoder,
        "cluster_catalog_sequence",
        "Stream sequence of the last catalog change this node's replica applied.",
        None,
        status.catalog_sequence,
    )?;
    gauge(
        encoder,
        "cluster_catalog_lag",
        "Catalog changes in the stream not yet applied by this node's replica.",
        None,
        status.catalog_lag,
    )?;
    counter(
        encoder,
        "cluster_lease_renewals",
        "Shard lease renewals that succeeded.",
        status.lease_renewals,
    )?;
    counter(
        encoder,
        "cluster_fenced_appends",
        "Shards dropped because an append was fenced by a newer owner.",
        status.fenced_appends,
    )?;
    counter(
        encoder,
        "cluster_takeovers",
        "Shards this node took over.",
        status.takeovers,
    )?;
    counter(
        encoder,
        "cluster_handoffs",
        "Shards this node handed to another node.",
        status.handoffs,
    )?;
    counter(
        encoder,
        "cluster_shards_lost",
        "Shards dropped because their lease lapsed or was claimed.",
        status.shards_lost,
    )?;
    counter(
        encoder,
        "cluster_forwards_sent",
        "Requests forwarded to the owners of shards held elsewhere.",
        status.forwards_sent,
    )?;
    counter(
        encoder,
        "cluster_forwards_served",
        "Requests other nodes forwarded to shards held here.",
        status.forwards_served,
    )
}

/// How the restore at start went.
fn encode_restore(
    encoder: &mut DescriptorEncoder,
    report: &RestoreReport,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "restore_duration",
        "Time the restore at start took: snapshot load, WAL replay, shard start.",
        Some(&Unit::Seconds),
        report.duration.as_secs_f64(),
    )?;
    gauge(
        encoder,
        "restore_tokens",
        "Tokens held after the restore at start, tombstones included.",
        None,
        report.tokens,
    )
}

/// Tokens by status, one series per status.
fn encode_tokens(
    encoder: &mut DescriptorEncoder,
    counts: &StatusCounts,
) -> Result<(), std::fmt::Error> {
    let mut tokens = encoder.encode_descriptor(
        "tokens",
        "Tokens held, by status (redeemed, expired and deleted ones until their \
         tombstone is purged); a token moves to expired when its expiry timer runs.",
        None,
        MetricType::Gauge,
    )?;
    for status in Status::ALL {
        let labels = [("status", status.as_str())];
        ConstGauge::new(counts.get(status)).encode(tokens.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The WAL writer's fsyncs and batches.
fn encode_wal(encoder: &mut DescriptorEncoder, wal: &WalMetrics) -> Result<(), std::fmt::Error> {
    histogram(
        encoder,
        "wal_fsync_duration",
        "Duration of each fsync of a WAL segment (group commits, rotations, flushes).",
        Some(&Unit::Seconds),
        &wal.fsync_seconds,
    )?;
    histogram(
        encoder,
        "wal_batch_records",
        "WAL records per batch written (group commit: one write, at most one fsync, \
         per batch).",
        None,
        &wal.batch_records,
    )?;
    histogram(
        encoder,
        "wal_batch",
        "Bytes per WAL batch written.",
        Some(&Unit::Bytes),
        &wal.batch_bytes,
    )
}

/// Snapshot durations, sizes and failures.
fn encode_snapshots(
    encoder: &mut DescriptorEncoder,
    snapshots: &SnapshotMetrics,
) -> Result<(), std::fmt::Error> {
    histogram(
        encoder,
        "snapshot_duration",
        "Duration of each snapshot, from its start until it is durable.",
        Some(&Unit::Seconds),
        &snapshots.duration_seconds,
    )?;
    gauge(
        encoder,
        "snapshot_last",
        "Size of the newest snapshot written by this process (0: none yet).",
        Some(&Unit::Bytes),
        snapshots.last_bytes.load(Ordering::Relaxed),
    )?;
    gauge(
        encoder,
        "snapshot_last_tokens",
        "Tokens in the newest snapshot written by this process.",
        None,
        snapshots.last_tokens.load(Ordering::Relaxed),
    )?;
    let failures = ConstCounter::new(snapshots.failures.load(Ordering::Relaxed));
    failures.encode(encoder.encode_descriptor(
        "snapshot_failures",
        "Snapshots that failed.",
        None,
        failures.metric_type(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_engine_is_restored_only_what_is_known_is_exposed() {
        /// An engine that is never installed.
        struct Restoring(WalMetrics, SnapshotMetrics);
        impl EngineReadings for Restoring {
            fn token_counts(&self) -> StatusCounts {
                StatusCounts::default()
            }
            fn wal_metrics(&self) -> &WalMetrics {
                &self.0
            }
            fn snapshot_metrics(&self) -> &SnapshotMetrics {
                &self.1
            }
        }
        let metrics = Metrics::new(Arc::new(OnceLock::<Restoring>::new()));
        let text = metrics.encode().unwrap();
        assert!(text.contains("\ntokend_ready 0\n"), "{text}");
        assert!(!text.contains("tokend_tokens"), "{text}");
        assert!(!text.contains("tokend_restore"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        metrics.restored(RestoreReport {
            duration: std::time::Duration::from_millis(1_500),
            tokens: 42,
        });
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("\ntokend_restore_duration_seconds 1.5\n"),
            "{text}"
        );
        assert!(text.contains("\ntokend_restore_tokens 42\n"), "{text}");
    }
}
