//! Creating tokens: single, with children, idempotent, batch.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

fn branded_collection() -> Value {
    json!({
        "name": "Coffee",
        "issuer": "Bean There",
        "issuerImg": "https://example.com/issuer.png",
        "img": "https://example.com/coffee.png",
        "issuerWebsite": "https://example.com",
        "value": [{"currency": "NZD", "amount": "5.00"}]
    })
}

#[actix_web::test]
async fn a_new_token_has_every_field_with_its_default() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let collection = app
        .create_collection(&tenant.key, &branded_collection())
        .await;
    let collection_id = id_of(&collection);
    app.advance_ms(7);
    let token = app
        .create_token(&tenant.key, &json!({"collectionId": collection_id}))
        .await;
    assert_token_fields(&token, &[]);
    assert_eq!(id_of(&token).len(), 36);
    assert_eq!(token["accountId"], json!(tenant.account_id));
    assert_eq!(token["category"], "token");
    assert_eq!(token["collectionId"], json!(collection_id));
    assert_eq!(token["type"], "token");
    assert_eq!(token["status"], "active");
    assert_eq!(token["liveness"], "test");
    assert_eq!(token["createdAt"], at(7));
    assert_eq!(
        token["createdBy"],
        json!(format!(
            "crn:{}:api-key:{}",
            tenant.account_id, tenant.key_name
        ))
    );
    assert_eq!(token["activeFrom"], token["createdAt"]);
    assert_eq!(token["expiresAt"], Value::Null);
    assert_eq!(token["description"], Value::Null);
    assert_eq!(token["data"], Value::Null);
    assert_eq!(token["metadata"], json!({}));
    assert_eq!(token["encryption"], Value::Null);
    assert_eq!(token["children"], json!([]));
    for field in ["issuer", "issuerImg", "img", "issuerWebsite", "value"] {
        assert_eq!(token[field], collection[field], "{field}");
    }
    assert_eq!(app.token(&tenant.key, &id_of(&token)).await, token);

    // A collection without branding gives nulls and no value.
    let plain = app
        .create_token(&tenant.key, &json!({"collectionId": tenant.collection_id}))
        .await;
    for field in ["issuer", "issuerImg", "img", "issuerWebsite"] {
        assert_eq!(plain[field], Value::Null, "{field}");
    }
    assert_eq!(plain["value"], json!([]));
}

#[actix_web::test]
async fn every_field_given_is_kept() {
    let app = spawn_app().await;
    let tenant = app.tenant_of("main").await;
    let body = json!({
        "collectionId": tenant.collection_id,
        "liveness": "main",
        "type": "card",
        "description": "Gift card for Ann",
        "data": {"number": "4242424242424242", "expiry": [12, 2030], "cvc": null, "n": 1.5},
        "metadata": {"colour": "red", "size": "XL", "ünïcode": "✓"},
        "encryption": {"cek": {"key": "wrapped-cek", "alg": "AES"}, "kek": {"key": "kek-1", "alg": "RSA"}},
        "activeFrom": at(DAY),
        "expiresAt": at(30 * DAY),
    });
    let token = app.create_token(&tenant.key, &body).await;
    assert_token_fields(&token, &[]);
    for field in [
        "collectionId",
        "liveness",
        "type",
        "description",
        "data",
        "metadata",
        "encryption",
        "activeFrom",
        "expiresAt",
    ] {
        assert_eq!(token[field], body[field], "{field}");
    }
    assert_eq!(token["createdAt"], T0_TEXT);
    assert_eq!(token["status"], "active");
    assert_eq!(app.token(&tenant.key, &id_of(&token)).await, token);
}

#[actix_web::test]
async fn times_with_offsets_are_rendered_in_utc_with_millis() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = app
        .create_token(
            &tenant.key,
            &json!({
                "collectionId": tenant.collection_id,
                "activeFrom": "2026-01-17T20:30:00+02:00",
                "expiresAt": "2026-01-18T00:00:00.1234-05:00",
            }),
        )
        .await;
    assert_eq!(token["activeFrom"], "2026-01-17T18:30:00.000Z");
    assert_eq!(token["expiresAt"], "2026-01-18T05:00:00.123Z");
}

