//! Crash loop: start, concurrent load, SIGKILL at a random moment with
//! requests in flight; repeat; then check that everything acknowledged in
//! any cycle is there and that no token was ever spent twice.

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
