//! Which node serves which shard: a shard map in a JetStream key-value
//! bucket, changed only by compare-and-set, with leases the owners renew.
//!
//! Every node heartbeats into the nodes bucket and watches both buckets.
//! The live nodes share the shards by rendezvous hashing ([`place`]): each
//! shard belongs on the live node with the highest score for it, so when a
//! node leaves or returns only its own shards move. Each node, every tick:
//!
//! - renews the lease of each shard it holds (`update` on the revision it
//!   last wrote); a refused renewal means someone else claimed the shard:
//!   the node drops it at once;
//! - drops any shard whose lease it could not renew in time: a node's
//!   lease runs from the moment it *sent* its last successful renewal, for
//!   `lease − margin`, on its own monotonic clock;
//! - claims each shard that belongs on it and is free: never claimed,
//!   released by its owner, or unchanged for a whole `lease` as this node
//!   has watched it. A claim is `create` or `update` on the revision seen,
//!   so one claimant wins; the winner takes the shard over
//!   ([`super::takeover`]) and then serves it;
//! - hands off each shard it holds that belongs on another live node (one
//!   that came back): stops serving it, lets its log send what is pending,
//!   then releases it so the next owner can claim it at once.
//!
//! The timing: a claimant waits `lease` after it *saw* the owner's last
//! renewal, and that renewal was sent before it was seen, so the owner's
//! own deadline (`lease − margin` after sending) passes first unless the
//! two clocks' rates differ by more than `margin / lease`. Safety does not
//! rest on that: a stale owner's appends are refused by the claim marker
//! (see [`super::replicated_log`]), so at worst it answers 503, never a
//! second 2xx.

use super::catalog_log::CatalogReplica;
use super::forward::{self, ForwardCounts};
use super::names::Names;
use super::replicated_log::{Ended, ReplicatedLog, Target};
use super::setup::Jet;
use super::snapshots::ShardSnapshots;
use super::takeover::{self, TakenOver};
use crate::engine::{Engine, Tenure};
use crate::log::LogError;
use async_nats::jetstream::kv::{self, Operation};
use futures_util::future::join_all;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// The lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimes {
    /// A lease unchanged for this long, as a watcher sees it, has lapsed.
    pub lease: Duration,
    /// The owner stops serving this long before its lease would lapse.
    pub margin: Duration,
    /// How often leases and heartbeats are renewed.
    pub renew: Duration,
    /// How often the shard map is reconciled.
    pub tick: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(3_000),
            margin: Duration::from_millis(750),
            renew: Duration::from_millis(750),
            tick: Duration::from_millis(200),
        }
    }
}

/// How a node runs its part of the shard map.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Lease timing.
    pub lease: LeaseTimes,
    /// Tombstone retention for rebuilt shards.
    pub retention_ms: i64,
    /// How often each shard held here is snapshotted (when it changed).
    pub snapshot_interval: Duration,
}

/// A lease this node holds: serving stops when it runs out.
pub struct Lease {
    /// The clock's origin.
    base: Instant,
    /// Nanoseconds after `base` until which this node may serve.
    valid_until_ns: AtomicU64,
}

impl Lease {
    fn new(sent_at: Instant, times: &LeaseTimes) -> Arc<Self> {
        let lease = Arc::new(Self {
            base: sent_at,
            valid_until_ns: AtomicU64::new(0),
        });
        lease.extend(sent_at, times);
        lease
    }

    /// The renewal sent at `sent_at` succeeded.
    fn extend(&self, sent_at: Instant, times: &LeaseTimes) {
        let until = sent_at.saturating_duration_since(self.base) + times.lease - times.margin;
        let until_ns = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.valid_until_ns.fetch_max(until_ns, Ordering::AcqRel);
    }
}

impl Tenure for Lease {
    fn holds(&self) -> bool {
        let now_ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now_ns < self.valid_until_ns.load(Ordering::Acquire)
    }
}

/// A shard map entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerValue {
    /// The owner; empty once released.
    pub node: String,
    /// Incremented by every claim.
    pub epoch: u64,
}

/// A shard map entry as this node last saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// The value (`None`: deleted).
    value: Option<OwnerValue>,
    /// Its revision.
    revision: u64,
    /// When this node saw that revision first.
    since: Instant,
}

