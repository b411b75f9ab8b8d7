//! Collections: creation with rules and branding, reading, listing.

use crate::helpers::*;
use serde_json::{json, Value};

fn full_collection() -> Value {
    json!({
        "name": "Coffee vouchers",
        "description": "One free coffee",
        "issuer": "Bean There",
        "issuerImg": "https://example.com/issuer.png",
        "img": "https://example.com/coffee.png",
        "issuerWebsite": "https://example.com",
        "value": [{"currency": "NZD", "amount": "5.00"}, {"currency": "AUD", "amount": "4.5"}],
        "merchants": ["m-1", "m-2"],
        "tokenExpiresAfter": 3600,
        "holdTtlSecsMax": 600,
        "voidWindowSecs": 86400,
        "dataSchema": {"type": "object", "properties": {"pan": {"type": "string"}}},
        "liveness": "test"
    })
}

#[actix_web::test]
async fn creating_a_collection_returns_every_field() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    app.advance_ms(42);
    let body = full_collection();
    let created = app.create_collection(&tenant.key, &body).await;
    for (field, value) in body.as_object().unwrap() {
        assert_eq!(&created[field], value, "{field}");
    }
    assert_eq!(created["accountId"], json!(tenant.account_id));
    assert_eq!(created["createdAt"], at(42));
    assert_eq!(id_of(&created).len(), 36);
    assert_eq!(
        created.as_object().unwrap().len(),
        body.as_object().unwrap().len() + 3
    );

    let fetched = app
        .get(
            &format!("/api/collections/{}", id_of(&created)),
            &tenant.key,
        )
        .await;
    fetched.assert_status(200);
    assert_eq!(fetched.body, created);
}

#[actix_web::test]
async fn a_minimal_collection_takes_the_accounts_liveness() {
    let app = spawn_app().await;
    let tenant = app.tenant_of("main").await;
    let created = app
        .create_collection(&tenant.key, &json!({"name": "bare"}))
        .await;
    assert_eq!(created["liveness"], "main");
    assert_eq!(created["name"], "bare");
    for field in [
        "description",
        "issuer",
        "issuerImg",
        "img",
        "issuerWebsite",
        "tokenExpiresAfter",
        "dataSchema",
    ] {
        assert_eq!(created[field], Value::Null, "{field}");
    }
    assert_eq!(created["value"], json!([]));
    assert_eq!(created["merchants"], json!([]));
    // The redemption rules are shown with their effective defaults.
    assert_eq!(created["holdTtlSecsMax"], json!(900));
    assert_eq!(created["voidWindowSecs"], json!(7_776_000));

    // JSON Schema counts 7200.0 as an integer.
    let created = app
        .create_collection(
            &tenant.key,
            &json!({"name": "c", "tokenExpiresAfter": 7200.0}),
        )
        .await;
    assert_eq!(created["tokenExpiresAfter"], json!(7200));
}

#[actix_web::test]
async fn a_liveness_other_than_the_accounts_is_403() {
    let app = spawn_app().await;
    let tenant = app.tenant_of("main").await;
    app.post(
        "/api/collections",
        &tenant.key,
        &json!({"name": "c", "liveness": "test"}),
    )
    .await
    .assert_error(403, "ACCOUNT_LIVENESS_MISMATCH");
    let created = app
        .create_collection(&tenant.key, &json!({"name": "c", "liveness": "main"}))
        .await;
    assert_eq!(created["liveness"], "main");
    // Only the tenant's own collection and the matching one exist.
    let listed = app.get("/api/collections", &tenant.key).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn invalid_collection_bodies_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let cases = [
        (json!({}), vec!["$.name"]),
        (json!({"name": 7}), vec!["$.name"]),
        (json!({"name": "c", "colour": "red"}), vec!["$.colour"]),
        (
            json!({"name": "c", "value": [{"currency": "nzd", "amount": "5.00"}]}),
            vec!["$.value[0].currency"],
        ),
        (
            json!({"name": "c", "value": [{"currency": "NZD", "amount": "5.00"}, {"currency": "NZD", "amount": 5}]}),
            vec!["$.value[1].amount"],
        ),
        (
            json!({"name": "c", "value": [{"currency": "NZD"}]}),
            vec!["$.value[0].amount"],
        ),
        (
            json!({"name": "c", "merchants": "m-1"}),
            vec!["$.merchants"],
        ),
        (
            json!({"name": "c", "tokenExpiresAfter": 0}),
            vec!["$.tokenExpiresAfter"],
        ),
        (
            json!({"name": "c", "tokenExpiresAfter": "1h"}),
            vec!["$.tokenExpiresAfter"],
        ),
        (json!({"name": "c", "liveness": "live"}), vec!["$.liveness"]),
        (
            json!({"name": "c", "description": "d".repeat(1001)}),
            vec!["$.description"],
        ),
        (
            json!({"name": 1, "issuer": 2, "colour": "red"}),
            vec!["$.name", "$.issuer", "$.colour"],
        ),
    ];
    for (body, paths) in cases {
        app.post("/api/collections", &tenant.key, &body)
            .await
            .assert_invalid(&paths);
    }
    let listed = app.get("/api/collections", &tenant.key).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn an_invalid_data_schema_is_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for schema in [
        json!({"type": "strng"}),
        json!({"type": 5}),
        json!({"properties": {"pan": {"minLength": -1}}}),
        json!({"required": "pan"}),
        json!("a string"),
        json!([]),
    ] {
        app.post(
            "/api/collections",
            &tenant.key,
            &json!({"name": "c", "dataSchema": schema}),
        )
        .await
        .assert_invalid(&["$.dataSchema"]);
    }
    for schema in [
        json!(true),
        json!({}),
        json!({"type": ["object", "string"]}),
    ] {
        let created = app
            .create_collection(&tenant.key, &json!({"name": "c", "dataSchema": schema}))
            .await;
        assert_eq!(created["dataSchema"], schema);
    }
}

#[actix_web::test]
async fn unknown_collections_are_404() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for id in [unknown_id(), "nope".to_owned()] {
        app.get(&format!("/api/collections/{id}"), &tenant.key)
            .await
            .assert_error(404, "COLLECTION_NOT_FOUND");
    }
}

#[actix_web::test]
async fn collection_lists_paginate_in_creation_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let mut created = vec![tenant.collection_id.clone()];
    for i in 0..6 {
        if i % 2 == 0 {
            app.advance_ms(1);
        }
        let c = app
            .create_collection(&tenant.key, &json!({"name": format!("c{i}")}))
            .await;
        created.push(id_of(&c));
    }
    let mut expected = created.clone();
    expected[1..3].sort();
    expected[3..5].sort();
    expected[5..7].sort();

    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let resp = app
            .get(&format!("/api/collections?{query}"), &tenant.key)
            .await;
        resp.assert_status(200);
        let page = resp.body["data"].as_array().unwrap();
        seen.extend(page.iter().map(id_of));
        match resp.body["pagination"]["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(page.len(), 3);
                assert_eq!(resp.body["pagination"]["hasMore"], true);
                query = format!("limit=3&cursor={next}");
            }
            None => {
                assert_eq!(resp.body["pagination"]["hasMore"], false);
                break;
            }
        }
    }
    assert_eq!(seen, expected);
}
