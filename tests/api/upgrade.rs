//! Data dirs written by earlier builds restore in this one.
//!
//! Each folder `tests/fixtures/datadir-*` is a data dir as a build left it
//! when it was killed: a snapshot taken midway, the log after it, and a torn
//! record at the end of the last segment. Beside the files, `expected.json`
//! records what that build answered before it was killed: every token, every
//! collection, the key lists, the keys themselves and the idempotent requests
//! to repeat. The test restores a copy of each folder and checks every answer
//! again, repeats the idempotent requests (they must be replays), makes new
//! changes, and restarts once more on the formats this build writes.
//!
//! Each folder `tests/fixtures/sealed-datadir-*` is the same with token
//! `data` and `encryption` sealed under [`FIXTURE_DATA_KEY`] (snapshot and
//! log alike): it restores with that key, and refuses to start, naming the
//! key id, without it.
//!
//! `write_fixture` (ignored by default) writes such a folder with this build
//! (sealed when `TOKEND_FIXTURE_DATA_KEY` holds a keyring):
//!
//! ```sh
//! TOKEND_FIXTURE_OUT=tests/fixtures/datadir-NEW cargo test --test api -- --ignored write_fixture
//! ```

use crate::helpers::{id_of, Resp, TestApp, ADMIN, SECOND};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokend::clock::Clock;
use tokend::keyring::Keyring;
use tokend::wal::WalOptions;

/// Shards of the app that writes a fixture; the restoring app uses another
/// count, so tokens are routed anew on the way back.
const WRITER_SHARDS: usize = 2;
/// Shards of the app that restores a fixture.
const READER_SHARDS: usize = 3;

/// The keyring the sealed fixtures were written under (a test key, public
/// here: it protects nothing).
pub const FIXTURE_DATA_KEY: &str = "fixture-key:Zml4dHVyZSBrZXk6IG5vdCBhIHNlY3JldCEhISEhISE=";

/// WAL options opening values sealed under `keyring` (and sealing new ones).
fn sealed_with(keyring: &str) -> WalOptions {
    WalOptions {
        keyring: Arc::new(Keyring::parse(keyring).expect("a valid test keyring")),
        ..WalOptions::default()
    }
}

/// Where the committed fixtures are.
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every committed plain data dir fixture.
fn fixtures() -> Vec<PathBuf> {
    fixtures_named("datadir-")
}

/// Every committed data dir fixture whose folder name starts with `prefix`.
fn fixtures_named(prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {prefix}* fixtures in tests/fixtures");
    found
}

/// Copies the files of `from` into a new temporary data dir.
fn copy_to_temp(from: &Path) -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("a temporary dir");
    for entry in std::fs::read_dir(from).expect("the fixture reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.path().join(name)).expect("the file copies");
        }
    }
    Arc::new(dir)
}