#[actix_web::test]
async fn expiry_comes_from_expires_in_expires_at_or_the_collection() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let hourly = id_of(
        &app.create_collection(
            &tenant.key,
            &json!({"name": "hourly", "tokenExpiresAfter": 3600}),
        )
        .await,
    );
    app.advance_ms(500);
    let cases = [
        (json!({"collectionId": tenant.collection_id}), Value::Null),
        (
            json!({"collectionId": tenant.collection_id, "expiresIn": 60}),
            json!(at(500 + 60 * SECOND)),
        ),
        // A whole number written with a fraction is still a whole number.
        (
            json!({"collectionId": tenant.collection_id, "expiresIn": 90.0}),
            json!(at(500 + 90 * SECOND)),
        ),
        (
            json!({"collectionId": tenant.collection_id, "expiresAt": at(DAY)}),
            json!(at(DAY)),
        ),
        // The collection's default counts from creation...
        (
            json!({"collectionId": hourly}),
            json!(at(500 + 3600 * SECOND)),
        ),
        // ...and is overridden by either field.
        (
            json!({"collectionId": hourly, "expiresIn": 10}),
            json!(at(500 + 10 * SECOND)),
        ),
        (
            json!({"collectionId": hourly, "expiresAt": at(7 * DAY)}),
            json!(at(7 * DAY)),
        ),
    ];
    for (body, expires_at) in cases {
        let token = app.create_token(&tenant.key, &body).await;
        assert_eq!(token["expiresAt"], expires_at, "{body}");
    }
}

#[actix_web::test]
async fn data_matching_the_collections_schema_is_accepted() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let collection = app
        .create_collection(
            &tenant.key,
            &json!({
                "name": "cards",
                "dataSchema": {
                    "type": "object",
                    "required": ["pan"],
                    "properties": {
                        "pan": {"type": "string", "pattern": "^[0-9]{16}$"},
                        "holder": {"type": "string", "maxLength": 10}
                    }
                }
            }),
        )
        .await;
    let c = id_of(&collection);
    let token = app
        .create_token(
            &tenant.key,
            &json!({"collectionId": c, "data": {"pan": "4242424242424242"}}),
        )
        .await;
    assert_eq!(token["data"], json!({"pan": "4242424242424242"}));
    let cases = [
        (
            json!({"collectionId": c, "data": {"pan": "42"}}),
            vec!["$.data.pan"],
        ),
        (
            json!({"collectionId": c, "data": {"pan": 42}}),
            vec!["$.data.pan"],
        ),
        (
            json!({"collectionId": c, "data": {"pan": "42", "holder": "Ann Elizabeth Smith"}}),
            vec!["$.data.pan", "$.data.holder"],
        ),
        (
            json!({"collectionId": c, "data": "4242424242424242"}),
            vec!["$.data"],
        ),
        (json!({"collectionId": c}), vec!["$.data"]),
    ];
    for (body, paths) in cases {
        let resp = app.post("/api/tokens", &tenant.key, &body).await;
        resp.assert_error(422, "VALIDATION_FAILED");
        let mut got = resp.validation_paths();
        got.sort();
        got.dedup();
        let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{body}: {}", resp.body);
    }
    let ids = app
        .all_token_ids(&tenant.key, &format!("collectionId={c}"))
        .await;
    assert_eq!(ids, vec![id_of(&token)]);
}

#[actix_web::test]
async fn limits_are_inclusive() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let metadata: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("{i:0>20}"), json!("v".repeat(80))))
        .collect();
    let unicode: serde_json::Map<String, Value> = [("ü".repeat(20), json!("é".repeat(80)))]
        .into_iter()
        .collect();
    // 16 KiB exactly once serialized: a string of 16382 characters plus quotes.
    let data = "d".repeat(16 * 1024 - 2);
    for body in [
        json!({"collectionId": tenant.collection_id, "metadata": metadata}),
        json!({"collectionId": tenant.collection_id, "metadata": unicode}),
        json!({"collectionId": tenant.collection_id, "description": "x".repeat(1000)}),
        json!({"collectionId": tenant.collection_id, "data": data}),
    ] {
        let token = app.create_token(&tenant.key, &body).await;
        for field in ["metadata", "description", "data"] {
            if body.get(field).is_some() {
                assert_eq!(token[field], body[field]);
            }
        }
    }
}