/// A shard this node holds.
struct Held {
    /// Its epoch.
    epoch: u64,
    /// The value it wrote.
    value: OwnerValue,
    /// The revision of its last write.
    revision: u64,
    /// Its lease.
    lease: Arc<Lease>,
    /// Loading or serving.
    serving: Option<Serving>,
}

/// What serving a shard runs.
struct Serving {
    /// Its log.
    log: ReplicatedLog,
    /// The log's committer.
    committer: JoinHandle<()>,
    /// The forwarded-request listener.
    responder: JoinHandle<()>,
}

/// What the background tasks report.
enum Event {
    /// A takeover finished.
    Loaded {
        shard: usize,
        epoch: u64,
        result: Box<Result<TakenOver, String>>,
    },
    /// A shard's log stopped.
    LogEnded {
        shard: usize,
        epoch: u64,
        ended: Ended,
    },
}

/// Counters for `/metrics` and `/health/ready`.
#[derive(Debug, Default)]
pub struct OwnershipCounts {
    /// Lease renewals that succeeded.
    pub renewals: AtomicU64,
    /// Shards lost to a fenced append.
    pub fenced: AtomicU64,
    /// Takeovers completed.
    pub takeovers: AtomicU64,
    /// Shards handed to another node.
    pub handoffs: AtomicU64,
    /// Shards dropped because their lease lapsed or was taken.
    pub lost: AtomicU64,
}

/// A shard's state on this node, for readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardView {
    /// The shard.
    pub shard: usize,
    /// False while it is being taken over.
    pub serving: bool,
    /// Its epoch.
    pub epoch: u64,
}

/// The shard map, as one node runs its part of it.
pub struct Ownership {
    /// NATS.
    jet: Jet,
    /// This node's id.
    node: String,
    /// The engine whose shards this fills and empties.
    engine: Engine,
    /// The catalog replica (takeovers wait for it).
    catalog: Arc<CatalogReplica>,
    /// Shards of the cluster.
    shards: usize,
    /// Lease timing.
    times: LeaseTimes,
    /// Tombstone retention for rebuilt shards.
    retention_ms: i64,
    /// Shards held here.
    held: Mutex<BTreeMap<usize, Held>>,
    /// The shard map as watched.
    owners: Mutex<HashMap<usize, Seen>>,
    /// Nodes as watched: id → the revision of its last heartbeat and when
    /// this node first saw it (`None`: it left). The revision keeps a
    /// restarted watch, which replays each node's last heartbeat, from
    /// making a dead node look alive again.
    nodes: Mutex<HashMap<String, (u64, Option<Instant>)>>,
    /// When this node's last heartbeat was acknowledged.
    heartbeat_ok: Mutex<Option<Instant>>,
    /// Reports from background tasks.
    events: mpsc::UnboundedSender<Event>,
    /// Stops the loop.
    stop: Notify,
    /// Counters.
    pub counts: OwnershipCounts,
    /// Forwarding counters.
    forward_counts: Arc<ForwardCounts>,
    /// Shard snapshots.
    snapshots: ShardSnapshots,
}

