//! Starts the application on a free port with a manual clock and offers a
//! client for its HTTP API. Every response that passes through [`TestApp`]
//! is checked for an `X-Request-Id` header that no earlier response of the
//! same app carried.
//!
//! # Cluster mode
//!
//! With `TOKEND_TEST_CLUSTER` set, every app is a 3-node cluster instead of
//! one node: three in-process cluster nodes ([`Application::build_cluster`])
//! sharing the manual clock, on a cluster name of their own, and requests
//! go to the nodes in turn, so every request may be forwarded and every
//! catalog read comes from a replica. The variable holds the NATS urls
//! (comma-separated), or `auto`: then one 3-server NATS cluster (the
//! cluster suite's harness, with the nats-server of `TOKEND_NATS_SERVER`)
//! is started for the whole test binary and stopped when it exits. Builder
//! options that have no meaning in a cluster (a data dir, storage faults,
//! WAL options) panic in cluster mode. `make test-cluster` runs the
//! modules that use none of them this way.

use futures_util::future::join_all;
use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokend::admin_key::AdminKey;
use tokend::api::edge::EdgeLimits;
use tokend::api::rate_limit::RateLimitSettings;
use tokend::app::{AppConfig, Application, StartError};
use tokend::clock::ManualClock;
use tokend::cluster::names::Names;
use tokend::cluster::ownership::LeaseTimes;
use tokend::cluster::ClusterConfig;
use tokend::config::SHARD_MAILBOX_MAX_DEFAULT;
use tokend::engine::{Engine, EngineConfig};
use tokend::storage::{FsStorage, Storage};
use tokend::store::StoreConfig;
use tokend::wal::WalOptions;

/// The admin key every test app is started with.
pub const ADMIN: &str = "integration-tests-admin-key";
/// The clock's start: 2026-01-17T18:00:00.000Z.
pub const T0: i64 = 1_768_672_800_000;
/// `T0` as the API renders it.
pub const T0_TEXT: &str = "2026-01-17T18:00:00.000Z";
/// One second, in the clock's unit.
pub const SECOND: i64 = 1_000;
/// One day, in the clock's unit.
pub const DAY: i64 = 24 * 3600 * SECOND;
/// The tombstone retention apps start with unless told otherwise (30 days).
pub const RETENTION_DEFAULT_MS: i64 = 30 * DAY;

/// How a test app is shaped.
pub struct TestAppBuilder {
    shards: usize,
    retention_ms: i64,
    data_dir: Option<Arc<tempfile::TempDir>>,
    storage: Option<Arc<dyn Storage>>,
    wal: Option<WalOptions>,
    edge: EdgeLimits,
    shard_mailbox_max: usize,
    rate_limit: RateLimitSettings,
    http_workers: usize,
    snapshot_interval: Option<Duration>,
}

impl TestAppBuilder {
    /// Number of HTTP worker threads (1 unless a test is about them).
    pub fn http_workers(mut self, workers: usize) -> Self {
        self.http_workers = workers;
        self
    }

    /// Number of shard actors.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// How long tombstones stay readable.
    pub fn retention_ms(mut self, retention_ms: i64) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Serves from this data dir (e.g. the one of a stopped app).
    pub fn data_dir(mut self, dir: Arc<tempfile::TempDir>) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Does file I/O through `storage` (fault injection).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// WAL options (limits); fsync stays `always` unless changed here.
    pub fn wal(mut self, wal: WalOptions) -> Self {
        self.wal = Some(wal);
        self
    }

    /// Connection timeouts and caps (production defaults unless changed).
    pub fn edge(mut self, edge: EdgeLimits) -> Self {
        self.edge = edge;
        self
    }

    /// Requests one shard may hold at once (`--shard-mailbox-max`).
    pub fn shard_mailbox_max(mut self, max: usize) -> Self {
        self.shard_mailbox_max = max;
        self
    }

    /// Takes periodic snapshots at this interval (else only when a test asks).
    pub fn snapshot_interval(mut self, interval: Duration) -> Self {
        self.snapshot_interval = Some(interval);
        self
    }

