//! The profiler: see the binary's documentation.

pub mod affinity;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod http;
pub mod nats;
pub mod pin;
pub mod redis;
pub mod report;
pub mod restore;
pub mod server;
pub mod spend_once;
pub mod stats;
pub mod svg;
pub mod tokens;
pub mod workload;

use cli::{Args, Pinning, Profile};
use driver::{run_phase, PhasePlan, SnapshotPlan};
use endpoint::Endpoint;
use error::{Context, LoadError, Result};
use http::Conn;
use pin::PinSummary;
use report::{write_json, Baseline, LoadResults, Machine, Settings, SetupFigures};
use spend_once::Expect;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokens::TokenPool;
use workload::{Mix, Workload};

/// Exit code when a token got more than one successful redeem.
const EXIT_SPEND_ONCE: u8 = 3;

/// How a run ended.
pub enum Verdict {
    /// Every check passed.
    Passed,
    /// The spend-once check failed.
    SpendOnceViolated,
}

/// Runs the profiler; the exit code is 0 on success, 1 on an error, 3 when
/// the spend-once check failed.
pub fn run(mut args: Args) -> ExitCode {
    // Before the runtime starts its threads: they inherit the pinning.
    if let Err(e) = pin::prepare(&mut args) {
        eprintln!("tokend-load: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    };
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(main(args)),
        Err(e) => Err(LoadError::new(format!("cannot start the runtime: {e}"))),
    };
    match outcome {
        Ok(Verdict::Passed) => ExitCode::SUCCESS,
        Ok(Verdict::SpendOnceViolated) => {
            eprintln!("tokend-load: the spend-once check FAILED");
            ExitCode::from(EXIT_SPEND_ONCE)
        }
        Err(e) => {
            eprintln!("tokend-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the flags, then runs the profile.
async fn main(args: Args) -> Result<Verdict> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadError::new(format!(
                "--rate {rate}: must be a positive number"
            )));
        }
    }
    if let Some(at) = args.snapshot_at_secs {
        if !(at.is_finite() && at >= 0.0 && at < args.snapshot_phase_secs() as f64) {
            return Err(LoadError::new(format!(
                "--snapshot-at-secs {at}: must be at least 0 and less than the {} s of the snapshot phase",
                args.snapshot_phase_secs()
            )));
        }
    }
    if args.profile == Profile::Restore && (args.compare_redis || args.snapshot_during) {
        return Err(LoadError::new(
            "--compare-redis and --snapshot-during go with the load profiles, not restore",
        ));
    }
    std::fs::create_dir_all(&args.out)
        .context(|| format!("cannot create --out {}", args.out.display()))?;
    if args.profile == Profile::Cluster {
        return cluster::run(&args).await;
    }
    if args.profile == Profile::Restore {
        let results = restore::run(&args, &args.out).await?;
        print!(
            "{}",
            restore::table(&results, &args.out.join("results-restore.json"))
        );
        return Ok(Verdict::Passed);
    }
    load(&args).await
}

/// The mix of a load profile.
fn mix(args: &Args) -> Mix {
    match args.profile {
        Profile::Redeem | Profile::HotCollection | Profile::Restore | Profile::Cluster => {
            Mix::Redeem
        }
        Profile::Create => Mix::Create,
        Profile::Mixed => Mix::Mixed,
        Profile::BatchRedeem => Mix::BatchRedeem(args.batch_items),
        Profile::HoldCapture => Mix::HoldCapture,
    }
}

/// A load profile: setup, ceiling, profile, spend-once check, report.
async fn load(args: &Args) -> Result<Verdict> {
    let profile = args.profile.name();
    let started_at = report::now_rfc3339();
    let mut machine = Machine::detect();
    if args.pin {
        machine.cpus = affinity::online().unwrap_or(machine.cpus);
    }
    let mix = mix(args);
    let n = if mix == Mix::Create { 0 } else { args.tokens() };
    if mix != Mix::Create && n == 0 {
        return Err(LoadError::new(format!(
            "the {profile} profile needs --tokens > 0"
        )));
    }
    let baseline = args.baseline.as_deref().map(Baseline::read).transpose()?;
    let endpoint = Endpoint::open(args, args.out.join(format!("server-{profile}.log")))?;
    let target = endpoint.target.clone();
    let server_pid = endpoint.spawned.as_ref().map(|(server, _)| server.pid());
    let pinning = args.pinning();
    let watched = pinning.map(Pinning::cpus).unwrap_or_default();
    let tenant = api::create_tenant(
        &target,
        &endpoint.admin_key,
        args.collections(),
        args.token_data,
    )
    .await?;
    let t = Instant::now();
    let ids = if n > 0 {
        api::create_tokens(&target, &tenant, n, args.batch_size).await?
    } else {
        Vec::new()
    };
    let setup_secs = t.elapsed().as_secs_f64();
    if n > 0 {
        eprintln!(
            "setup: {n} tokens in {setup_secs:.1} s ({:.0}/s)",
            n as f64 / setup_secs
        );
    }
    let pool = Arc::new(TokenPool::new(ids));
    let mut conns = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let mut conn = Conn::new(&target, Some(&tenant.key))?;
        conn.open()
            .await
            .context(|| format!("cannot connect to {}", target.url()))?;
        conns.push(conn);
    }
    let ceiling = if args.ceiling_secs() > 0 {
        let live = Arc::new(Workload::new(Mix::Live, Arc::clone(&pool), Vec::new()));
        let plan = PhasePlan {
            name: "health/live".to_owned(),
            duration: Duration::from_secs(args.ceiling_secs()),
            rate: None,
            server_pid,
            snapshot: None,
            cpus: watched.clone(),
        };
        let (back, summary) = run_phase(conns, live, &plan).await?;
        conns = back;
        Some(summary)
    } else {
        None
    };
    let workload = Arc::new(
        Workload::new(mix, Arc::clone(&pool), tenant.collections.clone())
            .with_token_data(tenant.token_data),
    );
    let plan = PhasePlan {
        name: profile.to_owned(),
        duration: Duration::from_secs(args.duration_secs),
        rate: args.rate,
        server_pid,
        snapshot: None,
        cpus: watched.clone(),
    };
    let (mut conns, run) = run_phase(conns, Arc::clone(&workload), &plan).await?;
    // Every thread the server started by now, read back from the kernel.
    let server_threads = match (pinning, server_pid) {
        (Some(_), Some(pid)) => Some(affinity::process_cpus(pid)?),
        _ => None,
    };
    let snapshot_phase = if args.snapshot_during {
        let plan = PhasePlan {
            name: format!("{profile}+snapshot"),
            duration: Duration::from_secs(args.snapshot_phase_secs()),
            rate: args.rate,
            server_pid,
            snapshot: Some(SnapshotPlan {
                at: args.snapshot_at(),
                target: target.clone(),
                admin_key: endpoint.admin_key.clone(),
            }),
            cpus: watched,
        };
        let (back, summary) = run_phase(conns, workload, &plan).await?;
        conns = back;
        Some(summary)
    } else {
        None
    };
    let spend_once = if mix == Mix::Create {
        None
    } else {
        let check = spend_once::check(&pool, &mut conns, args.probe).await;
        Some(match mix {
            Mix::BatchRedeem(_) => check
                .with_readback(spend_once::read_back(&pool, &mut conns, Expect::Redeemed).await),
            Mix::HoldCapture => check
                .with_readback(spend_once::read_back(&pool, &mut conns, Expect::Captured).await),
            _ => check,
        })
    };
    drop(conns);
    let server = endpoint.close()?;
    let ratio_to_ceiling = ceiling
        .as_ref()
        .filter(|c| c.ok_throughput > 0.0)
        .map(|c| run.ok_throughput / c.ok_throughput);
    let (redis, redis_skipped) = if args.compare_redis {
        compare_redis(args).await
    } else {
        (None, None)
    };
    let ratio_to_redis = redis
        .as_ref()
        .filter(|r| r.run.ok_throughput > 0.0)
        .map(|r| run.ok_throughput / r.run.ok_throughput);
    let baseline = baseline.map(|b| b.compare(&run, args.profile.redeemed_ratio_target()));
    let pin = pinning.map(|pinning| {
        PinSummary::new(
            args,
            pinning,
            ceiling.as_ref(),
            &run,
            redis.as_ref(),
            redis_skipped.as_deref(),
            server_threads,
        )
    });
    let results = LoadResults {
        tool: "tokend-load",
        version: env!("CARGO_PKG_VERSION"),
        profile: profile.to_owned(),
        started_at,
        machine,
        server,
        settings: Settings {
            connections: args.connections,
            duration_secs: args.duration_secs,
            ceiling_secs: args.ceiling_secs(),
            tokens: n,
            collections: args.collections(),
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: args.rate,
            threads: args.threads,
            batch_items: matches!(mix, Mix::BatchRedeem(_)).then_some(args.batch_items),
        },
        setup: SetupFigures {
            tokens_created: n,
            secs: setup_secs,
            tokens_per_sec: if n > 0 { n as f64 / setup_secs } else { 0.0 },
        },
        ceiling,
        run,
        ratio_to_ceiling,
        snapshot_phase,
        redis,
        redis_skipped,
        ratio_to_redis,
        baseline,
        spend_once,
        pin,
    };
    write_outputs(&results, &args.out)
}

