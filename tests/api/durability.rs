//! Durability seen from the API, in process: storage faults poison the
//! engine (writes 503, reads go on), snapshots on demand, and a restart on
//! the same data dir brings back everything acknowledged.

use crate::helpers::{contains, id_of, TestApp, ADMIN};
use serde_json::json;
use std::sync::Arc;
use tokend::storage::FaultyStorage;
use tokend::wal::WalOptions;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Write,
    Fsync,
}

async fn storage_fault_poisons_writes_and_keeps_reads(fault: Fault) {
    let storage = FaultyStorage::new();
    let app = TestApp::builder()
        .storage(Arc::new(storage.clone()))
        .spawn()
        .await;
    let tenant = app.tenant().await;
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        acknowledged.push(
            app.create_token_in(&tenant.key, &tenant.collection_id)
                .await,
        );
    }
    app.redeem(
        &tenant.key,
        &acknowledged[0],
        &json!({"idempotencyKey": "r-0"}),
    )
    .await
    .assert_status(200);

    match fault {
        Fault::Write => storage.fail_write_at(Some(storage.writes() + 1)),
        Fault::Fsync => storage.fail_sync_at(Some(storage.syncs() + 1)),
    }
    let body = json!({"collectionId": tenant.collection_id});
    app.post("/api/tokens", &tenant.key, &body)
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    // Poisoned for good: every later write is refused, whatever it is.
    app.post("/api/tokens", &tenant.key, &body)
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    app.redeem(&tenant.key, &acknowledged[1], &json!({}))
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    app.delete_token(&tenant.key, &acknowledged[2])
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    app.post("/api/collections", &tenant.key, &json!({"name": "late"}))
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    app.post("/api/admin/snapshot", ADMIN, &json!({}))
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    // Reads go on.
    let token = app.token(&tenant.key, &acknowledged[3]).await;
    assert_eq!(token["status"], "active");
    let token = app.token(&tenant.key, &acknowledged[0]).await;
    assert_eq!(token["status"], "redeemed");

    let (stopped, dir) = app.stop().await;
    assert!(stopped.is_err(), "a poisoned engine cannot stop cleanly");

    let app = TestApp::builder().data_dir(dir).spawn().await;
    for id in &acknowledged {
        let token = app.token(&tenant.key, id).await;
        let expected = if *id == acknowledged[0] {
            "redeemed"
        } else {
            "active"
        };
        assert_eq!(token["status"], expected, "{fault:?}: {token}");
    }
    let token = app.token(&tenant.key, &acknowledged[0]).await;
    assert_eq!(token["redemption"]["idempotencyKey"], "r-0");
    // The refused redeem and delete left no trace: the tokens are usable.
    app.redeem(&tenant.key, &acknowledged[1], &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &acknowledged[2])
        .await
        .assert_status(204);
    app.create_token_in(&tenant.key, &tenant.collection_id)
        .await;
}

#[actix_web::test]
async fn a_failed_fsync_poisons_writes_and_loses_nothing_acknowledged() {
    storage_fault_poisons_writes_and_keeps_reads(Fault::Fsync).await;
}

#[actix_web::test]
async fn a_failed_write_poisons_writes_and_loses_nothing_acknowledged() {
    storage_fault_poisons_writes_and_keeps_reads(Fault::Write).await;
}

#[actix_web::test]
async fn admin_snapshot_then_restart_restores_snapshot_plus_log() {
    let app = TestApp::builder().shards(2).spawn().await;
    let tenant = app.tenant().await;
    let before = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.redeem(
        &tenant.key,
        &before,
        &json!({"merchantId": "m", "idempotencyKey": "k"}),
    )
    .await
    .assert_status(200);

    app.post("/api/admin/snapshot", &tenant.key, &json!({}))
        .await
        .assert_error(403, "PERMISSION_DENIED");
    let snapshot = app.post("/api/admin/snapshot", ADMIN, &json!({})).await;
    snapshot.assert_status(200);
    assert_eq!(snapshot.body["tokens"], 1);
    assert!(snapshot.body["lsn"].as_u64().is_some_and(|lsn| lsn >= 5));
    let file = snapshot.body["file"].as_str().unwrap().to_owned();
    assert!(app.data_dir.path().join(&file).exists(), "{file}");

    // Changes after the snapshot live only in the log.
    let after = app
        .create_token(
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "idempotencyKey": "c-1", "data": {"v": [1, 2]}}),
        )
        .await;
    let after = id_of(&after);
    let revoked = app.create_key(&tenant.account_id, &["token:read"]).await;
    let keys = app
        .get(
            &format!("/api/accounts/{}/api-keys", tenant.account_id),
            ADMIN,
        )
        .await;
    let revoked_id = keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scopes"] == json!(["token:read"]))
        .map(id_of)
        .unwrap();
    app.delete(
        &format!("/api/accounts/{}/api-keys/{revoked_id}", tenant.account_id),
        ADMIN,
    )
    .await
    .assert_status(204);

    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    // Restart with another shard count: tokens are routed anew by id.
    let app = TestApp::builder().shards(3).data_dir(dir).spawn().await;
    let token = app.token(&tenant.key, &before).await;
    assert_eq!(token["status"], "redeemed");
    let replay = app
        .redeem(
            &tenant.key,
            &before,
            &json!({"merchantId": "m", "idempotencyKey": "k"}),
        )
        .await;
    replay.assert_status(200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let token = app.token(&tenant.key, &after).await;
    assert_eq!(token["data"], json!({"v": [1, 2]}));
    let again = app
        .post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "idempotencyKey": "c-1", "data": {"v": [1, 2]}}),
        )
        .await;
    again.assert_status(200);
    assert_eq!(id_of(&again.body), after);
    app.get(&format!("/api/tokens/{after}"), &revoked)
        .await
        .assert_error(401, "UNAUTHENTICATED");
}

