//! The `restore` profile: create N tokens through the batch route, measure
//! the server's resident memory per token and the snapshot size, then stop it
//! (SIGTERM) and time a restart on the same data dir from process start to
//! `GET /health/ready` = 200.

use super::api::{create_tenant, create_tokens, snapshot, wait_ready, SnapshotInfo};
use super::cli::Args;
use super::endpoint::spec;
use super::error::{LoadError, Result};
use super::http::Method;
use super::http::{Call, Conn, Target};
use super::report::{grouped, now_rfc3339, write_json, Machine};
use super::server::Server;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the restarted server may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(600);
/// Pause before reading RSS, so that the figure is not mid-request.
const SETTLE: Duration = Duration::from_millis(300);

/// Creating the tokens.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFigures {
    /// Tokens per batch request.
    pub batch_size: u64,
    /// Seconds.
    pub secs: f64,
    /// Tokens per second.
    pub tokens_per_sec: f64,
}

/// Resident memory.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    /// VmRSS after setup, before the tokens.
    pub rss_before_bytes: u64,
    /// VmRSS after the tokens.
    pub rss_after_bytes: u64,
    /// Growth per token.
    pub bytes_per_token: f64,
}

/// The snapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFigures {
    /// Seconds `POST /api/admin/snapshot` took.
    pub secs: f64,
    /// What the server answered.
    #[serde(flatten)]
    pub info: SnapshotInfo,
    /// Bytes per token.
    pub bytes_per_token: f64,
}

/// Stopping the first server.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopFigures {
    /// Seconds from SIGTERM to exit (includes the final snapshot).
    pub secs: f64,
    /// Exit code.
    pub exit_code: Option<i32>,
}

/// The restart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartFigures {
    /// Seconds from process start to `GET /health/ready` = 200.
    pub secs_to_ready: f64,
    /// Tokens restored per second over that time.
    pub tokens_per_sec: f64,
    /// VmRSS once ready.
    pub rss_bytes: u64,
    /// That RSS per token (whole process).
    pub rss_bytes_per_token: f64,
}

/// The results file of the restore profile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResults {
    /// `tokend-load`.
    pub tool: &'static str,
    /// Profiler version.
    pub version: &'static str,
    /// `restore`.
    pub profile: &'static str,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// The server binary.
    pub server_bin: String,
    /// `--fsync` of the server.
    pub fsync: String,
    /// `--shards` of the server, when given.
    pub shards: Option<u16>,
    /// Tokens created (three 8-character metadata pairs each, no data).
    pub tokens: u64,
    /// Creating them.
    pub create: CreateFigures,
    /// Memory.
    pub memory: MemoryFigures,
    /// The snapshot.
    pub snapshot: SnapshotFigures,
    /// Graceful stop.
    pub stop: StopFigures,
    /// Restart.
    pub restart: RestartFigures,
}

/// Runs the profile and writes `results-restore.json` in `out`.
pub async fn run(args: &Args, out: &Path) -> Result<RestoreResults> {
    if args.target.is_some() {
        return Err(LoadError::new(
            "the restore profile starts (and restarts) its own server: drop --target",
        ));
    }
    let n = args.tokens();
    if n == 0 {
        return Err(LoadError::new("the restore profile needs --tokens > 0"));
    }
    let started_at = now_rfc3339();
    let machine = Machine::detect();
    let (spec, remove_data) = spec(args, out.join("server-restore.log"))?;
    eprintln!(
        "starting {} (fsync {}, data dir {})",
        spec.bin.display(),
        spec.fsync,
        spec.data_dir.display()
    );
    let outcome = measure(args, &spec, n).await;
    if remove_data {
        let _ = std::fs::remove_dir_all(&spec.data_dir);
    }
    let (create, memory, snapshot, stop, restart) = outcome?;
    let results = RestoreResults {
        tool: "tokend-load",
        version: env!("CARGO_PKG_VERSION"),
        profile: "restore",
        started_at,
        machine,
        server_bin: spec.bin.display().to_string(),
        fsync: spec.fsync.clone(),
        shards: spec.shards,
        tokens: n,
        create,
        memory,
        snapshot,
        stop,
        restart,
    };
    write_json(&out.join("results-restore.json"), &results)?;
    Ok(results)
}

/// The figures of one restore run.
type Figures = (
    CreateFigures,
    MemoryFigures,
    SnapshotFigures,
    StopFigures,
    RestartFigures,
);