/// Asserts that `actual` holds everything `expected` holds: the same
/// scalars, the same array lengths, and every field of an expected object
/// (a later build may add fields to what it renders).
fn assert_includes(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, want) in expected {
                let got = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is missing"));
                assert_includes(got, want, &format!("{at}.{key}"));
            }
        }
        (Value::Array(actual), Value::Array(expected)) => {
            assert_eq!(actual.len(), expected.len(), "{at}: length");
            for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
                assert_includes(got, want, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
    }
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

#[actix_web::test]
async fn every_fixture_data_dir_restores_with_everything_it_acknowledged() {
    for fixture in fixtures() {
        check_fixture(&fixture, WalOptions::default()).await;
    }
}

#[actix_web::test]
async fn every_sealed_fixture_restores_under_its_key_and_refuses_to_start_without_it() {
    for fixture in fixtures_named("sealed-datadir-") {
        // Unset, a key of another id, another key under the same id.
        for keyring in [
            None,
            Some("other-key:Zml4dHVyZSBrZXk6IG5vdCBhIHNlY3JldCEhISEhISE="),
            Some("fixture-key:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ] {
            let dir = copy_to_temp(&fixture);
            let before = contents(dir.path());
            let mut builder = TestApp::builder().data_dir(Arc::clone(&dir));
            if let Some(keyring) = keyring {
                builder = builder.wal(sealed_with(keyring));
            }
            let message = match builder.try_spawn().await {
                Ok(_) => panic!("{} started with keyring {keyring:?}", fixture.display()),
                Err(e) => e.to_string(),
            };
            assert!(message.contains("\"fixture-key\""), "{message}");
            assert_eq!(contents(dir.path()), before, "the data dir changed");
        }
        check_fixture(&fixture, sealed_with(FIXTURE_DATA_KEY)).await;
    }
}

async fn check_fixture(fixture: &Path, wal: WalOptions) {
    let name = fixture.display().to_string();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture.join("expected.json")).expect("expected.json reads"),
    )
    .expect("expected.json is JSON");
    let dir = copy_to_temp(fixture);
    let app = TestApp::builder()
        .shards(READER_SHARDS)
        .data_dir(Arc::clone(&dir))
        .wal(wal.clone())
        .spawn()
        .await;
    app.clock
        .set_ms(expected["clockMs"].as_i64().expect("clockMs"));

    // The torn record was cut off, and only it: its bytes are zeroed (the
    // clean end of a segment), everything before it is as the fixture has it.
    let torn = &expected["tornTail"];
    let torn_name = text(torn, "file");
    let offset = torn["offset"].as_u64().expect("offset") as usize;
    let cut = std::fs::read(dir.path().join(torn_name)).expect("the torn segment");
    let written = std::fs::read(fixture.join(torn_name)).expect("the fixture's segment");
    assert_eq!(
        cut.len(),
        written.len(),
        "{name}: the segment keeps its length"
    );
    assert_eq!(
        cut[..offset],
        written[..offset],
        "{name}: records before the tail"
    );
    assert!(
        written[offset..].iter().any(|b| *b != 0),
        "{name}: the fixture has a torn record at {offset}"
    );
    assert!(
        cut[offset..].iter().all(|b| *b == 0),
        "{name}: the torn tail is cut at its first byte"
    );

    check_state(&app, &expected, &name).await;
    check_keys(&app, &expected, &name).await;
    check_replays(&app, &expected, &name).await;

    // New changes on the restored state, then a graceful restart: the final
    // snapshot is written in this build's formats and reads back.
    let keys = &expected["keys"];
    let issuer = text(keys, "issuer");
    let active = text(&expected, "activeTokenId");
    let resp = app.redeem(issuer, active, &json!({})).await;
    resp.assert_status(200);
    let redeemed = resp.body;
    let plain = text(&expected, "plainCollectionId");
    let created = app
        .create_token(issuer, &json!({"collectionId": plain}))
        .await;
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean shutdown");
    // The final snapshot is in this build's format, and so is the segment
    // the log goes on in.
    let snapshot = std::fs::read(newest(dir.path(), "snapshot-")).expect("a snapshot");
    assert_eq!(
        snapshot[8..12],
        tokend::snapshot::FORMAT_VERSION.to_le_bytes(),
        "{name}"
    );
    let app = TestApp::builder()
        .shards(WRITER_SHARDS)
        .data_dir(dir)
        .wal(wal)
        .spawn()
        .await;
    app.clock
        .set_ms(expected["clockMs"].as_i64().expect("clockMs"));
    check_state_except(&app, &expected, &name, &[active]).await;
    assert_eq!(app.token(issuer, active).await, redeemed, "{name}");
    assert_eq!(app.token(issuer, &id_of(&created)).await, created, "{name}");
    // Once a second snapshot is kept, the usual cut deletes every segment
    // the earlier build wrote: what is left is all this build's format.
    app.create_token(issuer, &json!({"collectionId": plain}))
        .await;
    let resp = app
        .call(
            reqwest::Method::POST,
            "/api/admin/snapshot",
            Some(ADMIN),
            None,
        )
        .await;
    resp.assert_status(200);
    let dir = Arc::clone(&app.data_dir);
    let segments: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("the data dir reads")
        .map(|e| e.expect("an entry").path())
        .filter(|p| text_of(p).starts_with("wal-"))
        .collect();
    assert!(!segments.is_empty(), "{name}");
    for segment in segments {
        let data = std::fs::read(&segment).expect("a segment");
        assert!(
            data.starts_with(&tokend::wal::segment::MAGIC),
            "{name}: {} is left in an earlier format",
            segment.display()
        );
    }
}

