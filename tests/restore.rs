//! Restore = snapshot image + logged records after it. These tests drive the
//! shard state machines directly, log every change as the engine does, take
//! an image midway (components captured at different LSNs), and check that
//! restoring — with the same or another shard count — rebuilds exactly the
//! live state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokend::catalog::Catalog;
use tokend::clock::Millis;
use tokend::command::{CatalogCommand, Create, Delete, Expiry, NewToken, Redeem, ShardCommand};
use tokend::ids::{AccountId, CollectionId, TokenId};
use tokend::keyring::Keyring;
use tokend::log::LogRecord;
use tokend::model::collection::CollectionRecord;
use tokend::model::{Account, Liveness, Metadata, Status, TokenType};
use tokend::shard::{ShardCapture, ShardState};
use tokend::snapshot::{EngineCapture, SnapshotImage, FORMAT_VERSION};
use tokend::store::restore::Restorer;
use tokend::wal::Record;

const RETENTION_MS: i64 = 60_000;

/// A miniature engine: catalog + shards + a log, no threads.
struct Live {
    catalog: std::sync::Arc<Catalog>,
    shards: Vec<ShardState>,
    log: Vec<(u64, Vec<u8>)>,
    /// Per shard, the LSN of its last logged record.
    shard_lsns: Vec<u64>,
    catalog_lsn: u64,
    now: Millis,
}

impl Live {
    fn new(shards: usize) -> Self {
        Self {
            catalog: std::sync::Arc::new(Catalog::new()),
            shards: (0..shards).map(|_| ShardState::new(RETENTION_MS)).collect(),
            log: Vec::new(),
            shard_lsns: vec![0; shards],
            catalog_lsn: 0,
            now: 1_700_000_000_000,
        }
    }

    fn next_lsn(&self) -> u64 {
        self.log.len() as u64 + 1
    }

    fn catalog(&mut self, command: CatalogCommand) {
        self.catalog.execute(command.clone(), |_| ()).unwrap();
        let lsn = self.next_lsn();
        self.log
            .push((lsn, LogRecord::Catalog(command).encode(&Keyring::off())));
        self.catalog_lsn = lsn;
    }

    fn shard(&mut self, id: TokenId, command: ShardCommand) -> bool {
        self.now += 7;
        let shard = id.shard(self.shards.len());
        let changed = self.shards[shard]
            .apply(&command, self.now, &self.catalog)
            .unwrap_or(false);
        if changed {
            let lsn = self.next_lsn();
            let record = LogRecord::Shard {
                now_ms: self.now,
                command,
            };
            self.log.push((lsn, record.encode(&Keyring::off())));
            self.shard_lsns[shard] = lsn;
        }
        changed
    }

    /// Every token as `(id, status, created, expires, has data)`.
    fn tokens(
        shards: &[ShardState],
        now: Millis,
    ) -> BTreeMap<TokenId, (Status, Millis, Millis, bool)> {
        shards
            .iter()
            .flat_map(|s| s.tokens())
            .filter(|t| !t.is_purged(now, RETENTION_MS))
            .map(|t| {
                (
                    t.id,
                    (
                        t.status_at(now),
                        t.created_at_ms,
                        t.expires_at_ms,
                        t.extra().data.is_some(),
                    ),
                )
            })
            .collect()
    }
}

