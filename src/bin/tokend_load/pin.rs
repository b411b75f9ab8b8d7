//! `--pin`: the pinned comparison. The spawned tokend (every thread) and
//! then Redis run on one CPU, the load generator (every thread) on another,
//! so that each server has exactly one core and the client never takes CPU
//! from it. One run measures `GET /health/live`, the profile and Redis
//! `GETDEL` and sums them up: requests/s, p50/p99 and the server's CPU per
//! request of each phase, and the ratios the performance targets are judged
//! by (docs/performance.md).

use super::affinity::{self, cpu_list, ThreadCpus};
use super::cli::{Args, Pinning, Profile};
use super::error::{LoadError, Result};
use super::redis::RedisFigures;
use super::report::grouped;
use super::stats::PhaseSummary;
use serde::Serialize;
use std::fmt::Write;

/// Target: the server's CPU per redeem, µs, at most.
pub const SERVER_CPU_TARGET_US: f64 = 15.0;
/// Target: redeems/s over Redis `GETDEL`s/s, each server on one core, at
/// least.
pub const REDIS_RATIO_TARGET: f64 = 0.9;
/// Target: redeem p99, ms, at most.
pub const P99_TARGET_MS: f64 = 5.0;
/// Redeems/s over `/health/live`/s, at least: the target of the unpinned
/// runs, shown beside the pinned figure for comparison.
pub const CEILING_RATIO_TARGET: f64 = 0.6;

/// Checks the `--pin` flags against this machine, gives the server one
/// shard and one HTTP worker unless the flags say otherwise, turns the
/// Redis phase on, and confines this process (every thread, and so every
/// thread it starts later) to the load generator's CPU. Called before the
/// runtime starts; does nothing without `--pin`.
pub fn prepare(args: &mut Args) -> Result<()> {
    let Some(pinning) = args.pinning() else {
        return Ok(());
    };
    if !matches!(args.profile, Profile::Redeem | Profile::HotCollection) {
        return Err(LoadError::new(format!(
            "--pin drives the redeem profile (or hot-collection), not {}",
            args.profile.name()
        )));
    }
    if args.ceiling_secs() == 0 {
        return Err(LoadError::new(
            "--pin measures GET /health/live too: --ceiling-secs must be at least 1",
        ));
    }
    if pinning.server_cpu == pinning.load_cpu {
        return Err(LoadError::new(format!(
            "--pin: --pin-server-cpu and --pin-load-cpu are both CPU {}: the server and the load generator need a CPU each",
            pinning.server_cpu
        )));
    }
    let allowed = affinity::allowed()?;
    if allowed.len() < 2 {
        return Err(LoadError::new(format!(
            "--pin needs at least 2 CPUs, one for the server and one for the load generator; this process may use {} ({})",
            allowed.len(),
            cpu_list(&allowed)
        )));
    }
    for (flag, cpu) in [
        ("--pin-server-cpu", pinning.server_cpu),
        ("--pin-load-cpu", pinning.load_cpu),
    ] {
        if !allowed.contains(&cpu) {
            return Err(LoadError::new(format!(
                "--pin: {flag} {cpu}: no such CPU available to this process (it may use {})",
                cpu_list(&allowed)
            )));
        }
    }
    args.shards.get_or_insert(1);
    args.http_workers.get_or_insert(1);
    args.compare_redis = true;
    affinity::pin_this_process(pinning.load_cpu)?;
    eprintln!(
        "pinned: the load generator on CPU {}; the server, then Redis, on CPU {}",
        pinning.load_cpu, pinning.server_cpu
    );
    Ok(())
}

