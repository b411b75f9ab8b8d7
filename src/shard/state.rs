//! A shard's tokens and the one function that changes them.
//!
//! [`ShardState::apply`] is pure with respect to its inputs — the state, the
//! command, the decision time and the (append-only) catalog — so the live
//! path and WAL replay run the very same code. Everything time-dependent is
//! judged against the `now` passed in, never a clock read here: expiry and
//! tombstone purges are also evaluated lazily against `now`, so whether the
//! timers have run yet never changes a decision.

use super::command::{Created, Expiry, NewToken, Outcome, Rejection, ShardCommand};
use super::deadlines::Deadlines;
use crate::catalog::Catalog;
use crate::clock::Millis;
use crate::ids::{AccountId, CollectionId, TokenId};
use crate::metrics::tokens::StatusCounts;
use crate::model::token::NEVER;
use crate::model::{Redemption, Status, Token, TokenExtra, TokenType};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Filters and position of one page of a token list, as one shard sees it.
#[derive(Debug, Clone)]
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
    /// Tokens moved to `expired`.
    pub expired: usize,
    /// Tombstones dropped after retention.
    pub purged: usize,
}

/// The tokens one shard owns, with their indexes and timers.
pub struct ShardState {
    /// Every token of this shard (tombstones included until purged). Shared
    /// and copied on write: a read or a snapshot capture takes a reference
    /// instead of a deep copy, and a change copies a token only while a
    /// reader still holds the old version.
    tokens: HashMap<TokenId, Arc<Token>>,
    /// Token ids per account ordered by creation time: lists seek into it by
    /// binary search instead of scanning the shard.
    by_account: HashMap<AccountId, Vec<TokenId>>,
    /// Expiry deadlines of active tokens.
    expiries: Deadlines,
    /// Purge deadlines of tombstones.
    purges: Deadlines,
    /// Interned creator names: thousands of tokens share one key name.
    creators: HashMap<Box<str>, Arc<str>>,
    /// How long tombstones stay readable.
    retention_ms: i64,
    /// Tokens held per status, kept exact by every change below (metrics).
    counts: StatusCounts,
}

impl ShardState {
    /// An empty shard keeping tombstones for `retention_ms`.
    pub fn new(retention_ms: i64) -> Self {
        assert!(retention_ms >= 0, "retention is a duration");
        Self {
            tokens: HashMap::new(),
            by_account: HashMap::new(),
            expiries: Deadlines::default(),
            purges: Deadlines::default(),
            creators: HashMap::new(),
            retention_ms,
            counts: StatusCounts::default(),
        }
    }

    /// Number of tokens held (tombstones included).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens held per status (tombstones included until purged).
    pub fn counts(&self) -> &StatusCounts {
        &self.counts
    }

    /// Whether the shard holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Applies `command` decided at `now`: either every effect happens and the
    /// outcome says what, or nothing changes and the rejection says why.
    pub fn apply(
        &mut self,
        command: &ShardCommand,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Outcome, Rejection> {
        match command {
            ShardCommand::Create { tokens } => self.create(tokens, now, catalog),
            ShardCommand::Redeem {
                account_id,
                id,
                merchant_id,
                idempotency_key,
                redeemed_by,
            } => self.redeem(
                *account_id,
                *id,
                merchant_id.as_deref(),
                idempotency_key.as_deref(),
                redeemed_by,
                now,
            ),
            ShardCommand::Delete { account_id, id } => self.delete(*account_id, *id, now),
        }
    }

    /// The token `id` as `account` may see it at `now`: `None` when unknown,
    /// another account's, or purged.
    fn visible(&self, account: AccountId, id: TokenId, now: Millis) -> Option<&Arc<Token>> {
        self.tokens.get(&id).filter(|t| {
            t.collection.record.account_id == account && !t.is_purged(now, self.retention_ms)
        })
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
            if let Some(existing) = self.visible(account, *id, now) {
                if existing.extra().create_fingerprint != Some(*fingerprint) {
                    return Err(Rejection::AlreadyCreated);
                }
            } else if self.tokens.contains_key(id) && !self.is_reusable(*id, now) {
                return Err(Rejection::AlreadyCreated);
            }
        }
        Ok(())
    }

