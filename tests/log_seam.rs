//! A shard needs nothing of its log but the `Log` seam: here it runs on a log
//! kept in memory, as a replicated log would stand in for the WAL. The
//! shard appends each change it decides, in decision order, with the time
//! it decided it; appends nothing for a replay or a refusal; and once the
//! log is poisoned it changes nothing more.

use actix::Actor;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokend::catalog::Catalog;
use tokend::clock::ManualClock;
use tokend::command::{CatalogCommand, Create, Expiry, NewToken, Redeem, ShardCommand};
use tokend::ids::{AccountId, CollectionId, TokenId};
use tokend::log::{Durable, Log, LogError, LogRecord, Lsn, Poison};
use tokend::model::collection::CollectionRecord;
use tokend::model::{Account, Liveness, Metadata, Status, TokenType};
use tokend::shard::actor::{Execute, Fetch};
use tokend::shard::{Rejection, Shard, ShardState};

const RETENTION_MS: i64 = 60_000;
const T0: i64 = 1_768_672_800_000;

/// Records kept in memory; poisoned on demand.
#[derive(Default)]
struct MemoryLog {
    /// Every record appended, LSN = index + 1.
    records: Mutex<Vec<LogRecord>>,
    /// Set by the test to make the log fail.
    poison: Poison,
    /// The next append fails (and poisons the log), as a refused one does.
    refuse_next: Mutex<bool>,
}

impl Log for MemoryLog {
    fn append(&self, record: &LogRecord) -> Result<Lsn, LogError> {
        self.poison.check()?;
        if std::mem::take(&mut *self.refuse_next.lock()) {
            self.poison.set("the append was refused");
            return self.poison.check().map(|()| 0);
        }
        let mut records = self.records.lock();
        records.push(record.clone());
        Ok(records.len() as Lsn)
    }

    fn durable(&self, lsn: Lsn) -> Durable {
        let appended = self.records.lock().len() as Lsn;
        Durable::ready(self.poison.check().and(if lsn <= appended {
            Ok(())
        } else {
            Err(LogError::NotAppended {
                lsn,
                next_lsn: appended + 1,
            })
        }))
    }

    fn check_writable(&self) -> Result<(), LogError> {
        self.poison.check()
    }

    fn last_lsn(&self) -> Lsn {
        self.records.lock().len() as Lsn
    }
}

struct World {
    catalog: Arc<Catalog>,
    account: AccountId,
    collection: CollectionId,
}

fn world() -> World {
    let catalog = Arc::new(Catalog::new());
    let account = AccountId::random();
    let collection = CollectionId::random();
    let commands = [
        CatalogCommand::CreateAccount(Account {
            id: account,
            name: "a".into(),
            liveness: Liveness::Test,
            created_at_ms: T0,
        }),
        CatalogCommand::CreateCollection(Box::new(CollectionRecord {
            id: collection,
            account_id: account,
            name: "c".into(),
            description: None,
            issuer: None,
            issuer_img: None,
            img: None,
            issuer_website: None,
            value: vec![],
            merchants: vec![],
            token_expires_after_secs: None,
            data_schema: None,
            hold_ttl_secs_max: None,
            void_window_secs: None,
            liveness: Liveness::Test,
            created_at_ms: T0,
        })),
    ];
    for command in commands {
        catalog.execute(command, |_| ()).expect("catalog accepts");
    }
    World {
        catalog,
        account,
        collection,
    }
}

