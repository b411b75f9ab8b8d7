//! The engine: the catalog plus the shard actors, the durable store, and the
//! routing between them. The HTTP layer calls only this.
//!
//! A token operation goes to the shard that owns the token id; a create that
//! spans shards (children, batches) is split per shard, each part applied
//! atomically by its shard. No answer leaves the engine before the log
//! records it depends on are durable: the shards append through the
//! [`Log`] seam and answer with an LSN, and the engine awaits
//! [`Log::durable`] for it.

use crate::catalog::{Catalog, CatalogError};
use crate::clock::{Clock, Millis};
use crate::command::{CatalogCommand, Create, Delete, NewToken, Redeem};
use crate::ids::{AccountId, CollectionId, KeyId, TokenId};
use crate::log::{Log, LogError, LogRecord, Lsn};
use crate::metrics::store::{SnapshotMetrics, WalMetrics};
use crate::metrics::tokens::{StatusCounts, TokenGauges};
use crate::metrics::EngineReadings;
use crate::model::api_key::{self, GeneratedKey};
use crate::model::collection::CollectionRecord;
use crate::model::{Account, ApiKey, Collection, Liveness, Scopes, Token};
use crate::shard::actor::{Decided, Execute, Fetch, List, Precheck, RunTimers};
use crate::shard::{Shard, TokenCommand};
use crate::snapshot::snapshotter::SnapshotFailed;
use crate::snapshot::{SnapshotInfo, Snapshotter};
use crate::store::{Store, StoreConfig, StoreError};
use actix::{Actor, Addr, Arbiter};
use futures_util::future::join_all;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub use crate::shard::{Created, ListQuery, Redeemed, Rejection, TimerReport};

/// Upper bound on shards: each is a thread.
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
    /// The operating system could not supply randomness for a key.
    #[error("no randomness available")]
    Entropy,
}

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

struct Inner {
    /// One actor per shard; index = `TokenId::shard`.
    shards: Vec<Addr<Shard>>,
    /// The threads the shards run on, stopped at shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
    /// Accounts, keys, collections.
    catalog: Arc<Catalog>,
    /// The engine clock.
    clock: Arc<dyn Clock>,
    /// Where every change is logged; what answers wait on.
    log: Arc<dyn Log>,
    /// The data dir: its lock, the WAL's lifecycle, the snapshot files.
    store: Store,
    /// Takes snapshots and cuts the log behind them.
    snapshotter: Arc<Snapshotter>,
    /// Each shard's token counts by status, published by the shard.
    token_gauges: Vec<Arc<TokenGauges>>,
}

