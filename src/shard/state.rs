//! A shard's tokens and the one function that changes them.
//!
//! [`ShardState::apply`] is pure with respect to its inputs — the state, the
//! command, the decision time and the (append-only) catalog — so the live
//! path and WAL replay run the very same code. Everything time-dependent is
//! judged against the `now` passed in, never a clock read here: expiry and
//! tombstone purges are also evaluated lazily against `now`, so whether the
//! timers have run yet never changes a decision.

mod lifecycle;

use super::command::{apply_logged, TokenCommand};
use super::deadlines::Deadlines;
use super::outcome::{Created, Deleted, Redeemed, Rejection};
use super::table::{Slot, SlotId, SlotMillis, TableCapture, TokenTable};
use crate::catalog::Catalog;
use crate::clock::Millis;
use crate::command::{Delete, NewToken, Redeem, ShardCommand};
use crate::ids::{AccountId, CollectionId, TokenId};
use crate::metrics::tokens::StatusCounts;
use crate::model::token::NEVER;
use crate::model::{Collection, HoldEnd, Redemption, Status, Token, TokenExtra, TokenType};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Filters and position of one page of a token list, as one shard sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListQuery {
    /// The requester; only its tokens are listed.
    pub account_id: AccountId,
    /// Only these collections (any when empty).
    pub collection_ids: Vec<CollectionId>,
    /// Only these statuses (any when empty), judged at `now`.
    pub statuses: Vec<Status>,
    /// Only these types (any when empty).
    pub types: Vec<TokenType>,
    /// Only these ids (any when empty); the engine passes each shard its own.
    pub ids: Vec<TokenId>,
    /// Start strictly after this `(createdAt, id)` position.
    pub after: Option<(Millis, TokenId)>,
    /// Page size; the shard returns up to `limit + 1` so the caller knows
    /// whether more follow.
    pub limit: usize,
}

/// Up to `limit + 1` matching tokens, ordered by `(createdAt, id)`.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The tokens, in list order.
    pub tokens: Vec<Arc<Token>>,
}

/// What one timer run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerReport {
    /// Holds ended by their `expiresAt`.
    pub holds_lapsed: usize,
    /// Tokens moved to `expired`.
    pub expired: usize,
    /// Tombstones dropped after retention.
    pub purged: usize,
}

/// What a redeem will do, decided before anything changes.
enum RedeemPlan {
    /// Spend the token in this slot.
    Spend(SlotId),
    /// It repeats the winning request: answer the token as it is.
    Replay(SlotId),
}

/// What creating one token will do, decided before anything changes.
enum Planned {
    /// Store it as new, in this collection.
    Insert(Arc<Collection>),
    /// It exists with the same idempotency key and body: answer it.
    Replay,
}

/// Sorts `index` (slots of one account) into list order: creation time,
/// then id. Snapshots list a shard's tokens in slot order, which is creation
/// order unless freed slots were reused, so the common case is runs of one
/// creation millisecond (a batch) in order, each run in random id order:
/// each run is sorted by id with the ids beside the slots (no lookup of a
/// slot per comparison), and the whole is checked in one pass. Any other
/// order falls back to a full sort.
fn sort_by_creation(index: &mut [SlotId], table: &TokenTable) {
    let key = |at: SlotId| {
        table
            .slot(at)
            .map_or((Millis::MIN, TokenId(uuid::Uuid::nil())), |s| {
                (s.created_at_ms(), s.id)
            })
    };
    let mut run: Vec<(TokenId, SlotId)> = Vec::new();
    let mut start = 0;
    let mut in_order = true;
    let mut previous_ms = Millis::MIN;
    while start < index.len() {
        let (run_ms, _) = key(index[start]);
        if run_ms < previous_ms {
            in_order = false;
            break;
        }
        run.clear();
        let mut end = start;
        while end < index.len() {
            let (ms, id) = key(index[end]);
            if ms != run_ms {
                break;
            }
            run.push((id, index[end]));
            end += 1;
        }
        run.sort_unstable_by_key(|&(id, _)| id);
        for (place, &(_, at)) in index[start..end].iter_mut().zip(&run) {
            *place = at;
        }
        previous_ms = run_ms;
        start = end;
    }
    if !in_order {
        index.sort_by_key(|&at| key(at));
    }
    debug_assert!(index.windows(2).all(|w| key(w[0]) <= key(w[1])));
}

