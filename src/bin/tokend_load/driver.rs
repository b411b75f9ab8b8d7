//! Runs one phase: every connection sends requests of the workload until the
//! phase ends, closed loop (next request once the answer is in) or open loop
//! (a fixed timetable, latency counted from the intended send time).

use super::error::{LoadError, Result};
use super::http::{Call, Conn, Reply};
use super::stats::{summarize, ConnStats, PhaseSummary, Timeline};
use super::workload::{Kind, Rng, Workload};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after the end of a phase the connections may take to hand in
/// their last answers.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Pause after a transport error before the connection tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Open loop: the timer wakes up this much before a send is due, since
/// tokio's timer has millisecond granularity and would otherwise make every
/// send late. A send that goes out early is timed from when it went out.
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Open loop: once the server is this far behind the timetable after the
/// end of the phase, the remaining sends are given up (and counted).
pub const OPEN_LOOP_GRACE: Duration = Duration::from_secs(10);

/// How one phase runs.
#[derive(Debug, Clone)]
pub struct PhasePlan {
    /// `ceiling` or the profile's name (progress lines, summary).
    pub name: String,
    /// How long requests are started.
    pub duration: Duration,
    /// Open loop: requests per second over all connections.
    pub rate: Option<f64>,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Progress {
    /// Answered requests plus transport errors.
    done: AtomicU64,
    /// Errors.
    errors: AtomicU64,
}

/// What the connections share.
struct Shared {
    /// The requests.
    workload: Arc<Workload>,
    /// Per-second figures.
    timeline: Timeline,
    /// Progress counters.
    progress: Progress,
    /// Set when the workload ran out of tokens.
    exhausted: AtomicBool,
    /// Open loop: sends of the timetable given up after the grace period.
    unsent: AtomicU64,
}

/// The error name of an answer that is not a 2xx: `STATUS CODE`.
fn error_name(reply: &Reply) -> String {
    /// The part of an error body that names the error.
    #[derive(serde::Deserialize)]
    struct Body {
        /// `TOKEN_ALREADY_REDEEMED`, …
        code: Option<String>,
    }
    match serde_json::from_slice::<Body>(&reply.body) {
        Ok(Body { code: Some(code) }) => format!("{} {code}", reply.status),
        _ => reply.status.to_string(),
    }
}

/// Runs one phase over `conns` (which are handed back for the next phase).
pub async fn run_phase(
    conns: Vec<Conn>,
    workload: Arc<Workload>,
    plan: &PhasePlan,
) -> Result<(Vec<Conn>, PhaseSummary)> {
    let connections = conns.len() as u32;
    let shared = Arc::new(Shared {
        workload,
        timeline: Timeline::new(),
        progress: Progress::default(),
        exhausted: AtomicBool::new(false),
        unsent: AtomicU64::new(0),
    });
    let start = Instant::now() + Duration::from_millis(10);
    let deadline = start + plan.duration;
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(f64::from(connections) / r));
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let offset = interval.map(|iv| iv.mul_f64(i as f64 / f64::from(connections)));
        tasks.push(tokio::spawn(drive(
            conn,
            shared,
            Schedule {
                start,
                deadline,
                interval,
                offset: offset.unwrap_or_default(),
                last_second: (plan.duration.as_secs().max(1) - 1) as usize,
            },
            i as u64,
        )));
    }
    let reporter = tokio::spawn(report_progress(
        Arc::clone(&shared),
        plan.name.clone(),
        start,
        plan.duration,
    ));
    let mut conns = Vec::with_capacity(tasks.len());
    let mut stats = Vec::with_capacity(tasks.len());
    let limit = tokio::time::Instant::from_std(deadline + DRAIN_LIMIT);
    for task in tasks {
        let (conn, s) = match tokio::time::timeout_at(limit, task).await {
            Ok(Ok(outcome)) => outcome?,
            Ok(Err(e)) => return Err(LoadError::new(format!("a connection task failed: {e}"))),
            Err(_) => {
                return Err(LoadError::new(format!(
                    "{}: connections were still waiting for answers {} s after the end",
                    plan.name,
                    DRAIN_LIMIT.as_secs()
                )))
            }
        };
        conns.push(conn);
        stats.push(s);
    }
    let secs = start.elapsed().as_secs_f64();
    reporter.abort();
    let summary = summarize(
        &plan.name,
        connections,
        secs,
        &stats,
        &shared.timeline,
        shared.exhausted.load(Ordering::Relaxed),
        shared.unsent.load(Ordering::Relaxed),
    )?;
    Ok((conns, summary))
}

