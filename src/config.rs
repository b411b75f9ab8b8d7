//! The command line: `tokend [serve] [flags]`. Every flag has an environment
//! variable; the admin key is only ever an environment variable (flags show
//! in `ps`).

use crate::logging::LogFormat;
use crate::wal::FsyncMode;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest `--rate-limit-per-sec` and `--rate-limit-burst`.
pub const RATE_PER_SEC_MAX: u32 = 1_000_000;

/// Default of `--shard-mailbox-max`: deep enough for a burst from many
/// connections with fsyncs in flight, small enough that a stalled shard
/// answers 503 within a few thousand requests rather than never.
pub const SHARD_MAILBOX_MAX_DEFAULT: usize = 4_096;

/// Largest accepted `--shard-mailbox-max`: beyond this the bound no longer
/// bounds anything useful (and the actor's own mailbox must stay above it).
pub const SHARD_MAILBOX_MAX_LIMIT: usize = 1 << 20;

/// Default tombstone retention: 30 days.
pub const TOMBSTONE_RETENTION_SECS_DEFAULT: u64 = 30 * 24 * 3600;

/// tokend: a spend-once token engine.
#[derive(Debug, Parser)]
#[command(
    name = "tokend",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Environment only (never flags: flags show in `ps`):\n  \
        TOKEND_ADMIN_KEY  the admin key (generated at first start when unset)\n  \
        TOKEND_DATA_KEY   encryption at rest of token data: keyId:base64-of-32-bytes, \
        comma-separated, the first sealing new values (docs/encryption.md); unset: off"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Summarize a data dir no server holds: snapshots, WAL, counts by
    /// status, checksums. Exits 1 on corruption.
    Inspect(OfflineArgs),
    /// Write a fresh snapshot of a data dir no server holds and drop the WAL
    /// segments it covers.
    Compact(OfflineArgs),
}

/// Flags of the offline tools.
#[derive(Debug, Clone, Args)]
pub struct OfflineArgs {
    /// The data dir.
    #[arg(long, env = "TOKEND_DATA_DIR", default_value = "./snapshots")]
    pub data_dir: PathBuf,
    /// `inspect` only: inspect a cluster on these NATS urls instead of a
    /// data dir (comma-separated).
    #[arg(long, env = "TOKEND_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// `inspect --cluster`: the cluster's name.
    #[arg(long, env = "TOKEND_CLUSTER_NAME", default_value = "tokend")]
    pub cluster_name: String,
}

