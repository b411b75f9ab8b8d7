//! Crash loop: start, concurrent load, SIGKILL at a random moment with
//! requests in flight; repeat; then check that everything acknowledged in
//! any cycle is there and that no token was ever spent twice. A second loop
//! races holds, captures, releases, redeems and voids on a pool of their
//! own, and checks each token's redemption history the same way.

use crate::api::{id_of, Api};
use crate::server::{number_field, Server};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CYCLES: usize = 9;
const TASKS: usize = 16;
/// Bounds every worker's loop, whatever the timing.
const OPS_PER_TASK_MAX: usize = 5_000;
/// Load runs this long (ms, random in the range) before the kill.
const LOAD_MS: (u64, u64) = (150, 700);

/// xorshift64*: small, seedable, good enough to pick operations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Which workload a token belongs to: redeem-pool tokens are never deleted
/// and delete-pool tokens never redeemed, so each answer has one meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pool {
    Redeem,
    Delete,
}

/// An acknowledged create.
#[derive(Clone, Debug)]
struct Known {
    pool: Pool,
    /// `data` and `metadata` as sent (`None` for children: checked by
    /// existence only).
    fields: Option<(Value, Value)>,
}

/// An acknowledged first redeem.
#[derive(Clone, Debug)]
struct Win {
    key: String,
    merchant: String,
    redeemed_at: String,
    cycle: usize,
}

#[derive(Default, Debug)]
struct Counts {
    created: usize,
    won: usize,
    conflicts: usize,
    conflicts_from_earlier_cycles: usize,
    deleted: usize,
    reads: usize,
    snapshots: usize,
}

/// What the clients were told, across every cycle.
#[derive(Default)]
struct Ledger {
    tokens: HashMap<String, Known>,
    redeem_pool: Vec<String>,
    delete_pool: Vec<String>,
    wins: HashMap<String, Win>,
    deleted: HashSet<String>,
    violations: Vec<String>,
    counts: Counts,
}

impl Ledger {
    fn pick(&self, pool: Pool, rng: &mut Rng) -> Option<String> {
        let ids = match pool {
            Pool::Redeem => &self.redeem_pool,
            Pool::Delete => &self.delete_pool,
        };
        if ids.is_empty() {
            return None;
        }
        // Half the picks among the newest tokens, so that concurrent redeems
        // of one token are common.
        let window = if rng.below(2) == 0 { 24 } else { ids.len() };
        let window = window.min(ids.len()) as u64;
        Some(ids[ids.len() - 1 - rng.below(window) as usize].clone())
    }

    /// What the final restart shows against what was acknowledged.
    fn check_final(&self, all: &HashMap<String, Value>) -> Vec<String> {
        let mut problems = Vec::new();
        for (id, known) in &self.tokens {
            let Some(token) = all.get(id) else {
                problems.push(format!("acknowledged token {id} is missing"));
                continue;
            };
            let status = token["status"].as_str().unwrap_or_default();
            if let Some(win) = self.wins.get(id) {
                if status != "redeemed"
                    || token["redemption"]["idempotencyKey"] != json!(win.key)
                    || token["redemption"]["redeemedAt"] != json!(win.redeemed_at)
                {
                    problems.push(format!(
                        "acknowledged redeem {win:?} of {id} not kept: {token}"
                    ));
                }
            } else if self.deleted.contains(id) {
                if status != "deleted" {
                    problems.push(format!("acknowledged delete of {id} not kept: {token}"));
                }
            } else {
                // An unacknowledged redeem or delete may have landed before a kill.
                let allowed = match known.pool {
                    Pool::Redeem => ["active", "redeemed"],
                    Pool::Delete => ["active", "deleted"],
                };
                if !allowed.contains(&status) {
                    problems.push(format!("token {id} of pool {:?}: {token}", known.pool));
                }
            }
            if let (Some((data, metadata)), "active") = (&known.fields, status) {
                if &token["data"] != data || &token["metadata"] != metadata {
                    problems.push(format!(
                        "token {id} has other data: sent {data} {metadata}, got {token}"
                    ));
                }
            }
        }
        problems
    }

    fn add(&mut self, id: String, known: Known) {
        match known.pool {
            Pool::Redeem => self.redeem_pool.push(id.clone()),
            Pool::Delete => self.delete_pool.push(id.clone()),
        }
        self.counts.created += 1;
        self.tokens.insert(id, known);
    }
}

struct Worker {
    api: Api,
    key: String,
    collection_id: String,
    ledger: Arc<Mutex<Ledger>>,
    killed: Arc<AtomicBool>,
    cycle: usize,
    task: usize,
    rng: Rng,
}

/// Why a worker stops.
enum Stop {
    /// The server went away (expected only after the kill).
    Transport(String),
}

