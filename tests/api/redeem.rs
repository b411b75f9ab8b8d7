//! Redeeming tokens: exactly once, idempotent retries, merchants,
//! activation, expiry and deletion.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A token with data, metadata and encryption in the tenant's collection.
async fn rich_token(app: &TestApp, tenant: &Tenant) -> Value {
    app.create_token(
        &tenant.key,
        &json!({
            "collectionId": tenant.collection_id,
            "description": "voucher",
            "data": {"code": "XYZ-123"},
            "metadata": {"colour": "red"},
            "encryption": {"cek": {"key": "k", "alg": "AES"}, "kek": {"key": "k2", "alg": "RSA"}},
        }),
    )
    .await
}

#[actix_web::test]
async fn redeeming_spends_the_token_and_records_how() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = rich_token(&app, &tenant).await;
    let id = id_of(&token);
    let redeemer = app
        .create_key_named(&tenant.account_id, "till-7", &["token:redeem"])
        .await;
    app.advance_ms(90 * SECOND);
    let resp = app
        .redeem(
            redeemer["key"].as_str().unwrap(),
            &id,
            &json!({"merchantId": "m-1", "idempotencyKey": "r-1"}),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.header("idempotent-replayed"), None);
    let redeemed = &resp.body;
    assert_token_fields(redeemed, &["redemption"]);
    assert_eq!(redeemed["status"], "redeemed");
    assert_eq!(
        redeemed["redemption"],
        json!({
            "merchantId": "m-1",
            "idempotencyKey": "r-1",
            "redeemedAt": at(90 * SECOND),
            "redeemedBy": format!("crn:{}:api-key:till-7", tenant.account_id),
        })
    );
    // The value is freed; what audit needs stays.
    assert_eq!(redeemed["data"], Value::Null);
    assert_eq!(redeemed["encryption"], Value::Null);
    assert_eq!(redeemed["metadata"], json!({"colour": "red"}));
    for field in [
        "id",
        "createdAt",
        "createdBy",
        "description",
        "collectionId",
        "activeFrom",
        "expiresAt",
    ] {
        assert_eq!(redeemed[field], token[field], "{field}");
    }
    assert_eq!(&app.token(&tenant.key, &id).await, redeemed);
}

#[actix_web::test]
async fn an_empty_body_redeems_without_merchant_or_key() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let resp = app
        .send(
            app.request(Method::POST, &format!("/api/tokens/{id}/redeem"))
                .header("X-Api-Key", &tenant.key),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["redemption"]["merchantId"], Value::Null);
    assert_eq!(resp.body["redemption"]["idempotencyKey"], Value::Null);
    assert_eq!(resp.body["redemption"]["redeemedAt"], T0_TEXT);
}

#[actix_web::test]
async fn a_second_redeem_is_409_with_the_redemption_time() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.advance_ms(1500);
    let first = app.redeem(&tenant.key, &id, &json!({})).await;
    first.assert_status(200);
    app.advance_ms(SECOND);
    for body in [
        json!({}),
        json!({"merchantId": "m-1"}),
        json!({"idempotencyKey": "fresh"}),
    ] {
        let resp = app.redeem(&tenant.key, &id, &body).await;
        resp.assert_error(409, "TOKEN_ALREADY_REDEEMED");
        let message = resp.body["message"].as_str().unwrap();
        assert!(message.contains(&at(1500)), "{message}");
    }
    assert_eq!(app.token(&tenant.key, &id).await, first.body);
}

#[actix_web::test]
async fn repeating_the_winning_request_replays_it() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let winning = json!({"merchantId": "m-1", "idempotencyKey": "pay-1"});
    let first = app.redeem(&tenant.key, &id, &winning).await;
    first.assert_status(200);
    app.advance_ms(5 * SECOND);
    for _ in 0..2 {
        let replay = app.redeem(&tenant.key, &id, &winning).await;
        replay.assert_status(200);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body);
    }
    // The same key from another merchant, or without one, is a conflict; so
    // is the same merchant with another key.
    for body in [
        json!({"merchantId": "m-2", "idempotencyKey": "pay-1"}),
        json!({"idempotencyKey": "pay-1"}),
        json!({"merchantId": "m-1", "idempotencyKey": "pay-2"}),
        json!({"merchantId": "m-1"}),
    ] {
        app.redeem(&tenant.key, &id, &body)
            .await
            .assert_error(409, "TOKEN_ALREADY_REDEEMED");
    }
    assert_eq!(app.token(&tenant.key, &id).await, first.body);
}

