//! Where each shard runs: here (a [`ShardHandle`] in its slot) or on another
//! node (an empty slot; requests go through [`Remote`]).
//!
//! On a single node every slot is filled at start and never changes. In a
//! cluster, a slot is filled when this node takes the shard over and
//! emptied when it hands the shard off or loses it; a filled slot serves
//! only while its [`Tenure`] says this node still holds the shard.

use super::mailbox::{Admitted, Mailbox};
use super::EngineError;
use crate::command::CatalogCommand;
use crate::command::Redeem;
use crate::ids::{AccountId, TokenId};
use crate::log::{Log, Lsn};
use crate::metrics::tokens::TokenGauges;
use crate::model::Token;
use crate::shard::actor::{Decided, Execute, ExecuteEach, Fetch, List, Precheck, Validate};
use crate::shard::wire::{ShardReply, ShardRequest};
use crate::shard::{Checked, ListPage, ListQuery, Redeemed, Rejection, Shard, TokenCommand};
use actix::Addr;
use futures_util::future::{BoxFuture, FutureExt, TryFutureExt};
use parking_lot::RwLock;
use std::future::Future;
use std::sync::Arc;

/// Whether this node still holds a shard (a cluster lease): judged before
/// each request the shard serves.
pub trait Tenure: Send + Sync + 'static {
    /// True while this node may answer for the shard.
    fn holds(&self) -> bool;
}

/// Sends a request to the node that owns a shard and returns its reply,
/// given once the owner's records for it are durable.
pub trait Remote: Send + Sync + 'static {
    /// Asks the owner of `shard`.
    fn call(
        &self,
        shard: usize,
        request: ShardRequest,
    ) -> BoxFuture<'static, Result<ShardReply, EngineError>>;
}

/// Decides and logs catalog changes: locally under the catalog's writer
/// lock, or through a cluster's catalog log. Resolves once the change is
/// durable and applied to this node's catalog.
pub trait CatalogWriter: Send + Sync + 'static {
    /// Decides, logs and applies `command`.
    fn write(&self, command: CatalogCommand) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Resolves once this node's catalog holds every change acknowledged
    /// anywhere before the call (a cluster node's replica catches up; a
    /// single node's catalog always does).
    fn catch_up(&self) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Whether other nodes change the catalog too (a miss may be a change
    /// this node has not applied yet).
    fn replicated(&self) -> bool;
}

/// A shard running on this node.
pub struct ShardHandle {
    /// The actor.
    pub addr: Addr<Shard>,
    /// The log its records go to (what its answers wait on).
    pub log: Arc<dyn Log>,
    /// Whether this node still holds it (`None`: always, single node).
    pub tenure: Option<Arc<dyn Tenure>>,
    /// Its token counts, as it last published them.
    pub gauges: Arc<TokenGauges>,
    /// The slots requests take before messaging it: bounds what it holds.
    pub mailbox: Arc<Mailbox>,
    /// Whether it runs on an HTTP worker's thread (adopted) rather than on
    /// one of the engine's own.
    pub on_worker: bool,
}

impl ShardHandle {
    /// The same handle for the same shard started anew at `addr`.
    pub fn moved(old: &ShardHandle, addr: Addr<Shard>, on_worker: bool) -> Arc<ShardHandle> {
        Arc::new(ShardHandle {
            addr,
            log: Arc::clone(&old.log),
            tenure: old.tenure.clone(),
            gauges: Arc::clone(&old.gauges),
            mailbox: Arc::clone(&old.mailbox),
            on_worker,
        })
    }

