//! The redemption lifecycle: holds (place, capture, release, lapse on the
//! engine clock), voids, validation (a dry-run redeem) and batch redeem, with
//! the collection rules that govern them, their scopes, and the cross-tenant
//! rule on every route.
//!
//! Restarts are in `lifecycle_restart` (a cluster keeps no data dir).

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// `POST /api/tokens/{id}/holds`.
pub async fn hold(app: &TestApp, key: &str, id: &str, body: &Value) -> Resp {
    app.post(&format!("/api/tokens/{id}/holds"), key, body)
        .await
}

/// Holds `id` with `body`, asserting 201; returns the hold's id.
pub async fn hold_ok(app: &TestApp, key: &str, id: &str, body: &Value) -> String {
    let resp = hold(app, key, id, body).await;
    resp.assert_status(201);
    hold_id_of(&resp.body)
}

/// The id of a held token's hold.
pub fn hold_id_of(token: &Value) -> String {
    token["hold"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no hold in {token}"))
        .to_owned()
}

/// `POST /api/tokens/{id}/holds/{hold}/capture` with `{}`.
pub async fn capture(app: &TestApp, key: &str, id: &str, hold: &str) -> Resp {
    app.post(
        &format!("/api/tokens/{id}/holds/{hold}/capture"),
        key,
        &json!({}),
    )
    .await
}

/// `POST /api/tokens/{id}/holds/{hold}/release` with `{}`.
pub async fn release(app: &TestApp, key: &str, id: &str, hold: &str) -> Resp {
    app.post(
        &format!("/api/tokens/{id}/holds/{hold}/release"),
        key,
        &json!({}),
    )
    .await
}

/// `POST /api/tokens/{id}/redemption/void`.
pub async fn void(app: &TestApp, key: &str, id: &str, body: &Value) -> Resp {
    app.post(&format!("/api/tokens/{id}/redemption/void"), key, body)
        .await
}

/// `POST /api/tokens/{id}/validate`.
async fn validate(app: &TestApp, key: &str, id: &str, body: &Value) -> Resp {
    app.post(&format!("/api/tokens/{id}/validate"), key, body)
        .await
}

/// `POST /api/tokens/redeem` with these items.
async fn redeem_batch(app: &TestApp, key: &str, items: &[Value]) -> Resp {
    app.post("/api/tokens/redeem", key, &json!({ "redemptions": items }))
        .await
}

/// The CRN of the tenant's key named `name`.
fn crn(tenant: &Tenant, name: &str) -> String {
    format!("crn:{}:api-key:{name}", tenant.account_id)
}

/// A key named `name` with only `scopes`; returns the key string.
async fn named_key(app: &TestApp, tenant: &Tenant, name: &str, scopes: &[&str]) -> String {
    let key = app.create_key_named(&tenant.account_id, name, scopes).await;
    key["key"].as_str().expect("the key string").to_owned()
}

/// A token with data, metadata and encryption in `collection`.
async fn rich_token_in(app: &TestApp, tenant: &Tenant, collection: &str) -> Value {
    app.create_token(
        &tenant.key,
        &json!({
            "collectionId": collection,
            "data": {"code": "XYZ-123"},
            "metadata": {"colour": "red"},
            "encryption": {"cek": {"key": "k", "alg": "AES"}, "kek": {"key": "k2", "alg": "RSA"}},
        }),
    )
    .await
}

/// A collection of the tenant's with `rules` added to a name; returns its id.
async fn collection_with(app: &TestApp, tenant: &Tenant, rules: Value) -> String {
    let mut body = json!({"name": app.unique_name("rules")});
    body.as_object_mut()
        .unwrap()
        .extend(rules.as_object().expect("rules are an object").clone());
    id_of(&app.create_collection(&tenant.key, &body).await)
}

/// Everything the account can see: every token and every collection.
async fn everything(app: &TestApp, key: &str) -> Value {
    let tokens = app.list_tokens(key, "limit=1000").await;
    tokens.assert_status(200);
    assert_eq!(tokens.body["pagination"]["hasMore"], false);
    let collections = app.get("/api/collections?limit=1000", key).await;
    collections.assert_status(200);
    json!({"tokens": tokens.body["data"], "collections": collections.body["data"]})
}

/// Asserts a 409 `TOKEN_HELD` whose message gives the hold's `expiresAt`.
#[track_caller]
fn assert_held_until(resp: &Resp, expires_at: &str) {
    resp.assert_error(409, "TOKEN_HELD");
    let message = resp.body["message"].as_str().unwrap();
    assert!(message.contains(expires_at), "{message}");
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

// ---------------------------------------------------------------- holds

#[actix_web::test]
async fn holding_reserves_the_token_and_records_how() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = rich_token_in(&app, &tenant, &tenant.collection_id).await;
    let id = id_of(&token);
    let till = named_key(&app, &tenant, "till-7", &["token:redeem"]).await;
    app.advance_ms(10 * SECOND);
    let resp = hold(
        &app,
        &till,
        &id,
        &json!({"merchantId": "m-1", "idempotencyKey": "h-1", "ttlSecs": 60}),
    )
    .await;
    resp.assert_status(201);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let held = &resp.body;
    assert_token_fields(held, &["hold"]);
    assert_eq!(held["status"], "held");
    let hold_id = hold_id_of(held);
    assert!(uuid::Uuid::parse_str(&hold_id).is_ok(), "{hold_id}");
    assert_eq!(
        held["hold"],
        json!({
            "id": hold_id,
            "merchantId": "m-1",
            "idempotencyKey": "h-1",
            "heldAt": at(10 * SECOND),
            "expiresAt": at(70 * SECOND),
            "heldBy": crn(&tenant, "till-7"),
        })
    );
    // Held is not spent: the value is still there.
    for field in [
        "id",
        "createdAt",
        "createdBy",
        "collectionId",
        "activeFrom",
        "expiresAt",
        "data",
        "metadata",
        "encryption",
    ] {
        assert_eq!(held[field], token[field], "{field}");
    }
    assert_eq!(&app.token(&tenant.key, &id).await, held);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(409);
    assert_eq!(head.header("x-token-status"), Some("held"));
    assert_eq!(
        app.all_token_ids(&tenant.key, "status=held").await,
        vec![id.clone()]
    );
    assert_eq!(
        app.all_token_ids(&tenant.key, "status=active").await,
        Vec::<String>::new()
    );
    let listed = app.list_tokens(&tenant.key, "status=held").await;
    assert_eq!(&listed.body["data"][0], held);

    // Nobody may redeem it meanwhile, not even with the hold's own key and
    // merchant (that is what capture is for).
    for body in [
        json!({}),
        json!({"merchantId": "m-1"}),
        json!({"merchantId": "m-1", "idempotencyKey": "h-1"}),
    ] {
        assert_held_until(&app.redeem(&tenant.key, &id, &body).await, &at(70 * SECOND));
    }
    // Nor hold it again, unless repeating the hold's request (below).
    for body in [
        json!({}),
        json!({"merchantId": "m-1"}),
        json!({"merchantId": "m-1", "idempotencyKey": "h-2"}),
        json!({"merchantId": "m-2", "idempotencyKey": "h-1"}),
        json!({"idempotencyKey": "h-1"}),
    ] {
        assert_held_until(&hold(&app, &till, &id, &body).await, &at(70 * SECOND));
    }
    assert_eq!(&app.token(&tenant.key, &id).await, held);
}

#[actix_web::test]
async fn repeating_the_live_holds_request_replays_it() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let request = json!({"merchantId": "m-1", "idempotencyKey": "h-1", "ttlSecs": 60});
    let first = hold(&app, &tenant.key, &id, &request).await;
    first.assert_status(201);
    app.advance_ms(5 * SECOND);
    for _ in 0..2 {
        let replay = hold(&app, &tenant.key, &id, &request).await;
        replay.assert_status(200);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body);
    }
    assert_eq!(app.token(&tenant.key, &id).await, first.body);

    // A request without a key is never a replay.
    let other = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let keyless = json!({"merchantId": "m-1"});
    let placed = hold(&app, &tenant.key, &other, &keyless).await;
    placed.assert_status(201);
    assert_held_until(
        &hold(&app, &tenant.key, &other, &keyless).await,
        placed.body["hold"]["expiresAt"].as_str().unwrap(),
    );
}