#[actix_web::test]
async fn invalid_token_bodies_are_422_with_one_entry_per_problem() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = tenant.collection_id.as_str();
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    let children: Vec<Value> = (0..101).map(|_| json!({})).collect();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["$.collectionId"]),
        (json!({"collectionId": 5}), vec!["$.collectionId"]),
        (
            json!({"collectionId": c, "colour": "red"}),
            vec!["$.colour"],
        ),
        (
            json!({"collectionId": c, "colour": "red", "size": 1}),
            vec!["$.colour", "$.size"],
        ),
        (json!({"collectionId": c, "type": "coin"}), vec!["$.type"]),
        (
            json!({"collectionId": c, "liveness": "prod"}),
            vec!["$.liveness"],
        ),
        (
            json!({"collectionId": c, "description": 5}),
            vec!["$.description"],
        ),
        (
            json!({"collectionId": c, "description": "x".repeat(1001)}),
            vec!["$.description"],
        ),
        (
            json!({"collectionId": c, "metadata": many}),
            vec!["$.metadata"],
        ),
        (
            json!({"collectionId": c, "metadata": ["a"]}),
            vec!["$.metadata"],
        ),
        (
            json!({"collectionId": c, "metadata": {"colour": "r".repeat(81)}}),
            vec!["$.metadata.colour"],
        ),
        (
            json!({"collectionId": c, "metadata": {"colour": 5, "size": null}}),
            vec!["$.metadata.colour", "$.metadata.size"],
        ),
        (
            json!({"collectionId": c, "data": "d".repeat(16 * 1024 - 1)}),
            vec!["$.data"],
        ),
        (
            json!({"collectionId": c, "data": {"blob": "d".repeat(20_000)}}),
            vec!["$.data"],
        ),
        (
            json!({"collectionId": c, "encryption": {"cek": {"key": 1}}}),
            vec!["$.encryption.cek.key"],
        ),
        (
            json!({"collectionId": c, "encryption": {"dek": {}}}),
            vec!["$.encryption.dek"],
        ),
        (
            json!({"collectionId": c, "expiresAt": "2026-01-17"}),
            vec!["$.expiresAt"],
        ),
        (
            json!({"collectionId": c, "expiresAt": "2026-01-18T18:00:00"}),
            vec!["$.expiresAt"],
        ),
        (
            json!({"collectionId": c, "activeFrom": "tomorrow"}),
            vec!["$.activeFrom"],
        ),
        (
            json!({"collectionId": c, "activeFrom": 1768672800}),
            vec!["$.activeFrom"],
        ),
        (
            json!({"collectionId": c, "expiresAt": at(DAY), "expiresIn": 60}),
            vec!["$.expiresIn"],
        ),
        (
            json!({"collectionId": c, "expiresIn": 0}),
            vec!["$.expiresIn"],
        ),
        (
            json!({"collectionId": c, "expiresIn": "60"}),
            vec!["$.expiresIn"],
        ),
        (
            json!({"collectionId": c, "expiresIn": 1.5}),
            vec!["$.expiresIn"],
        ),
        // Expiry must be in the future, and after activeFrom.
        (
            json!({"collectionId": c, "expiresAt": at(-1)}),
            vec!["$.expiresAt"],
        ),
        (
            json!({"collectionId": c, "expiresAt": at(0)}),
            vec!["$.expiresAt"],
        ),
        (
            json!({"collectionId": c, "activeFrom": at(DAY), "expiresAt": at(DAY)}),
            vec!["$.expiresAt"],
        ),
        (
            json!({"collectionId": c, "activeFrom": at(DAY), "expiresIn": 60}),
            vec!["$.expiresIn"],
        ),
        (
            json!({"collectionId": c, "idempotencyKey": ""}),
            vec!["$.idempotencyKey"],
        ),
        (
            json!({"collectionId": c, "idempotencyKey": 7}),
            vec!["$.idempotencyKey"],
        ),
        (
            json!({"collectionId": c, "children": {}}),
            vec!["$.children"],
        ),
        (
            json!({"collectionId": c, "children": children}),
            vec!["$.children"],
        ),
        (
            json!({"collectionId": c, "children": [{}, {"colour": "red"}]}),
            vec!["$.children[1].colour"],
        ),
        (
            json!({"collectionId": c, "children": [{"children": []}]}),
            vec!["$.children[0].children"],
        ),
        (
            json!({"collectionId": c, "children": [{}, {"collectionId": unknown_id()}]}),
            vec!["$.children[1].collectionId"],
        ),
        (
            json!({"collectionId": c, "children": [{"data": "d".repeat(17_000)}]}),
            vec!["$.children[0].data"],
        ),
        (
            json!({"collectionId": c, "children": [{"expiresAt": "2026-01-17"}]}),
            vec!["$.children[0].expiresAt"],
        ),
        (
            json!({"collectionId": c, "idempotencyKey": "k", "children": [{"idempotencyKey": "k"}]}),
            vec!["$.children[0].idempotencyKey"],
        ),
        (
            json!({"collectionId": c, "type": "coin", "metadata": {"colour": 5}, "colour": 1}),
            vec!["$.type", "$.metadata.colour", "$.colour"],
        ),
        (json!([]), vec!["$"]),
        (json!(null), vec!["$"]),
    ];
    for (body, paths) in cases {
        let resp = app.post("/api/tokens", &tenant.key, &body).await;
        resp.assert_error(422, "VALIDATION_FAILED");
        let mut got = resp.validation_paths();
        got.sort();
        let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{body}: {}", resp.body);
    }
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn metadata_keys_longer_than_twenty_characters_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let long = "k".repeat(21);
    let longer = "ü".repeat(25);
    for (metadata, keys) in [
        (json!({"ok": "v", long.clone(): "v"}), vec![&long]),
        (
            json!({long.clone(): "v", "ok": "v", longer.clone(): "v"}),
            vec![&long, &longer],
        ),
    ] {
        let resp = app
            .post(
                "/api/tokens",
                &tenant.key,
                &json!({"collectionId": tenant.collection_id, "metadata": metadata}),
            )
            .await;
        resp.assert_error(422, "VALIDATION_FAILED");
        // One entry per bad key, at the key itself.
        let errors = resp.body["validationErrors"].as_array().unwrap();
        assert_eq!(errors.len(), keys.len(), "{}", resp.body);
        for key in keys {
            let path = if key.is_ascii() {
                format!("$.metadata.{key}")
            } else {
                format!("$.metadata['{key}']")
            };
            let named = errors.iter().any(|e| e["path"] == json!(path));
            assert!(named, "{key}: {}", resp.body);
        }
    }
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn unknown_and_foreign_collections_are_404() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    for collection in [
        unknown_id(),
        "not-an-id".to_owned(),
        other.collection_id.clone(),
    ] {
        app.post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": collection}),
        )
        .await
        .assert_error(404, "COLLECTION_NOT_FOUND");
    }
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
    assert!(app.all_token_ids(&other.key, "").await.is_empty());
}

