//! The cluster suite's harness: real nats-servers ([`NatsCluster`]), real
//! `tokend` nodes in cluster mode ([`TokendNode`]), both together
//! ([`Cluster`]), and an HTTP client for the nodes' API ([`Api`]).
//!
//! Everything runs on 127.0.0.1 on ports picked free at start, with its
//! files in temporary directories, so tests can run side by side with a
//! developer's `make cluster`. Processes are killed when their handle is
//! dropped, so a failing test leaves nothing behind.
//!
//! Process control (start, kill, signals, readiness waits) is synchronous:
//! call it from a plain `#[test]` or from a
//! `#[tokio::test(flavor = "multi_thread")]`, where it blocks one worker
//! thread while it waits. The HTTP client and `async-nats` are async.
//!
//! The nats-server binary comes from `TOKEND_NATS_SERVER`, which `make
//! test-cluster` sets to the pinned build it installs (tools/nats/install).
//!
//! # Writing a tokend cluster test
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn a_redeem_on_one_node_is_seen_on_another() {
//!     let mut cluster = Cluster::start(3, 3, 8); // 3 nats-servers, 3 nodes, 8 shards
//!     let key = cluster.api(0).tenant_key("acme").await;
//!     let collection = cluster.api(0).create_collection(&key, "gifts").await;
//!     let token = cluster.api(0).create_token(&key, &collection).await;
//!     cluster.api(1).redeem(&key, &token).await.expect(200);
//!     cluster.node_mut(1).kill9();
//!     cluster.api(2).redeem(&key, &token).await.expect(409);
//!     cluster.node_mut(1).restart();
//!     cluster.node(1).wait_ready(READY_TIMEOUT);
//! }
//! ```
//!
//! Faults: [`TokendNode::kill9`], [`TokendNode::sigstop`] /
//! [`TokendNode::sigcont`] (a paused node, as in a long GC pause or a
//! partition of its process), [`TokendNode::terminate`] (graceful),
//! [`NatsCluster::kill`] / [`NatsCluster::start_again`] (one NATS server),
//! [`NatsCluster::stop_all`] / [`NatsCluster::start_all_again`] (all of
//! them). A test module goes in `main.rs` beside the others.

// Parts of the harness serve tests that use only some of it.
#![allow(dead_code)]

mod api;
mod nats;
mod node;

// The harness's API, whether or not a test uses each part yet.
#[allow(unused_imports)]
pub use api::{Api, Reply, REQUEST_TIMEOUT};
#[allow(unused_imports)]
pub use nats::{nats_server_binary, NatsCluster};
#[allow(unused_imports)]
pub use node::{NodeConfig, TokendNode};

// Shared with the HTTP suite's cluster mode (tests/common/net.rs).
pub use crate::net::{free_ports, http_get, tail};
use std::path::PathBuf;
use std::time::Duration;

/// The admin key of the nodes a [`Cluster`] starts.
pub const ADMIN_KEY: &str = "cluster-tests-admin-key-0123456789";
/// The `--cluster-name` of the nodes a [`Cluster`] starts.
pub const CLUSTER_NAME: &str = "test";
/// How long a node or a NATS cluster may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping process may take to exit before it is killed.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// NATS servers and tokend nodes in cluster mode on them.
pub struct Cluster {
    nats: NatsCluster,
    nodes: Vec<TokendNode>,
    shards: u16,
    /// Holds the nodes' data dirs; declared last so it is removed after
    /// the processes are killed.
    dirs: tempfile::TempDir,
}

impl Cluster {
    /// Starts `nats` nats-servers, then `nodes` tokend nodes with
    /// `--cluster-shards shards` (and `--cluster-allow-unsafe` when there
    /// are fewer than 3 NATS servers), and waits until every node is ready.
    pub fn start(nats: usize, nodes: usize, shards: u16) -> Cluster {
        Self::on(NatsCluster::start(nats), nodes, shards)
    }

    /// Like [`Cluster::start`], on NATS servers the test started itself.
    pub fn on(nats: NatsCluster, nodes: usize, shards: u16) -> Cluster {
        let mut cluster = Cluster {
            nats,
            nodes: Vec::new(),
            shards,
            dirs: tempfile::Builder::new()
                .prefix("tokend-cluster-nodes-")
                .tempdir()
                .expect("a temporary directory"),
        };
        for _ in 0..nodes {
            cluster.add_node_unready();
        }
        cluster.wait_all_ready(READY_TIMEOUT);
        cluster
    }

    /// The configuration node `index` (0-based, node id `n{index+1}`) is
    /// started with: the cluster's NATS servers, shards and admin key, a
    /// data dir of its own.
    pub fn node_config(&self, index: usize) -> NodeConfig {
        let mut config = NodeConfig::new(
            self.nats.urls(),
            &format!("n{}", index + 1),
            CLUSTER_NAME,
            self.shards,
            self.dirs.path().join(format!("n{}", index + 1)),
        );
        if self.nats.len() < 3 {
            config = config.allow_unsafe();
        }
        config
    }

    fn add_node_unready(&mut self) -> usize {
        let index = self.nodes.len();
        let node = TokendNode::start(self.node_config(index));
        self.nodes.push(node);
        index
    }

    /// Starts one more node (the next node id) and waits until it is ready;
    /// returns its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.add_node_unready();
        self.nodes[index].wait_ready(READY_TIMEOUT);
        index
    }

    /// Starts a node with a configuration of the test's own (see
    /// [`Cluster::node_config`]) without waiting; returns its index.
    pub fn add_node_with(&mut self, config: NodeConfig) -> usize {
        self.nodes.push(TokendNode::start(config));
        self.nodes.len() - 1
    }

    /// Waits until every running node answers `/health/ready` with 200.
    pub fn wait_all_ready(&self, timeout: Duration) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            node.wait_ready(timeout);
        }
    }

    /// The cluster's shard count.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The NATS servers.
    pub fn nats(&self) -> &NatsCluster {
        &self.nats
    }

    /// The NATS servers, to kill and restart.
    pub fn nats_mut(&mut self) -> &mut NatsCluster {
        &mut self.nats
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> &TokendNode {
        &self.nodes[index]
    }

    /// Node `index`, to stop, signal or restart.
    pub fn node_mut(&mut self, index: usize) -> &mut TokendNode {
        &mut self.nodes[index]
    }

    /// Every node.
    pub fn nodes(&self) -> &[TokendNode] {
        &self.nodes
    }

    /// A client for node `index`, with the admin key.
    pub fn api(&self, index: usize) -> Api {
        Api::new(&self.nodes[index].base_url(), ADMIN_KEY)
    }

    /// The admin key.
    pub fn admin_key(&self) -> &str {
        ADMIN_KEY
    }

    /// Where the nodes' data dirs are.
    pub fn data_root(&self) -> PathBuf {
        self.dirs.path().to_path_buf()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!(
                "===== tokend {} =====\n{}\n",
                node.node_id(),
                node.log()
            ));
        }
        out.push_str(&self.nats.logs());
        out
    }
}
