//! `tokend inspect` and `tokend compact` on a stopped data dir.

use crate::api::{id_of, Api};
use crate::files::{self, contents, name};
use crate::fixture::Fixture;
use crate::server::{run_tool, Server};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `tokens: …` line inspect must print for the captured tokens.
fn tokens_line(fixture: &Fixture) -> String {
    let mut by_status: BTreeMap<&str, usize> = ["active", "deleted", "expired", "held", "redeemed"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for token in fixture.expected.tokens.values() {
        *by_status
            .get_mut(token["status"].as_str().unwrap())
            .expect("a known status") += 1;
    }
    let parts: Vec<String> = by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    format!("tokens: {} ({})", fixture.token_count(), parts.join(", "))
}

#[tokio::test]
async fn inspect_counts_what_was_written_and_compact_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "offline").await;
    fixture.write_round(&api).await;
    let expiring = api
        .post(
            "/api/tokens",
            &fixture.key,
            &json!({"collectionId": fixture.collection_id, "expiresIn": 1, "data": {"n": 1}}),
        )
        .await
        .expect(201);
    let snapshot = api.snapshot().await;
    fixture.write_round(&api).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    fixture.capture(&api).await;
    let expired = &fixture.expected.tokens[&id_of(&expiring.body)];
    assert_eq!(expired["status"], "expired", "{expired}");
    server.kill9();

    let want_tokens = tokens_line(&fixture);
    let before = contents(dir.path());
    let run = run_tool("inspect", dir.path());
    assert!(run.status.success(), "{}", run.output());
    let out = &run.stdout;
    assert!(
        out.contains(&want_tokens),
        "want {want_tokens:?}: {}",
        run.output()
    );
    assert!(
        out.contains("accounts: 1  api keys: 2  collections: 1"),
        "{out}"
    );
    assert!(out.contains("snapshots: 1"), "{out}");
    let snapshot_file = snapshot["file"].as_str().unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains(snapshot_file) && l.trim_end().ends_with("ok")),
        "{out}"
    );
    let segments = files::wal_segments(dir.path());
    assert!(
        out.contains(&format!("wal segments: {}", segments.len())),
        "{out}"
    );
    for segment in &segments {
        assert!(out.contains(&name(segment)), "{out}");
    }
    assert!(out.contains("checksums ok"), "{out}");
    assert!(out.lines().any(|l| l == "verdict: ok"), "{out}");
    assert_eq!(contents(dir.path()), before, "inspect changes nothing");

    let run = run_tool("compact", dir.path());
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout
            .contains(&format!("{} tokens", fixture.token_count())),
        "{}",
        run.output()
    );
    let snapshots = files::snapshots(dir.path());
    let newest = name(snapshots.last().unwrap());
    assert!(run.stdout.contains(&newest), "{}", run.output());
    assert_ne!(newest, snapshot_file, "compact wrote a fresh snapshot");

    let run = run_tool("inspect", dir.path());
    assert!(run.status.success(), "{}", run.output());
    assert!(run.stdout.contains(&want_tokens), "{}", run.output());
    assert!(
        run.stdout.contains(&format!("restoring from: {newest}")),
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains("wal records after the snapshot: 0"),
        "{}",
        run.output()
    );
    assert!(run.stdout.lines().any(|l| l == "verdict: ok"));

    // The server serves the compacted dir (written with one shard, served
    // with two) exactly as before, and its log goes on from there.
    let mut server = Server::start(dir.path());
    let loading = server.log_line("loading snapshot");
    assert!(loading.contains(&newest), "{loading}");
    let api = Api::new(&server);
    fixture.verify(&api).await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    server.kill9();
    let mut server = Server::start(dir.path());
    fixture.verify(&Api::new(&server)).await;
    server.kill9();
    let run = run_tool("inspect", dir.path());
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout.contains(&tokens_line(&fixture)),
        "{}",
        run.output()
    );
}

/// `inspect` reads a data dir written by an earlier build (the oldest
/// fixture), changing nothing; on one holding a snapshot of a newer format
/// it says so, names both versions and exits 1, still changing nothing.
#[tokio::test]
async fn inspect_reads_an_old_data_dir_and_refuses_a_newer_one_changing_nothing() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures.join("datadir-1")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let before = contents(dir.path());
    let run = run_tool("inspect", dir.path());
    assert!(run.status.success(), "{}", run.output());
    assert!(run.stdout.contains("format version 1"), "{}", run.output());
    assert!(run.stdout.contains("torn tail"), "{}", run.output());
    assert!(run.stdout.lines().any(|l| l == "verdict: ok"));
    let after: BTreeMap<_, _> = contents(dir.path())
        .into_iter()
        .filter(|(name, _)| name != "LOCK")
        .collect();
    assert_eq!(after, before, "inspect changes nothing");

    let snapshot = files::snapshots(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&snapshot).unwrap();
    data[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32fast::hash(&data[..32]);
    data[32..36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&snapshot, data).unwrap();
    let before = contents(dir.path());
    let run = run_tool("inspect", dir.path());
    assert!(!run.status.success(), "{}", run.output());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(&name(&snapshot)) && l.contains("NEWER FORMAT")),
        "{}",
        run.output()
    );
    assert!(
        run.output().contains("format version 99"),
        "{}",
        run.output()
    );
    assert_eq!(contents(dir.path()), before, "inspect changes nothing");
}