/// The Redis comparison, or why it was skipped (Redis missing, or failing:
/// the tokend figures are kept either way).
async fn compare_redis(args: &Args) -> (Option<redis::RedisFigures>, Option<String>) {
    let bin = match redis::find_redis(args.redis_server.as_deref()) {
        Ok(bin) => bin,
        Err(why) => {
            eprintln!("redis comparison skipped: {why}");
            return (None, Some(why));
        }
    };
    let keys = args.tokens().max(1);
    let outcome = redis::compare(
        &bin,
        &args.out.join("redis.log"),
        keys,
        args.connections,
        Duration::from_secs(args.duration_secs),
        args.redis_benchmark,
        args.pinning(),
    )
    .await;
    match outcome {
        Ok(figures) => (Some(figures), None),
        Err(e) => {
            let why = format!("the Redis run failed: {e}");
            eprintln!("redis comparison skipped: {why}");
            (None, Some(why))
        }
    }
}

/// Writes the JSON and SVG files and prints the table.
fn write_outputs(results: &LoadResults, out: &Path) -> Result<Verdict> {
    let profile = &results.profile;
    let json = out.join(format!("results-{profile}.json"));
    let svg = out.join(format!("latency-{profile}.svg"));
    write_json(&json, results)?;
    let title = format!(
        "tokend-load {profile}: {} connections, {}",
        results.settings.connections,
        results
            .settings
            .rate
            .map_or("closed loop".to_owned(), |r| format!(
                "open loop {r:.0} req/s"
            ))
    );
    let picture = svg::plot(
        &title,
        &results.run.timeline,
        results.ceiling.as_ref().map(|c| c.throughput),
    );
    std::fs::write(&svg, picture).context(|| format!("cannot write {}", svg.display()))?;
    print!("{}", report::table(results, &json, &svg));
    match &results.spend_once {
        Some(check) if !check.passed => Ok(Verdict::SpendOnceViolated),
        _ => Ok(Verdict::Passed),
    }
}