#[actix_web::test]
async fn a_liveness_other_than_the_accounts_is_403() {
    let app = spawn_app().await;
    let test = app.tenant_of("test").await;
    let main = app.tenant_of("main").await;
    for (tenant, wrong) in [(&test, "main"), (&main, "test")] {
        app.post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "liveness": wrong}),
        )
        .await
        .assert_error(403, "ACCOUNT_LIVENESS_MISMATCH");
        let token = app
            .create_token(
                &tenant.key,
                &json!({"collectionId": tenant.collection_id, "liveness": tenant.liveness}),
            )
            .await;
        assert_eq!(token["liveness"], json!(tenant.liveness));
        assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 1);
    }
}

#[actix_web::test]
async fn validation_comes_before_the_collection_and_the_collection_before_liveness() {
    let app = spawn_app().await;
    let tenant = app.tenant_of("test").await;
    app.post(
        "/api/tokens",
        &tenant.key,
        &json!({"collectionId": unknown_id(), "liveness": "main", "type": "coin"}),
    )
    .await
    .assert_invalid(&["$.type"]);
    app.post(
        "/api/tokens",
        &tenant.key,
        &json!({"collectionId": unknown_id(), "liveness": "main"}),
    )
    .await
    .assert_error(404, "COLLECTION_NOT_FOUND");
    app.post(
        "/api/tokens",
        &tenant.key,
        &json!({"collectionId": tenant.collection_id, "liveness": "main"}),
    )
    .await
    .assert_error(403, "ACCOUNT_LIVENESS_MISMATCH");
}