/// Flags of `tokend serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP listen address.
    #[arg(long, env = "TOKEND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of WAL segments, snapshots and the admin key digest.
    #[arg(long, env = "TOKEND_DATA_DIR", default_value = "./snapshots")]
    pub data_dir: PathBuf,
    /// Number of shard actors (default: number of CPUs).
    #[arg(long, env = "TOKEND_SHARDS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,
    /// Number of HTTP worker threads (default: number of CPUs).
    #[arg(long, env = "TOKEND_HTTP_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub http_workers: Option<u16>,
    /// Milliseconds a client has to send a whole request head (request line
    /// and headers), from the connection's start or from the head's first
    /// byte; then 408 and the connection is closed. 5 s: a real client sends
    /// its head at once; a slow-loris client drips it.
    #[arg(long, env = "TOKEND_HTTP_HEAD_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub http_head_timeout_ms: u64,
    /// Milliseconds a client has to send a whole request body; then 408 and
    /// the connection is closed. 30 s: a 16 MiB batch at about 4 Mbit/s.
    #[arg(long, env = "TOKEND_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub http_body_timeout_ms: u64,
    /// Milliseconds an idle keep-alive connection stays open.
    #[arg(long, env = "TOKEND_HTTP_KEEP_ALIVE_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub http_keep_alive_ms: u64,
    /// Client connections open at once, in all; the next one is answered
    /// 503 `CONNECTION_LIMIT_REACHED` and closed.
    #[arg(long, env = "TOKEND_HTTP_CONNECTIONS_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_connections_max: u32,
    /// Client connections open at once from one IP address; the next one
    /// is answered 503 `CONNECTION_LIMIT_REACHED` and closed. Behind a
    /// proxy, every client has the proxy's address: raise it to the total.
    #[arg(long, env = "TOKEND_HTTP_CONNECTIONS_PER_CLIENT_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_connections_per_client_max: u32,
    /// Bytes of a request head (request line and all headers); a larger one
    /// is answered 431 `HEADERS_TOO_LARGE`.
    #[arg(long, env = "TOKEND_HTTP_HEAD_BYTES_MAX", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(1_024..=65_536))]
    pub http_head_bytes_max: u64,
    /// When the WAL is fsynced.
    #[arg(long, env = "TOKEND_FSYNC", value_enum, default_value = "always")]
    pub fsync: FsyncMode,
    /// Fsync period of `--fsync interval`.
    #[arg(long, env = "TOKEND_FSYNC_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub fsync_interval_ms: u64,
    /// Period of automatic snapshots.
    #[arg(long, env = "TOKEND_SNAPSHOT_INTERVAL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub snapshot_interval_secs: u64,
    /// How long redeemed, expired and deleted tokens stay readable.
    #[arg(long, env = "TOKEND_TOMBSTONE_RETENTION_SECS",
          default_value_t = TOMBSTONE_RETENTION_SECS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=3_650 * 24 * 3600))]
    pub tombstone_retention_secs: u64,
    /// Cluster mode: the NATS JetStream urls to join, comma-separated
    /// (e.g. `nats://h1:4222,nats://h2:4222`). Without it, tokend is a single
    /// node on its data dir.
    #[arg(long, env = "TOKEND_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Cluster mode: this node's id, unique in the cluster.
    #[arg(long, env = "TOKEND_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster mode: the cluster's name (several can share one NATS).
    #[arg(long, env = "TOKEND_CLUSTER_NAME", default_value = "tokend")]
    pub cluster_name: String,
    /// Cluster mode: the number of shards, fixed when the cluster is created;
    /// a node started with another value is refused.
    #[arg(long, env = "TOKEND_CLUSTER_SHARDS", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cluster_shards: u16,
    /// Cluster mode: replicas of the stream and buckets this node creates
    /// (fewer than 3 needs `--cluster-allow-unsafe`).
    #[arg(long, env = "TOKEND_CLUSTER_REPLICAS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=5))]
    pub cluster_replicas: u16,
    /// Cluster mode: accept settings that can lose acknowledged writes
    /// (fewer than 3 replicas, in-memory streams, a NATS server older than
    /// 2.15). For development only.
    #[arg(long, env = "TOKEND_CLUSTER_ALLOW_UNSAFE")]
    pub cluster_allow_unsafe: bool,
    /// Log lines on stderr: `text` for people (coloured only on a terminal)
    /// or `json`, one object per line. Which events: `RUST_LOG` (default
    /// `info`; e.g. `info,tokend::access=warn` drops the per-request lines
    /// below 5xx).
    #[arg(long, env = "TOKEND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Rate limit of each account API key, in requests per second; over it,
    /// 429 RATE_LIMITED with Retry-After. 0 (the default) turns limits off.
    /// The admin key is never limited.
    #[arg(long, env = "TOKEND_RATE_LIMIT_PER_SEC", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(RATE_PER_SEC_MAX)))]
    pub rate_limit_per_sec: u32,
    /// Requests an account API key may send at once after being idle (the
    /// bucket's size); default: the per-second rate. Needs
    /// --rate-limit-per-sec.
    #[arg(long, env = "TOKEND_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(RATE_PER_SEC_MAX)))]
    pub rate_limit_burst: Option<u32>,
    /// Requests one shard may hold at once (queued for it, being decided, or
    /// waiting for their log records to be durable); past it, 503
    /// OVERLOADED with Retry-After: 1, and the request changes nothing.
    #[arg(long, env = "TOKEND_SHARD_MAILBOX_MAX",
          default_value_t = SHARD_MAILBOX_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=SHARD_MAILBOX_MAX_LIMIT as i64))]
    pub shard_mailbox_max: u32,
}

impl Cli {
    /// The subcommand, `serve` when none was given.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }

