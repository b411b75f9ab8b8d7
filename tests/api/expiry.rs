//! Time, driven by the manual clock: validity is `[activeFrom,
//! expiresAt)`, timers expire tokens and free their data, and tombstones are
//! gone after the retention period.

use crate::helpers::*;
use serde_json::{json, Value};

const RETENTION: i64 = 10 * 60 * SECOND;

/// A token expiring `secs` from now, with data, metadata and encryption.
async fn expiring_token(app: &TestApp, tenant: &Tenant, secs: i64) -> String {
    let token = app
        .create_token(
            &tenant.key,
            &json!({
                "collectionId": tenant.collection_id,
                "expiresIn": secs,
                "data": {"code": "XYZ"},
                "metadata": {"colour": "red"},
                "encryption": {"cek": {"key": "k", "alg": "AES"}, "kek": {"key": "k2", "alg": "RSA"}},
            }),
        )
        .await;
    id_of(&token)
}

#[actix_web::test]
async fn a_token_is_redeemable_until_just_before_expires_at() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let a = expiring_token(&app, &tenant, 60).await;
    let b = expiring_token(&app, &tenant, 60).await;
    app.advance_ms(60 * SECOND - 1);
    let head = app.head_token(&tenant.key, &a).await;
    head.assert_status(200);
    assert_eq!(head.header("x-token-status"), Some("active"));
    app.redeem(&tenant.key, &a, &json!({}))
        .await
        .assert_status(200);
    // At expiresAt exactly the token is expired.
    app.advance_ms(1);
    app.redeem(&tenant.key, &b, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    // The redeemed one stays redeemed.
    assert_eq!(app.token(&tenant.key, &a).await["status"], "redeemed");
}

#[actix_web::test]
async fn an_expired_token_looks_expired_before_and_after_the_timers_run() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = expiring_token(&app, &tenant, 60).await;
    let active = app.token(&tenant.key, &id).await;
    assert_eq!(active["data"], json!({"code": "XYZ"}));
    app.advance_ms(60 * SECOND);

    // No timer has run yet: every read already sees an expired token.
    let check = |token: &Value| {
        assert_token_fields(token, &[]);
        assert_eq!(token["status"], "expired");
        assert_eq!(token["data"], Value::Null);
        assert_eq!(token["encryption"], Value::Null);
        assert_eq!(token["metadata"], json!({"colour": "red"}));
        assert_eq!(token["expiresAt"], at(60 * SECOND));
    };
    check(&app.token(&tenant.key, &id).await);
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(410);
    assert_eq!(head.header("x-token-status"), Some("expired"));
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    let listed = app.list_tokens(&tenant.key, "status=expired").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    check(&listed.body["data"][0]);
    let listed = app.list_tokens(&tenant.key, "status=active").await;
    assert_eq!(listed.body["data"], json!([]));

    // The timer moves it for good; nothing a user sees changes.
    app.run_timers().await;
    let after = app.token(&tenant.key, &id).await;
    check(&after);
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
    app.head_token(&tenant.key, &id).await.assert_status(410);
}

#[actix_web::test]
async fn timers_expire_only_what_is_due() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let soon = expiring_token(&app, &tenant, 10).await;
    let later = expiring_token(&app, &tenant, 20).await;
    let never = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.advance_ms(10 * SECOND);
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &soon).await["status"], "expired");
    let later_token = app.token(&tenant.key, &later).await;
    assert_eq!(later_token["status"], "active");
    assert_eq!(later_token["data"], json!({"code": "XYZ"}));
    app.advance_ms(10 * SECOND - 1);
    app.run_timers().await;
    app.redeem(&tenant.key, &later, &json!({}))
        .await
        .assert_status(200);
    // A redeemed token is never turned into an expired one.
    app.advance_ms(DAY);
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &later).await["status"], "redeemed");
    assert_eq!(app.token(&tenant.key, &never).await["status"], "active");
    app.redeem(&tenant.key, &never, &json!({}))
        .await
        .assert_status(200);
}

