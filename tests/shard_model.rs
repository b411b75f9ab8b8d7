//! Property test: random sequences of create / redeem / delete / hold /
//! capture / release / void / validate / clock moves / timer runs against the
//! shard state machine and against a plain model of the redemption rules.
//! They must agree on every outcome and every status; no token is ever
//! redeemed successfully twice without a void between; and replaying the
//! logged commands rebuilds the same state.

use proptest::prelude::*;
use std::collections::HashMap;
use tokend::catalog::Catalog;
use tokend::clock::Millis;
use tokend::command::{
    Capture, CatalogCommand, Create, Delete, Expiry, Hold, NewToken, Redeem, Release, ShardCommand,
    Void,
};
use tokend::ids::{AccountId, CollectionId, HoldId, TokenId};
use tokend::model::collection::CollectionRecord;
use tokend::model::lifecycle::{ENDED_HOLDS_MAX, VOIDS_MAX};
use tokend::model::token::NEVER;
use tokend::model::{Account, HoldEnd, Liveness, Metadata, Status, TokenType};
use tokend::shard::{Changed, Created, Deleted, Redeemed, Rejection, ShardState};

const SLOTS: usize = 6;
const RETENTION_MS: i64 = 5_000;
/// Times move in whole steps so that clock moves land exactly on
/// `activeFrom`, `expiresAt` and purge deadlines often: the boundaries are
/// where off-by-one bugs live.
const STEP_MS: i64 = 250;
const START_MS: Millis = 1_700_000_000_000;
/// The open collection's `holdTtlSecsMax` and `voidWindowSecs` (seconds):
/// a few steps, so holds lapse and windows close within a sequence. The
/// restricted collection keeps the default hold limit and forbids voids.
const OPEN_HOLD_TTL_SECS_MAX: i64 = 2;
const OPEN_VOID_WINDOW_SECS: i64 = 2;

#[derive(Debug, Clone)]
enum Op {
    Create {
        slot: usize,
        restricted: bool,
        lifetime_ms: Option<i64>,
        starts_in_ms: Option<i64>,
    },
    Redeem {
        slot: usize,
        merchant: Option<u8>,
        key: Option<u8>,
        foreign: bool,
    },
    Delete {
        slot: usize,
        foreign: bool,
    },
    Hold {
        slot: usize,
        merchant: Option<u8>,
        key: Option<u8>,
        ttl_secs: Option<i64>,
        foreign: bool,
    },
    /// `which` picks a hold placed on the token, newest first; past the
    /// last, an id that was never placed.
    Capture {
        slot: usize,
        which: usize,
        foreign: bool,
    },
    Release {
        slot: usize,
        which: usize,
        foreign: bool,
    },
    Void {
        slot: usize,
        key: Option<u8>,
        foreign: bool,
    },
    Validate {
        slot: usize,
        merchant: Option<u8>,
        key: Option<u8>,
        foreign: bool,
    },
    Advance(i64),
    RunTimers,
}

/// Mostly the newest hold, sometimes an older one or one never placed.
fn which() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SLOTS, any::<bool>(), proptest::option::of((1i64..24).prop_map(|n| n * STEP_MS)), proptest::option::weighted(0.3, (1i64..8).prop_map(|n| n * STEP_MS)))
            .prop_map(|(slot, restricted, lifetime_ms, starts_in_ms)| Op::Create { slot, restricted, lifetime_ms, starts_in_ms }),
        5 => (0..SLOTS, proptest::option::of(0u8..3), proptest::option::of(0u8..2), proptest::bool::weighted(0.1))
            .prop_map(|(slot, merchant, key, foreign)| Op::Redeem { slot, merchant, key, foreign }),
        1 => (0..SLOTS, proptest::bool::weighted(0.1)).prop_map(|(slot, foreign)| Op::Delete { slot, foreign }),
        4 => (0..SLOTS, proptest::option::of(0u8..3), proptest::option::of(0u8..2), proptest::option::of(1i64..4), proptest::bool::weighted(0.1))
            .prop_map(|(slot, merchant, key, ttl_secs, foreign)| Op::Hold { slot, merchant, key, ttl_secs, foreign }),
        3 => (0..SLOTS, which(), proptest::bool::weighted(0.1)).prop_map(|(slot, which, foreign)| Op::Capture { slot, which, foreign }),
        2 => (0..SLOTS, which(), proptest::bool::weighted(0.1)).prop_map(|(slot, which, foreign)| Op::Release { slot, which, foreign }),
        2 => (0..SLOTS, proptest::option::of(0u8..2), proptest::bool::weighted(0.1)).prop_map(|(slot, key, foreign)| Op::Void { slot, key, foreign }),
        2 => (0..SLOTS, proptest::option::of(0u8..3), proptest::option::of(0u8..2), proptest::bool::weighted(0.1))
            .prop_map(|(slot, merchant, key, foreign)| Op::Validate { slot, merchant, key, foreign }),
        2 => (1i64..12).prop_map(|n| Op::Advance(n * STEP_MS)),
        1 => Just(Op::RunTimers),
    ]
}

