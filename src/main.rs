//! `tokend`: see `tokend --help`.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokend::admin_key::{AdminKey, Bootstrap};
use tokend::app::{AppConfig, Application};
use tokend::clock::SystemClock;
use tokend::config::{Cli, Command, ServeArgs};
use tokend::engine::EngineConfig;
use tokend::offline;
use tokend::storage::FsStorage;
use tokend::store::StoreConfig;
use tokend::wal::WalOptions;
use tracing_subscriber::EnvFilter;

/// How often shard timers run (expiry, purges).
const TIMER_PERIOD: Duration = Duration::from_millis(100);
/// A snapshot is taken once the log grows by this much since the last cut,
/// which bounds restart time under heavy write load.
const SNAPSHOT_WAL_BYTES: u64 = 256 << 20;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokend::malloc::tune_for_server();
    let result = match Cli::parse().command() {
        Command::Serve(args) => actix_web::rt::System::new().block_on(serve(args)),
        Command::Inspect(args) => offline::inspect(&args.data_dir, &mut std::io::stdout()),
        Command::Compact(args) => offline::compact(&args.data_dir, &mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", args.data_dir.display()))?;
    let from_env = std::env::var("TOKEND_ADMIN_KEY").ok();
    let admin_key = match AdminKey::bootstrap(&args.data_dir, from_env)
        .map_err(|e| format!("admin key: {e}"))?
    {
        Bootstrap::FromEnv(key) | Bootstrap::Stored(key) => key,
        Bootstrap::Generated(key, shown) => {
            eprintln!("tokend: generated admin key (shown once, store it now): {shown}");
            key
        }
    };
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
                    ..WalOptions::default()
                },
                storage: Arc::new(FsStorage),
            },
        },
        admin_key,
        clock: Arc::new(SystemClock),
        http_workers: args.http_workers.map_or(cpus, usize::from),
        snapshot_interval: Duration::from_secs(args.snapshot_interval_secs),
        snapshot_wal_bytes: SNAPSHOT_WAL_BYTES,
    };
    let app = Application::build(config).map_err(|e| e.to_string())?;
    tracing::info!(addr = %app.addr(), shards, fsync = %args.fsync, "tokend ready");
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
