//! The command line of `tokend-load`.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Tokens created for the `restore` profile when `--tokens` is not given.
pub const RESTORE_TOKENS_DEFAULT: u64 = 1_000_000;
/// Tokens created for the load profiles when `--tokens` is not given.
pub const LOAD_TOKENS_DEFAULT: u64 = 1_000_000;

/// HTTP load profiler of tokend: sets up tokens through the API, measures the
/// HTTP ceiling (`GET /health/live`), drives a profile and reports throughput,
/// latency percentiles, errors and a spend-once check.
#[derive(Debug, Clone, Parser)]
#[command(name = "tokend-load", version, about)]
#[command(group(clap::ArgGroup::new("redis_phase")
    .args(["compare_redis", "pin"])
    .multiple(true)))]
pub struct Args {
    /// Profile a running server at this URL (`http://host:port`) instead of
    /// spawning one.
    #[arg(long, conflicts_with_all = ["spawn", "server_bin", "data_dir"])]
    pub target: Option<String>,
    /// Start the server on a fresh data dir, on 127.0.0.1:0 (the default when
    /// `--target` is not given).
    #[arg(long)]
    pub spawn: bool,
    /// Server binary for `--spawn` (default: `tokend` next to this binary,
    /// else `target/release/tokend`).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Admin key: required with `--target`; with `--spawn` a random one is
    /// used when absent.
    #[arg(long, env = "TOKEND_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// What to drive.
    #[arg(long, value_enum, default_value_t = Profile::Redeem)]
    pub profile: Profile,
    /// Concurrent keep-alive connections (one task each).
    #[arg(long, short = 'c', default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Length of the measured run, in seconds.
    #[arg(long, short = 'd', default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Tokens created before the run (default 1 000 000); the `create`
    /// profile creates none.
    #[arg(long, short = 'n')]
    pub tokens: Option<u64>,
    /// Open loop: requests per second in total, sent on a fixed timetable;
    /// latency counts from the intended send time. Without it: closed loop,
    /// as fast as the server answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// `--fsync` of the spawned server.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,
    /// `--shards` of the spawned server (default: the server's, one per CPU;
    /// one with `--pin`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,
    /// `--http-workers` of the spawned server (default: the server's, one
    /// per CPU; one with `--pin`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub http_workers: Option<u16>,
    /// The pinned comparison: the spawned server (every thread of it) and
    /// then Redis run on CPU `--pin-server-cpu` alone, this load generator
    /// (every thread) on `--pin-load-cpu` alone; the server gets one shard
    /// and one HTTP worker unless `--shards` / `--http-workers` say
    /// otherwise. One run measures `GET /health/live`, the profile (`redeem`
    /// or `hot-collection`) and Redis `GETDEL` (as `--compare-redis`;
    /// skipped with a note when `redis-server` is not installed), and
    /// reports for each requests/s, p50/p99 and the server's CPU µs per
    /// request, with the targets' ratios. Refused on a machine with fewer
    /// than 2 CPUs.
    #[arg(long, requires = "spawn", conflicts_with = "target")]
    pub pin: bool,
    /// `--pin`: the CPU of the spawned server and of Redis.
    #[arg(long, default_value_t = 0, requires = "pin",
          value_parser = clap::value_parser!(u16).range(0..1024))]
    pub pin_server_cpu: u16,
    /// `--pin`: the CPU of this load generator.
    #[arg(long, default_value_t = 1, requires = "pin",
          value_parser = clap::value_parser!(u16).range(0..1024))]
    pub pin_load_cpu: u16,
    /// Directory of the results (`results-<profile>.json`,
    /// `latency-<profile>.svg`, `server-<profile>.log`).
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Seconds of `GET /health/live` before the profile (default: the
    /// smaller of 5 and `--duration-secs`; 0 skips it).
    #[arg(long)]
    pub ceiling_secs: Option<u64>,
    /// Tokens per `POST /api/tokens/batch` request while creating tokens (two
    /// requests in flight). The server's working set while creating grows
    /// with it, which the restore profile's memory figure includes.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// `batch-redeem`: items of each `POST /api/tokens/redeem` request (the
    /// API allows 1 to 1000), each a token of its own.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_items: u32,
    /// Collections the tokens are spread over (default 16; `hot-collection`
    /// always uses 1).
    #[arg(long, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub collections: u32,
    /// Worker threads of the load generator (it shares the machine with the
    /// server when spawned).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Data dir of the spawned server (default: a fresh temporary directory,
    /// removed at the end). Must be empty or absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the spawned server's data dir.
    #[arg(long)]
    pub keep_data: bool,
    /// Spawn the server with encryption at rest on: a data key generated
    /// for the run, passed in `TOKEND_DATA_KEY` (never on the command line).
    #[arg(long, requires = "spawn")]
    pub data_key_env: bool,
    /// Every token created carries a `data` object (a card-like value of
    /// about 60 bytes) and `encryption` metadata: what a data key seals.
    #[arg(long)]
    pub token_data: bool,
    /// After the run, redeem again up to this many tokens that got a 200
    /// (without idempotency key): each must answer 409.
    #[arg(long, default_value_t = 1000)]
    pub probe: u64,
    /// After the profile, start `redis-server --appendonly yes
    /// --appendfsync always --save ''` on a free loopback port, fill it
    /// with as many keys as `--tokens`, and drive `GETDEL` of distinct
    /// existing keys with the same connections and duration; the report
    /// gives the profile's throughput as a ratio of it. Skipped, with a
    /// note, when `redis-server` is not installed.
    #[arg(long)]
    pub compare_redis: bool,
    /// The `redis-server` binary (default: the one on the PATH).
    #[arg(long, requires = "redis_phase")]
    pub redis_server: Option<PathBuf>,
    /// With `--compare-redis`: also run `redis-benchmark -c C … GETDEL
    /// key:__rand_int__` against the same Redis afterwards, for reference.
    #[arg(long, requires = "compare_redis")]
    pub redis_benchmark: bool,
    /// After the profile, drive it again on the same server for
    /// `--snapshot-phase-secs` and send `POST /api/admin/snapshot` during
    /// it: the report gives latency before, during and after the snapshot.
    #[arg(long)]
    pub snapshot_during: bool,
    /// Seconds of the snapshot phase (default: `--duration-secs`).
    #[arg(long, requires = "snapshot_during",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub snapshot_phase_secs: Option<u64>,
    /// When the snapshot is sent, in seconds after the start of the
    /// snapshot phase (default: a third of it).
    #[arg(long, requires = "snapshot_during")]
    pub snapshot_at_secs: Option<f64>,
    /// A results file of an earlier run (`results-redeem.json`): the report
    /// gives this run's throughput and p99 as ratios of that run's.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// `cluster` profile: the nats-server binary (`make bench-cluster`
    /// installs the pinned one with `tools/nats/install`).
    #[arg(long, env = "TOKEND_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// `cluster` profile: tokend nodes (the NATS cluster always has three
    /// servers, for the stream's three replicas).
    #[arg(long, default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub cluster_nodes: u32,
    /// `cluster` profile: `--cluster-shards` of the nodes.
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cluster_shards: u16,
    /// `cluster` profile: seconds of each JetStream append measurement
    /// (0 skips them).
    #[arg(long, default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub jetstream_secs: u64,
    /// `cluster` profile: concurrent publishers of the JetStream append
    /// measurements, comma-separated: one measurement per count, each
    /// publisher on its own subject of one stream.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub jetstream_publishers: Vec<u32>,
    /// `cluster` profile: bytes of each message of the JetStream append
    /// measurements.
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub jetstream_message_bytes: u32,
}