#[actix_web::test]
async fn the_hold_ttl_defaults_to_and_may_not_exceed_the_collections_maximum() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    // The default maximum is 15 minutes.
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let resp = hold(&app, &tenant.key, &id, &json!({})).await;
    resp.assert_status(201);
    assert_eq!(resp.body["hold"]["heldAt"], T0_TEXT);
    assert_eq!(resp.body["hold"]["expiresAt"], at(900 * SECOND));
    assert_eq!(resp.body["hold"]["merchantId"], Value::Null);
    assert_eq!(resp.body["hold"]["idempotencyKey"], Value::Null);
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    hold(&app, &tenant.key, &id, &json!({"ttlSecs": 901}))
        .await
        .assert_invalid(&["$.ttlSecs"]);

    let quick = collection_with(&app, &tenant, json!({"holdTtlSecsMax": 120})).await;
    let defaulted = app.create_token_in(&tenant.key, &quick).await;
    let resp = hold(&app, &tenant.key, &defaulted, &json!({})).await;
    resp.assert_status(201);
    assert_eq!(resp.body["hold"]["expiresAt"], at(120 * SECOND));

    let capped = app.create_token_in(&tenant.key, &quick).await;
    let resp = hold(&app, &tenant.key, &capped, &json!({"ttlSecs": 121})).await;
    resp.assert_invalid(&["$.ttlSecs"]);
    assert!(
        resp.body["validationErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("120"),
        "{}",
        resp.body
    );
    assert_eq!(app.token(&tenant.key, &capped).await["status"], "active");
    let resp = hold(&app, &tenant.key, &capped, &json!({"ttlSecs": 120})).await;
    resp.assert_status(201);
    assert_eq!(resp.body["hold"]["expiresAt"], at(120 * SECOND));

    let short = app.create_token_in(&tenant.key, &quick).await;
    let resp = hold(&app, &tenant.key, &short, &json!({"ttlSecs": 1})).await;
    resp.assert_status(201);
    assert_eq!(resp.body["hold"]["expiresAt"], at(SECOND));
}

#[actix_web::test]
async fn invalid_hold_bodies_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let cases = [
        (json!({"ttlSecs": 0}), vec!["$.ttlSecs"]),
        (json!({"ttlSecs": -5}), vec!["$.ttlSecs"]),
        (json!({"ttlSecs": 86_401}), vec!["$.ttlSecs"]),
        (json!({"ttlSecs": 1.5}), vec!["$.ttlSecs"]),
        (json!({"ttlSecs": "60"}), vec!["$.ttlSecs"]),
        (json!({"merchantId": ""}), vec!["$.merchantId"]),
        (json!({"idempotencyKey": 7}), vec!["$.idempotencyKey"]),
        (json!({"holdFor": 60}), vec!["$.holdFor"]),
        (
            json!({"merchantId": 1, "ttlSecs": 0, "x": true}),
            vec!["$.merchantId", "$.ttlSecs", "$.x"],
        ),
        (json!([]), vec!["$"]),
    ];
    let before = everything(&app, &tenant.key).await;
    for (body, paths) in cases {
        hold(&app, &tenant.key, &id, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(everything(&app, &tenant.key).await, before);
    // 86400 s is allowed by the schema, and beyond this collection's maximum.
    hold(&app, &tenant.key, &id, &json!({"ttlSecs": 86_400}))
        .await
        .assert_invalid(&["$.ttlSecs"]);
    hold(&app, &tenant.key, &id, &json!({"ttlSecs": 900}))
        .await
        .assert_status(201);
}

#[actix_web::test]
async fn a_hold_never_outlives_its_token() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let body = json!({"collectionId": tenant.collection_id, "expiresIn": 30, "data": {"v": 1}});
    let first = id_of(&app.create_token(&tenant.key, &body).await);
    let second = id_of(&app.create_token(&tenant.key, &body).await);
    let mut holds = Vec::new();
    for id in [&first, &second] {
        let resp = hold(&app, &tenant.key, id, &json!({"ttlSecs": 60})).await;
        resp.assert_status(201);
        assert_eq!(resp.body["hold"]["expiresAt"], at(30 * SECOND));
        assert_eq!(resp.body["hold"]["expiresAt"], resp.body["expiresAt"]);
        holds.push(hold_id_of(&resp.body));
    }
    app.advance_ms(30 * SECOND - 1);
    capture(&app, &tenant.key, &first, &holds[0])
        .await
        .assert_status(200);

    // At the token's expiry the hold is over too: the token is expired.
    app.advance_ms(1);
    let token = app.token(&tenant.key, &second).await;
    assert_token_fields(&token, &[]);
    assert_eq!(token["status"], "expired");
    assert_eq!(token["data"], Value::Null);
    let head = app.head_token(&tenant.key, &second).await;
    head.assert_status(410);
    assert_eq!(head.header("x-token-status"), Some("expired"));
    capture(&app, &tenant.key, &second, &holds[1])
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    let released = release(&app, &tenant.key, &second, &holds[1]).await;
    released.assert_status(200);
    assert_eq!(released.header("idempotent-replayed"), Some("true"));
    assert_eq!(released.body, token);
    app.redeem(&tenant.key, &second, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    hold(&app, &tenant.key, &second, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &second).await, token);
    assert_eq!(app.token(&tenant.key, &first).await["status"], "redeemed");
}

#[actix_web::test]
async fn a_hold_is_checked_like_a_redeem() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let gated = collection_with(&app, &tenant, json!({"merchants": ["m-1"]})).await;
    let active = app.create_token_in(&tenant.key, &gated).await;
    let later = id_of(
        &app.create_token(
            &tenant.key,
            &json!({"collectionId": c, "activeFrom": at(DAY)}),
        )
        .await,
    );
    let short = id_of(
        &app.create_token(&tenant.key, &json!({"collectionId": c, "expiresIn": 1}))
            .await,
    );
    let redeemed = app.create_token_in(&tenant.key, c).await;
    app.redeem(&tenant.key, &redeemed, &json!({}))
        .await
        .assert_status(200);
    let deleted = app.create_token_in(&tenant.key, c).await;
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    app.advance_ms(SECOND);

    let before = everything(&app, &tenant.key).await;
    for body in [
        json!({}),
        json!({"merchantId": "m-2"}),
        json!({"idempotencyKey": "k"}),
    ] {
        hold(&app, &tenant.key, &active, &body)
            .await
            .assert_error(403, "MERCHANT_NOT_ALLOWED");
    }
    let resp = hold(&app, &tenant.key, &later, &json!({})).await;
    resp.assert_error(422, "TOKEN_NOT_YET_ACTIVE");
    assert!(resp.body["message"].as_str().unwrap().contains(&at(DAY)));
    hold(&app, &tenant.key, &short, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    hold(&app, &tenant.key, &deleted, &json!({}))
        .await
        .assert_error(410, "TOKEN_DELETED");
    let resp = hold(&app, &tenant.key, &redeemed, &json!({})).await;
    resp.assert_error(409, "TOKEN_ALREADY_REDEEMED");
    assert!(resp.body["message"].as_str().unwrap().contains(T0_TEXT));
    for id in [unknown_id(), "not-a-token".to_owned()] {
        hold(&app, &tenant.key, &id, &json!({}))
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
    }
    assert_eq!(everything(&app, &tenant.key).await, before);

    // An allowed merchant may; the token becomes holdable at activeFrom.
    hold(&app, &tenant.key, &active, &json!({"merchantId": "m-1"}))
        .await
        .assert_status(201);
    app.advance_ms(DAY - SECOND);
    hold(&app, &tenant.key, &later, &json!({}))
        .await
        .assert_status(201);
}

// ---------------------------------------------------------------- capture

