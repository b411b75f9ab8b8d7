//! The engine: the catalog plus the shard actors, the durable store, and the
//! routing between them. The HTTP layer calls only this.
//!
//! A token operation goes to the shard that owns the token id; a create that
//! spans shards (children, batches) is split per shard, each part applied
//! atomically by its shard. No answer leaves the engine before the log
//! records it depends on are durable.

use crate::catalog::{Catalog, CatalogCommand, CatalogError};
use crate::clock::{Clock, Millis};
use crate::ids::{AccountId, CollectionId, KeyId, TokenId};
use crate::metrics::store::{SnapshotMetrics, WalMetrics};
use crate::metrics::tokens::{StatusCounts, TokenGauges};
use crate::model::api_key::{self, GeneratedKey};
use crate::model::collection::CollectionRecord;
use crate::model::{Account, ApiKey, Collection, Liveness, Scopes, Token};
use crate::persist::image::{SnapshotImage, FORMAT_VERSION};
use crate::persist::record::WalRecord;
use crate::persist::restore::ShardCapture;
use crate::persist::store::{Restored, SnapshotInfo, Store, StoreConfig, StoreError};
use crate::shard::actor::{Capture, Decided, Execute, Fetch, List, Precheck, RunTimers};
use crate::shard::{
    Created, ListQuery, NewToken, Outcome, Rejection, Shard, ShardCommand, TimerReport,
};
use crate::wal::{Lsn, WalError};
use actix::{Actor, Addr, Arbiter};
use futures_util::future::join_all;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

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
    /// The log failed (write or fsync error): nothing more is acknowledged
    /// until a restart.
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
    /// The log and snapshots.
    store: Arc<Store>,
    /// One snapshot at a time.
    snapshotting: tokio::sync::Mutex<()>,
    /// Each shard's token counts by status, published by the shard.
    token_gauges: Vec<Arc<TokenGauges>>,
    /// Snapshot durations and sizes.
    snapshot_metrics: SnapshotMetrics,
}

