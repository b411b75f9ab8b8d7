//! Which thread each shard runs on.
//!
//! A redeem is parsed on an HTTP worker's thread; when its shard runs on
//! that same thread, the message to the shard and its reply are local task
//! switches, not OS wake-ups of another thread. So the engine starts its
//! shards on threads of its own (they must run before any HTTP worker
//! exists: restore, tests that drive the engine alone), and each HTTP worker
//! *adopts* its share as it starts ([`WorkerThreads::register`]): shard `i`
//! goes to worker `i % workers`. A request for a shard on another worker
//! crosses threads through the mailbox as before; the single-writer rule is
//! unchanged, since a shard still runs on exactly one thread at a time.
//!
//! A worker's thread stops under its shards when the HTTP server shuts down.
//! Each adopted shard then hands itself, as it drops, to the *keeper* (a task
//! on the engine's first thread), which starts it again on the engine's
//! thread for it, so that the final flush and snapshot still find every
//! shard. [`Engine::settle`] waits for that.

use super::placement::{Placement, ShardHandle};
use super::Engine;
use crate::shard::actor::{Handoff, Homing, Moving};
use crate::shard::Shard;
use actix::{Actor, Arbiter};
use actix_rt::ArbiterHandle;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, UnboundedSender};

/// How long a worker waits for a shard it adopts to stop where it runs: a
/// shard answers its queued messages first, and at adoption there are none,
/// so this bounds only a stuck engine thread.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// How long [`Engine::settle`] waits for shards to come back from stopped
/// workers before it goes on without them (and the final snapshot fails
/// rather than miss a shard).
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Starts the keeper on `home`: every shard sent to the returned sender is
/// started again on the engine's thread for it (`homes[index % len]`) and
/// takes its place in `placement`.
pub(super) fn start_keeper(
    home: &Arbiter,
    homes: Vec<ArbiterHandle>,
    placement: Arc<Placement>,
) -> UnboundedSender<Moving> {
    assert!(!homes.is_empty(), "the engine has threads of its own");
    let (keeper, mut arrivals) = mpsc::unbounded_channel::<Moving>();
    home.spawn(async move {
        while let Some(Moving { index, shard }) = arrivals.recv().await {
            // On the engine's own threads a shard needs no homing: they
            // stop only when the engine does, and then it is meant to go.
            let shard = shard.homed(None);
            let Some(old) = placement.get(index) else {
                continue;
            };
            let addr = Shard::start_in_arbiter(&homes[index % homes.len()], move |_| shard);
            placement.install(index, ShardHandle::moved(&old, addr, false));
            tracing::debug!(shard = index, "shard back on an engine thread");
        }
    });
    keeper
}

impl Engine {
    /// Moves the shards that belong to HTTP worker `worker_index` of
    /// `workers` onto its thread `worker`, from the engine's threads. Called
    /// on that worker's thread as it starts, before it accepts connections;
    /// blocks while each shard stops where it was.
    pub fn adopt(&self, worker: &ArbiterHandle, worker_index: usize, workers: usize) {
        assert!(workers >= 1, "at least one worker");
        let Some(keeper) = &self.inner.keeper else {
            // Cluster shards come and go with their leases; they stay on the
            // engine's threads.
            return;
        };
        let placement = &self.inner.placement;
        for index in (0..placement.len()).filter(|i| i % workers == worker_index % workers) {
            let Some(old) = placement.get(index) else {
                continue;
            };
            if old.on_worker && old.addr.connected() {
                continue;
            }
            let (to, taken) = std::sync::mpsc::sync_channel(1);
            old.addr.do_send(Handoff(to));
            let Ok(shard) = taken.recv_timeout(HANDOFF_WAIT) else {
                tracing::warn!(shard = index, "a shard did not hand itself over");
                continue;
            };
            let shard = shard.homed(Some(Homing {
                index,
                keeper: keeper.clone(),
            }));
            let addr = Shard::start_in_arbiter(worker, move |_| shard);
            placement.install(index, ShardHandle::moved(&old, addr, true));
        }
    }

    /// How many shards run on HTTP workers' threads now (the others on the
    /// engine's).
    pub fn shards_on_workers(&self) -> usize {
        self.inner
            .placement
            .local()
            .iter()
            .filter(|(_, handle)| handle.on_worker && handle.addr.connected())
            .count()
    }

    /// Waits until every shard is back on the engine's threads (see the
    /// module doc), for at most [`SETTLE_WAIT`]. Called once the HTTP server
    /// has stopped, whose workers' threads are stopping.
    pub(super) async fn settle(&self) {
        let started = Instant::now();
        loop {
            let stranded = self
                .inner
                .placement
                .local()
                .into_iter()
                .filter(|(_, handle)| handle.on_worker || !handle.addr.connected())
                .count();
            if stranded == 0 {
                return;
            }
            if started.elapsed() >= SETTLE_WAIT {
                tracing::warn!(stranded, "shards did not come back from stopped workers");
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The HTTP workers' threads as they start, handed to the engine once it
/// exists (workers may start before or after it is installed).
pub struct WorkerThreads {
    /// HTTP workers the server runs (`--http-workers`): shard `i` goes to
    /// worker `i % workers`.
    workers: usize,
    /// The engine, once installed, and the threads that registered before.
    inner: Mutex<Registered>,
}

/// What [`WorkerThreads`] holds under its lock.
struct Registered {
    /// Set once by [`WorkerThreads::install`].
    engine: Option<Engine>,
    /// Threads that registered before the engine was installed, with their
    /// worker index.
    waiting: Vec<(ArbiterHandle, usize)>,
    /// Registrations so far: the next worker's index (a worker restarted
    /// after a failure takes the next one, modulo `workers`).
    count: usize,
}

impl WorkerThreads {
    /// A registry for a server of `workers` HTTP workers.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            inner: Mutex::new(Registered {
                engine: None,
                waiting: Vec::new(),
                count: 0,
            }),
        }
    }

    /// Called on each HTTP worker's thread as it starts: it adopts its
    /// shards now, or when the engine is installed.
    pub fn register(&self, worker: ArbiterHandle) {
        let mut inner = self.inner.lock();
        let index = inner.count;
        inner.count += 1;
        match &inner.engine {
            Some(engine) => engine.adopt(&worker, index, self.workers),
            None => inner.waiting.push((worker, index)),
        }
    }

    /// Hands the engine over: the workers that registered before adopt
    /// their shards now.
    pub fn install(&self, engine: &Engine) {
        let mut inner = self.inner.lock();
        assert!(inner.engine.is_none(), "the engine is installed once");
        for (worker, index) in std::mem::take(&mut inner.waiting) {
            engine.adopt(&worker, index, self.workers);
        }
        inner.engine = Some(engine.clone());
    }
}
