//! The `cluster` profile: the redeem profile through tokend nodes in
//! cluster mode on three nats-servers, beside the same profile on a single
//! node in the same run, then JetStream's raw append rate on the same NATS
//! cluster.
//!
//! 1. Single node: a server spawned as for `redeem` (`--fsync`, fresh data
//!    dir); tokens created, redeemed for `--duration-secs` over
//!    `--connections`, spend-once checked; the server is stopped.
//! 2. Cluster: three nats-servers (JetStream, `sync_interval: always`) and
//!    `--cluster-nodes` tokend nodes with `--cluster-shards`; once every
//!    shard is served, and by the node it belongs on, the same tokens are
//!    created through the nodes and redeemed with the connections spread
//!    evenly over the nodes (each node forwards what belongs to another);
//!    spend-once checked; the nodes are stopped.
//! 3. JetStream alone: publishers appending to their own subjects of one
//!    stream with three replicas, as a node appends a shard's log — the
//!    ceiling of a cluster whose shards all share one stream.
//!
//! CPU time (user + system) of every process is read from `/proc` around
//! each measured phase and given per successful redeem: on a small machine
//! every process shares the same cores, so the cost per redeem says more
//! than the throughput.

use super::api::{create_tenant, create_tokens_on, Tenant};
use super::cli::Args;
use super::driver::{run_phase, PhasePlan};
use super::endpoint::{random_admin_key, Endpoint};
use super::error::{Context, LoadError, Result};
use super::http::{Call, Conn, Method, Target};
use super::nats::{find_nats_server, measure_appends, AppendFigures, NatsCluster, SERVERS};
use super::report::{grouped, now_rfc3339, write_json, Machine, ServerInfo};
use super::server::{find_binary, temp_dir, Server, ServerSpec};
use super::spend_once::{self, SpendOnce};
use super::stats::{machine_cpu, own_cpu, process_cpu, PhaseSummary};
use super::tokens::TokenPool;
use super::workload::{Mix, Workload};
use super::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the nodes may take until every shard is served.
const SHARDS_LIMIT: Duration = Duration::from_secs(120);
/// How long a tenant created on one node may take to reach the others.
const CATALOG_LIMIT: Duration = Duration::from_secs(30);

/// Which processes a CPU figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// A tokend server or node.
    Tokend,
    /// A nats-server.
    NatsServer,
}

/// A process whose CPU time is counted.
#[derive(Debug, Clone)]
struct Watched {
    /// `single`, `n1`, `nats-1` …
    name: String,
    /// Its group.
    group: Group,
    /// Its pid.
    pid: u32,
}

/// CPU time of one process over a measured phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCpu {
    /// Its name in the run.
    pub name: String,
    /// Its group.
    pub group: Group,
    /// User + system seconds.
    pub cpu_secs: f64,
    /// Cores it kept busy on average.
    pub cores: f64,
}

/// CPU time of a measured phase, per process and per successful redeem.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuBreakdown {
    /// Seconds between the two readings.
    pub window_secs: f64,
    /// Successful redeems (2xx) in the phase.
    pub redeems: u64,
    /// Each process.
    pub processes: Vec<ProcessCpu>,
    /// The tokend processes together: CPU seconds.
    pub tokend_cpu_secs: f64,
    /// … and µs per successful redeem.
    pub tokend_us_per_redeem: f64,
    /// The nats-servers together: CPU seconds (none for a single node).
    pub nats_cpu_secs: Option<f64>,
    /// … and µs per successful redeem.
    pub nats_us_per_redeem: Option<f64>,
    /// The load generator (this process): CPU seconds.
    pub load_generator_cpu_secs: Option<f64>,
    /// … and µs per successful redeem.
    pub load_generator_us_per_redeem: Option<f64>,
    /// Cores kept busy on average by everything else on the machine.
    pub other_cores_busy: Option<f64>,
}

/// CPU readings at one moment.
struct CpuReading {
    /// When.
    at: Instant,
    /// Each watched process.
    processes: Vec<Option<Duration>>,
    /// This process.
    own: Option<Duration>,
    /// The whole machine.
    machine: Option<Duration>,
}