#[actix_web::test]
async fn capturing_redeems_the_token_for_the_hold() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = id_of(&rich_token_in(&app, &tenant, &tenant.collection_id).await);
    let holder = named_key(&app, &tenant, "pos-1", &["token:redeem"]).await;
    let capturer = named_key(&app, &tenant, "pos-2", &["token:redeem"]).await;
    app.advance_ms(SECOND);
    let hold_id = hold_ok(
        &app,
        &holder,
        &id,
        &json!({"merchantId": "m-1", "idempotencyKey": "k-1", "ttlSecs": 60}),
    )
    .await;
    app.advance_ms(5 * SECOND);
    let resp = capture(&app, &capturer, &id, &hold_id).await;
    resp.assert_status(200);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let redeemed = &resp.body;
    assert_token_fields(redeemed, &["redemption"]);
    assert_eq!(redeemed["status"], "redeemed");
    assert_eq!(
        redeemed["redemption"],
        json!({
            "merchantId": "m-1",
            "idempotencyKey": "k-1",
            "redeemedAt": at(6 * SECOND),
            "redeemedBy": crn(&tenant, "pos-2"),
            "holdId": hold_id,
        })
    );
    // Spent: the value is freed as by a redeem.
    assert_eq!(redeemed["data"], Value::Null);
    assert_eq!(redeemed["encryption"], Value::Null);
    assert_eq!(redeemed["metadata"], json!({"colour": "red"}));
    assert_eq!(&app.token(&tenant.key, &id).await, redeemed);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(410);
    assert_eq!(head.header("x-token-status"), Some("redeemed"));

    // Capturing again, by anyone, is a replay.
    app.advance_ms(SECOND);
    for key in [&capturer, &holder] {
        let again = capture(&app, key, &id, &hold_id).await;
        again.assert_status(200);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(&again.body, redeemed);
    }
    // The redemption carries the hold's request: repeating it is a replay,
    // anything else a conflict.
    let replay = app
        .redeem(
            &tenant.key,
            &id,
            &json!({"merchantId": "m-1", "idempotencyKey": "k-1"}),
        )
        .await;
    replay.assert_status(200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(&replay.body, redeemed);
    for body in [
        json!({}),
        json!({"merchantId": "m-2", "idempotencyKey": "k-1"}),
    ] {
        let resp = app.redeem(&tenant.key, &id, &body).await;
        resp.assert_error(409, "TOKEN_ALREADY_REDEEMED");
        assert!(resp.body["message"]
            .as_str()
            .unwrap()
            .contains(&at(6 * SECOND)));
    }
    hold(&app, &tenant.key, &id, &json!({}))
        .await
        .assert_error(409, "TOKEN_ALREADY_REDEEMED");
    release(&app, &tenant.key, &id, &hold_id)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    assert_eq!(&app.token(&tenant.key, &id).await, redeemed);
}

#[actix_web::test]
async fn capture_and_release_name_a_hold_of_that_token() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let a = app.create_token_in(&tenant.key, c).await;
    let b = app.create_token_in(&tenant.key, c).await;
    let never_held = app.create_token_in(&tenant.key, c).await;
    let on_a = hold_ok(&app, &tenant.key, &a, &json!({})).await;
    let on_b = hold_ok(&app, &tenant.key, &b, &json!({})).await;
    let before = everything(&app, &tenant.key).await;
    for action in ["capture", "release"] {
        let path = |id: &str, hold: &str| format!("/api/tokens/{id}/holds/{hold}/{action}");
        for hold in [unknown_id(), "not-a-hold".to_owned(), on_b.clone()] {
            app.post(&path(&a, &hold), &tenant.key, &json!({}))
                .await
                .assert_error(404, "HOLD_NOT_FOUND");
        }
        app.post(&path(&never_held, &on_a), &tenant.key, &json!({}))
            .await
            .assert_error(404, "HOLD_NOT_FOUND");
        // The token is checked first.
        for id in [unknown_id(), "not-a-token".to_owned()] {
            for hold in [on_a.clone(), "not-a-hold".to_owned()] {
                app.post(&path(&id, &hold), &tenant.key, &json!({}))
                    .await
                    .assert_error(404, "TOKEN_NOT_FOUND");
            }
        }
    }
    assert_eq!(everything(&app, &tenant.key).await, before);
    // Each hold still works on its own token.
    capture(&app, &tenant.key, &a, &on_a)
        .await
        .assert_status(200);
    let released = release(&app, &tenant.key, &b, &on_b).await;
    released.assert_status(200);
    assert_eq!(released.body["status"], "active");
}

#[actix_web::test]
async fn capture_and_release_take_an_empty_object() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let hold_id = hold_ok(&app, &tenant.key, &id, &json!({})).await;
    let held = app.token(&tenant.key, &id).await;
    for action in ["capture", "release"] {
        let path = format!("/api/tokens/{id}/holds/{hold_id}/{action}");
        for (body, paths) in [
            (json!({"merchantId": "m-1"}), vec!["$.merchantId"]),
            (json!({"a": 1, "b": 2}), vec!["$.a", "$.b"]),
            (json!([]), vec!["$"]),
            (json!(null), vec!["$"]),
        ] {
            app.post(&path, &tenant.key, &body)
                .await
                .assert_invalid(&paths);
        }
    }
    assert_eq!(app.token(&tenant.key, &id).await, held);
}

// ---------------------------------------------------------------- release

#[actix_web::test]
async fn releasing_a_hold_frees_the_token_to_be_held_again() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = rich_token_in(&app, &tenant, &tenant.collection_id).await;
    let id = id_of(&token);
    let request = json!({"merchantId": "m-1", "idempotencyKey": "k-1"});
    let first = hold_ok(&app, &tenant.key, &id, &request).await;
    app.advance_ms(SECOND);
    let resp = release(&app, &tenant.key, &id, &first).await;
    resp.assert_status(200);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let released = &resp.body;
    // As it was before the hold.
    assert_eq!(released, &token);
    assert_eq!(&app.token(&tenant.key, &id).await, released);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(200);
    assert_eq!(head.header("x-token-status"), Some("active"));

    let again = release(&app, &tenant.key, &id, &first).await;
    again.assert_status(200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(&again.body, released);
    capture(&app, &tenant.key, &id, &first)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");

    // Held again, by the same request even: a new hold, not a replay of
    // the released one.
    let resp = hold(&app, &tenant.key, &id, &request).await;
    resp.assert_status(201);
    let second = hold_id_of(&resp.body);
    assert_ne!(second, first);
    assert_eq!(resp.body["hold"]["heldAt"], at(SECOND));
    capture(&app, &tenant.key, &id, &first)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    let captured = capture(&app, &tenant.key, &id, &second).await;
    captured.assert_status(200);
    assert_eq!(captured.body["redemption"]["holdId"], json!(second));
    // A captured hold cannot be released.
    release(&app, &tenant.key, &id, &second)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    assert_eq!(app.token(&tenant.key, &id).await, captured.body);
}

#[actix_web::test]
async fn deleting_a_held_token_ends_its_hold() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let hold_id = hold_ok(&app, &tenant.key, &id, &json!({})).await;
    app.delete_token(&tenant.key, &id).await.assert_status(204);
    let token = app.token(&tenant.key, &id).await;
    assert_eq!(token["status"], "deleted");
    assert!(token.get("hold").is_none(), "{token}");
    capture(&app, &tenant.key, &id, &hold_id)
        .await
        .assert_error(410, "TOKEN_DELETED");
    release(&app, &tenant.key, &id, &hold_id)
        .await
        .assert_error(410, "TOKEN_DELETED");
    assert_eq!(
        app.all_token_ids(&tenant.key, "status=held").await,
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------- hold expiry

#[actix_web::test]
async fn a_hold_can_be_captured_until_just_before_its_expires_at() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.advance_ms(10 * SECOND);
    let hold_id = hold_ok(&app, &tenant.key, &id, &json!({"ttlSecs": 60})).await;
    app.advance_ms(60 * SECOND - 1);
    let held = app.token(&tenant.key, &id).await;
    assert_eq!(held["status"], "held");
    assert_eq!(held["hold"]["expiresAt"], at(70 * SECOND));
    app.head_token(&tenant.key, &id).await.assert_status(409);
    let resp = capture(&app, &tenant.key, &id, &hold_id).await;
    resp.assert_status(200);
    assert_eq!(resp.body["redemption"]["redeemedAt"], at(70 * SECOND - 1));
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &id).await, resp.body);
}