/// A hold as the model keeps it.
#[derive(Debug, Clone)]
struct ModelHold {
    id: HoldId,
    merchant: Option<u8>,
    key: Option<u8>,
    expires_at: Millis,
}

/// The redemption rules, written as plainly as possible.
#[derive(Debug, Clone)]
struct ModelToken {
    restricted: bool,
    active_from: Millis,
    expires_at: Millis,
    /// (merchant, key, at) of the current redemption.
    redeemed: Option<(Option<u8>, Option<u8>, Millis)>,
    deleted_at: Option<Millis>,
    /// The current hold (possibly lapsed: judged against `now`).
    hold: Option<ModelHold>,
    /// The hold the current redemption captured.
    captured: Option<HoldId>,
    /// Ended holds, oldest first, bounded like the engine's.
    ended: Vec<(HoldId, HoldEnd)>,
    /// Every hold ever placed, oldest first (for `which`).
    placed: Vec<HoldId>,
    /// Idempotency keys of the voids made.
    voids: Vec<Option<u8>>,
    /// Successful (non-replayed) redeems and captures.
    spends: usize,
}

impl ModelToken {
    fn live_hold(&self, now: Millis) -> Option<&ModelHold> {
        self.hold.as_ref().filter(|h| now < h.expires_at)
    }

    fn status(&self, now: Millis) -> Status {
        if self.deleted_at.is_some() {
            Status::Deleted
        } else if self.redeemed.is_some() {
            Status::Redeemed
        } else if self.live_hold(now).is_some() {
            Status::Held
        } else if now >= self.expires_at {
            Status::Expired
        } else {
            Status::Active
        }
    }

    fn purged(&self, now: Millis) -> bool {
        let since = match self.status(now) {
            Status::Active | Status::Held => return false,
            Status::Expired => self.expires_at,
            Status::Redeemed => self.redeemed.map(|r| r.2).unwrap_or_default(),
            Status::Deleted => self.deleted_at.unwrap_or_default(),
        };
        now >= since + RETENTION_MS
    }

    fn hold_ttl_max(&self) -> i64 {
        if self.restricted {
            900
        } else {
            OPEN_HOLD_TTL_SECS_MAX
        }
    }

    fn void_window_ms(&self) -> i64 {
        if self.restricted {
            0
        } else {
            OPEN_VOID_WINDOW_SECS * 1000
        }
    }

    fn push_ended(&mut self, id: HoldId, end: HoldEnd) {
        if self.ended.len() == ENDED_HOLDS_MAX {
            self.ended.remove(0);
        }
        self.ended.push((id, end));
    }

    /// Ends the current hold: as `end` when live, else as the expiry it was.
    fn end_hold(&mut self, end: HoldEnd, now: Millis) -> Option<ModelHold> {
        let hold = self.hold.take()?;
        let end = if now < hold.expires_at {
            end
        } else {
            HoldEnd::Expired
        };
        self.push_ended(hold.id, end);
        Some(hold)
    }

    /// How hold `id` stands: `None` unknown, `Some(None)` live, else ended.
    fn hold_state(&self, id: HoldId, now: Millis) -> Option<Option<HoldEnd>> {
        if let Some(hold) = self.hold.as_ref().filter(|h| h.id == id) {
            return Some((now >= hold.expires_at).then_some(HoldEnd::Expired));
        }
        self.ended
            .iter()
            .rev()
            .find(|(e, _)| *e == id)
            .map(|(_, end)| Some(*end))
    }