impl Worker {
    fn violation(&self, what: String) {
        self.ledger
            .lock()
            .unwrap()
            .violations
            .push(format!("cycle {} task {}: {what}", self.cycle, self.task));
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::api::Resp, Stop> {
        self.api
            .try_call(method, path, Some(&self.key), body)
            .await
            .map_err(|e| Stop::Transport(e.to_string()))
    }

    fn token_body(&mut self, n: usize, pool: Pool) -> Value {
        let tag = format!(
            "c{}t{}n{}r{}",
            self.cycle,
            self.task,
            n,
            self.rng.below(1000)
        );
        let pool_name = match pool {
            Pool::Redeem => "redeem",
            Pool::Delete => "delete",
        };
        json!({
            "collectionId": self.collection_id,
            "data": {"tag": tag, "n": n},
            "metadata": {"tag": tag, "pool": pool_name},
        })
    }

    fn fields(body: &Value) -> Option<(Value, Value)> {
        Some((body["data"].clone(), body["metadata"].clone()))
    }

    fn random_pool(&mut self) -> Pool {
        if self.rng.below(6) == 0 {
            Pool::Delete
        } else {
            Pool::Redeem
        }
    }

    async fn create_single(&mut self, n: usize) -> Result<(), Stop> {
        let pool = self.random_pool();
        let mut body = self.token_body(n, pool);
        if self.rng.below(3) == 0 {
            body["idempotencyKey"] = json!(format!("create-c{}-t{}-{n}", self.cycle, self.task));
        }
        let with_children = pool == Pool::Redeem && self.rng.below(4) == 0;
        if with_children {
            body["children"] = json!([
                {"collectionId": self.collection_id, "data": {"child": 1}},
                {"collectionId": self.collection_id, "data": {"child": 2}}
            ]);
        }
        let resp = self.send(Method::POST, "/api/tokens", Some(&body)).await?;
        if resp.status.as_u16() != 201 {
            self.violation(format!("create: {} {}", resp.status, resp.body));
            return Ok(());
        }
        let mut ledger = self.ledger.lock().unwrap();
        ledger.add(
            id_of(&resp.body),
            Known {
                pool,
                fields: Self::fields(&body),
            },
        );
        if with_children {
            for child in resp.body["children"].as_array().into_iter().flatten() {
                let id = child.as_str().unwrap_or_default().to_owned();
                ledger.add(
                    id,
                    Known {
                        pool: Pool::Redeem,
                        fields: None,
                    },
                );
            }
        }
        Ok(())
    }

    async fn create_batch(&mut self, n: usize) -> Result<(), Stop> {
        let size = self.rng.range(2, 6) as usize;
        let pools: Vec<Pool> = (0..size).map(|_| self.random_pool()).collect();
        let bodies: Vec<Value> = pools
            .iter()
            .enumerate()
            .map(|(i, pool)| self.token_body(n * 10 + i, *pool))
            .collect();
        let resp = self
            .send(
                Method::POST,
                "/api/tokens/batch",
                Some(&json!({ "tokens": bodies })),
            )
            .await?;
        if resp.status.as_u16() != 201 {
            self.violation(format!("batch: {} {}", resp.status, resp.body));
            return Ok(());
        }
        let data = resp.body["data"].as_array().cloned().unwrap_or_default();
        if data.len() != size {
            self.violation(format!("batch of {size} answered {} tokens", data.len()));
        }
        let mut ledger = self.ledger.lock().unwrap();
        for ((token, body), pool) in data.iter().zip(&bodies).zip(pools) {
            ledger.add(
                id_of(token),
                Known {
                    pool,
                    fields: Self::fields(body),
                },
            );
        }
        Ok(())
    }

    async fn redeem(&mut self, n: usize) -> Result<(), Stop> {
        let picked = self
            .ledger
            .lock()
            .unwrap()
            .pick(Pool::Redeem, &mut self.rng);
        let Some(id) = picked else {
            return Ok(());
        };
        let key = format!("pay-c{}-t{}-{n}", self.cycle, self.task);
        let merchant = format!("m-{}", self.task);
        let body = json!({"merchantId": merchant, "idempotencyKey": key});
        let resp = self
            .send(
                Method::POST,
                &format!("/api/tokens/{id}/redeem"),
                Some(&body),
            )
            .await?;
        let mut ledger = self.ledger.lock().unwrap();
        match resp.status.as_u16() {
            200 => {
                let got_key = resp.body["redemption"]["idempotencyKey"].as_str();
                let redeemed_at = resp.body["redemption"]["redeemedAt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if resp.replayed() || got_key != Some(key.as_str()) {
                    let what = format!("redeem of {id} with fresh key {key}: {}", resp.body);
                    drop(ledger);
                    self.violation(what);
                    return Ok(());
                }
                if let Some(earlier) = ledger.wins.get(&id) {
                    let what = format!(
                        "token {id} redeemed twice: key {} in cycle {} at {}, then key {key} at {redeemed_at}",
                        earlier.key, earlier.cycle, earlier.redeemed_at
                    );
                    drop(ledger);
                    self.violation(what);
                    return Ok(());
                }
                ledger.counts.won += 1;
                ledger.wins.insert(
                    id,
                    Win {
                        key,
                        merchant,
                        redeemed_at,
                        cycle: self.cycle,
                    },
                );
            }
            409 if resp.body["code"] == "TOKEN_ALREADY_REDEEMED" => {
                ledger.counts.conflicts += 1;
                if ledger.wins.get(&id).is_some_and(|w| w.cycle < self.cycle) {
                    ledger.counts.conflicts_from_earlier_cycles += 1;
                }
            }
            _ => {
                drop(ledger);
                self.violation(format!("redeem of {id}: {} {}", resp.status, resp.body));
            }
        }
        Ok(())
    }

    async fn delete(&mut self) -> Result<(), Stop> {
        let picked = self
            .ledger
            .lock()
            .unwrap()
            .pick(Pool::Delete, &mut self.rng);
        let Some(id) = picked else {
            return Ok(());
        };
        let resp = self
            .send(Method::DELETE, &format!("/api/tokens/{id}"), None)
            .await?;
        if resp.status.as_u16() == 204 {
            let mut ledger = self.ledger.lock().unwrap();
            ledger.counts.deleted += 1;
            ledger.deleted.insert(id);
        } else {
            self.violation(format!("delete of {id}: {} {}", resp.status, resp.body));
        }
        Ok(())
    }

    /// Reads a token and checks it against what was acknowledged before the
    /// read was sent.
    async fn read(&mut self) -> Result<(), Stop> {
        let (id, win, deleted) = {
            let mut ledger = self.ledger.lock().unwrap();
            let pool = if self.rng.below(4) == 0 {
                Pool::Delete
            } else {
                Pool::Redeem
            };
            let Some(id) = ledger.pick(pool, &mut self.rng) else {
                return Ok(());
            };
            ledger.counts.reads += 1;
            let win = ledger.wins.get(&id).cloned();
            let deleted = ledger.deleted.contains(&id);
            (id, win, deleted)
        };
        let resp = self
            .send(Method::GET, &format!("/api/tokens/{id}"), None)
            .await?;
        let token = &resp.body;
        let wrong = resp.status.as_u16() != 200
            || win.as_ref().is_some_and(|w| {
                token["status"] != "redeemed"
                    || token["redemption"]["idempotencyKey"] != json!(w.key)
            })
            || (deleted && token["status"] != "deleted");
        if wrong {
            self.violation(format!(
                "read of {id} (acknowledged win {win:?}, deleted {deleted}): {} {token}",
                resp.status
            ));
        }
        Ok(())
    }

    async fn run(mut self) {
        for n in 0..OPS_PER_TASK_MAX {
            if self.killed.load(Ordering::SeqCst) {
                return;
            }
            let done = match self.rng.below(100) {
                0..=19 => self.create_single(n).await,
                20..=29 => self.create_batch(n).await,
                30..=84 => self.redeem(n).await,
                85..=91 => self.delete().await,
                _ => self.read().await,
            };
            if let Err(Stop::Transport(e)) = done {
                if !self.killed.load(Ordering::SeqCst) {
                    self.violation(format!("a request failed before the kill: {e}"));
                }
                return;
            }
        }
    }
}

/// Tokens naming a child that does not exist. A parent and its children on
/// different shards are logged as one record per shard, but children are
/// made durable before their parent, so a kill between those appends can
/// leave at most a child without its parent — never a parent naming a child
/// that does not exist.
fn dangling_children(all: &HashMap<String, Value>) -> Vec<String> {
    let mut dangling = Vec::new();
    for (id, token) in all {
        for child in token["children"].as_array().into_iter().flatten() {
            let child = child.as_str().unwrap_or_default();
            if !all.contains_key(child) {
                dangling.push(format!("{id} -> {child}"));
            }
        }
    }
    dangling
}

/// Starts the load: [`TASKS`] workers until `killed` is set.
fn spawn_workers(
    server: &Server,
    key: &str,
    collection_id: &str,
    ledger: &Arc<Mutex<Ledger>>,
    killed: &Arc<AtomicBool>,
    cycle: usize,
    rng: &mut Rng,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..TASKS)
        .map(|task| {
            let worker = Worker {
                api: Api::new(server),
                key: key.to_owned(),
                collection_id: collection_id.to_owned(),
                ledger: Arc::clone(ledger),
                killed: Arc::clone(killed),
                cycle,
                task,
                rng: Rng::new(rng.next()),
            };
            tokio::spawn(worker.run())
        })
        .collect()
}

/// A seed from `DURABILITY_SEED`, else from the clock; printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: DURABILITY_SEED={seed}");
    seed
}

/// Creates the account, key and collection the load uses; returns the key
/// and the collection id.
async fn tenant(api: &Api) -> (String, String) {
    let account = api.create_account("load").await;
    let key = api.create_key(&id_of(&account), "pos", &["*"]).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let collection = api
        .post("/api/collections", &key, &json!({"name": "load"}))
        .await
        .expect(201)
        .body;
    (key, id_of(&collection))
}