/// What anyone sees of a token whose hold lapsed: active, no hold, its data
/// back, the lapsed hold no longer capturable.
async fn assert_lapsed(app: &TestApp, tenant: &Tenant, id: &str, hold_id: &str) {
    let token = app.token(&tenant.key, id).await;
    assert_token_fields(&token, &[]);
    assert_eq!(token["status"], "active");
    assert_eq!(token["data"], json!({"code": "XYZ-123"}));
    let head = app.head_token(&tenant.key, id).await;
    head.assert_status(200);
    assert_eq!(head.header("x-token-status"), Some("active"));
    let held = app.all_token_ids(&tenant.key, "status=held").await;
    assert!(!held.contains(&id.to_owned()), "{held:?}");
    let active = app.all_token_ids(&tenant.key, "status=active").await;
    assert!(active.contains(&id.to_owned()), "{active:?}");
    capture(app, &tenant.key, id, hold_id)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    let check = validate(app, &tenant.key, id, &json!({})).await;
    check.assert_status(200);
    assert_eq!(check.body["redeemable"], true, "{}", check.body);
    assert_eq!(app.token(&tenant.key, id).await, token);
}

#[actix_web::test]
async fn at_its_expires_at_a_hold_is_over_whether_or_not_the_timers_ran() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let request = json!({"merchantId": "m-1", "idempotencyKey": "h", "ttlSecs": 60});
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let id = id_of(&rich_token_in(&app, &tenant, &tenant.collection_id).await);
        let hold_id = hold_ok(&app, &tenant.key, &id, &request).await;
        tokens.push((id, hold_id));
    }
    app.advance_ms(60 * SECOND);
    // No timer has run: every decision already sees the hold over.
    assert_lapsed(&app, &tenant, &tokens[0].0, &tokens[0].1).await;
    // Before the timers, one is redeemed and one held anew; the timers,
    // coming late, change neither.
    let (early_redeem, _) = tokens.pop().unwrap();
    let redeemed = app.redeem(&tenant.key, &early_redeem, &json!({})).await;
    redeemed.assert_status(200);
    let (early_hold, _) = tokens.pop().unwrap();
    let renewed = hold(&app, &tenant.key, &early_hold, &json!({"ttlSecs": 30})).await;
    renewed.assert_status(201);
    assert_eq!(renewed.body["hold"]["expiresAt"], at(90 * SECOND));
    app.run_timers().await;
    for (id, hold_id) in &tokens {
        assert_lapsed(&app, &tenant, id, hold_id).await;
    }
    assert_eq!(app.token(&tenant.key, &early_redeem).await, redeemed.body);
    assert_eq!(app.token(&tenant.key, &early_hold).await, renewed.body);
    app.advance_ms(30 * SECOND - 1);
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &early_hold).await, renewed.body);
    app.advance_ms(1);
    app.run_timers().await;
    assert_lapsed(&app, &tenant, &early_hold, &hold_id_of(&renewed.body)).await;

    // Releasing a lapsed hold is a replay.
    let (a, on_a) = &tokens[0];
    let released = release(&app, &tenant.key, a, on_a).await;
    released.assert_status(200);
    assert_eq!(released.header("idempotent-replayed"), Some("true"));
    assert_eq!(released.body["status"], "active");
    // The token is free for anyone: a redeem...
    let redeemed = app
        .redeem(&tenant.key, a, &json!({"merchantId": "m-2"}))
        .await;
    redeemed.assert_status(200);
    assert_eq!(redeemed.body["redemption"]["merchantId"], "m-2");
    // ...or a new hold, also with the lapsed hold's request (no replay).
    let (b, on_b) = &tokens[1];
    let resp = hold(&app, &tenant.key, b, &request).await;
    resp.assert_status(201);
    let renewed = hold_id_of(&resp.body);
    assert_ne!(&renewed, on_b);
    assert_eq!(resp.body["hold"]["expiresAt"], at(150 * SECOND));
    capture(&app, &tenant.key, b, &renewed)
        .await
        .assert_status(200);
    let (c, _) = &tokens[2];
    hold(&app, &tenant.key, c, &json!({"merchantId": "m-3"}))
        .await
        .assert_status(201);
}

// ---------------------------------------------------------------- void

