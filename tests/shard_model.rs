//! Property test: random sequences of create / redeem / delete / clock moves /
//! timer runs against the shard state machine and against a plain model of
//! the redemption rules. They must agree on every outcome and every status,
//! and no token is ever redeemed successfully twice.

use proptest::prelude::*;
use std::collections::HashMap;
use tokend::catalog::Catalog;
use tokend::clock::Millis;
use tokend::command::{CatalogCommand, Create, Delete, Expiry, NewToken, Redeem, ShardCommand};
use tokend::ids::{AccountId, CollectionId, TokenId};
use tokend::model::collection::CollectionRecord;
use tokend::model::token::NEVER;
use tokend::model::{Account, Liveness, Metadata, Status, TokenType};
use tokend::shard::{Created, Deleted, Redeemed, Rejection, ShardState};

const SLOTS: usize = 6;
const RETENTION_MS: i64 = 5_000;
/// Times move in whole steps so that clock moves land exactly on
/// `activeFrom`, `expiresAt` and purge deadlines often: the boundaries are
/// where off-by-one bugs live.
const STEP_MS: i64 = 250;
const START_MS: Millis = 1_700_000_000_000;

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
    Advance(i64),
    RunTimers,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SLOTS, any::<bool>(), proptest::option::of((1i64..16).prop_map(|n| n * STEP_MS)), proptest::option::of((1i64..8).prop_map(|n| n * STEP_MS)))
            .prop_map(|(slot, restricted, lifetime_ms, starts_in_ms)| Op::Create { slot, restricted, lifetime_ms, starts_in_ms }),
        5 => (0..SLOTS, proptest::option::of(0u8..3), proptest::option::of(0u8..2), proptest::bool::weighted(0.1))
            .prop_map(|(slot, merchant, key, foreign)| Op::Redeem { slot, merchant, key, foreign }),
        1 => (0..SLOTS, proptest::bool::weighted(0.1)).prop_map(|(slot, foreign)| Op::Delete { slot, foreign }),
        2 => (1i64..12).prop_map(|n| Op::Advance(n * STEP_MS)),
        1 => Just(Op::RunTimers),
    ]
}

/// The redemption rules, written as plainly as possible.
#[derive(Debug, Clone)]
struct ModelToken {
    restricted: bool,
    active_from: Millis,
    expires_at: Millis,
    /// (merchant, key, at) of the winning redeem.
    redeemed: Option<(Option<u8>, Option<u8>, Millis)>,
    deleted_at: Option<Millis>,
    successful_redeems: usize,
}

impl ModelToken {
    fn status(&self, now: Millis) -> Status {
        if self.deleted_at.is_some() {
            Status::Deleted
        } else if self.redeemed.is_some() {
            Status::Redeemed
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
    let collection = |merchants: Vec<String>| {
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
                    hold_ttl_secs_max: None,
                    void_window_secs: None,
                    liveness: Liveness::Test,
                    created_at_ms: 0,
                })),
                |_| (),
            )
            .unwrap();
        id
    };
    let open = collection(vec![]);
    // Merchants 0 and 1 may redeem; 2 may not.
    let restricted = collection(vec![merchant_name(0), merchant_name(1)]);
    World {
        catalog,
        account,
        other,
        open,
        restricted,
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let w = world();
    let mut state = ShardState::new(RETENTION_MS);
    let mut model: HashMap<usize, ModelToken> = HashMap::new();
    let mut ids: HashMap<usize, TokenId> = HashMap::new();
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
                    }],
                };
                let outcome = state.execute(&command, now, &w.catalog);
                let created_new = matches!(&outcome, Ok(c) if matches!(c[..], [Created::New(_)]));
                prop_assert!(created_new, "create failed: {:?}", outcome);
                ids.insert(slot, id);
                model.insert(
                    slot,
                    ModelToken {
                        restricted,
                        active_from: active_from.unwrap_or(now),
                        expires_at: expires_at.unwrap_or(NEVER),
                        redeemed: None,
                        deleted_at: None,
                        successful_redeems: 0,
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
                    match token.status(now) {
                        Status::Deleted => Err(Rejection::Deleted),
                        Status::Expired => Err(Rejection::Expired),
                        Status::Redeemed => {
                            let (m, k, at) = token.redeemed.expect("redeemed");
                            if key.is_some() && k == key && m == merchant {
                                Ok(true)
                            } else {
                                Err(Rejection::AlreadyRedeemed { redeemed_at_ms: at })
                            }
                        }
                        Status::Active if now < token.active_from => Err(Rejection::NotYetActive {
                            active_from_ms: token.active_from,
                        }),
                        Status::Active if token.restricted && !matches!(merchant, Some(0 | 1)) => {
                            Err(Rejection::MerchantNotAllowed)
                        }
                        Status::Held => unreachable!("this model places no holds"),
                        Status::Active => {
                            token.redeemed = Some((merchant, key, now));
                            token.successful_redeems += 1;
                            Ok(false)
                        }
                    }
                };
                match (&got, &expected) {
                    (Ok(Redeemed { replayed, token: t }), Ok(expect_replayed)) => {
                        prop_assert_eq!(replayed, expect_replayed);
                        prop_assert_eq!(t.status, Status::Redeemed);
                        prop_assert!(t.extra().data.is_none(), "a spent token keeps no data");
                    }
                    (Err(g), Err(e)) => prop_assert_eq!(g, e),
                    _ => prop_assert!(false, "redeem: got {:?}, model says {:?}", got, expected),
                }
                prop_assert!(token.successful_redeems <= 1, "two successful redeems");
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
                        token.deleted_at = Some(now);
                    }
                    let deleted_changed = match got {
                        Ok(Deleted { changed: c }) => Some(c),
                        _ => None,
                    };
                    prop_assert_eq!(deleted_changed, Some(changed));
                }
            }
            Op::Advance(ms) => now += ms,
            Op::RunTimers => {
                state.run_timers(now);
            }
        }
        // After every step, every token reads as the model says.
        for (slot, token) in &model {
            let id = ids[slot];
            let seen = state.fetch(w.account, &[id], now).pop().flatten();
            if token.purged(now) {
                prop_assert!(seen.is_none(), "slot {} should be gone", slot);
                continue;
            }
            let seen = seen.ok_or_else(|| TestCaseError::fail(format!("slot {slot} missing")))?;
            prop_assert_eq!(seen.status_at(now), token.status(now), "slot {}", slot);
            if seen.status != Status::Active {
                prop_assert!(seen.extra().data.is_none(), "data freed once final");
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
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

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