/// When one connection sends.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Phase start.
    start: Instant,
    /// No request is started at or after this.
    deadline: Instant,
    /// Open loop: time between this connection's sends.
    interval: Option<Duration>,
    /// Open loop: this connection's offset in the timetable.
    offset: Duration,
    /// Index of the phase's last whole second.
    last_second: usize,
}

/// One connection's loop.
async fn drive(
    mut conn: Conn,
    shared: Arc<Shared>,
    schedule: Schedule,
    seed: u64,
) -> Result<(Conn, ConnStats)> {
    let mut stats = ConnStats::new(schedule.interval.is_some())?;
    let mut rng = Rng::new(seed + 1);
    let mut sent: u32 = 0;
    tokio::time::sleep_until(tokio::time::Instant::from_std(schedule.start)).await;
    loop {
        let intended = match schedule.interval {
            None => Instant::now(),
            Some(iv) => schedule.start + schedule.offset + iv * sent,
        };
        if intended >= schedule.deadline {
            break;
        }
        if let Some(iv) = schedule.interval {
            let now = Instant::now();
            if now > schedule.deadline + OPEN_LOOP_GRACE {
                let left = schedule.deadline.saturating_duration_since(intended);
                let left = (left.as_secs_f64() / iv.as_secs_f64()).ceil() as u64;
                shared.unsent.fetch_add(left, Ordering::Relaxed);
                break;
            }
            if let Some(wake) = intended.checked_sub(TIMER_SLACK).filter(|w| *w > now) {
                tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
            }
        }
        sent = sent.saturating_add(1);
        let Some(next) = shared.workload.next(&mut rng) else {
            shared.exhausted.store(true, Ordering::Relaxed);
            break;
        };
        let sent_at = Instant::now();
        let outcome = conn
            .send(Call {
                method: next.method,
                path: &next.path,
                body: next.body,
            })
            .await;
        let done = Instant::now();
        // Answers that arrive after the deadline (the last requests in
        // flight) belong to the last second.
        let second = (done.saturating_duration_since(schedule.start).as_secs() as usize)
            .min(schedule.last_second);
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(reply) => {
                let error = if (200..300).contains(&reply.status) {
                    if let (Kind::Redeem, Some(i), 200) = (next.kind, next.token, reply.status) {
                        shared.workload.pool.record_ok(i, reply.replayed);
                    }
                    None
                } else {
                    shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                    Some(error_name(&reply))
                };
                stats.answered(
                    &shared.timeline,
                    next.kind,
                    second,
                    done.saturating_duration_since(intended.min(sent_at)),
                    done.saturating_duration_since(sent_at),
                    error,
                )?;
            }
            Err(e) => {
                shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                stats.failed(
                    &shared.timeline,
                    next.kind,
                    second,
                    format!("transport {}", e.kind),
                )?;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    stats.flush(&shared.timeline)?;
    Ok((conn, stats))
}

/// Prints a progress line on stderr every second.
async fn report_progress(shared: Arc<Shared>, name: String, start: Instant, duration: Duration) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let (mut last_done, mut last_at) = (0u64, start);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let done = shared.progress.done.load(Ordering::Relaxed);
        let errors = shared.progress.errors.load(Ordering::Relaxed);
        let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "{name:>14} {:>4.0}/{} s {:>9.0} req/s  errors {errors}",
            now.duration_since(start).as_secs_f64(),
            duration.as_secs(),
            rate
        );
        (last_done, last_at) = (done, now);
    }
}