#[actix_web::test]
async fn voiding_a_redemption_makes_the_token_redeemable_again() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = id_of(&rich_token_in(&app, &tenant, &tenant.collection_id).await);
    let till = named_key(&app, &tenant, "till", &["token:redeem"]).await;
    let refunds = named_key(&app, &tenant, "refunds", &["token:redeem"]).await;
    app.advance_ms(10 * SECOND);
    app.redeem(
        &till,
        &id,
        &json!({"merchantId": "m-1", "idempotencyKey": "r-1"}),
    )
    .await
    .assert_status(200);
    app.advance_ms(10 * SECOND);
    let resp = void(
        &app,
        &refunds,
        &id,
        &json!({"reason": "returned", "idempotencyKey": "v-1"}),
    )
    .await;
    resp.assert_status(200);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let voided = &resp.body;
    assert_token_fields(voided, &["voidedRedemptions"]);
    assert_eq!(voided["status"], "active");
    assert_eq!(
        voided["voidedRedemptions"],
        json!([{
            "merchantId": "m-1",
            "idempotencyKey": "r-1",
            "redeemedAt": at(10 * SECOND),
            "redeemedBy": crn(&tenant, "till"),
            "voidedAt": at(20 * SECOND),
            "voidedBy": crn(&tenant, "refunds"),
            "voidReason": "returned",
            "voidIdempotencyKey": "v-1",
        }])
    );
    // What the redemption erased stays erased.
    assert_eq!(voided["data"], Value::Null);
    assert_eq!(voided["encryption"], Value::Null);
    assert_eq!(voided["metadata"], json!({"colour": "red"}));
    assert_eq!(&app.token(&tenant.key, &id).await, voided);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(200);
    assert_eq!(head.header("x-token-status"), Some("active"));

    // Repeating the void is a replay; another void finds nothing to void.
    let again = void(
        &app,
        &refunds,
        &id,
        &json!({"reason": "returned", "idempotencyKey": "v-1"}),
    )
    .await;
    again.assert_status(200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(&again.body, voided);
    for body in [json!({}), json!({"idempotencyKey": "v-2"})] {
        void(&app, &refunds, &id, &body)
            .await
            .assert_error(409, "TOKEN_NOT_REDEEMED");
    }

    // Redeemed again: a new redemption beside the voided one.
    app.advance_ms(10 * SECOND);
    let resp = app
        .redeem(
            &till,
            &id,
            &json!({"merchantId": "m-2", "idempotencyKey": "r-2"}),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let redeemed = &resp.body;
    assert_token_fields(redeemed, &["redemption", "voidedRedemptions"]);
    assert_eq!(redeemed["status"], "redeemed");
    assert_eq!(
        redeemed["redemption"],
        json!({
            "merchantId": "m-2",
            "idempotencyKey": "r-2",
            "redeemedAt": at(30 * SECOND),
            "redeemedBy": crn(&tenant, "till"),
        })
    );
    assert_eq!(redeemed["voidedRedemptions"], voided["voidedRedemptions"]);
    assert_eq!(redeemed["data"], Value::Null);
    app.redeem(&till, &id, &json!({}))
        .await
        .assert_error(409, "TOKEN_ALREADY_REDEEMED");

    // A void without reason or key.
    app.advance_ms(SECOND);
    let resp = void(&app, &refunds, &id, &json!({})).await;
    resp.assert_status(200);
    let list = resp.body["voidedRedemptions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], voided["voidedRedemptions"][0]);
    assert_eq!(list[1]["idempotencyKey"], "r-2");
    assert_eq!(list[1]["voidedAt"], at(31 * SECOND));
    assert_eq!(list[1]["voidReason"], Value::Null);
    assert_eq!(list[1]["voidIdempotencyKey"], Value::Null);
    assert!(list[1].get("holdId").is_none());
}

#[actix_web::test]
async fn voiding_a_capture_records_its_hold_and_ends_its_replays() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let first = hold_ok(
        &app,
        &tenant.key,
        &id,
        &json!({"merchantId": "m-1", "idempotencyKey": "k"}),
    )
    .await;
    capture(&app, &tenant.key, &id, &first)
        .await
        .assert_status(200);
    let resp = void(&app, &tenant.key, &id, &json!({"reason": "cancelled"})).await;
    resp.assert_status(200);
    assert_eq!(resp.body["status"], "active");
    assert!(resp.body.get("redemption").is_none());
    let voided = &resp.body["voidedRedemptions"][0];
    assert_eq!(
        keys(voided),
        [
            "holdId",
            "idempotencyKey",
            "merchantId",
            "redeemedAt",
            "redeemedBy",
            "voidIdempotencyKey",
            "voidReason",
            "voidedAt",
            "voidedBy",
        ]
    );
    assert_eq!(voided["holdId"], json!(first));
    assert_eq!(voided["merchantId"], "m-1");
    assert_eq!(voided["idempotencyKey"], "k");
    assert_eq!(voided["voidReason"], "cancelled");

    // The captured redemption is gone: capturing its hold is no replay.
    capture(&app, &tenant.key, &id, &first)
        .await
        .assert_error(409, "HOLD_NOT_ACTIVE");
    // Hold, release, hold again, capture.
    let second = hold_ok(&app, &tenant.key, &id, &json!({})).await;
    release(&app, &tenant.key, &id, &second)
        .await
        .assert_status(200);
    let third = hold_ok(&app, &tenant.key, &id, &json!({})).await;
    let resp = capture(&app, &tenant.key, &id, &third).await;
    resp.assert_status(200);
    assert_eq!(resp.body["redemption"]["holdId"], json!(third));
    assert_eq!(resp.body["redemption"]["merchantId"], Value::Null);
    assert_eq!(resp.body["voidedRedemptions"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn only_a_redeemed_token_can_be_voided() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let active = app.create_token_in(&tenant.key, c).await;
    let held = app.create_token_in(&tenant.key, c).await;
    hold_ok(&app, &tenant.key, &held, &json!({})).await;
    let short = id_of(
        &app.create_token(&tenant.key, &json!({"collectionId": c, "expiresIn": 1}))
            .await,
    );
    let deleted = app.create_token_in(&tenant.key, c).await;
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    let spent_then_deleted = app.create_token_in(&tenant.key, c).await;
    app.redeem(&tenant.key, &spent_then_deleted, &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &spent_then_deleted)
        .await
        .assert_status(204);
    app.advance_ms(SECOND);

    let before = everything(&app, &tenant.key).await;
    for id in [&active, &held, &short] {
        void(&app, &tenant.key, id, &json!({"reason": "x"}))
            .await
            .assert_error(409, "TOKEN_NOT_REDEEMED");
    }
    for id in [&deleted, &spent_then_deleted] {
        void(&app, &tenant.key, id, &json!({}))
            .await
            .assert_error(410, "TOKEN_DELETED");
    }
    for id in [unknown_id(), "not-a-token".to_owned()] {
        void(&app, &tenant.key, &id, &json!({}))
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
    }
    assert_eq!(everything(&app, &tenant.key).await, before);
}

#[actix_web::test]
async fn invalid_void_bodies_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_status(200);
    let redeemed = app.token(&tenant.key, &id).await;
    for (body, paths) in [
        (json!({"reason": "x".repeat(201)}), vec!["$.reason"]),
        (json!({"reason": 5}), vec!["$.reason"]),
        (json!({"idempotencyKey": ""}), vec!["$.idempotencyKey"]),
        (json!({"refund": true}), vec!["$.refund"]),
        (
            json!({"reason": [], "idempotencyKey": 1}),
            vec!["$.reason", "$.idempotencyKey"],
        ),
        (json!("why"), vec!["$"]),
    ] {
        void(&app, &tenant.key, &id, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(app.token(&tenant.key, &id).await, redeemed);
    // 200 characters (not bytes) is the limit.
    let reason = "é".repeat(200);
    let resp = void(&app, &tenant.key, &id, &json!({"reason": reason})).await;
    resp.assert_status(200);
    assert_eq!(
        resp.body["voidedRedemptions"][0]["voidReason"],
        json!(reason)
    );
}

#[actix_web::test]
async fn a_redemption_can_be_voided_until_just_before_its_window_closes() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let hourly = collection_with(&app, &tenant, json!({"voidWindowSecs": 3600})).await;
    let a = app.create_token_in(&tenant.key, &hourly).await;
    let b = app.create_token_in(&tenant.key, &hourly).await;
    app.advance_ms(10 * SECOND);
    for id in [&a, &b] {
        app.redeem(&tenant.key, id, &json!({}))
            .await
            .assert_status(200);
    }
    app.advance_ms(3600 * SECOND - 1);
    let resp = void(&app, &tenant.key, &a, &json!({})).await;
    resp.assert_status(200);
    assert_eq!(resp.body["status"], "active");
    app.advance_ms(1);
    let redeemed = app.token(&tenant.key, &b).await;
    void(&app, &tenant.key, &b, &json!({"idempotencyKey": "v"}))
        .await
        .assert_error(409, "VOID_WINDOW_CLOSED");
    assert_eq!(app.token(&tenant.key, &b).await, redeemed);
}

#[actix_web::test]
async fn the_default_void_window_is_ninety_days() {
    // Tombstones are kept longer than the window, so the redeemed tokens
    // are still there when it closes.
    let app = TestApp::builder().retention_ms(100 * DAY).spawn().await;
    let tenant = app.tenant().await;
    let a = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let b = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    for id in [&a, &b] {
        app.redeem(&tenant.key, id, &json!({}))
            .await
            .assert_status(200);
    }
    app.advance_ms(90 * DAY - 1);
    void(&app, &tenant.key, &a, &json!({}))
        .await
        .assert_status(200);
    app.advance_ms(1);
    void(&app, &tenant.key, &b, &json!({}))
        .await
        .assert_error(409, "VOID_WINDOW_CLOSED");
    assert_eq!(app.token(&tenant.key, &b).await["status"], "redeemed");
}

#[actix_web::test]
async fn a_void_window_of_zero_forbids_voids() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let final_sale = collection_with(&app, &tenant, json!({"voidWindowSecs": 0})).await;
    let id = app.create_token_in(&tenant.key, &final_sale).await;
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_status(200);
    let redeemed = app.token(&tenant.key, &id).await;
    void(&app, &tenant.key, &id, &json!({}))
        .await
        .assert_error(409, "VOID_WINDOW_CLOSED");
    assert_eq!(app.token(&tenant.key, &id).await, redeemed);
}

#[actix_web::test]
async fn a_token_voided_after_its_expiry_is_expired() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = id_of(
        &app.create_token(
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "expiresIn": 60, "data": {"v": 1}}),
        )
        .await,
    );
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_status(200);
    app.advance_ms(60 * SECOND);
    let resp = void(&app, &tenant.key, &id, &json!({})).await;
    resp.assert_status(200);
    let voided = &resp.body;
    assert_token_fields(voided, &["voidedRedemptions"]);
    assert_eq!(voided["status"], "expired");
    assert_eq!(voided["data"], Value::Null);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(410);
    assert_eq!(head.header("x-token-status"), Some("expired"));
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    hold(&app, &tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    void(&app, &tenant.key, &id, &json!({}))
        .await
        .assert_error(409, "TOKEN_NOT_REDEEMED");
    app.run_timers().await;
    assert_eq!(&app.token(&tenant.key, &id).await, voided);
}

#[actix_web::test]
async fn a_token_is_voided_at_most_twenty_times() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    for i in 0..20 {
        app.redeem(
            &tenant.key,
            &id,
            &json!({"idempotencyKey": format!("r-{i}")}),
        )
        .await
        .assert_status(200);
        let resp = void(
            &app,
            &tenant.key,
            &id,
            &json!({"idempotencyKey": format!("v-{i}")}),
        )
        .await;
        resp.assert_status(200);
        assert_eq!(
            resp.body["voidedRedemptions"].as_array().unwrap().len(),
            i + 1
        );
    }
    let redeemed = app
        .redeem(&tenant.key, &id, &json!({"idempotencyKey": "r-20"}))
        .await;
    redeemed.assert_status(200);
    void(&app, &tenant.key, &id, &json!({"idempotencyKey": "v-20"}))
        .await
        .assert_error(409, "VOID_LIMIT_REACHED");
    let token = app.token(&tenant.key, &id).await;
    assert_eq!(token, redeemed.body);
    assert_eq!(token["status"], "redeemed");
    let voided: Vec<&Value> = token["voidedRedemptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["idempotencyKey"])
        .collect();
    let expected: Vec<Value> = (0..20).map(|i| json!(format!("r-{i}"))).collect();
    assert_eq!(voided, expected.iter().collect::<Vec<_>>());
}

// ---------------------------------------------------------------- collections

