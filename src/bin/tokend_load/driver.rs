//! Runs one phase: every connection sends requests of the workload until the
//! phase ends, closed loop (next request once the answer is in) or open loop
//! (a fixed timetable, latency counted from the intended send time).

use super::api;
use super::error::{LoadError, Result};
use super::http::Target;
use super::stats::{
    cpus_busy, machine_cpu, merge_windows, own_cpu, process_cpu, summarize, window_of, ConnStats,
    CpuFigures, PhaseSummary, SnapshotImpact, Timeline, SNAPSHOT_DONE, SNAPSHOT_PENDING,
    SNAPSHOT_RUNNING,
};
use super::workload::{Answer, Client, Kind, Rng, Workload};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
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
    /// Process whose CPU time is reported with the load generator's (the
    /// spawned server, or Redis).
    pub server_pid: Option<u32>,
    /// Take a snapshot during the phase and report latency around it.
    pub snapshot: Option<SnapshotPlan>,
    /// CPUs whose busy time is reported with the CPU figures (`--pin`: the
    /// server's and the load generator's).
    pub cpus: Vec<usize>,
}

/// A snapshot taken during a phase.
#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    /// When, after the start of the phase, `POST /api/admin/snapshot` is sent.
    pub at: Duration,
    /// The server.
    pub target: Target,
    /// Its admin key (the route needs it).
    pub admin_key: String,
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
    /// Whether requests are sorted into snapshot windows.
    windowed: bool,
    /// The snapshot's progress (`SNAPSHOT_PENDING`, `_RUNNING`, `_DONE`).
    snapshot_state: AtomicU8,
}

/// What the snapshot task saw: seconds after the phase start it was sent,
/// seconds it took, and the server's answer.
type SnapshotOutcome = (f64, f64, Result<api::SnapshotInfo>);

/// Sends the snapshot request at its moment, marking its progress for the
/// connections.
async fn take_snapshot(shared: Arc<Shared>, plan: SnapshotPlan, start: Instant) -> SnapshotOutcome {
    tokio::time::sleep_until(tokio::time::Instant::from_std(start + plan.at)).await;
    let sent = Instant::now();
    shared
        .snapshot_state
        .store(SNAPSHOT_RUNNING, Ordering::SeqCst);
    let info = api::snapshot(&plan.target, &plan.admin_key).await;
    let took = sent.elapsed();
    shared.snapshot_state.store(SNAPSHOT_DONE, Ordering::SeqCst);
    (
        sent.duration_since(start).as_secs_f64(),
        took.as_secs_f64(),
        info,
    )
}

/// Runs one phase over `conns` (which are handed back for the next phase).
pub async fn run_phase<C: Client>(
    conns: Vec<C>,
    workload: Arc<Workload>,
    plan: &PhasePlan,
) -> Result<(Vec<C>, PhaseSummary)> {
    let connections = conns.len() as u32;
    let shared = Arc::new(Shared {
        workload,
        timeline: Timeline::new(),
        progress: Progress::default(),
        exhausted: AtomicBool::new(false),
        unsent: AtomicU64::new(0),
        windowed: plan.snapshot.is_some(),
        snapshot_state: AtomicU8::new(SNAPSHOT_PENDING),
    });
    let cpu_before = (
        own_cpu(),
        plan.server_pid.and_then(process_cpu),
        machine_cpu(),
        cpus_busy(&plan.cpus),
    );
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
    let snapshot = plan
        .snapshot
        .clone()
        .map(|p| tokio::spawn(take_snapshot(Arc::clone(&shared), p, start)));
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
    let cpu_after = (
        own_cpu(),
        plan.server_pid.and_then(process_cpu),
        machine_cpu(),
        cpus_busy(&plan.cpus),
    );
    reporter.abort();
    let mut summary = summarize(
        &plan.name,
        connections,
        secs,
        &stats,
        &shared.timeline,
        shared.exhausted.load(Ordering::Relaxed),
        shared.unsent.load(Ordering::Relaxed),
    )?;
    if let Some((a, b)) = cpu_before.0.zip(cpu_after.0) {
        let server = cpu_before
            .1
            .zip(cpu_after.1)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
        let machine = cpu_before
            .2
            .zip(cpu_after.2)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
        let busy: Vec<(usize, Duration)> = cpu_before
            .3
            .zip(cpu_after.3)
            .map(|(a, b)| {
                a.iter()
                    .zip(&b)
                    .map(|(&(cpu, a), &(_, b))| (cpu, b.saturating_sub(a)))
                    .collect()
            })
            .unwrap_or_default();
        summary.cpu = Some(
            CpuFigures::new(
                b.saturating_sub(a).as_secs_f64(),
                server,
                machine,
                summary.requests,
                secs,
            )
            .with_cpus(&busy, secs),
        );
    }
    if let Some(task) = snapshot {
        let (sent_at, took, info) = task
            .await
            .map_err(|e| LoadError::new(format!("the snapshot task failed: {e}")))?;
        let info = info?;
        let windows = merge_windows(&stats)?
            .ok_or_else(|| LoadError::new("the snapshot windows were not recorded"))?;
        summary.snapshot = Some(SnapshotImpact::new(
            &windows,
            sent_at,
            took,
            info.tokens,
            info.bytes,
        ));
    }
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
async fn drive<C: Client>(
    mut conn: C,
    shared: Arc<Shared>,
    schedule: Schedule,
    seed: u64,
) -> Result<(C, ConnStats)> {
    let mut stats = ConnStats::new(schedule.interval.is_some(), shared.windowed)?;
    let mut rng = Rng::new(seed + 1);
    // Text a request needs (a body): reused, so a request allocates nothing.
    let mut scratch = String::with_capacity(256);
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
        let state_at_send = shared.snapshot_state.load(Ordering::SeqCst);
        let sent_at = Instant::now();
        let outcome = conn.call(&shared.workload, next, &mut scratch).await;
        let done = Instant::now();
        // Answers that arrive after the deadline (the last requests in
        // flight) belong to the last second.
        let second = (done.saturating_duration_since(schedule.start).as_secs() as usize)
            .min(schedule.last_second);
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(answer) => {
                let error = match answer {
                    Answer::Ok { win, replayed } => {
                        if let (Some(i), true) = (next.token, win || replayed) {
                            shared.workload.pool.record_ok(i, replayed);
                        }
                        stats.redeemed += u64::from(win);
                        None
                    }
                    Answer::Error(name) => Some(name),
                    Answer::Items { ok, errors } => {
                        stats.redeemed += u64::from(ok);
                        stats.items(ok, errors);
                        None
                    }
                    Answer::Pair {
                        hold,
                        capture,
                        error,
                    } => {
                        stats.step(Kind::Hold, hold, capture.is_none())?;
                        if let Some(capture) = capture {
                            stats.step(Kind::Capture, capture, error.is_some())?;
                        }
                        stats.redeemed += u64::from(error.is_none());
                        error
                    }
                };
                if error.is_some() {
                    shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                let latency = done.saturating_duration_since(intended.min(sent_at));
                if shared.windowed {
                    let state_at_done = shared.snapshot_state.load(Ordering::SeqCst);
                    stats.windowed(window_of(state_at_send, state_at_done), latency);
                }
                stats.answered(
                    &shared.timeline,
                    next.kind,
                    second,
                    latency,
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
