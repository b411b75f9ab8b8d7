//! The engine: the catalog plus the shard actors, the durable store, and the
//! routing between them. The HTTP layer calls only this.
//!
//! A token operation goes to the shard that owns the token id; a create that
//! spans shards (children, batches) is split per shard, each part applied
//! atomically by its shard. No answer leaves the engine before the log
//! records it depends on are durable: the shards append through the
//! [`Log`] seam and answer with an LSN, and the engine awaits
//! [`Log::durable`] for it.
//!
//! - [`mailbox`]: the bound on the requests a shard holds (503 `OVERLOADED`
//!   past it).
//! - [`homes`]: which thread each shard runs on (an HTTP worker's, adopted
//!   as it starts, or the engine's own).
//! - [`placement`]: where each shard runs (here, or on another node of a
//!   cluster, reached through [`Remote`]), and how catalog changes are
//!   written ([`CatalogWriter`]).

pub mod homes;
pub mod mailbox;
pub mod placement;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::{Clock, Millis};
use crate::command::{Capture, CatalogCommand, Delete, Hold, NewToken, Redeem, Release, Void};
use crate::ids::{AccountId, CollectionId, KeyId, TokenId};
use crate::keyring::Keyring;
use crate::log::{Log, LogError, LogRecord};
use crate::metrics::store::{SnapshotMetrics, WalMetrics};
use crate::metrics::tokens::{StatusCounts, TokenGauges};
use crate::metrics::EngineReadings;
use crate::model::api_key::{self, GeneratedKey};
use crate::model::collection::CollectionRecord;
use crate::model::{Account, ApiKey, Collection, Liveness, Scopes, Token};
use crate::shard::actor::RunTimers;
use crate::shard::wire::{self, ShardReply, ShardRequest, WireCommand, WireError};
use crate::shard::{ListPage, Shard, ShardState};
use crate::snapshot::snapshotter::SnapshotFailed;
use crate::snapshot::{SnapshotInfo, Snapshotter};
use crate::store::{Store, StoreConfig, StoreError};
use actix::{Actor, Arbiter};
use futures_util::future::{join_all, ready, BoxFuture, Either, FutureExt};
use mailbox::{Admitted, Mailbox};
use parking_lot::Mutex;
use placement::{Placement, ShardHandle};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use crate::shard::{Changed, Checked, Created, ListQuery, Redeemed, Rejection, TimerReport};
pub use placement::{CatalogWriter, Remote, Tenure};

/// Upper bound on shards: each is a thread on a single node.
pub const SHARDS_MAX: usize = 256;

/// How the engine is shaped.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shard actors (threads).
    pub shards: usize,
    /// How long redeemed, expired and deleted tokens stay readable.
    pub tombstone_retention_ms: i64,
    /// How often shard timers run on their own.
    pub timer_period: Duration,
    /// Where and how state is kept durable.
    pub store: StoreConfig,
    /// Requests one shard may hold at once (`--shard-mailbox-max`); past
    /// it, 503 `OVERLOADED`.
    pub shard_mailbox_max: usize,
}

/// Why the engine refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A shard refused the command.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The catalog refused the command.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A shard is gone (shutting down).
    #[error("the engine is shutting down")]
    Unavailable,
    /// The log failed (write or fsync error), or a snapshot could not be
    /// written: for the log, nothing more is acknowledged until a restart.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// The shard holds as many requests as `--shard-mailbox-max` allows; the
    /// request was refused before the shard saw it (nothing changed).
    #[error("the shard is overloaded")]
    Overloaded,
    /// The operating system could not supply randomness for a key.
    #[error("no randomness available")]
    Entropy,
    /// Cluster: the shard moved to another node while the request was in
    /// flight; whether the change was made is unknown to this node.
    #[error("the shard moved to another node")]
    ShardMoved,
    /// Cluster: no node serves the shard right now (a takeover is under way,
    /// or this node is catching up); retry after the given seconds.
    #[error("not available yet: {reason}")]
    NotReady {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after_secs: u32,
    },
}

/// The mailbox slots one request holds, by shard.
type Slots = BTreeMap<usize, Admitted>;

/// A page of tokens.
#[derive(Debug, Clone)]
pub struct TokenPage {
    /// The tokens, in list order.
    pub tokens: Vec<Arc<Token>>,
    /// Whether more follow the last one.
    pub has_more: bool,
}

/// The running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    /// Shared state.
    inner: Arc<Inner>,
}