/// Every token, collection and key list reads back as recorded.
async fn check_state(app: &TestApp, expected: &Value, name: &str) {
    check_state_except(app, expected, name, &[]).await;
}

async fn check_state_except(app: &TestApp, expected: &Value, name: &str, changed: &[&str]) {
    let issuer = text(&expected["keys"], "issuer");
    let tokens = expected["tokens"].as_object().expect("tokens");
    assert!(tokens.len() >= 40, "{name}: the fixture holds its tokens");
    for (id, token) in tokens {
        if changed.contains(&id.as_str()) {
            continue;
        }
        let resp = app.get_token(issuer, id).await;
        resp.assert_status(200);
        assert_includes(&resp.body, token, &format!("{name}: token {id}"));
    }
    for (id, collection) in expected["collections"].as_object().expect("collections") {
        let resp = app.get(&format!("/api/collections/{id}"), issuer).await;
        resp.assert_status(200);
        assert_includes(&resp.body, collection, &format!("{name}: collection {id}"));
    }
    for (account, keys) in expected["apiKeys"].as_object().expect("apiKeys") {
        let resp = app
            .get(&format!("/api/accounts/{account}/api-keys"), ADMIN)
            .await;
        resp.assert_status(200);
        assert_includes(&resp.body, keys, &format!("{name}: keys of {account}"));
    }
    // The other tenant's token is not found with this tenant's key, and is
    // with its own.
    let other = &expected["otherTenant"];
    app.get_token(issuer, text(other, "tokenId"))
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    let resp = app
        .get_token(text(other, "key"), text(other, "tokenId"))
        .await;
    resp.assert_status(200);
    assert_includes(
        &resp.body,
        &other["token"],
        &format!("{name}: other tenant"),
    );
}

/// Live keys work within their scopes; a revoked key does not.
async fn check_keys(app: &TestApp, expected: &Value, name: &str) {
    let keys = &expected["keys"];
    let active = text(expected, "activeTokenId");
    let reader = text(keys, "reader");
    app.get_token(reader, active).await.assert_status(200);
    app.redeem(reader, active, &json!({}))
        .await
        .assert_error(403, "PERMISSION_DENIED");
    for revoked in ["revoked", "revokedLate"] {
        let resp = app.get_token(text(keys, revoked), active).await;
        assert_eq!(resp.status, 401, "{name}: the {revoked} key is refused");
    }
    app.get_token(text(keys, "late"), active)
        .await
        .assert_status(200);
}

/// Each recorded idempotent request, sent again, is answered as a replay of
/// the recorded answer; the same key with another body is a conflict.
async fn check_replays(app: &TestApp, expected: &Value, name: &str) {
    let issuer = text(&expected["keys"], "issuer");
    for replay in expected["replays"].as_array().expect("replays") {
        let path = text(replay, "path");
        let resp = app.post(path, issuer, &replay["request"]).await;
        resp.assert_status(200);
        assert_eq!(
            resp.header("idempotent-replayed"),
            Some("true"),
            "{name}: {path} is a replay"
        );
        assert_includes(&resp.body, &replay["response"], &format!("{name}: {path}"));
        let mut other = replay["request"].clone();
        if path.ends_with("/redeem") {
            other["merchantId"] = json!("m-2");
            app.post(path, issuer, &other)
                .await
                .assert_error(409, "TOKEN_ALREADY_REDEEMED");
        } else if path.ends_with("/holds") {
            other["merchantId"] = json!("m-9");
            app.post(path, issuer, &other)
                .await
                .assert_error(409, "TOKEN_HELD");
        } else if let Some(hold) = path.strip_suffix("/capture") {
            app.post(&format!("{hold}/release"), issuer, &json!({}))
                .await
                .assert_error(409, "HOLD_NOT_ACTIVE");
        } else if let Some(hold) = path.strip_suffix("/release") {
            app.post(&format!("{hold}/capture"), issuer, &json!({}))
                .await
                .assert_error(409, "HOLD_NOT_ACTIVE");
        } else if path.ends_with("/redemption/void") {
            // Another key is another void, not a conflict: nothing to try.
        } else {
            other["description"] = json!("another body");
            app.post(path, issuer, &other)
                .await
                .assert_error(409, "TOKEN_ALREADY_CREATED");
        }
    }
}