impl Ownership {
    /// Starts running this node's part of the shard map.
    pub fn start(
        jet: Jet,
        node: String,
        engine: Engine,
        catalog: Arc<CatalogReplica>,
        snapshots: ShardSnapshots,
        settings: Settings,
        forward_counts: Arc<ForwardCounts>,
    ) -> Arc<Self> {
        let Settings {
            lease: times,
            retention_ms,
            snapshot_interval,
        } = settings;
        let (events, receiver) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            shards: engine.shard_count(),
            jet,
            node,
            engine,
            catalog,
            times,
            retention_ms,
            held: Mutex::new(BTreeMap::new()),
            owners: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            heartbeat_ok: Mutex::new(None),
            events,
            stop: Notify::new(),
            counts: OwnershipCounts::default(),
            forward_counts,
            snapshots,
        });
        actix_web::rt::spawn(Arc::clone(&this).snapshot_schedule(snapshot_interval));
        actix_web::rt::spawn(Arc::clone(&this).watch_owners());
        actix_web::rt::spawn(Arc::clone(&this).watch_nodes());
        actix_web::rt::spawn(Arc::clone(&this).run(receiver));
        this
    }

    /// The shards held here.
    pub fn view(&self) -> Vec<ShardView> {
        self.held
            .lock()
            .iter()
            .map(|(shard, held)| ShardView {
                shard: *shard,
                serving: held.serving.is_some(),
                epoch: held.epoch,
            })
            .collect()
    }

    /// The live nodes, sorted.
    pub fn live_nodes(&self) -> Vec<String> {
        let now = Instant::now();
        let mut live: Vec<String> = self
            .nodes
            .lock()
            .iter()
            .filter(|(id, seen)| {
                *id != &self.node
                    && seen
                        .1
                        .is_some_and(|at| now.duration_since(at) < self.times.lease)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let me_alive = self
            .heartbeat_ok
            .lock()
            .is_some_and(|at| now.duration_since(at) < self.times.lease);
        if me_alive {
            live.push(self.node.clone());
        }
        live.sort();
        live
    }

    /// Stops the loop and hands every shard off (graceful shutdown).
    pub async fn leave(&self) {
        self.stop.notify_one();
        let shards: Vec<usize> = self.held.lock().keys().copied().collect();
        join_all(shards.into_iter().map(|s| self.drop_shard(s, true))).await;
        if let Err(e) = self.jet.nodes.delete(&self.node).await {
            tracing::warn!(error = %e, "could not remove this node from the nodes bucket");
        }
    }

    async fn run(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(self.times.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now() - self.times.renew;
        loop {
            tokio::select! {
                _ = self.stop.notified() => return,
                Some(event) = events.recv() => self.handle(event).await,
                _ = tick.tick() => {
                    if renewed.elapsed() >= self.times.renew {
                        renewed = Instant::now();
                        self.heartbeat().await;
                        self.renew_all().await;
                    }
                    self.drop_lapsed().await;
                    self.reconcile().await;
                }
            }
        }
    }

    async fn heartbeat(&self) {
        let sent_at = Instant::now();
        match self.jet.nodes.put(&self.node, "alive".into()).await {
            Ok(_) => *self.heartbeat_ok.lock() = Some(sent_at),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }

    async fn renew_all(&self) {
        let leases: Vec<(usize, OwnerValue, u64)> = self
            .held
            .lock()
            .iter()
            .map(|(s, h)| (*s, h.value.clone(), h.revision))
            .collect();
        let renewals = leases
            .into_iter()
            .map(|(shard, value, revision)| async move {
                let sent_at = Instant::now();
                let result = self
                    .jet
                    .owners
                    .update(Names::owner_key(shard), encode(&value), revision)
                    .await;
                (shard, revision, sent_at, result)
            });
        for (shard, revision, sent_at, result) in join_all(renewals).await {
            match result {
                Ok(new_revision) => {
                    let mut held = self.held.lock();
                    if let Some(h) = held.get_mut(&shard).filter(|h| h.revision == revision) {
                        h.revision = new_revision;
                        h.lease.extend(sent_at, &self.times);
                        self.counts.renewals.fetch_add(1, Ordering::Relaxed);
                        self.wrote(shard, &h.value, new_revision);
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(shard, error = %e, "lease renewal refused: the shard was claimed");
                    self.counts.lost.fetch_add(1, Ordering::Relaxed);
                    self.drop_shard(shard, false).await;
                }
                // A timeout, no leader for the bucket (an election), or a
                // refusal while another write is in flight: the lease stays
                // as it was, and lapses if renewals keep failing.
                Err(e) => tracing::warn!(shard, error = %e, "lease not renewed"),
            }
        }
    }

    async fn drop_lapsed(&self) {
        let lapsed: Vec<usize> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.lease.holds())
            .map(|(s, _)| *s)
            .collect();
        for shard in lapsed {
            tracing::warn!(shard, "lease lapsed; no longer serving the shard");
            self.counts.lost.fetch_add(1, Ordering::Relaxed);
            self.drop_shard(shard, false).await;
        }
    }

    async fn reconcile(&self) {
        let live = self.live_nodes();
        if !live.contains(&self.node) {
            return;
        }
        let placement = assign(self.shards, &live);
        for (shard, desired) in placement.into_iter().enumerate() {
            let (held, serving) = match self.held.lock().get(&shard) {
                Some(h) => (true, h.serving.is_some()),
                None => (false, false),
            };
            if held && serving && *desired != self.node {
                tracing::info!(shard, to = %desired, "handing the shard off");
                self.counts.handoffs.fetch_add(1, Ordering::Relaxed);
                self.drop_shard(shard, true).await;
            } else if !held && *desired == self.node && self.claimable(shard) {
                self.claim(shard).await;
            }
        }
    }

    /// Records this node's own successful write of `shard`'s entry in the
    /// shard map as seen, so that a later claim or release compares against
    /// it even while the watch lags (after a reconnect, a watch can go quiet
    /// for seconds until it notices and starts again).
    fn wrote(&self, shard: usize, value: &OwnerValue, revision: u64) {
        let mut owners = self.owners.lock();
        let newer = owners
            .get(&shard)
            .is_none_or(|seen| seen.revision < revision);
        if newer {
            owners.insert(
                shard,
                Seen {
                    value: Some(value.clone()),
                    revision,
                    since: Instant::now(),
                },
            );
        }
    }

    fn claimable(&self, shard: usize) -> bool {
        match self.owners.lock().get(&shard) {
            None => true,
            Some(Seen { value: None, .. }) => true,
            Some(Seen {
                value: Some(value),
                since,
                ..
            }) => {
                value.node.is_empty()
                    || value.node == self.node
                    || since.elapsed() >= self.times.lease
            }
        }
    }

    async fn claim(&self, shard: usize) {
        let seen = self.owners.lock().get(&shard).cloned();
        let epoch = seen
            .as_ref()
            .and_then(|s| s.value.as_ref())
            .map_or(0, |v| v.epoch)
            + 1;
        let value = OwnerValue {
            node: self.node.clone(),
            epoch,
        };
        let key = Names::owner_key(shard);
        let sent_at = Instant::now();
        let result = match &seen {
            None => self
                .jet
                .owners
                .create(&key, encode(&value))
                .await
                .map_err(|e| e.to_string()),
            Some(seen) => self
                .jet
                .owners
                .update(&key, encode(&value), seen.revision)
                .await
                .map_err(|e| e.to_string()),
        };
        let revision = match result {
            Ok(revision) => revision,
            Err(e) => {
                tracing::debug!(shard, error = %e, "claim lost");
                return;
            }
        };
        tracing::info!(shard, epoch, "claimed the shard; taking it over");
        self.wrote(shard, &value, revision);
        self.held.lock().insert(
            shard,
            Held {
                epoch,
                value,
                revision,
                lease: Lease::new(sent_at, &self.times),
                serving: None,
            },
        );
        let jet = self.jet.clone();
        let catalog = Arc::clone(&self.catalog);
        let node = self.node.clone();
        let retention_ms = self.retention_ms;
        let events = self.events.clone();
        let snapshots = self.snapshots.clone();
        actix_web::rt::spawn(async move {
            let result = takeover::take_over(
                &jet,
                &catalog,
                &snapshots,
                shard,
                &node,
                epoch,
                retention_ms,
            )
            .await;
            let _ = events.send(Event::Loaded {
                shard,
                epoch,
                result: Box::new(result),
            });
        });
    }

    async fn handle(&self, event: Event) {
        match event {
            Event::Loaded {
                shard,
                epoch,
                result,
            } => self.loaded(shard, epoch, *result).await,
            Event::LogEnded {
                shard,
                epoch,
                ended,
            } => {
                let current = self.held.lock().get(&shard).map(|h| h.epoch) == Some(epoch);
                if !current {
                    return;
                }
                match ended {
                    Ended::Fenced(cause) => {
                        tracing::warn!(shard, %cause, "append fenced: the shard moved");
                        self.counts.fenced.fetch_add(1, Ordering::Relaxed);
                        self.drop_shard(shard, false).await;
                    }
                    Ended::Failed(cause) => {
                        tracing::error!(shard, %cause, "the shard's log failed; releasing it");
                        self.drop_shard(shard, true).await;
                    }
                }
            }
        }
    }

    async fn loaded(&self, shard: usize, epoch: u64, result: Result<TakenOver, String>) {
        let taken = match result {
            Ok(taken) => taken,
            Err(cause) => {
                tracing::error!(shard, %cause, "takeover failed; releasing the shard");
                self.drop_shard(shard, true).await;
                return;
            }
        };
        let mut held = self.held.lock();
        let Some(h) = held.get_mut(&shard).filter(|h| h.epoch == epoch) else {
            // Dropped meanwhile (lease lapsed during the takeover).
            return;
        };
        let log = ReplicatedLog::new(Arc::clone(self.snapshots.keyring()));
        let target = Target {
            js: self.jet.js.clone(),
            subject: self.jet.names.shard_subject(shard),
            id_prefix: format!(
                "{}.{shard}.{epoch}.{}",
                self.jet.names.cluster(),
                uuid::Uuid::new_v4().simple()
            ),
            last_sequence: taken.claim_sequence,
        };
        let events = self.events.clone();
        let committer_log = log.clone();
        let committer = actix_web::rt::spawn(async move {
            let ended = committer_log.run(target).await;
            let _ = events.send(Event::LogEnded {
                shard,
                epoch,
                ended,
            });
        });
        let tokens = taken.state.len();
        let (snapshot, messages) = (taken.snapshot, taken.messages);
        self.engine.install_shard(
            shard,
            taken.state,
            Arc::new(log.clone()),
            Arc::clone(&h.lease) as Arc<dyn Tenure>,
        );
        let responder = actix_web::rt::spawn(forward::serve_shard(
            self.jet.clone(),
            self.engine.clone(),
            Arc::clone(&self.catalog),
            shard,
            Arc::clone(&self.forward_counts),
        ));
        h.serving = Some(Serving {
            log,
            committer,
            responder,
        });
        self.counts.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            shard,
            epoch,
            tokens,
            snapshot_sequence = snapshot.map_or(0, |s| s.sequence),
            messages,
            "serving the shard"
        );
    }

    /// Stops serving `shard` here. With `release`, waits for its log to send
    /// what is pending and marks it released, so the next owner need not
    /// wait for the lease to lapse.
    async fn drop_shard(&self, shard: usize, release: bool) {
        let Some(held) = self.held.lock().remove(&shard) else {
            return;
        };
        if let Some(serving) = held.serving {
            serving.responder.abort();
            self.engine.remove_shard(shard);
            if release {
                serving.log.close();
                let drained = tokio::time::timeout(self.times.lease, serving.committer).await;
                if drained.is_err() {
                    serving.log.end(LogError::Closed);
                }
            } else {
                serving.log.end(LogError::Fenced {
                    cause: Arc::from("this node no longer holds the shard"),
                });
                serving.committer.abort();
            }
        }
        if release {
            let value = OwnerValue {
                node: String::new(),
                epoch: held.epoch,
            };
            if let Err(e) = self
                .jet
                .owners
                .update(Names::owner_key(shard), encode(&value), held.revision)
                .await
            {
                tracing::debug!(shard, error = %e, "release refused; the lease will lapse");
            }
        }
    }

    /// Snapshots every shard served here that changed since its last
    /// snapshot, every `interval`, one shard at a time (off the loop that
    /// renews leases).
    async fn snapshot_schedule(self: Arc<Self>, interval: Duration) {
        let mut done: HashMap<(usize, u64), crate::log::Lsn> = HashMap::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let serving: Vec<(usize, u64, ReplicatedLog)> = self
                .held
                .lock()
                .iter()
                .filter_map(|(s, h)| h.serving.as_ref().map(|v| (*s, h.epoch, v.log.clone())))
                .collect();
            done.retain(|(s, e), _| serving.iter().any(|(s2, e2, _)| s == s2 && e == e2));
            for (shard, epoch, log) in serving {
                let lsn = crate::log::Log::last_lsn(&log);
                if lsn == 0 || done.get(&(shard, epoch)) == Some(&lsn) {
                    continue;
                }
                let now = self.engine.now();
                match self.snapshots.take(&self.engine, shard, &log, now).await {
                    Ok(_) => {
                        done.insert((shard, epoch), lsn);
                    }
                    Err(e) => tracing::warn!(shard, error = %e, "shard snapshot failed"),
                }
            }
        }
    }

    async fn watch_owners(self: Arc<Self>) {
        loop {
            // With history: the last value of every key first, then changes.
            match self.jet.owners.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(entry) = self.next_entry(&mut watch).await {
                        let Some(shard) = Names::shard_of_key(&entry.key) else {
                            continue;
                        };
                        let value = match entry.operation {
                            Operation::Put => serde_json::from_slice(&entry.value).ok(),
                            Operation::Delete | Operation::Purge => None,
                        };
                        let mut owners = self.owners.lock();
                        // A restarted watch replays the last value of each
                        // key, which may be older than this node's own write.
                        let changed = owners
                            .get(&shard)
                            .is_none_or(|seen| seen.revision < entry.revision);
                        if changed {
                            owners.insert(
                                shard,
                                Seen {
                                    value,
                                    revision: entry.revision,
                                    since: Instant::now(),
                                },
                            );
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the shard map"),
            }
            tokio::time::sleep(self.times.tick).await;
        }
    }

    /// The next entry of a watch; `None` when the watch should start again:
    /// it failed, or it delivered nothing for a whole lease although every
    /// live node heartbeats and renews every `renew` (a consumer lost with
    /// the NATS server it lived on stays quiet until the client notices).
    async fn next_entry(&self, watch: &mut kv::Watch) -> Option<kv::Entry> {
        match tokio::time::timeout(self.times.lease, watch.next()).await {
            Ok(Some(Ok(entry))) => Some(entry),
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "watch failed; watching again");
                None
            }
            Ok(None) => None,
            Err(_) => {
                tracing::debug!("watch quiet for a lease; watching again");
                None
            }
        }
    }

    async fn watch_nodes(self: Arc<Self>) {
        loop {
            match self.jet.nodes.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(entry) = self.next_entry(&mut watch).await {
                        let seen = match entry.operation {
                            Operation::Put => Some(Instant::now()),
                            Operation::Delete | Operation::Purge => None,
                        };
                        let mut nodes = self.nodes.lock();
                        let newer = nodes
                            .get(&entry.key)
                            .is_none_or(|(revision, _)| *revision < entry.revision);
                        if newer {
                            nodes.insert(entry.key.clone(), (entry.revision, seen));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the nodes"),
            }
            tokio::time::sleep(self.times.tick).await;
        }
    }
}

/// The node each shard belongs on among `live` (sorted): rendezvous
/// hashing with bounded loads. Shard by shard, in index order, the live
/// node with the highest score for it that has fewer than
/// `ceil(shards / live)` shards so far. Every node computes the same answer
/// from the same live set; no node gets more than its even share rounded
/// up; when a node leaves or returns, its own shards move and at most a
/// few others.
pub fn assign(shards: usize, live: &[String]) -> Vec<&String> {
    if live.is_empty() {
        return Vec::new();
    }
    let capacity = shards.div_ceil(live.len());
    let mut load = vec![0usize; live.len()];
    let mut placed = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut ranked: Vec<usize> = (0..live.len()).collect();
        ranked.sort_by_key(|&i| std::cmp::Reverse((score(shard, &live[i]), live[i].as_str())));
        // The capacities add up to at least `shards`: some node has room.
        let pick = ranked
            .into_iter()
            .find(|&i| load[i] < capacity)
            .unwrap_or(0);
        load[pick] += 1;
        placed.push(&live[pick]);
    }
    placed
}

