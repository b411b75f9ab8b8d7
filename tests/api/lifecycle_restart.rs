//! The redemption lifecycle across restarts: holds, captures, releases,
//! voids and the collections' rules come back from the log alone and from a
//! snapshot plus the log, every idempotent request still replays, and a hold
//! placed before the restart still lapses on the engine clock after it.
//!
//! The first restart is from a crash image: the data dir's files copied
//! while the server runs, as a `kill -9` leaves them (with fsync `always`,
//! every acknowledged change is in them; a clean stop would write a final
//! snapshot and replay no log). The second is after a snapshot and a clean
//! stop.
//!
//! Apart from `lifecycle` because it restarts on a data dir, which a test
//! cluster (`make test-cluster`) does not have.

use crate::helpers::*;
use crate::lifecycle::{capture, hold, hold_id_of, hold_ok, release, void};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// The token ids of the scenario.
struct Tokens {
    /// Held for 300 s from T0, with a key.
    held: String,
    held_request: Value,
    /// Held for 60 s from T0: lapses after the restart.
    lapsing: String,
    lapsing_hold: String,
    /// Held for 5 s from T0; the timers ended the hold before the restart.
    lapsed: String,
    lapsed_hold: String,
    /// Held, then captured.
    captured: String,
    captured_hold: String,
    /// Held, then released (after the snapshot, if any).
    released: String,
    released_hold: String,
    /// Redeemed, then voided (after the snapshot, if any), with a key.
    voided: String,
    /// Held, captured, voided.
    voided_capture: String,
    voided_capture_hold: String,
}

impl Tokens {
    fn all(&self) -> [&String; 7] {
        [
            &self.held,
            &self.lapsing,
            &self.lapsed,
            &self.captured,
            &self.released,
            &self.voided,
            &self.voided_capture,
        ]
    }
}

/// What the first app left behind.
struct Crashed {
    tenant: Tenant,
    /// The collection with hold and void rules, as created.
    rules: Value,
    tokens: Tokens,
    /// Every token of `tokens.all()` as the first app last showed it.
    before: Vec<Value>,
    /// The crash image.
    dir: Arc<tempfile::TempDir>,
}

/// The snapshot files in `dir`.
fn snapshots(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("snapshot-"))
        .collect()
}

/// The files of the running `app`'s data dir, copied into a new one (all
/// but the lock, which the copy's server takes anew).
fn crash_image(app: &TestApp) -> Arc<tempfile::TempDir> {
    let image = tempfile::tempdir().expect("a temporary dir");
    for entry in std::fs::read_dir(app.data_dir.path()).expect("the data dir reads") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        if path.is_file() && name != "LOCK" {
            std::fs::copy(&path, image.path().join(name)).expect("the file copies");
        }
    }
    Arc::new(image)
}

/// A token in `collection` with data; returns its id.
async fn new_token(app: &TestApp, key: &str, collection: &str) -> String {
    id_of(
        &app.create_token(key, &json!({"collectionId": collection, "data": {"v": 1}}))
            .await,
    )
}

/// Places the holds, captures and voids of the scenario, with a snapshot
/// midway when `snapshot`, and takes a crash image at T0 + 20 s.
async fn run_until_crash(snapshot: bool) -> Crashed {
    let app = TestApp::builder().shards(2).spawn().await;
    let tenant = app.tenant().await;
    let rules = app
        .create_collection(
            &tenant.key,
            &json!({"name": "till", "holdTtlSecsMax": 600, "voidWindowSecs": 3600}),
        )
        .await;
    let c = id_of(&rules);
    let key = &tenant.key;

    // At T0.
    let held = new_token(&app, key, &c).await;
    let held_request = json!({"merchantId": "m-1", "idempotencyKey": "h", "ttlSecs": 300});
    hold_ok(&app, key, &held, &held_request).await;
    let lapsing = new_token(&app, key, &c).await;
    let lapsing_hold = hold_ok(&app, key, &lapsing, &json!({"ttlSecs": 60})).await;
    let lapsed = new_token(&app, key, &c).await;
    let lapsed_hold = hold_ok(&app, key, &lapsed, &json!({"ttlSecs": 5})).await;
    let captured = new_token(&app, key, &c).await;
    let captured_hold = hold_ok(
        &app,
        key,
        &captured,
        &json!({"merchantId": "m-1", "idempotencyKey": "c"}),
    )
    .await;
    capture(&app, key, &captured, &captured_hold)
        .await
        .assert_status(200);
    let released = new_token(&app, key, &c).await;
    let released_hold = hold_ok(&app, key, &released, &json!({})).await;
    let voided = new_token(&app, key, &c).await;
    app.redeem(
        key,
        &voided,
        &json!({"merchantId": "m-2", "idempotencyKey": "r"}),
    )
    .await
    .assert_status(200);
    let voided_capture = new_token(&app, key, &c).await;
    let voided_capture_hold = hold_ok(&app, key, &voided_capture, &json!({})).await;
    capture(&app, key, &voided_capture, &voided_capture_hold)
        .await
        .assert_status(200);
    void(&app, key, &voided_capture, &json!({"reason": "cancelled"}))
        .await
        .assert_status(200);

    // At T0 + 10 s the timers end the 5 s hold.
    app.advance_ms(10 * SECOND);
    app.run_timers().await;
    assert_eq!(app.token(key, &lapsed).await["status"], "active");
    if snapshot {
        app.post("/api/admin/snapshot", ADMIN, &json!({}))
            .await
            .assert_status(200);
    }
    // Only in the log when there is a snapshot.
    release(&app, key, &released, &released_hold)
        .await
        .assert_status(200);
    void(
        &app,
        key,
        &voided,
        &json!({"reason": "refund", "idempotencyKey": "v"}),
    )
    .await
    .assert_status(200);

    app.advance_ms(10 * SECOND);
    let tokens = Tokens {
        held,
        held_request,
        lapsing,
        lapsing_hold,
        lapsed,
        lapsed_hold,
        captured,
        captured_hold,
        released,
        released_hold,
        voided,
        voided_capture,
        voided_capture_hold,
    };
    let mut before = Vec::new();
    for id in tokens.all() {
        before.push(app.token(key, id).await);
    }
    assert_eq!(before[0]["status"], "held");
    assert_eq!(before[1]["status"], "held");
    let dir = crash_image(&app);
    assert_eq!(snapshots(dir.path()).len(), usize::from(snapshot));
    // The original stops; its final snapshot is not in the image.
    app.stop().await.0.expect("a clean stop");
    Crashed {
        tenant,
        rules,
        tokens,
        before,
        dir,
    }
}