/// The newest fixture: the one this build's formats wrote.
fn newest_fixture() -> PathBuf {
    fixtures().pop().expect("a fixture")
}

/// Every file of `dir` but the lock with its bytes, to show that nothing
/// changed.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "LOCK"))
        .map(|p| (text_of(&p), std::fs::read(&p).expect("the file reads")))
        .collect()
}

/// The newest file of `dir` whose name starts with `prefix`.
fn newest(dir: &Path, prefix: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|e| e.expect("an entry").path())
        .filter(|p| text_of(p).starts_with(prefix))
        .collect();
    found.sort();
    found.pop().expect("a file")
}

fn text_of(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Sets the little-endian u32 at `at` of a checksummed header to `version`,
/// and the header's CRC32 (over bytes `..crc_at`, stored at `crc_at`) anew,
/// as a newer build would have written it.
fn rewrite_version(file: &Path, at: usize, version: u32, crc_at: usize) {
    let mut data = std::fs::read(file).expect("the file reads");
    data[at..at + 4].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&data[..crc_at]);
    data[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(file, data).expect("the file writes");
}

/// Gives the last whole record of `segment` the record format `version`
/// (its first payload byte), with a frame CRC that checks out; returns its
/// LSN.
fn rewrite_last_record_version(segment: &Path, version: u8) -> u64 {
    use tokend::wal::frame;
    let data = std::fs::read(segment).expect("the segment reads");
    let (at, lsn) = *frames(&data).last().expect("a record");
    let old = frame::decode(&data[at..], usize::MAX).expect("a frame");
    let end = at + old.encoded_len();
    let mut payload = old.payload.to_vec();
    payload[0] = version;
    let mut rewritten = data[..at].to_vec();
    frame::encode_into(
        &mut rewritten,
        lsn,
        &payload,
        &frame::PayloadCrc::new(&payload),
    );
    rewritten.extend_from_slice(&data[end..]);
    std::fs::write(segment, rewritten).expect("the segment writes");
    lsn
}

/// A data dir in which a newer build wrote a file of a newer format does not
/// start: the error names the file and both versions, and nothing on disk
/// changes (the torn tail is not cut, nothing is set aside).
#[actix_web::test]
async fn a_data_dir_with_a_newer_format_does_not_start_and_is_left_as_it_was() {
    use tokend::log::record::SEALED_VERSION as RECORD;
    use tokend::snapshot::FORMAT_VERSION as SNAPSHOT;
    use tokend::wal::segment::FORMAT_VERSION as SEGMENT;
    let newer_snapshot = |dir: &Path| -> Vec<String> {
        let file = newest(dir, "snapshot-");
        rewrite_version(&file, 8, SNAPSHOT + 1, 32);
        vec![
            text_of(&file),
            format!("format version {}", SNAPSHOT + 1),
            format!("to {SNAPSHOT}"),
        ]
    };
    let newer_segment = |dir: &Path| -> Vec<String> {
        let file = newest(dir, "wal-");
        rewrite_version(&file, 8, SEGMENT + 1, 20);
        vec![
            text_of(&file),
            format!("format version {}", SEGMENT + 1),
            format!("up to {SEGMENT}"),
        ]
    };
    let newer_record = |dir: &Path| -> Vec<String> {
        let file = newest(dir, "wal-");
        let lsn = rewrite_last_record_version(&file, RECORD + 1);
        vec![
            text_of(&file),
            format!("LSN {lsn}"),
            format!("format version {}", RECORD + 1),
            format!("(version {RECORD})"),
        ]
    };
    /// Makes a data dir newer; returns what the refusal must say.
    type Edit<'a> = &'a dyn Fn(&Path) -> Vec<String>;
    let cases: [(&str, Edit<'_>); 3] = [
        ("snapshot", &newer_snapshot),
        ("WAL segment", &newer_segment),
        ("log record", &newer_record),
    ];
    for (what, edit) in cases {
        let dir = copy_to_temp(&newest_fixture());
        let expected = edit(dir.path());
        let before = contents(dir.path());
        let refused = TestApp::builder()
            .shards(READER_SHARDS)
            .data_dir(Arc::clone(&dir))
            .try_spawn()
            .await;
        let message = match refused {
            Ok(_) => panic!("a data dir with a newer {what} started"),
            Err(e) => e.to_string(),
        };
        for part in expected {
            assert!(message.contains(&part), "{what}: {part:?} not in {message}");
        }
        assert!(
            contents(dir.path()) == before,
            "{what}: the data dir changed"
        );
    }
}

/// The idempotent requests the writer made, to repeat at the end.
#[derive(Default)]
struct Record {
    /// `(path, request)` of each.
    idempotent: Vec<(String, Value)>,
}

impl Record {
    /// Keeps an idempotent request.
    fn replay(&mut self, path: &str, request: &Value) {
        self.idempotent.push((path.to_owned(), request.clone()));
    }

    /// Sends each request again: each must be a replay. The answers, not
    /// the first ones, are what a restored build must give (a create replay
    /// answers the token as it is now).
    async fn replays(&self, app: &TestApp, key: &str) -> Vec<Value> {
        let mut replays = Vec::new();
        for (path, request) in &self.idempotent {
            let resp = post_ok(app, path, key, request, 200).await;
            assert_eq!(resp.header("idempotent-replayed"), Some("true"));
            replays.push(json!({"path": path, "request": request, "response": resp.body}));
        }
        replays
    }
}

async fn post_ok(app: &TestApp, path: &str, key: &str, body: &Value, status: u16) -> Resp {
    let resp = app.post(path, key, body).await;
    resp.assert_status(status);
    resp
}

/// Writes a fixture data dir with this build into `TOKEND_FIXTURE_OUT`.
#[actix_web::test]
#[ignore = "writes a fixture; run by hand when the on-disk formats change"]
async fn write_fixture() {
    let out = PathBuf::from(
        std::env::var("TOKEND_FIXTURE_OUT").expect("TOKEND_FIXTURE_OUT names the folder to write"),
    );
    assert!(
        !out.exists(),
        "{} exists: fixtures are written once, never overwritten",
        out.display()
    );
    let wal = match std::env::var("TOKEND_FIXTURE_DATA_KEY") {
        Ok(keyring) => sealed_with(&keyring),
        Err(_) => WalOptions::default(),
    };
    let app = TestApp::builder()
        .shards(WRITER_SHARDS)
        .wal(wal)
        .spawn()
        .await;
    let mut record = Record::default();

    // Two tenants, keys of every kind, collections with and without rules.
    let account = app.create_account("main").await;
    let account_id = id_of(&account);
    let key = |v: Value| text(&v, "key").to_owned();
    let issuer = key(app.create_key_named(&account_id, "issuer", &["*"]).await);
    let reader = key(app
        .create_key_named(&account_id, "reader", &["token:read"])
        .await);
    let revoked_key = app.create_key_named(&account_id, "revoked", &["*"]).await;
    app.delete(
        &format!(
            "/api/accounts/{account_id}/api-keys/{}",
            id_of(&revoked_key)
        ),
        ADMIN,
    )
    .await
    .assert_status(204);
    let other = app.tenant_of("test").await;
    let other_token = app.create_token_in(&other.key, &other.collection_id).await;

    let branded = app
        .create_collection(
            &issuer,
            &json!({
                "name": "Coffee", "description": "A coffee a day",
                "issuer": "Centraperk", "issuerImg": "https://example.com/i.png",
                "img": "https://example.com/t.png", "issuerWebsite": "https://example.com",
                "value": [{"currency": "NZD", "amount": "5.00"}],
                "merchants": ["m-1", "m-2"], "tokenExpiresAfter": 30 * 24 * 3600,
                "dataSchema": {"type": "object", "required": ["n"]},
            }),
        )
        .await;
    let branded = id_of(&branded);
    let plain = id_of(
        &app.create_collection(&issuer, &json!({"name": "plain"}))
            .await,
    );

    // Before the snapshot: tokens in every shape and state.
    let full_body = json!({
        "collectionId": branded, "idempotencyKey": "create-full", "type": "card",
        "description": "a card", "data": {"n": 1, "pan": "4111111111111111"},
        "metadata": {"order": "A-17", "till": "3", "shift": "am"},
        "encryption": {"cek": {"key": "k1", "alg": "AES"}, "kek": {"key": "k2", "alg": "RSA"}},
        "activeFrom": "2026-01-17T17:00:00.000Z", "expiresIn": 7 * 24 * 3600,
    });
    let resp = post_ok(&app, "/api/tokens", &issuer, &full_body, 201).await;
    record.replay("/api/tokens", &full_body);
    let full = id_of(&resp.body);
    let long = "v".repeat(80);
    let metadata: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("key-{i:02}"), json!(long)))
        .collect();
    app.create_token(
        &issuer,
        &json!({"collectionId": plain, "metadata": metadata}),
    )
    .await;
    let parent_body = json!({
        "collectionId": plain, "idempotencyKey": "create-parent",
        "children": [{"description": "first child"}, {"metadata": {"seat": "12A"}}],
    });
    post_ok(&app, "/api/tokens", &issuer, &parent_body, 201).await;
    record.replay("/api/tokens", &parent_body);
    app.create_token(
        &issuer,
        &json!({"collectionId": plain, "activeFrom": "2026-02-17T18:00:00.000Z"}),
    )
    .await;
    let soon = app
        .create_token(&issuer, &json!({"collectionId": plain, "expiresIn": 60}))
        .await;
    let batch = app
        .create_batch(
            &issuer,
            (0..24)
                .map(|i| json!({"collectionId": plain, "metadata": {"i": format!("{i}")}}))
                .collect(),
        )
        .await;
    let batch: Vec<String> = batch.iter().map(id_of).collect();
    let redeem_full = json!({"merchantId": "m-1", "idempotencyKey": "pos-1"});
    let path = format!("/api/tokens/{full}/redeem");
    post_ok(&app, &path, &issuer, &redeem_full, 200).await;
    record.replay(&path, &redeem_full);
    post_ok(
        &app,
        &format!("/api/tokens/{}/redeem", batch[0]),
        &issuer,
        &json!({}),
        200,
    )
    .await;
    app.delete_token(&issuer, &batch[1])
        .await
        .assert_status(204);
    // The redemption lifecycle (snapshot format with held tokens and
    // lifecycle fields): a collection with its own hold and void limits, a
    // hold left live, a hold captured, a redemption voided and redeemed
    // again.
    let rules = id_of(
        &app.create_collection(
            &issuer,
            &json!({"name": "rules", "holdTtlSecsMax": 3600, "voidWindowSecs": 86400}),
        )
        .await,
    );
    let life: Vec<String> = app
        .create_batch(
            &issuer,
            (0..6)
                .map(|_| json!({"collectionId": rules, "data": {"n": 3}}))
                .collect(),
        )
        .await
        .iter()
        .map(id_of)
        .collect();
    let lifecycle = |record: &mut Record, path: String, body: Value| {
        record.replay(&path, &body);
        (path, body)
    };
    let (path, body) = lifecycle(
        &mut record,
        format!("/api/tokens/{}/holds", life[0]),
        json!({"merchantId": "m-1", "idempotencyKey": "hold-live", "ttlSecs": 1800}),
    );
    post_ok(&app, &path, &issuer, &body, 201).await;
    let held = post_ok(
        &app,
        &format!("/api/tokens/{}/holds", life[1]),
        &issuer,
        &json!({"idempotencyKey": "hold-captured"}),
        201,
    )
    .await;
    let (path, body) = lifecycle(
        &mut record,
        format!(
            "/api/tokens/{}/holds/{}/capture",
            life[1],
            text(&held.body["hold"], "id")
        ),
        json!({}),
    );
    post_ok(&app, &path, &issuer, &body, 200).await;
    let spend = format!("/api/tokens/{}/redeem", life[2]);
    post_ok(
        &app,
        &spend,
        &issuer,
        &json!({"idempotencyKey": "pos-life"}),
        200,
    )
    .await;
    let (path, body) = lifecycle(
        &mut record,
        format!("/api/tokens/{}/redemption/void", life[2]),
        json!({"reason": "refund", "idempotencyKey": "void-life"}),
    );
    post_ok(&app, &path, &issuer, &body, 200).await;
    let (path, body) = lifecycle(
        &mut record,
        spend,
        json!({"idempotencyKey": "pos-life-again"}),
    );
    post_ok(&app, &path, &issuer, &body, 200).await;
    app.advance_ms(61 * SECOND);
    app.run_timers().await;
    assert_eq!(app.token(&issuer, &id_of(&soon)).await["status"], "expired");
    let resp = app
        .call(
            reqwest::Method::POST,
            "/api/admin/snapshot",
            Some(ADMIN),
            None,
        )
        .await;
    resp.assert_status(200);

    // After the snapshot: the log's tail.
    app.advance_ms(SECOND);
    let tail = app
        .create_batch(
            &issuer,
            (0..12)
                .map(|i| json!({"collectionId": plain, "description": format!("tail {i}")}))
                .collect(),
        )
        .await;
    let tail: Vec<String> = tail.iter().map(id_of).collect();
    let data_body = json!({
        "collectionId": branded, "idempotencyKey": "create-tail", "data": {"n": 2},
        "expiresAt": "2026-03-01T00:00:00.000Z",
    });
    post_ok(&app, "/api/tokens", &issuer, &data_body, 201).await;
    record.replay("/api/tokens", &data_body);
    for (id, key) in [(&batch[2], "pos-2"), (&tail[0], "pos-3")] {
        let body = json!({"idempotencyKey": key});
        let path = format!("/api/tokens/{id}/redeem");
        post_ok(&app, &path, &issuer, &body, 200).await;
        record.replay(&path, &body);
    }
    for id in [&tail[1], &batch[3]] {
        app.delete_token(&issuer, id).await.assert_status(204);
    }
    // The lifecycle in the log's tail: a hold left live, a hold released,
    // a redemption voided.
    let (path, body) = lifecycle(
        &mut record,
        format!("/api/tokens/{}/holds", life[3]),
        json!({"merchantId": "m-2", "idempotencyKey": "hold-tail"}),
    );
    post_ok(&app, &path, &issuer, &body, 201).await;
    let held = post_ok(
        &app,
        &format!("/api/tokens/{}/holds", life[4]),
        &issuer,
        &json!({}),
        201,
    )
    .await;
    let (path, body) = lifecycle(
        &mut record,
        format!(
            "/api/tokens/{}/holds/{}/release",
            life[4],
            text(&held.body["hold"], "id")
        ),
        json!({}),
    );
    post_ok(&app, &path, &issuer, &body, 200).await;
    post_ok(
        &app,
        &format!("/api/tokens/{}/redeem", life[5]),
        &issuer,
        &json!({"merchantId": "m-3"}),
        200,
    )
    .await;
    let (path, body) = lifecycle(
        &mut record,
        format!("/api/tokens/{}/redemption/void", life[5]),
        json!({"idempotencyKey": "void-tail"}),
    );
    post_ok(&app, &path, &issuer, &body, 200).await;
    let late = key(app.create_key_named(&account_id, "late", &["*"]).await);
    let revoked_late = app
        .create_key_named(&account_id, "revoked-late", &["*"])
        .await;
    app.delete(
        &format!(
            "/api/accounts/{account_id}/api-keys/{}",
            id_of(&revoked_late)
        ),
        ADMIN,
    )
    .await
    .assert_status(204);
    let late_collection = id_of(
        &app.create_collection(&late, &json!({"name": "late", "merchants": ["m-9"]}))
            .await,
    );
    app.create_token(&late, &json!({"collectionId": late_collection}))
        .await;
    // Expires without its timer running before the kill.
    app.create_token(&issuer, &json!({"collectionId": plain, "expiresIn": 30}))
        .await;
    app.advance_ms(31 * SECOND);

    // What this build answers now, for the restoring build to compare.
    let mut tokens = serde_json::Map::new();
    for id in app.all_token_ids(&issuer, "").await {
        tokens.insert(id.clone(), app.token(&issuer, &id).await);
    }
    let mut collections = serde_json::Map::new();
    for id in [&branded, &plain, &late_collection, &rules] {
        let resp = app.get(&format!("/api/collections/{id}"), &issuer).await;
        resp.assert_status(200);
        collections.insert(id.clone(), resp.body);
    }
    let mut api_keys = serde_json::Map::new();
    for account in [&account_id, &other.account_id] {
        let resp = app
            .get(&format!("/api/accounts/{account}/api-keys"), ADMIN)
            .await;
        resp.assert_status(200);
        api_keys.insert(account.clone(), resp.body);
    }
    let active = batch[4].clone();
    assert_eq!(tokens[&active]["status"], "active");

    // The kill: the files as they are now (every acknowledged change is
    // fsynced), then half of one more record at the end of the log.
    std::fs::create_dir_all(&out).expect("the output folder");
    let mut names: Vec<String> = std::fs::read_dir(app.data_dir.path())
        .expect("the data dir reads")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .filter(|n| n.starts_with("wal-") || n.starts_with("snapshot-"))
        .collect();
    names.sort();
    for name in &names {
        let mut data = std::fs::read(app.data_dir.path().join(name)).expect("a file");
        if name.starts_with("wal-") {
            // Without the zeros after the last frame, up to the pre-allocated
            // size: megabytes that read as the end of the records anyway.
            let end = frames(&data).last().map_or(frames_at(&data), |(at, _)| {
                at + tokend::wal::frame::decode(&data[*at..], usize::MAX)
                    .expect("a frame")
                    .encoded_len()
            });
            data.truncate(end);
        }
        std::fs::write(out.join(name), data).expect("copy");
    }
    let last = names
        .iter()
        .rfind(|n| n.starts_with("wal-"))
        .expect("a WAL segment");
    let offset = append_torn_record(&out.join(last));
    let expected = json!({
        "clockMs": app.clock.now_ms(),
        "keys": {
            "issuer": issuer, "reader": reader, "late": late,
            "revoked": text(&revoked_key, "key"), "revokedLate": text(&revoked_late, "key"),
        },
        "activeTokenId": active,
        "plainCollectionId": plain,
        "otherTenant": {
            "key": other.key, "tokenId": other_token,
            "token": app.token(&other.key, &other_token).await,
        },
        "tokens": tokens,
        "collections": collections,
        "apiKeys": api_keys,
        "replays": record.replays(&app, &issuer).await,
        "tornTail": {"file": last, "offset": offset},
    });
    let text = serde_json::to_string_pretty(&expected).expect("JSON");
    std::fs::write(out.join("expected.json"), text + "\n").expect("expected.json");
}

