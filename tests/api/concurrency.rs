//! Concurrent requests over several HTTP connections: a token is redeemed
//! exactly once however many redeems race, and concurrent creates
//! neither lose nor duplicate tokens.

use crate::helpers::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashSet;

const TOKENS: usize = 40;
const REDEEMS_PER_TOKEN: usize = 50;
const CLIENTS: usize = 8;

#[actix_web::test]
async fn exactly_one_of_many_concurrent_redeems_wins() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let tokens = app
        .create_batch(
            &tenant.key,
            vec![json!({"collectionId": tenant.collection_id, "data": {"v": 1}}); TOKENS],
        )
        .await;
    let ids: Vec<String> = tokens.iter().map(id_of).collect();
    // Separate clients hold separate connection pools.
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|_| client()).collect();
    let app = &app;
    let mut requests = Vec::new();
    for attempt in 0..REDEEMS_PER_TOKEN {
        for (t, id) in ids.iter().enumerate() {
            // Half the attempts carry their own idempotency key, half none.
            let body = if attempt % 2 == 0 {
                json!({"idempotencyKey": format!("attempt-{attempt}"), "merchantId": "m"})
            } else {
                json!({})
            };
            let request = clients[(attempt + t) % CLIENTS]
                .post(app.url(&format!("/api/tokens/{id}/redeem")))
                .header("X-Api-Key", &tenant.key)
                .json(&body);
            requests.push(async move { (t, body, app.send(request).await) });
        }
    }
    let results = join_all(requests).await;

    let mut winners: Vec<Option<(Value, Value)>> = vec![None; TOKENS];
    let mut conflicts = vec![0usize; TOKENS];
    for (t, body, resp) in results {
        match resp.status.as_u16() {
            200 => {
                assert!(winners[t].is_none(), "token {t} redeemed twice");
                assert_eq!(resp.header("idempotent-replayed"), None);
                winners[t] = Some((body, resp.body));
            }
            409 => {
                resp.assert_error(409, "TOKEN_ALREADY_REDEEMED");
                conflicts[t] += 1;
            }
            other => panic!("unexpected {other}: {}", resp.body),
        }
    }
    for (t, id) in ids.iter().enumerate() {
        let (body, response) = winners[t].take().expect("one redeem wins");
        assert_eq!(conflicts[t], REDEEMS_PER_TOKEN - 1);
        let token = app.token(&tenant.key, id).await;
        assert_eq!(token["status"], "redeemed");
        assert_eq!(token["data"], Value::Null);
        assert_eq!(token, response);
        assert_eq!(
            token["redemption"]["idempotencyKey"],
            body.get("idempotencyKey").cloned().unwrap_or(Value::Null)
        );
    }
}

#[actix_web::test]
async fn concurrent_idempotent_creates_make_one_token() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|_| client()).collect();
    let body = json!({
        "collectionId": tenant.collection_id,
        "idempotencyKey": "once",
        "children": [{}, {}, {}],
    });
    let requests = (0..30).map(|i| {
        let request = clients[i % CLIENTS]
            .post(app.url("/api/tokens"))
            .header("X-Api-Key", &tenant.key)
            .json(&body);
        app.send(request)
    });
    let results = join_all(requests).await;
    let created: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1);
    for resp in &results {
        if resp.status == 200 {
            assert_eq!(resp.header("idempotent-replayed"), Some("true"));
        } else {
            resp.assert_status(201);
        }
        assert_eq!(resp.body, created[0].body);
    }
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 4);
}

#[actix_web::test]
async fn concurrent_creates_are_all_kept() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|_| client()).collect();
    let requests = (0..200).map(|i| {
        let request = clients[i % CLIENTS]
            .post(app.url("/api/tokens"))
            .header("X-Api-Key", &tenant.key)
            .json(&json!({"collectionId": tenant.collection_id, "description": i.to_string()}));
        app.send(request)
    });
    let mut ids = HashSet::new();
    for resp in join_all(requests).await {
        resp.assert_status(201);
        assert!(ids.insert(id_of(&resp.body)));
    }
    let listed: HashSet<String> = app
        .all_token_ids(&tenant.key, "")
        .await
        .into_iter()
        .collect();
    assert_eq!(listed, ids);
}