/// Shards run on the HTTP workers' threads (each worker adopts its share as
/// it starts); a graceful stop brings every one back to the engine's threads
/// for the final snapshot, so nothing of any shard is lost, and a restart
/// adopts them again.
#[actix_web::test]
async fn shards_on_the_http_workers_come_home_for_the_final_snapshot() {
    let app = TestApp::builder().shards(4).http_workers(2).spawn().await;
    let tenant = app.tenant().await;
    let tokens = app
        .create_batch(
            &tenant.key,
            (0..40)
                .map(|_| json!({"collectionId": tenant.collection_id}))
                .collect(),
        )
        .await;
    let ids: Vec<String> = tokens.iter().map(id_of).collect();
    let engine = app.engines().next().expect("one node").clone();
    assert_eq!(engine.shards_on_workers(), 4, "every shard adopted");
    for id in &ids[..20] {
        app.redeem(&tenant.key, id, &json!({"merchantId": "m"}))
            .await
            .assert_status(200);
    }
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop, final snapshot included");
    assert_eq!(engine.shards_on_workers(), 0, "every shard came home");
    drop(engine);
    let snapshots = std::fs::read_dir(dir.path())
        .expect("the data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    assert!(snapshots >= 1, "the stop wrote its final snapshot");

    let app = TestApp::builder()
        .shards(4)
        .http_workers(2)
        .data_dir(dir)
        .spawn()
        .await;
    for (n, id) in ids.iter().enumerate() {
        let token = app.token(&tenant.key, id).await;
        let expected = if n < 20 { "redeemed" } else { "active" };
        assert_eq!(token["status"], expected, "{id}");
    }
    assert_eq!(
        app.engines().next().expect("one node").shards_on_workers(),
        4
    );
}

/// An append the log refuses (here: a record over its size limit) comes after
/// the shard applied the change in memory, so it poisons the engine exactly
/// like a failed write: nothing more is acknowledged, reads go on.
#[actix_web::test]
async fn a_refused_append_poisons_the_engine() {
    let app = TestApp::builder()
        .wal(WalOptions {
            record_bytes_max: 2_048,
            buffer_bytes_max: 1 << 20,
            ..WalOptions::default()
        })
        .spawn()
        .await;
    let tenant = app.tenant().await;
    let kept = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let big = json!({"collectionId": tenant.collection_id, "data": "x".repeat(4_000)});
    app.post("/api/tokens", &tenant.key, &big)
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    app.redeem(&tenant.key, &kept, &json!({}))
        .await
        .assert_error(503, "STORAGE_UNAVAILABLE");
    assert_eq!(app.token(&tenant.key, &kept).await["status"], "active");
    let (stopped, dir) = app.stop().await;
    assert!(stopped.is_err(), "a poisoned engine cannot stop cleanly");
    let app = TestApp::builder().data_dir(dir).spawn().await;
    app.redeem(&tenant.key, &kept, &json!({}))
        .await
        .assert_status(200);
}

/// A deleted token's data leaves the disk by the second snapshot after
/// the delete — also on a quiet engine, where both snapshots cover the same
/// LSN (each still gets its own file, pushing out the one from before).
#[actix_web::test]
async fn deleted_data_leaves_the_disk_by_the_second_snapshot_even_without_writes_between() {
    let app = spawn_app_with_shards(2).await;
    let tenant = app.tenant().await;
    let marker = "erase-me-3f9c1b7d";
    let token = app
        .create_token(
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "data": {"secret": marker}}),
        )
        .await;
    let token = id_of(&token);
    app.post("/api/admin/snapshot", ADMIN, &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &token)
        .await
        .assert_status(204);
    let on_disk = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read(e.path()).is_ok_and(|bytes| contains(&bytes, marker.as_bytes()))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        !on_disk(app.data_dir.path()).is_empty(),
        "the data is on disk before"
    );
    let first = app.post("/api/admin/snapshot", ADMIN, &json!({})).await;
    first.assert_status(200);
    let second = app.post("/api/admin/snapshot", ADMIN, &json!({})).await;
    second.assert_status(200);
    assert_eq!(first.body["lsn"], second.body["lsn"], "no write in between");
    assert_ne!(first.body["file"], second.body["file"]);
    assert_eq!(on_disk(app.data_dir.path()), Vec::<String>::new());
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    let app = TestApp::builder().data_dir(dir).spawn().await;
    assert_eq!(app.token(&tenant.key, &token).await["status"], "deleted");
}

async fn spawn_app_with_shards(shards: usize) -> TestApp {
    TestApp::builder().shards(shards).spawn().await
}