    /// Decides `command` and answers once its records are durable.
    ///
    /// The command is sent when this is called, and the future holds only
    /// the reply and the wait: not `command` or `self` too, as an `async fn`
    /// would for its whole life. A request's future is one allocation that
    /// nests this one, and it stays small enough for the allocator's
    /// per-thread cache only if every layer holds just what it awaits.
    pub fn execute<C: TokenCommand>(
        &self,
        slot: &Admitted,
        command: C,
    ) -> impl Future<Output = Result<Result<C::Outcome, Rejection>, EngineError>> + 'static {
        self.check(slot);
        let log = Arc::clone(&self.log);
        // Combinators, not an `async` block: a block keeps what it captures
        // beside what it awaits, so the reply would be held twice.
        self.addr
            .send(Execute(command))
            .map(|sent| match sent {
                Ok(decided) => decided.map_err(EngineError::from),
                Err(_) => Err(EngineError::Unavailable),
            })
            .and_then(move |decided: Decided<_>| {
                log.durable(decided.lsn)
                    .map(move |durable| durable.map(|()| decided.value).map_err(EngineError::from))
            })
    }

    /// Decides `commands` in order in one turn, and answers once their
    /// records are durable.
    pub async fn execute_each<C: TokenCommand>(
        &self,
        slot: &Admitted,
        commands: Vec<C>,
    ) -> Result<Vec<Result<C::Outcome, Rejection>>, EngineError> {
        self.check(slot);
        let decided = self
            .addr
            .send(ExecuteEach(commands))
            .await
            .map_err(|_| EngineError::Unavailable)??;
        self.wait(decided.lsn).await?;
        Ok(decided.value)
    }

    /// What a redeem would answer, once everything it read is durable (a
    /// refusal must not rest on a change a crash could undo).
    pub async fn validate(
        &self,
        slot: &Admitted,
        command: Redeem,
    ) -> Result<Result<Checked, Rejection>, EngineError> {
        self.check(slot);
        let decided = self
            .addr
            .send(Validate(command))
            .await
            .map_err(|_| EngineError::Unavailable)?;
        self.wait(decided.lsn).await?;
        Ok(decided.value)
    }

    /// Reads tokens by id.
    pub async fn fetch(
        &self,
        slot: &Admitted,
        account_id: AccountId,
        ids: Vec<TokenId>,
    ) -> Result<Vec<Option<Arc<Token>>>, EngineError> {
        self.check(slot);
        let decided = self
            .addr
            .send(Fetch { account_id, ids })
            .await
            .map_err(|_| EngineError::Unavailable)?;
        self.read(decided).await
    }

    /// One page of a list.
    pub async fn list(&self, slot: &Admitted, query: ListQuery) -> Result<ListPage, EngineError> {
        self.check(slot);
        let decided = self
            .addr
            .send(List(query))
            .await
            .map_err(|_| EngineError::Unavailable)?;
        self.read(decided).await
    }

    /// Checks idempotency keys; the answer rests on everything logged so far.
    pub async fn precheck(
        &self,
        slot: &Admitted,
        account_id: AccountId,
        items: Vec<(TokenId, [u8; 16])>,
    ) -> Result<Result<(), Rejection>, EngineError> {
        self.check(slot);
        let checked = self
            .addr
            .send(Precheck { account_id, items })
            .await
            .map_err(|_| EngineError::Unavailable)?;
        self.wait(self.log.last_lsn()).await?;
        Ok(checked)
    }

    /// Takes a slot of this shard's mailbox (503 `OVERLOADED` when full).
    pub fn admit(&self) -> Result<Admitted, EngineError> {
        self.mailbox.admit()
    }

    /// Asserts that `slot` was taken in this shard's mailbox: a request
    /// messages a shard only while it holds one of its slots.
    fn check(&self, slot: &Admitted) {
        assert!(slot.is_of(&self.mailbox), "a slot of another shard");
    }

    async fn wait(&self, lsn: Lsn) -> Result<(), EngineError> {
        Ok(self.log.durable(lsn).await?)
    }

    /// Waits for the records a read depends on, then hands back its value, so
    /// that reads do not show changes a crash could still undo. Once a local
    /// log is poisoned those records never become durable; reads go on
    /// anyway (only writes are refused). A fenced log is another matter: the
    /// shard lives elsewhere now, and this copy must not answer.
    async fn read<T>(&self, decided: Decided<T>) -> Result<T, EngineError> {
        match self.wait(decided.lsn).await {
            Ok(()) => Ok(decided.value),
            Err(EngineError::ShardMoved) => Err(EngineError::ShardMoved),
            Err(e) => {
                tracing::debug!(error = %e, "read served from a poisoned engine");
                Ok(decided.value)
            }
        }
    }

    /// Decides a request that came from another node.
    pub async fn serve(&self, request: ShardRequest) -> Result<ShardReply, EngineError> {
        use crate::shard::wire::{TokenWire, WireCommand};
        let slot = &self.admit()?;
        Ok(match request {
            ShardRequest::Create(c) => crate::command::Create::reply(&self.execute(slot, c).await?),
            ShardRequest::Redeem(c) => crate::command::Redeem::reply(&self.execute(slot, c).await?),
            ShardRequest::Delete(c) => crate::command::Delete::reply(&self.execute(slot, c).await?),
            ShardRequest::Hold(c) => crate::command::Hold::reply(&self.execute(slot, c).await?),
            ShardRequest::Capture(c) => {
                crate::command::Capture::reply(&self.execute(slot, c).await?)
            }
            ShardRequest::Release(c) => {
                crate::command::Release::reply(&self.execute(slot, c).await?)
            }
            ShardRequest::Void(c) => crate::command::Void::reply(&self.execute(slot, c).await?),
            ShardRequest::Validate(c) => ShardReply::validated(&self.validate(slot, c).await?),
            ShardRequest::RedeemEach(commands) => {
                let outcomes: Vec<Result<Redeemed, Rejection>> =
                    self.execute_each(slot, commands).await?;
                ShardReply::redeemed_each(&outcomes)
            }
            ShardRequest::Fetch { account_id, ids } => ShardReply::Fetched(
                self.fetch(slot, account_id, ids)
                    .await?
                    .iter()
                    .map(|t| t.as_deref().map(TokenWire::of))
                    .collect(),
            ),
            ShardRequest::List(query) => ShardReply::listed(&self.list(slot, query).await?),
            ShardRequest::Precheck { account_id, items } => {
                match self.precheck(slot, account_id, items).await? {
                    Ok(()) => ShardReply::Checked,
                    Err(rejection) => ShardReply::Rejected(rejection),
                }
            }
        })
    }
}