fn storage_error(error: WalError) -> EngineError {
    EngineError::Storage(error.to_string())
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
        let Restored {
            catalog,
            shards: states,
            ..
        } = restored;
        let store = Arc::new(store);
        let mut arbiters = Vec::with_capacity(config.shards);
        let mut shards = Vec::with_capacity(config.shards);
        let mut token_gauges = Vec::with_capacity(config.shards);
        for state in states {
            let arbiter = Arbiter::new();
            let shard = Shard::new(
                state,
                Arc::clone(&catalog),
                Arc::clone(&store),
                Arc::clone(&clock),
                config.timer_period,
            );
            token_gauges.push(shard.token_gauges());
            shards.push(Shard::start_in_arbiter(&arbiter.handle(), move |_| shard));
            arbiters.push(arbiter);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shards,
                arbiters: Mutex::new(arbiters),
                catalog,
                clock,
                store,
                snapshotting: tokio::sync::Mutex::new(()),
                token_gauges,
                snapshot_metrics: SnapshotMetrics::default(),
            }),
        })
    }

    /// Flushes the log, writes a final snapshot and stops the shards. Called
    /// after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let flushed = self.inner.store.flush().map_err(storage_error);
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
        self.wait_durable(self.inner.store.last_lsn()).await
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
            sends.push(self.inner.shards[shard].send(Execute(ShardCommand::Create { tokens })));
        }
        let mut decided = Vec::with_capacity(positions.len());
        let mut lsn = 0;
        for result in join_all(sends).await {
            let part = result
                .map_err(|_| EngineError::Unavailable)?
                .map_err(storage_error)?;
            lsn = lsn.max(part.lsn);
            decided.push(part.value);
        }
        self.wait_durable(lsn).await?;
        for (places, result) in positions.into_iter().zip(decided) {
            let Outcome::Created(created) = result? else {
                unreachable!("a create command yields a create outcome");
            };
            assert_eq!(created.len(), places.len(), "one result per token");
            for (place, created) in places.into_iter().zip(created) {
                ordered[place] = Some(created);
            }
        }
        Ok(())
    }

    /// Redeems a token; `Ok((token, replayed))`.
    pub async fn redeem(
        &self,
        account: AccountId,
        id: TokenId,
        merchant_id: Option<String>,
        idempotency_key: Option<String>,
        redeemed_by: String,
    ) -> Result<(Arc<Token>, bool), EngineError> {
        let command = ShardCommand::Redeem {
            account_id: account,
            id,
            merchant_id,
            idempotency_key,
            redeemed_by,
        };
        match self.execute(id, command).await? {
            Outcome::Redeemed { token, replayed } => Ok((token, replayed)),
            _ => unreachable!("a redeem command yields a redeem outcome"),
        }
    }

    /// Deletes a token (again is fine).
    pub async fn delete(&self, account: AccountId, id: TokenId) -> Result<(), EngineError> {
        let command = ShardCommand::Delete {
            account_id: account,
            id,
        };
        self.execute(id, command).await.map(|_| ())
    }

    async fn execute(&self, id: TokenId, command: ShardCommand) -> Result<Outcome, EngineError> {
        let decided = self
            .shard_of(id)
            .send(Execute(command))
            .await
            .map_err(|_| EngineError::Unavailable)?
            .map_err(storage_error)?;
        self.wait_durable(decided.lsn).await?;
        Ok(decided.value?)
    }

    async fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        self.inner
            .store
            .wait_durable(lsn)
            .await
            .map_err(storage_error)
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
        let store = &self.inner.store;
        store.check_writable().map_err(storage_error)?;
        let lsn = self
            .inner
            .catalog
            .execute(command, |command| {
                store.append(&WalRecord::Catalog(command.clone()))
            })?
            .map_err(storage_error)?;
        self.wait_durable(lsn).await
    }

    /// Writes a snapshot of every component and returns once it is durable.
    /// Shards are captured one after another, each in one message turn, so a
    /// snapshot never stops more than one shard at a time; encoding and
    /// writing run off the async workers.
    pub async fn snapshot(&self) -> Result<SnapshotInfo, EngineError> {
        let _one_at_a_time = self.inner.snapshotting.lock().await;
        // Timed from here: the wait for an earlier snapshot is not this one's.
        let started = std::time::Instant::now();
        let result = self.write_snapshot().await;
        let metrics = &self.inner.snapshot_metrics;
        match &result {
            Ok(info) => metrics.written(started.elapsed(), info.bytes, info.tokens),
            Err(_) => metrics.failed(),
        }
        result
    }

    /// [`Engine::snapshot`], under its one-at-a-time lock.
    async fn write_snapshot(&self) -> Result<SnapshotInfo, EngineError> {
        let store = Arc::clone(&self.inner.store);
        let (catalog, catalog_lsn) = self.inner.catalog.image_at(|| store.last_lsn());
        let mut captures = Vec::with_capacity(self.shard_count());
        for shard in &self.inner.shards {
            captures.push(
                shard
                    .send(Capture)
                    .await
                    .map_err(|_| EngineError::Unavailable)?,
            );
        }
        // The captures may hold changes whose records are not yet durable;
        // the snapshot is written only once they are (a poisoned log refuses
        // it here).
        let newest = captures.iter().map(|c| c.lsn).fold(catalog_lsn, Lsn::max);
        self.wait_durable(newest).await?;
        let taken_at_ms = self.now();
        let shard_count = self.shard_count() as u32;
        let started = std::time::Instant::now();
        let (done, written) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tokend-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let image = SnapshotImage {
                    format_version: FORMAT_VERSION,
                    taken_at_ms,
                    shard_count,
                    catalog_lsn,
                    catalog,
                    shards: captures.into_iter().map(ShardCapture::into_image).collect(),
                };
                // The engine may have given up waiting (shutdown): nothing to tell.
                let _ = done.send(store.write_snapshot(&image));
            })
            .map_err(|e| EngineError::Storage(format!("cannot start the snapshot thread: {e}")))?;
        let info = written
            .await
            .map_err(|_| EngineError::Unavailable)?
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        tracing::info!(
            lsn = info.lsn,
            tokens = info.tokens,
            bytes = info.bytes,
            file = %info.file.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        Ok(info)
    }

    /// Bytes logged since the WAL was last cut.
    pub fn wal_bytes_since_cut(&self) -> u64 {
        self.inner.store.wal_bytes_since_cut()
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

    /// The WAL writer's fsync and batch metrics.
    pub fn wal_metrics(&self) -> &WalMetrics {
        self.inner.store.wal_metrics()
    }

    /// Snapshot durations and sizes.
    pub fn snapshot_metrics(&self) -> &SnapshotMetrics {
        &self.inner.snapshot_metrics
    }
}

/// Nice value of the snapshot thread: encoding and writing a snapshot of a
/// million tokens keeps a core busy for a good part of a second, and on a
/// small machine the request threads should get that core first, so that
/// redeem latency barely moves while a snapshot runs.
#[cfg(target_os = "linux")]
const SNAPSHOT_THREAD_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority to [`SNAPSHOT_THREAD_NICE`].
/// Best effort: a failure only costs latency during snapshots, so it is
/// logged, not returned. Linux only: elsewhere the nice value is per process.
#[cfg(target_os = "linux")]
fn lower_thread_priority() {
    // SAFETY: setpriority only reads its integer arguments. On Linux the nice
    // value is per thread, and `who = 0` names the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_THREAD_NICE) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the snapshot thread's priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority() {}
