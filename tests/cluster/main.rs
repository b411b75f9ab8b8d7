//! The cluster suite: tokend's cluster mode against real nats-servers
//! (feature `cluster-tests`; run it with `make test-cluster`, which installs
//! the pinned nats-server and runs the tests one at a time). See `support`
//! for the harness and how to write a test.
//!
//! The first test checks the property cluster mode rests on: a JetStream
//! publish conditional on a subject's last sequence has exactly one winner
//! among concurrent publishers, whichever servers they are connected to.

mod faults;
mod lifecycle;
#[allow(dead_code)]
#[path = "../common/net.rs"]
mod net;
mod partition;
#[allow(dead_code)]
#[path = "../common/process.rs"]
mod process;
mod support;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::ErrorCode;
use std::error::Error as _;
use std::sync::Arc;
use support::{Cluster, NatsCluster, READY_TIMEOUT};
use tokio::sync::Barrier;

/// Concurrent publishers per round, and rounds.
const PUBLISHERS: usize = 6;
const ROUNDS: u64 = 20;

/// The server's error code when a failed conditional publish lost the race:
/// 10071 (wrong last sequence) when the winner's message is already stored,
/// 10164 (a constant "wrong last sequence" message) when the leader rejects
/// it while the winner's message is still being replicated; `None` for any
/// other failure.
fn lost_the_race(error: &async_nats::jetstream::context::PublishError) -> Option<ErrorCode> {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE),
        PublishErrorKind::Other => error
            .source()
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .map(|e| e.error_code())
            .filter(|code| *code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_cluster_forms_and_a_conditional_append_has_one_winner() {
    let nats = NatsCluster::start(3);

    // One connection per publisher, spread over the three servers, so the
    // publishes reach the stream leader through different routes.
    let mut contexts = Vec::new();
    for i in 0..PUBLISHERS {
        let client = async_nats::connect(nats.url(i % nats.len()))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {}: {e}\n{}",
                    nats.url(i % nats.len()),
                    nats.logs()
                )
            });
        contexts.push(async_nats::jetstream::new(client));
    }
    let js = contexts[0].clone();
    let mut stream = js
        .create_stream(Config {
            name: "RACE".to_owned(),
            subjects: vec!["race.>".to_owned()],
            num_replicas: 3,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create the stream: {e}\n{}", nats.logs()));
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3);
    let cluster = info
        .cluster
        .as_ref()
        .expect("a replicated stream has cluster info");
    assert!(
        cluster.leader.is_some(),
        "the stream has a leader: {cluster:?}"
    );
    assert_eq!(cluster.replicas.len(), 2, "two followers: {cluster:?}");

    let subject = "race.token";
    let mut last = 0; // No message on the subject yet.
    let (mut stored_first, mut in_flight) = (0, 0);
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(PUBLISHERS));
        let tasks: Vec<_> = contexts
            .iter()
            .enumerate()
            .map(|(publisher, js)| {
                let js = js.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let message = PublishMessage::build()
                        .payload(format!("round {round} publisher {publisher}").into())
                        .expected_last_subject_sequence(last);
                    barrier.wait().await;
                    match js.send_publish(subject, message).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    }
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (publisher, task) in tasks.into_iter().enumerate() {
            match task.await.expect("the publisher task ends") {
                Ok(ack) => winners.push((publisher, ack.sequence)),
                Err(e) => match lost_the_race(&e) {
                    Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE) => stored_first += 1,
                    Some(_) => in_flight += 1,
                    None => panic!(
                        "round {round}: publisher {publisher} failed for another reason: {e} \
                         (kind {:?}, source {:?})",
                        e.kind(),
                        e.source()
                    ),
                },
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one conditional publish succeeds: {winners:?}"
        );
        let (_, sequence) = winners[0];
        let stored = stream
            .get_last_raw_message_by_subject(subject)
            .await
            .expect("the subject's last message");
        assert_eq!(
            stored.sequence, sequence,
            "round {round}: the winner's message is the subject's last"
        );
        assert!(sequence > last, "round {round}: sequences grow");
        last = sequence;
    }
    eprintln!(
        "losers: {stored_first} after the winner was stored (10071), \
         {in_flight} while it was in flight (10164)"
    );
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, ROUNDS,
        "one message per round, none from a loser"
    );
}

/// The harness's NATS faults: a killed server rejoins, and a cluster stopped
/// whole comes back with its acknowledged messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_servers_rejoin_after_a_kill_and_a_full_stop() {
    let mut nats = NatsCluster::start(3);
    // A publish as a client makes it: after a server is killed or the
    // cluster restarts, requests time out until the meta group and the
    // stream have elected leaders, so it retries (with a message id, so that
    // a retry of a publish that was stored is not stored twice).
    let publish = |url: String, payload: &'static str| async move {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let attempt = async {
                js.get_or_create_stream(Config {
                    name: "KEEP".to_owned(),
                    subjects: vec!["keep.>".to_owned()],
                    num_replicas: 3,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
                let message = PublishMessage::build()
                    .payload(payload.into())
                    .message_id(payload);
                let ack = js.send_publish("keep.x", message).await;
                let ack = ack.map_err(|e| e.to_string())?.await;
                ack.map(|ack| ack.sequence).map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(sequence) => return sequence,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("publishing {payload}: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("publishing {payload}: {e}"),
            }
        }
    };
    assert_eq!(publish(nats.url(0), "one").await, 1);

    nats.kill(2);
    assert!(!nats.is_running(2));
    // Two of three: still a majority.
    assert_eq!(publish(nats.url(1), "two").await, 2);
    nats.start_again(2);
    nats.wait_ready(READY_TIMEOUT);

    nats.stop_all();
    nats.start_all_again();
    assert_eq!(publish(nats.url(2), "three").await, 3);
}

/// The shape of a tokend cluster test (see `support`): three NATS servers,
/// three nodes; a token created on one node is redeemed once across all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_is_redeemed_once_across_the_nodes() {
    let cluster = Cluster::start(3, 3, 8);
    // Shards move between the nodes for a moment after they start (a
    // request caught by a hand-off answers 503): wait until they settle.
    tokio::task::block_in_place(|| faults::wait_settled(&cluster, READY_TIMEOUT));
    let api = cluster.api(0);
    let key = api.tenant_key("acme").await;
    let collection = api.create_collection(&key, "gifts").await;
    let token = api.create_token(&key, &collection).await;
    cluster.api(1).redeem(&key, &token).await.expect(200);
    for node in 0..3 {
        cluster
            .api(node)
            .redeem(&key, &token)
            .await
            .expect_error(409, "TOKEN_ALREADY_REDEEMED");
    }
    for node in cluster.nodes() {
        node.wait_ready(READY_TIMEOUT);
    }
    // Each node says what it serves and what it forwarded.
    let mut serving = 0;
    let mut forwarded = 0;
    for node in cluster.nodes() {
        let (status, text) = support::http_get(node.addr(), "/metrics").expect("metrics");
        assert_eq!(status, 200);
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        };
        serving += value("tokend_cluster_shards_serving ");
        forwarded += value("tokend_cluster_forwards_sent_total ");
        assert_eq!(
            value("tokend_cluster_catalog_lag "),
            0,
            "the catalog is caught up"
        );
    }
    assert_eq!(serving, 8, "every shard is served once");
    assert!(forwarded > 0, "requests crossed nodes");
}