    /// Per-API-key rate limits (`--rate-limit-per-sec`, `--rate-limit-burst`).
    pub fn rate_limit(mut self, per_sec: u32, burst: u32) -> Self {
        self.rate_limit = RateLimitSettings { per_sec, burst };
        self
    }

    /// Builds the application and serves it in the background.
    pub async fn spawn(self) -> TestApp {
        match self.try_spawn().await {
            Ok(app) => app,
            Err(e) => panic!("the application builds: {e}"),
        }
    }

    /// Builds the application and serves it in the background, or says why
    /// it does not start.
    pub async fn try_spawn(self) -> Result<TestApp, StartError> {
        if let Some(urls) = cluster_urls() {
            return self.try_spawn_cluster(urls).await;
        }
        let clock = Arc::new(ManualClock::new(T0));
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("a temporary data dir")));
        let store = StoreConfig {
            data_dir: data_dir.path().to_path_buf(),
            // fsync `always`, as in production.
            wal: self.wal.clone().unwrap_or_default(),
            storage: self.storage.clone().unwrap_or_else(|| Arc::new(FsStorage)),
        };
        let application = Application::build(self.config(&clock, store))?;
        Ok(TestApp::serving(
            vec![Node::serve(application)],
            clock,
            data_dir,
            None,
        ))
    }

    /// The configuration of one node; `shards` is the number of shard
    /// actors (threads, in a cluster).
    fn config(&self, clock: &Arc<ManualClock>, store: StoreConfig) -> AppConfig {
        AppConfig {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            engine: EngineConfig {
                shards: self.shards,
                tombstone_retention_ms: self.retention_ms,
                // Only explicit `run_timers()` calls run the timers.
                timer_period: Duration::from_secs(3600),
                store,
                shard_mailbox_max: self.shard_mailbox_max,
            },
            admin_key: AdminKey::from_key(ADMIN),
            clock: clock.clone(),
            http_workers: self.http_workers,
            // Snapshots only when a test asks for them.
            snapshot_interval: self
                .snapshot_interval
                .unwrap_or(Duration::from_secs(24 * 3600)),
            snapshot_wal_bytes: u64::MAX,
            edge: self.edge,
            rate_limit: self.rate_limit,
        }
    }

    /// Three cluster nodes on the NATS servers `urls`, on a cluster name no
    /// other app uses; returns once the cluster is settled.
    async fn try_spawn_cluster(self, urls: Vec<String>) -> Result<TestApp, StartError> {
        for (set, option) in [
            (
                self.data_dir.is_some(),
                "data_dir (the data dir of a stopped app)",
            ),
            (self.storage.is_some(), "storage (fault injection)"),
            (self.wal.is_some(), "wal (WAL options)"),
        ] {
            assert!(
                !set,
                "TestAppBuilder::{option} has no meaning in cluster mode \
                 (TOKEND_TEST_CLUSTER is set): a cluster keeps its logs in NATS; \
                 run this test without TOKEND_TEST_CLUSTER"
            );
        }
        let shards = u16::try_from(self.shards).expect("a cluster has at most 65535 shards");
        let name = unique_cluster_name();
        let clock = Arc::new(ManualClock::new(T0));
        // Unused by cluster nodes (their logs are in NATS); kept so that
        // every app has one.
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary data dir"));
        let mut nodes = Vec::new();
        for n in 1..=CLUSTER_NODES {
            let mut config = self.config(
                &clock,
                StoreConfig {
                    data_dir: data_dir.path().to_path_buf(),
                    wal: WalOptions::default(),
                    storage: Arc::new(FsStorage),
                },
            );
            // One shard thread per node: the cluster's shards are spread
            // over the nodes.
            config.engine.shards = 1;
            let cluster = ClusterConfig {
                urls: urls.clone(),
                node_id: format!("n{n}"),
                name: name.clone(),
                shards,
                replicas: CLUSTER_REPLICAS,
                allow_unsafe: CLUSTER_REPLICAS < 3,
                lease: LeaseTimes::default(),
                // Snapshots only when a test asks for one.
                snapshot_interval: Duration::from_secs(24 * 3600),
            };
            match Application::build_cluster(config, cluster).await {
                Ok(application) => nodes.push(Node::serve(application)),
                Err(e) => {
                    // The nodes already started stop with the test.
                    for node in &nodes {
                        node.engine.stop();
                    }
                    return Err(e);
                }
            }
        }
        let app = TestApp::serving(nodes, clock, data_dir, Some(ClusterNames { urls, name }));
        app.wait_settled(usize::from(shards)).await;
        Ok(app)
    }
}

