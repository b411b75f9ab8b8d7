//! What a cluster node reports about its part of the cluster: read by
//! `/health/ready` (the shards it holds) and `/metrics` (counters).

use serde::Serialize;

/// A shard held by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldShard {
    /// The shard.
    pub shard: usize,
    /// False while it is being taken over (rebuilt from its log).
    pub serving: bool,
    /// The ownership epoch.
    pub epoch: u64,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Shards of the cluster.
    pub shards: usize,
    /// Live nodes, as this node sees them.
    pub live_nodes: Vec<String>,
    /// Shards held here.
    pub held: Vec<HeldShard>,
    /// The catalog stream sequence this node's replica has applied.
    pub catalog_sequence: u64,
    /// Catalog messages not yet applied by this node's replica (its lag
    /// behind the catalog subject). A shard's owner is its subject's only
    /// writer, so it has no lag of its own.
    pub catalog_lag: u64,
    /// Lease renewals that succeeded.
    pub lease_renewals: u64,
    /// Shards lost to a fenced append.
    pub fenced_appends: u64,
    /// Takeovers completed.
    pub takeovers: u64,
    /// Shards handed to another node.
    pub handoffs: u64,
    /// Shards dropped because a lease lapsed or was taken.
    pub shards_lost: u64,
    /// Requests forwarded to other owners.
    pub forwards_sent: u64,
    /// Requests served for other nodes.
    pub forwards_served: u64,
}

/// Reads a node's cluster status at each scrape.
pub trait ClusterReadings: Send + Sync + 'static {
    /// The status now.
    fn cluster_status(&self) -> ClusterStatus;
}
