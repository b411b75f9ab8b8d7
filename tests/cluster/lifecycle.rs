//! A cluster's life: nodes that would be unsafe or disagree are refused at
//! start, and a restart of everything (every tokend node and every NATS
//! server, gracefully) restores every token from the stream and the
//! snapshots in the object store — with a data key, from sealed values
//! that no NATS server holds in the clear.

use super::faults::wait_settled;
use super::support::{Cluster, READY_TIMEOUT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Waits for node `index` to exit on its own; returns its log.
fn exits_with_log(cluster: &Cluster, index: usize) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = cluster.node(index).exit_status() {
            assert!(!status.success(), "a refused node exits non-zero");
            return cluster.node(index).log();
        }
        assert!(
            Instant::now() < deadline,
            "node {index} was expected to refuse to start:\n{}",
            cluster.node(index).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_that_disagree_or_would_be_unsafe_are_refused() {
    let mut cluster = Cluster::start(3, 1, 8);
    // Another shard count than the cluster was created with.
    let mut config = cluster.node_config(1);
    config.shards = 4;
    let other_count = cluster.add_node_with(config);
    let log = exits_with_log(&cluster, other_count);
    assert!(
        log.contains("created with --cluster-shards 8"),
        "the refusal names both counts:\n{log}"
    );
    // No admin key: every node must accept the same one, none is generated.
    let mut config = cluster.node_config(2);
    config.admin_key = String::new();
    let keyless = cluster.add_node_with(config);
    let log = exits_with_log(&cluster, keyless);
    assert!(log.contains("TOKEND_ADMIN_KEY"), "{log}");
    // A new cluster whose stream would have one replica.
    let mut config = cluster.node_config(3);
    config.cluster_name = "single-replica".into();
    let config = config.arg("--cluster-replicas").arg("1");
    let unsafe_node = cluster.add_node_with(config);
    let log = exits_with_log(&cluster, unsafe_node);
    assert!(
        log.contains("replica") && log.contains("--cluster-allow-unsafe"),
        "{log}"
    );
    // The first node was not disturbed.
    assert_eq!(cluster.node(0).ready_status(), Some(200));
}

/// Stops every node gracefully and every NATS server, starts them all
/// again, and waits until every shard is served.
fn restart_everything(cluster: &mut Cluster) {
    for i in 0..cluster.nodes().len() {
        assert!(cluster.node_mut(i).terminate().success(), "a clean exit");
    }
    cluster.nats_mut().stop_all();
    cluster.nats_mut().start_all_again();
    for i in 0..cluster.nodes().len() {
        cluster.node_mut(i).restart();
    }
    cluster.wait_all_ready(READY_TIMEOUT);
    wait_settled(cluster, READY_TIMEOUT);
}

/// Every token of the account, through node `node`.
async fn all_tokens(cluster: &Cluster, node: usize, key: &str) -> Vec<Value> {
    let api = cluster.api(node);
    let deadline = Instant::now() + READY_TIMEOUT;
    let reply = loop {
        let reply = api
            .try_call(
                reqwest::Method::GET,
                "/api/tokens?limit=500",
                Some(key),
                None,
            )
            .await;
        match reply {
            Ok(reply) if reply.status != 503 => break reply.expect(200),
            other => assert!(
                Instant::now() < deadline,
                "the list stays unavailable: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        reply.body["pagination"]["hasMore"],
        json!(false),
        "one page holds them"
    );
    reply.body["data"].as_array().expect("data").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_of_everything_restores_every_token_from_the_stream_and_the_snapshots() {
    let mut cluster = Cluster::start(3, 0, 8);
    for i in 0..3 {
        // Snapshots every second, so that the restart reads them and the
        // purged stream.
        let config = cluster
            .node_config(i)
            .arg("--snapshot-interval-secs")
            .arg("1");
        cluster.add_node_with(config);
    }
    tokio::task::block_in_place(|| {
        cluster.wait_all_ready(READY_TIMEOUT);
        wait_settled(&cluster, READY_TIMEOUT);
    });
    let key = cluster.api(0).tenant_key("restart").await;
    let collection = cluster.api(1).create_collection(&key, "gifts").await;
    let mut ids = Vec::new();
    for round in 0..3 {
        let tokens: Vec<Value> = (0..100)
            .map(|i| json!({"collectionId": collection, "metadata": {"n": format!("{round}-{i}")}}))
            .collect();
        let reply = cluster
            .api(round % 3)
            .post_retrying(&key, "/api/tokens/batch", &json!({ "tokens": tokens }))
            .await
            .expect(201);
        for token in reply.body["data"].as_array().expect("data") {
            ids.push(token["id"].as_str().expect("id").to_owned());
        }
        // Redeem a third of this round's tokens, each with its own key.
        for (i, id) in ids[round * 100..].iter().enumerate().step_by(3) {
            cluster
                .api(i % 3)
                .post_retrying(
                    &key,
                    &format!("/api/tokens/{id}/redeem"),
                    &json!({"idempotencyKey": format!("r-{id}")}),
                )
                .await
                .expect(200);
        }
        // Let snapshots run between rounds: the last round stays in the
        // stream only.
        if round < 2 {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
    }
    let before = all_tokens(&cluster, 2, &key).await;
    assert_eq!(before.len(), 300);
    let snapshots: usize = cluster
        .nodes()
        .iter()
        .map(|n| n.log().matches("shard snapshot written").count())
        .sum();
    assert!(
        snapshots >= 8,
        "shards were snapshotted ({snapshots} snapshots)"
    );

    tokio::task::block_in_place(|| restart_everything(&mut cluster));
    let after = all_tokens(&cluster, 0, &key).await;
    let restored = |tokens: &[Value]| -> Vec<(String, String, String)> {
        let mut out: Vec<_> = tokens
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_owned(),
                    t["status"].as_str().unwrap_or_default().to_owned(),
                    t["redemption"]["idempotencyKey"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(restored(&after), restored(&before), "every token as it was");
    let redeemed = after
        .iter()
        .filter(|t| t["status"] == json!("redeemed"))
        .count();
    assert_eq!(
        redeemed, 102,
        "a third of each round (34 per round) was redeemed"
    );
    // The takeovers after the restart started from snapshots.
    let from_snapshots = cluster
        .nodes()
        .iter()
        .flat_map(|n| {
            n.current_log()
                .text()
                .lines()
                .filter(|l| l.contains("serving the shard") && !l.contains("snapshot_sequence=0"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count();
    assert!(
        from_snapshots > 0,
        "no takeover used a snapshot:
{}",
        cluster.logs()
    );
}

/// Every file under `dir` (NATS servers' stores, logs and configs), read.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(path, _)| path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_data_key_jetstream_holds_token_data_sealed_and_a_restart_opens_it() {
    // The same key on every node (32 bytes, base64).
    const DATA_KEY: &str = "c1:Y2x1c3Rlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nISE=";
    let mut cluster = Cluster::start(3, 0, 8);
    for i in 0..3 {
        // Snapshots every second, so that sealed values reach the object
        // store as well as the stream.
        let config = cluster
            .node_config(i)
            .env("TOKEND_DATA_KEY", DATA_KEY)
            .arg("--snapshot-interval-secs")
            .arg("1");
        cluster.add_node_with(config);
    }
    tokio::task::block_in_place(|| {
        cluster.wait_all_ready(READY_TIMEOUT);
        wait_settled(&cluster, READY_TIMEOUT);
    });
    let key = cluster.api(0).tenant_key("sealed").await;
    let collection = cluster.api(1).create_collection(&key, "cards").await;
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..2 {
        let tokens: Vec<Value> = (0..40)
            .map(|i| {
                json!({
                    "collectionId": collection,
                    "type": "card",
                    "data": {"pan": format!("SECRETPAN-{round}-{i}"), "n": i},
                    // Metadata is not sealed: it shows that the search below
                    // reads the stream's bytes.
                    "metadata": {"mark": format!("PLAINMARK-{round}-{i}")}
                })
            })
            .collect();
        let reply = cluster
            .api(round % 3)
            .post_retrying(&key, "/api/tokens/batch", &json!({ "tokens": tokens }))
            .await
            .expect(201);
        for token in reply.body["data"].as_array().expect("data") {
            expected.insert(
                token["id"].as_str().expect("id").to_owned(),
                token["data"].clone(),
            );
        }
        // The first round reaches the snapshots; the second stays in the
        // stream only.
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
    }
    let nats_dir = cluster.nats().dir().to_path_buf();
    assert!(
        !found_under(&nats_dir, "PLAINMARK-1-").is_empty(),
        "the stream's files hold the unsealed metadata, so the search can see records"
    );
    let leaks = found_under(&nats_dir, "SECRETPAN-");
    assert!(leaks.is_empty(), "token data in the clear in {leaks:?}");

    tokio::task::block_in_place(|| restart_everything(&mut cluster));
    let after = all_tokens(&cluster, 2, &key).await;
    assert_eq!(after.len(), expected.len());
    for token in &after {
        let id = token["id"].as_str().expect("id");
        assert_eq!(
            Some(&token["data"]),
            expected.get(id),
            "token {id} comes back with its data"
        );
    }
    let leaks = found_under(&nats_dir, "SECRETPAN-");
    assert!(leaks.is_empty(), "token data in the clear in {leaks:?}");
}
