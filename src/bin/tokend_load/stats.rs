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
    /// The second being filled, and its index.
    current: (usize, Second),
}

impl ConnStats {
    /// Empty stats; `open_loop` keeps a service-time histogram too.
    pub fn new(open_loop: bool) -> Result<Self> {
        Ok(Self {
            kinds: BTreeMap::new(),
            service: if open_loop {
                Some(latency_histogram()?)
            } else {
                None
            },
            errors: BTreeMap::new(),
            current: (0, Second::new()?),
        })
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
    /// Errors by `status CODE` (or `transport <kind>`).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Per second.
    pub timeline: Vec<SecondSummary>,
    /// Whether the run ended early because every token was used.
    pub tokens_exhausted: bool,
    /// Open loop: sends of the timetable given up because the server was
    /// still too far behind 10 s after the end.
    pub unsent: u64,
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
    for c in conns {
        for (kind, k) in &c.kinds {
            let into = match kinds.entry(*kind) {
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
            .map(|(kind, k)| {
                (
                    kind,
                    KindSummary {
                        requests: k.answered,
                        errors: k.errors,
                        throughput: k.answered as f64 / secs,
                        latency_ms: Percentiles::of(&k.latency),
                    },
                )
            })
            .collect(),
        errors_by_code,
        timeline: timeline.summary(),
        tokens_exhausted,
        unsent,
    })
}