    fn allows(&self, merchant: Option<u8>) -> bool {
        !self.restricted || matches!(merchant, Some(0 | 1))
    }

    /// What a redeem answers (`Ok(replayed)`), changing the model on success.
    fn redeem(
        &mut self,
        merchant: Option<u8>,
        key: Option<u8>,
        now: Millis,
    ) -> Result<bool, Rejection> {
        let expected = self.judge_redeem(merchant, key, now)?;
        if !expected {
            self.end_hold(HoldEnd::Expired, now);
            self.redeemed = Some((merchant, key, now));
            self.spends += 1;
        }
        Ok(expected)
    }

    /// What a redeem would answer, changing nothing: `Ok(replayed)`.
    fn judge_redeem(
        &self,
        merchant: Option<u8>,
        key: Option<u8>,
        now: Millis,
    ) -> Result<bool, Rejection> {
        match self.status(now) {
            Status::Deleted => Err(Rejection::Deleted),
            Status::Expired => Err(Rejection::Expired),
            Status::Held => Err(Rejection::Held {
                expires_at_ms: self.live_hold(now).map_or(0, |h| h.expires_at),
            }),
            Status::Redeemed => {
                let (m, k, at) = self.redeemed.expect("redeemed");
                if key.is_some() && k == key && m == merchant {
                    Ok(true)
                } else {
                    Err(Rejection::AlreadyRedeemed { redeemed_at_ms: at })
                }
            }
            Status::Active if now < self.active_from => Err(Rejection::NotYetActive {
                active_from_ms: self.active_from,
            }),
            Status::Active if !self.allows(merchant) => Err(Rejection::MerchantNotAllowed),
            Status::Active => Ok(false),
        }
    }
}

fn merchant_name(m: u8) -> String {
    format!("m-{m}")
}

struct World {
    catalog: Catalog,
    account: AccountId,
    other: AccountId,
    open: CollectionId,
    restricted: CollectionId,
}

fn world() -> World {
    let catalog = Catalog::new();
    let account = AccountId::random();
    let other = AccountId::random();
    for id in [account, other] {
        catalog
            .execute(
                CatalogCommand::CreateAccount(Account {
                    id,
                    name: "a".into(),
                    liveness: Liveness::Test,
                    created_at_ms: 0,
                }),
                |_| (),
            )
            .unwrap();
    }
    let collection = |merchants: Vec<String>, hold_ttl: Option<i64>, void_window: Option<i64>| {
        let id = CollectionId::random();
        catalog
            .execute(
                CatalogCommand::CreateCollection(Box::new(CollectionRecord {
                    id,
                    account_id: account,
                    name: "c".into(),
                    description: None,
                    issuer: None,
                    issuer_img: None,
                    img: None,
                    issuer_website: None,
                    value: vec![],
                    merchants,
                    token_expires_after_secs: None,
                    data_schema: None,
                    liveness: Liveness::Test,
                    created_at_ms: 0,
                    hold_ttl_secs_max: hold_ttl,
                    void_window_secs: void_window,
                })),
                |_| (),
            )
            .unwrap();
        id
    };
    let open = collection(
        vec![],
        Some(OPEN_HOLD_TTL_SECS_MAX),
        Some(OPEN_VOID_WINDOW_SECS),
    );
    // Merchants 0 and 1 may redeem; 2 may not. No voids.
    let restricted = collection(vec![merchant_name(0), merchant_name(1)], None, Some(0));
    World {
        catalog,
        account,
        other,
        open,
        restricted,
    }
}

/// Compares a lifecycle command's outcome with the model's expectation
/// (`Ok(replayed)`), logging the command when it changed the state.
fn check_changed<C: Clone + Into<ShardCommand>>(
    what: &str,
    command: &C,
    got: &Result<Changed, Rejection>,
    expected: &Result<bool, Rejection>,
    log: &mut Vec<(ShardCommand, Millis)>,
    now: Millis,
) -> Result<(), TestCaseError> {
    match (got, expected) {
        (Ok(Changed { replayed, .. }), Ok(expect_replayed)) => {
            prop_assert_eq!(replayed, expect_replayed, "{}", what);
            if !replayed {
                log.push((command.clone().into(), now));
            }
        }
        (Err(g), Err(e)) => prop_assert_eq!(g, e, "{}", what),
        _ => prop_assert!(false, "{}: got {:?}, model says {:?}", what, got, expected),
    }
    Ok(())
}