impl CpuReading {
    /// Reads the CPU time of `watched`, this process and the machine.
    fn now(watched: &[Watched]) -> Self {
        Self {
            at: Instant::now(),
            processes: watched.iter().map(|w| process_cpu(w.pid)).collect(),
            own: own_cpu(),
            machine: machine_cpu(),
        }
    }
}

impl CpuBreakdown {
    /// The CPU used between two readings, for `redeems` successful redeems.
    fn between(watched: &[Watched], before: &CpuReading, after: &CpuReading, redeems: u64) -> Self {
        let window_secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let diff = |a: Option<Duration>, b: Option<Duration>| {
            a.zip(b).map(|(a, b)| b.saturating_sub(a).as_secs_f64())
        };
        let processes: Vec<ProcessCpu> = watched
            .iter()
            .zip(before.processes.iter().zip(&after.processes))
            .map(|(w, (a, b))| {
                let cpu_secs = diff(*a, *b).unwrap_or(0.0);
                ProcessCpu {
                    name: w.name.clone(),
                    group: w.group,
                    cpu_secs,
                    cores: cpu_secs / window_secs,
                }
            })
            .collect();
        let sum = |group: Group| -> Option<f64> {
            let of_group: Vec<f64> = processes
                .iter()
                .filter(|p| p.group == group)
                .map(|p| p.cpu_secs)
                .collect();
            (!of_group.is_empty()).then(|| of_group.iter().sum())
        };
        let per = |secs: f64| secs * 1e6 / redeems.max(1) as f64;
        let tokend_cpu_secs = sum(Group::Tokend).unwrap_or(0.0);
        let nats_cpu_secs = sum(Group::NatsServer);
        let load_generator_cpu_secs = diff(before.own, after.own);
        let counted = tokend_cpu_secs + nats_cpu_secs.unwrap_or(0.0);
        Self {
            window_secs,
            redeems,
            tokend_cpu_secs,
            tokend_us_per_redeem: per(tokend_cpu_secs),
            nats_cpu_secs,
            nats_us_per_redeem: nats_cpu_secs.map(per),
            load_generator_us_per_redeem: load_generator_cpu_secs.map(per),
            other_cores_busy: diff(before.machine, after.machine).map(|m| {
                (m - counted - load_generator_cpu_secs.unwrap_or(0.0)).max(0.0) / window_secs
            }),
            load_generator_cpu_secs,
            processes,
        }
    }

    /// Cores kept busy by the counted processes and the load generator.
    fn cores_busy(&self) -> f64 {
        (self.tokend_cpu_secs
            + self.nats_cpu_secs.unwrap_or(0.0)
            + self.load_generator_cpu_secs.unwrap_or(0.0))
            / self.window_secs
    }
}

/// One redeem run: single node or cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeemRun {
    /// `single node` or `cluster`.
    pub name: String,
    /// Servers the connections were spread over.
    pub nodes: u32,
    /// Tokens created before the run.
    pub tokens: u64,
    /// Seconds the creation took.
    pub setup_secs: f64,
    /// The redeem phase.
    pub run: PhaseSummary,
    /// CPU per process and per redeem.
    pub cpu: CpuBreakdown,
    /// The spend-once check.
    pub spend_once: SpendOnce,
}

/// How the cluster was set up.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// tokend nodes.
    pub nodes: u32,
    /// `--cluster-shards`.
    pub shards: u16,
    /// nats-servers.
    pub nats_servers: usize,
    /// `nats-server --version`.
    pub nats_version: Option<String>,
    /// Seconds from starting the first node until every shard was served.
    pub shards_served_secs: f64,
    /// Each node's exit code after SIGTERM.
    pub exit_codes: Vec<Option<i32>>,
}

/// The settings of a cluster run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// Connections (spread evenly over the nodes in the cluster run).
    pub connections: u32,
    /// Seconds of each redeem run.
    pub duration_secs: u64,
    /// Tokens created before each run.
    pub tokens: u64,
    /// Collections.
    pub collections: u32,
    /// `--fsync` of the single node.
    pub fsync: String,
    /// Open loop: requests per second.
    pub rate: Option<f64>,
    /// Load generator threads.
    pub threads: u32,
}