/// The tokens one shard owns, with their indexes and timers.
pub struct ShardState {
    /// Every token of this shard (tombstones included until purged), in
    /// compact slots shared copy-on-write with snapshot captures.
    table: TokenTable,
    /// Slots per account ordered by creation time: lists seek into it by
    /// binary search instead of scanning the shard.
    by_account: HashMap<AccountId, Vec<SlotId>>,
    /// Expiry deadlines of active (and held) tokens.
    expiries: Deadlines,
    /// Deadlines of live holds.
    holds: Deadlines,
    /// Purge deadlines of tombstones.
    purges: Deadlines,
    /// How long tombstones stay readable.
    retention_ms: i64,
    /// Tokens held per status, kept exact by every change below (metrics).
    counts: StatusCounts,
}

impl ShardState {
    /// An empty shard keeping tombstones for `retention_ms`.
    pub fn new(retention_ms: i64) -> Self {
        Self::from_table(TokenTable::default(), retention_ms)
    }

    /// A shard over restored tokens: rebuilds the account indexes and the
    /// timers from the slots.
    pub fn from_table(table: TokenTable, retention_ms: i64) -> Self {
        assert!(retention_ms >= 0, "retention is a duration");
        let mut by_account: HashMap<AccountId, Vec<SlotId>> = HashMap::new();
        let mut expiries = Vec::new();
        let mut holds = Vec::new();
        let mut purges = Vec::new();
        let mut counts = StatusCounts::default();
        let collections = table.tables().collections.shared();
        for (at, slot) in table.iter() {
            counts.add(slot.status);
            match slot.status {
                Status::Active | Status::Held => {
                    if slot.expires_at_ms() != NEVER {
                        expiries.push((slot.expires_at_ms(), at));
                    }
                    if let Some(hold) = &slot.extra().lifecycle().hold {
                        holds.push((hold.expires_at_ms, at));
                    }
                }
                Status::Expired | Status::Redeemed | Status::Deleted => {
                    // `tombstone_since` of a final status never needs `now`.
                    if let Some(since) = slot.tombstone_since(Millis::MIN) {
                        purges.push((since.saturating_add(retention_ms), at));
                    }
                }
            }
            let account = collections[slot.collection as usize].record.account_id;
            by_account.entry(account).or_default().push(at);
        }
        for index in by_account.values_mut() {
            sort_by_creation(index, &table);
            index.shrink_to_fit();
        }
        Self {
            table,
            by_account,
            expiries: Deadlines::from_unordered(expiries),
            holds: Deadlines::from_unordered(holds),
            purges: Deadlines::from_unordered(purges),
            retention_ms,
            counts,
        }
    }

    /// Number of tokens held (tombstones included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the shard holds no token.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Tokens held per status (tombstones included until purged).
    pub fn counts(&self) -> &StatusCounts {
        &self.counts
    }

