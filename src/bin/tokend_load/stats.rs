//! Latency histograms, error counts and the per-second timeline of a phase,
//! and their summaries.

use super::error::{Context, Result};
use super::workload::Kind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Largest latency recorded exactly, in microseconds (60 s); larger ones
/// count as this.
const LATENCY_MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context(|| "latency histogram".to_owned())
}

/// A coarser histogram (2 significant digits) for one second of the timeline.
fn second_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).context(|| "timeline histogram".to_owned())
}

/// Microseconds of a duration, at least 1.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Requests of one kind.
pub struct KindStats {
    /// Answered requests (any status).
    pub answered: u64,
    /// Answers that were not 2xx, plus transport errors.
    pub errors: u64,
    /// Latency of answered requests.
    pub latency: Histogram<u64>,
}

/// One second of a phase.
pub struct Second {
    /// Requests answered in it.
    pub answered: u64,
    /// Errors in it.
    pub errors: u64,
    /// Their latency.
    pub latency: Histogram<u64>,
}

impl Second {
    /// An empty second.
    fn new() -> Result<Self> {
        Ok(Self {
            answered: 0,
            errors: 0,
            latency: second_histogram()?,
        })
    }
}

/// The per-second timeline shared by the connections of a phase: each
/// connection adds its current second once that second is over.
pub struct Timeline {
    /// Seconds since the phase started.
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self {
            seconds: Mutex::new(Vec::new()),
        }
    }

    /// Adds one connection's figures for second `index`.
    fn add(&self, index: usize, second: &Second) -> Result<()> {
        let mut seconds = self
            .seconds
            .lock()
            .map_err(|_| super::error::LoadError::new("timeline lock poisoned"))?;
        while seconds.len() <= index {
            seconds.push(Second::new()?);
        }
        let slot = &mut seconds[index];
        slot.answered += second.answered;
        slot.errors += second.errors;
        slot.latency
            .add(&second.latency)
            .context(|| "timeline histogram".to_owned())
    }

    /// The summary of every second.
    pub fn summary(&self) -> Vec<SecondSummary> {
        let Ok(seconds) = self.seconds.lock() else {
            return Vec::new();
        };
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondSummary {
                second: i as u64 + 1,
                requests: s.answered,
                errors: s.errors,
                p50_ms: ms(s.latency.value_at_quantile(0.5)),
                p99_ms: ms(s.latency.value_at_quantile(0.99)),
                max_ms: ms(s.latency.max()),
            })
            .collect()
    }
}

/// What one connection measured in a phase.
pub struct ConnStats {
    /// Per request kind.
    pub kinds: BTreeMap<Kind, KindStats>,
    /// Service time (actual send to answer) in open-loop mode.
    pub service: Option<Histogram<u64>>,
    /// Errors by `status CODE` or `transport kind`.
    pub errors: BTreeMap<String, u64>,
    /// With a snapshot during the phase: latency before, during and after
    /// it (indexed by [`Window`]).
    pub windows: Option<[Histogram<u64>; 3]>,
    /// Tokens redeemed: first 200s to a redeem, batch items answered 200,
    /// captured pairs.
    pub redeemed: u64,
    /// Batch redeems: their items.
    pub items: ItemStats,
    /// The requests inside a unit of work of several (the hold and the
    /// capture of `hold-capture`), each timed alone.
    pub steps: BTreeMap<Kind, KindStats>,
    /// The second being filled, and its index.
    current: (usize, Second),
}

/// The items of the batch redeems of a connection or phase.
#[derive(Debug, Clone, Default)]
pub struct ItemStats {
    /// Batches answered 200.
    pub batches: u64,
    /// Items in those batches.
    pub answered: u64,
    /// Items answered 200.
    pub ok: u64,
    /// The others by `STATUS CODE`.
    pub errors: BTreeMap<String, u64>,
}

impl ConnStats {
    /// Empty stats; `open_loop` keeps a service-time histogram too,
    /// `windowed` one per [`Window`].
    pub fn new(open_loop: bool, windowed: bool) -> Result<Self> {
        Ok(Self {
            kinds: BTreeMap::new(),
            service: if open_loop {
                Some(latency_histogram()?)
            } else {
                None
            },
            errors: BTreeMap::new(),
            windows: if windowed {
                Some([
                    latency_histogram()?,
                    latency_histogram()?,
                    latency_histogram()?,
                ])
            } else {
                None
            },
            redeemed: 0,
            items: ItemStats::default(),
            steps: BTreeMap::new(),
            current: (0, Second::new()?),
        })
    }

