//! Accounts and API keys: admin key only.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashSet;

fn keys_path(account_id: &str) -> String {
    format!("/api/accounts/{account_id}/api-keys")
}

fn field_names(value: &Value) -> HashSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[actix_web::test]
async fn creating_an_account_returns_it() {
    let app = spawn_app().await;
    for liveness in ["test", "main"] {
        let resp = app
            .post(
                "/api/accounts",
                ADMIN,
                &json!({"name": "Acme Ltd", "liveness": liveness}),
            )
            .await;
        resp.assert_status(201);
        let account = &resp.body;
        assert_eq!(
            field_names(account),
            names(&["id", "name", "liveness", "createdAt"])
        );
        assert_eq!(account["name"], "Acme Ltd");
        assert_eq!(account["liveness"], liveness);
        assert_eq!(account["createdAt"], T0_TEXT);
        assert_eq!(id_of(account).len(), 36);
    }
}

#[actix_web::test]
async fn invalid_account_bodies_are_422() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "a"}), vec!["$.liveness"]),
        (json!({"liveness": "test"}), vec!["$.name"]),
        (json!({"name": "a", "liveness": "prod"}), vec!["$.liveness"]),
        (json!({"name": "", "liveness": "test"}), vec!["$.name"]),
        (json!({"name": 5, "liveness": "test"}), vec!["$.name"]),
        (
            json!({"name": "a", "liveness": "test", "colour": "red"}),
            vec!["$.colour"],
        ),
        (json!({}), vec!["$.name", "$.liveness"]),
        (json!([]), vec!["$"]),
    ];
    for (body, paths) in cases {
        app.post("/api/accounts", ADMIN, &body)
            .await
            .assert_invalid(&paths);
    }
}

