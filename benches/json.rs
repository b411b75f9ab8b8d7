//! JSON micro-benchmarks of the token routes: decoding a request body the
//! way the handlers do (parse, schema check, typed decode) and rendering a
//! token as its response body.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jsonschema::Validator;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::hint::black_box;
use tokend::api::tokens::{RedeemBody, TokenBody};
use tokend::api::validate::{schemas, violations};

/// Parse, schema check and typed decode: what a handler does with a body.
fn decode<T: DeserializeOwned>(validator: &Validator, bytes: &[u8]) -> T {
    let value: Value = serde_json::from_slice(bytes).expect("the body is JSON");
    assert!(
        violations(validator, &value, "$").is_empty(),
        "the body is valid"
    );
    serde_json::from_value(value).expect("the body decodes")
}

fn bodies(c: &mut Criterion) {
    let schemas = schemas();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(1));

    let redeem = br#"{"merchantId": "m-1", "idempotencyKey": "pos-42-txn-9"}"#;
    group.bench_function("decode_redeem_body", |b| {
        b.iter(|| black_box(decode::<RedeemBody>(&schemas.redeem, black_box(redeem))))
    });

    // A token as the restore profile creates them: three metadata pairs of
    // 8-character keys and values, no data.
    let create = br#"{"collectionId": "4d9f5c3e-1b2a-4c8d-9e7f-0a1b2c3d4e5f",
        "metadata": {"order001": "A-17-xyz", "customer": "c-000042", "channel1": "web-shop"},
        "expiresIn": 3600}"#;
    group.bench_function("decode_create_body", |b| {
        b.iter(|| black_box(decode::<TokenBody>(&schemas.token, black_box(create))))
    });
    group.finish();
}

criterion_group!(benches, bodies);
criterion_main!(benches);