    /// Records the items of a batch answered 200.
    pub fn items(&mut self, ok: u32, errors: Vec<String>) {
        self.items.batches += 1;
        self.items.answered += u64::from(ok) + errors.len() as u64;
        self.items.ok += u64::from(ok);
        for error in errors {
            *self.items.errors.entry(error).or_default() += 1;
        }
    }

    /// Records one step of a unit of work: its own exchange time, and
    /// whether it failed.
    pub fn step(&mut self, kind: Kind, latency: Duration, failed: bool) -> Result<()> {
        let stats = match self.steps.entry(kind) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(KindStats {
                answered: 0,
                errors: 0,
                latency: latency_histogram()?,
            }),
        };
        stats.answered += 1;
        stats.errors += u64::from(failed);
        stats.latency.saturating_record(micros(latency));
        Ok(())
    }

    /// Records an answered request: `latency` from its intended send time,
    /// `service` from its actual send time, completed in second `second` of
    /// the phase; `error` names it when it was not a success.
    pub fn answered(
        &mut self,
        timeline: &Timeline,
        kind: Kind,
        second: usize,
        latency: Duration,
        service: Duration,
        error: Option<String>,
    ) -> Result<()> {
        self.roll(timeline, second)?;
        let stats = match self.kinds.entry(kind) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(KindStats {
                answered: 0,
                errors: 0,
                latency: latency_histogram()?,
            }),
        };
        stats.answered += 1;
        stats.latency.saturating_record(micros(latency));
        if let Some(h) = self.service.as_mut() {
            h.saturating_record(micros(service));
        }
        self.current.1.answered += 1;
        self.current.1.latency.saturating_record(micros(latency));
        if let Some(error) = error {
            stats.errors += 1;
            self.current.1.errors += 1;
            *self.errors.entry(error).or_default() += 1;
        }
        Ok(())
    }

    /// Records the latency of an answered request in its snapshot window.
    pub fn windowed(&mut self, window: Window, latency: Duration) {
        if let Some(windows) = self.windows.as_mut() {
            windows[window as usize].saturating_record(micros(latency));
        }
    }

    /// Records a request that got no answer.
    pub fn failed(
        &mut self,
        timeline: &Timeline,
        kind: Kind,
        second: usize,
        error: String,
    ) -> Result<()> {
        if let Some(stats) = self.kinds.get_mut(&kind) {
            stats.errors += 1;
        } else {
            self.kinds.insert(
                kind,
                KindStats {
                    answered: 0,
                    errors: 1,
                    latency: latency_histogram()?,
                },
            );
        }
        self.roll(timeline, second)?;
        self.current.1.errors += 1;
        *self.errors.entry(error).or_default() += 1;
        Ok(())
    }

    /// Moves on to second `second`, handing the finished one to the
    /// timeline.
    fn roll(&mut self, timeline: &Timeline, second: usize) -> Result<()> {
        if second != self.current.0 {
            self.flush(timeline)?;
            self.current.0 = second;
        }
        Ok(())
    }

    /// Hands the current second to the timeline.
    pub fn flush(&mut self, timeline: &Timeline) -> Result<()> {
        let (index, current) = &mut self.current;
        if current.answered > 0 || current.errors > 0 {
            timeline.add(*index, current)?;
            current.answered = 0;
            current.errors = 0;
            current.latency.reset();
        }
        Ok(())
    }
}

