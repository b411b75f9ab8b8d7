//! A rejected request changes nothing: after each kind of rejection,
//! the account's tokens and collections are exactly as before.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Everything the account can see: every token (full objects, with children
/// expanded) and every collection.
async fn snapshot(app: &TestApp, key: &str) -> Value {
    let tokens = app.list_tokens(key, "limit=1000&children=true").await;
    tokens.assert_status(200);
    assert_eq!(tokens.body["pagination"]["hasMore"], false);
    let collections = app.get("/api/collections?limit=1000", key).await;
    collections.assert_status(200);
    json!({"tokens": tokens.body["data"], "collections": collections.body["data"]})
}

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    key: Option<String>,
    body: Option<Value>,
    status: u16,
    code: &'static str,
}

#[actix_web::test]
async fn no_rejected_request_changes_anything() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = tenant.key.clone();
    let c = tenant.collection_id.clone();
    let merchants = id_of(
        &app.create_collection(&key, &json!({"name": "m", "merchants": ["m-1"]}))
            .await,
    );
    let strict = id_of(
        &app.create_collection(
            &key,
            &json!({"name": "strict", "dataSchema": {"type": "object", "required": ["pan"]}}),
        )
        .await,
    );
    let active = id_of(
        &app.create_token(
            &key,
            &json!({"collectionId": merchants, "data": {"v": 1}, "metadata": {"k": "v"}}),
        )
        .await,
    );
    let later = id_of(
        &app.create_token(&key, &json!({"collectionId": c, "activeFrom": at(DAY)}))
            .await,
    );
    let short = id_of(
        &app.create_token(&key, &json!({"collectionId": c, "expiresIn": 1, "data": 1}))
            .await,
    );
    let redeemed = app.create_token_in(&key, &c).await;
    app.redeem(
        &key,
        &redeemed,
        &json!({"merchantId": "m-9", "idempotencyKey": "r"}),
    )
    .await
    .assert_status(200);
    let deleted = app.create_token_in(&key, &c).await;
    app.delete_token(&key, &deleted).await.assert_status(204);
    let family = json!({"collectionId": c, "idempotencyKey": "family", "children": [{}, {}]});
    app.create_token(&key, &family).await;
    app.advance_ms(SECOND);

    let no_redeem = app
        .create_key(
            &tenant.account_id,
            &[
                "token:read",
                "token:create",
                "token:delete",
                "collection:read",
            ],
        )
        .await;
    let read_only = app
        .create_key(&tenant.account_id, &["token:read", "collection:read"])
        .await;
    let other = app.tenant().await;
    let token = |suffix: &str, id: &str| format!("/api/tokens/{id}{suffix}");
    let post = |what, path: String, key: &str, body: Value, status, code| Case {
        what,
        method: Method::POST,
        path,
        key: Some(key.to_owned()),
        body: Some(body),
        status,
        code,
    };
    let mut other_family = family.clone();
    other_family["children"] = json!([{}, {"type": "card"}]);
    let cases = vec![
        post(
            "create: invalid",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": c, "type": "coin"}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "create: data against schema",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": strict, "data": {}}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "create: child invalid",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": c, "children": [{}, {"x": 1}]}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "batch: one invalid",
            "/api/tokens/batch".into(),
            &key,
            json!({"tokens": [{"collectionId": c}, {"collectionId": c, "expiresAt": at(-1)}]}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "collection: bad schema",
            "/api/collections".into(),
            &key,
            json!({"name": "x", "dataSchema": {"type": "nope"}}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "redeem: bad body",
            token("/redeem", &active),
            &key,
            json!({"merchantId": 1}),
            422,
            "VALIDATION_FAILED",
        ),
        post(
            "redeem: not yet active",
            token("/redeem", &later),
            &key,
            json!({}),
            422,
            "TOKEN_NOT_YET_ACTIVE",
        ),
        post(
            "create: unknown collection",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": unknown_id()}),
            404,
            "COLLECTION_NOT_FOUND",
        ),
        post(
            "create: foreign collection",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": other.collection_id}),
            404,
            "COLLECTION_NOT_FOUND",
        ),
        post(
            "batch: unknown collection",
            "/api/tokens/batch".into(),
            &key,
            json!({"tokens": [{"collectionId": c}, {"collectionId": unknown_id()}]}),
            404,
            "COLLECTION_NOT_FOUND",
        ),
        post(
            "redeem: unknown",
            token("/redeem", &unknown_id()),
            &key,
            json!({}),
            404,
            "TOKEN_NOT_FOUND",
        ),
        post(
            "redeem: foreign key",
            token("/redeem", &active),
            &other.key,
            json!({"merchantId": "m-1"}),
            404,
            "TOKEN_NOT_FOUND",
        ),
        Case {
            what: "delete: foreign key",
            method: Method::DELETE,
            path: token("", &active),
            key: Some(other.key.clone()),
            body: None,
            status: 404,
            code: "TOKEN_NOT_FOUND",
        },
        post(
            "create: liveness",
            "/api/tokens".into(),
            &key,
            json!({"collectionId": c, "liveness": "main"}),
            403,
            "ACCOUNT_LIVENESS_MISMATCH",
        ),
        post(
            "batch: liveness",
            "/api/tokens/batch".into(),
            &key,
            json!({"tokens": [{"collectionId": c}, {"collectionId": c, "liveness": "main"}]}),
            403,
            "ACCOUNT_LIVENESS_MISMATCH",
        ),
        post(
            "collection: liveness",
            "/api/collections".into(),
            &key,
            json!({"name": "x", "liveness": "main"}),
            403,
            "ACCOUNT_LIVENESS_MISMATCH",
        ),
        post(
            "redeem: merchant",
            token("/redeem", &active),
            &key,
            json!({"merchantId": "m-2"}),
            403,
            "MERCHANT_NOT_ALLOWED",
        ),
        post(
            "redeem: no scope",
            token("/redeem", &active),
            &no_redeem,
            json!({"merchantId": "m-1"}),
            403,
            "PERMISSION_DENIED",
        ),
        post(
            "create: no scope",
            "/api/tokens".into(),
            &read_only,
            json!({"collectionId": c}),
            403,
            "PERMISSION_DENIED",
        ),
        post(
            "collection: no scope",
            "/api/collections".into(),
            &read_only,
            json!({"name": "x"}),
            403,
            "PERMISSION_DENIED",
        ),
        Case {
            what: "delete: no scope",
            method: Method::DELETE,
            path: token("", &active),
            key: Some(read_only.clone()),
            body: None,
            status: 403,
            code: "PERMISSION_DENIED",
        },
        post(
            "create: admin key",
            "/api/tokens".into(),
            ADMIN,
            json!({"collectionId": c}),
            403,
            "PERMISSION_DENIED",
        ),
        post(
            "create: key reused",
            "/api/tokens".into(),
            &key,
            other_family,
            409,
            "TOKEN_ALREADY_CREATED",
        ),
        post(
            "redeem: again",
            token("/redeem", &redeemed),
            &key,
            json!({}),
            409,
            "TOKEN_ALREADY_REDEEMED",
        ),
        post(
            "redeem: key, other merchant",
            token("/redeem", &redeemed),
            &key,
            json!({"merchantId": "m-8", "idempotencyKey": "r"}),
            409,
            "TOKEN_ALREADY_REDEEMED",
        ),
        post(
            "redeem: expired",
            token("/redeem", &short),
            &key,
            json!({}),
            410,
            "TOKEN_EXPIRED",
        ),
        post(
            "redeem: deleted",
            token("/redeem", &deleted),
            &key,
            json!({}),
            410,
            "TOKEN_DELETED",
        ),
        Case {
            what: "redeem: no key",
            method: Method::POST,
            path: token("/redeem", &active),
            key: None,
            body: Some(json!({})),
            status: 401,
            code: "UNAUTHENTICATED",
        },
        Case {
            what: "delete: no key",
            method: Method::DELETE,
            path: token("", &active),
            key: None,
            body: None,
            status: 401,
            code: "UNAUTHENTICATED",
        },
        Case {
            what: "create: unknown key",
            method: Method::POST,
            path: "/api/tokens".into(),
            key: Some("tk_nope".into()),
            body: Some(json!({"collectionId": c})),
            status: 401,
            code: "UNAUTHENTICATED",
        },
    ];

    let before = snapshot(&app, &key).await;
    let other_before = snapshot(&app, &other.key).await;
    assert_eq!(before["tokens"].as_array().unwrap().len(), 8);
    for case in cases {
        let resp = app
            .call(
                case.method,
                &case.path,
                case.key.as_deref(),
                case.body.as_ref(),
            )
            .await;
        assert_eq!(
            resp.status.as_u16(),
            case.status,
            "{}: {}",
            case.what,
            resp.body
        );
        resp.assert_error(case.status, case.code);
        assert_eq!(snapshot(&app, &key).await, before, "{}", case.what);
    }
    // Malformed and oversized bodies change nothing either.
    for (body, status) in [
        ("{\"collectionId\": ".to_owned(), 400),
        (" ".repeat((1 << 20) + 1), 413),
    ] {
        let resp = app
            .send(
                app.request(Method::POST, "/api/tokens")
                    .header("X-Api-Key", &key)
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await;
        resp.assert_status(status);
        assert_eq!(snapshot(&app, &key).await, before);
    }
    assert_eq!(snapshot(&app, &other.key).await, other_before);

    // And the active token is still redeemable by an allowed merchant.
    app.redeem(&key, &active, &json!({"merchantId": "m-1"}))
        .await
        .assert_status(200);
}