/// Nodes of a test cluster.
const CLUSTER_NODES: usize = 3;

/// Replicas of a test cluster's stream and buckets: 3, the production
/// setting (anything less needs `allow_unsafe`). With 3, the modules `make
/// test-cluster` runs this way still finish in a minute or two, so the
/// tests run what production runs.
const CLUSTER_REPLICAS: usize = 3;

/// How long a test cluster may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The NATS urls test apps run their clusters on: none (single node) unless
/// `TOKEND_TEST_CLUSTER` is set (see the module documentation).
fn cluster_urls() -> Option<Vec<String>> {
    let setting = std::env::var("TOKEND_TEST_CLUSTER").ok()?;
    let setting = setting.trim();
    if setting.is_empty() {
        return None;
    }
    if setting == "auto" {
        return Some(shared_nats().to_vec());
    }
    Some(
        setting
            .split(',')
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect(),
    )
}

/// A cluster name (`[a-z0-9_-]{1,32}`) no other app of any test process
/// uses: the process id and a counter.
fn unique_cluster_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "api-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Names::new(&name).expect("a valid cluster name");
    name
}

// The cluster suite's NATS harness and what it takes from its parent.
#[allow(dead_code)]
#[path = "../cluster/support/nats.rs"]
mod nats;
use crate::net::{free_ports, http_get, tail};
/// How long the shared NATS servers may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping NATS server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The servers of `TOKEND_TEST_CLUSTER=auto`, started at first use.
static SHARED_NATS: Mutex<Option<nats::NatsCluster>> = Mutex::new(None);

/// The urls of the 3-server NATS cluster shared by every app of this test
/// binary, started at the first call. The servers are started from a thread
/// that never ends, so they live as long as the process: at its exit an
/// `atexit` handler stops them and removes their files, and should the
/// process die without exiting, the kernel kills them (parent-death signal).
fn shared_nats() -> &'static [String] {
    static URLS: OnceLock<Vec<String>> = OnceLock::new();
    URLS.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-nats".to_owned())
            .spawn(move || {
                let cluster = nats::NatsCluster::start(3);
                let urls = cluster.url_list();
                *SHARED_NATS.lock() = Some(cluster);
                extern "C" fn stop_shared_nats() {
                    if let Some(mut guard) = SHARED_NATS.try_lock() {
                        drop(guard.take());
                    }
                }
                // SAFETY: registers a plain function; it only takes the
                // cluster out of a static and drops it.
                let registered = unsafe { libc::atexit(stop_shared_nats) };
                assert_eq!(registered, 0, "atexit registers the NATS servers' stop");
                let _ = sender.send(urls);
                loop {
                    std::thread::park();
                }
            })
            .expect("a thread for the NATS servers");
        receiver
            .recv()
            .expect("the shared NATS servers start (see the panic above)")
    })
}

/// The NATS state of a test cluster, removed when the app is dropped.
struct ClusterNames {
    urls: Vec<String>,
    name: String,
}

impl ClusterNames {
    /// Deletes the cluster's stream and buckets, from a thread of its own
    /// (`Drop` cannot wait on the test's runtime).
    fn remove(&self) {
        let urls = self.urls.clone();
        let names = Names::new(&self.name).expect("a valid cluster name");
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let addrs: Vec<async_nats::ServerAddr> =
                    urls.iter().filter_map(|u| u.parse().ok()).collect();
                let Ok(client) = async_nats::connect(addrs).await else {
                    return;
                };
                let js = async_nats::jetstream::new(client);
                let streams = [
                    names.stream(),
                    format!("KV_{}", names.meta_bucket()),
                    format!("KV_{}", names.owners_bucket()),
                    format!("KV_{}", names.nodes_bucket()),
                    format!("OBJ_{}", names.snapshots_bucket()),
                ];
                for stream in streams {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), js.delete_stream(&stream))
                            .await;
                }
            });
        });
        let _ = removed.join();
    }
}

