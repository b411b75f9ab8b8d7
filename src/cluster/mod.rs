//! Cluster mode: several tokend nodes on one NATS JetStream cluster.
//!
//! Each shard stays a single-writer actor; what changes is where its log
//! lives and who runs it. A shard's log is its subject of one replicated
//! stream, appended by one owner at a time with the expected last subject
//! sequence, so a stale owner cannot append (it is *fenced*). A shard map
//! with leases in a key-value bucket says which node should run each shard;
//! any node accepts any request and forwards what belongs to a shard held
//! elsewhere. The catalog is one more subject, tailed by every node.
//!
//! # Layout
//!
//! - [`names`]: the stream, subjects and buckets of a cluster;
//! - [`setup`]: connecting, the safety checks (server version, replicas,
//!   storage), the cluster's fixed shard count;
//! - [`message`]: one message of a replicated log (a group-commit batch, or
//!   a claim marker);
//! - [`replicated_log`]: a shard's log behind the [`Log`](crate::log::Log)
//!   seam: group commit, fencing, retry while the stream has no leader;
//! - [`catalog_log`]: the catalog replica every node tails, and catalog
//!   writes decided by compare-and-set on its subject;
//! - [`snapshots`]: shard snapshots in the object store, and the purge of
//!   the subject below them;
//! - [`takeover`]: rebuilding a shard from its snapshot and subject, and
//!   claiming it;
//! - [`ownership`]: the shard map, leases, claims, hand-offs;
//! - [`forward`]: requests for shards held elsewhere, over NATS
//!   request-reply;
//! - [`inspect`]: `tokend inspect --cluster`: the stream, the shard map and
//!   the nodes, read without changing anything.

pub mod catalog_log;
pub mod forward;
pub mod inspect;
pub mod message;
pub mod names;
pub mod ownership;
pub mod replicated_log;
pub mod setup;
pub mod snapshots;
pub mod takeover;

use crate::clock::Clock;
use crate::engine::{ClusterEngineConfig, Engine};
use crate::keyring::Keyring;
use catalog_log::CatalogReplica;
use forward::{ForwardCounts, Forwarder};
use ownership::{LeaseTimes, Ownership, Settings};
use snapshots::ShardSnapshots;
use std::sync::Arc;

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS urls (`nats://host:port`).
    pub urls: Vec<String>,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// The cluster's name: several clusters can share one NATS.
    pub name: String,
    /// Shards of the cluster (fixed when it is created).
    pub shards: u16,
    /// Replicas of the stream and buckets, when this node creates them.
    pub replicas: usize,
    /// Accept settings that can lose acknowledged writes (development).
    pub allow_unsafe: bool,
    /// Lease timing.
    pub lease: LeaseTimes,
    /// How often each shard is snapshotted (when it changed).
    pub snapshot_interval: std::time::Duration,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A flag is wrong, or disagrees with the cluster.
    #[error("{0}")]
    Config(String),
    /// NATS could not be reached or refused a setup step.
    #[error("NATS: {0}")]
    Nats(String),
    /// The servers or the stream could lose acknowledged writes.
    #[error("refusing an unsafe cluster: {0}")]
    Unsafe(String),
}

/// A node that joined a cluster.
pub struct ClusterNode {
    /// The engine, whose shards the ownership fills and empties.
    engine: Engine,
    /// This node's part of the shard map.
    ownership: Arc<Ownership>,
    /// The catalog replica.
    catalog: Arc<CatalogReplica>,
    /// Forwarding counts.
    forward_counts: Arc<ForwardCounts>,
    /// Shards of the cluster.
    shards: usize,
}

impl ClusterNode {
    /// Connects, checks, catches the catalog up and starts taking part in
    /// the shard map. Must run inside an actix system.
    pub async fn join(
        config: ClusterConfig,
        engine_config: ClusterEngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClusterError> {
        assert_eq!(engine_config.shards, usize::from(config.shards));
        let jet = setup::connect(&config).await?;
        let snapshots = open_snapshots(&jet, config.replicas, &engine_config.keyring).await?;
        let catalog = CatalogReplica::new(jet.clone());
        actix_web::rt::spawn(Arc::clone(&catalog).tail());
        catalog
            .catch_up()
            .await
            .map_err(|e| ClusterError::Nats(format!("catalog: {e}")))?;
        let forward_counts = Arc::new(ForwardCounts::default());
        let engine = Engine::open_cluster(
            &engine_config,
            clock,
            Arc::clone(catalog.catalog()),
            Arc::new(Arc::clone(&catalog)),
            Arc::new(Forwarder::new(
                jet.clone(),
                Arc::clone(&catalog),
                Arc::clone(&forward_counts),
            )),
        );
        let ownership = Ownership::start(
            jet,
            config.node_id.clone(),
            engine.clone(),
            Arc::clone(&catalog),
            snapshots,
            Settings {
                lease: config.lease,
                retention_ms: engine_config.tombstone_retention_ms,
                snapshot_interval: config.snapshot_interval,
            },
            Arc::clone(&forward_counts),
        );
        Ok(Self {
            engine,
            ownership,
            catalog,
            forward_counts,
            shards: engine_config.shards,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Hands every shard off and leaves the nodes bucket (graceful stop).
    pub async fn leave(&self) {
        self.ownership.leave().await;
    }
}

/// Opens the snapshot store, retrying while a new bucket's leader is being
/// elected (nodes starting together race to create it).
async fn open_snapshots(
    jet: &setup::Jet,
    replicas: usize,
    keyring: &Arc<Keyring>,
) -> Result<ShardSnapshots, ClusterError> {
    let started = tokio::time::Instant::now();
    loop {
        match ShardSnapshots::open(
            &jet.js,
            jet.stream.clone(),
            &jet.names,
            replicas,
            Arc::clone(keyring),
        )
        .await
        {
            Ok(snapshots) => return Ok(snapshots),
            Err(e) if started.elapsed() < std::time::Duration::from_secs(30) => {
                tracing::info!(error = %e, "snapshot store not available yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(ClusterError::Nats(e)),
        }
    }
}

impl crate::metrics::cluster::ClusterReadings for ClusterNode {
    /// What this node holds and has done, for `/health/ready` and
    /// `/metrics`.
    fn cluster_status(&self) -> crate::metrics::cluster::ClusterStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let counts = &self.ownership.counts;
        crate::metrics::cluster::ClusterStatus {
            shards: self.shards,
            live_nodes: self.ownership.live_nodes(),
            held: self
                .ownership
                .view()
                .into_iter()
                .map(|v| crate::metrics::cluster::HeldShard {
                    shard: v.shard,
                    serving: v.serving,
                    epoch: v.epoch,
                })
                .collect(),
            catalog_sequence: self.catalog.applied(),
            catalog_lag: self.catalog.lag(),
            lease_renewals: counts.renewals.load(Relaxed),
            fenced_appends: counts.fenced.load(Relaxed),
            takeovers: counts.takeovers.load(Relaxed),
            handoffs: counts.handoffs.load(Relaxed),
            shards_lost: counts.lost.load(Relaxed),
            forwards_sent: self.forward_counts.sent.load(Relaxed),
            forwards_served: self.forward_counts.served.load(Relaxed),
        }
    }
}