impl From<LogError> for EngineError {
    fn from(error: LogError) -> Self {
        EngineError::Storage(error.to_string())
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
        let mut arbiters = Vec::with_capacity(config.shards);
        let mut shards = Vec::with_capacity(config.shards);
        let mut token_gauges = Vec::with_capacity(config.shards);
        for state in restored.shards {
            let arbiter = Arbiter::new();
            let shard = Shard::new(
                state,
                Arc::clone(&catalog),
                Arc::clone(&log),
                Arc::clone(&clock),
                config.timer_period,
            );
            token_gauges.push(shard.token_gauges());
            shards.push(Shard::start_in_arbiter(&arbiter.handle(), move |_| shard));
            arbiters.push(arbiter);
        }
        let snapshotter = Arc::new(Snapshotter::new(
            Arc::clone(&catalog),
            shards.clone(),
            Arc::clone(store.wal()),
            Arc::clone(store.snapshot_files()),
            Arc::clone(&clock),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                shards,
                arbiters: Mutex::new(arbiters),
                catalog,
                clock,
                log,
                store,
                snapshotter,
                token_gauges,
            }),
        })
    }

    /// Flushes the log, writes a final snapshot and stops the shards. Called
    /// after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let flushed = self
            .inner
            .store
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
        let _ = self.inner.store.close();
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
        self.inner.shards.len()
    }

    fn shard_of(&self, id: TokenId) -> &Addr<Shard> {
        &self.inner.shards[id.shard(self.inner.shards.len())]
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
        if shards.len() > 1 || !children.is_empty() {
            self.precheck(account, children.iter().chain(&parents).map(|(_, t)| t))
                .await?;
        }
        let mut ordered: Vec<Option<Created>> = vec![None; count];
        for phase in [children, parents] {
            if !phase.is_empty() {
                self.create_part(phase, &mut ordered).await?;
            }
        }
        Ok(ordered.into_iter().flatten().collect())
    }

    /// Checks every idempotent token on its shard before anything is created.
    async fn precheck<'a>(
        &self,
        account: AccountId,
        tokens: impl Iterator<Item = &'a NewToken>,
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
        let checks = items.into_iter().map(|(shard, items)| {
            self.inner.shards[shard].send(Precheck {
                account_id: account,
                items,
            })
        });
        for result in join_all(checks).await {
            result.map_err(|_| EngineError::Unavailable)??;
        }
        // The checks read state that may rest on records not yet durable.
        self.wait_durable(self.inner.log.last_lsn()).await
    }

    /// Creates `tokens` (with their request positions) on their shards, each
    /// shard's part atomically, and waits until all parts are durable.
    async fn create_part(
        &self,
        tokens: Vec<(usize, NewToken)>,
        ordered: &mut [Option<Created>],
    ) -> Result<(), EngineError> {
        let mut groups: BTreeMap<usize, Vec<(usize, NewToken)>> = BTreeMap::new();
        for (position, token) in tokens {
            groups
                .entry(token.id.shard(self.shard_count()))
                .or_default()
                .push((position, token));
        }
        let mut positions = Vec::with_capacity(groups.len());
        let mut sends = Vec::with_capacity(groups.len());
        for (shard, group) in groups {
            let (places, tokens): (Vec<usize>, Vec<NewToken>) = group.into_iter().unzip();
            positions.push(places);
            sends.push(self.inner.shards[shard].send(Execute(Create { tokens })));
        }
        let mut decided = Vec::with_capacity(positions.len());
        let mut lsn = 0;
        for result in join_all(sends).await {
            let part = result.map_err(|_| EngineError::Unavailable)??;
            lsn = lsn.max(part.lsn);
            decided.push(part.value);
        }
        self.wait_durable(lsn).await?;
        for (places, result) in positions.into_iter().zip(decided) {
            let created = result?;
            assert_eq!(created.len(), places.len(), "one result per token");
            for (place, created) in places.into_iter().zip(created) {
                ordered[place] = Some(created);
            }
        }
        Ok(())
    }

    /// Redeems a token, exactly once; a repeat of the winning request is a
    /// replay.
    pub async fn redeem(&self, command: Redeem) -> Result<Redeemed, EngineError> {
        self.execute(command.id, command).await
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
    async fn execute<C: TokenCommand>(
        &self,
        id: TokenId,
        command: C,
    ) -> Result<C::Outcome, EngineError> {
        let decided = self
            .shard_of(id)
            .send(Execute(command))
            .await
            .map_err(|_| EngineError::Unavailable)??;
        self.wait_durable(decided.lsn).await?;
        Ok(decided.value?)
    }

    async fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        Ok(self.inner.log.durable(lsn).await?)
    }

    /// Waits for the records a read depends on, then hands back its value, so
    /// that reads do not show changes a crash could still undo. Once the log
    /// is poisoned those records never become durable; reads go on anyway
    /// (only writes are refused).
    async fn durable<T>(&self, decided: Decided<T>) -> Result<T, EngineError> {
        if let Err(e) = self.wait_durable(decided.lsn).await {
            tracing::debug!(error = %e, "read served from a poisoned engine");
        }
        Ok(decided.value)
    }

    /// The tokens `ids` as `account` sees them, in order.
    pub async fn fetch(
        &self,
        account: AccountId,
        ids: &[TokenId],
    ) -> Result<Vec<Option<Arc<Token>>>, EngineError> {
        if let [id] = ids {
            let decided = self
                .shard_of(*id)
                .send(Fetch {
                    account_id: account,
                    ids: vec![*id],
                })
                .await
                .map_err(|_| EngineError::Unavailable)?;
            let mut found = self.durable(decided).await?;
            return Ok(vec![found.pop().flatten()]);
        }
        let mut groups: BTreeMap<usize, Vec<(usize, TokenId)>> = BTreeMap::new();
        for (position, id) in ids.iter().enumerate() {
            groups
                .entry(id.shard(self.shard_count()))
                .or_default()
                .push((position, *id));
        }
        let mut positions = Vec::new();
        let mut sends = Vec::new();
        for (shard, group) in groups {
            let (places, ids): (Vec<usize>, Vec<TokenId>) = group.into_iter().unzip();
            positions.push(places);
            sends.push(self.inner.shards[shard].send(Fetch {
                account_id: account,
                ids,
            }));
        }
        let mut ordered = vec![None; ids.len()];
        for (places, result) in positions.into_iter().zip(join_all(sends).await) {
            let found = self
                .durable(result.map_err(|_| EngineError::Unavailable)?)
                .await?;
            for (place, token) in places.into_iter().zip(found) {
                ordered[place] = token;
            }
        }
        Ok(ordered)
    }

    /// One page of the account's tokens, merged over every shard.
    pub async fn list(&self, query: ListQuery) -> Result<TokenPage, EngineError> {
        let limit = query.limit;
        let sends = (0..self.shard_count()).map(|shard| {
            let mut part = query.clone();
            part.ids.retain(|id| id.shard(self.shard_count()) == shard);
            let skip = !query.ids.is_empty() && part.ids.is_empty();
            (!skip).then(|| self.inner.shards[shard].send(List(part)))
        });
        let mut tokens = Vec::new();
        for result in join_all(sends.flatten()).await {
            let page = self
                .durable(result.map_err(|_| EngineError::Unavailable)?)
                .await?;
            tokens.extend(page.tokens);
        }
        tokens.sort_by_key(|t| (t.created_at_ms, t.id));
        let has_more = tokens.len() > limit;
        tokens.truncate(limit);
        Ok(TokenPage { tokens, has_more })
    }

    /// Runs every shard's timers now (tests move the clock, then call this).
    pub async fn run_timers(&self) -> Result<TimerReport, EngineError> {
        let mut total = TimerReport::default();
        for result in join_all(self.inner.shards.iter().map(|s| s.send(RunTimers))).await {
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
        self.catalog_execute(CatalogCommand::CreateCollection(record))
            .await?;
        self.catalog()
            .collection(id)
            .ok_or(EngineError::Catalog(CatalogError::DuplicateId))
    }

    async fn catalog_execute(&self, command: CatalogCommand) -> Result<(), EngineError> {
        let log = &self.inner.log;
        log.check_writable()?;
        let lsn = self.inner.catalog.execute(command, |command| {
            log.append(&LogRecord::Catalog(command.clone()))
        })??;
        self.wait_durable(lsn).await
    }

    /// Writes a snapshot of every component and returns once it is durable.
    pub async fn snapshot(&self) -> Result<SnapshotInfo, EngineError> {
        Ok(self.inner.snapshotter.snapshot().await?)
    }

    /// Takes the snapshots: the application runs its schedule.
    pub fn snapshotter(&self) -> &Arc<Snapshotter> {
        &self.inner.snapshotter
    }

    /// Tokens held by status, summed over the shards as each last published
    /// them.
    pub fn token_counts(&self) -> StatusCounts {
        let mut total = StatusCounts::default();
        for gauges in &self.inner.token_gauges {
            total.add_all(&gauges.read());
        }
        total
    }
}

impl EngineReadings for Engine {
    fn token_counts(&self) -> StatusCounts {
        Engine::token_counts(self)
    }

    fn wal_metrics(&self) -> &WalMetrics {
        self.inner.store.wal().metrics()
    }

    fn snapshot_metrics(&self) -> &SnapshotMetrics {
        self.inner.snapshotter.metrics()
    }
}