/// What readers can see of one token at `now`, to compare two states.
fn view(state: &ShardState, account: AccountId, id: TokenId, now: Millis) -> Option<String> {
    let token = state.fetch(account, &[id], now).pop().flatten()?;
    let extra = token.extra();
    let lifecycle = extra.lifecycle.as_deref();
    Some(format!(
        "{:?} hold={:?} redemption={:?} captured={:?} voided={:?} ended={:?} data={}",
        token.status_at(now),
        extra.live_hold(now).map(|h| (h.id, h.expires_at_ms)),
        extra.redemption,
        lifecycle.and_then(|l| l.captured),
        lifecycle.map(|l| l.voided.clone()),
        lifecycle.map(|l| {
            // Lapsed holds end by the timer or at the next change; either way
            // they read as expired: compare what readers see.
            let mut ended: Vec<(HoldId, HoldEnd)> =
                l.ended_holds.iter().map(|e| (e.id, e.end)).collect();
            if let Some(h) = l.hold.as_ref().filter(|h| !h.is_live(now)) {
                ended.push((h.id, HoldEnd::Expired));
            }
            ended
        }),
        // Readers see data only while the token is unspent.
        extra.data.is_some() && matches!(token.status_at(now), Status::Active | Status::Held),
    ))
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let w = world();
    let mut state = ShardState::new(RETENTION_MS);
    let mut model: HashMap<usize, ModelToken> = HashMap::new();
    let mut ids: HashMap<usize, TokenId> = HashMap::new();
    let mut log: Vec<(ShardCommand, Millis)> = Vec::new();
    let mut now = START_MS;
    for op in ops {
        match op {
            Op::Create {
                slot,
                restricted,
                lifetime_ms,
                starts_in_ms,
            } => {
                // A slot is reused only once its token is gone.
                if model.get(&slot).is_some_and(|t| !t.purged(now)) {
                    continue;
                }
                let id = TokenId::random();
                let active_from = starts_in_ms.map(|s| now + s);
                let expires_at = lifetime_ms.map(|l| active_from.unwrap_or(now) + l);
                let command = Create {
                    tokens: vec![NewToken {
                        id,
                        account_id: w.account,
                        collection_id: if restricted { w.restricted } else { w.open },
                        created_by: "k".into(),
                        kind: TokenType::Token,
                        description: None,
                        data: Some(r#"{"secret":1}"#.into()),
                        encryption: None,
                        metadata: Metadata::from_pairs([("a", "b")]),
                        active_from_ms: active_from,
                        expiry: expires_at.map_or(Expiry::CollectionDefault, Expiry::At),
                        children: vec![],
                        fingerprint: None,
                        sealed_data: None,
                        sealed_encryption: None,
                    }],
                };
                let outcome = state.execute(&command, now, &w.catalog);
                let created_new = matches!(&outcome, Ok(c) if matches!(c[..], [Created::New(_)]));
                prop_assert!(created_new, "create failed: {:?}", outcome);
                log.push((command.into(), now));
                ids.insert(slot, id);
                model.insert(
                    slot,
                    ModelToken {
                        restricted,
                        active_from: active_from.unwrap_or(now),
                        expires_at: expires_at.unwrap_or(NEVER),
                        redeemed: None,
                        deleted_at: None,
                        hold: None,
                        captured: None,
                        ended: Vec::new(),
                        placed: Vec::new(),
                        voids: Vec::new(),
                        spends: 0,
                    },
                );
            }
            Op::Redeem {
                slot,
                merchant,
                key,
                foreign,
            } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let command = Redeem {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    merchant_id: merchant.map(merchant_name),
                    idempotency_key: key.map(|k| format!("key-{k}")),
                    redeemed_by: "k".into(),
                };
                let got = state.execute(&command, now, &w.catalog);
                let token = model.get_mut(&slot).expect("slot has a model");
                let expected: Result<bool, Rejection> = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else {
                    token.redeem(merchant, key, now)
                };
                match (&got, &expected) {
                    (Ok(Redeemed { replayed, token: t }), Ok(expect_replayed)) => {
                        prop_assert_eq!(replayed, expect_replayed);
                        prop_assert_eq!(t.status, Status::Redeemed);
                        prop_assert!(t.extra().data.is_none(), "a spent token keeps no data");
                        if !replayed {
                            log.push((command.into(), now));
                        }
                    }
                    (Err(g), Err(e)) => prop_assert_eq!(g, e),
                    _ => prop_assert!(false, "redeem: got {:?}, model says {:?}", got, expected),
                }
            }
            Op::Delete { slot, foreign } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let command = Delete {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                };
                let got = state.execute(&command, now, &w.catalog);
                let token = model.get_mut(&slot).expect("slot has a model");
                if foreign || token.purged(now) {
                    prop_assert_eq!(got.err(), Some(Rejection::TokenNotFound));
                } else {
                    let changed = token.deleted_at.is_none();
                    if changed {
                        token.end_hold(HoldEnd::Released, now);
                        token.deleted_at = Some(now);
                        log.push((command.into(), now));
                    }
                    let deleted_changed = match got {
                        Ok(Deleted { changed: c }) => Some(c),
                        _ => None,
                    };
                    prop_assert_eq!(deleted_changed, Some(changed));
                }
            }
            Op::Hold {
                slot,
                merchant,
                key,
                ttl_secs,
                foreign,
            } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let hold_id = HoldId::random();
                let command = Hold {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    hold_id,
                    merchant_id: merchant.map(merchant_name),
                    idempotency_key: key.map(|k| format!("key-{k}")),
                    ttl_secs,
                    held_by: "k".into(),
                };
                let got = state.execute(&command, now, &w.catalog);
                let token = model.get_mut(&slot).expect("slot has a model");
                let ttl_max = token.hold_ttl_max();
                let expected: Result<bool, Rejection> = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else if ttl_secs.is_some_and(|t| t > ttl_max) {
                    Err(Rejection::HoldTooLong { max_secs: ttl_max })
                } else {
                    match token.status(now) {
                        Status::Deleted => Err(Rejection::Deleted),
                        Status::Expired => Err(Rejection::Expired),
                        Status::Redeemed => Err(Rejection::AlreadyRedeemed {
                            redeemed_at_ms: token.redeemed.map_or(0, |r| r.2),
                        }),
                        Status::Held => {
                            let hold = token.live_hold(now).expect("held");
                            if key.is_some() && hold.key == key && hold.merchant == merchant {
                                Ok(true)
                            } else {
                                Err(Rejection::Held {
                                    expires_at_ms: hold.expires_at,
                                })
                            }
                        }
                        Status::Active if now < token.active_from => Err(Rejection::NotYetActive {
                            active_from_ms: token.active_from,
                        }),
                        Status::Active if !token.allows(merchant) => {
                            Err(Rejection::MerchantNotAllowed)
                        }
                        Status::Active => {
                            token.end_hold(HoldEnd::Expired, now);
                            let ttl_ms = ttl_secs.unwrap_or(ttl_max) * 1000;
                            token.hold = Some(ModelHold {
                                id: hold_id,
                                merchant,
                                key,
                                expires_at: (now + ttl_ms).min(token.expires_at),
                            });
                            token.placed.push(hold_id);
                            Ok(false)
                        }
                    }
                };
                check_changed("hold", &command, &got, &expected, &mut log, now)?;
            }
            Op::Capture {
                slot,
                which,
                foreign,
            } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let token = model.get_mut(&slot).expect("slot has a model");
                let hold_id = token
                    .placed
                    .iter()
                    .rev()
                    .nth(which)
                    .copied()
                    .unwrap_or_else(HoldId::random);
                let command = Capture {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    hold_id,
                    captured_by: "k".into(),
                };
                let got = state.execute(&command, now, &w.catalog);
                let expected: Result<bool, Rejection> = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else if token.status(now) == Status::Deleted {
                    Err(Rejection::Deleted)
                } else {
                    match token.hold_state(hold_id, now) {
                        None => Err(Rejection::HoldNotFound),
                        Some(Some(HoldEnd::Captured))
                            if token.status(now) == Status::Redeemed
                                && token.captured == Some(hold_id) =>
                        {
                            Ok(true)
                        }
                        Some(Some(_)) => Err(Rejection::HoldNotActive),
                        Some(None) => {
                            let hold = token.end_hold(HoldEnd::Captured, now).expect("live");
                            token.redeemed = Some((hold.merchant, hold.key, now));
                            token.captured = Some(hold.id);
                            token.spends += 1;
                            Ok(false)
                        }
                    }
                };
                check_changed("capture", &command, &got, &expected, &mut log, now)?;
            }
            Op::Release {
                slot,
                which,
                foreign,
            } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let token = model.get_mut(&slot).expect("slot has a model");
                let hold_id = token
                    .placed
                    .iter()
                    .rev()
                    .nth(which)
                    .copied()
                    .unwrap_or_else(HoldId::random);
                let command = Release {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    hold_id,
                };
                let got = state.execute(&command, now, &w.catalog);
                let expected: Result<bool, Rejection> = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else if token.status(now) == Status::Deleted {
                    Err(Rejection::Deleted)
                } else {
                    match token.hold_state(hold_id, now) {
                        None => Err(Rejection::HoldNotFound),
                        Some(Some(HoldEnd::Captured)) => Err(Rejection::HoldNotActive),
                        Some(Some(_)) => Ok(true),
                        Some(None) => {
                            token.end_hold(HoldEnd::Released, now);
                            Ok(false)
                        }
                    }
                };
                check_changed("release", &command, &got, &expected, &mut log, now)?;
            }
            Op::Void { slot, key, foreign } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let command = Void {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    reason: Some("refund".into()),
                    idempotency_key: key.map(|k| format!("void-{k}")),
                    voided_by: "k".into(),
                };
                let got = state.execute(&command, now, &w.catalog);
                let token = model.get_mut(&slot).expect("slot has a model");
                let expected: Result<bool, Rejection> = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else if token.status(now) == Status::Deleted {
                    Err(Rejection::Deleted)
                } else if key.is_some() && token.voids.contains(&key) {
                    Ok(true)
                } else if token.status(now) != Status::Redeemed {
                    Err(Rejection::NotRedeemed)
                } else {
                    let closed_at_ms = token.redeemed.map_or(0, |r| r.2) + token.void_window_ms();
                    if now >= closed_at_ms {
                        Err(Rejection::VoidWindowClosed { closed_at_ms })
                    } else if token.voids.len() >= VOIDS_MAX {
                        Err(Rejection::VoidLimitReached)
                    } else {
                        token.voids.push(key);
                        token.redeemed = None;
                        token.captured = None;
                        Ok(false)
                    }
                };
                check_changed("void", &command, &got, &expected, &mut log, now)?;
            }
            Op::Validate {
                slot,
                merchant,
                key,
                foreign,
            } => {
                let Some(id) = ids.get(&slot).copied() else {
                    continue;
                };
                let command = Redeem {
                    account_id: if foreign { w.other } else { w.account },
                    id,
                    merchant_id: merchant.map(merchant_name),
                    idempotency_key: key.map(|k| format!("key-{k}")),
                    redeemed_by: "k".into(),
                };
                let before = view(&state, w.account, id, now);
                let got = state.check_redeem(&command, now).map(|c| c.refusal);
                let token = &model[&slot];
                let expected = if foreign || token.purged(now) {
                    Err(Rejection::TokenNotFound)
                } else {
                    Ok(token.judge_redeem(merchant, key, now).err())
                };
                prop_assert_eq!(got, expected, "validate");
                prop_assert_eq!(
                    view(&state, w.account, id, now),
                    before,
                    "validate changed the token"
                );
            }
            Op::Advance(ms) => now += ms,
            Op::RunTimers => {
                state.run_timers(now);
            }
        }
        // After every step, every token reads as the model says.
        for (slot, token) in &model {
            let id = ids[slot];
            prop_assert!(
                token.spends <= token.voids.len() + 1,
                "spent twice without a void"
            );
            let seen = state.fetch(w.account, &[id], now).pop().flatten();
            if token.purged(now) {
                prop_assert!(seen.is_none(), "slot {} should be gone", slot);
                continue;
            }
            let seen = seen.ok_or_else(|| TestCaseError::fail(format!("slot {slot} missing")))?;
            prop_assert_eq!(seen.status_at(now), token.status(now), "slot {}", slot);
            prop_assert_eq!(
                seen.extra().live_hold(now).map(|h| (h.id, h.expires_at_ms)),
                token.live_hold(now).map(|h| (h.id, h.expires_at)),
                "slot {} hold",
                slot
            );
            prop_assert_eq!(
                seen.extra().lifecycle().voided.len(),
                token.voids.len(),
                "slot {} voids",
                slot
            );
            if !matches!(seen.status, Status::Active | Status::Held) || !token.voids.is_empty() {
                prop_assert!(seen.extra().data.is_none(), "data freed once spent");
            }
            prop_assert!(
                state.fetch(w.other, &[id], now)[0].is_none(),
                "foreign read"
            );
        }
        // The counts behind the `tokens` gauge match a recount of the state.
        for status in Status::ALL {
            let held = state.tokens().filter(|t| t.status == status).count();
            prop_assert_eq!(state.counts().get(status), held as u64, "{:?}", status);
        }
    }
    // Replaying the logged changes at their decision times rebuilds what
    // readers see, and, once both ran their timers, the same counts.
    let mut replayed = ShardState::new(RETENTION_MS);
    for (command, at) in &log {
        let applied = replayed.apply(command, *at, &w.catalog);
        prop_assert_eq!(applied, Ok(true), "replay of {:?}", command);
    }
    for id in ids.values() {
        prop_assert_eq!(
            view(&replayed, w.account, *id, now),
            view(&state, w.account, *id, now),
            "replayed token {}",
            id
        );
    }
    state.run_timers(now);
    replayed.run_timers(now);
    prop_assert_eq!(replayed.counts(), state.counts());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn shard_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// The state is a pure function of the commands: applying the same logged