#[actix_web::test]
async fn a_repeat_of_a_request_without_key_is_not_a_replay() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let body = json!({"merchantId": "m-1"});
    app.redeem(&tenant.key, &id, &body).await.assert_status(200);
    app.redeem(&tenant.key, &id, &body)
        .await
        .assert_error(409, "TOKEN_ALREADY_REDEEMED");
}

#[actix_web::test]
async fn only_the_collections_merchants_may_redeem() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let collection = id_of(
        &app.create_collection(
            &tenant.key,
            &json!({"name": "local", "merchants": ["m-1", "m-2"]}),
        )
        .await,
    );
    let id = app.create_token_in(&tenant.key, &collection).await;
    for body in [
        json!({}),
        json!({"merchantId": "m-3"}),
        json!({"merchantId": "M-1"}),
        json!({"idempotencyKey": "k"}),
    ] {
        app.redeem(&tenant.key, &id, &body)
            .await
            .assert_error(403, "MERCHANT_NOT_ALLOWED");
        assert_eq!(app.token(&tenant.key, &id).await["status"], "active");
    }
    let resp = app
        .redeem(&tenant.key, &id, &json!({"merchantId": "m-2"}))
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["redemption"]["merchantId"], "m-2");

    // Without a merchant list, any merchant or none may redeem.
    for body in [json!({}), json!({"merchantId": "anyone"})] {
        let id = app
            .create_token_in(&tenant.key, &tenant.collection_id)
            .await;
        app.redeem(&tenant.key, &id, &body).await.assert_status(200);
    }
}

#[actix_web::test]
async fn gone_and_not_yet_active_tokens_cannot_be_redeemed() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let later = id_of(
        &app.create_token(
            &tenant.key,
            &json!({"collectionId": c, "activeFrom": at(DAY)}),
        )
        .await,
    );
    let resp = app.redeem(&tenant.key, &later, &json!({})).await;
    resp.assert_error(422, "TOKEN_NOT_YET_ACTIVE");
    assert!(resp.body["message"].as_str().unwrap().contains(&at(DAY)));

    let short = id_of(
        &app.create_token(&tenant.key, &json!({"collectionId": c, "expiresIn": 1}))
            .await,
    );
    let deleted = app.create_token_in(&tenant.key, c).await;
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    app.advance_ms(SECOND);
    app.redeem(&tenant.key, &short, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    app.redeem(&tenant.key, &deleted, &json!({}))
        .await
        .assert_error(410, "TOKEN_DELETED");
    app.redeem(&tenant.key, &unknown_id(), &json!({}))
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    app.redeem(&tenant.key, "not-a-token", &json!({}))
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    for id in [&later, &short] {
        assert!(app.token(&tenant.key, id).await.get("redemption").is_none());
    }
}

#[actix_web::test]
async fn invalid_redeem_bodies_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let cases = [
        (json!({"merchant": "m"}), vec!["$.merchant"]),
        (json!({"merchantId": 7}), vec!["$.merchantId"]),
        (json!({"merchantId": ""}), vec!["$.merchantId"]),
        (json!({"idempotencyKey": ["k"]}), vec!["$.idempotencyKey"]),
        (
            json!({"merchantId": 7, "idempotencyKey": 8, "x": 1}),
            vec!["$.merchantId", "$.idempotencyKey", "$.x"],
        ),
        (json!([]), vec!["$"]),
        (json!("m-1"), vec!["$"]),
    ];
    for (body, paths) in cases {
        app.redeem(&tenant.key, &id, &body)
            .await
            .assert_invalid(&paths);
    }
    assert_eq!(app.token(&tenant.key, &id).await["status"], "active");
}