/// Milliseconds of a microsecond value.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99_9")]
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One kind of request over a phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindSummary {
    /// Answered requests.
    pub requests: u64,
    /// Errors (non-2xx and transport).
    pub errors: u64,
    /// Answered requests per second.
    pub throughput: f64,
    /// Latency (from the intended send time), ms.
    pub latency_ms: Percentiles,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondSummary {
    /// Seconds since the phase started (1 = the first second).
    pub second: u64,
    /// Requests answered in it.
    pub requests: u64,
    /// Errors in it.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// A phase, summed over its connections.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseSummary {
    /// `ceiling` or the profile's name.
    pub name: String,
    /// Connections.
    pub connections: u32,
    /// Seconds from the first send to the last answer.
    pub secs: f64,
    /// Answered requests (any status).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers and transport errors.
    pub errors: u64,
    /// Answered requests per second.
    pub throughput: f64,
    /// 2xx answers per second.
    pub ok_throughput: f64,
    /// Latency of all answers, from the intended send time, ms.
    pub latency_ms: Percentiles,
    /// Open loop only: latency from the actual send time (what a client
    /// that ignores queueing would report), ms.
    pub service_ms: Option<Percentiles>,
    /// Per request kind.
    pub kinds: BTreeMap<Kind, KindSummary>,
    /// Tokens redeemed: first (non-replayed) 200s to a redeem, batch items
    /// answered 200, captured pairs.
    pub redeemed: u64,
    /// Tokens redeemed per second.
    pub redeemed_per_sec: f64,
    /// Batch redeems: their items.
    pub items: Option<ItemSummary>,
    /// The requests inside a unit of work of several (`hold` and `capture`
    /// of `hold-capture`), each timed alone (from its own send).
    pub steps: BTreeMap<Kind, KindSummary>,
    /// Errors by `status CODE` (or `transport <kind>`).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Per second.
    pub timeline: Vec<SecondSummary>,
    /// Whether the run ended early because every token was used.
    pub tokens_exhausted: bool,
    /// Open loop: sends of the timetable given up because the server was
    /// still too far behind 10 s after the end.
    pub unsent: u64,
    /// CPU time the load generator and the server used in the phase.
    pub cpu: Option<CpuFigures>,
    /// With `--snapshot-during`: latency before, during and after the
    /// snapshot taken in the phase.
    pub snapshot: Option<SnapshotImpact>,
}

/// The items of a phase's batch redeems.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemSummary {
    /// Items in batches answered 200.
    pub answered: u64,
    /// Items answered 200 (each a token redeemed).
    pub ok: u64,
    /// Items not answered 200.
    pub errors: u64,
    /// Those by `STATUS CODE`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Items per batch request answered 200, on average.
    pub per_request: f64,
}

/// Adds one connection's stats of `kind` into the merged `map`.
fn add_kind(map: &mut BTreeMap<Kind, KindStats>, kind: Kind, k: &KindStats) -> Result<()> {
    let into = match map.entry(kind) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => e.insert(KindStats {
            answered: 0,
            errors: 0,
            latency: latency_histogram()?,
        }),
    };
    into.answered += k.answered;
    into.errors += k.errors;
    into.latency
        .add(&k.latency)
        .context(|| "merging histograms".to_owned())?;
    Ok(())
}

/// Sums connection stats into a phase summary.
pub fn summarize(
    name: &str,
    connections: u32,
    secs: f64,
    conns: &[ConnStats],
    timeline: &Timeline,
    tokens_exhausted: bool,
    unsent: u64,
) -> Result<PhaseSummary> {
    let mut all = latency_histogram()?;
    let mut service: Option<Histogram<u64>> = None;
    let mut kinds: BTreeMap<Kind, KindStats> = BTreeMap::new();
    let mut errors_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let mut steps: BTreeMap<Kind, KindStats> = BTreeMap::new();
    let mut items = ItemStats::default();
    let mut redeemed = 0u64;
    for c in conns {
        redeemed += c.redeemed;
        items.batches += c.items.batches;
        items.answered += c.items.answered;
        items.ok += c.items.ok;
        for (code, n) in &c.items.errors {
            *items.errors.entry(code.clone()).or_default() += n;
        }
        for (kind, k) in &c.steps {
            add_kind(&mut steps, *kind, k)?;
        }
        for (kind, k) in &c.kinds {
            add_kind(&mut kinds, *kind, k)?;
            all.add(&k.latency)
                .context(|| "merging histograms".to_owned())?;
        }
        if let Some(h) = &c.service {
            match service.as_mut() {
                Some(s) => s.add(h).context(|| "merging histograms".to_owned())?,
                None => service = Some(h.clone()),
            }
        }
        for (code, n) in &c.errors {
            *errors_by_code.entry(code.clone()).or_default() += n;
        }
    }
    let secs = secs.max(1e-9);
    let requests: u64 = kinds.values().map(|k| k.answered).sum();
    let errors: u64 = kinds.values().map(|k| k.errors).sum();
    let transport: u64 = errors_by_code
        .iter()
        .filter(|(code, _)| code.starts_with("transport"))
        .map(|(_, n)| n)
        .sum();
    let ok = requests.saturating_sub(errors.saturating_sub(transport));
    let summary_of = |k: KindStats| KindSummary {
        requests: k.answered,
        errors: k.errors,
        throughput: k.answered as f64 / secs,
        latency_ms: Percentiles::of(&k.latency),
    };
    let batched = kinds.contains_key(&Kind::BatchRedeem);
    Ok(PhaseSummary {
        name: name.to_owned(),
        connections,
        secs,
        requests,
        ok,
        errors,
        throughput: requests as f64 / secs,
        ok_throughput: ok as f64 / secs,
        latency_ms: Percentiles::of(&all),
        service_ms: service.as_ref().map(Percentiles::of),
        kinds: kinds
            .into_iter()
            .map(|(kind, k)| (kind, summary_of(k)))
            .collect(),
        redeemed,
        redeemed_per_sec: redeemed as f64 / secs,
        items: batched.then(|| ItemSummary {
            answered: items.answered,
            ok: items.ok,
            errors: items.answered - items.ok,
            per_request: items.answered as f64 / items.batches.max(1) as f64,
            errors_by_code: items.errors,
        }),
        steps: steps
            .into_iter()
            .map(|(kind, k)| (kind, summary_of(k)))
            .collect(),
        errors_by_code,
        timeline: timeline.summary(),
        tokens_exhausted,
        unsent,
        cpu: None,
        snapshot: None,
    })
}