#[actix_web::test]
async fn creating_a_key_shows_its_secret_once() {
    let app = spawn_app().await;
    let account = app.create_account("main").await;
    let account_id = id_of(&account);
    app.advance_ms(5);
    let resp = app
        .post(
            &keys_path(&account_id),
            ADMIN,
            &json!({"name": "pos-terminal", "scopes": ["token:redeem", "token:read"]}),
        )
        .await;
    resp.assert_status(201);
    let key = &resp.body;
    assert_eq!(
        field_names(key),
        names(&["id", "accountId", "name", "scopes", "createdAt", "key"])
    );
    assert_eq!(key["accountId"], json!(account_id));
    assert_eq!(key["name"], "pos-terminal");
    let scopes: HashSet<&str> = key["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, HashSet::from(["token:redeem", "token:read"]));
    assert_eq!(key["createdAt"], at(5));
    let secret = key["key"].as_str().unwrap();
    // 256 random bits need at least 43 base64 characters.
    assert!(secret.len() >= 43, "{secret}");
    app.advance_ms(1);
    let other = app.create_key(&account_id, &["*"]).await;
    assert_ne!(secret, other);

    // The list never shows a secret.
    let resp = app.get(&keys_path(&account_id), ADMIN).await;
    resp.assert_status(200);
    let listed = resp.body["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], key["id"]);
    for entry in listed {
        assert_eq!(
            field_names(entry),
            names(&["id", "accountId", "name", "scopes", "createdAt"])
        );
        assert!(!entry.to_string().contains(secret));
        assert!(!entry.to_string().contains(&other));
    }
    assert_eq!(resp.body["pagination"]["hasMore"], false);
    assert_eq!(resp.body["pagination"]["nextCursor"], Value::Null);
}

#[actix_web::test]
async fn key_lists_paginate_in_creation_order() {
    let app = spawn_app().await;
    let account_id = id_of(&app.create_account("test").await);
    let mut created = Vec::new();
    for i in 0..5 {
        let key = app
            .create_key_named(&account_id, &format!("k{i}"), &["token:read"])
            .await;
        created.push(id_of(&key));
        if i % 2 == 0 {
            app.advance_ms(1);
        }
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let resp = app
            .get(
                &format!("{}?limit=2{cursor}", keys_path(&account_id)),
                ADMIN,
            )
            .await;
        resp.assert_status(200);
        let page = resp.body["data"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(id_of));
        let pagination = &resp.body["pagination"];
        assert_eq!(pagination["limit"], 2);
        match pagination["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(pagination["hasMore"], true);
                cursor = format!("&cursor={next}");
            }
            None => {
                assert_eq!(pagination["hasMore"], false);
                break;
            }
        }
    }
    // Creation order; keys created in the same millisecond by id.
    let mut expected = created.clone();
    expected[1..3].sort();
    expected[3..5].sort();
    assert_eq!(seen, expected);
}

#[actix_web::test]
async fn invalid_key_bodies_are_422() {
    let app = spawn_app().await;
    let account_id = id_of(&app.create_account("test").await);
    let cases = [
        (
            json!({"name": "k", "scopes": ["token:fly"]}),
            vec!["$.scopes[0]"],
        ),
        (
            json!({"name": "k", "scopes": ["token:read", "admin"]}),
            vec!["$.scopes[1]"],
        ),
        (json!({"name": "k", "scopes": []}), vec!["$.scopes"]),
        (json!({"name": "k", "scopes": "*"}), vec!["$.scopes"]),
        (json!({"name": "k"}), vec!["$.scopes"]),
        (json!({"scopes": ["*"]}), vec!["$.name"]),
        (
            json!({"name": "k", "scopes": ["*"], "expires": 1}),
            vec!["$.expires"],
        ),
    ];
    for (body, paths) in cases {
        app.post(&keys_path(&account_id), ADMIN, &body)
            .await
            .assert_invalid(&paths);
    }
    // None was created.
    let resp = app.get(&keys_path(&account_id), ADMIN).await;
    assert_eq!(resp.body["data"], json!([]));
}

#[actix_web::test]
async fn keys_of_unknown_accounts_are_404() {
    let app = spawn_app().await;
    for account in [unknown_id(), "not-an-id".to_owned()] {
        app.post(
            &keys_path(&account),
            ADMIN,
            &json!({"name": "k", "scopes": ["*"]}),
        )
        .await
        .assert_error(404, "ACCOUNT_NOT_FOUND");
        app.get(&keys_path(&account), ADMIN)
            .await
            .assert_error(404, "ACCOUNT_NOT_FOUND");
        app.delete(&format!("{}/{}", keys_path(&account), unknown_id()), ADMIN)
            .await
            .assert_error(404, "ACCOUNT_NOT_FOUND");
    }
}

#[actix_web::test]
async fn a_deleted_key_stops_working_at_once() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = app
        .create_key_named(&tenant.account_id, "doomed", &["*"])
        .await;
    let secret = key["key"].as_str().unwrap();
    app.get("/api/collections", secret).await.assert_status(200);

    let path = format!("{}/{}", keys_path(&tenant.account_id), id_of(&key));
    let resp = app.delete(&path, ADMIN).await;
    resp.assert_status(204);
    assert_eq!(resp.body, Value::Null);
    app.get("/api/collections", secret)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    app.post(
        "/api/tokens",
        secret,
        &json!({"collectionId": tenant.collection_id}),
    )
    .await
    .assert_error(401, "UNAUTHENTICATED");
    // Gone from the list; deleting again finds nothing.
    let listed = app.get(&keys_path(&tenant.account_id), ADMIN).await;
    let ids: Vec<String> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert!(!ids.contains(&id_of(&key)));
    assert_eq!(ids.len(), 1);
    app.delete(&path, ADMIN)
        .await
        .assert_error(404, "API_KEY_NOT_FOUND");
    // The other key of the account still works.
    app.get("/api/collections", &tenant.key)
        .await
        .assert_status(200);
}

#[actix_web::test]
async fn a_key_is_deleted_only_through_its_own_account() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let a_key = app.create_key_named(&a.account_id, "a", &["*"]).await;
    // B's path with A's key id: not found, and A's key keeps working.
    app.delete(
        &format!("{}/{}", keys_path(&b.account_id), id_of(&a_key)),
        ADMIN,
    )
    .await
    .assert_error(404, "API_KEY_NOT_FOUND");
    app.delete(&format!("{}/not-a-key", keys_path(&a.account_id)), ADMIN)
        .await
        .assert_error(404, "API_KEY_NOT_FOUND");
    app.get("/api/collections", a_key["key"].as_str().unwrap())
        .await
        .assert_status(200);
    // Each account lists only its own keys.
    let listed = app.get(&keys_path(&b.account_id), ADMIN).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["data"][0]["accountId"], json!(b.account_id));
}