/// One phase of the pinned comparison.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinPhase {
    /// `health/live`, the profile's name or `redis GETDEL`.
    pub name: String,
    /// Seconds from the first send to the last answer.
    pub secs: f64,
    /// Answered requests.
    pub requests: u64,
    /// Errors (non-2xx, transport, Redis nil replies).
    pub errors: u64,
    /// Answered requests per second.
    pub requests_per_sec: f64,
    /// Successful answers per second: the rate the ratios use.
    pub ok_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The server process's CPU (user + system, every thread, from
    /// `/proc/<pid>/stat`) over the phase per answered request, µs.
    pub server_cpu_per_request_us: Option<f64>,
    /// The server process's CPU over the phase's seconds: near 1, its one
    /// core was its bottleneck.
    pub server_core_share: Option<f64>,
    /// The load generator's CPU per answered request, µs.
    pub load_cpu_per_request_us: Option<f64>,
    /// The load generator's CPU over the phase's seconds.
    pub load_core_share: Option<f64>,
    /// How busy the server's CPU was (every process on it): well above
    /// `serverCoreShare`, something else ran there and took from the server.
    pub server_cpu_busy: Option<f64>,
    /// How busy the load generator's CPU was (every process on it).
    pub load_cpu_busy: Option<f64>,
}

impl PinPhase {
    /// The figures of a phase whose CPUs were `pinning`'s.
    fn of(phase: &PhaseSummary, pinning: Pinning) -> Self {
        let cpu = phase.cpu.as_ref();
        let busy = |n: usize| {
            cpu.and_then(|c| c.cpus.iter().find(|b| b.cpu == n))
                .map(|b| b.busy)
        };
        let secs = phase.secs.max(1e-9);
        Self {
            name: phase.name.clone(),
            secs: phase.secs,
            requests: phase.requests,
            errors: phase.errors,
            requests_per_sec: phase.throughput,
            ok_per_sec: phase.ok_throughput,
            p50_ms: phase.latency_ms.p50,
            p99_ms: phase.latency_ms.p99,
            server_cpu_per_request_us: cpu.and_then(|c| c.server_cpu_per_request_us),
            server_core_share: cpu.and_then(|c| c.server_cpu_secs).map(|s| s / secs),
            load_cpu_per_request_us: cpu.map(|c| c.client_cpu_per_request_us),
            load_core_share: cpu.map(|c| c.client_cpu_secs / secs),
            server_cpu_busy: busy(pinning.server_cpu),
            load_cpu_busy: busy(pinning.load_cpu),
        }
    }
}

/// One performance target, as measured in this run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinTarget {
    /// Stable name, for tools reading the JSON.
    pub key: &'static str,
    /// What is measured, for people.
    pub what: String,
    /// The figure (`None` when its phase did not run).
    pub measured: Option<f64>,
    /// Its unit: `µs`, `ms` or `×`.
    pub unit: &'static str,
    /// The target.
    pub target: f64,
    /// Whether the figure must be at most (else at least) the target.
    pub at_most: bool,
    /// Whether it is met (`None` when not measured).
    pub met: Option<bool>,
}

impl PinTarget {
    /// A target and its figure.
    fn new(
        key: &'static str,
        what: String,
        measured: Option<f64>,
        unit: &'static str,
        target: f64,
        at_most: bool,
    ) -> Self {
        let measured = measured.filter(|m| m.is_finite());
        Self {
            key,
            what,
            measured,
            unit,
            target,
            at_most,
            met: measured.map(|m| if at_most { m <= target } else { m >= target }),
        }
    }
}

/// The pinned comparison in the results file (`pin`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinSummary {
    /// The CPU of the server and of Redis.
    pub server_cpu: usize,
    /// The CPU of the load generator.
    pub load_cpu: usize,
    /// `--shards` of the server.
    pub shards: Option<u16>,
    /// `--http-workers` of the server.
    pub http_workers: Option<u16>,
    /// The CPUs the server's threads could run on, read from the kernel
    /// after the profile: `[serverCpu]` when the pinning held.
    pub server_threads: Option<ThreadCpus>,
    /// The same for Redis.
    pub redis_threads: Option<ThreadCpus>,
    /// `GET /health/live`: the HTTP ceiling of one core.
    pub health_live: Option<PinPhase>,
    /// The profile (`redeem`, or `hot-collection`).
    pub redeem: PinPhase,
    /// Redis `GETDEL` of existing keys, AOF fsynced per write.
    pub redis_getdel: Option<PinPhase>,
    /// Why the Redis phase did not run, when it did not.
    pub redis_skipped: Option<String>,
    /// Redeems/s over Redis `GETDEL`s/s. Each server had one core, so this
    /// is also their ratio per core.
    pub redeem_per_redis_getdel: Option<f64>,
    /// Redeems per second of server CPU over Redis `GETDEL`s per second of
    /// server CPU (Redis's CPU per request over the server's): the same as
    /// the above when both servers kept their core busy.
    pub redeem_per_redis_getdel_by_cpu: Option<f64>,
    /// Redeems/s over `/health/live`/s.
    pub redeem_per_health_live: Option<f64>,
    /// The targets, each with its figure.
    pub targets: Vec<PinTarget>,
}