/// Merges the snapshot windows of every connection (`None` when the phase
/// had no snapshot).
pub fn merge_windows(conns: &[ConnStats]) -> Result<Option<[Histogram<u64>; 3]>> {
    let mut merged: Option<[Histogram<u64>; 3]> = None;
    for c in conns {
        let Some(windows) = &c.windows else { continue };
        let into = match merged.as_mut() {
            Some(m) => m,
            None => merged.insert([
                latency_histogram()?,
                latency_histogram()?,
                latency_histogram()?,
            ]),
        };
        for (into, from) in into.iter_mut().zip(windows) {
            into.add(from).context(|| "merging histograms".to_owned())?;
        }
    }
    Ok(merged)
}

/// Where a request falls relative to a snapshot taken during its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Answered before the snapshot request was sent.
    Before = 0,
    /// Overlapping the snapshot: in flight at some moment between sending
    /// `POST /api/admin/snapshot` and its answer.
    During = 1,
    /// Sent after the snapshot's answer.
    After = 2,
}

/// The snapshot's progress as the driver sees it: not sent yet.
pub const SNAPSHOT_PENDING: u8 = 0;
/// The snapshot request was sent, no answer yet.
pub const SNAPSHOT_RUNNING: u8 = 1;
/// The snapshot request was answered.
pub const SNAPSHOT_DONE: u8 = 2;

/// The window of a request that was sent while the snapshot was in state
/// `at_send` and answered in state `at_done`: any overlap with the snapshot
/// counts as during, so that every request the snapshot could have delayed
/// is charged to it.
pub fn window_of(at_send: u8, at_done: u8) -> Window {
    if at_done == SNAPSHOT_PENDING {
        Window::Before
    } else if at_send == SNAPSHOT_DONE {
        Window::After
    } else {
        Window::During
    }
}

/// Latency of the requests of one window.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSummary {
    /// Answered requests in the window.
    pub requests: u64,
    /// Percentiles, ms (all zero when the window is empty).
    pub latency_ms: Percentiles,
}

impl WindowSummary {
    /// The summary of one window's histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            requests: h.len(),
            latency_ms: Percentiles::of(h),
        }
    }
}

/// What a snapshot taken during a phase did to latency.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotImpact {
    /// Seconds after the start of the phase the snapshot request was sent.
    pub sent_at_secs: f64,
    /// Seconds from sending it to its answer (the snapshot is durable then).
    pub took_secs: f64,
    /// Tokens in the snapshot, as the server reported.
    pub tokens: u64,
    /// Its size in bytes, as the server reported.
    pub bytes: u64,
    /// Requests answered before the snapshot request was sent.
    pub before: WindowSummary,
    /// Requests in flight at some moment while the snapshot ran.
    pub during: WindowSummary,
    /// Requests sent after the snapshot's answer.
    pub after: WindowSummary,
    /// p99 during over p99 before (the target: at most 2); `None` when
    /// either window is empty.
    pub p99_ratio: Option<f64>,
}

impl SnapshotImpact {
    /// The impact from the merged windows (indexed by [`Window`]) and the
    /// snapshot's figures.
    pub fn new(
        windows: &[Histogram<u64>; 3],
        sent_at_secs: f64,
        took_secs: f64,
        tokens: u64,
        bytes: u64,
    ) -> Self {
        let [before, during, after] = windows.each_ref().map(WindowSummary::of);
        let p99_ratio = (before.requests > 0 && during.requests > 0)
            .then(|| during.latency_ms.p99 / before.latency_ms.p99.max(0.001));
        Self {
            sent_at_secs,
            took_secs,
            tokens,
            bytes,
            before,
            during,
            after,
            p99_ratio,
        }
    }
}

