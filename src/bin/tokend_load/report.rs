//! The results: what is written to `results-<profile>.json`, and the human
//! table printed on stdout.

use super::error::{Context, LoadError, Result};
use super::pin::PinSummary;
use super::redis::RedisFigures;
use super::spend_once::SpendOnce;
use super::stats::{Percentiles, PhaseSummary};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Logical CPUs available to the profiler (with `--pin`, which confines
    /// it to one: the CPUs online).
    pub cpus: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Load average (1, 5, 15 min) when the run started: other work on the
    /// machine skews every figure.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    /// Reads the figures of this machine (Linux `/proc`; absent elsewhere).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            memory_bytes: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| {
                    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
                    Some([fields.next()??, fields.next()??, fields.next()??])
                }),
        }
    }

    /// `load average 1.23 at start` when known.
    pub fn load_note(&self) -> String {
        self.load_average.map_or(String::new(), |[one, _, _]| {
            format!(" · load average {one:.2} at start")
        })
    }
}

/// The server profiled.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// Whether the profiler started it.
    pub spawned: bool,
    /// Its URL.
    pub url: String,
    /// The binary, when spawned.
    pub bin: Option<String>,
    /// `--fsync`, when spawned.
    pub fsync: Option<String>,
    /// `--shards`, when spawned and given.
    pub shards: Option<u16>,
    /// `--http-workers`, when spawned and given.
    pub http_workers: Option<u16>,
    /// Exit code after SIGTERM, when spawned.
    pub exit_code: Option<i32>,
    /// Seconds from SIGTERM to exit, when spawned.
    pub stop_secs: Option<f64>,
}

/// The settings of a load run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Connections.
    pub connections: u32,
    /// Seconds of the profile phase.
    pub duration_secs: u64,
    /// Seconds of the ceiling phase.
    pub ceiling_secs: u64,
    /// Tokens created before the run.
    pub tokens: u64,
    /// Collections.
    pub collections: u32,
    /// `closed` (max) or `open` (fixed rate).
    pub mode: &'static str,
    /// Open loop: requests per second.
    pub rate: Option<f64>,
    /// Load generator threads.
    pub threads: u32,
    /// `batch-redeem`: items per request.
    pub batch_items: Option<u32>,
}

/// How long setup took.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupFigures {
    /// Tokens created through the batch route.
    pub tokens_created: u64,
    /// Seconds it took.
    pub secs: f64,
    /// Tokens per second.
    pub tokens_per_sec: f64,
}

/// The results file of a load profile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadResults {
    /// `tokend-load`.
    pub tool: &'static str,
    /// Profiler version.
    pub version: &'static str,
    /// The profile.
    pub profile: String,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// The server.
    pub server: ServerInfo,
    /// Settings.
    pub settings: Settings,
    /// Setup figures.
    pub setup: SetupFigures,
    /// `GET /health/live` with the same connections: the HTTP ceiling.
    pub ceiling: Option<PhaseSummary>,
    /// The profile.
    pub run: PhaseSummary,
    /// 2xx per second of the run over the ceiling's.
    pub ratio_to_ceiling: Option<f64>,
    /// `--snapshot-during`: the profile again, with a snapshot in it.
    pub snapshot_phase: Option<PhaseSummary>,
    /// `--compare-redis`: Redis `GETDEL` with the same connections.
    pub redis: Option<RedisFigures>,
    /// `--compare-redis` when Redis could not run: why.
    pub redis_skipped: Option<String>,
    /// 2xx per second of the run over Redis `GETDEL`s per second.
    pub ratio_to_redis: Option<f64>,
    /// `--baseline`: this run against an earlier one.
    pub baseline: Option<BaselineComparison>,
    /// The spend-once check (profiles that redeem).
    pub spend_once: Option<SpendOnce>,
    /// `--pin`: the pinned comparison of the phases.
    pub pin: Option<PinSummary>,
}