#[actix_web::test]
async fn an_idempotent_create_replays_the_same_token() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let body = json!({
        "collectionId": tenant.collection_id,
        "idempotencyKey": "order-1",
        "description": "first",
        "metadata": {"a": "1", "b": "2"},
        "expiresIn": 3600,
    });
    let first = app.post("/api/tokens", &tenant.key, &body).await;
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None);

    // Later, the same body (fields in another order) is a replay.
    app.advance_ms(10 * SECOND);
    let reordered = json!({
        "expiresIn": 3600,
        "metadata": {"b": "2", "a": "1"},
        "description": "first",
        "idempotencyKey": "order-1",
        "collectionId": tenant.collection_id,
    });
    for replay_body in [&body, &reordered] {
        let replay = app.post("/api/tokens", &tenant.key, replay_body).await;
        replay.assert_status(200);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body);
    }

    // The same key with another body is a conflict and changes nothing.
    let mut other = body.clone();
    other["description"] = json!("second");
    app.post("/api/tokens", &tenant.key, &other)
        .await
        .assert_error(409, "TOKEN_ALREADY_CREATED");
    let mut without_expiry = body.clone();
    without_expiry.as_object_mut().unwrap().remove("expiresIn");
    app.post("/api/tokens", &tenant.key, &without_expiry)
        .await
        .assert_error(409, "TOKEN_ALREADY_CREATED");
    assert_eq!(
        app.token(&tenant.key, &id_of(&first.body)).await,
        first.body
    );
    assert_eq!(
        app.all_token_ids(&tenant.key, "").await,
        vec![id_of(&first.body)]
    );

    // Another key is another token.
    let mut next = body.clone();
    next["idempotencyKey"] = json!("order-2");
    let second = app.create_token(&tenant.key, &next).await;
    assert_ne!(id_of(&second), id_of(&first.body));
}

#[actix_web::test]
async fn idempotency_keys_are_per_account() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let token_a = app
        .create_token(
            &a.key,
            &json!({"collectionId": a.collection_id, "idempotencyKey": "shared"}),
        )
        .await;
    let resp = app
        .post(
            "/api/tokens",
            &b.key,
            &json!({"collectionId": b.collection_id, "idempotencyKey": "shared", "description": "b"}),
        )
        .await;
    resp.assert_status(201);
    assert_eq!(resp.header("idempotent-replayed"), None);
    assert_ne!(id_of(&resp.body), id_of(&token_a));
    assert_eq!(resp.body["accountId"], json!(b.account_id));
    assert_eq!(app.token(&a.key, &id_of(&token_a)).await, token_a);
}

#[actix_web::test]
async fn replaying_a_create_with_children_creates_nothing_more() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let body = json!({
        "collectionId": tenant.collection_id,
        "idempotencyKey": "family-1",
        "children": [{"description": "c0"}, {"description": "c1"}, {"type": "card"}],
    });
    let first = app.create_token(&tenant.key, &body).await;
    let before = app.all_token_ids(&tenant.key, "").await;
    assert_eq!(before.len(), 4);
    let replay = app.post("/api/tokens", &tenant.key, &body).await;
    replay.assert_status(200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first);
    assert_eq!(app.all_token_ids(&tenant.key, "").await, before);
    // A different body under the same key still conflicts.
    let mut other = body.clone();
    other["children"][2]["type"] = json!("bank");
    app.post("/api/tokens", &tenant.key, &other)
        .await
        .assert_error(409, "TOKEN_ALREADY_CREATED");
    assert_eq!(app.all_token_ids(&tenant.key, "").await, before);
}