/// The first request that validates a body compiles the request schemas
/// (hundreds of ms in a debug build): pay that before a load window, with a
/// create that is recorded like any other.
async fn warm_up(api: &Api, key: &str, collection_id: &str, ledger: &Mutex<Ledger>, cycle: usize) {
    let body = json!({
        "collectionId": collection_id,
        "data": {"warmUp": cycle},
        "metadata": {"pool": "redeem"}
    });
    let created = api.post("/api/tokens", key, &body).await.expect(201);
    ledger.lock().unwrap().add(
        id_of(&created.body),
        Known {
            pool: Pool::Redeem,
            fields: Some((body["data"].clone(), body["metadata"].clone())),
        },
    );
}

/// An admin snapshot during the load; counted when acknowledged.
async fn snapshot_during_load(api: Api, ledger: Arc<Mutex<Ledger>>, after: Duration) {
    tokio::time::sleep(after).await;
    let resp = api
        .try_call(
            Method::POST,
            "/api/admin/snapshot",
            Some(api.admin()),
            Some(&json!({})),
        )
        .await;
    let mut ledger = ledger.lock().unwrap();
    match resp {
        Ok(resp) if resp.status.as_u16() == 200 => ledger.counts.snapshots += 1,
        Ok(resp) => ledger
            .violations
            .push(format!("admin snapshot: {} {}", resp.status, resp.body)),
        // The kill came first.
        Err(_) => {}
    }
}

