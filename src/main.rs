//! `tokend`: see `tokend --help`.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokend::admin_key::{AdminKey, Bootstrap};
use tokend::app::{AppConfig, Application};
use tokend::clock::SystemClock;
use tokend::config::{Cli, ServeArgs};
use tokend::engine::EngineConfig;
use tracing_subscriber::EnvFilter;

/// How often shard timers run (expiry, purges).
const TIMER_PERIOD: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Cli::parse().serve_args();
    match actix_web::rt::System::new().block_on(serve(args)) {
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
        },
        admin_key,
        clock: Arc::new(SystemClock),
        http_workers: cpus,
    };
    let app =
        Application::build(config).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(addr = %app.addr(), shards, "tokend listening");
    app.run_until_stopped()
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("tokend stopped");
    Ok(())
}