#[actix_web::test]
async fn children_are_created_in_the_parents_collection() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let collection = app
        .create_collection(&tenant.key, &branded_collection())
        .await;
    let c = id_of(&collection);
    let children: Vec<Value> = (0..6)
        .map(|i| json!({"description": format!("child {i}"), "metadata": {"i": i.to_string()}}))
        .collect();
    let mut with_collection = children.clone();
    with_collection[5]["collectionId"] = json!(c);
    let parent = app
        .create_token(
            &tenant.key,
            &json!({"collectionId": c, "description": "parent", "children": with_collection}),
        )
        .await;
    let child_ids: Vec<String> = parent["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().expect("children are ids").to_owned())
        .collect();
    assert_eq!(child_ids.len(), 6);
    let mut fetched = Vec::new();
    for (i, id) in child_ids.iter().enumerate() {
        let child = app.token(&tenant.key, id).await;
        assert_token_fields(&child, &[]);
        assert_eq!(child["collectionId"], json!(c));
        assert_eq!(child["description"], json!(format!("child {i}")));
        assert_eq!(child["issuer"], collection["issuer"]);
        assert_eq!(child["children"], json!([]));
        assert_eq!(child["status"], "active");
        fetched.push(child);
    }

    // Expanded on GET...
    let resp = app
        .get(
            &format!("/api/tokens/{}?children=true", id_of(&parent)),
            &tenant.key,
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["children"], json!(fetched));
    let mut unexpanded = resp.body.clone();
    unexpanded["children"] = parent["children"].clone();
    assert_eq!(unexpanded, parent);
    let resp = app
        .get(
            &format!("/api/tokens/{}?children=false", id_of(&parent)),
            &tenant.key,
        )
        .await;
    assert_eq!(resp.body, parent);
    app.get(
        &format!("/api/tokens/{}?children=yes", id_of(&parent)),
        &tenant.key,
    )
    .await
    .assert_invalid(&["$.children"]);

    // ...and on lists.
    let listed = app
        .list_tokens(&tenant.key, &format!("collectionId={c}&children=true"))
        .await;
    listed.assert_status(200);
    let data = listed.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 7);
    let listed_parent = data.iter().find(|t| t["id"] == parent["id"]).unwrap();
    assert_eq!(listed_parent["children"], json!(fetched));
    let listed = app
        .list_tokens(&tenant.key, &format!("collectionId={c}"))
        .await;
    let listed_parent = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == parent["id"])
        .unwrap()
        .clone();
    assert_eq!(listed_parent, parent);
}

#[actix_web::test]
async fn a_batch_creates_every_token_in_request_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let types = ["token", "card", "bank"];
    let tokens: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "collectionId": tenant.collection_id,
                "description": format!("t{i}"),
                "type": types[i % 3],
            })
        })
        .collect();
    let created = app.create_batch(&tenant.key, tokens).await;
    assert_eq!(created.len(), 12);
    for (i, token) in created.iter().enumerate() {
        assert_token_fields(token, &[]);
        assert_eq!(token["description"], json!(format!("t{i}")));
        assert_eq!(token["type"], json!(types[i % 3]));
        assert_eq!(&app.token(&tenant.key, &id_of(token)).await, token);
    }
    let mut listed = app.all_token_ids(&tenant.key, "").await;
    let mut ids: Vec<String> = created.iter().map(id_of).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}

#[actix_web::test]
async fn a_batch_takes_ten_thousand_tokens_and_no_more() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = json!({"collectionId": tenant.collection_id});
    let too_many = vec![token.clone(); 10_001];
    app.post(
        "/api/tokens/batch",
        &tenant.key,
        &json!({"tokens": too_many}),
    )
    .await
    .assert_invalid(&["$.tokens"]);
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
    app.post("/api/tokens/batch", &tenant.key, &json!({"tokens": []}))
        .await
        .assert_invalid(&["$.tokens"]);
    app.post("/api/tokens/batch", &tenant.key, &json!({}))
        .await
        .assert_invalid(&["$.tokens"]);
    app.post(
        "/api/tokens/batch",
        &tenant.key,
        &json!({"tokens": [token], "x": 1}),
    )
    .await
    .assert_invalid(&["$.x"]);

    let created = app.create_batch(&tenant.key, vec![token; 10_000]).await;
    assert_eq!(created.len(), 10_000);
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 10_000);
}