/// How the engine keeps its changes.
enum Durability {
    /// One node: the data dir's WAL and snapshots.
    Local {
        /// The data dir: its lock, the WAL's lifecycle, the snapshot files.
        store: Store,
        /// Takes snapshots and cuts the log behind them.
        snapshotter: Arc<Snapshotter>,
    },
    /// A cluster: each shard's log is replicated, shards not held here are
    /// reached through `remote`.
    Cluster {
        /// Sends requests to the owners of shards not held here.
        remote: Arc<dyn Remote>,
        /// Zeros: a cluster node has no WAL of its own.
        wal_metrics: WalMetrics,
        /// Zeros: cluster snapshots are the cluster's.
        snapshot_metrics: SnapshotMetrics,
    },
}

struct Inner {
    /// Where each shard runs.
    placement: Arc<Placement>,
    /// Starts shards whose worker thread stopped under them again on the
    /// engine's threads (`None` in a cluster: no shard moves to a worker).
    keeper: Option<tokio::sync::mpsc::UnboundedSender<crate::shard::actor::Moving>>,
    /// The threads shards run on, stopped at shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
    /// Accounts, keys, collections.
    catalog: Arc<Catalog>,
    /// Decides, logs and applies catalog changes.
    catalog_writer: Arc<dyn CatalogWriter>,
    /// The engine clock.
    clock: Arc<dyn Clock>,
    /// How often shard timers run on their own.
    timer_period: Duration,
    /// Requests one shard may hold at once.
    shard_mailbox_max: usize,
    /// Local store or cluster.
    durability: Durability,
}

impl From<LogError> for EngineError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Fenced { .. } => EngineError::ShardMoved,
            other => EngineError::Storage(other.to_string()),
        }
    }
}

impl From<WireError> for EngineError {
    fn from(error: WireError) -> Self {
        EngineError::NotReady {
            reason: error.to_string(),
            retry_after_secs: 1,
        }
    }
}

impl From<SnapshotFailed> for EngineError {
    fn from(error: SnapshotFailed) -> Self {
        match error {
            SnapshotFailed::Unavailable => EngineError::Unavailable,
            other => EngineError::Storage(other.to_string()),
        }
    }
}

/// Catalog changes on one node: decided under the catalog's writer lock and
/// appended to the WAL in the same step.
struct LocalCatalog {
    /// The catalog.
    catalog: Arc<Catalog>,
    /// The WAL.
    log: Arc<dyn Log>,
}

impl CatalogWriter for LocalCatalog {
    fn write(&self, command: CatalogCommand) -> BoxFuture<'static, Result<(), EngineError>> {
        let log = Arc::clone(&self.log);
        let decided = log
            .check_writable()
            .map_err(EngineError::from)
            .and_then(|()| {
                self.catalog
                    .execute(command, |command| {
                        log.append(&LogRecord::Catalog(command.clone()))
                    })?
                    .map_err(EngineError::from)
            });
        Box::pin(async move { Ok(log.durable(decided?).await?) })
    }

    fn catch_up(&self) -> BoxFuture<'static, Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn replicated(&self) -> bool {
        false
    }
}

/// How a cluster node's engine is shaped.
pub struct ClusterEngineConfig {
    /// Number of shards of the cluster.
    pub shards: usize,
    /// Threads the shards held here run on.
    pub threads: usize,
    /// How long redeemed, expired and deleted tokens stay readable.
    pub tombstone_retention_ms: i64,
    /// How often shard timers run on their own.
    pub timer_period: Duration,
    /// Requests one shard may hold at once (`--shard-mailbox-max`).
    pub shard_mailbox_max: usize,
    /// Seals token values in the replicated records and shard snapshots,
    /// and opens them (every node needs the same keys).
    pub keyring: Arc<Keyring>,
}

