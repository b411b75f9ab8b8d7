//! Faults under load: clients create and redeem through every node while
//! the owner of a shard is killed, another owner is paused for longer than
//! its lease and resumed, and a NATS server is killed; then a checker reads
//! the history back.
//!
//! What must hold (the product's promises in cluster mode):
//! - every acknowledged create (201) and redeem (200) is present afterwards;
//! - no token has two successful redemptions with different idempotency
//!   keys (a 200 replay of the winning key is the same redemption);
//! - every answer a client saw is 200, 201, 409, 410 or 503 (never a 5xx
//!   other than 503, never a second 200 for another key);
//! - the cluster serves again after each fault.

use super::support::{http_get, Api, Cluster, Reply, READY_TIMEOUT};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients, spread over the nodes.
const CLIENTS: usize = 32;
/// Tokens created before the faults start (the redeem pool).
const POOL: usize = 400;
/// Shards of the test cluster.
const SHARDS: u16 = 12;
/// Longer than the lease (3 s): the paused node's shards move.
const PAUSE: Duration = Duration::from_secs(6);
/// How long the cluster may take to serve every shard again after a fault.
const RECOVERY_MAX: Duration = Duration::from_secs(30);
/// Retries of one request that got 503 (the same idempotency key).
const RETRIES_503: usize = 3;

/// What one client saw.
#[derive(Debug, Clone)]
enum Event {
    /// A create with idempotency key `key` answered `status` (token id on
    /// 2xx).
    Create {
        key: String,
        status: u16,
        token: Option<String>,
    },
    /// A redeem of `token` with idempotency key `key` answered `status`.
    Redeem {
        token: String,
        key: String,
        status: u16,
    },
    /// A request that got no answer (a killed node, a timeout): its outcome
    /// is unknown, and it promised nothing.
    NoAnswer,
}

/// What a node says on `/health/ready`: the shards it serves and how many
/// live nodes it sees (`None`: no 200 answer).
pub fn ready_view(addr: std::net::SocketAddr) -> Option<(BTreeSet<usize>, usize)> {
    let (status, body) = http_get(addr, "/health/ready").ok()?;
    let json: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    let held = json["cluster"]["held"]
        .as_array()
        .map(|held| {
            held.iter()
                .filter(|h| h["serving"] == json!(true))
                .filter_map(|h| h["shard"].as_u64().map(|s| s as usize))
                .collect()
        })
        .unwrap_or_default();
    let live = json["cluster"]["liveNodes"].as_array().map_or(0, Vec::len);
    Some((held, live))
}

/// The shards each node says it serves and the live nodes it sees, for the
/// running nodes that answer.
fn views(cluster: &Cluster) -> Vec<(usize, BTreeSet<usize>, usize)> {
    cluster
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, node)| node.is_running())
        .filter_map(|(i, node)| ready_view(node.addr()).map(|(held, live)| (i, held, live)))
        .collect()
}

/// The shards each answering node serves.
pub fn served(cluster: &Cluster) -> Vec<(usize, BTreeSet<usize>)> {
    views(cluster)
        .into_iter()
        .map(|(i, held, _)| (i, held))
        .collect()
}