#[actix_web::test]
async fn one_invalid_token_rejects_the_whole_batch() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = tenant.collection_id.as_str();
    let strict = id_of(
        &app.create_collection(
            &tenant.key,
            &json!({"name": "strict", "dataSchema": {"type": "object", "required": ["pan"]}}),
        )
        .await,
    );
    let good = json!({"collectionId": c});
    let cases: Vec<(Vec<Value>, Vec<&str>)> = vec![
        (
            vec![
                good.clone(),
                json!({"collectionId": c, "data": "d".repeat(17_000)}),
                good.clone(),
            ],
            vec!["$.tokens[1].data"],
        ),
        (
            vec![
                good.clone(),
                good.clone(),
                good.clone(),
                json!({"collectionId": c, "colour": 1}),
            ],
            vec!["$.tokens[3].colour"],
        ),
        (
            vec![
                json!({"collectionId": c, "metadata": {"colour": 1}}),
                good.clone(),
                json!({}),
            ],
            vec!["$.tokens[0].metadata.colour", "$.tokens[2].collectionId"],
        ),
        (
            vec![good.clone(), json!({"collectionId": strict, "data": {}})],
            vec!["$.tokens[1].data.pan"],
        ),
        (
            vec![
                json!({"collectionId": c, "expiresAt": "2026-01-17"}),
                good.clone(),
            ],
            vec!["$.tokens[0].expiresAt"],
        ),
        (
            vec![
                json!({"collectionId": c, "expiresAt": at(-1)}),
                good.clone(),
            ],
            vec!["$.tokens[0].expiresAt"],
        ),
        (
            vec![
                json!({"collectionId": c, "idempotencyKey": "dup"}),
                json!({"collectionId": c, "idempotencyKey": "dup"}),
            ],
            vec!["$.tokens[1].idempotencyKey"],
        ),
        (
            vec![
                good.clone(),
                json!({"collectionId": c, "children": [{}, {"data": "d".repeat(17_000)}]}),
            ],
            vec!["$.tokens[1].children[1].data"],
        ),
    ];
    for (tokens, paths) in cases {
        app.post(
            "/api/tokens/batch",
            &tenant.key,
            &json!({ "tokens": tokens }),
        )
        .await
        .assert_invalid(&paths);
    }
    // An unknown collection anywhere, or a liveness mismatch, also rejects all.
    app.post(
        "/api/tokens/batch",
        &tenant.key,
        &json!({"tokens": [good, {"collectionId": unknown_id()}]}),
    )
    .await
    .assert_error(404, "COLLECTION_NOT_FOUND");
    app.post(
        "/api/tokens/batch",
        &tenant.key,
        &json!({"tokens": [good, good, {"collectionId": c, "liveness": "main"}]}),
    )
    .await
    .assert_error(403, "ACCOUNT_LIVENESS_MISMATCH");
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn a_batch_may_carry_children_and_idempotency_keys() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = tenant.collection_id.as_str();
    let created = app
        .create_batch(
            &tenant.key,
            vec![
                json!({"collectionId": c, "idempotencyKey": "b-0"}),
                json!({"collectionId": c, "children": [{"description": "kid"}]}),
            ],
        )
        .await;
    assert_eq!(created.len(), 2);
    let kid = created[1]["children"][0].as_str().unwrap();
    assert_eq!(app.token(&tenant.key, kid).await["description"], "kid");
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 3);
    // The idempotent one is the same token as a single create with that key.
    let replay = app
        .post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": c, "idempotencyKey": "b-0"}),
        )
        .await;
    replay.assert_status(200);
    assert_eq!(replay.body, created[0]);
}

/// `POST /api/tokens/batch` with `body` sent as it is.
async fn post_batch_text(app: &TestApp, key: &str, body: String) -> Resp {
    app.send(
        app.request(Method::POST, "/api/tokens/batch")
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body),
    )
    .await
}