impl Engine {
    /// Restores the data dir's state and starts the shards; must run inside
    /// an actix system. Blocks while restoring.
    pub fn open(config: &EngineConfig, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        assert!(
            (1..=SHARDS_MAX).contains(&config.shards),
            "shard count is validated by the CLI"
        );
        let (store, restored) =
            Store::open(&config.store, config.shards, config.tombstone_retention_ms)?;
        let catalog = restored.catalog;
        let log: Arc<dyn Log> = store.wal().clone();
        let placement = Arc::new(Placement::new(config.shards));
        let mut arbiters = Vec::with_capacity(config.shards);
        for (index, state) in restored.shards.into_iter().enumerate() {
            let arbiter = Arbiter::new();
            let handle = start_shard(
                &arbiter,
                state,
                &catalog,
                Arc::clone(&log),
                None,
                &clock,
                ShardSettings {
                    timer_period: config.timer_period,
                    mailbox_max: config.shard_mailbox_max,
                },
            );
            placement.install(index, handle);
            arbiters.push(arbiter);
        }
        let keeper = homes::start_keeper(
            &arbiters[0],
            arbiters.iter().map(Arbiter::handle).collect(),
            Arc::clone(&placement),
        );
        let snapshotter = Arc::new(Snapshotter::new(
            Arc::clone(&catalog),
            Arc::clone(&placement) as Arc<dyn crate::snapshot::ShardAddresses>,
            Arc::clone(store.wal()),
            Arc::clone(store.snapshot_files()),
            Arc::clone(&clock),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                placement,
                keeper: Some(keeper),
                arbiters: Mutex::new(arbiters),
                catalog_writer: Arc::new(LocalCatalog {
                    catalog: Arc::clone(&catalog),
                    log,
                }),
                catalog,
                clock,
                timer_period: config.timer_period,
                shard_mailbox_max: config.shard_mailbox_max,
                durability: Durability::Local { store, snapshotter },
            }),
        })
    }

    /// An engine of a cluster node: no shard runs here until the node
    /// takes it over ([`Engine::install_shard`]); until then requests go to
    /// their owners through `remote`. `catalog` is this node's replica,
    /// kept and written by `catalog_writer`. Must run inside an actix system.
    pub fn open_cluster(
        config: &ClusterEngineConfig,
        clock: Arc<dyn Clock>,
        catalog: Arc<Catalog>,
        catalog_writer: Arc<dyn CatalogWriter>,
        remote: Arc<dyn Remote>,
    ) -> Self {
        assert!(config.shards >= 1, "shard count is validated by the CLI");
        let arbiters = (0..config.threads.max(1)).map(|_| Arbiter::new()).collect();
        Self {
            inner: Arc::new(Inner {
                placement: Arc::new(Placement::new(config.shards)),
                keeper: None,
                arbiters: Mutex::new(arbiters),
                catalog,
                catalog_writer,
                clock,
                timer_period: config.timer_period,
                shard_mailbox_max: config.shard_mailbox_max,
                durability: Durability::Cluster {
                    remote,
                    wal_metrics: WalMetrics::default(),
                    snapshot_metrics: SnapshotMetrics::default(),
                },
            }),
        }
    }

    /// Cluster: starts serving shard `index` from `state`, logging to `log`,
    /// for as long as `tenure` holds.
    pub fn install_shard(
        &self,
        index: usize,
        state: ShardState,
        log: Arc<dyn Log>,
        tenure: Arc<dyn Tenure>,
    ) {
        let arbiters = self.inner.arbiters.lock();
        let Some(arbiter) = arbiters.get(index % arbiters.len().max(1)) else {
            // Stopped: the engine is shutting down.
            return;
        };
        let handle = start_shard(
            arbiter,
            state,
            &self.inner.catalog,
            log,
            Some(tenure),
            &self.inner.clock,
            ShardSettings {
                timer_period: self.inner.timer_period,
                mailbox_max: self.inner.shard_mailbox_max,
            },
        );
        drop(arbiters);
        self.inner.placement.install(index, handle);
    }

    /// Cluster: stops serving shard `index` here. The actor stops once the
    /// requests it holds are answered; the handle is returned so the caller
    /// can wait for its log.
    pub fn remove_shard(&self, index: usize) -> Option<Arc<ShardHandle>> {
        self.inner.placement.remove(index)
    }

    /// Cluster: captures shard `index` for a snapshot, when it runs here.
    pub async fn capture_shard(&self, index: usize) -> Option<crate::shard::ShardCapture> {
        let handle = self.inner.placement.get(index)?;
        handle.addr.send(crate::shard::actor::Capture).await.ok()
    }

    /// Requests shard `index` holds now (queued for it, being decided, or
    /// waiting for their log records), when it runs here.
    pub fn shard_requests_held(&self, index: usize) -> Option<usize> {
        self.inner
            .placement
            .get(index)
            .map(|handle| handle.mailbox.held())
    }

    /// Whether shard `index` runs here and this node still holds it.
    pub fn serves(&self, index: usize) -> bool {
        matches!(self.local(index), Ok(Some(_)))
    }

    /// Cluster: decides a request another node sent for a shard held here.
    pub async fn serve_remote(
        &self,
        shard: usize,
        request: ShardRequest,
    ) -> Result<ShardReply, EngineError> {
        match self.local(shard)? {
            Some(handle) => handle.serve(request).await,
            None => Err(EngineError::ShardMoved),
        }
    }

    /// Flushes the log, writes a final snapshot and stops the shards. Called
    /// after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let Durability::Local { store, .. } = &self.inner.durability else {
            self.stop();
            return Ok(());
        };
        // Shards adopted by the HTTP workers come back to the engine's
        // threads as the workers stop: the snapshot below needs every one.
        self.settle().await;
        let flushed = store
            .wal()
            .flush()
            .map_err(|e| EngineError::Storage(e.to_string()));
        let snapshot = match &flushed {
            Ok(()) => self.snapshot().await.map(|_| ()),
            // A poisoned log means memory may hold changes that were refused
            // to clients: they must not reach a snapshot.
            Err(_) => Ok(()),
        };
        self.stop();
        // Nothing writes any more: release the data dir now, not whenever the
        // last handle on the engine drops. A flush failure there is the one
        // already in `flushed`.
        let _ = store.close();
        flushed.and(snapshot)
    }

    /// Stops the shard threads.
    pub fn stop(&self) {
        for arbiter in self.inner.arbiters.lock().drain(..) {
            arbiter.stop();
            // Joining waits for in-flight messages; a panicked shard thread has
            // nothing left to flush, so its error is only logged.
            if arbiter.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }

    /// The catalog (read side).
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The engine clock's current time.
    pub fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.placement.len()
    }

    /// The shard's handle when it runs here and this node still holds it;
    /// `Err` when it runs here but this node's hold lapsed.
    fn local(&self, shard: usize) -> Result<Option<Arc<ShardHandle>>, EngineError> {
        match self.inner.placement.get(shard) {
            Some(handle) => match &handle.tenure {
                Some(tenure) if !tenure.holds() => Err(EngineError::ShardMoved),
                _ => Ok(Some(handle)),
            },
            None => Ok(None),
        }
    }

    /// A slot on each of `shards` that runs here, taken all at once: either
    /// every one, or none and [`EngineError::Overloaded`]. Shards held
    /// elsewhere are bounded by their owners.
    fn admit_all(&self, shards: impl Iterator<Item = usize>) -> Result<Slots, EngineError> {
        let mut slots = Slots::new();
        for shard in shards {
            if let Some(handle) = self.local(shard)? {
                // On a refusal the slots taken so far drop with `slots`.
                slots.insert(shard, handle.admit()?);
            }
        }
        Ok(slots)
    }

    /// Sends `request` to the node that owns `shard`.
    async fn remote(&self, shard: usize, request: ShardRequest) -> Result<ShardReply, EngineError> {
        match &self.inner.durability {
            Durability::Cluster { remote, .. } => remote.call(shard, request).await,
            // A single node holds every shard from start to stop.
            Durability::Local { .. } => Err(EngineError::Unavailable),
        }
    }

    /// Creates tokens (one, a parent with children, or a batch), returning
    /// them in request order. Idempotent tokens spanning several shards are
    /// checked on every shard first, so a reused key with another body
    /// creates nothing.
    ///
    /// Children are created, durably, before their parents: each shard logs
    /// its own part, so a crash between parts can leave a child without its
    /// parent (an unanswered request), but never a parent naming a child that
    /// does not exist.
    pub async fn create(
        &self,
        account: AccountId,
        tokens: Vec<NewToken>,
    ) -> Result<Vec<Created>, EngineError> {
        let count = tokens.len();
        debug_assert!(tokens.iter().all(|t| t.account_id == account));
        let child_ids: HashSet<TokenId> = tokens
            .iter()
            .flat_map(|t| t.children.iter().copied())
            .collect();
        let (children, parents): (Vec<_>, Vec<_>) = tokens
            .into_iter()
            .enumerate()
            .partition(|(_, t)| child_ids.contains(&t.id));
        let shards: HashSet<usize> = children
            .iter()
            .chain(&parents)
            .map(|(_, t)| t.id.shard(self.shard_count()))
            .collect();
        // Every slot first: a full shard refuses the whole create before
        // any part of it is logged.
        let slots = self.admit_all(shards.iter().copied())?;
        if shards.len() > 1 || !children.is_empty() {
            self.precheck(
                account,
                children.iter().chain(&parents).map(|(_, t)| t),
                &slots,
            )
            .await?;
        }
        let mut ordered: Vec<Option<Created>> = vec![None; count];
        for phase in [children, parents] {
            if !phase.is_empty() {
                self.create_part(phase, &mut ordered, &slots).await?;
            }
        }
        Ok(ordered.into_iter().flatten().collect())
    }

    /// Checks every idempotent token on its shard before anything is created.
    async fn precheck<'a>(
        &self,
        account: AccountId,
        tokens: impl Iterator<Item = &'a NewToken>,
        slots: &Slots,
    ) -> Result<(), EngineError> {
        let mut items: BTreeMap<usize, Vec<(TokenId, [u8; 16])>> = BTreeMap::new();
        for token in tokens {
            if let Some(fingerprint) = token.fingerprint {
                items
                    .entry(token.id.shard(self.shard_count()))
                    .or_default()
                    .push((token.id, fingerprint));
            }
        }
        let checks = items
            .into_iter()
            .map(|(shard, items)| self.precheck_on(shard, account, items, slots));
        for result in join_all(checks).await {
            result??;
        }
        Ok(())
    }

    async fn precheck_on(
        &self,
        shard: usize,
        account_id: AccountId,
        items: Vec<(TokenId, [u8; 16])>,
        slots: &Slots,
    ) -> Result<Result<(), Rejection>, EngineError> {
        if let Some(handle) = self.local(shard)? {
            let admitted;
            let slot = match slots.get(&shard) {
                Some(slot) => slot,
                None => {
                    admitted = handle.admit()?;
                    &admitted
                }
            };
            return handle.precheck(slot, account_id, items).await;
        }
        match self
            .remote(shard, ShardRequest::Precheck { account_id, items })
            .await?
        {
            ShardReply::Checked => Ok(Ok(())),
            ShardReply::Rejected(rejection) => Ok(Err(rejection)),
            _ => Err(WireError::Mismatch("precheck").into()),
        }
    }

    /// Creates `tokens` (with their request positions) on their shards, each
    /// shard's part atomically, and waits until all parts are durable.
    async fn create_part(
        &self,
        tokens: Vec<(usize, NewToken)>,
        ordered: &mut [Option<Created>],
        slots: &Slots,
    ) -> Result<(), EngineError> {
        let mut groups: BTreeMap<usize, Vec<(usize, NewToken)>> = BTreeMap::new();
        for (position, token) in tokens {
            groups
                .entry(token.id.shard(self.shard_count()))
                .or_default()
                .push((position, token));
        }
        let mut positions = Vec::with_capacity(groups.len());
        let mut parts = Vec::with_capacity(groups.len());
        for (shard, group) in groups {
            let (places, tokens): (Vec<usize>, Vec<NewToken>) = group.into_iter().unzip();
            positions.push(places);
            parts.push(self.execute_on(
                shard,
                crate::command::Create { tokens },
                slots.get(&shard),
            ));
        }
        // Every part is decided and durable (or failed) before any answer.
        let decided = join_all(parts).await;
        for (places, result) in positions.into_iter().zip(decided) {
            let created = result??;
            assert_eq!(created.len(), places.len(), "one result per token");
            for (place, created) in places.into_iter().zip(created) {
                ordered[place] = Some(created);
            }
        }
        Ok(())
    }

    /// Redeems a token, exactly once; a repeat of the winning request is a
    /// replay.
    pub fn redeem(
        &self,
        command: Redeem,
    ) -> impl Future<Output = Result<Redeemed, EngineError>> + '_ {
        self.execute(command.id, command)
    }

    /// Redeems several tokens, each exactly as [`Engine::redeem`] would:
    /// grouped by shard, each shard deciding its part in request order in
    /// one turn, all parts at once. Answers in request order once every
    /// part's records are durable; a part whose shard could not answer
    /// (moved, unavailable) is that error for each of its items.
    pub async fn redeem_each(
        &self,
        commands: Vec<Redeem>,
    ) -> Vec<Result<Result<Redeemed, Rejection>, EngineError>> {
        let count = commands.len();
        let mut groups: BTreeMap<usize, (Vec<usize>, Vec<Redeem>)> = BTreeMap::new();
        for (position, command) in commands.into_iter().enumerate() {
            let group = groups
                .entry(command.id.shard(self.shard_count()))
                .or_default();
            group.0.push(position);
            group.1.push(command);
        }
        let mut positions = Vec::with_capacity(groups.len());
        let mut parts = Vec::with_capacity(groups.len());
        for (shard, (places, commands)) in groups {
            positions.push(places);
            parts.push(self.redeem_each_on(shard, commands));
        }
        let mut ordered: Vec<Option<Result<Result<Redeemed, Rejection>, EngineError>>> =
            (0..count).map(|_| None).collect();
        for (places, result) in positions.into_iter().zip(join_all(parts).await) {
            match result {
                Ok(outcomes) => {
                    assert_eq!(outcomes.len(), places.len(), "one outcome per redeem");
                    for (place, outcome) in places.into_iter().zip(outcomes) {
                        ordered[place] = Some(Ok(outcome));
                    }
                }
                Err(error) => {
                    for place in places {
                        ordered[place] = Some(Err(error.clone()));
                    }
                }
            }
        }
        ordered
            .into_iter()
            .map(|o| o.unwrap_or(Err(EngineError::Unavailable)))
            .collect()
    }

    async fn redeem_each_on(
        &self,
        shard: usize,
        commands: Vec<Redeem>,
    ) -> Result<Vec<Result<Redeemed, Rejection>>, EngineError> {
        if let Some(handle) = self.local(shard)? {
            return handle.execute_each(&handle.admit()?, commands).await;
        }
        let reply = self
            .remote(shard, ShardRequest::RedeemEach(commands))
            .await?;
        Ok(reply.into_redeemed_each(&self.inner.catalog)?)
    }

    /// Places a hold on a token.
    pub async fn hold(&self, command: Hold) -> Result<Changed, EngineError> {
        self.execute(command.id, command).await
    }

    /// Captures a hold: the token is redeemed for it.
    pub async fn capture(&self, command: Capture) -> Result<Changed, EngineError> {
        self.execute(command.id, command).await
    }

    /// Releases a hold.
    pub async fn release(&self, command: Release) -> Result<Changed, EngineError> {
        self.execute(command.id, command).await
    }

    /// Voids a token's redemption.
    pub async fn void(&self, command: Void) -> Result<Changed, EngineError> {
        self.execute(command.id, command).await
    }

    /// What a redeem would answer now, decided in the owning shard's order
    /// and answered once the state it read is durable; changes nothing.
    pub async fn validate(&self, command: Redeem) -> Result<Checked, EngineError> {
        let shard = command.id.shard(self.shard_count());
        let checked = match self.local(shard)? {
            Some(handle) => handle.validate(&handle.admit()?, command).await?,
            None => self
                .remote(shard, ShardRequest::Validate(command))
                .await?
                .into_validated(&self.inner.catalog)?,
        };
        Ok(checked?)
    }

    /// Deletes a token (again is fine).
    pub async fn delete(&self, account: AccountId, id: TokenId) -> Result<(), EngineError> {
        let command = Delete {
            account_id: account,
            id,
        };
        self.execute(id, command).await.map(|_| ())
    }

    /// Has the shard owning `id` decide `command`, and answers its outcome
    /// once the records it depends on are durable.
    ///
    /// Like [`Engine::execute_on`], it decides where the command goes when
    /// called and returns a future holding only what it awaits.
    fn execute<C: WireCommand>(
        &self,
        id: TokenId,
        command: C,
    ) -> impl Future<Output = Result<C::Outcome, EngineError>> + '_ {
        self.execute_on(id.shard(self.shard_count()), command, None)
            .map(|decided| decided?.map_err(EngineError::from))
    }

    /// Has `shard`, here or on its owner, decide `command`; answers once the
    /// records it depends on are durable. `slot`: one the request already
    /// holds on the shard (else one is taken now, and held until the answer).
    ///
    /// A local shard is sent the command when this is called: the future
    /// holds the reply and the wait, not the command as well (see
    /// [`ShardHandle::execute`]). The rare remote case is boxed, so that
    /// its larger future does not size the common one.
    fn execute_on<C: WireCommand>(
        &self,
        shard: usize,
        command: C,
        slot: Option<&Admitted>,
    ) -> impl Future<Output = Result<Result<C::Outcome, Rejection>, EngineError>> + '_ {
        let handle = match self.local(shard) {
            Ok(Some(handle)) => handle,
            Ok(None) => {
                return Either::Right(Box::pin(async move {
                    let reply = self.remote(shard, command.request()).await?;
                    Ok(C::outcome(reply, &self.inner.catalog)?)
                }))
            }
            Err(e) => return Either::Left(Either::Left(ready(Err(e)))),
        };
        let (decided, taken) = match slot {
            Some(slot) => (handle.execute(slot, command), None),
            None => match handle.admit() {
                Ok(taken) => (handle.execute(&taken, command), Some(taken)),
                Err(e) => return Either::Left(Either::Left(ready(Err(e)))),
            },
        };
        // The slot taken here is held until the answer, like one the request
        // brought. Combinators, not an `async` block, for the reason in
        // `ShardHandle::execute`.
        Either::Left(Either::Right(decided.map(move |outcome| {
            drop(taken);
            outcome
        })))
    }

    /// The tokens `ids` as `account` sees them, in order.
    pub async fn fetch(
        &self,
        account: AccountId,
        ids: &[TokenId],
    ) -> Result<Vec<Option<Arc<Token>>>, EngineError> {
        if let [id] = ids {
            let shard = id.shard(self.shard_count());
            return self.fetch_on(shard, account, vec![*id]).await;
        }
        let mut groups: BTreeMap<usize, Vec<(usize, TokenId)>> = BTreeMap::new();
        for (position, id) in ids.iter().enumerate() {
            groups
                .entry(id.shard(self.shard_count()))
                .or_default()
                .push((position, *id));
        }
        let mut positions = Vec::new();
        let mut reads = Vec::new();
        for (shard, group) in groups {
            let (places, ids): (Vec<usize>, Vec<TokenId>) = group.into_iter().unzip();
            positions.push(places);
            reads.push(self.fetch_on(shard, account, ids));
        }
        let mut ordered = vec![None; ids.len()];
        for (places, result) in positions.into_iter().zip(join_all(reads).await) {
            for (place, token) in places.into_iter().zip(result?) {
                ordered[place] = token;
            }
        }
        Ok(ordered)
    }

    async fn fetch_on(
        &self,
        shard: usize,
        account_id: AccountId,
        ids: Vec<TokenId>,
    ) -> Result<Vec<Option<Arc<Token>>>, EngineError> {
        if let Some(handle) = self.local(shard)? {
            return handle.fetch(&handle.admit()?, account_id, ids).await;
        }
        match self
            .remote(shard, ShardRequest::Fetch { account_id, ids })
            .await?
        {
            ShardReply::Fetched(found) => Ok(found
                .into_iter()
                .map(|t| t.map(|t| t.into_token(&self.inner.catalog)).transpose())
                .collect::<Result<_, _>>()?),
            _ => Err(WireError::Mismatch("fetch").into()),
        }
    }

    /// One page of the account's tokens, merged over every shard.
    pub async fn list(&self, query: ListQuery) -> Result<TokenPage, EngineError> {
        let limit = query.limit;
        let pages = (0..self.shard_count()).map(|shard| {
            let mut part = query.clone();
            part.ids.retain(|id| id.shard(self.shard_count()) == shard);
            let skip = !query.ids.is_empty() && part.ids.is_empty();
            (!skip).then(|| self.list_on(shard, part))
        });
        let mut tokens = Vec::new();
        for page in join_all(pages.flatten()).await {
            tokens.extend(page?.tokens);
        }
        tokens.sort_by_key(|t| (t.created_at_ms, t.id));
        let has_more = tokens.len() > limit;
        tokens.truncate(limit);
        Ok(TokenPage { tokens, has_more })
    }

    async fn list_on(&self, shard: usize, query: ListQuery) -> Result<ListPage, EngineError> {
        if let Some(handle) = self.local(shard)? {
            return handle.list(&handle.admit()?, query).await;
        }
        match self.remote(shard, ShardRequest::List(query)).await? {
            ShardReply::Listed(tokens) => Ok(ListPage {
                tokens: wire::tokens_of(tokens, &self.inner.catalog)?,
            }),
            _ => Err(WireError::Mismatch("list").into()),
        }
    }

    /// Runs the timers of every shard running here now (tests move the
    /// clock, then call this).
    pub async fn run_timers(&self) -> Result<TimerReport, EngineError> {
        let mut total = TimerReport::default();
        let local = self.inner.placement.local();
        for result in join_all(local.iter().map(|(_, h)| h.addr.send(RunTimers))).await {
            let report = result.map_err(|_| EngineError::Unavailable)?;
            total.expired += report.expired;
            total.purged += report.purged;
        }
        Ok(total)
    }

    /// Creates an account.
    pub async fn create_account(
        &self,
        name: String,
        liveness: Liveness,
    ) -> Result<Account, EngineError> {
        let account = Account {
            id: AccountId::random(),
            name,
            liveness,
            created_at_ms: self.now(),
        };
        self.catalog_execute(CatalogCommand::CreateAccount(account.clone()))
            .await?;
        Ok(account)
    }

    /// Creates an API key; returns the record and the key string (shown once).
    pub async fn create_api_key(
        &self,
        account: AccountId,
        name: String,
        scopes: Scopes,
    ) -> Result<(ApiKey, String), EngineError> {
        let GeneratedKey {
            id,
            key,
            secret_sha256,
        } = api_key::generate_key().map_err(|_| EngineError::Entropy)?;
        let record = ApiKey {
            id,
            account_id: account,
            name,
            scopes,
            secret_sha256,
            created_at_ms: self.now(),
        };
        self.catalog_execute(CatalogCommand::CreateApiKey(record.clone()))
            .await?;
        Ok((record, key))
    }

    /// Revokes an API key at once.
    pub async fn delete_api_key(&self, account: AccountId, key: KeyId) -> Result<(), EngineError> {
        self.catalog_execute(CatalogCommand::DeleteApiKey {
            account_id: account,
            key_id: key,
        })
        .await
    }

    /// Creates a collection from a validated record (its id and creation time
    /// are assigned here).
    pub async fn create_collection(
        &self,
        mut record: CollectionRecord,
    ) -> Result<Arc<Collection>, EngineError> {
        record.id = CollectionId::random();
        record.created_at_ms = self.now();
        let id = record.id;
        self.catalog_execute(CatalogCommand::CreateCollection(Box::new(record)))
            .await?;
        self.catalog()
            .collection(id)
            .ok_or(EngineError::Catalog(CatalogError::DuplicateId))
    }

    /// Whether the catalog is a replica that other nodes change too: a key
    /// or collection missing here may exist, and [`Engine::catalog_catch_up`]
    /// before answering "not found" is worth its round trip.
    pub fn catalog_replicated(&self) -> bool {
        self.inner.catalog_writer.replicated()
    }

    /// Waits until this node's catalog holds every change acknowledged
    /// anywhere before the call.
    pub async fn catalog_catch_up(&self) -> Result<(), EngineError> {
        self.inner.catalog_writer.catch_up().await
    }

    async fn catalog_execute(&self, command: CatalogCommand) -> Result<(), EngineError> {
        self.inner.catalog_writer.write(command).await
    }

    /// Writes a snapshot of every component and returns once it is durable.
    pub async fn snapshot(&self) -> Result<SnapshotInfo, EngineError> {
        match &self.inner.durability {
            Durability::Local { snapshotter, .. } => Ok(snapshotter.snapshot().await?),
            Durability::Cluster { .. } => Err(EngineError::Unavailable),
        }
    }

    /// Takes the snapshots of a single node (`None` in a cluster).
    pub fn snapshotter(&self) -> Option<&Arc<Snapshotter>> {
        match &self.inner.durability {
            Durability::Local { snapshotter, .. } => Some(snapshotter),
            Durability::Cluster { .. } => None,
        }
    }

    /// Tokens held here by status, summed over the shards as each last
    /// published them.
    pub fn token_counts(&self) -> StatusCounts {
        let mut total = StatusCounts::default();
        for (_, handle) in self.inner.placement.local() {
            total.add_all(&handle.gauges.read());
        }
        total
    }
}