fn new_token(account: AccountId, collection: CollectionId, i: usize) -> NewToken {
    NewToken {
        id: TokenId::random(),
        account_id: account,
        collection_id: collection,
        created_by: format!("key-{}", i % 3),
        kind: TokenType::Token,
        description: None,
        data: Some(format!(r#"{{"n":{i}}}"#)),
        encryption: None,
        metadata: Metadata::from_pairs([("i", "x")]),
        active_from_ms: None,
        expiry: if i.is_multiple_of(4) {
            Expiry::InSecs(3600)
        } else {
            Expiry::CollectionDefault
        },
        children: vec![],
        fingerprint: None,
        sealed_data: None,
        sealed_encryption: None,
    }
}

/// Creates a `main` account through the catalog; returns its id.
fn create_account(live: &mut Live) -> AccountId {
    let account = AccountId::random();
    live.catalog(CatalogCommand::CreateAccount(Account {
        id: account,
        name: "a".into(),
        liveness: Liveness::Main,
        created_at_ms: live.now,
    }));
    account
}

fn populate(live: &mut Live, image_at_step: Option<usize>) -> Option<SnapshotImage> {
    let account = create_account(live);
    let collection = CollectionId::random();
    live.catalog(CatalogCommand::CreateCollection(Box::new(
        CollectionRecord {
            id: collection,
            account_id: account,
            name: "c".into(),
            description: None,
            issuer: Some("issuer".into()),
            issuer_img: None,
            img: None,
            issuer_website: None,
            value: vec![],
            merchants: vec![],
            token_expires_after_secs: None,
            data_schema: Some(r#"{"type":"object"}"#.into()),
            hold_ttl_secs_max: None,
            void_window_secs: None,
            liveness: Liveness::Main,
            created_at_ms: live.now,
        },
    )));
    let mut image = None;
    let mut ids = Vec::new();
    for step in 0..300 {
        if Some(step) == image_at_step {
            // Components captured one after another, as the engine does.
            image = Some(image_of(live));
        }
        match step % 5 {
            0..=2 => {
                let token = new_token(account, collection, step);
                ids.push(token.id);
                live.shard(
                    token.id,
                    ShardCommand::Create(Create {
                        tokens: vec![token],
                    }),
                );
            }
            3 => {
                let id = ids[step * 7 % ids.len()];
                live.shard(
                    id,
                    ShardCommand::Redeem(Redeem {
                        account_id: account,
                        id,
                        merchant_id: Some("m".into()),
                        idempotency_key: Some(format!("k{step}")),
                        redeemed_by: "key-1".into(),
                    }),
                );
            }
            _ => {
                let id = ids[step * 3 % ids.len()];
                live.shard(
                    id,
                    ShardCommand::Delete(Delete {
                        account_id: account,
                        id,
                    }),
                );
            }
        }
    }
    image
}

/// A restorer starting from `image`, as a start reads it from a file.
fn restorer(image: Option<SnapshotImage>, shards: usize) -> Restorer {
    Restorer::new(
        image.map(|i| (i, "snapshot-under-test.mpk".into())),
        shards,
        RETENTION_MS,
        Arc::new(Keyring::off()),
    )
    .unwrap()
}

/// The shards restored from `image` plus every later record of the log.
fn restore(live: &Live, image: Option<SnapshotImage>, shards: usize) -> Vec<ShardState> {
    let covered = image.as_ref().map_or(0, |i| i.covered_lsn());
    let mut restorer = restorer(image, shards);
    let file: Arc<Path> = Arc::from(Path::new("wal-under-test.log"));
    for (lsn, payload) in live.log.iter().filter(|(lsn, _)| *lsn > covered) {
        let record = Record {
            lsn: *lsn,
            payload: bytes::Bytes::copy_from_slice(payload),
            file: Arc::clone(&file),
        };
        restorer.replay(&record).unwrap();
    }
    assert_eq!(restorer.last_lsn(), live.log.len() as u64);
    restorer.finish().1
}

#[test]
fn log_alone_rebuilds_the_state() {
    let mut live = Live::new(2);
    populate(&mut live, None);
    let expected = Live::tokens(&live.shards, live.now);
    assert_eq!(expected.len(), 180);
    assert_eq!(Live::tokens(&restore(&live, None, 2), live.now), expected);
}

#[test]
fn image_plus_later_records_rebuilds_the_state_for_any_shard_count() {
    let mut live = Live::new(3);
    let image = populate(&mut live, Some(150)).expect("image taken");
    let expected = Live::tokens(&live.shards, live.now);
    // The image's components end at different LSNs; the covered LSN is the
    // smallest of them, and records between are applied selectively.
    let bytes = bytes::Bytes::from(image.encode().unwrap());
    for shards in [1, 2, 3, 5] {
        let image = SnapshotImage::decode(&bytes, FORMAT_VERSION).unwrap();
        assert_eq!(
            Live::tokens(&restore(&live, Some(image), shards), live.now),
            expected,
            "{shards} shards"
        );
    }
}

#[test]
fn a_restored_shard_keeps_spend_once() {
    let mut live = Live::new(2);
    let image = populate(&mut live, Some(299)).expect("image taken");
    let mut shards = restore(&live, Some(image), 2);
    // The collection is reached through the token, so an empty catalog is
    // enough to decide a redeem.
    let catalog = Catalog::new();
    for state in &mut shards {
        let redeemed: Vec<_> = state
            .tokens()
            .filter(|t| t.status == Status::Redeemed)
            .map(|t| (t.id, t.collection.record.account_id))
            .collect();
        assert!(!redeemed.is_empty());
        for (id, account) in redeemed {
            let again = ShardCommand::Redeem(Redeem {
                account_id: account,
                id,
                merchant_id: Some("other".into()),
                idempotency_key: None,
                redeemed_by: "k".into(),
            });
            assert!(state.apply(&again, live.now + 1, &catalog).is_err());
        }
    }
}

/// A capture is the state at its LSN: changes the shard makes afterwards
/// (copy on write) do not leak into the image being encoded.
#[test]
fn a_capture_is_unaffected_by_later_changes() {
    let mut live = Live::new(1);
    populate(&mut live, None);
    let capture = ShardCapture::of(&live.shards[0], live.log.len() as u64);
    let active: Vec<(TokenId, AccountId)> = live.shards[0]
        .tokens()
        .filter(|t| t.status == Status::Active)
        .map(|t| (t.id, t.collection.record.account_id))
        .collect();
    assert!(!active.is_empty());
    for (id, account) in &active {
        live.shard(
            *id,
            ShardCommand::Redeem(Redeem {
                account_id: *account,
                id: *id,
                merchant_id: None,
                idempotency_key: None,
                redeemed_by: "k".into(),
            }),
        );
    }
    let image = EngineCapture {
        taken_at_ms: live.now,
        catalog: live.catalog.capture(),
        catalog_lsn: live.catalog_lsn,
        shards: vec![capture],
    }
    .into_image(&Keyring::off());
    let restored = restorer(Some(image), 1).finish().1;
    for (id, _) in &active {
        let token = restored[0].tokens().find(|t| t.id == *id).unwrap();
        assert_eq!(token.status, Status::Active, "captured before the redeem");
        assert!(
            token.extra().data.is_some(),
            "data captured before it was freed"
        );
    }
    assert!(live.shards[0].tokens().all(|t| t.status != Status::Active));
}

/// Every field a token can carry, in a comparable form.
type FullToken = (
    (
        TokenId,
        CollectionId,
        String,
        Millis,
        Millis,
        Millis,
        Status,
        TokenType,
    ),
    Vec<(String, String)>,
    String,
);

fn full_tokens(shards: &[ShardState]) -> BTreeMap<TokenId, FullToken> {
    shards
        .iter()
        .flat_map(|s| s.tokens())
        .map(|t| {
            let extra = t.extra();
            let rest = format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                extra.description,
                extra.data.as_ref().map(|d| d.get().to_owned()),
                extra.encryption,
                extra.children,
                extra.create_fingerprint,
                extra.redemption,
                extra.deleted_at_ms
            );
            (
                t.id,
                (
                    (
                        t.id,
                        t.collection.record.id,
                        t.created_by.to_string(),
                        t.created_at_ms,
                        t.active_from_ms,
                        t.expires_at_ms,
                        t.status,
                        t.kind,
                    ),
                    t.metadata
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    rest,
                ),
            )
        })
        .collect()
}

/// Tokens of every shape: no / inline / overflowing metadata (long values,
/// many pairs, non-ASCII), data, encryption, children, fingerprints, types,
/// activation and expiry; then redeemed and deleted ones.
fn varied_live(shards: usize) -> Live {
    use tokend::model::{Encryption, EncryptionKey};
    let mut live = Live::new(shards);
    let account = create_account(&mut live);
    let collections: Vec<CollectionId> = (0..3).map(|_| CollectionId::random()).collect();
    for (i, collection) in collections.iter().enumerate() {
        live.catalog(CatalogCommand::CreateCollection(Box::new(
            CollectionRecord {
                id: *collection,
                account_id: account,
                name: format!("c{i}"),
                description: None,
                issuer: None,
                issuer_img: None,
                img: None,
                issuer_website: None,
                value: vec![],
                merchants: vec![],
                token_expires_after_secs: (i == 1).then_some(3600),
                data_schema: None,
                hold_ttl_secs_max: None,
                void_window_secs: None,
                liveness: Liveness::Main,
                created_at_ms: live.now,
            },
        )));
    }
    let long = "ü".repeat(40);
    let mut ids = Vec::new();
    for i in 0..400usize {
        let keys: Vec<String> = (0..(i % 22).min(20)).map(|k| format!("key-{k}")).collect();
        let metadata = match i % 4 {
            0 => Metadata::from_pairs([]),
            1 => Metadata::from_pairs([("order-id", "A1234567"), ("ß", "ü€")]),
            2 => Metadata::from_pairs([("note", long.as_str())]),
            _ => Metadata::from_pairs(keys.iter().map(|k| (k.as_str(), "v"))),
        };
        let token = NewToken {
            id: TokenId::random(),
            account_id: account,
            collection_id: collections[i % 3],
            created_by: format!("key-{}", i % 5),
            kind: [TokenType::Token, TokenType::Card, TokenType::Bank][i % 3],
            description: (i % 6 == 0).then(|| format!("token {i}")),
            data: (i % 2 == 0).then(|| format!(r#"{{"n":{i},"s":"ü"}}"#)),
            encryption: (i % 7 == 0).then(|| Encryption {
                cek: Some(EncryptionKey {
                    key: Some("k".into()),
                    alg: Some("AES".into()),
                }),
                kek: None,
            }),
            metadata,
            active_from_ms: (i % 5 == 0).then_some(live.now - 1000 + i as i64),
            expiry: match i % 4 {
                0 => Expiry::InSecs(20),
                1 => Expiry::At(live.now + 10_000_000),
                _ => Expiry::CollectionDefault,
            },
            children: if i % 9 == 0 {
                ids.iter().rev().take(2).copied().collect()
            } else {
                vec![]
            },
            fingerprint: (i % 8 == 0).then_some([i as u8; 16]),
            sealed_data: None,
            sealed_encryption: None,
        };
        ids.push(token.id);
        live.shard(
            token.id,
            ShardCommand::Create(Create {
                tokens: vec![token],
            }),
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let command = match n % 10 {
            3 => ShardCommand::Redeem(Redeem {
                account_id: account,
                id: *id,
                merchant_id: (n % 20 == 3).then(|| "m-1".into()),
                idempotency_key: Some(format!("r{n}")),
                redeemed_by: format!("redeemer-{}", n % 3),
            }),
            7 => ShardCommand::Delete(Delete {
                account_id: account,
                id: *id,
            }),
            _ => continue,
        };
        live.shard(*id, command);
    }
    // Let some expire (and their timers run) before the image.
    live.now += 30_000;
    for shard in &mut live.shards {
        shard.run_timers(live.now);
    }
    live
}

/// The live state imaged as the engine images it: each component at the
/// LSN of its own last record.
fn image_of(live: &Live) -> SnapshotImage {
    EngineCapture {
        taken_at_ms: live.now,
        catalog: live.catalog.capture(),
        catalog_lsn: live.catalog_lsn,
        shards: live
            .shards
            .iter()
            .zip(&live.shard_lsns)
            .map(|(s, lsn)| ShardCapture::of(s, *lsn))
            .collect(),
    }
    .into_image(&Keyring::off())
}

#[test]
fn the_image_round_trips_every_field_and_reroutes_to_any_shard_count() {
    let live = varied_live(3);
    let expected = full_tokens(&live.shards);
    assert_eq!(expected.len(), 400);
    let bytes = bytes::Bytes::from(image_of(&live).encode().unwrap());
    for shards in [1, 2, 3, 4, 7] {
        let image = SnapshotImage::decode(&bytes, FORMAT_VERSION).unwrap();
        assert_eq!(image.token_count(), 400);
        let restored = restorer(Some(image), shards).finish().1;
        for (i, state) in restored.iter().enumerate() {
            assert!(
                state.tokens().all(|t| t.id.shard(shards) == i),
                "{shards} shards: every token lands on its owner"
            );
        }
        assert_eq!(full_tokens(&restored), expected, "{shards} shards");
        // Encoding the restored state again gives the same tokens.
        let mut again = Live::new(shards);
        again.catalog = std::sync::Arc::clone(&live.catalog);
        again.shards = restored;
        again.shard_lsns = vec![live.log.len() as u64; shards];
        again.catalog_lsn = live.catalog_lsn;
        let bytes = bytes::Bytes::from(image_of(&again).encode().unwrap());
        let image = SnapshotImage::decode(&bytes, FORMAT_VERSION).unwrap();
        let twice = restorer(Some(image), 2).finish().1;
        assert_eq!(full_tokens(&twice), expected, "{shards} shards, twice");
    }
}

#[test]
fn restored_timers_and_lists_behave_like_the_live_ones() {
    let mut live = varied_live(2);
    let image = image_of(&live);
    let mut restored = restore(&live, Some(image), 3);
    // Far in the future every token has expired and every tombstone is gone.
    live.now += 400 * RETENTION_MS;
    let live_report: usize = live
        .shards
        .iter_mut()
        .map(|s| s.run_timers(live.now).purged)
        .sum();
    let restored_report: usize = restored
        .iter_mut()
        .map(|s| s.run_timers(live.now).purged)
        .sum();
    assert_eq!(live_report, restored_report);
    assert!(Live::tokens(&restored, live.now).len() < 400);
    assert_eq!(
        Live::tokens(&restored, live.now),
        Live::tokens(&live.shards, live.now)
    );
}

#[test]
fn an_image_of_an_unknown_format_version_is_a_clear_error() {
    use tokend::snapshot::image::ImageError;
    let bytes = bytes::Bytes::from(image_of(&varied_live(1)).encode().unwrap());
    let err = SnapshotImage::decode(&bytes, FORMAT_VERSION + 1).unwrap_err();
    assert!(
        matches!(err, ImageError::Version { found } if found == FORMAT_VERSION + 1),
        "{err}"
    );
    let err =
        SnapshotImage::decode(&bytes::Bytes::from_static(b"junk"), FORMAT_VERSION).unwrap_err();
    assert!(matches!(err, ImageError::Malformed(_)), "{err}");
}

#[test]
fn damaged_sections_are_errors_not_panics() {
    let live = varied_live(2);
    let bytes = image_of(&live).encode().unwrap();
    let mut errors = 0;
    // Truncations and byte changes all over the payload: each either still
    // decodes (a changed value) or is refused with an error.
    for at in (0..bytes.len()).step_by(97) {
        for damaged in [bytes[..at].to_vec(), {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            b
        }] {
            let result = SnapshotImage::decode(&bytes::Bytes::from(damaged), FORMAT_VERSION)
                .map_err(|e| e.to_string())
                .and_then(|image| {
                    Restorer::new(
                        Some((image, "damaged.mpk".into())),
                        2,
                        RETENTION_MS,
                        Arc::new(Keyring::off()),
                    )
                    .map_err(|e| e.to_string())
                });
            if let Err(e) = result {
                assert!(!e.is_empty());
                errors += 1;
            }
        }
    }
    assert!(errors > 0);
}