    /// Whether an existing id may be created afresh: only a purged tombstone.
    fn is_reusable(&self, id: TokenId, now: Millis) -> bool {
        self.tokens
            .get(&id)
            .is_none_or(|t| t.is_purged(now, self.retention_ms))
    }

    fn create(
        &mut self,
        new_tokens: &[NewToken],
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Outcome, Rejection> {
        // Decide everything first: the command creates all its tokens or none.
        let mut plan = Vec::with_capacity(new_tokens.len());
        for new in new_tokens {
            let collection = catalog
                .collection(new.collection_id)
                .filter(|c| c.record.account_id == new.account_id)
                .ok_or(Rejection::CollectionNotFound)?;
            match self.tokens.get(&new.id) {
                Some(existing) if !existing.is_purged(now, self.retention_ms) => {
                    let same_owner = existing.collection.record.account_id == new.account_id;
                    let same_body = new.fingerprint.is_some()
                        && existing.extra().create_fingerprint == new.fingerprint;
                    if !(same_owner && same_body) {
                        return Err(Rejection::AlreadyCreated);
                    }
                    plan.push((new, None));
                }
                _ => plan.push((new, Some(collection))),
            }
        }
        let mut results = Vec::with_capacity(plan.len());
        for (new, collection) in plan {
            let Some(collection) = collection else {
                let existing = self.tokens.get(&new.id).cloned();
                // Present a moment ago, and nothing in between removes tokens.
                let existing = existing.ok_or(Rejection::TokenNotFound)?;
                results.push(Created::Replayed(existing));
                continue;
            };
            if self.tokens.contains_key(&new.id) {
                // A purged tombstone under the same id: drop it for good.
                self.remove(new.id);
            }
            let expires_at_ms = match new.expiry {
                Expiry::At(at) => at,
                Expiry::InSecs(secs) => now.saturating_add(secs.saturating_mul(1000)),
                Expiry::CollectionDefault => collection
                    .record
                    .token_expires_after_secs
                    .map_or(NEVER, |secs| now.saturating_add(secs.saturating_mul(1000))),
            };
            let data = new.data.as_ref().and_then(|text| {
                let raw = RawValue::from_string(text.clone()).ok();
                debug_assert!(raw.is_some(), "data is validated JSON");
                raw
            });
            let extra = TokenExtra {
                description: new.description.as_deref().map(Box::from),
                data,
                encryption: new.encryption.clone().map(Box::new),
                children: new.children.clone(),
                create_fingerprint: new.fingerprint,
                redemption: None,
                deleted_at_ms: None,
            };
            let token = Token {
                id: new.id,
                collection,
                created_by: self.intern(&new.created_by),
                created_at_ms: now,
                active_from_ms: new.active_from_ms.unwrap_or(now),
                expires_at_ms,
                metadata: new.metadata.clone(),
                extra: (!extra.is_empty()).then(|| Box::new(extra)),
                status: Status::Active,
                kind: new.kind,
            };
            if expires_at_ms != NEVER {
                self.expiries.push(expires_at_ms, token.id);
            }
            self.index(new.account_id, &token);
            let token = Arc::new(token);
            results.push(Created::New(Arc::clone(&token)));
            self.counts.add(token.status);
            self.tokens.insert(token.id, token);
        }
        Ok(Outcome::Created(results))
    }

    fn redeem(
        &mut self,
        account: AccountId,
        id: TokenId,
        merchant: Option<&str>,
        idempotency_key: Option<&str>,
        redeemed_by: &str,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let token = self
            .visible(account, id, now)
            .ok_or(Rejection::TokenNotFound)?;
        match token.status_at(now) {
            Status::Deleted => return Err(Rejection::Deleted),
            Status::Expired => return Err(Rejection::Expired),
            Status::Redeemed => {
                let redemption = token.extra().redemption.as_ref();
                let redeemed_at_ms = redemption.map_or(0, |r| r.redeemed_at_ms);
                let repeats_winner = redemption.is_some_and(|r| {
                    idempotency_key.is_some()
                        && r.idempotency_key.as_deref() == idempotency_key
                        && r.merchant_id.as_deref() == merchant
                });
                if repeats_winner {
                    return Ok(Outcome::Redeemed {
                        token: Arc::clone(token),
                        replayed: true,
                    });
                }
                return Err(Rejection::AlreadyRedeemed { redeemed_at_ms });
            }
            Status::Active => {}
        }
        if now < token.active_from_ms {
            return Err(Rejection::NotYetActive {
                active_from_ms: token.active_from_ms,
            });
        }
        if !token.collection.allows_merchant(merchant) {
            return Err(Rejection::MerchantNotAllowed);
        }
        let redeemed_by = self.intern(redeemed_by);
        let retention_ms = self.retention_ms;
        let Some(token) = self.tokens.get_mut(&id) else {
            return Err(Rejection::TokenNotFound);
        };
        let token = Arc::make_mut(token);
        self.counts.moved(token.status, Status::Redeemed);
        token.status = Status::Redeemed;
        token.free_data();
        token.extra_mut().redemption = Some(Redemption {
            merchant_id: merchant.map(Box::from),
            idempotency_key: idempotency_key.map(Box::from),
            redeemed_at_ms: now,
            redeemed_by,
        });
        let redeemed = self.tokens.get(&id).map(Arc::clone);
        self.purges.push(now.saturating_add(retention_ms), id);
        Ok(Outcome::Redeemed {
            token: redeemed.ok_or(Rejection::TokenNotFound)?,
            replayed: false,
        })
    }

    fn delete(
        &mut self,
        account: AccountId,
        id: TokenId,
        now: Millis,
    ) -> Result<Outcome, Rejection> {
        let token = self
            .visible(account, id, now)
            .ok_or(Rejection::TokenNotFound)?;
        if token.status == Status::Deleted {
            return Ok(Outcome::Deleted { changed: false });
        }
        let retention_ms = self.retention_ms;
        let Some(token) = self.tokens.get_mut(&id) else {
            return Err(Rejection::TokenNotFound);
        };
        let token = Arc::make_mut(token);
        self.counts.moved(token.status, Status::Deleted);
        token.status = Status::Deleted;
        token.erase();
        token.extra_mut().deleted_at_ms = Some(now);
        self.purges.push(now.saturating_add(retention_ms), id);
        Ok(Outcome::Deleted { changed: true })
    }

    /// Copies of the tokens `ids` as `account` sees them at `now`.
    pub fn fetch(
        &self,
        account: AccountId,
        ids: &[TokenId],
        now: Millis,
    ) -> Vec<Option<Arc<Token>>> {
        ids.iter()
            .map(|id| self.visible(account, *id, now).map(Arc::clone))
            .collect()
    }

    /// One page of the account's tokens matching `query`, judged at `now`.
    pub fn list(&self, query: &ListQuery, now: Millis) -> ListPage {
        let wanted = query.limit.saturating_add(1);
        let matches = |t: &Token| {
            (query.collection_ids.is_empty()
                || query.collection_ids.contains(&t.collection.record.id))
                && (query.statuses.is_empty() || query.statuses.contains(&t.status_at(now)))
                && (query.types.is_empty() || query.types.contains(&t.kind))
        };
        let after = |t: &Token| query.after.is_none_or(|pos| (t.created_at_ms, t.id) > pos);
        let mut found: Vec<Arc<Token>> = Vec::new();
        if !query.ids.is_empty() {
            found.extend(
                query
                    .ids
                    .iter()
                    .filter_map(|id| self.visible(query.account_id, *id, now))
                    .filter(|t| after(t) && matches(t))
                    .map(Arc::clone),
            );
        } else if let Some(index) = self.by_account.get(&query.account_id) {
            let created =
                |id: &TokenId| self.tokens.get(id).map_or(Millis::MIN, |t| t.created_at_ms);
            let start = query
                .after
                .map_or(0, |(at, _)| index.partition_point(|id| created(id) < at));
            // Entries with equal creation times are not in id order, so once
            // enough are found the scan still finishes the current time group.
            let mut boundary: Option<Millis> = None;
            for id in &index[start..] {
                let Some(token) = self.tokens.get(id) else {
                    continue;
                };
                if boundary.is_some_and(|at| token.created_at_ms > at) {
                    break;
                }
                if token.is_purged(now, self.retention_ms) || !after(token) || !matches(token) {
                    continue;
                }
                found.push(Arc::clone(token));
                if found.len() >= wanted && boundary.is_none() {
                    boundary = Some(token.created_at_ms);
                }
            }
        }
        found.sort_by_key(|t| (t.created_at_ms, t.id));
        found.truncate(wanted);
        ListPage { tokens: found }
    }

    /// Expires due tokens (freeing their data) and drops tombstones past
    /// retention. Decisions never depend on this having run.
    pub fn run_timers(&mut self, now: Millis) -> TimerReport {
        let mut report = TimerReport::default();
        while let Some((deadline, id)) = self.expiries.pop_due(now) {
            let Some(token) = self.tokens.get_mut(&id) else {
                continue;
            };
            // A stale entry: the token was spent or deleted before expiring.
            if token.status != Status::Active || token.expires_at_ms != deadline {
                continue;
            }
            let token = Arc::make_mut(token);
            self.counts.moved(token.status, Status::Expired);
            token.status = Status::Expired;
            token.free_data();
            self.purges
                .push(deadline.saturating_add(self.retention_ms), id);
            report.expired += 1;
        }
        let mut touched: HashSet<AccountId> = HashSet::new();
        while let Some((_, id)) = self.purges.pop_due(now) {
            let purged = self
                .tokens
                .get(&id)
                .is_some_and(|t| t.is_purged(now, self.retention_ms));
            if purged {
                if let Some(token) = self.tokens.remove(&id) {
                    self.counts.remove(token.status);
                    touched.insert(token.collection.record.account_id);
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
        if let Some(token) = self.tokens.remove(&id) {
            self.counts.remove(token.status);
            self.reindex(token.collection.record.account_id);
        }
    }

    /// Drops index entries of tokens no longer held.
    fn reindex(&mut self, account: AccountId) {
        let tokens = &self.tokens;
        if let Some(index) = self.by_account.get_mut(&account) {
            index.retain(|id| tokens.contains_key(id));
            if index.is_empty() {
                self.by_account.remove(&account);
            }
        }
    }

    /// Adds a new token to its account's creation-ordered index.
    fn index(&mut self, account: AccountId, token: &Token) {
        let tokens = &self.tokens;
        let index = self.by_account.entry(account).or_default();
        let created = |id: &TokenId| tokens.get(id).map_or(Millis::MIN, |t| t.created_at_ms);
        // Live commands arrive in time order, so this is a push; replay after a
        // change of shard count may interleave shards and needs the insert.
        if index
            .last()
            .is_none_or(|last| created(last) <= token.created_at_ms)
        {
            index.push(token.id);
        } else {
            let at = index.partition_point(|id| created(id) <= token.created_at_ms);
            index.insert(at, token.id);
        }
    }

    /// Inserts a token read back from a snapshot, scheduling its timers.
    /// Call [`ShardState::finish_restore`] after the last one.
    pub fn restore(&mut self, token: Token) {
        match token.status {
            Status::Active if token.expires_at_ms != NEVER => {
                self.expiries.push(token.expires_at_ms, token.id)
            }
            Status::Active => {}
            Status::Expired | Status::Redeemed | Status::Deleted => {
                // `tombstone_since` of a final status never needs `now`.
                if let Some(since) = token.tombstone_since(Millis::MIN) {
                    self.purges
                        .push(since.saturating_add(self.retention_ms), token.id);
                }
            }
        }
        self.by_account
            .entry(token.collection.record.account_id)
            .or_default()
            .push(token.id);
        self.counts.add(token.status);
        self.tokens.insert(token.id, Arc::new(token));
    }

    /// Restores the creation order of the account indexes after
    /// [`ShardState::restore`] (snapshots list tokens in no particular order).
    pub fn finish_restore(&mut self) {
        let tokens = &self.tokens;
        for index in self.by_account.values_mut() {
            index.sort_by_cached_key(|id| {
                (tokens.get(id).map_or(Millis::MIN, |t| t.created_at_ms), *id)
            });
        }
    }

    /// A key name shared by every token that names it (creator or redeemer).
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(interned) = self.creators.get(name) {
            return Arc::clone(interned);
        }
        let interned: Arc<str> = Arc::from(name);
        self.creators.insert(Box::from(name), Arc::clone(&interned));
        interned
    }

    /// Every token (snapshots, tests).
    pub fn tokens(&self) -> impl Iterator<Item = &Arc<Token>> {
        self.tokens.values()
    }
}
