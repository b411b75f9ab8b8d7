//! Engine micro-benchmarks: shard `apply` (create, redeem) in process,
//! token → shard routing, the JSON of the token routes (request bodies
//! decoded as the handlers do, a batch body checked, a token rendered as
//! its response body),
//! snapshot image encode and decode, and restore (image → running shard
//! states) in tokens per second.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use tokend::api::plan::TokenBody;
use tokend::api::render::TokenJson;
use tokend::api::strict_json;
use tokend::api::tokens::RedeemBody;
use tokend::api::validate::{check, decode, schemas};
use tokend::catalog::Catalog;
use tokend::command::{CatalogCommand, Create, Expiry, NewToken, Redeem};
use tokend::ids::{AccountId, CollectionId, TokenId};
use tokend::keyring::Keyring;
use tokend::log::LogRecord;
use tokend::model::collection::CollectionRecord;
use tokend::model::{Account, Liveness, Metadata, TokenType};
use tokend::shard::{ShardCapture, ShardState};
use tokend::snapshot::{EngineCapture, SnapshotImage, FORMAT_VERSION};
use tokend::store::restore::Restorer;

/// Tokens in the snapshot and restore benchmarks.
const IMAGE_TOKENS: usize = 200_000;
/// Shards of the engine being imaged.
const SHARDS: usize = 2;
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;
const NOW_MS: i64 = 1_768_672_800_000;

struct Fixture {
    catalog: Arc<Catalog>,
    account: AccountId,
    collection: CollectionId,
}

fn fixture() -> Fixture {
    let catalog = Arc::new(Catalog::new());
    let account = AccountId::random();
    let collection = CollectionId::random();
    let commands = [
        CatalogCommand::CreateAccount(Account {
            id: account,
            name: "bench".into(),
            liveness: Liveness::Main,
            created_at_ms: NOW_MS,
        }),
        CatalogCommand::CreateCollection(Box::new(CollectionRecord {
            id: collection,
            account_id: account,
            name: "bench".into(),
            description: None,
            issuer: Some("Issuer".into()),
            issuer_img: None,
            img: None,
            issuer_website: None,
            value: vec![],
            merchants: vec![],
            token_expires_after_secs: Some(3600),
            data_schema: None,
            hold_ttl_secs_max: None,
            void_window_secs: None,
            liveness: Liveness::Main,
            created_at_ms: NOW_MS,
        })),
    ];
    for command in commands {
        catalog.execute(command, |_| ()).expect("catalog accepts");
    }
    Fixture {
        catalog,
        account,
        collection,
    }
}

/// A token as the memory target describes it: three metadata pairs of
/// 8-character keys and values, no data.
fn new_token(f: &Fixture) -> NewToken {
    NewToken {
        id: TokenId::random(),
        account_id: f.account,
        collection_id: f.collection,
        created_by: "issuer".into(),
        kind: TokenType::Token,
        description: None,
        data: None,
        encryption: None,
        metadata: Metadata::from_pairs([
            ("order-id", "A1234567"),
            ("store-no", "00000042"),
            ("campaign", "summer26"),
        ]),
        active_from_ms: None,
        expiry: Expiry::CollectionDefault,
        children: vec![],
        fingerprint: None,
        sealed_data: None,
        sealed_encryption: None,
    }
}

fn filled_shards(f: &Fixture, tokens: usize) -> Vec<ShardState> {
    let mut shards: Vec<ShardState> = (0..SHARDS).map(|_| ShardState::new(RETENTION_MS)).collect();
    for _ in 0..tokens {
        let token = new_token(f);
        let shard = token.id.shard(SHARDS);
        let command = Create {
            tokens: vec![token],
        };
        shards[shard]
            .execute(&command, NOW_MS, &f.catalog)
            .expect("create applies");
    }
    shards
}

fn image(f: &Fixture, shards: &[ShardState]) -> SnapshotImage {
    EngineCapture::at_rest(&f.catalog, shards, 2, NOW_MS).into_image(&Keyring::off())
}