/// Checks redeems acknowledged in earlier cycles right after a restart: a
/// fresh key gets 409, the winning key replays.
async fn check_earlier_wins(api: &Api, key: &str, ledger: &Mutex<Ledger>, sample: usize) {
    let wins: Vec<(String, Win)> = {
        let ledger = ledger.lock().unwrap();
        let mut wins: Vec<_> = ledger
            .wins
            .iter()
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        wins.sort_by(|a, b| a.0.cmp(&b.0));
        wins.into_iter().take(sample).collect()
    };
    for (id, win) in wins {
        let fresh = json!({"merchantId": "m-late", "idempotencyKey": format!("late-{id}")});
        let resp = api.redeem(key, &id, &fresh).await;
        assert_eq!(
            resp.status.as_u16(),
            409,
            "token {id} won in cycle {} must stay redeemed: {}",
            win.cycle,
            resp.body
        );
        let replay = json!({"merchantId": win.merchant, "idempotencyKey": win.key});
        let resp = api.redeem(key, &id, &replay).await.expect(200);
        assert!(
            resp.replayed(),
            "the winning request replays: {}",
            resp.body
        );
        assert_eq!(
            resp.body["redemption"]["redeemedAt"],
            json!(win.redeemed_at)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_nothing_acknowledged_and_never_spends_twice() {
    let seed = seed("crash loop");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    let (key, collection_id) = {
        let mut server = Server::start(dir.path());
        let tenant = tenant(&Api::new(&server)).await;
        server.kill9();
        tenant
    };

    let mut restores = Vec::new();
    for cycle in 0..CYCLES {
        // Restores re-route tokens when the shard count changes, and
        // snapshots taken under load hold each shard as of another LSN.
        let shards = [2, 3, 1][cycle % 3];
        let mut server = Server::options(dir.path()).shards(shards).start();
        let done = server.log_line("restore done");
        restores.push((
            number_field(&done, "snapshot_tokens"),
            number_field(&done, "records_applied"),
        ));
        let api = Api::new(&server);
        // Collection and key survived every earlier kill.
        api.get(&format!("/api/collections/{collection_id}"), &key)
            .await
            .expect(200);
        warm_up(&api, &key, &collection_id, &ledger, cycle).await;
        check_earlier_wins(&api, &key, &ledger, 5).await;
        if cycle % 3 == 2 {
            api.snapshot().await;
            ledger.lock().unwrap().counts.snapshots += 1;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let load_ms = rng.range(LOAD_MS.0, LOAD_MS.1);
        let mut tasks = spawn_workers(
            &server,
            &key,
            &collection_id,
            &ledger,
            &killed,
            cycle,
            &mut rng,
        );
        if cycle % 3 == 1 {
            let after = Duration::from_millis(rng.below(load_ms));
            tasks.push(tokio::spawn(snapshot_during_load(
                Api::new(&server),
                Arc::clone(&ledger),
                after,
            )));
        }
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill9();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("workers stop once the server is gone")
                .expect("a worker panicked");
        }
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.violations.is_empty(),
            "seed {seed}, cycle {cycle}:\n{}",
            ledger.violations.join("\n")
        );
    }

    // The final start: everything acknowledged in any cycle is there.
    let server = Server::start(dir.path());
    let done = server.log_line("restore done");
    restores.push((
        number_field(&done, "snapshot_tokens"),
        number_field(&done, "records_applied"),
    ));
    let api = Api::new(&server);
    let all: HashMap<String, Value> = api
        .all_tokens(&key)
        .await
        .into_iter()
        .map(|t| (id_of(&t), t))
        .collect();
    let (problems, summary) = {
        let ledger = ledger.lock().unwrap();
        let summary = format!(
            "seed {seed}: {CYCLES} cycles in {:?}; {:?}; restores (snapshot tokens, records replayed): {restores:?}",
            started.elapsed(),
            ledger.counts,
        );
        let mut problems = ledger.check_final(&all);
        problems.extend(
            dangling_children(&all)
                .into_iter()
                .map(|d| format!("a parent names a child that does not exist: {d}")),
        );
        (problems, summary)
    };
    eprintln!("crash loop: {summary}");
    assert!(
        problems.is_empty(),
        "{summary}\n{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    check_earlier_wins(&api, &key, &ledger, 40).await;

    // The loop did what it is meant to: the checks above had material.
    let ledger = ledger.lock().unwrap();
    let counts = &ledger.counts;
    assert!(counts.created > 100, "{summary}");
    assert!(counts.won > 20 && counts.deleted > 0, "{summary}");
    assert!(counts.conflicts_from_earlier_cycles > 0, "{summary}");
    assert!(
        restores
            .iter()
            .any(|&(snap, replayed)| snap > 0 && replayed > 0),
        "some restore combined a snapshot and the WAL after it: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_in_flight_requests_and_snapshots_everything() {
    let seed = seed("sigterm under load");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let (key, collection_id) = tenant(&api).await;
    warm_up(&api, &key, &collection_id, &ledger, 0).await;

    let stopping = Arc::new(AtomicBool::new(false));
    let tasks = spawn_workers(
        &server,
        &key,
        &collection_id,
        &ledger,
        &stopping,
        0,
        &mut rng,
    );
    tokio::time::sleep(Duration::from_millis(rng.range(LOAD_MS.0, LOAD_MS.1))).await;
    // From here a request may find the server gone (not an error); every
    // answer it still gives is checked as before.
    stopping.store(true, Ordering::SeqCst);
    let status = server.terminate();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("workers stop once the server is gone")
            .expect("a worker panicked");
    }
    let log = server.log().text();
    assert_eq!(status.code(), Some(0), "SIGTERM under load exits 0:\n{log}");
    server.log_line("snapshot written");
    server.log_line("tokend stopped");
    {
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.violations.is_empty(),
            "seed {seed}:\n{}",
            ledger.violations.join("\n")
        );
    }

    // The final snapshot holds every acknowledged change: nothing to replay.
    let server = Server::start(dir.path());
    let done = server.log_line("restore done");
    assert_eq!(number_field(&done, "records_applied"), 0, "{done}");
    let all: HashMap<String, Value> = Api::new(&server)
        .all_tokens(&key)
        .await
        .into_iter()
        .map(|t| (id_of(&t), t))
        .collect();
    let ledger = ledger.lock().unwrap();
    let problems = ledger.check_final(&all);
    assert!(
        problems.is_empty(),
        "seed {seed}: {:?}\n{}",
        ledger.counts,
        problems.join("\n")
    );
    assert!(ledger.counts.created > 10, "{:?}", ledger.counts);
    eprintln!("sigterm under load: seed {seed}: {:?}", ledger.counts);
}

// Lifecycle mix: holds, captures, releases, redeems and voids race on a pool
// of their own across the same kind of kill -9 cycles. Every key is unique,
// so each answer has one meaning; each read of a token is checked against
// the answers received before it was sent and the requests sent before its
// answer came.

/// Merchants the lifecycle collection allows; workers pick among them.
const LIFE_MERCHANTS: [&str; 3] = ["m-north", "m-south", "m-east"];
/// Lifecycle tokens created before the first cycle, then at each start.
const LIFE_POOL: (usize, usize) = (24, 4);
/// Ended holds a token remembers: an older hold id is unknown (404).
const ENDED_HOLDS_KEPT: usize = 20;
/// Voids a token may take (then 409 `VOID_LIMIT_REACHED`).
const VOIDS_MAX: usize = 20;

/// A request as sent, under its idempotency key.
#[derive(Clone, Debug)]
struct Sent {
    merchant: String,
    /// Its status once answered; `None`: lost at a kill, or in flight.
    answer: Option<u16>,
    /// A hold answered 201: its id and `expiresAt`.
    placed: Option<(String, String)>,
}

/// An acknowledged spend that was not a replay: a redeem or a capture.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Spend {
    key: String,
    merchant: String,
    redeemed_at: String,
    hold: Option<String>,
}

/// An acknowledged void.
#[derive(Clone, Debug)]
struct VoidAck {
    key: String,
    voided_at: String,
    redeemed_at: String,
}

/// A hold workers may capture or release: acknowledged, or seen in a read.
#[derive(Clone, Debug)]
struct KnownHold {
    id: String,
    key: String,
    merchant: String,
    acked: bool,
}

/// One lifecycle token: what was sent, what was answered, what was seen.
#[derive(Clone, Debug, Default)]
struct LifeToken {
    /// `data` as created.
    data: Value,
    redeems: HashMap<String, Sent>,
    holds: HashMap<String, Sent>,
    voids: HashMap<String, Sent>,
    spends: Vec<Spend>,
    voided: Vec<VoidAck>,
    /// Hold ids acknowledged as captured (a replay too) or released.
    captured: HashSet<String>,
    released: HashSet<String>,
    /// Refusals: each rests on durable state.
    capture_not_active: HashSet<String>,
    release_not_active: HashSet<String>,
    /// Acknowledged holds a capture or release did not find.
    hold_not_found: HashSet<String>,
    /// `redeemedAt` of `TOKEN_ALREADY_REDEEMED`, `expiresAt` of `TOKEN_HELD`.
    redeemed_at_conflicts: HashSet<String>,
    held_until: HashSet<String>,
    void_limit: bool,
    /// What a worker last saw (often stale): picks operations that may work.
    status: String,
    holds_seen: Vec<KnownHold>,
}

impl LifeToken {
    fn new(data: Value) -> Self {
        Self {
            data,
            status: "active".to_owned(),
            ..Self::default()
        }
    }

    fn sent(&mut self, kind: LifeOp) -> &mut HashMap<String, Sent> {
        match kind {
            LifeOp::Redeem => &mut self.redeems,
            LifeOp::Hold => &mut self.holds,
            LifeOp::Void => &mut self.voids,
        }
    }

    /// Learns the status and live hold of a token body.
    fn observe(&mut self, token: &Value) {
        if let Some(status) = token["status"].as_str() {
            self.status = status.to_owned();
        }
        let hold = &token["hold"];
        if let Some(id) = hold["id"].as_str() {
            if !self.holds_seen.iter().any(|h| h.id == id) {
                self.holds_seen.push(KnownHold {
                    id: id.to_owned(),
                    key: hold["idempotencyKey"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    merchant: hold["merchantId"].as_str().unwrap_or_default().to_owned(),
                    acked: false,
                });
            }
        }
    }
}

/// Requests recorded before they are sent.
#[derive(Clone, Copy)]
enum LifeOp {
    Redeem,
    Hold,
    Void,
}

#[derive(Default, Debug)]
struct LifeCounts {
    created: usize,
    holds: usize,
    captures: usize,
    capture_replays: usize,
    releases: usize,
    release_replays: usize,
    redeems: usize,
    voids: usize,
    held_conflicts: usize,
    redeemed_conflicts: usize,
    not_active: usize,
    hold_not_found: usize,
    not_redeemed: usize,
    void_limit: usize,
    reads: usize,
    /// Requests never answered (in flight at a kill).
    lost: usize,
    /// Acknowledged spends of a token redeemed and voided before.
    respends: usize,
    snapshots: usize,
}

/// What the lifecycle clients sent and were told, across every cycle.
#[derive(Default)]
struct LifeLedger {
    tokens: HashMap<String, LifeToken>,
    pool: Vec<String>,
    violations: Vec<String>,
    counts: LifeCounts,
}

impl LifeLedger {
    fn add(&mut self, id: String, data: Value) {
        self.pool.push(id.clone());
        self.counts.created += 1;
        self.tokens.insert(id, LifeToken::new(data));
    }

    /// A token, half the time among the newest, with what was last seen of
    /// it and the holds known on it (newest last).
    fn pick(&self, rng: &mut Rng) -> Option<(String, String, Vec<KnownHold>)> {
        if self.pool.is_empty() {
            return None;
        }
        let window = if rng.below(2) == 0 {
            8
        } else {
            self.pool.len()
        };
        let window = window.min(self.pool.len()) as u64;
        let id = &self.pool[self.pool.len() - 1 - rng.below(window) as usize];
        let token = &self.tokens[id];
        let from = token.holds_seen.len().saturating_sub(3);
        Some((
            id.clone(),
            token.status.clone(),
            token.holds_seen[from..].to_vec(),
        ))
    }

    /// Every request never answered: lost at a kill (call between cycles).
    fn lost(&self) -> usize {
        self.tokens
            .values()
            .flat_map(|t| {
                t.redeems
                    .values()
                    .chain(t.holds.values())
                    .chain(t.voids.values())
            })
            .filter(|s| s.answer.is_none())
            .count()
    }
}

/// A timestamp as the API writes it (`2026-01-17T18:00:23.000Z`): these
/// compare as text in time order.
fn is_stamp(text: &str) -> bool {
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

/// The timestamp an error message gives after `marker`.
fn stamp_in(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.rfind(marker)? + marker.len()..];
    let stamp = rest.trim_end_matches('.');
    is_stamp(stamp).then(|| stamp.to_owned())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Checks a lifecycle token as read against the ledger: `acks` holds the
/// answers received before the read was sent, `sent` the requests sent
/// before its answer came. `settled`: nothing is in flight (between
/// cycles), so an unanswered request is lost for good and the bounds that
/// count unanswered requests apply. Returns the acknowledged spends found
/// after a void (re-redeems).
fn check_life_token(
    token: &Value,
    acks: &LifeToken,
    sent: &LifeToken,
    settled: bool,
    problems: &mut Vec<String>,
) -> usize {
    let mut p: Vec<String> = Vec::new();
    let status = text(&token["status"]);
    let voided: Vec<&Value> = token["voidedRedemptions"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let current = Some(&token["redemption"]).filter(|r| !r.is_null());
    let hold = Some(&token["hold"]).filter(|h| !h.is_null());
    let history: Vec<&Value> = voided.iter().copied().chain(current).collect();

    let consistent = match status {
        "active" => current.is_none() && hold.is_none(),
        "held" => current.is_none() && hold.is_some(),
        "redeemed" => current.is_some() && hold.is_none(),
        _ => false,
    };
    if !consistent {
        p.push(format!(
            "status {status:?} with redemption {current:?}, hold {hold:?}"
        ));
    }
    let expected_data = if history.is_empty() {
        &acks.data
    } else {
        &Value::Null
    };
    if &token["data"] != expected_data {
        p.push(format!(
            "data {} where {expected_data} was due",
            token["data"]
        ));
    }

    // The history is sequential: each redemption was voided before the next.
    for (i, v) in voided.iter().enumerate() {
        let (redeemed_at, voided_at) = (text(&v["redeemedAt"]), text(&v["voidedAt"]));
        if !is_stamp(redeemed_at) || !is_stamp(voided_at) || redeemed_at > voided_at {
            p.push(format!("voided redemption {i} voided before it was made"));
        }
        if let Some(next) = history.get(i + 1) {
            if voided_at > text(&next["redeemedAt"]) {
                p.push(format!("redemption {} made before {i} was voided", i + 1));
            }
        }
    }
    if let (Some(hold), Some(last)) = (hold, voided.last()) {
        if text(&hold["heldAt"]) < text(&last["voidedAt"]) {
            p.push("the hold was placed before the last void".to_owned());
        }
    }
    if voided.len() > VOIDS_MAX || (acks.void_limit && voided.len() != VOIDS_MAX) {
        p.push(format!(
            "{} voids (limit answered: {})",
            voided.len(),
            acks.void_limit
        ));
    }

    // Everything in it was asked for, once, by a request that was not
    // refused: answered with success, or never answered.
    let may_have = |s: &Sent, ok: u16| s.answer.is_none_or(|a| a == ok);
    let placed = |s: &Sent, hold_id: &str| {
        may_have(s, 201) && s.placed.as_ref().is_none_or(|(id, _)| id == hold_id)
    };
    let mut keys = HashSet::new();
    for e in &history {
        let key = text(&e["idempotencyKey"]);
        let merchant = text(&e["merchantId"]);
        if !keys.insert(key) {
            p.push(format!("two redemptions with key {key}"));
        }
        let asked = match e["holdId"].as_str() {
            Some(hold_id) => sent
                .holds
                .get(key)
                .is_some_and(|s| s.merchant == merchant && placed(s, hold_id)),
            None => sent
                .redeems
                .get(key)
                .is_some_and(|s| s.merchant == merchant && may_have(s, 200)),
        };
        if !asked {
            p.push(format!("redemption {e} matches no request sent"));
        }
    }
    let mut void_keys = HashSet::new();
    for v in &voided {
        let key = text(&v["voidIdempotencyKey"]);
        if !void_keys.insert(key) || !sent.voids.get(key).is_some_and(|s| may_have(s, 200)) {
            p.push(format!(
                "void {key:?} is a duplicate or matches no request sent"
            ));
        }
    }
    if let Some(hold) = hold {
        let key = text(&hold["idempotencyKey"]);
        let asked = sent.holds.get(key).is_some_and(|s| {
            s.merchant == text(&hold["merchantId"]) && placed(s, text(&hold["id"]))
        });
        if !asked {
            p.push(format!("hold {hold} matches no hold request sent"));
        }
    }

    // Every acknowledged change is there.
    let mut respends = 0;
    for s in &acks.spends {
        let at = history.iter().position(|e| {
            text(&e["redeemedAt"]) == s.redeemed_at
                && text(&e["idempotencyKey"]) == s.key
                && text(&e["merchantId"]) == s.merchant
                && e["holdId"].as_str() == s.hold.as_deref()
        });
        match at {
            None => p.push(format!("acknowledged spend {s:?} is lost")),
            Some(0) => {}
            Some(_) => respends += 1,
        }
    }
    for a in &acks.voided {
        let kept = voided.iter().any(|v| {
            text(&v["voidIdempotencyKey"]) == a.key
                && text(&v["voidedAt"]) == a.voided_at
                && text(&v["redeemedAt"]) == a.redeemed_at
        });
        if !kept {
            p.push(format!("acknowledged void {a:?} is lost"));
        }
    }
    let spent_holds: HashSet<&str> = history
        .iter()
        .filter_map(|e| e["holdId"].as_str())
        .collect();
    let held = hold.map(|h| text(&h["id"]));
    let current_hold = current.and_then(|r| r["holdId"].as_str());
    for h in &acks.captured {
        if !spent_holds.contains(h.as_str()) {
            p.push(format!("acknowledged capture of hold {h} is lost"));
        }
    }
    for h in &acks.released {
        if spent_holds.contains(h.as_str()) || held == Some(h.as_str()) {
            p.push(format!("hold {h} was released, yet it is live or captured"));
        }
    }
    // Refusals the history must not contradict.
    for h in &acks.capture_not_active {
        if current_hold == Some(h.as_str()) || held == Some(h.as_str()) {
            p.push(format!("a capture of hold {h} was refused as not active, yet it is live or the current redemption"));
        }
    }
    for h in &acks.release_not_active {
        if !spent_holds.contains(h.as_str()) {
            p.push(format!(
                "a release of hold {h} was refused as captured, yet no redemption captured it"
            ));
        }
    }
    for at in &acks.redeemed_at_conflicts {
        if !history.iter().any(|e| text(&e["redeemedAt"]) == at) {
            p.push(format!(
                "a 409 named a redemption at {at} that is not in the history"
            ));
        }
    }
    // Never spent twice without a void between.
    let spends: HashSet<&Spend> = acks.spends.iter().collect();
    if spends.len() > voided.len() + 1 {
        p.push(format!(
            "{} acknowledged spends but {} voids",
            spends.len(),
            voided.len()
        ));
    }

    if settled {
        // Bounds that count the requests that may have landed unanswered.
        let voids_max = sent.voids.values().filter(|s| may_have(s, 200)).count();
        if spends.len() > voids_max + 1 || voided.len() > voids_max {
            p.push(format!(
                "{} acknowledged spends and {} voids, but at most {voids_max} void requests took effect",
                spends.len(),
                voided.len()
            ));
        }
        let holds_max = sent.holds.values().filter(|s| may_have(s, 201)).count();
        if holds_max <= ENDED_HOLDS_KEPT && !acks.hold_not_found.is_empty() {
            p.push(format!(
                "holds {:?} not found, but at most {holds_max} holds were ever placed",
                acks.hold_not_found
            ));
        }
        let lost_hold = sent.holds.values().any(|s| s.answer.is_none());
        for until in &acks.held_until {
            let placed = sent
                .holds
                .values()
                .any(|s| s.placed.as_ref().is_some_and(|(_, e)| e == until));
            if !placed && !lost_hold {
                p.push(format!(
                    "a 409 named a hold until {until} that no hold request placed"
                ));
            }
        }
    }
    problems.extend(
        p.into_iter()
            .map(|what| format!("lifecycle token: {what}; read {token}")),
    );
    respends
}

struct LifeWorker {
    api: Api,
    key: String,
    ledger: Arc<Mutex<LifeLedger>>,
    killed: Arc<AtomicBool>,
    cycle: usize,
    task: usize,
    rng: Rng,
}

impl LifeWorker {
    fn violation(&self, what: String) {
        self.ledger
            .lock()
            .unwrap()
            .violations
            .push(format!("cycle {} task {}: {what}", self.cycle, self.task));
    }

    async fn send(&self, path: &str, body: Option<&Value>) -> Result<crate::api::Resp, Stop> {
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        self.api
            .try_call(method, path, Some(&self.key), body)
            .await
            .map_err(|e| Stop::Transport(e.to_string()))
    }

    fn merchant(&mut self) -> String {
        LIFE_MERCHANTS[self.rng.below(LIFE_MERCHANTS.len() as u64) as usize].to_owned()
    }

    /// Records a request before it is sent.
    fn record_sent(&self, id: &str, op: LifeOp, key: &str, merchant: &str) {
        let mut ledger = self.ledger.lock().unwrap();
        let token = ledger.tokens.get_mut(id).expect("a pool token");
        token.sent(op).insert(
            key.to_owned(),
            Sent {
                merchant: merchant.to_owned(),
                answer: None,
                placed: None,
            },
        );
    }

    /// Records the answer to a request recorded by `record_sent`, then lets
    /// `f` record what it means; a `String` from `f` is a violation.
    fn record_answer(
        &self,
        id: &str,
        op: LifeOp,
        key: &str,
        resp: &crate::api::Resp,
        f: impl FnOnce(&mut LifeToken, &mut LifeCounts) -> Result<(), String>,
    ) {
        let mut ledger = self.ledger.lock().unwrap();
        let LifeLedger { tokens, counts, .. } = &mut *ledger;
        let token = tokens.get_mut(id).expect("a pool token");
        if let Some(sent) = token.sent(op).get_mut(key) {
            sent.answer = Some(resp.status.as_u16());
        }
        if let Err(what) = f(token, counts) {
            drop(ledger);
            self.violation(format!("{id}: {what}: {} {}", resp.status, resp.body));
        }
    }

    /// The meaning of a 409 that a redeem and a hold may both get.
    fn spend_refused(
        resp: &crate::api::Resp,
        t: &mut LifeToken,
        c: &mut LifeCounts,
    ) -> Result<(), String> {
        let message = text(&resp.body["message"]);
        match (resp.status.as_u16(), text(&resp.body["code"])) {
            (409, "TOKEN_HELD") => {
                c.held_conflicts += 1;
                t.held_until
                    .insert(stamp_in(message, " until ").ok_or("no expiresAt")?);
            }
            (409, "TOKEN_ALREADY_REDEEMED") => {
                c.redeemed_conflicts += 1;
                t.redeemed_at_conflicts
                    .insert(stamp_in(message, " at ").ok_or("no redeemedAt")?);
            }
            _ => return Err("unexpected answer".to_owned()),
        }
        Ok(())
    }

    async fn redeem(&mut self, id: &str, n: usize) -> Result<(), Stop> {
        let key = format!("lr-c{}-t{}-{n}", self.cycle, self.task);
        let merchant = self.merchant();
        self.record_sent(id, LifeOp::Redeem, &key, &merchant);
        let body = json!({"merchantId": merchant, "idempotencyKey": key});
        let resp = self
            .send(&format!("/api/tokens/{id}/redeem"), Some(&body))
            .await?;
        self.record_answer(id, LifeOp::Redeem, &key, &resp, |t, c| {
            if resp.status.as_u16() != 200 {
                return Self::spend_refused(&resp, t, c);
            }
            let r = &resp.body["redemption"];
            if resp.replayed()
                || resp.body["status"] != "redeemed"
                || r["idempotencyKey"] != json!(key)
                || r["merchantId"] != json!(merchant)
                || !r["holdId"].is_null()
            {
                return Err("not the redemption asked for".to_owned());
            }
            c.redeems += 1;
            t.spends.push(Spend {
                key: key.clone(),
                merchant: merchant.clone(),
                redeemed_at: text(&r["redeemedAt"]).to_owned(),
                hold: None,
            });
            t.observe(&resp.body);
            Ok(())
        });
        Ok(())
    }

    async fn hold(&mut self, id: &str, n: usize) -> Result<(), Stop> {
        let key = format!("lh-c{}-t{}-{n}", self.cycle, self.task);
        let merchant = self.merchant();
        self.record_sent(id, LifeOp::Hold, &key, &merchant);
        let mut body = json!({"merchantId": merchant, "idempotencyKey": key});
        if self.rng.below(2) == 0 {
            body["ttlSecs"] = json!(self.rng.range(600, 900));
        }
        let resp = self
            .send(&format!("/api/tokens/{id}/holds"), Some(&body))
            .await?;
        self.record_answer(id, LifeOp::Hold, &key, &resp, |t, c| {
            if resp.status.as_u16() != 201 {
                return Self::spend_refused(&resp, t, c);
            }
            let h = &resp.body["hold"];
            let (hold_id, expires_at) = (text(&h["id"]), text(&h["expiresAt"]));
            if resp.replayed()
                || resp.body["status"] != "held"
                || h["idempotencyKey"] != json!(key)
                || h["merchantId"] != json!(merchant)
                || hold_id.is_empty()
                || !is_stamp(expires_at)
            {
                return Err("not the hold asked for".to_owned());
            }
            c.holds += 1;
            if let Some(sent) = t.holds.get_mut(&key) {
                sent.placed = Some((hold_id.to_owned(), expires_at.to_owned()));
            }
            t.holds_seen.retain(|k| k.id != hold_id);
            t.holds_seen.push(KnownHold {
                id: hold_id.to_owned(),
                key: key.clone(),
                merchant: merchant.clone(),
                acked: true,
            });
            t.observe(&resp.body);
            Ok(())
        });
        Ok(())
    }

    /// The meaning of a 409 or 404 that a capture and a release may get.
    fn hold_refused(
        resp: &crate::api::Resp,
        hold: &KnownHold,
        t: &mut LifeToken,
        c: &mut LifeCounts,
        capture: bool,
    ) -> Result<(), String> {
        match (resp.status.as_u16(), text(&resp.body["code"])) {
            (409, "HOLD_NOT_ACTIVE") => {
                c.not_active += 1;
                let refused = if capture {
                    &mut t.capture_not_active
                } else {
                    &mut t.release_not_active
                };
                refused.insert(hold.id.clone());
            }
            // An acknowledged hold is found unless 20 later ones ended; one
            // seen in a read may have been lost with a kill.
            (404, "HOLD_NOT_FOUND") => {
                c.hold_not_found += 1;
                if hold.acked {
                    t.hold_not_found.insert(hold.id.clone());
                }
            }
            _ => return Err(format!("unexpected answer for hold {}", hold.id)),
        }
        Ok(())
    }

    async fn capture(&mut self, id: &str, hold: &KnownHold) -> Result<(), Stop> {
        let path = format!("/api/tokens/{id}/holds/{}/capture", hold.id);
        let resp = self.send(&path, Some(&json!({}))).await?;
        let mut ledger = self.ledger.lock().unwrap();
        let LifeLedger { tokens, counts, .. } = &mut *ledger;
        let t = tokens.get_mut(id).expect("a pool token");
        let outcome = if resp.status.as_u16() == 200 {
            let r = &resp.body["redemption"];
            if resp.body["status"] != "redeemed"
                || r["holdId"] != json!(hold.id)
                || r["idempotencyKey"] != json!(hold.key)
                || r["merchantId"] != json!(hold.merchant)
            {
                Err(format!("capture of {hold:?} gave another redemption"))
            } else {
                t.observe(&resp.body);
                t.captured.insert(hold.id.clone());
                if resp.replayed() {
                    counts.capture_replays += 1;
                    Ok(())
                } else if t.spends.iter().any(|s| s.hold.as_ref() == Some(&hold.id)) {
                    Err(format!("hold {} captured twice", hold.id))
                } else {
                    counts.captures += 1;
                    t.spends.push(Spend {
                        key: hold.key.clone(),
                        merchant: hold.merchant.clone(),
                        redeemed_at: text(&r["redeemedAt"]).to_owned(),
                        hold: Some(hold.id.clone()),
                    });
                    Ok(())
                }
            }
        } else {
            Self::hold_refused(&resp, hold, t, counts, true)
        };
        drop(ledger);
        if let Err(what) = outcome {
            self.violation(format!("{id}: {what}: {} {}", resp.status, resp.body));
        }
        Ok(())
    }

    async fn release(&mut self, id: &str, hold: &KnownHold) -> Result<(), Stop> {
        let path = format!("/api/tokens/{id}/holds/{}/release", hold.id);
        let resp = self.send(&path, Some(&json!({}))).await?;
        let mut ledger = self.ledger.lock().unwrap();
        let LifeLedger { tokens, counts, .. } = &mut *ledger;
        let t = tokens.get_mut(id).expect("a pool token");
        let outcome = if resp.status.as_u16() == 200 {
            t.observe(&resp.body);
            t.released.insert(hold.id.clone());
            if resp.replayed() {
                counts.release_replays += 1;
                Ok(())
            } else if resp.body["status"] != "active" || resp.body["hold"] != Value::Null {
                Err(format!("release of {} left the token held", hold.id))
            } else {
                counts.releases += 1;
                Ok(())
            }
        } else {
            Self::hold_refused(&resp, hold, t, counts, false)
        };
        drop(ledger);
        if let Err(what) = outcome {
            self.violation(format!("{id}: {what}: {} {}", resp.status, resp.body));
        }
        Ok(())
    }

    async fn void(&mut self, id: &str, n: usize) -> Result<(), Stop> {
        let key = format!("lv-c{}-t{}-{n}", self.cycle, self.task);
        let reason = format!("refund {n}");
        self.record_sent(id, LifeOp::Void, &key, "");
        let body = json!({"reason": reason, "idempotencyKey": key});
        let resp = self
            .send(&format!("/api/tokens/{id}/redemption/void"), Some(&body))
            .await?;
        self.record_answer(id, LifeOp::Void, &key, &resp, |t, c| {
            match (resp.status.as_u16(), text(&resp.body["code"])) {
                (200, _) => {}
                (409, "TOKEN_NOT_REDEEMED") => {
                    c.not_redeemed += 1;
                    return Ok(());
                }
                (409, "VOID_LIMIT_REACHED") => {
                    c.void_limit += 1;
                    t.void_limit = true;
                    return Ok(());
                }
                _ => return Err("unexpected answer".to_owned()),
            }
            let last = resp.body["voidedRedemptions"]
                .as_array()
                .and_then(|v| v.last())
                .cloned()
                .unwrap_or_default();
            if resp.replayed()
                || resp.body["status"] != "active"
                || !resp.body["redemption"].is_null()
                || last["voidIdempotencyKey"] != json!(key)
                || last["voidReason"] != json!(reason)
            {
                return Err("not the void asked for".to_owned());
            }
            c.voids += 1;
            t.voided.push(VoidAck {
                key: key.clone(),
                voided_at: text(&last["voidedAt"]).to_owned(),
                redeemed_at: text(&last["redeemedAt"]).to_owned(),
            });
            t.observe(&resp.body);
            Ok(())
        });
        Ok(())
    }

    /// Reads a token and checks it against the ledger.
    async fn read(&mut self, id: &str) -> Result<(), Stop> {
        let acks = self.ledger.lock().unwrap().tokens[id].clone();
        let resp = self.send(&format!("/api/tokens/{id}"), None).await?;
        let mut ledger = self.ledger.lock().unwrap();
        ledger.counts.reads += 1;
        let mut problems = Vec::new();
        if resp.status.as_u16() == 200 {
            let t = ledger.tokens.get_mut(id).expect("a pool token");
            check_life_token(&resp.body, &acks, t, false, &mut problems);
            t.observe(&resp.body);
        } else {
            problems.push(format!("read of {id}: {} {}", resp.status, resp.body));
        }
        drop(ledger);
        for what in problems {
            self.violation(what);
        }
        Ok(())
    }

    async fn step(&mut self, n: usize) -> Result<(), Stop> {
        let picked = self.ledger.lock().unwrap().pick(&mut self.rng);
        let Some((id, status, holds)) = picked else {
            return Ok(());
        };
        let roll = self.rng.below(100);
        // The newest known hold (the live one when the token is held), or,
        // a third of the time, any recent one.
        let older = self.rng.below(3) == 0;
        let hold = match holds.len() {
            0 => None,
            len if older => Some(holds[self.rng.below(len as u64) as usize].clone()),
            len => Some(holds[len - 1].clone()),
        };
        match (status.as_str(), roll, hold) {
            (_, 0..=4, _) => self.read(&id).await,
            ("held", 5..=44, Some(h)) => self.capture(&id, &h).await,
            ("held", 45..=74, Some(h)) => self.release(&id, &h).await,
            ("held", 75..=87, _) => self.redeem(&id, n).await,
            ("redeemed", 5..=64, _) => self.void(&id, n).await,
            ("redeemed", 65..=79, _) => self.redeem(&id, n).await,
            ("redeemed", 80..=89, Some(h)) => self.capture(&id, &h).await,
            ("redeemed", 90.., Some(h)) => self.release(&id, &h).await,
            ("active", 5..=44, _) => self.hold(&id, n).await,
            ("active", 45..=79, _) => self.redeem(&id, n).await,
            ("active", 80..=89, _) => self.void(&id, n).await,
            ("active", 90..=94, Some(h)) => self.capture(&id, &h).await,
            ("active", 95.., Some(h)) => self.release(&id, &h).await,
            _ => self.hold(&id, n).await,
        }
    }

    async fn run(mut self) {
        for n in 0..OPS_PER_TASK_MAX {
            if self.killed.load(Ordering::SeqCst) {
                return;
            }
            if let Err(Stop::Transport(e)) = self.step(n).await {
                if !self.killed.load(Ordering::SeqCst) {
                    self.violation(format!("a request failed before the kill: {e}"));
                }
                return;
            }
        }
    }
}

/// Creates `count` lifecycle tokens in one batch and records them.
async fn add_life_tokens(
    api: &Api,
    key: &str,
    collection_id: &str,
    ledger: &Mutex<LifeLedger>,
    cycle: usize,
    count: usize,
) {
    let bodies: Vec<Value> = (0..count)
        .map(|i| json!({"collectionId": collection_id, "data": {"life": format!("c{cycle}-{i}")}}))
        .collect();
    let resp = api
        .post("/api/tokens/batch", key, &json!({ "tokens": bodies }))
        .await
        .expect(201);
    let data = resp.body["data"].as_array().expect("data");
    assert_eq!(data.len(), count, "{}", resp.body);
    let mut ledger = ledger.lock().unwrap();
    for (token, body) in data.iter().zip(&bodies) {
        ledger.add(id_of(token), body["data"].clone());
    }
}

/// After a restart, with nothing in flight: every lifecycle token checked
/// against everything sent and answered so far. Reads each token (or, with
/// `listed`, takes it from the list); returns the problems.
async fn check_life_pool(
    api: &Api,
    key: &str,
    ledger: &Mutex<LifeLedger>,
    listed: Option<&HashMap<String, Value>>,
) -> Vec<String> {
    let ids = ledger.lock().unwrap().pool.clone();
    let mut problems = Vec::new();
    let mut respends = 0;
    for id in ids {
        let token = match listed {
            Some(all) => match all.get(&id) {
                Some(token) => token.clone(),
                None => {
                    problems.push(format!("lifecycle token {id} is missing"));
                    continue;
                }
            },
            None => {
                let resp = api.get_token(key, &id).await;
                if resp.status.as_u16() != 200 {
                    problems.push(format!(
                        "lifecycle token {id}: {} {}",
                        resp.status, resp.body
                    ));
                    continue;
                }
                resp.body
            }
        };
        let mut ledger = ledger.lock().unwrap();
        let t = ledger.tokens.get_mut(&id).expect("a pool token");
        respends += check_life_token(&token, t, t, true, &mut problems);
        t.observe(&token);
    }
    let mut ledger = ledger.lock().unwrap();
    ledger.counts.respends = respends;
    ledger.counts.lost = ledger.lost();
    problems
}

/// An admin snapshot during the lifecycle load; counted when acknowledged.
async fn life_snapshot_during_load(api: Api, ledger: Arc<Mutex<LifeLedger>>, after: Duration) {
    tokio::time::sleep(after).await;
    let resp = api
        .try_call(
            Method::POST,
            "/api/admin/snapshot",
            Some(api.admin()),
            Some(&json!({})),
        )
        .await;
    let mut ledger = ledger.lock().unwrap();
    match resp {
        Ok(resp) if resp.status.as_u16() == 200 => ledger.counts.snapshots += 1,
        Ok(resp) => ledger
            .violations
            .push(format!("admin snapshot: {} {}", resp.status, resp.body)),
        Err(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_lifecycle_mix_keeps_every_acknowledged_change_and_spends_once_per_void() {
    let seed = seed("crash loop, lifecycle mix");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(LifeLedger::default()));

    let (key, collection_id) = {
        let mut server = Server::start(dir.path());
        let api = Api::new(&server);
        let account = api.create_account("lifecycle").await;
        let key = api.create_key(&id_of(&account), "till", &["*"]).await;
        let key = key["key"].as_str().unwrap().to_owned();
        let collection = api
            .post(
                "/api/collections",
                &key,
                &json!({"name": "lifecycle", "merchants": LIFE_MERCHANTS}),
            )
            .await
            .expect(201)
            .body;
        let collection_id = id_of(&collection);
        add_life_tokens(&api, &key, &collection_id, &ledger, 0, LIFE_POOL.0).await;
        server.kill9();
        (key, collection_id)
    };

    let mut restores = Vec::new();
    for cycle in 0..CYCLES {
        let shards = [2, 3, 1][cycle % 3];
        let mut server = Server::options(dir.path()).shards(shards).start();
        let done = server.log_line("restore done");
        restores.push((
            number_field(&done, "snapshot_tokens"),
            number_field(&done, "records_applied"),
        ));
        let api = Api::new(&server);
        // Everything acknowledged before the kill is there, and nothing
        // unasked for.
        let problems = check_life_pool(&api, &key, &ledger, None).await;
        assert!(
            problems.is_empty(),
            "seed {seed}, start of cycle {cycle}:\n{}",
            problems.join("\n")
        );
        add_life_tokens(&api, &key, &collection_id, &ledger, cycle + 1, LIFE_POOL.1).await;
        if cycle % 3 == 2 {
            api.snapshot().await;
            ledger.lock().unwrap().counts.snapshots += 1;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let load_ms = rng.range(LOAD_MS.0, LOAD_MS.1);
        let mut tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let worker = LifeWorker {
                    api: Api::new(&server),
                    key: key.clone(),
                    ledger: Arc::clone(&ledger),
                    killed: Arc::clone(&killed),
                    cycle,
                    task,
                    rng: Rng::new(rng.next()),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        if cycle % 3 == 1 {
            let after = Duration::from_millis(rng.below(load_ms));
            tasks.push(tokio::spawn(life_snapshot_during_load(
                Api::new(&server),
                Arc::clone(&ledger),
                after,
            )));
        }
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill9();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("workers stop once the server is gone")
                .expect("a worker panicked");
        }
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.violations.is_empty(),
            "seed {seed}, cycle {cycle}:\n{}",
            ledger.violations.join("\n")
        );
    }

    // The final start: the list shows every token as the checks require.
    let server = Server::start(dir.path());
    let done = server.log_line("restore done");
    restores.push((
        number_field(&done, "snapshot_tokens"),
        number_field(&done, "records_applied"),
    ));
    let api = Api::new(&server);
    let all: HashMap<String, Value> = api
        .all_tokens(&key)
        .await
        .into_iter()
        .map(|t| (id_of(&t), t))
        .collect();
    let problems = check_life_pool(&api, &key, &ledger, Some(&all)).await;
    let summary = format!(
        "seed {seed}: {CYCLES} cycles in {:?}; {:?}; restores (snapshot tokens, records replayed): {restores:?}",
        started.elapsed(),
        ledger.lock().unwrap().counts,
    );
    eprintln!("crash loop, lifecycle mix: {summary}");
    assert!(
        problems.is_empty(),
        "{summary}\n{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The mix was exercised: the checks above had material.
    let ledger = ledger.lock().unwrap();
    let c = &ledger.counts;
    assert!(
        c.holds > 20 && c.captures > 5 && c.releases > 5,
        "{summary}"
    );
    assert!(c.redeems > 5 && c.voids > 5 && c.respends > 5, "{summary}");
    assert!(
        c.held_conflicts > 0 && c.redeemed_conflicts > 0,
        "{summary}"
    );
    assert!(c.not_active > 0 && c.lost > 0, "{summary}");
}