/// Where `--pin` puts the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// The CPU of the spawned server and of Redis.
    pub server_cpu: usize,
    /// The CPU of the load generator.
    pub load_cpu: usize,
}

impl Pinning {
    /// The two CPUs, whose busy time each phase reports.
    pub fn cpus(self) -> Vec<usize> {
        vec![self.server_cpu, self.load_cpu]
    }
}

/// A load profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Each request redeems a distinct token, tokens spread over collections.
    Redeem,
    /// `POST /api/tokens`.
    Create,
    /// 80% redeem, 15% create, 5% `GET /api/tokens/{id}`.
    Mixed,
    /// Redeems of tokens that all belong to one collection.
    HotCollection,
    /// Each request is a `POST /api/tokens/redeem` of `--batch-items`
    /// distinct tokens; throughput in tokens redeemed per second.
    BatchRedeem,
    /// Each unit of work holds a token, then captures that hold (two
    /// requests, one after the other on one connection); throughput in
    /// captured pairs per second.
    HoldCapture,
    /// Create N tokens, measure memory per token, snapshot size, and time
    /// from start to ready after a restart.
    Restore,
    /// `redeem` through tokend nodes in cluster mode on three nats-servers
    /// (JetStream, three replicas), beside `redeem` on a single node in the
    /// same run, then JetStream's raw append rate on the same NATS cluster.
    Cluster,
}

impl Profile {
    /// The name used in flags and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redeem => "redeem",
            Self::Create => "create",
            Self::Mixed => "mixed",
            Self::HotCollection => "hot-collection",
            Self::BatchRedeem => "batch-redeem",
            Self::HoldCapture => "hold-capture",
            Self::Restore => "restore",
            Self::Cluster => "cluster",
        }
    }
}

/// The server's fsync mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// Reply after the WAL record is fsynced (group commit).
    Always,
    /// Fsync every interval.
    Interval,
    /// Leave flushing to the OS.
    Never,
}

impl Profile {
    /// The target of this profile's tokens redeemed per second as a
    /// multiple of the `redeem` profile's on the same machine, when it has
    /// one (read against `--baseline`).
    pub fn redeemed_ratio_target(self) -> Option<f64> {
        match self {
            Self::BatchRedeem => Some(4.0),
            Self::HoldCapture => Some(0.45),
            _ => None,
        }
    }
}

impl Fsync {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Interval => "interval",
            Self::Never => "never",
        }
    }
}

impl Args {
    /// Tokens to create before the run.
    pub fn tokens(&self) -> u64 {
        match (self.profile, self.tokens) {
            (_, Some(n)) => n,
            (Profile::Restore, None) => RESTORE_TOKENS_DEFAULT,
            (_, None) => LOAD_TOKENS_DEFAULT,
        }
    }

    /// Seconds of the ceiling phase.
    pub fn ceiling_secs(&self) -> u64 {
        self.ceiling_secs
            .unwrap_or_else(|| self.duration_secs.min(5))
    }

    /// Seconds of the snapshot phase.
    pub fn snapshot_phase_secs(&self) -> u64 {
        self.snapshot_phase_secs.unwrap_or(self.duration_secs)
    }

    /// When the snapshot is sent in its phase.
    pub fn snapshot_at(&self) -> std::time::Duration {
        let secs = self
            .snapshot_at_secs
            .unwrap_or(self.snapshot_phase_secs() as f64 / 3.0);
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 86_400.0))
    }

    /// With `--pin`: the server's CPU and the load generator's.
    pub fn pinning(&self) -> Option<Pinning> {
        self.pin.then_some(Pinning {
            server_cpu: usize::from(self.pin_server_cpu),
            load_cpu: usize::from(self.pin_load_cpu),
        })
    }

    /// Collections to create.
    pub fn collections(&self) -> u32 {
        match self.profile {
            Profile::HotCollection => 1,
            _ => self.collections,
        }
    }
}