/// A shard's score on a node: fixed hashes (FNV-1a of the node id, each
/// side through the SplitMix64 finalizer), the same on every build and
/// platform, since nodes of different builds must agree.
fn score(shard: usize, node: &str) -> u64 {
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        fnv ^= u64::from(byte);
        fnv = fnv.wrapping_mul(0x0100_0000_01b3);
    }
    mix(mix(fnv) ^ mix(shard as u64))
}

/// SplitMix64's finalizer.
fn mix(mut h: u64) -> u64 {
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn encode(value: &OwnerValue) -> bytes::Bytes {
    // A struct of a string and an integer always serializes.
    serde_json::to_vec(value).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shards_spread_evenly_and_few_move_beside_a_leaving_nodes() {
        for names in [
            ["n1", "n2", "n3"],
            ["t1", "t2", "t3"],
            ["node-a", "node-b", "node-c"],
        ] {
            for shards in [8, 12, 64] {
                let three = nodes(&names);
                let placed = assign(shards, &three);
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for node in &placed {
                    *counts.entry(node.as_str()).or_default() += 1;
                }
                let high = shards.div_ceil(3);
                let low = shards - 2 * high;
                assert!(
                    counts.values().all(|c| (low..=high).contains(c)) && counts.len() == 3,
                    "{names:?} {shards}: {counts:?}"
                );
                let two = nodes(&[names[0], names[2]]);
                let after = assign(shards, &two);
                let moved = (0..shards)
                    .filter(|&s| placed[s] != names[1] && placed[s] != after[s])
                    .count();
                assert!(
                    moved <= 2,
                    "{names:?} {shards}: {moved} shards moved without need"
                );
            }
        }
        assert!(assign(4, &[]).is_empty());
        // Fixed values: a change of the hash would make nodes of two builds
        // disagree on where shards belong.
        assert_eq!(score(0, "n1"), 0x3409_3d3c_38a0_4a24);
    }
}