/// Creates, measures, snapshots, stops and restarts.
async fn measure(args: &Args, spec: &super::server::ServerSpec, n: u64) -> Result<Figures> {
    let server = Server::start(spec)?;
    let target = Target::from_addr(server.addr)?;
    let tenant = create_tenant(
        &target,
        &spec.admin_key,
        args.collections(),
        args.token_data,
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = server.rss_bytes()?;
    let t = Instant::now();
    let ids = create_tokens(&target, &tenant, n, args.batch_size).await?;
    let secs = t.elapsed().as_secs_f64();
    let create = CreateFigures {
        batch_size: args.batch_size,
        secs,
        tokens_per_sec: n as f64 / secs,
    };
    tokio::time::sleep(SETTLE).await;
    let rss_after = server.rss_bytes()?;
    let memory = MemoryFigures {
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_token: rss_after.saturating_sub(rss_before) as f64 / n as f64,
    };
    eprintln!("restore: taking a snapshot");
    let t = Instant::now();
    let info = snapshot(&target, &spec.admin_key).await?;
    let snapshot = SnapshotFigures {
        secs: t.elapsed().as_secs_f64(),
        bytes_per_token: info.bytes as f64 / n as f64,
        info,
    };
    eprintln!("restore: stopping the server (SIGTERM)");
    let (status, took) = server.stop()?;
    if !status.success() {
        return Err(LoadError::new(format!(
            "the server exited with {status} after SIGTERM; see {}",
            spec.log.display()
        )));
    }
    let stop = StopFigures {
        secs: took.as_secs_f64(),
        exit_code: status.code(),
    };
    eprintln!("restore: restarting on the same data dir");
    let server = Server::start(spec)?;
    let target = Target::from_addr(server.addr)?;
    wait_ready(&target, READY_LIMIT).await?;
    let secs_to_ready = server.started.elapsed().as_secs_f64();
    let rss = server.rss_bytes()?;
    if let Some(last) = ids.last() {
        check_token(&target, &tenant.key, last).await?;
    }
    let restart = RestartFigures {
        secs_to_ready,
        tokens_per_sec: n as f64 / secs_to_ready,
        rss_bytes: rss,
        rss_bytes_per_token: rss as f64 / n as f64,
    };
    let (status, _) = server.stop()?;
    if !status.success() {
        return Err(LoadError::new(format!(
            "the restarted server exited with {status} after SIGTERM; see {}",
            spec.log.display()
        )));
    }
    Ok((create, memory, snapshot, stop, restart))
}

/// Checks that a token created before the restart is there after it.
async fn check_token(target: &Target, key: &str, id: &str) -> Result<()> {
    let mut conn = Conn::new(target, Some(key))?;
    let path = format!("/api/tokens/{id}");
    let reply = conn
        .send_within(
            Call {
                method: Method::Get,
                path: &path,
                body: None,
            },
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| LoadError::new(format!("GET {path} after the restart: {e}")))?;
    if reply.status != 200 {
        return Err(LoadError::new(format!(
            "GET {path} after the restart answered {}: the token was lost",
            reply.status
        )));
    }
    Ok(())
}

/// The human summary.
pub fn table(r: &RestoreResults, json: &Path) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntokend-load · restore · {} tokens (3 metadata pairs of 8 characters, no data) · fsync {} · {} CPUs{}",
        grouped(r.tokens),
        r.fsync,
        r.machine.cpus,
        r.machine.load_note()
    );
    let _ = writeln!(
        out,
        "create    {:.1} s through the batch route, {} per request ({:.0} tokens/s)",
        r.create.secs,
        grouped(r.create.batch_size),
        r.create.tokens_per_sec
    );
    let _ = writeln!(
        out,
        "memory    RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per token",
        mib(r.memory.rss_before_bytes),
        mib(r.memory.rss_after_bytes),
        r.memory.bytes_per_token
    );
    let _ = writeln!(
        out,
        "snapshot  {:.1} MiB ({:.0} bytes per token, {}) in {:.2} s",
        mib(r.snapshot.info.bytes),
        r.snapshot.bytes_per_token,
        r.snapshot.info.file,
        r.snapshot.secs
    );
    let _ = writeln!(
        out,
        "stop      SIGTERM -> exit {} in {:.2} s (includes the final snapshot)",
        r.stop.exit_code.map_or("?".to_owned(), |c| c.to_string()),
        r.stop.secs
    );
    let _ = writeln!(
        out,
        "restart   process start -> /health/ready 200 in {:.2} s: {:.0} tokens/s; RSS then {:.1} MiB ({:.0} bytes per token)",
        r.restart.secs_to_ready,
        r.restart.tokens_per_sec,
        mib(r.restart.rss_bytes),
        r.restart.rss_bytes_per_token
    );
    let _ = writeln!(out, "results: {}", json.display());
    out
}