/// Where the frames of a segment start: after its header, when it has one
/// (segments written before segments had headers start with a frame).
fn frames_at(data: &[u8]) -> usize {
    if data.starts_with(&tokend::wal::segment::MAGIC) {
        tokend::wal::segment::HEADER_BYTES
    } else {
        0
    }
}

/// The byte offset and LSN of every frame of a whole segment.
fn frames(data: &[u8]) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    let mut at = frames_at(data);
    while let Ok(frame) = tokend::wal::frame::decode(&data[at..], usize::MAX) {
        found.push((at, frame.lsn));
        at += frame.encoded_len();
    }
    found
}

/// Writes the first half of a valid record frame (LSN one past the last, CRC
/// and all) after the last frame of `segment`, as a write cut short by a
/// crash leaves it, and returns its offset.
fn append_torn_record(segment: &Path) -> u64 {
    let data = std::fs::read(segment).expect("the segment reads");
    let (at, lsn) = *frames(&data).last().expect("a record");
    let offset = at
        + tokend::wal::frame::decode(&data[at..], usize::MAX)
            .expect("a frame")
            .encoded_len();
    let next_lsn = lsn + 1;
    let payload = vec![0xa5u8; 64];
    let mut frame = Vec::new();
    tokend::wal::frame::encode_into(
        &mut frame,
        next_lsn,
        &payload,
        &tokend::wal::frame::PayloadCrc::new(&payload),
    );
    frame.truncate(frame.len() / 2);
    let torn = [&data[..offset], &frame].concat();
    std::fs::write(segment, torn).expect("the torn record is written");
    offset as u64
}
