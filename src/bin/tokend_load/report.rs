//! The results: what is written to `results-<profile>.json`, and the human
//! table printed on stdout.

use super::error::{Context, Result};
use super::spend_once::SpendOnce;
use super::stats::{Percentiles, PhaseSummary};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Logical CPUs available to the profiler.
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
    /// The spend-once check (profiles that redeem).
    pub spend_once: Option<SpendOnce>,
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
            "fsync {} · {} (spawned)",
            results.server.fsync.as_deref().unwrap_or("?"),
            results
                .server
                .shards
                .map_or("default shards".to_owned(), |n| format!("{n} shards"))
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
    if run.kinds.len() > 1 {
        for (kind, k) in &run.kinds {
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
    if run.tokens_exhausted {
        let _ = writeln!(
            out,
            "note: every token was used, the run stopped after {:.1} s: raise --tokens",
            run.secs
        );
    }
    if run.unsent > 0 {
        let _ = writeln!(
            out,
            "note: the server fell behind the timetable: {} sends were given up {} s after the end",
            grouped(run.unsent),
            super::driver::OPEN_LOOP_GRACE.as_secs()
        );
    }
    if run.errors_by_code.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let _ = writeln!(out, "errors:");
        for (code, n) in &run.errors_by_code {
            let _ = writeln!(out, "  {:>10}  {code}", grouped(*n));
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
    }
    let _ = writeln!(
        out,
        "results: {}\nplot:    {}",
        json.display(),
        svg.display()
    );
    out
}