/// The figures of an earlier run read from its results file.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The file.
    file: String,
    /// Its profile.
    profile: String,
    /// When it started.
    started_at: String,
    /// Its 2xx per second.
    ok_throughput: f64,
    /// Its p99, ms.
    p99_ms: f64,
    /// Its tokens redeemed per second (absent from older results files).
    redeemed_per_sec: Option<f64>,
}

impl Baseline {
    /// Reads `run.okThroughput` and `run.latencyMs.p99` of a results file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .context(|| format!("--baseline {}: cannot read it", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .context(|| format!("--baseline {}: not JSON", path.display()))?;
        let number = |pointer: &str| {
            v.pointer(pointer)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| {
                    LoadError::new(format!(
                        "--baseline {}: no number at {pointer} (not a load results file?)",
                        path.display()
                    ))
                })
        };
        let text_at = |pointer: &str| {
            v.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        Ok(Self {
            file: path.display().to_string(),
            profile: text_at("/profile"),
            started_at: text_at("/startedAt"),
            ok_throughput: number("/run/okThroughput")?,
            p99_ms: number("/run/latencyMs/p99")?,
            redeemed_per_sec: v
                .pointer("/run/redeemedPerSec")
                .and_then(serde_json::Value::as_f64),
        })
    }

    /// This run's figures as ratios of the baseline's; `target` is what
    /// the ratio of tokens redeemed per second should reach, if anything.
    pub fn compare(self, run: &PhaseSummary, target: Option<f64>) -> BaselineComparison {
        let redeemed_ratio = self
            .redeemed_per_sec
            .filter(|&r| r > 0.0)
            .map(|r| run.redeemed_per_sec / r);
        BaselineComparison {
            throughput_ratio: (self.ok_throughput > 0.0)
                .then(|| run.ok_throughput / self.ok_throughput),
            p99_ratio: (self.p99_ms > 0.0).then(|| run.latency_ms.p99 / self.p99_ms),
            redeemed_per_sec: self.redeemed_per_sec,
            redeemed_ratio,
            redeemed_ratio_target: target,
            target_met: target.zip(redeemed_ratio).map(|(t, r)| r >= t),
            file: self.file,
            profile: self.profile,
            started_at: self.started_at,
            ok_throughput: self.ok_throughput,
            p99_ms: self.p99_ms,
        }
    }
}

/// This run against the run of a `--baseline` file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineComparison {
    /// The baseline's results file.
    pub file: String,
    /// Its profile.
    pub profile: String,
    /// When it started.
    pub started_at: String,
    /// Its 2xx per second.
    pub ok_throughput: f64,
    /// Its p99, ms.
    pub p99_ms: f64,
    /// This run's 2xx per second over the baseline's.
    pub throughput_ratio: Option<f64>,
    /// This run's p99 over the baseline's.
    pub p99_ratio: Option<f64>,
    /// The baseline's tokens redeemed per second.
    pub redeemed_per_sec: Option<f64>,
    /// This run's tokens redeemed per second (tokens of a batch redeem,
    /// captured pairs) over the baseline's.
    pub redeemed_ratio: Option<f64>,
    /// What `redeemedRatio` should reach (`batch-redeem`: 4,
    /// `hold-capture`: 0.45).
    pub redeemed_ratio_target: Option<f64>,
    /// Whether it did.
    pub target_met: Option<bool>,
}

/// The CPU line of a phase: load generator and server CPU per request.
fn cpu_line(out: &mut String, phase: &PhaseSummary) {
    let Some(cpu) = &phase.cpu else { return };
    let server = match (cpu.server_cpu_per_request_us, cpu.server_cpu_secs) {
        (Some(us), Some(secs)) => format!(
            " · server {us:.1} µs/request ({:.0}% of a core)",
            secs / phase.secs * 100.0
        ),
        _ => String::new(),
    };
    let others = cpu.other_cores_busy.map_or(String::new(), |o| {
        format!(" · other processes {:.0}% of a core", o * 100.0)
    });
    let _ = writeln!(
        out,
        "  cpu {:<14} load generator {:.1} µs/request ({:.0}% of a core){server}{others}",
        phase.name,
        cpu.client_cpu_per_request_us,
        cpu.client_cpu_secs / phase.secs * 100.0
    );
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).context(|| "cannot encode the results".to_owned())?;
    std::fs::write(path, text + "\n").context(|| format!("cannot write {}", path.display()))
}