#[actix_web::test]
async fn a_token_becomes_redeemable_exactly_at_active_from() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let body = json!({
        "collectionId": tenant.collection_id,
        "activeFrom": at(10 * SECOND),
        "expiresAt": at(20 * SECOND),
    });
    let first = id_of(&app.create_token(&tenant.key, &body).await);
    let second = id_of(&app.create_token(&tenant.key, &body).await);
    app.advance_ms(10 * SECOND - 1);
    let head = app.head_token(&tenant.key, &first).await;
    head.assert_status(422);
    assert_eq!(head.header("x-token-status"), Some("active"));
    app.redeem(&tenant.key, &first, &json!({}))
        .await
        .assert_error(422, "TOKEN_NOT_YET_ACTIVE");
    assert_eq!(app.token(&tenant.key, &first).await["status"], "active");

    app.advance_ms(1);
    let head = app.head_token(&tenant.key, &first).await;
    head.assert_status(200);
    assert_eq!(head.header("x-token-status"), Some("active"));
    app.redeem(&tenant.key, &first, &json!({}))
        .await
        .assert_status(200);

    app.advance_ms(10 * SECOND);
    app.redeem(&tenant.key, &second, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
}

#[actix_web::test]
async fn the_collections_default_lifetime_expires_tokens() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let collection = id_of(
        &app.create_collection(&tenant.key, &json!({"name": "c", "tokenExpiresAfter": 30}))
            .await,
    );
    let id = app.create_token_in(&tenant.key, &collection).await;
    app.advance_ms(30 * SECOND - 1);
    app.head_token(&tenant.key, &id).await.assert_status(200);
    app.advance_ms(1);
    app.head_token(&tenant.key, &id).await.assert_status(410);
    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_EXPIRED");
}

/// Asserts `id` is gone for every route, as an unknown token is.
async fn assert_gone(app: &TestApp, tenant: &Tenant, id: &str) {
    app.get_token(&tenant.key, id)
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    app.head_token(&tenant.key, id).await.assert_status(404);
    app.redeem(&tenant.key, id, &json!({}))
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    app.delete_token(&tenant.key, id)
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    let listed = app.all_token_ids(&tenant.key, "").await;
    assert!(!listed.contains(&id.to_owned()));
}

#[actix_web::test]
async fn tombstones_are_gone_after_the_retention_period() {
    let app = TestApp::builder().retention_ms(RETENTION).spawn().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let redeemed = app.create_token_in(&tenant.key, c).await;
    let deleted = app.create_token_in(&tenant.key, c).await;
    let expired = expiring_token(&app, &tenant, 60).await;
    let active = app.create_token_in(&tenant.key, c).await;

    // Each becomes a tombstone at a different time.
    app.advance_ms(10 * SECOND);
    app.redeem(&tenant.key, &redeemed, &json!({}))
        .await
        .assert_status(200);
    app.advance_ms(10 * SECOND);
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    // `expired` is a tombstone from its expiresAt, T0 + 60 s.
    let cases = [
        (&redeemed, 10 * SECOND, "redeemed"),
        (&deleted, 20 * SECOND, "deleted"),
        (&expired, 60 * SECOND, "expired"),
    ];
    for (id, since, status) in cases {
        app.clock.set_ms(T0 + since + RETENTION - 1);
        let token = app.token(&tenant.key, id).await;
        assert_eq!(token["status"], status);
        app.run_timers().await;
        assert_eq!(app.token(&tenant.key, id).await["status"], status);

        app.clock.set_ms(T0 + since + RETENTION);
        // Gone at once, before any timer runs...
        assert_gone(&app, &tenant, id).await;
        // ...and after.
        app.run_timers().await;
        assert_gone(&app, &tenant, id).await;
    }
    // An active token is no tombstone: it stays.
    app.advance_ms(100 * DAY);
    app.run_timers().await;
    assert_eq!(app.token(&tenant.key, &active).await["status"], "active");
    assert_eq!(app.all_token_ids(&tenant.key, "").await, vec![active]);
}

#[actix_web::test]
async fn an_idempotency_key_is_free_again_once_its_token_is_purged() {
    let app = TestApp::builder().retention_ms(RETENTION).spawn().await;
    let tenant = app.tenant().await;
    let body = json!({"collectionId": tenant.collection_id, "idempotencyKey": "k"});
    let first = app.create_token(&tenant.key, &body).await;
    app.redeem(&tenant.key, &id_of(&first), &json!({}))
        .await
        .assert_status(200);
    // While the tombstone is kept, the key replays the (redeemed) token.
    app.advance_ms(RETENTION - 1);
    let replay = app.post("/api/tokens", &tenant.key, &body).await;
    replay.assert_status(200);
    assert_eq!(replay.body["status"], "redeemed");
    app.advance_ms(1);
    app.run_timers().await;
    let fresh = app.post("/api/tokens", &tenant.key, &body).await;
    fresh.assert_status(201);
    assert_eq!(fresh.body["status"], "active");
}