/// Waits until every shard is served by exactly one of the nodes that
/// answer, each of which sees all of them live and serves its share, twice
/// in a row; returns how long it took.
pub fn wait_settled(cluster: &Cluster, timeout: Duration) -> Duration {
    let shards = cluster.shards();
    let started = Instant::now();
    let mut stable = 0;
    loop {
        let views = views(cluster);
        let served: Vec<_> = views.iter().map(|(i, s, _)| (*i, s.clone())).collect();
        let mut count = vec![0usize; usize::from(shards)];
        for (_, held, _) in &views {
            for s in held {
                count[*s] += 1;
            }
        }
        let balanced = views
            .iter()
            .all(|(_, shards, live)| *live == views.len() && !shards.is_empty());
        stable = if count.iter().all(|c| *c == 1) && balanced {
            stable + 1
        } else {
            0
        };
        if stable == 2 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "shards not all served once after {timeout:?}: {served:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A node that serves at least one shard, other than `except`.
fn an_owner(cluster: &Cluster, except: Option<usize>) -> usize {
    served(cluster)
        .into_iter()
        .find(|(i, shards)| Some(*i) != except && !shards.is_empty())
        .map(|(i, _)| i)
        .expect("some node serves shards")
}

/// Sends a request, retrying a 503 with the same body (and so the same
/// idempotency key) a few times, as a client would.
async fn send(api: &Api, method: Method, path: &str, key: &str, body: &Value) -> Option<Reply> {
    for attempt in 0..=RETRIES_503 {
        match api
            .try_call(method.clone(), path, Some(key), Some(body))
            .await
        {
            Ok(reply) if reply.status == 503 && attempt < RETRIES_503 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // A 408 comes from the HTTP server before the request reached
            // the application: a node resumed after a pause finds its
            // request-head timer expired. Nothing was decided.
            Ok(reply) if reply.status == 408 => return None,
            Ok(reply) => {
                assert!(
                    reply.status < 500 || reply.status == 503,
                    "{method} {path} answered {}: {}",
                    reply.status,
                    reply.body
                );
                return Some(reply);
            }
            Err(_) => return None,
        }
    }
    None
}

/// One client: creates (1 in 4) and redeems random pool tokens through the
/// nodes in turn until told to stop.
async fn client(
    id: usize,
    apis: Arc<Vec<Api>>,
    key: String,
    collection: String,
    pool: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    history: Arc<parking_lot::Mutex<Vec<Event>>>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let api = &apis[(id + n) % apis.len()];
        let idempotency = format!("c{id}-{n}");
        let event = if n.is_multiple_of(4) {
            let body = json!({"collectionId": collection, "idempotencyKey": idempotency});
            match send(api, Method::POST, "/api/tokens", &key, &body).await {
                Some(reply) => Event::Create {
                    key: idempotency,
                    status: reply.status,
                    token: reply.body["id"].as_str().map(str::to_owned),
                },
                None => Event::NoAnswer,
            }
        } else {
            let token = pool[(id * 7919 + n * 104_729) % pool.len()].clone();
            let body = json!({"idempotencyKey": idempotency});
            let path = format!("/api/tokens/{token}/redeem");
            match send(api, Method::POST, &path, &key, &body).await {
                Some(reply) => Event::Redeem {
                    token,
                    key: idempotency,
                    status: reply.status,
                },
                None => Event::NoAnswer,
            }
        };
        history.lock().push(event);
    }
}

/// Reads a token through any running node, retrying 503s.
async fn read_token(apis: &[Api], key: &str, token: &str) -> Value {
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        for api in apis {
            if let Ok(reply) = api
                .try_call(
                    Method::GET,
                    &format!("/api/tokens/{token}"),
                    Some(key),
                    None,
                )
                .await
            {
                if reply.status == 200 {
                    return reply.body;
                }
                assert!(
                    reply.status == 503,
                    "GET {token} answered {}: {}",
                    reply.status,
                    reply.body
                );
            }
        }
        assert!(Instant::now() < deadline, "token {token} unreadable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_lose_no_acknowledged_change_and_spend_no_token_twice() {
    let mut cluster = Cluster::start(3, 3, SHARDS);
    let settle = tokio::task::block_in_place(|| wait_settled(&cluster, RECOVERY_MAX));
    eprintln!("settled in {settle:?}");
    let api = cluster.api(0);
    let key = api.tenant_key("faults").await;
    let collection = api.create_collection(&key, "vouchers").await;
    let mut pool = Vec::with_capacity(POOL);
    for chunk in 0..POOL / 100 {
        let tokens: Vec<Value> = (0..100)
            .map(|i| json!({"collectionId": collection, "metadata": {"i": format!("{chunk}-{i}")}}))
            .collect();
        let reply = cluster
            .api(chunk % 3)
            .post_retrying(&key, "/api/tokens/batch", &json!({ "tokens": tokens }))
            .await
            .expect(201);
        for token in reply.body["data"].as_array().expect("data") {
            pool.push(token["id"].as_str().expect("id").to_owned());
        }
    }
    let apis: Arc<Vec<Api>> = Arc::new((0..3).map(|i| cluster.api(i)).collect());
    let pool = Arc::new(pool);
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                Arc::clone(&apis),
                key.clone(),
                collection.clone(),
                Arc::clone(&pool),
                Arc::clone(&stop),
                Arc::clone(&history),
            ))
        })
        .collect();
    let answered = || history.lock().len();
    let faults = AtomicUsize::new(0);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. kill -9 the owner of some shards; the others take them over.
    let victim = tokio::task::block_in_place(|| an_owner(&cluster, None));
    let before = answered();
    let failover = tokio::task::block_in_place(|| {
        cluster.node_mut(victim).kill9();
        wait_settled(&cluster, RECOVERY_MAX)
    });
    faults.fetch_add(1, Ordering::Relaxed);
    eprintln!("kill -9 of node {victim}: every shard served again after {failover:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(answered() > before, "clients are answered after the kill");
    tokio::task::block_in_place(|| {
        cluster.node_mut(victim).restart();
        cluster.node(victim).wait_ready(READY_TIMEOUT);
        wait_settled(&cluster, RECOVERY_MAX)
    });

    // 2. Pause another owner for longer than its lease, then resume it: its
    // shards move, and whatever it still tries to append is fenced.
    let paused = tokio::task::block_in_place(|| an_owner(&cluster, Some(victim)));
    tokio::task::block_in_place(|| cluster.node_mut(paused).sigstop());
    tokio::time::sleep(PAUSE).await;
    tokio::task::block_in_place(|| {
        let moved = served(&cluster)
            .into_iter()
            .filter(|(i, _)| *i != paused)
            .map(|(_, s)| s.len())
            .sum::<usize>();
        assert_eq!(
            moved,
            usize::from(SHARDS),
            "the paused node's shards moved to the others"
        );
        cluster.node_mut(paused).sigcont();
        wait_settled(&cluster, RECOVERY_MAX)
    });
    faults.fetch_add(1, Ordering::Relaxed);
    eprintln!("pause of node {paused}: resumed and settled");

    // 3. Kill one NATS server of three, then bring it back.
    let before = answered();
    tokio::task::block_in_place(|| cluster.nats_mut().kill(0));
    tokio::time::sleep(Duration::from_secs(8)).await;
    tokio::task::block_in_place(|| wait_settled(&cluster, RECOVERY_MAX));
    assert!(
        answered() > before,
        "clients are answered with a NATS server down"
    );
    tokio::task::block_in_place(|| {
        cluster.nats_mut().start_again(0);
        cluster.nats_mut().wait_ready(READY_TIMEOUT);
    });
    faults.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task ends");
    }
    let history = history.lock().clone();
    check(&apis, &key, &history).await;
    assert_eq!(faults.load(Ordering::Relaxed), 3);
}