/// Ratio of two rates, when the divisor is positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b).filter(|r| r.is_finite())
}

impl PinSummary {
    /// The summary of a pinned run's phases.
    pub fn new(
        args: &Args,
        pinning: Pinning,
        ceiling: Option<&PhaseSummary>,
        run: &PhaseSummary,
        redis: Option<&RedisFigures>,
        redis_skipped: Option<&str>,
        server_threads: Option<ThreadCpus>,
    ) -> Self {
        let health_live = ceiling.map(|c| PinPhase::of(c, pinning));
        let redeem = PinPhase::of(run, pinning);
        let redis_getdel = redis.map(|r| PinPhase::of(&r.run, pinning));
        let redeem_per_redis_getdel = redis_getdel
            .as_ref()
            .and_then(|r| ratio(redeem.ok_per_sec, r.ok_per_sec));
        let redeem_per_redis_getdel_by_cpu = redis_getdel.as_ref().and_then(|r| {
            r.server_cpu_per_request_us
                .zip(redeem.server_cpu_per_request_us)
                .and_then(|(redis, tokend)| ratio(redis, tokend))
        });
        let redeem_per_health_live = health_live
            .as_ref()
            .and_then(|h| ratio(redeem.ok_per_sec, h.ok_per_sec));
        let name = args.profile.name();
        let targets = vec![
            PinTarget::new(
                "serverCpuPerRequestUs",
                format!("{name}: server CPU per request"),
                redeem.server_cpu_per_request_us,
                "µs",
                SERVER_CPU_TARGET_US,
                true,
            ),
            PinTarget::new(
                "redeemPerRedisGetdel",
                format!("{name}/s ÷ Redis GETDEL/s, one core each"),
                redeem_per_redis_getdel,
                "×",
                REDIS_RATIO_TARGET,
                false,
            ),
            PinTarget::new(
                "p99Ms",
                format!("{name} p99"),
                Some(redeem.p99_ms),
                "ms",
                P99_TARGET_MS,
                true,
            ),
            PinTarget::new(
                "redeemPerHealthLive",
                format!("{name}/s ÷ /health/live/s"),
                redeem_per_health_live,
                "×",
                CEILING_RATIO_TARGET,
                false,
            ),
        ];
        Self {
            server_cpu: pinning.server_cpu,
            load_cpu: pinning.load_cpu,
            shards: args.shards,
            http_workers: args.http_workers,
            server_threads,
            redis_threads: redis.and_then(|r| r.threads_cpus.clone()),
            health_live,
            redeem,
            redis_getdel,
            redis_skipped: redis_skipped.map(str::to_owned),
            redeem_per_redis_getdel,
            redeem_per_redis_getdel_by_cpu,
            redeem_per_health_live,
            targets,
        }
    }
}

/// `12.3` with `digits` decimals, or `n/a`.
fn or_na(value: Option<f64>, digits: usize) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// A share of a core as a percentage, or `n/a`.
fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

/// Where the threads of a process could run, for the heading.
fn threads_note(name: &str, threads: Option<&ThreadCpus>) -> String {
    threads.map_or(String::new(), |t| {
        let cpus: Vec<String> = t.cpus.iter().map(usize::to_string).collect();
        format!(
            " · {name}'s {} threads on CPU {}",
            t.threads,
            cpus.join(",")
        )
    })
}