/// sequence to a fresh shard gives the same tokens (what WAL replay relies on).
#[test]
fn replaying_the_same_commands_gives_the_same_state() {
    let w = world();
    let mut live = ShardState::new(RETENTION_MS);
    let mut log: Vec<(ShardCommand, Millis)> = Vec::new();
    let mut now = START_MS;
    let ids: Vec<TokenId> = (0..20).map(|_| TokenId::random()).collect();
    for (i, id) in ids.iter().enumerate() {
        let command = ShardCommand::Create(Create {
            tokens: vec![NewToken {
                id: *id,
                account_id: w.account,
                collection_id: w.open,
                created_by: "k".into(),
                kind: TokenType::Card,
                description: Some(format!("token {i}")),
                data: None,
                encryption: None,
                metadata: Metadata::default(),
                active_from_ms: None,
                expiry: if i % 3 == 0 {
                    Expiry::InSecs(1)
                } else {
                    Expiry::CollectionDefault
                },
                children: vec![],
                fingerprint: None,
                sealed_data: None,
                sealed_encryption: None,
            }],
        });
        if live.apply(&command, now, &w.catalog).is_ok() {
            log.push((command, now));
        }
        now += 100;
    }
    for id in ids.iter().step_by(2) {
        let command = ShardCommand::Redeem(Redeem {
            account_id: w.account,
            id: *id,
            merchant_id: None,
            idempotency_key: None,
            redeemed_by: "k".into(),
        });
        if live.apply(&command, now, &w.catalog) == Ok(true) {
            log.push((command, now));
        }
        now += 50;
    }
    let mut replayed = ShardState::new(RETENTION_MS);
    for (command, at) in &log {
        assert!(replayed.apply(command, *at, &w.catalog).is_ok());
    }
    let snapshot = |s: &ShardState| {
        let mut v: Vec<_> = s
            .tokens()
            .map(|t| (t.id, t.status_at(now), t.created_at_ms, t.expires_at_ms))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    assert_eq!(snapshot(&live), snapshot(&replayed));
    // Replay also rebuilds the counts by status that the metrics publish.
    assert_eq!(live.counts(), replayed.counts());
    assert_eq!(live.counts().total(), ids.len() as u64);
}