/// Tokens the lifecycle race shares among its clients.
const RACED_TOKENS: usize = 6;
/// Clients of the lifecycle race, each with its own connection pool.
const RACERS: usize = 64;
/// Operations per racer.
const RACER_OPS: usize = 20;

/// What one racer asked and was answered.
struct Raced {
    token: usize,
    op: &'static str,
    /// The unique idempotency key sent (hold, redeem, void).
    key: String,
    /// The hold named (capture, release).
    hold_id: Option<String>,
    resp: Resp,
}

/// 64 clients race hold, capture, release, redeem and void on a few
/// tokens. The engine's clock stands still, so holds never lapse and every
/// hold must end by a capture or a release before the next one is granted:
/// per token, granted holds = captures + releases (+1 while one is held),
/// and spends (redeems and captures) = voids (+1 while redeemed): never two
/// live holds or two active redemptions at once. Every 2xx is in the final
/// state: each spend's idempotency key in the redemption history (voided
/// ones, then the current), each void's key among the voided.
#[actix_web::test]
async fn racing_holds_captures_releases_redeems_and_voids_keep_one_hold_and_one_redemption() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let tokens = app
        .create_batch(
            &tenant.key,
            vec![json!({"collectionId": tenant.collection_id}); RACED_TOKENS],
        )
        .await;
    let ids: Vec<String> = tokens.iter().map(id_of).collect();
    // Hold ids granted so far, per token: captures and releases name them.
    let granted: parking_lot::Mutex<Vec<Vec<String>>> =
        parking_lot::Mutex::new(vec![Vec::new(); RACED_TOKENS]);
    let (app, ids, granted, key) = (&app, &ids, &granted, &tenant.key);
    let racers = (0..RACERS).map(|racer| async move {
        let http = client();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (racer as u64 + 1).wrapping_mul(0x2545_f491);
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut log = Vec::with_capacity(RACER_OPS);
        for n in 0..RACER_OPS {
            let token = next(RACED_TOKENS);
            let id = &ids[token];
            let key_sent = format!("r{racer}-{n}");
            let known = {
                let granted = granted.lock();
                let holds = &granted[token];
                (!holds.is_empty()).then(|| holds[next(holds.len())].clone())
            };
            let (op, path, body, hold_id) = match (next(5), known) {
                (0, Some(hold)) => (
                    "capture",
                    format!("/api/tokens/{id}/holds/{hold}/capture"),
                    json!({}),
                    Some(hold),
                ),
                (1, Some(hold)) => (
                    "release",
                    format!("/api/tokens/{id}/holds/{hold}/release"),
                    json!({}),
                    Some(hold),
                ),
                (2, _) => (
                    "redeem",
                    format!("/api/tokens/{id}/redeem"),
                    json!({"idempotencyKey": key_sent}),
                    None,
                ),
                (3, _) => (
                    "void",
                    format!("/api/tokens/{id}/redemption/void"),
                    json!({"idempotencyKey": key_sent, "reason": "race"}),
                    None,
                ),
                _ => (
                    "hold",
                    format!("/api/tokens/{id}/holds"),
                    json!({"idempotencyKey": key_sent, "merchantId": "m"}),
                    None,
                ),
            };
            let request = http
                .post(app.url(&path))
                .header("X-Api-Key", key)
                .json(&body);
            let resp = app.send(request).await;
            if op == "hold" && resp.status.as_u16() == 201 {
                let hold = resp.body["hold"]["id"]
                    .as_str()
                    .expect("hold id")
                    .to_owned();
                granted.lock()[token].push(hold);
            }
            log.push(Raced {
                token,
                op,
                key: key_sent,
                hold_id,
                resp,
            });
        }
        log
    });
    let answers: Vec<Raced> = join_all(racers).await.into_iter().flatten().collect();

    let mut holds = [0usize; RACED_TOKENS];
    let mut ends = [0usize; RACED_TOKENS];
    let mut spends: Vec<Vec<String>> = vec![Vec::new(); RACED_TOKENS];
    let mut voids: Vec<Vec<String>> = vec![Vec::new(); RACED_TOKENS];
    let mut hold_keys: Vec<std::collections::HashMap<String, String>> =
        vec![Default::default(); RACED_TOKENS];
    let mut captured: Vec<Vec<(String, String)>> = vec![Vec::new(); RACED_TOKENS];
    for a in &answers {
        let status = a.resp.status.as_u16();
        let replayed = a.resp.header("idempotent-replayed").is_some();
        let t = a.token;
        match (a.op, status) {
            ("hold", 201) => {
                assert!(!replayed);
                holds[t] += 1;
                let hold = a.resp.body["hold"]["id"].as_str().unwrap().to_owned();
                hold_keys[t].insert(hold, a.key.clone());
            }
            ("hold", 409) => {
                let code = a.resp.body["code"].as_str().unwrap_or_default();
                assert!(
                    ["TOKEN_HELD", "TOKEN_ALREADY_REDEEMED"].contains(&code),
                    "hold: {}",
                    a.resp.body
                );
            }
            ("capture", 200) if !replayed => {
                ends[t] += 1;
                let hold = a.hold_id.clone().unwrap();
                assert_eq!(a.resp.body["redemption"]["holdId"], json!(hold));
                captured[t].push((
                    hold,
                    a.resp.body["redemption"]["idempotencyKey"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
            ("capture", 200) => {}
            ("capture" | "release", 409) => {
                a.resp.assert_error(409, "HOLD_NOT_ACTIVE");
            }
            ("release", 200) if !replayed => {
                ends[t] += 1;
                assert_eq!(a.resp.body["status"], "active");
            }
            ("release", 200) => {}
            ("redeem", 200) => {
                assert!(!replayed, "every redeem key is new");
                spends[t].push(a.key.clone());
            }
            ("redeem", 409) => {
                let code = a.resp.body["code"].as_str().unwrap_or_default();
                assert!(
                    ["TOKEN_HELD", "TOKEN_ALREADY_REDEEMED"].contains(&code),
                    "redeem: {}",
                    a.resp.body
                );
            }
            ("void", 200) => {
                assert!(!replayed, "every void key is new");
                voids[t].push(a.key.clone());
            }
            ("void", 409) => {
                let code = a.resp.body["code"].as_str().unwrap_or_default();
                assert!(
                    ["TOKEN_NOT_REDEEMED", "VOID_LIMIT_REACHED"].contains(&code),
                    "void: {}",
                    a.resp.body
                );
            }
            (op, other) => panic!("{op} answered {other}: {}", a.resp.body),
        }
    }
    let mut exercised = [0usize; 4];
    for (t, id) in ids.iter().enumerate() {
        // A capture spends under the hold's idempotency key.
        for (hold, key) in &captured[t] {
            assert_eq!(hold_keys[t].get(hold), Some(key), "capture of {hold}");
            spends[t].push(key.clone());
        }
        let token = app.token(key, id).await;
        let status = token["status"].as_str().unwrap();
        assert_eq!(
            holds[t],
            ends[t] + usize::from(status == "held"),
            "token {t} ({status}): granted holds against captures and releases"
        );
        assert_eq!(
            spends[t].len(),
            voids[t].len() + usize::from(status == "redeemed"),
            "token {t} ({status}): spends against voids"
        );
        let voided = token["voidedRedemptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut history: Vec<String> = voided
            .iter()
            .map(|v| v["idempotencyKey"].as_str().unwrap().to_owned())
            .collect();
        if status == "redeemed" {
            history.push(
                token["redemption"]["idempotencyKey"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mut acknowledged = spends[t].clone();
        acknowledged.sort();
        history.sort();
        assert_eq!(
            history, acknowledged,
            "token {t}: every spend is in its history"
        );
        let mut void_keys: Vec<String> = voided
            .iter()
            .map(|v| v["voidIdempotencyKey"].as_str().unwrap().to_owned())
            .collect();
        void_keys.sort();
        voids[t].sort();
        assert_eq!(void_keys, voids[t], "token {t}: every void is recorded");
        exercised[0] += holds[t];
        exercised[1] += captured[t].len();
        exercised[2] += ends[t] - captured[t].len();
        exercised[3] += voids[t].len();
    }
    eprintln!("acknowledged holds, captures, releases, voids: {exercised:?}");
    assert!(
        exercised.iter().all(|n| *n > 0),
        "holds, captures, releases and voids were all acknowledged: {exercised:?}"
    );
}