/// One row of the phase table.
fn phase_row(out: &mut String, p: &PinPhase) {
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>11} {:>7} {:>10} {:>11} {:>7} {:>9}",
        p.name,
        grouped(p.requests),
        p.ok_per_sec,
        p.p50_ms,
        p.p99_ms,
        or_na(p.server_cpu_per_request_us, 1),
        percent(p.server_core_share),
        percent(p.server_cpu_busy),
        or_na(p.load_cpu_per_request_us, 1),
        percent(p.load_core_share),
        grouped(p.errors),
    );
}

/// The summary table of a pinned run.
pub fn table(pin: &PinSummary) -> String {
    let mut out = String::new();
    let count = |n: Option<u16>, what: &str| {
        n.map_or(format!("default {what}s"), |n| {
            format!("{n} {what}{}", if n == 1 { "" } else { "s" })
        })
    };
    let _ = writeln!(
        out,
        "\npinned: server and Redis on CPU {}, load generator on CPU {} · tokend {}, {}{}{}",
        pin.server_cpu,
        pin.load_cpu,
        count(pin.shards, "shard"),
        count(pin.http_workers, "HTTP worker"),
        threads_note("tokend", pin.server_threads.as_ref()),
        threads_note("Redis", pin.redis_threads.as_ref()),
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>8} {:>8} {:>11} {:>7} {:>10} {:>11} {:>7} {:>9}",
        "phase",
        "requests",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "server µs",
        "server",
        format!("CPU {}", pin.server_cpu),
        "load µs",
        "load",
        "errors"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>8} {:>8} {:>11} {:>7} {:>10} {:>11} {:>7} {:>9}",
        "", "", "", "", "", "per req", "core", "busy", "per req", "core", ""
    );
    if let Some(h) = &pin.health_live {
        phase_row(&mut out, h);
    }
    phase_row(&mut out, &pin.redeem);
    match (&pin.redis_getdel, &pin.redis_skipped) {
        (Some(r), _) => phase_row(&mut out, r),
        (None, Some(why)) => {
            let _ = writeln!(out, "{:<16} skipped: {why}", "redis GETDEL");
        }
        (None, None) => {
            let _ = writeln!(out, "{:<16} skipped", "redis GETDEL");
        }
    }
    let _ = writeln!(
        out,
        "(server µs per req: the server process's CPU over the phase per answer; CPU {} busy: every process on it — above the server's core share, other work took from it)",
        pin.server_cpu
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10}  verdict",
        "target", "measured", "target"
    );
    for t in &pin.targets {
        let digits = if t.unit == "µs" { 1 } else { 2 };
        let measured = t.measured.map_or("n/a".to_owned(), |m| {
            format!("{m:.digits$} {}", t.unit).replace(" ×", "×")
        });
        let target = format!(
            "{} {} {}",
            if t.at_most { "≤" } else { "≥" },
            t.target,
            t.unit
        )
        .replace(" ×", "×");
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10}  {}",
            t.what,
            measured,
            target,
            match t.met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "n/a",
            }
        );
    }
    if let Some(r) = pin.redeem_per_redis_getdel_by_cpu {
        let _ = writeln!(
            out,
            "per second of server CPU: {:.2}× Redis (Redis's CPU per GETDEL over tokend's per {})",
            r, pin.redeem.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_met_on_its_side_only() {
        let at_most = PinTarget::new("k", String::new(), Some(15.0), "µs", 15.0, true);
        assert_eq!(at_most.met, Some(true));
        let over = PinTarget::new("k", String::new(), Some(15.1), "µs", 15.0, true);
        assert_eq!(over.met, Some(false));
        let under = PinTarget::new("k", String::new(), Some(0.89), "×", 0.9, false);
        assert_eq!(under.met, Some(false));
        let none = PinTarget::new("k", String::new(), None, "×", 0.9, false);
        assert_eq!(none.met, None);
        let nan = PinTarget::new("k", String::new(), Some(f64::NAN), "×", 0.9, false);
        assert_eq!((nan.measured, nan.met), (None, None));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
    }
}