/// The checker: reads every token the history mentions back.
async fn check(apis: &[Api], key: &str, history: &[Event]) {
    let mut winners: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut created = BTreeSet::new();
    let (mut ok, mut conflicts, mut unavailable, mut unanswered) = (0, 0, 0, 0);
    for event in history {
        match event {
            Event::Redeem { token, key, status } => match status {
                200 => {
                    ok += 1;
                    winners.entry(token).or_default().insert(key);
                }
                409 | 410 => conflicts += 1,
                503 => unavailable += 1,
                other => panic!("redeem of {token} answered {other}"),
            },
            Event::Create { key, status, token } => match status {
                200 | 201 => {
                    ok += 1;
                    let token = token
                        .as_ref()
                        .unwrap_or_else(|| panic!("create {key} acknowledged but not readable"));
                    created.insert(token.as_str());
                }
                503 => unavailable += 1,
                other => panic!("create {key} answered {other}"),
            },
            Event::NoAnswer => unanswered += 1,
        }
    }
    eprintln!(
        "history: {} requests: {ok} 2xx, {conflicts} 409/410, {unavailable} 503, {unanswered} unanswered; \
         {} tokens redeemed, {} created",
        history.len(),
        winners.len(),
        created.len()
    );
    assert!(ok > 0 && !winners.is_empty(), "the clients got work done");
    for (token, keys) in &winners {
        assert_eq!(
            keys.len(),
            1,
            "token {token} had successful redemptions under different keys: {keys:?}"
        );
        let read = read_token(apis, key, token).await;
        assert_eq!(
            read["status"],
            json!("redeemed"),
            "token {token} was redeemed (200) but reads {read}"
        );
        let winner = keys.iter().next().copied();
        assert_eq!(
            read["redemption"]["idempotencyKey"].as_str(),
            winner,
            "token {token}: the acknowledged redemption is the one kept"
        );
    }
    for token in created {
        read_token(apis, key, token).await;
    }
}