fn shard_apply(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("shard_apply");
    group.throughput(Throughput::Elements(1));
    let mut state = ShardState::new(RETENTION_MS);
    group.bench_function("create", |b| {
        b.iter_batched(
            || Create {
                tokens: vec![new_token(&f)],
            },
            |command| state.execute(&command, NOW_MS, &f.catalog),
            BatchSize::SmallInput,
        )
    });
    // Setup creates, the measured routine redeems: both need the state.
    let state = std::cell::RefCell::new(ShardState::new(RETENTION_MS));
    group.bench_function("redeem", |b| {
        b.iter_batched(
            || {
                let token = new_token(&f);
                let id = token.id;
                let create = Create {
                    tokens: vec![token],
                };
                state
                    .borrow_mut()
                    .execute(&create, NOW_MS, &f.catalog)
                    .expect("create applies");
                Redeem {
                    account_id: f.account,
                    id,
                    merchant_id: Some("m-1".into()),
                    idempotency_key: None,
                    redeemed_by: "pos".into(),
                }
            },
            |command| {
                black_box(state.borrow_mut().execute(&command, NOW_MS + 1, &f.catalog)).is_ok()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let ids: Vec<TokenId> = (0..1024).map(|_| TokenId::random()).collect();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("token_to_shard", |b| {
        b.iter(|| ids.iter().map(|id| id.shard(black_box(8))).sum::<usize>())
    });
    group.finish();
}

fn json(c: &mut Criterion) {
    let schemas = schemas();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(1));
    let redeem = br#"{"merchantId": "m-1", "idempotencyKey": "pos-42-txn-9"}"#;
    // As the handlers parse: one pass that also refuses a key given twice.
    let parse = |bytes: &[u8]| strict_json::parse(bytes).expect("the body is JSON");
    assert!(decode::<RedeemBody>(&schemas.redeem, parse(redeem)).is_ok());
    group.bench_function("decode_redeem_body", |b| {
        // Parse, schema check and typed decode, as the redeem handler does.
        b.iter(|| {
            black_box(decode::<RedeemBody>(&schemas.redeem, parse(black_box(redeem))).is_ok())
        })
    });
    // The body of the token `new_token` makes.
    let create = br#"{"collectionId": "4d9f5c3e-1b2a-4c8d-9e7f-0a1b2c3d4e5f",
        "metadata": {"order-id": "A1234567", "store-no": "00000042", "campaign": "summer26"}}"#;
    // Parse, schema check on the `Value`, typed decode from the text (which
    // keeps `data` as sent), as the create handler does.
    let decode_create = |bytes: &[u8]| {
        check(&schemas.token, &parse(bytes)).is_ok()
            && serde_json::from_slice::<TokenBody>(bytes).is_ok()
    };
    assert!(decode_create(create));
    group.bench_function("decode_create_body", |b| {
        b.iter(|| black_box(decode_create(black_box(create))))
    });
    // A batch of 2 000 such tokens: checked without building anything, as
    // the batch route checks its body, and parsed into a `Value` by this
    // service's reader and by serde_json's (which lets a key repeat).
    let create_text = std::str::from_utf8(create).expect("the body is text");
    let batch = format!("{{\"tokens\": [{}]}}", vec![create_text; 2_000].join(","));
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("check_batch_body", |b| {
        b.iter(|| black_box(strict_json::check(black_box(batch.as_bytes())).is_ok()))
    });
    group.bench_function("parse_batch_body_strict", |b| {
        b.iter(|| black_box(strict_json::parse(black_box(batch.as_bytes())).is_ok()))
    });
    group.bench_function("parse_batch_body_serde", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(batch.as_bytes())).is_ok(),
            )
        })
    });
    group.throughput(Throughput::Elements(1));
    let f = fixture();
    let mut state = ShardState::new(RETENTION_MS);
    let command = Create {
        tokens: vec![new_token(&f)],
    };
    let created = state
        .execute(&command, NOW_MS, &f.catalog)
        .expect("create applies");
    let token = Arc::new(created[0].token().clone());
    // The log record of a redeem, as the shard appends it: this build's
    // encoding (version byte, fields by name) beside the positional one of
    // unversioned records, to show what naming the fields costs.
    let record = LogRecord::Shard {
        now_ms: NOW_MS,
        command: Redeem {
            account_id: f.account,
            id: TokenId::random(),
            merchant_id: Some("m-1".into()),
            idempotency_key: Some("pos-42-txn-9".into()),
            redeemed_by: "pos".into(),
        }
        .into(),
    };
    let mut buf = Vec::with_capacity(256);
    eprintln!(
        "redeem log record: {} bytes by name, {} by position",
        record.encode(&Keyring::off()).len(),
        rmp_serde::to_vec(&record).expect("encodes").len()
    );
    group.bench_function("encode_redeem_record", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&record).encode_into(&mut buf, &Keyring::off());
            black_box(buf.len())
        })
    });
    group.bench_function("encode_redeem_record_positional", |b| {
        b.iter(|| {
            buf.clear();
            rmp_serde::encode::write(&mut buf, black_box(&record)).expect("encodes");
            black_box(buf.len())
        })
    });
    group.bench_function("render_token", |b| {
        b.iter(|| {
            let body = TokenJson {
                token: &token,
                now: NOW_MS + 1,
                children: None,
            };
            black_box(serde_json::to_vec(&body).expect("renders"))
        })
    });
    group.finish();
}

fn snapshot_and_restore(c: &mut Criterion) {
    let f = fixture();
    let shards = filled_shards(&f, IMAGE_TOKENS);
    let encoded = bytes::Bytes::from(image(&f, &shards).encode().expect("encodes"));
    eprintln!(
        "snapshot image: {IMAGE_TOKENS} tokens, {} bytes ({} bytes/token)",
        encoded.len(),
        encoded.len() / IMAGE_TOKENS
    );
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(IMAGE_TOKENS as u64));
    // What a snapshot costs the shard itself: the rest runs on another thread.
    group.bench_function("capture_in_shard_turn", |b| {
        b.iter(|| {
            shards
                .iter()
                .map(|s| ShardCapture::of(s, 2).len())
                .sum::<usize>()
        })
    });
    group.bench_function("capture_and_encode", |b| {
        b.iter(|| image(&f, &shards).encode().expect("encodes"))
    });
    // Only the header: token sections decode inside restore, in parallel.
    group.bench_function("decode", |b| {
        b.iter(|| SnapshotImage::decode(&encoded, FORMAT_VERSION).expect("decodes"))
    });
    // What start-up does with the payload: header, sections, indexes, timers.
    group.bench_function("restore_from_bytes", |b| {
        b.iter(|| {
            let image = SnapshotImage::decode(&encoded, FORMAT_VERSION).expect("decodes");
            Restorer::new(
                Some((image, "bench".into())),
                SHARDS,
                RETENTION_MS,
                Arc::new(Keyring::off()),
            )
            .expect("restores")
            .finish()
        })
    });
    group.bench_function("restore_decoded_image", |b| {
        b.iter_batched(
            || SnapshotImage::decode(&encoded, FORMAT_VERSION).expect("decodes"),
            |image| {
                Restorer::new(
                    Some((image, "bench".into())),
                    SHARDS,
                    RETENTION_MS,
                    Arc::new(Keyring::off()),
                )
                .expect("restores")
                .finish()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, shard_apply, routing, json, snapshot_and_restore);
criterion_main!(benches);
