//! `tokend`: see `tokend --help`.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokend::admin_key::{AdminKey, Bootstrap};
use tokend::api::edge::EdgeLimits;
use tokend::api::rate_limit::RateLimitSettings;
use tokend::app::{AppConfig, Application};
use tokend::clock::{Clock, SystemClock};
use tokend::cluster::ownership::LeaseTimes;
use tokend::cluster::ClusterConfig;
use tokend::config::{Cli, Command, ServeArgs};
use tokend::engine::EngineConfig;
use tokend::keyring::Keyring;
use tokend::logging::{self, LogFormat};
use tokend::offline;
use tokend::storage::FsStorage;
use tokend::store::StoreConfig;
use tokend::wal::WalOptions;

/// How often shard timers run (expiry, purges).
const TIMER_PERIOD: Duration = Duration::from_millis(100);
/// A snapshot is taken once the log grows by this much since the last cut,
/// which bounds restart time under heavy write load.
const SNAPSHOT_WAL_BYTES: u64 = 256 << 20;

fn main() -> ExitCode {
    let command = Cli::parse().command();
    logging::init(match &command {
        Command::Serve(args) => args.log_format,
        Command::Inspect(_) | Command::Compact(_) => LogFormat::Text,
    });
    tokend::malloc::tune_for_server();
    let keyring = match Keyring::from_env() {
        Ok(keyring) => Arc::new(keyring),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve(args) => actix_web::rt::System::new().block_on(serve(args, keyring)),
        Command::Inspect(args) if !args.cluster.is_empty() => actix_web::rt::System::new()
            .block_on(tokend::cluster::inspect::inspect(
                &args.cluster,
                &args.cluster_name,
                &mut std::io::stdout(),
            )),
        Command::Inspect(args) => offline::inspect(&args.data_dir, keyring, &mut std::io::stdout()),
        Command::Compact(args) if !args.cluster.is_empty() => {
            Err("compact works on a data dir; a cluster's logs are JetStream's".into())
        }
        Command::Compact(args) => offline::compact(&args.data_dir, keyring, &mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, keyring: Arc<Keyring>) -> Result<(), String> {
    if args.rate_limit_burst.is_some() && args.rate_limit_per_sec == 0 {
        return Err("--rate-limit-burst needs --rate-limit-per-sec (limits are off)".into());
    }
    let from_env = std::env::var("TOKEND_ADMIN_KEY").ok();
    let cluster = cluster_config(&args)?;
    let admin_key = if cluster.is_some() {
        // Every node must accept the same key: it comes from the
        // environment, never generated per node.
        match from_env.as_deref() {
            Some(key) if !key.is_empty() => AdminKey::from_key(key),
            _ => return Err("cluster mode needs TOKEND_ADMIN_KEY (the same on every node)".into()),
        }
    } else {
        tokend::storage::private::create_dir_all(&args.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", args.data_dir.display()))?;
        match AdminKey::bootstrap(&args.data_dir, from_env)
            .map_err(|e| format!("admin key: {e}"))?
        {
            Bootstrap::FromEnv(key) | Bootstrap::Stored(key) => key,
            Bootstrap::Generated(key, shown) => {
                show_generated_key(&shown, args.log_format);
                key
            }
        }
    };
    match keyring.sealing_key_id() {
        Some(sealing) => tracing::info!(
            sealing_key = sealing,
            key_ids = ?keyring.key_ids().collect::<Vec<_>>(),
            "encryption at rest on"
        ),
        None => tracing::info!("encryption at rest off (TOKEND_DATA_KEY unset)"),
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = args.shards.map_or(cpus, usize::from);
    let config = AppConfig {
        listen: args.listen,
        engine: EngineConfig {
            shards,
            tombstone_retention_ms: i64::try_from(args.tombstone_retention_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            timer_period: TIMER_PERIOD,
            store: StoreConfig {
                data_dir: args.data_dir.clone(),
                wal: WalOptions {
                    fsync: args.fsync,
                    fsync_interval_ms: args.fsync_interval_ms,
                    keyring,
                    ..WalOptions::default()
                },
                storage: Arc::new(FsStorage),
            },
            shard_mailbox_max: args.shard_mailbox_max as usize,
        },
        admin_key,
        clock: Arc::new(SystemClock),
        http_workers: args.http_workers.map_or(cpus, usize::from),
        snapshot_interval: Duration::from_secs(args.snapshot_interval_secs),
        snapshot_wal_bytes: SNAPSHOT_WAL_BYTES,
        edge: EdgeLimits {
            head_timeout: Duration::from_millis(args.http_head_timeout_ms),
            body_timeout: Duration::from_millis(args.http_body_timeout_ms),
            keep_alive: Duration::from_millis(args.http_keep_alive_ms),
            connections_max: args.http_connections_max,
            connections_per_client_max: args.http_connections_per_client_max,
            // The flag's range (at most 64 KiB) fits any usize.
            head_bytes_max: usize::try_from(args.http_head_bytes_max)
                .unwrap_or(tokend::api::edge::limits::HEAD_BYTES_MAX_LIMIT),
        },
        rate_limit: RateLimitSettings {
            per_sec: args.rate_limit_per_sec,
            burst: args.rate_limit_burst.unwrap_or(0),
        },
    };
    let app = match cluster {
        Some(cluster) => {
            let (node, name, shards) = (
                cluster.node_id.clone(),
                cluster.name.clone(),
                cluster.shards,
            );
            let app = Application::build_cluster(config, cluster)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(addr = %app.addr(), node, cluster = name, shards, "tokend ready");
            app
        }
        None => {
            let app = Application::build(config).map_err(|e| e.to_string())?;
            tracing::info!(addr = %app.addr(), shards, fsync = %args.fsync, "tokend ready");
            app
        }
    };
    tokend::malloc::release_free_memory();
    let handle = app.handle();
    actix_web::rt::spawn(async move {
        let signal = stop_signal().await;
        tracing::info!(signal, "stopping: finishing in-flight requests");
        handle.stop(true).await;
    });
    app.run_until_stopped()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    tracing::info!("tokend stopped");
    Ok(())
}

/// Prints a generated admin key once on stderr, in the log's format (a JSON
/// log stays one object per line). The one secret tokend ever writes out.
fn show_generated_key(shown: &str, format: LogFormat) {
    const MESSAGE: &str = "generated admin key (shown once, store it now)";
    match format {
        LogFormat::Text => eprintln!("tokend: {MESSAGE}: {shown}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": tokend::timestamp::format(SystemClock.now_ms()),
                "level": "WARN",
                "message": MESSAGE,
                "admin_key": shown,
                "target": "tokend",
            })
        ),
    }
}

/// The cluster to join, when `--cluster` names one.
fn cluster_config(args: &ServeArgs) -> Result<Option<ClusterConfig>, String> {
    if args.cluster.is_empty() {
        return Ok(None);
    }
    let node_id = args
        .node_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or("cluster mode needs --node-id (unique in the cluster)")?;
    let valid = node_id.len() <= 64
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!(
            "--node-id {node_id:?} must be 1 to 64 characters of letters, digits, - and _"
        ));
    }
    Ok(Some(ClusterConfig {
        urls: args.cluster.clone(),
        node_id,
        name: args.cluster_name.clone(),
        shards: args.cluster_shards,
        replicas: usize::from(args.cluster_replicas),
        allow_unsafe: args.cluster_allow_unsafe,
        lease: LeaseTimes::default(),
        snapshot_interval: Duration::from_secs(args.snapshot_interval_secs),
    }))
}

/// Resolves on SIGTERM or SIGINT, naming it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on SIGKILL, and the
        // WAL makes that safe; wait forever rather than stop at once.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