/// How each shard actor runs.
#[derive(Debug, Clone, Copy)]
struct ShardSettings {
    /// How often its timers run on their own.
    timer_period: Duration,
    /// Requests it may hold at once.
    mailbox_max: usize,
}

/// Starts a shard actor on `arbiter`.
fn start_shard(
    arbiter: &Arbiter,
    state: ShardState,
    catalog: &Arc<Catalog>,
    log: Arc<dyn Log>,
    tenure: Option<Arc<dyn Tenure>>,
    clock: &Arc<dyn Clock>,
    settings: ShardSettings,
) -> Arc<ShardHandle> {
    let ShardSettings {
        timer_period,
        mailbox_max,
    } = settings;
    let mailbox = Mailbox::new(mailbox_max);
    // Counted requests never fill the actor's own mailbox, so senders never
    // wait there: the bound is the engine's, answered at once.
    let shard = Shard::new(
        state,
        Arc::clone(catalog),
        Arc::clone(&log),
        Arc::clone(clock),
        timer_period,
    )
    .with_mailbox_capacity(mailbox_max + mailbox::UNCOUNTED_MESSAGES_MAX);
    let gauges: Arc<TokenGauges> = shard.token_gauges();
    let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_| shard);
    Arc::new(ShardHandle {
        addr,
        log,
        tenure,
        gauges,
        mailbox,
        on_worker: false,
    })
}

impl EngineReadings for Engine {
    fn token_counts(&self) -> StatusCounts {
        Engine::token_counts(self)
    }

    fn wal_metrics(&self) -> &WalMetrics {
        match &self.inner.durability {
            Durability::Local { store, .. } => store.wal().metrics(),
            Durability::Cluster { wal_metrics, .. } => wal_metrics,
        }
    }

    fn snapshot_metrics(&self) -> &SnapshotMetrics {
        match &self.inner.durability {
            Durability::Local { snapshotter, .. } => snapshotter.metrics(),
            Durability::Cluster {
                snapshot_metrics, ..
            } => snapshot_metrics,
        }
    }
}