#[actix_web::test]
async fn a_batch_body_is_an_object_whose_one_field_is_the_token_list() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = json!({"collectionId": tenant.collection_id});
    let too_many = vec![token.clone(); 10_001];
    // A long value is quoted only in part: 200 characters, then `…`.
    let quoted: String = format!("[{}]", vec![token.to_string(); 10_001].join(","))
        .chars()
        .take(200)
        .chain(['…'])
        .collect();
    let cases = [
        (
            json!([1, {"b": 2.5, "a": "x"}]),
            json!([{"path": "$", "message": "[1,{\"a\":\"x\",\"b\":2.5}] is not of type \"object\""}]),
        ),
        (
            json!({}),
            json!([{"path": "$.tokens", "message": "is required"}]),
        ),
        (
            json!({"tokens": 5}),
            json!([{"path": "$.tokens", "message": "5 is not of type \"array\""}]),
        ),
        (
            json!({"tokens": {"a": 1}}),
            json!([{"path": "$.tokens", "message": "{\"a\":1} is not of type \"array\""}]),
        ),
        (
            json!({"tokens": []}),
            json!([{"path": "$.tokens", "message": "[] has less than 1 item"}]),
        ),
        (
            json!({"tokens": too_many}),
            json!([{"path": "$.tokens", "message": format!("{quoted} has more than 10000 items")}]),
        ),
        (
            json!({"tokens": [token], "x": 1}),
            json!([{"path": "$.x", "message": "is not a known field"}]),
        ),
        // Unknown fields in key order, then the missing list.
        (
            json!({"x": 1, "a b": 2}),
            json!([
                {"path": "$['a b']", "message": "is not a known field"},
                {"path": "$.x", "message": "is not a known field"},
                {"path": "$.tokens", "message": "is required"}
            ]),
        ),
    ];
    for (body, errors) in cases {
        let resp = app.post("/api/tokens/batch", &tenant.key, &body).await;
        resp.assert_error(422, "VALIDATION_FAILED");
        assert_eq!(resp.body["validationErrors"], errors);
    }
    // A field given twice is refused, as in any JSON body.
    let twice = format!("{{\"tokens\": 5, \"tokens\": [{token}]}}");
    let resp = post_batch_text(&app, &tenant.key, twice).await;
    resp.assert_error(400, "BAD_REQUEST");
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn every_item_of_a_batch_is_checked_and_all_problems_are_listed() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = tenant.collection_id.as_str();
    let good = json!({"collectionId": c});
    // Problems in two items, and at the top level: the items' come first, in
    // item order, then the top level's.
    let resp = app
        .post(
            "/api/tokens/batch",
            &tenant.key,
            &json!({
                "tokens": [
                    {"collectionId": c, "metadata": {"k": 1}},
                    good,
                    {"colour": "red"},
                    good
                ],
                "x": 1
            }),
        )
        .await;
    resp.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(
        resp.body["validationErrors"],
        json!([
            {"path": "$.tokens[0].metadata.k", "message": "1 is not of type \"string\""},
            {"path": "$.tokens[2].colour", "message": "is not a known field"},
            {"path": "$.tokens[2].collectionId", "message": "is required"},
            {"path": "$.x", "message": "is not a known field"}
        ])
    );
    // Problems found when planning (time checks, repeated keys) in two items.
    let resp = app
        .post(
            "/api/tokens/batch",
            &tenant.key,
            &json!({"tokens": [
                {"collectionId": c, "expiresAt": at(-1), "idempotencyKey": "k"},
                good,
                {"collectionId": c, "idempotencyKey": "k"}
            ]}),
        )
        .await;
    resp.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(
        resp.body["validationErrors"],
        json!([
            {"path": "$.tokens[0].expiresAt", "message": "must be in the future"},
            {"path": "$.tokens[2].idempotencyKey", "message": "is used by another token of this request"}
        ])
    );
    // A schema problem anywhere is answered alone, as for a single token:
    // what planning the other items would find is not listed.
    let resp = app
        .post(
            "/api/tokens/batch",
            &tenant.key,
            &json!({"tokens": [
                {"collectionId": c, "expiresAt": at(-1)},
                {"collectionId": c, "type": "coin"},
                {"collectionId": unknown_id()}
            ]}),
        )
        .await;
    resp.assert_invalid(&["$.tokens[1].type"]);
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn a_batch_body_that_is_not_json_is_refused_with_where_in_the_body() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let good = json!({"collectionId": tenant.collection_id}).to_string();
    let bad_line = format!(
        "  {{\"collectionId\": \"{}\", \"data\": [1, 1e400]}}",
        tenant.collection_id
    );
    // serde_json points at the number's last character.
    let column = bad_line.find("1e400").map(|i| i + 5);
    let body = format!("{{\"tokens\": [\n  {good},\n{bad_line}\n]}}");
    let resp = post_batch_text(&app, &tenant.key, body).await;
    resp.assert_error(400, "BAD_REQUEST");
    assert_eq!(
        resp.body["message"],
        json!(format!(
            "The body is not valid JSON: number out of range at line 3 column {}",
            column.unwrap_or_default()
        ))
    );
    // Nesting is counted from the body's root, not from the item's.
    let nested = |depth: usize| {
        format!(
            "{{\"tokens\": [{{\"collectionId\": \"{}\", \"data\": {}{}}}]}}",
            tenant.collection_id,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let resp = post_batch_text(&app, &tenant.key, nested(125)).await;
    resp.assert_error(400, "BAD_REQUEST");
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("The body is not valid JSON: recursion limit exceeded at line 1"),
        "{message}"
    );
    post_batch_text(&app, &tenant.key, nested(124))
        .await
        .assert_status(201);
}