#[actix_web::test]
async fn collections_carry_the_hold_and_void_rules() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let plain = app
        .get(
            &format!("/api/collections/{}", tenant.collection_id),
            &tenant.key,
        )
        .await;
    plain.assert_status(200);
    assert_eq!(plain.body["holdTtlSecsMax"], 900);
    assert_eq!(plain.body["voidWindowSecs"], 7_776_000);
    for (hold_max, window) in [(60, 0), (1, 31_536_000), (86_400, 1)] {
        let created = app
            .create_collection(
                &tenant.key,
                &json!({"name": "r", "holdTtlSecsMax": hold_max, "voidWindowSecs": window}),
            )
            .await;
        assert_eq!(created["holdTtlSecsMax"], hold_max);
        assert_eq!(created["voidWindowSecs"], window);
        let fetched = app
            .get(
                &format!("/api/collections/{}", id_of(&created)),
                &tenant.key,
            )
            .await;
        assert_eq!(fetched.body, created);
    }
    let before = everything(&app, &tenant.key).await;
    for (body, paths) in [
        (json!({"holdTtlSecsMax": 0}), vec!["$.holdTtlSecsMax"]),
        (json!({"holdTtlSecsMax": 86_401}), vec!["$.holdTtlSecsMax"]),
        (json!({"holdTtlSecsMax": "60"}), vec!["$.holdTtlSecsMax"]),
        (json!({"holdTtlSecsMax": 1.5}), vec!["$.holdTtlSecsMax"]),
        (json!({"voidWindowSecs": -1}), vec!["$.voidWindowSecs"]),
        (
            json!({"voidWindowSecs": 31_536_001}),
            vec!["$.voidWindowSecs"],
        ),
        (json!({"voidWindowSecs": true}), vec!["$.voidWindowSecs"]),
        (
            json!({"holdTtlSecsMax": -1, "voidWindowSecs": "never"}),
            vec!["$.holdTtlSecsMax", "$.voidWindowSecs"],
        ),
    ] {
        let mut body = body;
        body["name"] = json!("bad");
        app.post("/api/collections", &tenant.key, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(everything(&app, &tenant.key).await, before);
}

// ---------------------------------------------------------------- validate

#[actix_web::test]
async fn validation_answers_what_a_redeem_would_and_changes_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = collection_with(&app, &tenant, json!({"merchants": ["m-1"]})).await;
    let token = |extra: Value| {
        let mut body = extra;
        body["collectionId"] = json!(c);
        body
    };
    let active = id_of(&app.create_token(&tenant.key, &token(json!({}))).await);
    let held = id_of(&app.create_token(&tenant.key, &token(json!({}))).await);
    hold_ok(
        &app,
        &tenant.key,
        &held,
        &json!({"merchantId": "m-1", "idempotencyKey": "h", "ttlSecs": 60}),
    )
    .await;
    let redeemed = id_of(&app.create_token(&tenant.key, &token(json!({}))).await);
    app.redeem(
        &tenant.key,
        &redeemed,
        &json!({"merchantId": "m-1", "idempotencyKey": "r"}),
    )
    .await
    .assert_status(200);
    let later = id_of(
        &app.create_token(&tenant.key, &token(json!({"activeFrom": at(DAY)})))
            .await,
    );
    let short = id_of(
        &app.create_token(&tenant.key, &token(json!({"expiresIn": 1})))
            .await,
    );
    let deleted = id_of(&app.create_token(&tenant.key, &token(json!({}))).await);
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    app.advance_ms(SECOND);
    let reader = app.create_key(&tenant.account_id, &["token:read"]).await;

    let m1 = json!({"merchantId": "m-1"});
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (active.as_str(), m1.clone(), None),
        (
            active.as_str(),
            json!({"merchantId": "m-1", "idempotencyKey": "new"}),
            None,
        ),
        (active.as_str(), json!({}), Some("MERCHANT_NOT_ALLOWED")),
        (
            active.as_str(),
            json!({"merchantId": "m-2"}),
            Some("MERCHANT_NOT_ALLOWED"),
        ),
        (held.as_str(), m1.clone(), Some("TOKEN_HELD")),
        (
            held.as_str(),
            json!({"merchantId": "m-1", "idempotencyKey": "h"}),
            Some("TOKEN_HELD"),
        ),
        (
            redeemed.as_str(),
            m1.clone(),
            Some("TOKEN_ALREADY_REDEEMED"),
        ),
        // Repeating the winning request would be a replay: it would work.
        (
            redeemed.as_str(),
            json!({"merchantId": "m-1", "idempotencyKey": "r"}),
            None,
        ),
        (
            redeemed.as_str(),
            json!({"merchantId": "m-2", "idempotencyKey": "r"}),
            Some("TOKEN_ALREADY_REDEEMED"),
        ),
        (later.as_str(), m1.clone(), Some("TOKEN_NOT_YET_ACTIVE")),
        (short.as_str(), m1.clone(), Some("TOKEN_EXPIRED")),
        (deleted.as_str(), m1.clone(), Some("TOKEN_DELETED")),
    ];
    let before = everything(&app, &tenant.key).await;
    for (id, body, code) in cases {
        let token = app.token(&tenant.key, id).await;
        let resp = validate(&app, &reader, id, &body).await;
        resp.assert_status(200);
        let what = format!("{id} {body}: {}", resp.body);
        assert_eq!(
            keys(&resp.body),
            ["code", "message", "redeemable", "token"],
            "{what}"
        );
        assert_eq!(resp.body["redeemable"], code.is_none(), "{what}");
        assert_eq!(resp.body["code"], json!(code), "{what}");
        assert!(
            resp.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(resp.body["token"], token, "{what}");
        assert_eq!(resp.header("idempotent-replayed"), None, "{what}");
        // The message is the one the redeem would get.
        if code.is_some() {
            let redeem = app.redeem(&tenant.key, id, &body).await;
            assert_eq!(redeem.body["code"], json!(code), "{what}");
            assert_eq!(redeem.body["message"], resp.body["message"], "{what}");
        }
    }
    for id in [unknown_id(), "not-a-token".to_owned()] {
        validate(&app, &reader, &id, &m1)
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
    }
    for (body, paths) in [
        (json!({"merchant": "m-1"}), vec!["$.merchant"]),
        (json!({"merchantId": 1}), vec!["$.merchantId"]),
    ] {
        validate(&app, &reader, &active, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(everything(&app, &tenant.key).await, before);
    // Nothing was spent: the active token still redeems, once.
    app.redeem(&tenant.key, &active, &m1)
        .await
        .assert_status(200);
    let resp = validate(&app, &reader, &active, &m1).await;
    assert_eq!(resp.body["redeemable"], false);
    assert_eq!(resp.body["code"], "TOKEN_ALREADY_REDEEMED");
}

// ---------------------------------------------------------------- batch redeem

/// Asserts a batch item that a single redeem would answer with 200.
#[track_caller]
fn assert_item_redeemed(item: &Value, id: &str) -> Value {
    assert_eq!(keys(item), ["status", "token", "tokenId"], "{item}");
    assert_eq!(item["tokenId"], json!(id), "{item}");
    assert_eq!(item["status"], 200, "{item}");
    assert_eq!(item["token"]["id"], json!(id), "{item}");
    assert_eq!(item["token"]["status"], "redeemed", "{item}");
    item["token"].clone()
}

/// Asserts a batch item that a single redeem would answer with an error.
#[track_caller]
fn assert_item_error(item: &Value, id: &str, status: u16, code: &str) {
    assert_eq!(keys(item), ["error", "status", "tokenId"], "{item}");
    assert_eq!(item["tokenId"], json!(id), "{item}");
    assert_eq!(item["status"], status, "{item}");
    assert_eq!(keys(&item["error"]), ["code", "message"], "{item}");
    assert_eq!(item["error"]["code"], code, "{item}");
    assert!(
        item["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{item}"
    );
}

/// The items of a batch redeem's answer, asserting 200 and their count.
#[track_caller]
fn items(resp: &Resp, count: usize) -> Vec<Value> {
    resp.assert_status(200);
    assert_eq!(keys(&resp.body), ["data"], "{}", resp.body);
    let items = resp.body["data"].as_array().expect("data").clone();
    assert_eq!(items.len(), count, "{}", resp.body);
    items
}

#[actix_web::test]
async fn a_batch_redeems_tokens_of_every_shard_in_request_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let till = named_key(&app, &tenant, "till", &["token:redeem"]).await;
    // Enough tokens that every shard owns some.
    let ids: Vec<String> = app
        .create_batch(
            &tenant.key,
            (0..60)
                .map(|_| json!({"collectionId": tenant.collection_id, "data": {"v": 1}}))
                .collect(),
        )
        .await
        .iter()
        .map(id_of)
        .collect();
    let request: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i % 3 {
            0 => json!({"tokenId": id}),
            1 => json!({"tokenId": id, "merchantId": format!("m-{i}")}),
            _ => json!({"tokenId": id, "merchantId": "m", "idempotencyKey": format!("k-{i}")}),
        })
        .collect();
    app.advance_ms(SECOND);
    let first = items(&redeem_batch(&app, &till, &request).await, 60);
    let mut tokens = Vec::new();
    for (i, (item, id)) in first.iter().zip(&ids).enumerate() {
        let token = assert_item_redeemed(item, id);
        assert_token_fields(&token, &["redemption"]);
        assert_eq!(token["data"], Value::Null);
        assert_eq!(
            token["redemption"],
            json!({
                "merchantId": request[i].get("merchantId"),
                "idempotencyKey": request[i].get("idempotencyKey"),
                "redeemedAt": at(SECOND),
                "redeemedBy": crn(&tenant, "till"),
            })
        );
        assert_eq!(app.token(&tenant.key, id).await, token, "{i}");
        tokens.push(token);
    }

    // The same batch again: the keyed items replay, the others conflict.
    app.advance_ms(SECOND);
    let second = items(&redeem_batch(&app, &till, &request).await, 60);
    for (i, (item, id)) in second.iter().zip(&ids).enumerate() {
        if i % 3 == 2 {
            assert_eq!(assert_item_redeemed(item, id), tokens[i], "{i}");
        } else {
            assert_item_error(item, id, 409, "TOKEN_ALREADY_REDEEMED");
            let message = item["error"]["message"].as_str().unwrap();
            assert!(message.contains(&at(SECOND)), "{message}");
        }
    }
    assert_eq!(
        app.all_token_ids(&tenant.key, "status=redeemed")
            .await
            .len(),
        60
    );
}

#[actix_web::test]
async fn each_batch_item_gets_what_a_single_redeem_would() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    let c = &tenant.collection_id;
    let gated = collection_with(&app, &tenant, json!({"merchants": ["m-1"]})).await;
    let fresh = app.create_token_in(&tenant.key, c).await;
    let held = app.create_token_in(&tenant.key, c).await;
    let hold_resp = hold(&app, &tenant.key, &held, &json!({"ttlSecs": 60})).await;
    hold_resp.assert_status(201);
    let redeemed = app.create_token_in(&tenant.key, c).await;
    app.redeem(&tenant.key, &redeemed, &json!({}))
        .await
        .assert_status(200);
    let later = id_of(
        &app.create_token(
            &tenant.key,
            &json!({"collectionId": c, "activeFrom": at(DAY)}),
        )
        .await,
    );
    let short = id_of(
        &app.create_token(&tenant.key, &json!({"collectionId": c, "expiresIn": 1}))
            .await,
    );
    let deleted = app.create_token_in(&tenant.key, c).await;
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    let shop = app.create_token_in(&tenant.key, &gated).await;
    let foreign = app.create_token_in(&other.key, &other.collection_id).await;
    let unknown = unknown_id();
    app.advance_ms(SECOND);

    let request = [
        (json!({"tokenId": fresh}), Ok(())),
        (json!({"tokenId": held}), Err((409, "TOKEN_HELD"))),
        (
            json!({"tokenId": redeemed}),
            Err((409, "TOKEN_ALREADY_REDEEMED")),
        ),
        (
            json!({"tokenId": later}),
            Err((422, "TOKEN_NOT_YET_ACTIVE")),
        ),
        (json!({"tokenId": short}), Err((410, "TOKEN_EXPIRED"))),
        (json!({"tokenId": deleted}), Err((410, "TOKEN_DELETED"))),
        (
            json!({"tokenId": shop, "merchantId": "m-2"}),
            Err((403, "MERCHANT_NOT_ALLOWED")),
        ),
        (json!({"tokenId": unknown}), Err((404, "TOKEN_NOT_FOUND"))),
        (
            json!({"tokenId": "not-a-token"}),
            Err((404, "TOKEN_NOT_FOUND")),
        ),
        (json!({"tokenId": foreign}), Err((404, "TOKEN_NOT_FOUND"))),
        (json!({"tokenId": shop, "merchantId": "m-1"}), Ok(())),
    ];
    let body: Vec<Value> = request.iter().map(|(item, _)| item.clone()).collect();
    let other_before = everything(&app, &other.key).await;
    let answered = items(&redeem_batch(&app, &tenant.key, &body).await, body.len());
    for ((item, expected), got) in request.iter().zip(&answered) {
        let id = item["tokenId"].as_str().unwrap();
        match expected {
            Ok(()) => {
                let token = assert_item_redeemed(got, id);
                assert_eq!(token["redemption"]["merchantId"], item["merchantId"]);
                assert_eq!(app.token(&tenant.key, id).await, token);
            }
            Err((status, code)) => assert_item_error(got, id, *status, code),
        }
    }
    let held_message = answered[1]["error"]["message"].as_str().unwrap();
    assert!(held_message.contains(&at(60 * SECOND)), "{held_message}");
    // The refused items changed nothing.
    assert_eq!(
        app.token(&tenant.key, &held).await["hold"],
        hold_resp.body["hold"]
    );
    assert_eq!(app.token(&tenant.key, &later).await["status"], "active");
    assert_eq!(everything(&app, &other.key).await, other_before);
}

