//! Another account's objects are answered exactly as ones that do not exist
//! (404, never 403), and are never changed by another account.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// What a user can tell about a response: status, code, token status header.
fn outcome(resp: &Resp) -> (u16, Value, Option<String>) {
    (
        resp.status.as_u16(),
        resp.body["code"].clone(),
        resp.header("x-token-status").map(str::to_owned),
    )
}

/// Every token route B may call on a token id.
async fn probe(app: &TestApp, key: &str, id: &str) -> Vec<(u16, Value, Option<String>)> {
    let mut outcomes = Vec::new();
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::GET, "?children=true", None),
        (Method::HEAD, "", None),
        (Method::POST, "/redeem", Some(json!({}))),
        (
            Method::POST,
            "/redeem",
            Some(json!({"merchantId": "m-1", "idempotencyKey": "x"})),
        ),
        (Method::DELETE, "", None),
    ] {
        let resp = app
            .call(
                method,
                &format!("/api/tokens/{id}{suffix}"),
                Some(key),
                body.as_ref(),
            )
            .await;
        outcomes.push(outcome(&resp));
    }
    outcomes
}

#[actix_web::test]
async fn another_accounts_tokens_look_unknown_and_stay_unchanged() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let collection = id_of(
        &app.create_collection(&a.key, &json!({"name": "m", "merchants": ["m-1"]}))
            .await,
    );
    let active = app
        .create_token(
            &a.key,
            &json!({"collectionId": collection, "data": {"secret": 1}, "metadata": {"k": "v"}}),
        )
        .await;
    let later = app
        .create_token(
            &a.key,
            &json!({"collectionId": collection, "activeFrom": at(DAY)}),
        )
        .await;
    let short = app
        .create_token(&a.key, &json!({"collectionId": collection, "expiresIn": 1}))
        .await;
    let redeemed = app.create_token_in(&a.key, &collection).await;
    app.redeem(
        &a.key,
        &redeemed,
        &json!({"merchantId": "m-1", "idempotencyKey": "x"}),
    )
    .await
    .assert_status(200);
    let deleted = app.create_token_in(&a.key, &collection).await;
    app.delete_token(&a.key, &deleted).await.assert_status(204);
    app.advance_ms(SECOND);

    let ids = [
        id_of(&active),
        id_of(&later),
        id_of(&short),
        redeemed,
        deleted,
    ];
    let mut before = Vec::new();
    for id in &ids {
        before.push(app.token(&a.key, id).await);
    }
    let unknown = probe(&app, &b.key, &unknown_id()).await;
    assert!(unknown
        .iter()
        .all(|(status, _, header)| *status == 404 && header.is_none()));
    for id in &ids {
        assert_eq!(probe(&app, &b.key, id).await, unknown, "{id}");
    }
    // Lists never show them, even when asked by id or collection.
    for query in [
        String::new(),
        format!("id={}&id={}", ids[0], ids[3]),
        format!("collectionId={collection}"),
        "status=redeemed&status=deleted&status=expired".to_owned(),
    ] {
        let listed = app.list_tokens(&b.key, &query).await;
        listed.assert_status(200);
        assert_eq!(listed.body["data"], json!([]), "{query}");
    }
    // A's tokens are untouched, and the active one is still A's to redeem.
    for (id, token) in ids.iter().zip(&before) {
        assert_eq!(&app.token(&a.key, id).await, token);
    }
    let resp = app
        .redeem(&a.key, &ids[0], &json!({"merchantId": "m-1"}))
        .await;
    resp.assert_status(200);
    assert_eq!(
        resp.body["redemption"]["redeemedBy"],
        json!(format!("crn:{}:api-key:{}", a.account_id, a.key_name))
    );
}

#[actix_web::test]
async fn another_accounts_collections_look_unknown() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let path = |id: &str| format!("/api/collections/{id}");
    let foreign = app.get(&path(&a.collection_id), &b.key).await;
    let unknown = app.get(&path(&unknown_id()), &b.key).await;
    foreign.assert_error(404, "COLLECTION_NOT_FOUND");
    assert_eq!(outcome(&foreign), outcome(&unknown));
    assert_eq!(foreign.body["message"], unknown.body["message"]);

    let listed = app.get("/api/collections", &b.key).await;
    let listed: Vec<String> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(listed, vec![b.collection_id.clone()]);

    // B cannot create tokens in A's collection, singly, as children or in a batch.
    for (route, body) in [
        ("/api/tokens", json!({"collectionId": a.collection_id})),
        (
            "/api/tokens/batch",
            json!({"tokens": [{"collectionId": b.collection_id}, {"collectionId": a.collection_id}]}),
        ),
    ] {
        let foreign = app.post(route, &b.key, &body).await;
        foreign.assert_error(404, "COLLECTION_NOT_FOUND");
    }
    let unknown = app
        .post(
            "/api/tokens",
            &b.key,
            &json!({"collectionId": unknown_id()}),
        )
        .await;
    unknown.assert_error(404, "COLLECTION_NOT_FOUND");
    assert!(app.all_token_ids(&a.key, "").await.is_empty());
    assert!(app.all_token_ids(&b.key, "").await.is_empty());
}

#[actix_web::test]
async fn lists_show_only_the_callers_tokens() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant_of("main").await;
    let mut a_ids = Vec::new();
    let mut b_ids = Vec::new();
    for i in 0..20 {
        if i % 2 == 0 {
            a_ids.push(app.create_token_in(&a.key, &a.collection_id).await);
        } else {
            b_ids.push(app.create_token_in(&b.key, &b.collection_id).await);
        }
        app.advance_ms(1);
    }
    assert_eq!(app.all_token_ids(&a.key, "").await, a_ids);
    assert_eq!(app.all_token_ids(&b.key, "").await, b_ids);
    // Same with small pages.
    let resp = app.list_tokens(&a.key, "limit=3").await;
    let page: Vec<String> = resp.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(page, a_ids[..3]);
    for token in resp.body["data"].as_array().unwrap() {
        assert_eq!(token["accountId"], json!(a.account_id));
        assert_eq!(token["liveness"], "test");
    }
}