/// The current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `12345678` as `12 345 678`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// One table row.
fn row(out: &mut String, name: &str, requests: u64, rate: f64, errors: u64, p: &Percentiles) {
    let _ = writeln!(
        out,
        "{name:<16} {:>11} {:>10.0} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        grouped(requests),
        rate,
        errors,
        p.p50,
        p.p90,
        p.p99,
        p.p999,
        p.max
    );
}

/// The human table of a load run.
pub fn table(results: &LoadResults, json: &Path, svg: &Path) -> String {
    let mut out = String::new();
    let s = &results.settings;
    let server = if results.server.spawned {
        format!(
            "fsync {} · {}{} (spawned)",
            results.server.fsync.as_deref().unwrap_or("?"),
            results
                .server
                .shards
                .map_or("default shards".to_owned(), |n| format!("{n} shards")),
            results
                .server
                .http_workers
                .map_or(String::new(), |n| format!(" · {n} HTTP workers"))
        )
    } else {
        format!("target {}", results.server.url)
    };
    let mode = match s.rate {
        Some(r) => format!("open loop at {r:.0} req/s"),
        None => "closed loop (max)".to_owned(),
    };
    let _ = writeln!(
        out,
        "\ntokend-load · {} · {} connections · {} · {} s · {} · {} CPUs{}",
        results.profile,
        s.connections,
        mode,
        s.duration_secs,
        server,
        results.machine.cpus,
        results.machine.load_note()
    );
    let _ = writeln!(
        out,
        "setup: {} tokens in {:.1} s ({:.0} tokens/s through the batch route)\n",
        grouped(results.setup.tokens_created),
        results.setup.secs,
        results.setup.tokens_per_sec
    );
    let _ = writeln!(
        out,
        "{:<16} {:>11} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase", "requests", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    if let Some(c) = &results.ceiling {
        row(
            &mut out,
            "health/live",
            c.requests,
            c.throughput,
            c.errors,
            &c.latency_ms,
        );
    }
    let run = &results.run;
    if run.kinds.len() > 1 || !run.steps.is_empty() {
        for (kind, k) in run
            .kinds
            .iter()
            .filter(|_| run.kinds.len() > 1)
            .chain(&run.steps)
        {
            row(
                &mut out,
                &format!("  {}", kind.name()),
                k.requests,
                k.throughput,
                k.errors,
                &k.latency_ms,
            );
        }
    }
    row(
        &mut out,
        &results.profile,
        run.requests,
        run.throughput,
        run.errors,
        &run.latency_ms,
    );
    if let Some(phase) = &results.snapshot_phase {
        row(
            &mut out,
            &phase.name,
            phase.requests,
            phase.throughput,
            phase.errors,
            &phase.latency_ms,
        );
    }
    if let Some(redis) = &results.redis {
        row(
            &mut out,
            "redis GETDEL",
            redis.run.requests,
            redis.run.throughput,
            redis.run.errors,
            &redis.run.latency_ms,
        );
    }
    if let Some(service) = &run.service_ms {
        row(
            &mut out,
            "  service time",
            run.requests,
            run.throughput,
            run.errors,
            service,
        );
        let _ = writeln!(
            out,
            "(open loop: latency counts from the intended send time; service time from the actual send)"
        );
    }
    let _ = writeln!(out);
    if let Some(items) = &run.items {
        let _ = writeln!(
            out,
            "{}: {:.0} items per request · {:.0} requests/s · {:.0} tokens/s redeemed ({} of {} items answered 200)",
            results.profile,
            items.per_request,
            run.throughput,
            run.redeemed_per_sec,
            grouped(items.ok),
            grouped(items.answered)
        );
    }
    if !run.steps.is_empty() {
        let _ = writeln!(
            out,
            "{}: {:.0} pairs/s captured ({:.0} requests/s: a hold, then its capture)",
            results.profile,
            run.redeemed_per_sec,
            run.steps.values().map(|k| k.throughput).sum::<f64>()
        );
    }
    if let (Some(ratio), Some(c)) = (results.ratio_to_ceiling, &results.ceiling) {
        let _ = writeln!(
            out,
            "ceiling (GET /health/live): {:.0} req/s · {}: {:.0} ok/s = {:.1}% of the ceiling",
            c.throughput,
            results.profile,
            run.ok_throughput,
            ratio * 100.0
        );
    }
    if let (Some(ratio), Some(redis)) = (results.ratio_to_redis, &results.redis) {
        let _ = writeln!(
            out,
            "redis {} ({}): {:.0} GETDEL/s, p50 {:.2} ms, p99 {:.2} ms · {}: {:.0} ok/s = {:.2}× Redis",
            redis.version.as_deref().unwrap_or("?"),
            redis.config,
            redis.run.ok_throughput,
            redis.run.latency_ms.p50,
            redis.run.latency_ms.p99,
            results.profile,
            run.ok_throughput,
            ratio
        );
        if redis.run.errors_by_code.is_empty() {
            let _ = writeln!(out, "  redis errors: none (every GETDEL deleted a key)");
        } else {
            for (code, n) in &redis.run.errors_by_code {
                let _ = writeln!(out, "  redis errors: {:>10}  {code}", grouped(*n));
            }
        }
        if redis.run.tokens_exhausted {
            let _ = writeln!(out, "note: Redis ran out of keys: raise --tokens");
        }
        if let Some(b) = &redis.redis_benchmark {
            let _ = writeln!(
                out,
                "  redis-benchmark {} (reference): {:.0} req/s ({} of {} keys present at its start; misses delete nothing)",
                b.args.join(" "),
                b.requests_per_sec,
                grouped(b.keys_present),
                grouped(redis.keys)
            );
        }
    } else if let Some(why) = &results.redis_skipped {
        let _ = writeln!(out, "redis comparison skipped: {why}");
    }
    if let Some(impact) = results
        .snapshot_phase
        .as_ref()
        .and_then(|p| p.snapshot.as_ref())
    {
        let _ = writeln!(
            out,
            "snapshot of {} tokens ({:.1} MB) sent at {:.1} s, durable after {:.2} s · p99 before {:.2} ms ({} requests) · during {:.2} ms ({}) · after {:.2} ms ({}) · during/before = {}",
            grouped(impact.tokens),
            impact.bytes as f64 / 1e6,
            impact.sent_at_secs,
            impact.took_secs,
            impact.before.latency_ms.p99,
            grouped(impact.before.requests),
            impact.during.latency_ms.p99,
            grouped(impact.during.requests),
            impact.after.latency_ms.p99,
            grouped(impact.after.requests),
            impact
                .p99_ratio
                .map_or("n/a".to_owned(), |r| format!("{r:.2}×"))
        );
    }
    if let Some(b) = results
        .baseline
        .as_ref()
        .filter(|b| b.redeemed_ratio_target.is_some())
    {
        // The lifecycle profiles: tokens (or pairs) per second against the
        // baseline's redeems per second.
        let unit = if run.steps.is_empty() {
            "tokens/s"
        } else {
            "pairs/s"
        };
        let _ = writeln!(
            out,
            "baseline {} ({}, {}): {} tokens/s, p99 {:.2} ms · {}: {:.0} {unit} = {} its tokens/s (target ≥ {}×: {}), p99 {} of its",
            b.file,
            b.profile,
            b.started_at,
            b.redeemed_per_sec
                .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
            b.p99_ms,
            results.profile,
            run.redeemed_per_sec,
            b.redeemed_ratio
                .map_or("n/a".to_owned(), |r| format!("{r:.2}×")),
            b.redeemed_ratio_target.unwrap_or_default(),
            match b.target_met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "n/a",
            },
            b.p99_ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}×"))
        );
    } else if let Some(b) = &results.baseline {
        let _ = writeln!(
            out,
            "baseline {} ({}, {}): {:.0} ok/s, p99 {:.2} ms · {}: {} of its throughput, p99 {} of its",
            b.file,
            b.profile,
            b.started_at,
            b.ok_throughput,
            b.p99_ms,
            results.profile,
            b.throughput_ratio
                .map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            b.p99_ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}×"))
        );
    }
    for phase in [
        results.ceiling.as_ref(),
        Some(run),
        results.snapshot_phase.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(results.redis.as_ref().map(|r| &r.run))
    {
        cpu_line(&mut out, phase);
    }
    for phase in [Some(run), results.snapshot_phase.as_ref()]
        .into_iter()
        .flatten()
    {
        if phase.tokens_exhausted {
            let _ = writeln!(
                out,
                "note: every token was used, {} stopped after {:.1} s: raise --tokens",
                phase.name, phase.secs
            );
        }
    }
    if run.unsent > 0 {
        let _ = writeln!(
            out,
            "note: the server fell behind the timetable: {} sends were given up {} s after the end",
            grouped(run.unsent),
            super::driver::OPEN_LOOP_GRACE.as_secs()
        );
    }
    for (i, phase) in [Some(run), results.snapshot_phase.as_ref()]
        .into_iter()
        .flatten()
        .enumerate()
    {
        // The profile's own errors keep the plain `errors:` label.
        let label = if i == 0 {
            "errors".to_owned()
        } else {
            format!("errors ({})", phase.name)
        };
        if phase.errors_by_code.is_empty() {
            let _ = writeln!(out, "{label}: none");
        } else {
            let _ = writeln!(out, "{label}:");
            for (code, n) in &phase.errors_by_code {
                let _ = writeln!(out, "  {:>10}  {code}", grouped(*n));
            }
        }
    }
    if let Some(items) = &run.items {
        if items.errors_by_code.is_empty() {
            let _ = writeln!(out, "item errors: none");
        } else {
            let _ = writeln!(out, "item errors:");
            for (code, n) in &items.errors_by_code {
                let _ = writeln!(out, "  {:>10}  {code}", grouped(*n));
            }
        }
    }
    if let Some(check) = &results.spend_once {
        let answers: Vec<String> = check
            .probe
            .answers
            .iter()
            .map(|(code, n)| format!("{} × {code}", grouped(*n)))
            .collect();
        let _ = writeln!(
            out,
            "spend-once: {} — {} tokens redeemed once, {} more than once, {} replayed 200s; probe: {}",
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
        if let Some(r) = &check.readback {
            let found: Vec<String> = r
                .mismatches
                .iter()
                .map(|(what, n)| format!("{} × {what}", grouped(*n)))
                .collect();
            let _ = writeln!(
                out,
                "  read back: {} tokens in {} requests, {} {}{}",
                grouped(r.tokens),
                grouped(r.requests),
                grouped(r.matched),
                if r.expected == "captured" {
                    "redeemed with their hold's id"
                } else {
                    "redeemed"
                },
                if found.is_empty() {
                    String::new()
                } else {
                    format!("; FAILED: {}", found.join(", "))
                }
            );
        }
    }
    if let Some(pin) = &results.pin {
        out.push_str(&super::pin::table(pin));
    }
    let _ = writeln!(
        out,
        "results: {}\nplot:    {}",
        json.display(),
        svg.display()
    );
    out
}
