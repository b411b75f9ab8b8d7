//! Graceful (SIGTERM) and SIGKILL restarts keep every acknowledged change.

use crate::api::{id_of, Api};
use crate::files::{self, dir_contains, name};
use crate::fixture::Fixture;
use crate::server::{number_field, Server, ADMIN_KEY};
use serde_json::json;
use std::path::Path;

/// No API key string and not the admin key is in any file of `dir`.
pub fn assert_no_secret_on_disk(dir: &Path, fixture: &Fixture) {
    for secret in fixture
        .secrets
        .iter()
        .map(String::as_str)
        .chain([ADMIN_KEY])
    {
        if let Some(file) = dir_contains(dir, secret) {
            panic!("a key secret is stored in {}", file.display());
        }
    }
}

#[tokio::test]
async fn graceful_restart_keeps_everything_and_restores_from_the_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "graceful").await;
    fixture.write_round(&api).await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    assert!(files::snapshots(dir.path()).is_empty(), "no snapshot yet");

    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0: {status}\n{}",
        server.log().text()
    );
    let written = server.log_line("snapshot written");
    assert_eq!(
        number_field(&written, "tokens") as usize,
        fixture.token_count(),
        "{written}"
    );
    server.log_line("tokend stopped");
    let snapshots = files::snapshots(dir.path());
    assert_eq!(snapshots.len(), 1, "the final snapshot: {snapshots:?}");

    let mut server = Server::start(dir.path());
    let loading = server.log_line("loading snapshot");
    assert!(loading.contains(&name(&snapshots[0])), "{loading}");
    let done = server.log_line("restore done");
    assert_eq!(
        number_field(&done, "snapshot_tokens") as usize,
        fixture.token_count(),
        "{done}"
    );
    assert_eq!(number_field(&done, "records_applied"), 0, "{done}");
    let api = Api::new(&server);
    fixture.verify(&api).await;
    assert_no_secret_on_disk(dir.path(), &fixture);

    // A second graceful cycle, by SIGINT, changes nothing either.
    let status = server.stop_with(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{}", server.log().text());
    server.log_line("signal=\"SIGINT\"");
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.call(reqwest::Method::GET, "/health/ready", None, None)
        .await
        .expect(200);
    fixture.verify(&api).await;
}

#[tokio::test]
async fn sigkill_without_a_snapshot_replays_the_whole_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "kill-no-snapshot").await;
    fixture.write_round(&api).await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    server.kill9();
    assert!(files::snapshots(dir.path()).is_empty());

    let mut server = Server::start(dir.path());
    let done = server.log_line("restore done");
    assert_eq!(number_field(&done, "snapshot_tokens"), 0, "{done}");
    assert!(number_field(&done, "records_applied") > 0, "{done}");
    fixture.verify(&Api::new(&server)).await;

    // Killed again right after a restart (nothing new written): the same.
    server.kill9();
    let server = Server::start(dir.path());
    fixture.verify(&Api::new(&server)).await;
    assert_no_secret_on_disk(dir.path(), &fixture);
}

#[tokio::test]
async fn sigkill_after_an_admin_snapshot_restores_the_snapshot_plus_the_wal_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "kill-with-snapshot").await;
    fixture.write_round(&api).await;
    let tokens_before = api.all_tokens(&fixture.key).await.len();

    let info = api.snapshot().await;
    let file = info["file"].as_str().expect("file").to_owned();
    assert!(info["lsn"].as_u64().is_some_and(|l| l > 0), "{info}");
    assert_eq!(
        info["tokens"].as_u64(),
        Some(tokens_before as u64),
        "{info}"
    );
    let path = dir.path().join(&file);
    let on_disk = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{file} is in the data dir: {e}"))
        .len();
    assert_eq!(info["bytes"].as_u64(), Some(on_disk), "{info}");
    assert_eq!(
        file,
        format!("snapshot-{:020}.mpk", info["lsn"].as_u64().unwrap())
    );

    // More writes after the snapshot, some of them to tokens it holds.
    fixture.write_round(&api).await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    server.kill9();

    // Restored into another shard count: tokens are routed by id.
    let mut server = Server::options(dir.path()).shards(3).start();
    let loading = server.log_line("loading snapshot");
    assert!(loading.contains(&file), "{loading}");
    let done = server.log_line("restore done");
    assert_eq!(
        number_field(&done, "snapshot_tokens") as usize,
        tokens_before,
        "{done}"
    );
    assert!(number_field(&done, "records_applied") > 0, "{done}");
    fixture.verify(&Api::new(&server)).await;
    server.kill9();
    let server = Server::start(dir.path());
    fixture.verify(&Api::new(&server)).await;
}

/// A deleted token's data leaves the disk by the second
/// snapshot after the delete (each snapshot here covers new writes).
#[tokio::test]
async fn a_deleted_tokens_data_leaves_the_disk_by_the_second_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "erasure").await;
    fixture.write_round(&api).await;
    let secret = "pan-erase-me-4111111111111111";
    let token = api
        .post(
            "/api/tokens",
            &fixture.key,
            &json!({"collectionId": fixture.collection_id, "data": {"n": 7, "pan": secret}}),
        )
        .await
        .expect(201);
    let id = id_of(&token.body);
    api.snapshot().await;
    assert!(
        dir_contains(dir.path(), secret).is_some(),
        "the data was stored"
    );
    api.delete_token(&fixture.key, &id).await.expect(204);
    fixture.deleted.push(id);
    fixture.write_round(&api).await;
    api.snapshot().await;
    assert!(
        dir_contains(dir.path(), secret).is_some(),
        "the snapshot before the delete is kept to fall back on"
    );
    fixture.write_round(&api).await;
    api.snapshot().await;
    if let Some(file) = dir_contains(dir.path(), secret) {
        panic!("a deleted token's data is still in {}", file.display());
    }
    fixture.capture(&api).await;
    server.kill9();
    let server = Server::start(dir.path());
    fixture.verify(&Api::new(&server)).await;
}