#[actix_web::test]
async fn a_token_named_twice_in_a_batch_is_redeemed_in_request_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let a = app.create_token_in(&tenant.key, c).await;
    let b = app.create_token_in(&tenant.key, c).await;
    let gated = collection_with(&app, &tenant, json!({"merchants": ["m-1"]})).await;
    let g = app.create_token_in(&tenant.key, &gated).await;
    let keyed = json!({"tokenId": a, "merchantId": "m-1", "idempotencyKey": "k-1"});
    let request = [
        keyed.clone(),
        keyed.clone(),
        json!({"tokenId": a}),
        json!({"tokenId": a, "merchantId": "m-1", "idempotencyKey": "k-2"}),
        json!({"tokenId": a, "merchantId": "m-2", "idempotencyKey": "k-1"}),
        json!({"tokenId": b}),
        json!({"tokenId": b}),
        json!({"tokenId": g, "merchantId": "m-2"}),
        json!({"tokenId": g, "merchantId": "m-1"}),
        json!({"tokenId": g, "merchantId": "m-1"}),
    ];
    let got = items(&redeem_batch(&app, &tenant.key, &request).await, 10);
    let won = assert_item_redeemed(&got[0], &a);
    assert_eq!(won["redemption"]["idempotencyKey"], "k-1");
    assert_eq!(assert_item_redeemed(&got[1], &a), won);
    for item in &got[2..5] {
        assert_item_error(item, &a, 409, "TOKEN_ALREADY_REDEEMED");
    }
    assert_item_redeemed(&got[5], &b);
    assert_item_error(&got[6], &b, 409, "TOKEN_ALREADY_REDEEMED");
    assert_item_error(&got[7], &g, 403, "MERCHANT_NOT_ALLOWED");
    assert_item_redeemed(&got[8], &g);
    assert_item_error(&got[9], &g, 409, "TOKEN_ALREADY_REDEEMED");
    assert_eq!(app.token(&tenant.key, &a).await, won);
    // A later single redeem with the winning request replays it.
    let replay = app.redeem(&tenant.key, &a, &keyed_body(&keyed)).await;
    replay.assert_status(200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, won);
}

/// A batch item as the body of a single redeem.
fn keyed_body(item: &Value) -> Value {
    let mut body = item.clone();
    body.as_object_mut().unwrap().remove("tokenId");
    body
}