    /// The serve flags (tests of the defaults).
    pub fn serve_args(self) -> Option<ServeArgs> {
        match self.command() {
            Command::Serve(args) => Some(args),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let args = Cli::try_parse_from(["tokend"])
            .unwrap()
            .serve_args()
            .unwrap();
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.data_dir, PathBuf::from("./snapshots"));
        assert_eq!(args.fsync, FsyncMode::Always);
        assert_eq!(args.fsync_interval_ms, 1000);
        assert_eq!(args.snapshot_interval_secs, 300);
        assert_eq!(args.tombstone_retention_secs, 30 * 24 * 3600);
        assert!(
            args.cluster.is_empty(),
            "a single node unless told otherwise"
        );
        assert_eq!(args.cluster_shards, 64);
        assert_eq!(args.cluster_replicas, 3);
        assert!(!args.cluster_allow_unsafe);
        assert_eq!(args.http_head_timeout_ms, 5_000);
        assert_eq!(args.http_body_timeout_ms, 30_000);
        assert_eq!(args.http_keep_alive_ms, 5_000);
        assert_eq!(args.http_connections_max, 10_000);
        assert_eq!(args.http_connections_per_client_max, 256);
        assert_eq!(args.http_head_bytes_max, 16_384);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.rate_limit_per_sec, 0, "no rate limit unless asked");
        assert_eq!(args.rate_limit_burst, None);
        assert_eq!(args.shard_mailbox_max as usize, SHARD_MAILBOX_MAX_DEFAULT);
    }

    #[test]
    fn http_limits_parse_within_their_ranges() {
        let args = Cli::try_parse_from([
            "tokend",
            "--http-head-timeout-ms",
            "250",
            "--http-connections-per-client-max",
            "8",
            "--http-head-bytes-max",
            "2048",
        ])
        .unwrap()
        .serve_args()
        .unwrap();
        assert_eq!(args.http_head_timeout_ms, 250);
        assert_eq!(args.http_connections_per_client_max, 8);
        assert_eq!(args.http_head_bytes_max, 2048);
        for bad in [
            ["tokend", "--http-head-bytes-max", "131072"],
            ["tokend", "--http-head-bytes-max", "100"],
            ["tokend", "--http-connections-max", "0"],
            ["tokend", "--http-body-timeout-ms", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limit_and_log_flags_parse() {
        let args = Cli::try_parse_from([
            "tokend",
            "--log-format",
            "json",
            "--rate-limit-per-sec",
            "50",
            "--rate-limit-burst",
            "100",
            "--shard-mailbox-max",
            "128",
        ])
        .unwrap()
        .serve_args()
        .unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.rate_limit_per_sec, 50);
        assert_eq!(args.rate_limit_burst, Some(100));
        assert_eq!(args.shard_mailbox_max, 128);
        for bad in [
            &["tokend", "--log-format", "xml"][..],
            &["tokend", "--shard-mailbox-max", "0"],
            &["tokend", "--rate-limit-burst", "0"],
            &["tokend", "--rate-limit-per-sec", "1000001"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cluster_flags_parse() {
        let args = Cli::try_parse_from([
            "tokend",
            "serve",
            "--cluster",
            "nats://a:4222,nats://b:4222",
            "--node-id",
            "n1",
            "--cluster-name",
            "prod",
            "--cluster-shards",
            "8",
        ])
        .unwrap()
        .serve_args()
        .unwrap();
        assert_eq!(args.cluster, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(args.node_id.as_deref(), Some("n1"));
        assert_eq!(args.cluster_name, "prod");
        assert_eq!(args.cluster_shards, 8);
        assert!(Cli::try_parse_from(["tokend", "--cluster-shards", "0"]).is_err());
    }

    #[test]
    fn serve_subcommand_takes_the_same_flags() {
        let args = Cli::try_parse_from([
            "tokend",
            "serve",
            "--shards",
            "3",
            "--fsync",
            "never",
            "--http-workers",
            "1",
        ])
        .unwrap()
        .serve_args()
        .unwrap();
        assert_eq!(args.shards, Some(3));
        assert_eq!(args.http_workers, Some(1));
        assert!(Cli::try_parse_from(["tokend", "--http-workers", "0"]).is_err());
        assert_eq!(args.fsync, FsyncMode::Never);
        assert!(Cli::try_parse_from(["tokend", "--shards", "0"]).is_err());
    }
}