/// CPU time used in a phase, from the kernel's accounting.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuFigures {
    /// CPU seconds (user + system) of the load generator.
    pub client_cpu_secs: f64,
    /// Load generator CPU per answered request, µs.
    pub client_cpu_per_request_us: f64,
    /// CPU seconds of the server (a spawned one, or Redis), when known.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU per answered request, µs.
    pub server_cpu_per_request_us: Option<f64>,
    /// Cores kept busy on average: (client + server) CPU seconds over the
    /// phase's seconds.
    pub cores_busy: f64,
    /// Cores kept busy on average by everything else on the machine (other
    /// processes, interrupts), from `/proc/stat`: well above 0, the machine
    /// was shared and every figure of the phase is low.
    pub other_cores_busy: Option<f64>,
    /// `--pin`: how busy the server's CPU and the load generator's were
    /// (every process on them): against the server's own share, what else
    /// ran on its CPU.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<CpuBusy>,
}

/// How busy one CPU was over a phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuBusy {
    /// The CPU's number.
    pub cpu: usize,
    /// Busy time (every process, interrupts) over the phase's seconds: 0
    /// to 1.
    pub busy: f64,
}

impl CpuFigures {
    /// Figures from CPU seconds used over `secs` for `requests` answers;
    /// `machine_cpu_secs` is what every CPU of the machine did meanwhile.
    pub fn new(
        client_cpu_secs: f64,
        server_cpu_secs: Option<f64>,
        machine_cpu_secs: Option<f64>,
        requests: u64,
        secs: f64,
    ) -> Self {
        let per = |cpu: f64| cpu * 1e6 / requests.max(1) as f64;
        Self {
            client_cpu_secs,
            client_cpu_per_request_us: per(client_cpu_secs),
            server_cpu_secs,
            server_cpu_per_request_us: server_cpu_secs.map(per),
            cores_busy: (client_cpu_secs + server_cpu_secs.unwrap_or(0.0)) / secs.max(1e-9),
            other_cores_busy: machine_cpu_secs.map(|m| {
                (m - client_cpu_secs - server_cpu_secs.unwrap_or(0.0)).max(0.0) / secs.max(1e-9)
            }),
            cpus: Vec::new(),
        }
    }

    /// With the busy time of single CPUs over the phase's `secs`.
    pub fn with_cpus(mut self, busy: &[(usize, Duration)], secs: f64) -> Self {
        self.cpus = busy
            .iter()
            .map(|&(cpu, t)| CpuBusy {
                cpu,
                busy: t.as_secs_f64() / secs.max(1e-9),
            })
            .collect();
        self
    }
}

/// CPU time (user + system) of this process so far.
pub fn own_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage(2) fills the struct it is given; RUSAGE_SELF is valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// CPU time every CPU of the machine spent busy so far (all but idle and
/// I/O wait), from the first line of `/proc/stat`.
pub fn machine_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_sec = u64::try_from(ticks_per_sec).ok().filter(|&t| t > 0)?;
    let ticks = busy_ticks(text.lines().next()?)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64))
}

/// CPU time each of `cpus` spent busy so far (all but idle and I/O wait),
/// from their `cpuN` lines of `/proc/stat`; `None` when one is missing.
pub fn cpus_busy(cpus: &[usize]) -> Option<Vec<(usize, Duration)>> {
    if cpus.is_empty() {
        return Some(Vec::new());
    }
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_sec = u64::try_from(ticks_per_sec).ok().filter(|&t| t > 0)?;
    cpus.iter()
        .map(|&cpu| {
            let name = format!("cpu{cpu}");
            let ticks = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .and_then(|l| cpu_busy_ticks(l, &name))?;
            Some((
                cpu,
                Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64),
            ))
        })
        .collect()
}

/// Busy clock ticks of the `cpu` line of `/proc/stat`: user, nice, system,
/// irq, softirq and steal (idle and iowait are not busy; guest time is
/// already inside user).
pub fn busy_ticks(line: &str) -> Option<u64> {
    cpu_busy_ticks(line, "cpu")
}