fn new_token(w: &World) -> NewToken {
    NewToken {
        id: TokenId::random(),
        account_id: w.account,
        collection_id: w.collection,
        created_by: "issuer".into(),
        kind: TokenType::Token,
        description: None,
        data: Some(r#"{"n":1}"#.into()),
        encryption: None,
        metadata: Metadata::from_pairs([("k", "v")]),
        active_from_ms: None,
        expiry: Expiry::CollectionDefault,
        children: vec![],
        fingerprint: None,
        sealed_data: None,
        sealed_encryption: None,
    }
}

fn redeem(w: &World, id: TokenId, key: &str) -> Redeem {
    Redeem {
        account_id: w.account,
        id,
        merchant_id: None,
        idempotency_key: Some(key.into()),
        redeemed_by: "pos".into(),
    }
}

#[actix_web::test]
async fn a_shard_appends_what_it_decides_in_order_and_nothing_else() {
    let w = world();
    let log = Arc::new(MemoryLog::default());
    let clock = Arc::new(ManualClock::new(T0));
    let shard = Shard::new(
        ShardState::new(RETENTION_MS),
        Arc::clone(&w.catalog),
        log.clone(),
        clock.clone(),
        Duration::from_secs(3600),
    )
    .start();
    let tokens: Vec<NewToken> = (0..3).map(|_| new_token(&w)).collect();
    let ids: Vec<TokenId> = tokens.iter().map(|t| t.id).collect();
    let created = shard
        .send(Execute(Create { tokens }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.lsn, 1);
    clock.advance_ms(5);
    let redeemed = shard
        .send(Execute(redeem(&w, ids[0], "k-1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.lsn, 2);
    assert!(!redeemed.value.as_ref().unwrap().replayed);
    // A replay and a refusal change nothing, append nothing, and answer
    // with the LSN of the change they depend on.
    let replayed = shard
        .send(Execute(redeem(&w, ids[0], "k-1")))
        .await
        .unwrap()
        .unwrap();
    assert!(replayed.value.unwrap().replayed);
    let refused = shard
        .send(Execute(redeem(&w, ids[0], "k-2")))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        refused.value,
        Err(Rejection::AlreadyRedeemed { .. })
    ));
    assert_eq!((replayed.lsn, refused.lsn), (2, 2));
    log.durable(2).await.unwrap();

    let records = log.records.lock().clone();
    assert_eq!(records.len(), 2);
    assert!(matches!(
        &records[0],
        LogRecord::Shard { now_ms: T0, command: ShardCommand::Create(c) } if c.tokens.len() == 3
    ));
    assert!(matches!(
        &records[1],
        LogRecord::Shard { now_ms, command: ShardCommand::Redeem(r) }
            if *now_ms == T0 + 5 && r.id == ids[0]
    ));
    // The records rebuild the same state.
    let mut replica = ShardState::new(RETENTION_MS);
    for record in &records {
        let LogRecord::Shard { now_ms, command } = record else {
            panic!("a shard record");
        };
        assert_eq!(replica.apply(command, *now_ms, &w.catalog), Ok(true));
    }
    let statuses = |state: &ShardState| {
        let mut v: Vec<_> = state.tokens().map(|t| (t.id, t.status)).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    };
    let live = shard
        .send(Fetch {
            account_id: w.account,
            ids: ids.clone(),
        })
        .await
        .unwrap()
        .value;
    let mut live: Vec<_> = live
        .into_iter()
        .flatten()
        .map(|t| (t.id, t.status))
        .collect();
    live.sort_by_key(|(id, _)| *id);
    assert_eq!(live, statuses(&replica));
}

#[actix_web::test]
async fn on_a_poisoned_log_a_shard_changes_nothing_more() {
    let w = world();
    let log = Arc::new(MemoryLog::default());
    let shard = Shard::new(
        ShardState::new(RETENTION_MS),
        Arc::clone(&w.catalog),
        log.clone(),
        Arc::new(ManualClock::new(T0)),
        Duration::from_secs(3600),
    )
    .start();
    let tokens: Vec<NewToken> = (0..2).map(|_| new_token(&w)).collect();
    let ids: Vec<TokenId> = tokens.iter().map(|t| t.id).collect();
    shard
        .send(Execute(Create { tokens }))
        .await
        .unwrap()
        .unwrap();

    // The append of this redeem is refused: the redeem is never
    // acknowledged, and the log is poisoned from then on.
    *log.refuse_next.lock() = true;
    let refused = shard
        .send(Execute(redeem(&w, ids[0], "k-1")))
        .await
        .unwrap();
    assert!(matches!(refused, Err(LogError::Poisoned { .. })));
    assert!(log.durable(1).await.is_err(), "nothing is acknowledged");

    // Later writes are refused before they change anything.
    let later = shard
        .send(Execute(redeem(&w, ids[1], "k-2")))
        .await
        .unwrap();
    assert!(matches!(later, Err(LogError::Poisoned { .. })));
    let fetched = shard
        .send(Fetch {
            account_id: w.account,
            ids: vec![ids[1]],
        })
        .await
        .unwrap()
        .value;
    assert_eq!(fetched[0].as_ref().map(|t| t.status), Some(Status::Active));
    assert_eq!(log.records.lock().len(), 1, "only the create was logged");
}