async fn the_lifecycle_survives_a_restart(snapshot: bool) {
    let Crashed {
        tenant,
        rules,
        tokens: t,
        before,
        dir,
    } = run_until_crash(snapshot).await;
    let c = id_of(&rules);
    // Another shard count: tokens are routed anew by id.
    let app = TestApp::builder().shards(3).data_dir(dir).spawn().await;
    app.clock.set_ms(T0 + 20 * SECOND);
    let key = &tenant.key;

    for (id, was) in t.all().into_iter().zip(&before) {
        assert_eq!(&app.token(key, id).await, was, "{id}");
    }
    let collection = app.get(&format!("/api/collections/{c}"), key).await;
    assert_eq!(collection.body, rules);
    assert_eq!(
        app.all_token_ids(key, "status=held").await.len(),
        2,
        "held and lapsing"
    );

    // Every idempotent request replays.
    let replay = hold(&app, key, &t.held, &t.held_request).await;
    replay.assert_status(200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, before[0]);
    for (resp, was) in [
        (
            capture(&app, key, &t.captured, &t.captured_hold).await,
            &before[3],
        ),
        (
            release(&app, key, &t.released, &t.released_hold).await,
            &before[4],
        ),
        (
            release(&app, key, &t.lapsed, &t.lapsed_hold).await,
            &before[2],
        ),
        (
            void(
                &app,
                key,
                &t.voided,
                &json!({"reason": "refund", "idempotencyKey": "v"}),
            )
            .await,
            &before[5],
        ),
    ] {
        resp.assert_status(200);
        assert_eq!(resp.header("idempotent-replayed"), Some("true"));
        assert_eq!(&resp.body, was);
    }
    // Ended holds stay ended; held tokens stay held.
    for (id, hold_id) in [
        (&t.released, &t.released_hold),
        (&t.lapsed, &t.lapsed_hold),
        (&t.voided_capture, &t.voided_capture_hold),
    ] {
        capture(&app, key, id, hold_id)
            .await
            .assert_error(409, "HOLD_NOT_ACTIVE");
    }
    release(&app, key, &t.captured, &t.captured_hold)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    let refused = app.redeem(key, &t.held, &json!({})).await;
    refused.assert_error(409, "TOKEN_HELD");
    assert!(refused.body["message"]
        .as_str()
        .unwrap()
        .contains(&at(300 * SECOND)));
    // The collection's rules still apply.
    hold(&app, key, &t.released, &json!({"ttlSecs": 601}))
        .await
        .assert_invalid(&["$.ttlSecs"]);

    // The 60 s hold lapses at T0 + 60 s, with or without the timers.
    app.clock.set_ms(T0 + 60 * SECOND - 1);
    let head = app.head_token(key, &t.lapsing).await;
    head.assert_status(409);
    assert_eq!(head.header("x-token-status"), Some("held"));
    app.advance_ms(1);
    let token = app.token(key, &t.lapsing).await;
    assert_eq!(token["status"], "active");
    assert!(token.get("hold").is_none(), "{token}");
    assert_eq!(token["data"], json!({"v": 1}));
    capture(&app, key, &t.lapsing, &t.lapsing_hold)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    app.run_timers().await;
    assert_eq!(app.token(key, &t.lapsing).await, token);
    app.redeem(key, &t.lapsing, &json!({}))
        .await
        .assert_status(200);

    // The 300 s hold is still live, and captures.
    let captured = capture(&app, key, &t.held, &hold_id_of(&before[0])).await;
    captured.assert_status(200);
    assert_eq!(captured.body["redemption"]["idempotencyKey"], "h");
    // Voided tokens redeem again; the voided list came back whole.
    let again = app.redeem(key, &t.voided, &json!({})).await;
    again.assert_status(200);
    assert_eq!(
        again.body["voidedRedemptions"],
        before[5]["voidedRedemptions"]
    );
    assert_eq!(
        before[6]["voidedRedemptions"][0]["holdId"],
        json!(t.voided_capture_hold)
    );

    // And all of it survives a second restart, from this build's snapshot.
    app.post("/api/admin/snapshot", ADMIN, &json!({}))
        .await
        .assert_status(200);
    let mut now = Vec::new();
    for id in t.all() {
        now.push(app.token(key, id).await);
    }
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    let app = TestApp::builder().shards(2).data_dir(dir).spawn().await;
    app.clock.set_ms(T0 + 60 * SECOND);
    for (id, was) in t.all().into_iter().zip(&now) {
        assert_eq!(&app.token(key, id).await, was, "{id}");
    }
}

#[actix_web::test]
async fn holds_and_voids_survive_a_restart_from_the_log() {
    the_lifecycle_survives_a_restart(false).await;
}

#[actix_web::test]
async fn holds_and_voids_survive_a_restart_from_a_snapshot_and_the_log() {
    the_lifecycle_survives_a_restart(true).await;
}
