//! `Application::build(config)`: the HTTP server plus the engine, restored
//! from its data dir — what `main` runs and what tests start on port 0.

use crate::admin_key::AdminKey;
use crate::api;
use crate::api::edge::{self, EdgeLimits};
use crate::api::rate_limit::{RateLimit, RateLimitSettings};
use crate::api::state::AppState;
use crate::clock::Clock;
use crate::cluster::{ClusterConfig, ClusterError, ClusterNode};
use crate::engine::homes::WorkerThreads;
use crate::engine::{ClusterEngineConfig, Engine, EngineConfig};
use crate::metrics::cluster::ClusterReadings;
use crate::metrics::store::RestoreReport;
use crate::metrics::Metrics;
use crate::snapshot::Snapshotter;
use crate::store::StoreError;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware, web, App};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Everything the application needs to start.
pub struct AppConfig {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Shards, timers, data dir.
    pub engine: EngineConfig,
    /// The admin key's digest.
    pub admin_key: AdminKey,
    /// The engine clock.
    pub clock: Arc<dyn Clock>,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// Period of automatic snapshots.
    pub snapshot_interval: Duration,
    /// A snapshot is also taken once the log grows by this many bytes.
    pub snapshot_wal_bytes: u64,
    /// Timeouts and caps of client connections.
    pub edge: EdgeLimits,
    /// Per-API-key rate limits (`RateLimitSettings::OFF`: none).
    pub rate_limit: RateLimitSettings,
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] io::Error),
    /// The data dir could not be restored.
    #[error("cannot restore the data dir: {0}")]
    Store(#[from] StoreError),
    /// The cluster could not be joined.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// A running application.
pub struct Application {
    /// The HTTP server future.
    server: Server,
    /// The address actually bound.
    addr: SocketAddr,
    /// The engine, for shutdown and for tests.
    engine: Engine,
    /// Takes periodic and size-triggered snapshots (single node).
    scheduler: Option<actix_web::rt::task::JoinHandle<()>>,
    /// The cluster this node joined (cluster mode).
    cluster: Option<Arc<ClusterNode>>,
}

impl Application {
    /// Binds the server (health routes answer at once: `/health/ready` is 503
    /// until restore ends), restores the engine, then serves everything. Must
    /// run inside an actix system (`#[actix_web::main]` or `#[actix_web::test]`).
    pub fn build(config: AppConfig) -> Result<Self, StartError> {
        let (server, addr, state, workers) = Self::bind(&config)?;
        let restore_started = Instant::now();
        let engine = match Engine::open(&config.engine, config.clock) {
            Ok(engine) => engine,
            Err(e) => {
                // Dropping the server future would leave its workers running.
                drop(server.handle().stop(false));
                return Err(e.into());
            }
        };
        state.metrics.restored(RestoreReport {
            duration: restore_started.elapsed(),
            tokens: engine.token_counts().total(),
        });
        let installed = state.engine.set(engine.clone()).is_ok();
        assert!(installed, "the engine is installed once");
        // The HTTP workers start when the server is first polled, and each
        // adopts its shards then (see `engine::homes`).
        workers.install(&engine);
        let scheduler = engine.snapshotter().map(|snapshotter| {
            actix_web::rt::spawn(Snapshotter::run_schedule(
                Arc::clone(snapshotter),
                config.snapshot_interval,
                config.snapshot_wal_bytes,
            ))
        });
        Ok(Self {
            server,
            addr,
            engine,
            scheduler,
            cluster: None,
        })
    }

    /// A node of a cluster: binds the server (`/health/ready` is 503 until
    /// the node has joined and its catalog replica caught up), joins, then
    /// serves everything; shards are taken over as the shard map assigns
    /// them. Must run inside an actix system.
    pub async fn build_cluster(
        config: AppConfig,
        cluster: ClusterConfig,
    ) -> Result<Self, StartError> {
        // Cluster shards stay on the engine's threads (`Engine::adopt`).
        let (server, addr, state, _workers) = Self::bind(&config)?;
        let started = Instant::now();
        let engine_config = ClusterEngineConfig {
            shards: usize::from(cluster.shards),
            threads: config.engine.shards,
            tombstone_retention_ms: config.engine.tombstone_retention_ms,
            timer_period: config.engine.timer_period,
            shard_mailbox_max: config.engine.shard_mailbox_max,
            keyring: Arc::clone(&config.engine.store.wal.keyring),
        };
        let node = match ClusterNode::join(cluster, engine_config, config.clock).await {
            Ok(node) => Arc::new(node),
            Err(e) => {
                drop(server.handle().stop(false));
                return Err(e.into());
            }
        };
        let engine = node.engine().clone();
        state.metrics.restored(RestoreReport {
            duration: started.elapsed(),
            tokens: 0,
        });
        let readings: Arc<dyn ClusterReadings> = node.clone();
        let _ = state.cluster.set(Arc::clone(&readings));
        state.metrics.cluster(readings);
        let installed = state.engine.set(engine.clone()).is_ok();
        assert!(installed, "the engine is installed once");
        Ok(Self {
            server,
            addr,
            engine,
            scheduler: None,
            cluster: Some(node),
        })
    }

    /// Binds and starts the HTTP server; every route but health answers 503
    /// until the engine is installed in the returned state. The workers'
    /// threads are registered in the returned [`WorkerThreads`] as they
    /// start.
    #[allow(clippy::type_complexity)]
    fn bind(
        config: &AppConfig,
    ) -> Result<(Server, SocketAddr, web::Data<AppState>, Arc<WorkerThreads>), StartError> {
        let slot = Arc::new(OnceLock::new());
        let state = web::Data::new(AppState {
            engine: Arc::clone(&slot),
            admin_key: config.admin_key.clone(),
            metrics: Metrics::new(Arc::clone(&slot)),
            cluster: OnceLock::new(),
            rate_limit: RateLimit::new(config.rate_limit, Arc::clone(&config.clock)),
        });
        let listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let server_state = state.clone();
        let body_timeout = api::body::BodyTimeout(config.edge.body_timeout);
        let workers = Arc::new(WorkerThreads::new(config.http_workers.max(1)));
        let registry = Arc::clone(&workers);
        let server = edge::server::serve(
            listener,
            config.http_workers.max(1),
            config.edge,
            move || {
                // Runs on each worker's thread as it starts.
                if let Some(thread) = actix_rt::Arbiter::try_current() {
                    registry.register(thread);
                }
                App::new()
                    .app_data(server_state.clone())
                    .app_data(body_timeout)
                    .wrap(middleware::from_fn(api::request_id::middleware))
                    .wrap(api::access_log::AccessLog)
                    // Outermost: it sees the status and the time the client gets.
                    .wrap(api::metrics::RecordRequests::new(
                        server_state.metrics.http(),
                    ))
                    .configure(api::routes)
            },
        )?;
        // Compile the request schemas now, not on the first write request
        // (which would otherwise pay for it in its latency).
        api::validate::schemas();
        Ok((server, addr, state, workers))
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through the handle, finishing in-flight requests,
    /// then flushes the log, writes a final snapshot and stops the shards.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let served = self.server.await;
        if let Some(scheduler) = &self.scheduler {
            scheduler.abort();
        }
        if let Some(cluster) = &self.cluster {
            // Hand every shard off now, so other nodes need not wait for
            // the leases to lapse.
            cluster.leave().await;
        }
        let shutdown = self.engine.shutdown().await;
        served?;
        shutdown.map_err(|e| io::Error::other(e.to_string()))
    }
}