    /// Applies `command` decided at `now` and answers its outcome: either
    /// every effect happens and the outcome says what, or nothing changes and
    /// the rejection says why.
    pub fn execute<C: TokenCommand>(
        &mut self,
        command: &C,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<C::Outcome, Rejection> {
        command.apply(self, now, catalog)
    }

    /// Applies a logged command decided at `now` (replay, or a test's log):
    /// whether it changed the state.
    pub fn apply(
        &mut self,
        command: &ShardCommand,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<bool, Rejection> {
        apply_logged(command, self, now, catalog)
    }

    /// The account owning the token in `slot`.
    fn account_of(&self, slot: &Slot) -> Option<AccountId> {
        self.table
            .tables()
            .collections
            .get(slot.collection)
            .map(|c| c.record.account_id)
    }

    /// The slot of token `id` as `account` may see it at `now`: `None` when
    /// unknown, another account's, or purged.
    fn visible(&self, account: AccountId, id: TokenId, now: Millis) -> Option<(SlotId, &Slot)> {
        let at = self.table.find(id)?;
        let slot = self.table.slot(at)?;
        (self.account_of(slot) == Some(account) && !slot.is_purged(now, self.retention_ms))
            .then_some((at, slot))
    }

    /// Whether each `(id, fingerprint)` is free or a replay; an idempotency key
    /// reused with another body is [`Rejection::AlreadyCreated`].
    pub fn precheck(
        &self,
        account: AccountId,
        items: &[(TokenId, [u8; 16])],
        now: Millis,
    ) -> Result<(), Rejection> {
        for (id, fingerprint) in items {
            if let Some((_, existing)) = self.visible(account, *id, now) {
                if existing.extra().create_fingerprint != Some(*fingerprint) {
                    return Err(Rejection::AlreadyCreated);
                }
            } else if self.table.get(*id).is_some() && !self.is_reusable(*id, now) {
                return Err(Rejection::AlreadyCreated);
            }
        }
        Ok(())
    }

    /// Whether an existing id may be created afresh: only a purged tombstone.
    fn is_reusable(&self, id: TokenId, now: Millis) -> bool {
        self.table
            .get(id)
            .is_none_or(|t| t.is_purged(now, self.retention_ms))
    }

    /// Creates `new_tokens` decided at `now`, all or none: every token is
    /// checked before any is stored.
    pub(super) fn create(
        &mut self,
        new_tokens: &[NewToken],
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Vec<Created>, Rejection> {
        let plan = new_tokens
            .iter()
            .map(|new| Ok((new, self.plan_create(new, now, catalog)?)))
            .collect::<Result<Vec<_>, Rejection>>()?;
        let mut results = Vec::with_capacity(plan.len());
        for (new, planned) in plan {
            results.push(match planned {
                Planned::Insert(collection) => Created::New(self.insert(new, &collection, now)),
                Planned::Replay => {
                    // Present a moment ago, and nothing in between removes tokens.
                    let existing = self.table.get(new.id).ok_or(Rejection::TokenNotFound)?;
                    Created::Replayed(self.table.view(existing))
                }
            });
        }
        Ok(results)
    }

    /// What creating `new` at `now` would do, changing nothing: insert it,
    /// answer the existing token (an idempotent retry), or refuse.
    fn plan_create(
        &self,
        new: &NewToken,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Planned, Rejection> {
        let collection = catalog
            .collection(new.collection_id)
            .filter(|c| c.record.account_id == new.account_id)
            .ok_or(Rejection::CollectionNotFound)?;
        match self.table.get(new.id) {
            Some(existing) if !existing.is_purged(now, self.retention_ms) => {
                let same_owner = self.account_of(existing) == Some(new.account_id);
                let same_body = new.fingerprint.is_some()
                    && existing.extra().create_fingerprint == new.fingerprint;
                if same_owner && same_body {
                    Ok(Planned::Replay)
                } else {
                    Err(Rejection::AlreadyCreated)
                }
            }
            _ => Ok(Planned::Insert(collection)),
        }
    }

    /// Stores the new token `new` of `collection`, created at `now`; returns
    /// it as readers see it.
    fn insert(&mut self, new: &NewToken, collection: &Arc<Collection>, now: Millis) -> Arc<Token> {
        if self.table.get(new.id).is_some() {
            // A purged tombstone under the same id: drop it for good.
            self.remove(new.id);
        }
        let expires_at_ms = new
            .expiry
            .expires_at_ms(now, collection.record.token_expires_after_secs);
        let data = new.data.as_ref().and_then(|text| {
            let raw = RawValue::from_string(text.clone()).ok();
            debug_assert!(raw.is_some(), "data is validated JSON");
            raw
        });
        let (meta, overflows) = self.table.pack_metadata(&new.metadata);
        let extra = TokenExtra {
            description: new.description.as_deref().map(Box::from),
            data,
            encryption: new.encryption.clone().map(Box::new),
            children: new.children.clone(),
            create_fingerprint: new.fingerprint,
            redemption: None,
            deleted_at_ms: None,
            metadata_overflow: overflows.then(|| new.metadata.clone()),
            active_from_ms: new.active_from_ms.filter(|at| *at != now),
            lifecycle: None,
        };
        let tables = self.table.tables_mut();
        let collection_at = tables.collections.intern(collection);
        let created_by = tables.names.intern_name(&new.created_by);
        let slot = Slot {
            id: new.id,
            // The clock is past 1970 and lifetimes are bounded: inside.
            created_at: SlotMillis::clamped(now),
            expires_at: SlotMillis::clamped(expires_at_ms),
            extra: (!extra.is_empty()).then(|| Arc::new(extra)),
            collection: collection_at,
            created_by,
            status: Status::Active,
            kind: new.kind,
            meta,
        };
        let view = self.table.view(&slot);
        self.counts.add(slot.status);
        let at = self.table.insert(slot);
        if expires_at_ms != NEVER {
            self.expiries.push(expires_at_ms, at);
        }
        self.index(new.account_id, at);
        view
    }

    /// Spends a token at `now`, exactly once; a repeat of the winning
    /// request is a replay.
    pub(super) fn redeem(&mut self, command: &Redeem, now: Millis) -> Result<Redeemed, Rejection> {
        let at = match self.plan_redeem(command, now)? {
            RedeemPlan::Replay(at) => {
                let token = self.table.slot(at).ok_or(Rejection::TokenNotFound)?;
                return Ok(Redeemed {
                    token: self.table.view(token),
                    replayed: true,
                });
            }
            RedeemPlan::Spend(at) => at,
        };
        self.settle_hold(at, now);
        let redeemed_by = self.intern(&command.redeemed_by);
        let retention_ms = self.retention_ms;
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        debug_assert_eq!(
            token.status,
            Status::Active,
            "only an active token is spent"
        );
        self.counts.moved(token.status, Status::Redeemed);
        token.status = Status::Redeemed;
        token.free_data();
        token.extra_mut().redemption = Some(Redemption {
            merchant_id: command.merchant_id.as_deref().map(Box::from),
            idempotency_key: command.idempotency_key.as_deref().map(Box::from),
            redeemed_at_ms: now,
            redeemed_by,
        });
        let redeemed = self.table.slot(at).map(|t| self.table.view(t));
        self.purges.push(now.saturating_add(retention_ms), at);
        Ok(Redeemed {
            token: redeemed.ok_or(Rejection::TokenNotFound)?,
            replayed: false,
        })
    }

    /// What redeeming at `now` would do, changing nothing: the one place a
    /// redeem is judged, for the redeem itself and for validation.
    fn plan_redeem(&self, command: &Redeem, now: Millis) -> Result<RedeemPlan, Rejection> {
        let merchant = command.merchant_id.as_deref();
        let idempotency_key = command.idempotency_key.as_deref();
        let (at, token) = self
            .visible(command.account_id, command.id, now)
            .ok_or(Rejection::TokenNotFound)?;
        match token.status_at(now) {
            Status::Deleted => return Err(Rejection::Deleted),
            Status::Expired => return Err(Rejection::Expired),
            Status::Held => {
                let expires_at_ms = token
                    .extra()
                    .live_hold(now)
                    .map_or(now, |h| h.expires_at_ms);
                return Err(Rejection::Held { expires_at_ms });
            }
            Status::Redeemed => {
                let redemption = token.extra().redemption.as_ref();
                let redeemed_at_ms = redemption.map_or(0, |r| r.redeemed_at_ms);
                let repeats_winner = redemption.is_some_and(|r| {
                    idempotency_key.is_some()
                        && r.idempotency_key.as_deref() == idempotency_key
                        && r.merchant_id.as_deref() == merchant
                });
                if repeats_winner {
                    return Ok(RedeemPlan::Replay(at));
                }
                return Err(Rejection::AlreadyRedeemed { redeemed_at_ms });
            }
            Status::Active => {}
        }
        self.check_spendable(token, merchant, now)?;
        Ok(RedeemPlan::Spend(at))
    }

    /// The checks of an unspent token that a redeem and a hold share: its
    /// validity has started and the collection allows the merchant.
    fn check_spendable(
        &self,
        token: &Slot,
        merchant: Option<&str>,
        now: Millis,
    ) -> Result<(), Rejection> {
        if now < token.active_from_ms() {
            return Err(Rejection::NotYetActive {
                active_from_ms: token.active_from_ms(),
            });
        }
        let allowed = self
            .table
            .tables()
            .collections
            .get(token.collection)
            .is_some_and(|c| c.allows_merchant(merchant));
        if !allowed {
            return Err(Rejection::MerchantNotAllowed);
        }
        Ok(())
    }

    /// Ends the hold of the token in `at` if it lapsed by `now` (stored
    /// `held`, hold past its `expiresAt`): the token is active again, or
    /// expired when its own expiry passed too (a hold never outlives it).
    /// Whether anything changed. Decisions do not depend on it having run
    /// (every reader judges a hold against `now`); it runs before a change
    /// to the token and from the timers.
    fn settle_hold(&mut self, at: SlotId, now: Millis) -> bool {
        let lapsed = self
            .table
            .slot(at)
            .is_some_and(|t| t.status == Status::Held && t.extra().live_hold(now).is_none());
        if !lapsed {
            return false;
        }
        let retention_ms = self.retention_ms;
        let Some(token) = self.table.slot_mut(at) else {
            return false;
        };
        token
            .extra_mut()
            .lifecycle_mut()
            .end_hold(HoldEnd::Expired, now);
        let to = if now >= token.expires_at_ms() {
            Status::Expired
        } else {
            Status::Active
        };
        self.counts.moved(Status::Held, to);
        token.status = to;
        if to == Status::Expired {
            token.free_data();
            let expires_at_ms = token.expires_at_ms();
            self.purges
                .push(expires_at_ms.saturating_add(retention_ms), at);
        }
        true
    }

    /// Deletes a token at `now`, erasing its data; again is fine.
    pub(super) fn delete(&mut self, command: &Delete, now: Millis) -> Result<Deleted, Rejection> {
        let (at, token) = self
            .visible(command.account_id, command.id, now)
            .ok_or(Rejection::TokenNotFound)?;
        if token.status == Status::Deleted {
            return Ok(Deleted { changed: false });
        }
        let retention_ms = self.retention_ms;
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        self.counts.moved(token.status, Status::Deleted);
        if token.status == Status::Held {
            token
                .extra_mut()
                .lifecycle_mut()
                .end_hold(HoldEnd::Released, now);
        }
        token.status = Status::Deleted;
        token.erase();
        token.extra_mut().deleted_at_ms = Some(now);
        self.purges.push(now.saturating_add(retention_ms), at);
        Ok(Deleted { changed: true })
    }

    /// Copies of the tokens `ids` as `account` sees them at `now`.
    pub fn fetch(
        &self,
        account: AccountId,
        ids: &[TokenId],
        now: Millis,
    ) -> Vec<Option<Arc<Token>>> {
        ids.iter()
            .map(|id| {
                self.visible(account, *id, now)
                    .map(|(_, t)| self.table.view(t))
            })
            .collect()
    }

    /// One page of the account's tokens matching `query`, judged at `now`.
    pub fn list(&self, query: &ListQuery, now: Millis) -> ListPage {
        let wanted = query.limit.saturating_add(1);
        let collections = self.table.tables().collections.shared();
        let matches = |t: &Slot| {
            (query.collection_ids.is_empty()
                || collections
                    .get(t.collection as usize)
                    .is_some_and(|c| query.collection_ids.contains(&c.record.id)))
                && (query.statuses.is_empty() || query.statuses.contains(&t.status_at(now)))
                && (query.types.is_empty() || query.types.contains(&t.kind))
        };
        let after = |t: &Slot| {
            query
                .after
                .is_none_or(|pos| (t.created_at_ms(), t.id) > pos)
        };
        let mut found: Vec<&Slot> = Vec::new();
        if !query.ids.is_empty() {
            found.extend(
                query
                    .ids
                    .iter()
                    .filter_map(|id| self.visible(query.account_id, *id, now))
                    .map(|(_, t)| t)
                    .filter(|t| after(t) && matches(t)),
            );
        } else if let Some(index) = self.by_account.get(&query.account_id) {
            let created = |at: &SlotId| {
                self.table
                    .slot(*at)
                    .map_or(Millis::MIN, |t| t.created_at_ms())
            };
            let start = query
                .after
                .map_or(0, |(at, _)| index.partition_point(|s| created(s) < at));
            // Entries with equal creation times are not in id order, so once
            // enough are found the scan still finishes the current time group.
            let mut boundary: Option<Millis> = None;
            for at in &index[start..] {
                let Some(token) = self.table.slot(*at) else {
                    continue;
                };
                if boundary.is_some_and(|b| token.created_at_ms() > b) {
                    break;
                }
                if token.is_purged(now, self.retention_ms) || !after(token) || !matches(token) {
                    continue;
                }
                found.push(token);
                if found.len() >= wanted && boundary.is_none() {
                    boundary = Some(token.created_at_ms());
                }
            }
        }
        found.sort_by_key(|t| (t.created_at_ms(), t.id));
        found.truncate(wanted);
        ListPage {
            tokens: found.into_iter().map(|t| self.table.view(t)).collect(),
        }
    }

    /// Expires due tokens (freeing their data) and drops tombstones past
    /// retention. Decisions never depend on this having run.
    pub fn run_timers(&mut self, now: Millis) -> TimerReport {
        let mut report = TimerReport::default();
        while let Some((deadline, at)) = self.holds.pop_due(now) {
            // A stale entry: the hold was captured or released, or another
            // took its place, or the slot now holds another token.
            let due = self.table.slot(at).is_some_and(|t| {
                t.extra()
                    .lifecycle()
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.expires_at_ms == deadline)
            });
            if due && self.settle_hold(at, now) {
                report.holds_lapsed += 1;
                if self
                    .table
                    .slot(at)
                    .is_some_and(|t| t.status == Status::Expired)
                {
                    report.expired += 1;
                }
            }
        }
        while let Some((deadline, at)) = self.expiries.pop_due(now) {
            let Some(token) = self.table.slot(at) else {
                continue;
            };
            // A stale entry: the token was spent or deleted before expiring
            // (or the slot now holds another token).
            if token.expires_at_ms() != deadline {
                continue;
            }
            if token.status == Status::Held {
                // Its hold lapsed no later than the token (the hold's own
                // entry may still be queued behind this one).
                if self.settle_hold(at, now) {
                    report.holds_lapsed += 1;
                    report.expired += 1;
                }
                continue;
            }
            if token.status != Status::Active {
                continue;
            }
            if let Some(token) = self.table.slot_mut(at) {
                self.counts.moved(token.status, Status::Expired);
                token.status = Status::Expired;
                token.free_data();
            }
            self.purges
                .push(deadline.saturating_add(self.retention_ms), at);
            report.expired += 1;
        }
        let mut touched: HashSet<AccountId> = HashSet::new();
        while let Some((_, at)) = self.purges.pop_due(now) {
            let purged = self
                .table
                .slot(at)
                .filter(|t| t.is_purged(now, self.retention_ms))
                .map(|t| (t.id, self.account_of(t)));
            if let Some((id, account)) = purged {
                if let Some(token) = self.table.remove(id) {
                    self.counts.remove(token.status);
                    touched.extend(account);
                    report.purged += 1;
                }
            }
        }
        for account in touched {
            self.reindex(account);
        }
        report
    }

    /// Removes one token and its index entry (an id about to be reused).
    fn remove(&mut self, id: TokenId) {
        if let Some(token) = self.table.remove(id) {
            self.counts.remove(token.status);
            if let Some(account) = self.account_of(&token) {
                self.reindex(account);
            }
        }
    }

    /// Drops index entries of slots no longer holding one of the account's
    /// tokens (freed slots are reused only after this ran).
    fn reindex(&mut self, account: AccountId) {
        let table = &self.table;
        let collections = table.tables().collections.shared();
        if let Some(index) = self.by_account.get_mut(&account) {
            index.retain(|at| {
                table.slot(*at).is_some_and(|s| {
                    collections
                        .get(s.collection as usize)
                        .is_some_and(|c| c.record.account_id == account)
                })
            });
            if index.is_empty() {
                self.by_account.remove(&account);
            }
        }
    }

    /// Adds a new token's slot to its account's creation-ordered index.
    fn index(&mut self, account: AccountId, at: SlotId) {
        let table = &self.table;
        let index = self.by_account.entry(account).or_default();
        let created = |s: &SlotId| table.slot(*s).map_or(Millis::MIN, |t| t.created_at_ms());
        let created_at = created(&at);
        // Live commands arrive in time order, so this is a push; replay after a
        // change of shard count may interleave shards and needs the insert.
        if index.last().is_none_or(|last| created(last) <= created_at) {
            index.push(at);
        } else {
            let pos = index.partition_point(|s| created(s) <= created_at);
            index.insert(pos, at);
        }
    }

    /// A key name shared by every token that names it (creator or redeemer).
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        let names = &mut self.table.tables_mut().names;
        let at = names.intern_name(name);
        match names.get(at) {
            Some(shared) => Arc::clone(shared),
            None => Arc::from(name),
        }
    }

    /// Every token as readers see it (snapshot tools, tests).
    pub fn tokens(&self) -> impl Iterator<Item = Arc<Token>> + '_ {
        self.table.iter().map(|(_, slot)| self.table.view(slot))
    }

    /// The tokens as of now, for a snapshot: cheap (chunks are shared and
    /// copied on write), so it runs inside one message turn of the shard.
    pub fn capture(&self) -> TableCapture {
        self.table.capture()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::table::plain_slot;

    /// `index` holds exactly `slots`, in list order.
    fn assert_listed(index: &[SlotId], slots: &[SlotId], table: &TokenTable) {
        let key = |at: &SlotId| {
            table
                .slot(*at)
                .map(|s| (s.created_at_ms(), s.id))
                .expect("a slot")
        };
        assert!(index.windows(2).all(|w| key(&w[0]) <= key(&w[1])));
        let mut sorted = index.to_vec();
        sorted.sort_unstable();
        let mut expected = slots.to_vec();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "the same slots");
    }

    #[test]
    fn restore_sorts_list_indexes_by_creation_then_id_whatever_their_slot_order() {
        let mut table = TokenTable::default();
        let mut slots = Vec::new();
        // Batches of one millisecond each (ids random within each), the
        // last one older than the one before (a reused slot's order).
        for (created_at_ms, count) in [(5, 50), (7, 30), (8, 1), (6, 10)] {
            for _ in 0..count {
                let mut slot = plain_slot(TokenId::random());
                slot.created_at = SlotMillis::clamped(created_at_ms);
                slots.push(table.insert(slot));
            }
        }
        let mut in_order = slots[..81].to_vec();
        sort_by_creation(&mut in_order, &table);
        assert_listed(&in_order, &slots[..81], &table);
        let mut out_of_order = slots.clone();
        sort_by_creation(&mut out_of_order, &table);
        assert_listed(&out_of_order, &slots, &table);
        let mut empty = Vec::new();
        sort_by_creation(&mut empty, &table);
        assert!(empty.is_empty());
    }
}
