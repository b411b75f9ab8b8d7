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