/// Busy clock ticks of the `/proc/stat` line named `name` (`cpu` for the
/// whole machine, `cpu3` for CPU 3), counted as [`busy_ticks`] does.
fn cpu_busy_ticks(line: &str, name: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != name {
        return None;
    }
    let t: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = t[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// CPU time (user + system) of process `pid` so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_sec = u64::try_from(ticks_per_sec).ok().filter(|&t| t > 0)?;
    let ticks = stat_cpu_ticks(&text)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64))
}

/// User + system clock ticks of a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces or `)`, so fields
/// are counted from the last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_overlapping_the_snapshot_counts_as_during() {
        use SNAPSHOT_DONE as D;
        use SNAPSHOT_PENDING as P;
        use SNAPSHOT_RUNNING as R;
        assert_eq!(window_of(P, P), Window::Before);
        assert_eq!(window_of(P, R), Window::During);
        assert_eq!(window_of(R, R), Window::During);
        assert_eq!(window_of(R, D), Window::During);
        // Sent before, answered after: it spanned the whole snapshot.
        assert_eq!(window_of(P, D), Window::During);
        assert_eq!(window_of(D, D), Window::After);
    }

    #[test]
    fn window_p99_and_ratio() {
        let mut windows = [
            latency_histogram().unwrap(),
            latency_histogram().unwrap(),
            latency_histogram().unwrap(),
        ];
        // Before: 1..=1000 µs, p99 = 990 µs. During: 99 at 1 ms and one at
        // 50 ms, p99 = 1 ms (the 99th of 100), max 50 ms.
        for us in 1..=1000 {
            windows[0].record(us).unwrap();
        }
        windows[1].record_n(1000, 99).unwrap();
        windows[1].record(50_000).unwrap();
        let impact = SnapshotImpact::new(&windows, 3.0, 0.5, 10, 100);
        assert_eq!(impact.before.requests, 1000);
        assert!((impact.before.latency_ms.p99 - 0.990).abs() < 0.002);
        assert_eq!(impact.during.requests, 100);
        assert!((impact.during.latency_ms.p99 - 1.0).abs() < 0.002);
        assert!((impact.during.latency_ms.max - 50.0).abs() < 0.1);
        let ratio = impact.p99_ratio.unwrap();
        assert!((ratio - 1.0 / 0.990).abs() < 0.01, "{ratio}");
        // Two more slow ones push the during p99 to the slow value.
        windows[1].record_n(50_000, 2).unwrap();
        let impact = SnapshotImpact::new(&windows, 3.0, 0.5, 10, 100);
        assert!(impact.p99_ratio.unwrap() > 40.0);
        // No request after the snapshot: empty window, still a ratio.
        assert_eq!(impact.after.requests, 0);
        // No request before: no ratio.
        windows[0].reset();
        assert_eq!(
            SnapshotImpact::new(&windows, 0.0, 0.5, 10, 100).p99_ratio,
            None
        );
    }

    #[test]
    fn reads_cpu_ticks_of_a_stat_line() {
        let line =
            "4242 (tokend (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 125 37 0 0 20 0 9 0 1 2 3";
        assert_eq!(stat_cpu_ticks(line), Some(162));
        assert_eq!(stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert!(own_cpu().is_some());
        assert!(process_cpu(std::process::id()).is_some());
    }

    #[test]
    fn reads_busy_ticks_of_proc_stat() {
        let line = "cpu  100 5 50 9000 30 7 8 2 0 0";
        assert_eq!(busy_ticks(line), Some(100 + 5 + 50 + 7 + 8 + 2));
        assert_eq!(busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(busy_ticks("cpu 1 2 3"), None);
        assert!(machine_cpu().is_some());
        assert_eq!(cpu_busy_ticks("cpu1 1 2 3 4 5 6 7 8", "cpu1"), Some(27));
        assert_eq!(cpu_busy_ticks("cpu10 1 2 3 4 5 6 7 8", "cpu1"), None);
        let busy = cpus_busy(&[0]).unwrap();
        assert_eq!(busy.len(), 1);
        assert_eq!(busy[0].0, 0);
        assert_eq!(cpus_busy(&[usize::MAX]), None);
    }

    #[test]
    fn cpu_per_request() {
        let cpu = CpuFigures::new(0.5, Some(1.5), Some(3.0), 100_000, 2.0);
        assert!((cpu.other_cores_busy.unwrap() - 0.5).abs() < 1e-9);
        assert!((cpu.client_cpu_per_request_us - 5.0).abs() < 1e-9);
        assert!((cpu.server_cpu_per_request_us.unwrap() - 15.0).abs() < 1e-9);
        assert!((cpu.cores_busy - 1.0).abs() < 1e-9);
    }
}