/// One running node: its engine and HTTP server.
struct Node {
    address: String,
    engine: Engine,
    handle: actix_web::dev::ServerHandle,
    stopped: Mutex<Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>>,
}

impl Node {
    /// Serves `application` in the background.
    fn serve(application: Application) -> Self {
        let address = format!("http://{}", application.addr());
        let engine = application.engine().clone();
        let handle = application.handle();
        let stopped = actix_web::rt::spawn(application.run_until_stopped());
        Self {
            address,
            engine,
            handle,
            stopped: Mutex::new(Some(stopped)),
        }
    }

    /// Stops gracefully (a cluster node hands its shards off).
    async fn stop(&self) -> std::io::Result<()> {
        self.handle.stop(true).await;
        let stopped = self.stopped.lock().take();
        match stopped {
            Some(task) => task.await.expect("the server task ends"),
            None => Ok(()),
        }
    }
}

/// An application with the default shape: three shards (an odd split) and a
/// 30-day tombstone retention.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// A client for the test server.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// A running application (one node, or the nodes of a cluster) and a
/// client for it.
pub struct TestApp {
    /// The client requests go through.
    pub client: reqwest::Client,
    /// The engine clock: moves only when a test moves it.
    pub clock: Arc<ManualClock>,
    /// The data dir (removed when the last holder drops it).
    pub data_dir: Arc<tempfile::TempDir>,
    nodes: Vec<Node>,
    /// The node the next request goes to.
    next_node: AtomicUsize,
    /// In cluster mode, what to remove from NATS at the end.
    cluster: Option<ClusterNames>,
    request_ids: Mutex<HashSet<String>>,
    names: AtomicUsize,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The HTTP servers and a cluster's NATS tasks stop with the test's
        // runtime; the shard threads are stopped here so no test leaves
        // threads behind, and a cluster's stream and buckets are removed.
        for node in &self.nodes {
            node.engine.stop();
        }
        if let Some(cluster) = &self.cluster {
            cluster.remove();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
    /// The body as received, for checks of exact text and of size.
    pub bytes: bytes::Bytes,
}

/// An account with a key granting every scope and one collection.
pub struct Tenant {
    /// The account's id.
    pub account_id: String,
    /// The account's liveness.
    pub liveness: String,
    /// A key with the `*` scope.
    pub key: String,
    /// That key's name.
    pub key_name: String,
    /// A collection without rules or branding.
    pub collection_id: String,
}

impl TestApp {
    /// A builder for an app of another shape.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            shards: 3,
            retention_ms: RETENTION_DEFAULT_MS,
            data_dir: None,
            storage: None,
            wal: None,
            // Every test client connects from 127.0.0.1, and some tests
            // open thousands of connections at once: one client may use
            // them all.
            edge: EdgeLimits {
                connections_per_client_max: EdgeLimits::default().connections_max,
                ..EdgeLimits::default()
            },
            shard_mailbox_max: SHARD_MAILBOX_MAX_DEFAULT,
            rate_limit: RateLimitSettings::OFF,
            http_workers: 1,
            snapshot_interval: None,
        }
    }

    fn serving(
        nodes: Vec<Node>,
        clock: Arc<ManualClock>,
        data_dir: Arc<tempfile::TempDir>,
        cluster: Option<ClusterNames>,
    ) -> Self {
        Self {
            client: client(),
            clock,
            data_dir,
            nodes,
            next_node: AtomicUsize::new(0),
            cluster,
            request_ids: Mutex::new(HashSet::new()),
            names: AtomicUsize::new(0),
        }
    }

    /// Waits until every node sees every node live and every shard is
    /// served by exactly one node, the one the shard map assigns it to;
    /// panics after [`SETTLE_TIMEOUT`] with what
    /// each node last reported.
    async fn wait_settled(&self, shards: usize) {
        let started = Instant::now();
        let want_live: Vec<String> = (1..=self.nodes.len()).map(|n| format!("n{n}")).collect();
        loop {
            let mut reports = Vec::new();
            for node in &self.nodes {
                let url = format!("{}/health/ready", node.address);
                let report = match self.client.get(&url).send().await {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        resp.json::<Value>().await.unwrap_or(Value::Null)
                    }
                    Ok(resp) => json!({ "status": resp.status().as_u16() }),
                    Err(e) => json!({ "error": e.to_string() }),
                };
                reports.push(report);
            }
            let all_live = reports
                .iter()
                .all(|r| r["cluster"]["liveNodes"] == json!(want_live));
            // Every shard served where the shard map puts it
            // (`ownership::assign` over the live nodes): a shard served
            // elsewhere is about to be handed off.
            let placed = tokend::cluster::ownership::assign(shards, &want_live);
            let mut served = vec![0usize; shards];
            let mut misplaced = 0;
            for (node, report) in reports.iter().enumerate() {
                for held in report["cluster"]["held"].as_array().into_iter().flatten() {
                    match (held["shard"].as_u64(), held["serving"].as_bool()) {
                        (Some(shard), Some(true))
                            if (shard as usize) < shards
                                && placed[shard as usize] == &want_live[node] =>
                        {
                            served[shard as usize] += 1
                        }
                        _ => misplaced += 1,
                    }
                }
            }
            if all_live && misplaced == 0 && served.iter().all(|&n| n == 1) {
                return;
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                let reports: Vec<String> = reports
                    .iter()
                    .zip(&self.nodes)
                    .enumerate()
                    .map(|(i, (r, node))| format!("n{} ({}): {r}", i + 1, node.address))
                    .collect();
                panic!(
                    "the test cluster did not settle within {SETTLE_TIMEOUT:?} (every node \
                     seeing {want_live:?} live, each of the {shards} shards served by exactly \
                     one node, the one it belongs on); the nodes' /health/ready:\n{}",
                    reports.join("\n")
                );
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The engine of every node, to run timers.
    pub fn engines(&self) -> impl Iterator<Item = &Engine> {
        self.nodes.iter().map(|node| &node.engine)
    }

    /// Stops gracefully as on SIGTERM (finish requests, flush the log, final
    /// snapshot; a cluster node hands its shards off); returns how the
    /// shutdown went (the first error of any node) and the data dir.
    pub async fn stop(self) -> (std::io::Result<()>, Arc<tempfile::TempDir>) {
        let results = join_all(self.nodes.iter().map(Node::stop)).await;
        let result = results.into_iter().collect::<std::io::Result<Vec<()>>>();
        (result.map(drop), Arc::clone(&self.data_dir))
    }

    /// Runs every shard's expiry and purge timers now (on every node).
    pub async fn run_timers(&self) {
        for engine in self.engines() {
            engine.run_timers().await.expect("timers run");
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.clock.advance_ms(ms);
    }

    /// A name no other call on this app returned.
    pub fn unique_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.names.fetch_add(1, Ordering::Relaxed))
    }

    /// The URL of `path` (absolute path on the server) on the next node in
    /// turn: in a cluster, successive requests go to successive nodes.
    pub fn url(&self, path: &str) -> String {
        let node = self.next_node.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        format!("{}{}", self.nodes[node].address, path)
    }

    /// A request to `path` (absolute path on the server), on the next node
    /// in turn.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and reads the response, checking its `X-Request-Id`.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let resp = Resp {
            status,
            headers,
            body,
            bytes,
        };
        self.check_request_id(&resp);
        resp
    }

    fn check_request_id(&self, resp: &Resp) {
        let id = resp
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id on {resp:?}"))
            .to_owned();
        assert!(!id.is_empty(), "empty X-Request-Id");
        assert!(
            self.request_ids.lock().insert(id.clone()),
            "X-Request-Id {id} was already used by an earlier response"
        );
    }

    /// `method path` with `key` (none when `None`) and a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut request = self.request(method, path);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET path` with `key`.
    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// `POST path` with `key` and a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// `DELETE path` with `key`.
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// `HEAD path` with `key`.
    pub async fn head(&self, path: &str, key: &str) -> Resp {
        self.call(Method::HEAD, path, Some(key), None).await
    }

    /// Creates an account with the admin key; returns its JSON.
    pub async fn create_account(&self, liveness: &str) -> Value {
        let name = self.unique_name("account");
        let resp = self
            .post(
                "/api/accounts",
                ADMIN,
                &json!({"name": name, "liveness": liveness}),
            )
            .await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates an API key with the admin key; returns its JSON (with `key`).
    pub async fn create_key_named(&self, account_id: &str, name: &str, scopes: &[&str]) -> Value {
        let resp = self
            .post(
                &format!("/api/accounts/{account_id}/api-keys"),
                ADMIN,
                &json!({"name": name, "scopes": scopes}),
            )
            .await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates an API key; returns the key string.
    pub async fn create_key(&self, account_id: &str, scopes: &[&str]) -> String {
        let name = self.unique_name("key");
        let key = self.create_key_named(account_id, &name, scopes).await;
        key["key"].as_str().expect("the key string").to_owned()
    }

    /// Creates a collection; asserts 201 and returns it.
    pub async fn create_collection(&self, key: &str, body: &Value) -> Value {
        let resp = self.post("/api/collections", key, body).await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates a token; asserts 201 and returns it.
    pub async fn create_token(&self, key: &str, body: &Value) -> Value {
        let resp = self.post("/api/tokens", key, body).await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates a token in `collection_id` with nothing else set; returns its id.
    pub async fn create_token_in(&self, key: &str, collection_id: &str) -> String {
        let token = self
            .create_token(key, &json!({"collectionId": collection_id}))
            .await;
        id_of(&token)
    }

    /// Creates tokens in one batch; asserts 201 and returns them.
    pub async fn create_batch(&self, key: &str, tokens: Vec<Value>) -> Vec<Value> {
        let resp = self
            .post("/api/tokens/batch", key, &json!({ "tokens": tokens }))
            .await;
        resp.assert_status(201);
        resp.body["data"].as_array().expect("data").clone()
    }

    /// `POST /api/tokens/{id}/redeem`.
    pub async fn redeem(&self, key: &str, id: &str, body: &Value) -> Resp {
        self.post(&format!("/api/tokens/{id}/redeem"), key, body)
            .await
    }

    /// `GET /api/tokens/{id}`.
    pub async fn get_token(&self, key: &str, id: &str) -> Resp {
        self.get(&format!("/api/tokens/{id}"), key).await
    }

    /// `GET /api/tokens/{id}`, asserting 200; returns the token.
    pub async fn token(&self, key: &str, id: &str) -> Value {
        let resp = self.get_token(key, id).await;
        resp.assert_status(200);
        resp.body
    }

    /// `HEAD /api/tokens/{id}`.
    pub async fn head_token(&self, key: &str, id: &str) -> Resp {
        self.head(&format!("/api/tokens/{id}"), key).await
    }

    /// `DELETE /api/tokens/{id}`.
    pub async fn delete_token(&self, key: &str, id: &str) -> Resp {
        self.delete(&format!("/api/tokens/{id}"), key).await
    }

    /// `GET /api/tokens?{query}`.
    pub async fn list_tokens(&self, key: &str, query: &str) -> Resp {
        self.get(&format!("/api/tokens?{query}"), key).await
    }

    /// The ids of every token `key` lists with `query`, walking all pages.
    pub async fn all_token_ids(&self, key: &str, query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit=1000&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let resp = self.list_tokens(key, &q).await;
            resp.assert_status(200);
            ids.extend(resp.body["data"].as_array().unwrap().iter().map(id_of));
            match resp.body["pagination"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
    }

    /// An account of `liveness` with a `*` key and a plain collection.
    pub async fn tenant_of(&self, liveness: &str) -> Tenant {
        let account = self.create_account(liveness).await;
        let account_id = account["id"].as_str().unwrap().to_owned();
        let key_name = self.unique_name("all-scopes");
        let key = self.create_key_named(&account_id, &key_name, &["*"]).await;
        let key = key["key"].as_str().unwrap().to_owned();
        let collection = self
            .create_collection(&key, &json!({"name": "plain"}))
            .await;
        Tenant {
            account_id,
            liveness: liveness.to_owned(),
            key,
            key_name,
            collection_id: id_of(&collection),
        }
    }

    /// A `test` tenant.
    pub async fn tenant(&self) -> Tenant {
        self.tenant_of("test").await
    }
}

/// The `id` of an object.
pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// Whether `needle` (which holds no zero byte) occurs in `data`, skipping
/// blocks of zeros at `memcmp` speed: WAL segments are mostly zeros
/// (pre-allocated), and a byte-by-byte search of tens of megabytes in a test
/// build takes seconds.
pub fn contains(data: &[u8], needle: &[u8]) -> bool {
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    assert!(
        !needle.is_empty() && !needle.contains(&0),
        "a needle without zeros"
    );
    // Such a needle cannot start in a block of zeros; one that starts in
    // another block may run into the next.
    data.chunks(BLOCK).enumerate().any(|(i, block)| {
        if block == &ZEROS[..block.len()] {
            return false;
        }
        let start = i * BLOCK;
        let end = (start + block.len() + needle.len() - 1).min(data.len());
        data[start..end].windows(needle.len()).any(|w| w == needle)
    })
}

/// A well-formed id that no object has.
pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// `T0 + ms` as the API renders it.
pub fn at(ms_after_t0: i64) -> String {
    tokend::timestamp::format(T0 + ms_after_t0)
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an error response in the API's format with `status` and
    /// `code`: every field present, `requestId` equal to the header, and
    /// `validationErrors` exactly on 422 `VALIDATION_FAILED`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        let body = &self.body;
        assert_eq!(body["status"], json!(status), "body: {body}");
        assert_eq!(body["code"], json!(code), "body: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {body}"
        );
        let request_id = body["requestId"].as_str().expect("requestId");
        assert_eq!(Some(request_id), self.header("x-request-id"));
        let has_errors = body.get("validationErrors").is_some();
        assert_eq!(
            has_errors,
            code == "VALIDATION_FAILED",
            "validationErrors only on 422: {body}"
        );
        if has_errors {
            let errors = body["validationErrors"].as_array().expect("an array");
            assert!(!errors.is_empty(), "no validation errors: {body}");
            for error in errors {
                assert!(error["path"].as_str().is_some_and(|p| p.starts_with('$')));
                assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
        // Problems beyond the listed 100 are counted, only when there are any.
        if let Some(omitted) = body.get("validationErrorsOmitted") {
            assert!(omitted.as_u64().is_some_and(|n| n > 0), "body: {body}");
            assert_eq!(body["validationErrors"].as_array().map(Vec::len), Some(100));
        }
        self
    }

    /// Asserts a 422 `VALIDATION_FAILED` whose entries name exactly `paths`
    /// (in any order, one entry each).
    #[track_caller]
    pub fn assert_invalid(&self, paths: &[&str]) -> &Self {
        self.assert_error(422, "VALIDATION_FAILED");
        let mut got = self.validation_paths();
        got.sort();
        let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "body: {}", self.body);
        self
    }

    /// The `path` of every validation error.
    pub fn validation_paths(&self) -> Vec<String> {
        self.body["validationErrors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The fields every token has; `redemption` and `deletedAt` are added
/// once set.
pub const TOKEN_FIELDS: [&str; 21] = [
    "id",
    "accountId",
    "category",
    "collectionId",
    "type",
    "status",
    "liveness",
    "createdAt",
    "createdBy",
    "activeFrom",
    "expiresAt",
    "description",
    "data",
    "metadata",
    "encryption",
    "children",
    "issuer",
    "issuerImg",
    "img",
    "issuerWebsite",
    "value",
];

/// Asserts `token` has exactly the token fields plus `extra`.
#[track_caller]
pub fn assert_token_fields(token: &Value, extra: &[&str]) {
    let mut got: Vec<&str> = token
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {token}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = TOKEN_FIELDS.iter().chain(extra).copied().collect();
    want.sort_unstable();
    assert_eq!(got, want, "token: {token}");
}