impl crate::snapshot::ShardAddresses for Placement {
    fn addresses(&self) -> Vec<Option<Addr<Shard>>> {
        self.slots
            .iter()
            .map(|slot| slot.read().as_ref().map(|h| h.addr.clone()))
            .collect()
    }
}

/// One slot per shard.
pub struct Placement {
    /// Index = `TokenId::shard`.
    slots: Vec<RwLock<Option<Arc<ShardHandle>>>>,
}

impl Placement {
    /// `count` empty slots.
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count).map(|_| RwLock::new(None)).collect(),
        }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no shards (never, once built).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The shard's handle when it runs here; the lock is released before the
    /// caller awaits anything.
    pub fn get(&self, shard: usize) -> Option<Arc<ShardHandle>> {
        self.slots[shard].read().clone()
    }

    /// Runs `handle` for the shard from now on; returns the one it replaces.
    pub fn install(&self, shard: usize, handle: Arc<ShardHandle>) -> Option<Arc<ShardHandle>> {
        self.slots[shard].write().replace(handle)
    }

    /// Stops routing to the shard here; returns its handle.
    pub fn remove(&self, shard: usize) -> Option<Arc<ShardHandle>> {
        self.slots[shard].write().take()
    }

    /// Every shard running here, with its index.
    pub fn local(&self) -> Vec<(usize, Arc<ShardHandle>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.read().clone().map(|h| (i, h)))
            .collect()
    }
}