/// The results file of the cluster profile (`results-cluster.json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterResults {
    /// `tokend-load`.
    pub tool: &'static str,
    /// Profiler version.
    pub version: &'static str,
    /// `cluster`.
    pub profile: &'static str,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: ClusterSettings,
    /// The single node.
    pub single_server: ServerInfo,
    /// The cluster.
    pub cluster: ClusterInfo,
    /// Redeem on a single node.
    pub single: RedeemRun,
    /// Redeem through the cluster.
    pub clustered: RedeemRun,
    /// Cluster 2xx per second over the single node's.
    pub throughput_ratio: Option<f64>,
    /// Cluster p99 over the single node's.
    pub p99_ratio: Option<f64>,
    /// JetStream's raw append rate, one entry per publisher count.
    pub jetstream_appends: Vec<AppendFigures>,
}

/// A directory removed when dropped (unless kept).
struct TempDir {
    /// The directory.
    path: PathBuf,
    /// Keep it.
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("cluster data kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the profile; Ctrl-C stops it, and every process it started.
pub async fn run(args: &Args) -> Result<Verdict> {
    let refused = [
        (args.target.is_some(), "--target"),
        (args.data_dir.is_some(), "--data-dir"),
        (args.compare_redis, "--compare-redis"),
        (args.snapshot_during, "--snapshot-during"),
        (args.baseline.is_some(), "--baseline"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(given, _)| *given) {
        return Err(LoadError::new(format!(
            "{flag} does not go with the cluster profile (it spawns its own servers)"
        )));
    }
    if args.tokens() == 0 {
        return Err(LoadError::new("the cluster profile needs --tokens > 0"));
    }
    let nats_bin = find_nats_server(args.nats_server.as_deref())?;
    let tokend_bin = find_binary(args.server_bin.as_deref())?;
    // Dropping the profile's future (on Ctrl-C) kills the processes it
    // started and removes its temporary directory.
    tokio::select! {
        outcome = profile(args, &nats_bin, &tokend_bin) => outcome,
        _ = tokio::signal::ctrl_c() => Err(LoadError::new("interrupted")),
    }
}

/// `nats-server --version`, first line.
fn nats_version(bin: &Path) -> Option<String> {
    let output = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// The profile.
async fn profile(args: &Args, nats_bin: &Path, tokend_bin: &Path) -> Result<Verdict> {
    let started_at = now_rfc3339();
    let machine = Machine::detect();
    let logs = args.out.join("cluster");
    std::fs::create_dir_all(&logs).context(|| format!("cannot create {}", logs.display()))?;

    eprintln!("== single node: redeem");
    let single_log = logs.join("tokend-single.log");
    let _ = std::fs::remove_file(&single_log);
    let endpoint = Endpoint::open(args, single_log)?;
    let single_pid = endpoint
        .spawned
        .as_ref()
        .map(|(server, _)| server.pid())
        .ok_or_else(|| LoadError::new("the single node was not spawned"))?;
    let watched = [Watched {
        name: "single".to_owned(),
        group: Group::Tokend,
        pid: single_pid,
    }];
    let single = redeem(
        args,
        "single node",
        std::slice::from_ref(&endpoint.target),
        &endpoint.admin_key,
        &watched,
    )
    .await?;
    let single_server = endpoint.close()?;

    eprintln!(
        "== cluster: {} tokend nodes on {SERVERS} nats-servers: redeem",
        args.cluster_nodes
    );
    let dir = TempDir {
        path: temp_dir("tokend-load-cluster")?,
        keep: args.keep_data,
    };
    let nats = NatsCluster::start(nats_bin, &dir.path, &logs).await?;
    eprintln!("NATS JetStream cluster ready: {}", nats.urls().join(","));
    let admin_key = match &args.admin_key {
        Some(key) => key.clone(),
        None => random_admin_key()?,
    };
    let cluster_name = format!("load{}", std::process::id());
    let mut nodes: Vec<(Server, ServerSpec)> = Vec::new();
    let t = Instant::now();
    for i in 1..=args.cluster_nodes {
        let data_dir = dir.path.join(format!("tokend-n{i}"));
        std::fs::create_dir_all(&data_dir)
            .context(|| format!("cannot create {}", data_dir.display()))?;
        let log = logs.join(format!("tokend-n{i}.log"));
        // A fresh log per run: the server appends.
        let _ = std::fs::remove_file(&log);
        let spec = ServerSpec {
            bin: tokend_bin.to_owned(),
            data_dir,
            fsync: args.fsync.name().to_owned(),
            shards: None,
            http_workers: None,
            cpu: None,
            admin_key: admin_key.clone(),
            log,
            data_key: None,
            extra_args: vec![
                "--cluster".to_owned(),
                nats.urls().join(","),
                "--node-id".to_owned(),
                format!("n{i}"),
                "--cluster-name".to_owned(),
                cluster_name.clone(),
                "--cluster-shards".to_owned(),
                args.cluster_shards.to_string(),
            ],
        };
        let server = Server::start(&spec)?;
        eprintln!(
            "node n{i} pid {} listening on {}",
            server.pid(),
            server.addr
        );
        nodes.push((server, spec));
    }
    let targets = nodes
        .iter()
        .map(|(server, _)| Target::from_addr(server.addr))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = (1..=args.cluster_nodes).map(|i| format!("n{i}")).collect();
    wait_for_shards(&targets, &names, args.cluster_shards, &logs).await?;
    let shards_served_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "every one of {} shards served, each by its node, {shards_served_secs:.1} s after the first node started",
        args.cluster_shards
    );
    let mut watched: Vec<Watched> = nodes
        .iter()
        .zip(&names)
        .map(|((server, _), name)| Watched {
            name: name.clone(),
            group: Group::Tokend,
            pid: server.pid(),
        })
        .collect();
    watched.extend(nats.pids().into_iter().map(|(name, pid)| Watched {
        name,
        group: Group::NatsServer,
        pid,
    }));
    let clustered = redeem(args, "cluster", &targets, &admin_key, &watched).await?;
    let mut exit_codes = Vec::with_capacity(nodes.len());
    for (server, spec) in nodes {
        let (status, _) = server.stop()?;
        if !status.success() {
            eprintln!(
                "warning: a node exited with {status} after SIGTERM; see {}",
                spec.log.display()
            );
        }
        exit_codes.push(status.code());
    }

    let jetstream_appends = if args.jetstream_secs > 0 {
        eprintln!("== JetStream alone: appends to one stream of {SERVERS} replicas");
        let pids: Vec<u32> = nats.pids().into_iter().map(|(_, pid)| pid).collect();
        measure_appends(
            &nats.urls(),
            &pids,
            &args.jetstream_publishers,
            args.jetstream_message_bytes,
            args.jetstream_secs,
        )
        .await?
    } else {
        Vec::new()
    };
    nats.stop();
    drop(dir);

    let results = ClusterResults {
        tool: "tokend-load",
        version: env!("CARGO_PKG_VERSION"),
        profile: "cluster",
        started_at,
        machine,
        settings: ClusterSettings {
            connections: args.connections,
            duration_secs: args.duration_secs,
            tokens: args.tokens(),
            collections: args.collections(),
            fsync: args.fsync.name().to_owned(),
            rate: args.rate,
            threads: args.threads,
        },
        single_server,
        cluster: ClusterInfo {
            nodes: args.cluster_nodes,
            shards: args.cluster_shards,
            nats_servers: SERVERS,
            nats_version: nats_version(nats_bin),
            shards_served_secs,
            exit_codes,
        },
        throughput_ratio: (single.run.ok_throughput > 0.0)
            .then(|| clustered.run.ok_throughput / single.run.ok_throughput),
        p99_ratio: (single.run.latency_ms.p99 > 0.0)
            .then(|| clustered.run.latency_ms.p99 / single.run.latency_ms.p99),
        single,
        clustered,
        jetstream_appends,
    };
    let json = args.out.join("results-cluster.json");
    write_json(&json, &results)?;
    print!("{}", table(&results, &json, &logs));
    if results.single.spend_once.passed && results.clustered.spend_once.passed {
        Ok(Verdict::Passed)
    } else {
        Ok(Verdict::SpendOnceViolated)
    }
}

/// Creates a tenant and `--tokens` tokens through `targets`, redeems them
/// over `--connections` spread evenly over `targets`, checks spend-once,
/// and counts the CPU time of `watched` over the redeem phase.
async fn redeem(
    args: &Args,
    name: &str,
    targets: &[Target],
    admin_key: &str,
    watched: &[Watched],
) -> Result<RedeemRun> {
    let Some(first) = targets.first() else {
        return Err(LoadError::new("no server to drive"));
    };
    let n = args.tokens();
    let tenant = create_tenant(first, admin_key, args.collections(), args.token_data).await?;
    wait_for_tenant(targets, &tenant).await?;
    let t = Instant::now();
    let ids = create_tokens_on(targets, &tenant, n, args.batch_size).await?;
    let setup_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "setup ({name}): {n} tokens in {setup_secs:.1} s ({:.0}/s)",
        n as f64 / setup_secs
    );
    let pool = Arc::new(TokenPool::new(ids));
    let mut conns = Vec::with_capacity(args.connections as usize);
    for i in 0..args.connections as usize {
        let target = &targets[i % targets.len()];
        let mut conn = Conn::new(target, Some(&tenant.key))?;
        conn.open()
            .await
            .context(|| format!("cannot connect to {}", target.url()))?;
        conns.push(conn);
    }
    let workload = Arc::new(Workload::new(
        Mix::Redeem,
        Arc::clone(&pool),
        tenant.collections.clone(),
    ));
    let plan = PhasePlan {
        name: name.to_owned(),
        duration: Duration::from_secs(args.duration_secs),
        rate: args.rate,
        server_pid: None,
        snapshot: None,
        cpus: Vec::new(),
    };
    let before = CpuReading::now(watched);
    let (mut conns, mut run) = run_phase(conns, workload, &plan).await?;
    let after = CpuReading::now(watched);
    // The breakdown below replaces the phase's own CPU figure, which knows
    // of one server at most.
    run.cpu = None;
    let cpu = CpuBreakdown::between(watched, &before, &after, run.ok);
    let spend_once = spend_once::check(&pool, &mut conns, args.probe).await;
    Ok(RedeemRun {
        name: name.to_owned(),
        nodes: targets.len() as u32,
        tokens: n,
        setup_secs,
        run,
        cpu,
        spend_once,
    })
}

/// `GET path` with `key`: status and body (a transport error as status 0).
async fn get(target: &Target, key: Option<&str>, path: &str) -> Result<(u16, String)> {
    let mut conn = Conn::new(target, key)?;
    let call = Call {
        method: Method::Get,
        path,
        body: None,
    };
    Ok(match conn.send_within(call, Duration::from_secs(5)).await {
        Ok(reply) => (reply.status, reply.text()),
        Err(e) => (0, e.to_string()),
    })
}

/// Waits until every target knows the tenant (a cluster replicates its
/// catalog — accounts, keys, collections — to every node).
async fn wait_for_tenant(targets: &[Target], tenant: &Tenant) -> Result<()> {
    let Some(collection) = tenant.collections.first() else {
        return Ok(());
    };
    let path = format!("/api/collections/{collection}");
    let started = Instant::now();
    for target in targets {
        loop {
            let (status, body) = get(target, Some(&tenant.key), &path).await?;
            if status == 200 {
                break;
            }
            if started.elapsed() > CATALOG_LIMIT {
                return Err(LoadError::new(format!(
                    "{} did not know the new collection within {} s: GET {path}: {status} {}",
                    target.url(),
                    CATALOG_LIMIT.as_secs(),
                    body.chars().take(300).collect::<String>()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The shards a node serves, from its `/health/ready` answer (`None` while
/// it is not ready).
pub fn serving_shards(ready: &serde_json::Value) -> Option<Vec<usize>> {
    if ready["status"].as_str() != Some("ready") {
        return None;
    }
    let held = ready["cluster"]["held"].as_array()?;
    Some(
        held.iter()
            .filter(|h| h["serving"].as_bool() == Some(true))
            .filter_map(|h| h["shard"].as_u64())
            .filter_map(|s| usize::try_from(s).ok())
            .collect(),
    )
}

/// What is still missing before the cluster is settled: every shard served
/// by exactly one node, the one it belongs on (as the nodes place them:
/// `tokend::cluster::ownership::assign` over the sorted node ids).
/// `serving[i]` are the shards node `names[i]` serves.
pub fn unsettled(names: &[String], serving: &[Vec<usize>], shards: usize) -> Option<String> {
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort();
    let placed = tokend::cluster::ownership::assign(shards, &sorted);
    let mut owners: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (name, held) in names.iter().zip(serving) {
        for &shard in held {
            owners.entry(shard).or_default().push(name);
        }
    }
    let mut unserved = 0;
    let mut doubled = 0;
    let mut misplaced = 0;
    for shard in 0..shards {
        match owners.get(&shard).map(Vec::as_slice) {
            None | Some([]) => unserved += 1,
            Some([one]) => {
                if placed.get(shard).is_none_or(|node| *one != node.as_str()) {
                    misplaced += 1;
                }
            }
            Some(_) => doubled += 1,
        }
    }
    let stray = owners.keys().filter(|&&s| s >= shards).count();
    if unserved + doubled + misplaced + stray == 0 {
        None
    } else {
        Some(format!(
            "{unserved} shards unserved, {doubled} served twice, {misplaced} not yet on their node, {stray} out of range"
        ))
    }
}

/// Polls every node's `/health/ready` until the shards are settled.
async fn wait_for_shards(
    targets: &[Target],
    names: &[String],
    shards: u16,
    logs: &Path,
) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let mut serving = Vec::with_capacity(targets.len());
        let mut waiting = None;
        for (target, name) in targets.iter().zip(names) {
            let (status, body) = get(target, None, "/health/ready").await?;
            let ready = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .filter(|_| status == 200)
                .and_then(|v| serving_shards(&v));
            match ready {
                Some(held) => serving.push(held),
                None => {
                    waiting = Some(format!("{name} not ready: {status}"));
                    break;
                }
            }
        }
        let why = waiting.or_else(|| unsettled(names, &serving, usize::from(shards)));
        let Some(why) = why else { return Ok(()) };
        if started.elapsed() > SHARDS_LIMIT {
            return Err(LoadError::new(format!(
                "the shards were not settled within {} s ({why}); the nodes' logs are in {}",
                SHARDS_LIMIT.as_secs(),
                logs.display()
            )));
        }
        if why != last {
            eprintln!("waiting for the shards: {why}");
            last = why;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row of the redeem table.
fn redeem_row(out: &mut String, r: &RedeemRun) {
    let p = &r.run.latency_ms;
    let _ = writeln!(
        out,
        "{:<18} {:>11} {:>10.0} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        format!("{} ({})", r.name, r.nodes),
        grouped(r.run.ok),
        r.run.ok_throughput,
        r.run.errors,
        p.p50,
        p.p90,
        p.p99,
        p.p999,
        p.max
    );
}

/// `12.3` or `-`.
fn maybe(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

/// One row of the CPU table.
fn cpu_row(out: &mut String, r: &RedeemRun) {
    let c = &r.cpu;
    let _ = writeln!(
        out,
        "{:<18} {:>10.1} {:>12} {:>10} {:>10.2} {:>8}",
        r.name,
        c.tokend_us_per_redeem,
        maybe(c.nats_us_per_redeem),
        maybe(c.load_generator_us_per_redeem),
        c.cores_busy(),
        c.other_cores_busy
            .map_or("-".to_owned(), |o| format!("{o:.2}")),
    );
}

/// The human table.
pub fn table(r: &ClusterResults, json: &Path, logs: &Path) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let mode = match s.rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop (max)".to_owned(),
    };
    let _ = writeln!(
        out,
        "\ntokend-load · cluster · {} connections · {mode} · {} s · {} tokens · {} CPUs{}",
        s.connections,
        s.duration_secs,
        grouped(s.tokens),
        r.machine.cpus,
        r.machine.load_note()
    );
    let _ = writeln!(
        out,
        "single node: fsync {} · cluster: {} tokend nodes, {} shards, on {} nats-servers ({}; JetStream, 3 replicas, sync_interval always) · connections spread evenly over the nodes · every process shares the {} CPUs",
        s.fsync,
        r.cluster.nodes,
        r.cluster.shards,
        r.cluster.nats_servers,
        r.cluster.nats_version.as_deref().unwrap_or("version unknown"),
        r.machine.cpus
    );
    let _ = writeln!(
        out,
        "setup: single node {:.0} tokens/s · cluster {:.0} tokens/s (batch route) · shards settled {:.1} s after the first node started\n",
        r.single.tokens as f64 / r.single.setup_secs.max(1e-9),
        r.clustered.tokens as f64 / r.clustered.setup_secs.max(1e-9),
        r.cluster.shards_served_secs
    );
    let _ = writeln!(
        out,
        "{:<18} {:>11} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "redeem (nodes)",
        "redeemed",
        "redeem/s",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    redeem_row(&mut out, &r.single);
    redeem_row(&mut out, &r.clustered);
    let _ = writeln!(
        out,
        "cluster / single: {} of the redeem/s · p99 {}\n",
        r.throughput_ratio
            .map_or("n/a".to_owned(), |x| format!("{x:.2}×")),
        r.p99_ratio.map_or("n/a".to_owned(), |x| format!("{x:.2}×"))
    );
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "cpu µs per redeem", "tokend", "nats-server", "load gen", "cores busy", "others"
    );
    cpu_row(&mut out, &r.single);
    cpu_row(&mut out, &r.clustered);
    let per_process: Vec<String> = r
        .clustered
        .cpu
        .processes
        .iter()
        .map(|p| format!("{} {:.2} s ({:.0}%)", p.name, p.cpu_secs, p.cores * 100.0))
        .collect();
    let _ = writeln!(
        out,
        "  cluster processes (user+sys over {:.1} s, % of a core): {}",
        r.clustered.cpu.window_secs,
        per_process.join(" · ")
    );
    if !r.jetstream_appends.is_empty() {
        let first = &r.jetstream_appends[0];
        let _ = writeln!(
            out,
            "\nJetStream alone: {}-byte messages appended to one stream of 3 replicas, each publisher on its own subject, each append conditional on the subject's last sequence and acknowledged before the next",
            first.message_bytes
        );
        let _ = writeln!(
            out,
            "{:<18} {:>11} {:>10} {:>7} {:>8} {:>8} {:>8} {:>12}",
            "publishers",
            "appended",
            "msg/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms",
            "nats µs/msg"
        );
        for a in &r.jetstream_appends {
            let _ = writeln!(
                out,
                "{:<18} {:>11} {:>10.0} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>12}",
                a.publishers,
                grouped(a.messages),
                a.messages_per_sec,
                a.errors,
                a.ack_ms.p50,
                a.ack_ms.p99,
                a.ack_ms.max,
                maybe(a.nats_cpu_per_message_us)
            );
            if let Some(e) = &a.first_error {
                let _ = writeln!(out, "  first error: {e}");
            }
        }
    }
    let _ = writeln!(out);
    for run in [&r.single, &r.clustered] {
        if run.run.tokens_exhausted {
            let _ = writeln!(
                out,
                "note: every token was used, {} stopped after {:.1} s: raise --tokens",
                run.name, run.run.secs
            );
        }
        if run.run.errors_by_code.is_empty() {
            let _ = writeln!(out, "errors ({}): none", run.name);
        } else {
            let _ = writeln!(out, "errors ({}):", run.name);
            for (code, n) in &run.run.errors_by_code {
                let _ = writeln!(out, "  {:>10}  {code}", grouped(*n));
            }
        }
    }
    for run in [&r.single, &r.clustered] {
        let check = &run.spend_once;
        let answers: Vec<String> = check
            .probe
            .answers
            .iter()
            .map(|(code, n)| format!("{} × {code}", grouped(*n)))
            .collect();
        let _ = writeln!(
            out,
            "spend-once ({}): {} — {} tokens redeemed once, {} more than once, {} replayed 200s; probe: {}",
            run.name,
            if check.passed { "passed" } else { "FAILED" },
            grouped(check.tokens_redeemed),
            check.violations,
            check.replayed,
            if answers.is_empty() {
                "none".to_owned()
            } else {
                answers.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "results: {}\nlogs:    {}",
        json.display(),
        logs.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn reads_the_serving_shards_of_a_ready_answer() {
        let ready = serde_json::json!({
            "status": "ready",
            "cluster": {"shards": 4, "liveNodes": ["n1", "n2"], "held": [
                {"shard": 0, "serving": true, "epoch": 1},
                {"shard": 2, "serving": false, "epoch": 1},
                {"shard": 3, "serving": true, "epoch": 2},
            ]},
        });
        assert_eq!(serving_shards(&ready), Some(vec![0, 3]));
        assert_eq!(
            serving_shards(&serde_json::json!({"status": "starting"})),
            None
        );
        // A single node's answer has no cluster part.
        assert_eq!(
            serving_shards(&serde_json::json!({"status": "ready"})),
            None
        );
    }

    /// Each node's shards as the nodes place them.
    fn placed(names: &[String], shards: usize) -> Vec<Vec<usize>> {
        let mut sorted = names.to_vec();
        sorted.sort();
        let placed = tokend::cluster::ownership::assign(shards, &sorted);
        names
            .iter()
            .map(|n| (0..shards).filter(|&s| placed[s] == n).collect())
            .collect()
    }

    #[test]
    fn shards_are_settled_once_each_is_served_once_by_its_node() {
        let names = names(3);
        let settled = placed(&names, 6);
        assert_eq!(unsettled(&names, &settled, 6), None);
        let mut unserved = settled.clone();
        let dropped = unserved[2].pop().expect("node 3 has shards");
        assert!(unsettled(&names, &unserved, 6)
            .unwrap()
            .starts_with("1 shards unserved"));
        let mut doubled = settled.clone();
        doubled[0].push(dropped);
        assert!(unsettled(&names, &doubled, 6)
            .unwrap()
            .contains("1 served twice"));
        // The first node took everything: served, but not yet handed off.
        let first_took_all = vec![(0..6).collect(), vec![], vec![]];
        let moving = 6 - settled[0].len();
        assert!(unsettled(&names, &first_took_all, 6)
            .unwrap()
            .contains(&format!("{moving} not yet on their node")));
        let mut stray = settled.clone();
        stray[1].push(9);
        assert!(unsettled(&names, &stray, 6)
            .unwrap()
            .contains("1 out of range"));
    }

    #[test]
    fn node_ids_are_ordered_as_strings() {
        // With ten nodes, n10 sorts before n2; the placement is over the
        // sorted ids, whatever order the nodes were started in.
        let names = names(10);
        let serving = placed(&names, 10);
        assert_eq!(unsettled(&names, &serving, 10), None);
        let mut reversed = names.clone();
        reversed.reverse();
        let serving: Vec<Vec<usize>> = serving.into_iter().rev().collect();
        assert_eq!(unsettled(&reversed, &serving, 10), None);
    }

    #[test]
    fn cpu_is_counted_per_group_and_per_redeem() {
        let watched = vec![
            Watched {
                name: "n1".to_owned(),
                group: Group::Tokend,
                pid: 1,
            },
            Watched {
                name: "n2".to_owned(),
                group: Group::Tokend,
                pid: 2,
            },
            Watched {
                name: "nats-1".to_owned(),
                group: Group::NatsServer,
                pid: 3,
            },
        ];
        let at = Instant::now();
        let secs = Duration::from_secs;
        let before = CpuReading {
            at,
            processes: vec![Some(secs(1)), Some(secs(1)), Some(secs(0))],
            own: Some(secs(0)),
            machine: Some(secs(10)),
        };
        let after = CpuReading {
            at: at + secs(2),
            processes: vec![Some(secs(2)), Some(secs(2)), Some(secs(1))],
            own: Some(secs(1)),
            machine: Some(secs(15)),
        };
        let cpu = CpuBreakdown::between(&watched, &before, &after, 100_000);
        assert!((cpu.tokend_cpu_secs - 2.0).abs() < 1e-9);
        assert!((cpu.tokend_us_per_redeem - 20.0).abs() < 1e-9);
        assert!((cpu.nats_us_per_redeem.unwrap() - 10.0).abs() < 1e-9);
        assert!((cpu.load_generator_us_per_redeem.unwrap() - 10.0).abs() < 1e-9);
        assert!((cpu.cores_busy() - 2.0).abs() < 1e-9);
        // 5 s of machine time, 4 of them counted: 1 s over 2 s.
        assert!((cpu.other_cores_busy.unwrap() - 0.5).abs() < 1e-9);
        assert!((cpu.processes[2].cores - 0.5).abs() < 1e-9);
        // No nats-server watched: no NATS figure.
        let single = CpuBreakdown::between(&watched[..1], &before, &after, 100_000);
        assert_eq!(single.nats_us_per_redeem, None);
    }
}