#[actix_web::test]
async fn a_malformed_batch_is_one_422_and_redeems_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let t = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let ok = json!({"tokenId": t});
    let too_many: Vec<Value> = (0..1001).map(|_| ok.clone()).collect();
    let cases = [
        (json!({}), vec!["$.redemptions"]),
        (json!({"redemptions": []}), vec!["$.redemptions"]),
        (json!({"redemptions": ok}), vec!["$.redemptions"]),
        (json!({"redemptions": too_many}), vec!["$.redemptions"]),
        (
            json!({"redemptions": [ok], "atomic": true}),
            vec!["$.atomic"],
        ),
        (
            json!({"redemptions": [ok, {"tokenId": t, "amount": 5}]}),
            vec!["$.redemptions[1].amount"],
        ),
        (
            json!({"redemptions": [ok, {"merchantId": "m-1"}]}),
            vec!["$.redemptions[1].tokenId"],
        ),
        (
            json!({"redemptions": [{"tokenId": 7}, ok]}),
            vec!["$.redemptions[0].tokenId"],
        ),
        (
            json!({"redemptions": [{"tokenId": t, "merchantId": ""}]}),
            vec!["$.redemptions[0].merchantId"],
        ),
        (json!([ok]), vec!["$"]),
    ];
    let before = everything(&app, &tenant.key).await;
    for (body, paths) in cases {
        app.post("/api/tokens/redeem", &tenant.key, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(everything(&app, &tenant.key).await, before);

    // 1000 items is allowed: here one token and 999 unknown ones.
    let mut request = vec![ok.clone()];
    let unknown: Vec<String> = (0..999).map(|_| unknown_id()).collect();
    request.extend(unknown.iter().map(|id| json!({"tokenId": id})));
    let got = items(&redeem_batch(&app, &tenant.key, &request).await, 1000);
    assert_item_redeemed(&got[0], &t);
    for (item, id) in got[1..].iter().zip(&unknown) {
        assert_item_error(item, id, 404, "TOKEN_NOT_FOUND");
    }
}

// ---------------------------------------------------------------- scopes, tenants

#[actix_web::test]
async fn lifecycle_routes_need_token_redeem_and_validate_needs_token_read() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let active = app.create_token_in(&tenant.key, c).await;
    let to_capture = app.create_token_in(&tenant.key, c).await;
    let capture_hold = hold_ok(&app, &tenant.key, &to_capture, &json!({})).await;
    let to_release = app.create_token_in(&tenant.key, c).await;
    let release_hold = hold_ok(&app, &tenant.key, &to_release, &json!({})).await;
    let redeemed = app.create_token_in(&tenant.key, c).await;
    app.redeem(&tenant.key, &redeemed, &json!({}))
        .await
        .assert_status(200);
    let batched = app.create_token_in(&tenant.key, c).await;
    let all_but = |scope: &str| {
        [
            "collection:read",
            "collection:write",
            "token:create",
            "token:read",
            "token:redeem",
            "token:delete",
        ]
        .into_iter()
        .filter(|s| *s != scope)
        .collect::<Vec<_>>()
    };
    let no_redeem = app
        .create_key(&tenant.account_id, &all_but("token:redeem"))
        .await;
    let no_read = app
        .create_key(&tenant.account_id, &all_but("token:read"))
        .await;
    let redeem_only = app.create_key(&tenant.account_id, &["token:redeem"]).await;
    let read_only = app.create_key(&tenant.account_id, &["token:read"]).await;

    let redeem_routes = [
        (format!("/api/tokens/{active}/holds"), json!({})),
        (
            format!("/api/tokens/{to_capture}/holds/{capture_hold}/capture"),
            json!({}),
        ),
        (
            format!("/api/tokens/{to_release}/holds/{release_hold}/release"),
            json!({}),
        ),
        (format!("/api/tokens/{redeemed}/redemption/void"), json!({})),
        (
            "/api/tokens/redeem".to_owned(),
            json!({"redemptions": [{"tokenId": batched}]}),
        ),
    ];
    let validate_route = (format!("/api/tokens/{active}/validate"), json!({}));
    let before = everything(&app, &tenant.key).await;
    for (path, body) in &redeem_routes {
        for key in [&no_redeem, &read_only] {
            app.post(path, key, body)
                .await
                .assert_error(403, "PERMISSION_DENIED");
        }
        app.post(path, ADMIN, body)
            .await
            .assert_error(403, "PERMISSION_DENIED");
        for key in [None, Some("tk_unknown")] {
            app.call(Method::POST, path, key, Some(body))
                .await
                .assert_error(401, "UNAUTHENTICATED");
        }
    }
    let (path, body) = &validate_route;
    for key in [&no_read, &redeem_only] {
        app.post(path, key, body)
            .await
            .assert_error(403, "PERMISSION_DENIED");
    }
    app.call(Method::POST, path, None, Some(body))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    assert_eq!(everything(&app, &tenant.key).await, before);

    // The one scope each route needs is enough.
    let resp = app.post(path, &read_only, body).await;
    resp.assert_status(200);
    assert_eq!(resp.body["redeemable"], true);
    let outcomes = [
        ("held", 201),
        ("redeemed", 200),
        ("active", 200),
        ("active", 200),
    ];
    for ((path, body), (status, code)) in redeem_routes[..4].iter().zip(outcomes) {
        let resp = app.post(path, &redeem_only, body).await;
        resp.assert_status(code);
        assert_eq!(resp.body["status"], status, "{path}");
    }
    let (path, body) = &redeem_routes[4];
    let resp = app.post(path, &redeem_only, body).await;
    assert_item_redeemed(&items(&resp, 1)[0], &batched);
}

#[actix_web::test]
async fn another_accounts_tokens_and_holds_look_unknown_and_stay_unchanged() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let active = app.create_token_in(&a.key, &a.collection_id).await;
    let held = app.create_token_in(&a.key, &a.collection_id).await;
    let on_held = hold_ok(&app, &a.key, &held, &json!({"idempotencyKey": "h"})).await;
    let redeemed = app.create_token_in(&a.key, &a.collection_id).await;
    app.redeem(&a.key, &redeemed, &json!({"idempotencyKey": "r"}))
        .await
        .assert_status(200);
    let own = app.create_token_in(&b.key, &b.collection_id).await;
    let on_own = hold_ok(&app, &b.key, &own, &json!({})).await;
    let a_before = everything(&app, &a.key).await;
    let b_before = everything(&app, &b.key).await;

    // What B gets for A's tokens is what it gets for tokens that do not exist.
    let unknown = unknown_id();
    let unknown_hold = unknown_id();
    let probes = |token: &str, hold: &str| {
        vec![
            (
                format!("/api/tokens/{token}/holds"),
                json!({"idempotencyKey": "h"}),
            ),
            (
                format!("/api/tokens/{token}/holds/{hold}/capture"),
                json!({}),
            ),
            (
                format!("/api/tokens/{token}/holds/{hold}/release"),
                json!({}),
            ),
            (
                format!("/api/tokens/{token}/redemption/void"),
                json!({"idempotencyKey": "v"}),
            ),
            (
                format!("/api/tokens/{token}/validate"),
                json!({"idempotencyKey": "r"}),
            ),
        ]
    };
    for (token, hold) in [
        (&active, &on_held),
        (&held, &on_held),
        (&redeemed, &on_held),
        (&unknown, &unknown_hold),
    ] {
        for (path, body) in probes(token, hold) {
            app.post(&path, &b.key, &body)
                .await
                .assert_error(404, "TOKEN_NOT_FOUND");
        }
    }
    let batch = [
        json!({"tokenId": active}),
        json!({"tokenId": held}),
        json!({"tokenId": redeemed, "idempotencyKey": "r"}),
        json!({"tokenId": unknown}),
    ];
    let got = items(&redeem_batch(&app, &b.key, &batch).await, 4);
    for (item, request) in got.iter().zip(&batch) {
        assert_item_error(
            item,
            request["tokenId"].as_str().unwrap(),
            404,
            "TOKEN_NOT_FOUND",
        );
    }
    // A hold of one account's token names no hold of another's.
    for action in ["capture", "release"] {
        app.post(
            &format!("/api/tokens/{own}/holds/{on_held}/{action}"),
            &b.key,
            &json!({}),
        )
        .await
        .assert_error(404, "HOLD_NOT_FOUND");
        app.post(
            &format!("/api/tokens/{held}/holds/{on_own}/{action}"),
            &a.key,
            &json!({}),
        )
        .await
        .assert_error(404, "HOLD_NOT_FOUND");
    }
    assert_eq!(everything(&app, &a.key).await, a_before);
    assert_eq!(everything(&app, &b.key).await, b_before);
    // A's hold still works for A.
    capture(&app, &a.key, &held, &on_held)
        .await
        .assert_status(200);
}
