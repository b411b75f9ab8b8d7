//! Limits a client meets: one credential per request, its own request id,
//! per-key rate limits (429), catalog quotas (409), and a full shard
//! (503 `OVERLOADED`) — each refused request changing nothing.

use crate::helpers::*;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokend::storage::FaultyStorage;

/// `method path` with the headers `headers` (name, value) and an optional
/// JSON body.
async fn send_with(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Resp {
    let mut request = app.request(method, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    app.send(request).await
}

#[actix_web::test]
async fn two_different_credentials_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let body = json!({"collectionId": a.collection_id});
    let bearer_b = format!("Bearer {}", b.key);
    let bearer_a = format!("Bearer {}", a.key);
    let conflicting: [&[(&str, &str)]; 4] = [
        &[("X-Api-Key", &a.key), ("Authorization", &bearer_b)],
        &[("Authorization", &bearer_a), ("X-Api-Key", &b.key)],
        &[("X-Api-Key", &a.key), ("X-Api-Key", &b.key)],
        &[("Authorization", &bearer_a), ("Authorization", &bearer_b)],
    ];
    let bearer_admin = format!("Bearer {ADMIN}");
    for headers in conflicting {
        send_with(&app, Method::POST, "/api/tokens", headers, Some(&body))
            .await
            .assert_error(400, "BAD_REQUEST");
        send_with(&app, Method::GET, "/api/tokens", headers, None)
            .await
            .assert_error(400, "BAD_REQUEST");
        // An account key beside the admin key is refused the same way.
        let mut with_admin = headers.to_vec();
        with_admin[1].1 = match with_admin[1].0 {
            "Authorization" => &bearer_admin,
            _ => ADMIN,
        };
        send_with(&app, Method::GET, "/api/tokens", &with_admin, None)
            .await
            .assert_error(400, "BAD_REQUEST");
    }
    for tenant in [&a, &b] {
        let page = app.list_tokens(&tenant.key, "").await;
        page.assert_status(200);
        assert_eq!(page.body["data"], json!([]), "nothing was created");
    }
    // The same key twice is one credential.
    let same: [&[(&str, &str)]; 2] = [
        &[("X-Api-Key", &a.key), ("Authorization", &bearer_a)],
        &[("X-Api-Key", &a.key), ("X-Api-Key", &a.key)],
    ];
    for headers in same {
        send_with(&app, Method::POST, "/api/tokens", headers, Some(&body))
            .await
            .assert_status(201);
    }
    // An Authorization header of another scheme is not a key.
    send_with(
        &app,
        Method::GET,
        "/api/tokens",
        &[
            ("X-Api-Key", &a.key),
            ("Authorization", "Basic dXNlcjpwYXNz"),
        ],
        None,
    )
    .await
    .assert_status(200);
}

#[actix_web::test]
async fn a_well_formed_incoming_request_id_is_kept_and_others_replaced() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let longest = "x".repeat(64);
    for (n, kept) in ["client-trace.42_a", "A", longest.as_str()]
        .into_iter()
        .enumerate()
    {
        let resp = send_with(
            &app,
            Method::GET,
            &format!("/api/tokens/{}", unknown_id()),
            &[("X-Api-Key", &tenant.key), ("X-Request-Id", kept)],
            None,
        )
        .await;
        resp.assert_error(404, "TOKEN_NOT_FOUND");
        assert_eq!(resp.header("x-request-id"), Some(kept), "case {n}");
        assert_eq!(resp.body["requestId"], json!(kept));
    }
    let too_long = "y".repeat(65);
    for replaced in ["has space", "a/b", "quote\"d", too_long.as_str(), ""] {
        let resp = send_with(
            &app,
            Method::GET,
            "/health/live",
            &[("X-Request-Id", replaced)],
            None,
        )
        .await;
        resp.assert_status(200);
        let id = resp.header("x-request-id").expect("an id");
        assert!(
            id.starts_with("req_") && id != replaced,
            "{replaced:?} -> {id}"
        );
    }
    // Two ids in one request: neither is taken.
    let resp = send_with(
        &app,
        Method::GET,
        "/health/live",
        &[("X-Request-Id", "first-id"), ("X-Request-Id", "second-id")],
        None,
    )
    .await;
    assert!(resp.header("x-request-id").unwrap().starts_with("req_"));
}

#[actix_web::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after_and_changes_nothing() {
    let app = TestApp::builder().rate_limit(1, 2).spawn().await;
    let tenant = app.tenant().await;
    // The tenant's collection took one request of the bucket: refill it.
    app.advance_ms(10 * SECOND);
    let other_key = app.create_key(&tenant.account_id, &["*"]).await;
    for _ in 0..2 {
        app.get("/api/collections", &tenant.key)
            .await
            .assert_status(200);
    }
    let body = json!({"collectionId": tenant.collection_id});
    let limited = app.post("/api/tokens", &tenant.key, &body).await;
    limited.assert_error(429, "RATE_LIMITED");
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Checked before the body: an invalid body is still a 429.
    app.post("/api/tokens", &tenant.key, &json!({"bogus": true}))
        .await
        .assert_error(429, "RATE_LIMITED");
    app.head_token(&tenant.key, &unknown_id())
        .await
        .assert_status(429);
    // Another key of the same account has its own bucket; the admin key and
    // unauthenticated requests are not limited.
    app.get("/api/tokens", &other_key).await.assert_status(200);
    for _ in 0..5 {
        app.get(
            &format!("/api/accounts/{}/api-keys", tenant.account_id),
            ADMIN,
        )
        .await
        .assert_status(200);
    }
    app.get("/api/tokens", "tk_not-a-key")
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // One request a second comes back.
    app.advance_ms(999);
    app.get("/api/tokens", &tenant.key)
        .await
        .assert_error(429, "RATE_LIMITED");
    app.advance_ms(1);
    let page = app.list_tokens(&tenant.key, "").await;
    page.assert_status(200);
    assert_eq!(
        page.body["data"],
        json!([]),
        "the refused create made nothing"
    );
}

#[actix_web::test]
async fn a_catalog_quota_is_409_limit_reached() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let path = format!("/api/accounts/{}/api-keys", tenant.account_id);
    let page = app.get(&path, ADMIN).await;
    page.assert_status(200);
    let existing = page.body["data"].as_array().expect("a list").len();
    // KEYS_PER_ACCOUNT_MAX keys, in groups sent at once.
    let missing = tokend::catalog::KEYS_PER_ACCOUNT_MAX - existing;
    let bodies: Vec<_> = (0..missing)
        .map(|_| json!({"name": app.unique_name("key"), "scopes": ["*"]}))
        .collect();
    for group in bodies.chunks(50) {
        let creates = group.iter().map(|body| app.post(&path, ADMIN, body));
        for resp in join_all(creates).await {
            resp.assert_status(201);
        }
    }
    let refused = app
        .post(
            &path,
            ADMIN,
            &json!({"name": "one-too-many", "scopes": ["*"]}),
        )
        .await;
    refused.assert_error(409, "LIMIT_REACHED");
    assert_eq!(refused.header("retry-after"), None, "a quota, not a retry");
    let listed = app.get(&format!("{path}?limit=1000"), ADMIN).await;
    listed.assert_status(200);
    assert_eq!(
        listed.body["data"].as_array().expect("a list").len(),
        tokend::catalog::KEYS_PER_ACCOUNT_MAX
    );
    assert_eq!(listed.body["pagination"]["hasMore"], json!(false));
}

/// Waits until shard 0 of every engine holds `held` requests.
async fn wait_until_held(app: &TestApp, held: usize) {
    for _ in 0..6_000 {
        if app
            .engines()
            .all(|engine| engine.shard_requests_held(0) == Some(held))
        {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("shard 0 never held {held} requests");
}

#[actix_web::test]
async fn a_full_shard_answers_503_overloaded_and_changes_nothing() {
    let storage = FaultyStorage::new();
    let app = TestApp::builder()
        .storage(Arc::new(storage.clone()))
        .shards(1)
        .shard_mailbox_max(2)
        .spawn()
        .await;
    let tenant = app.tenant().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            app.create_token_in(&tenant.key, &tenant.collection_id)
                .await,
        );
    }
    // Fsyncs wait: two redeems are decided and logged, and wait for
    // durability holding the shard's two slots.
    let held = storage.hold_syncs();
    let waiting: Vec<_> = tokens[..2]
        .iter()
        .map(|id| {
            let request = app
                .request(Method::POST, &format!("/api/tokens/{id}/redeem"))
                .header("X-Api-Key", &tenant.key)
                .json(&json!({"merchantId": "m-1"}));
            actix_web::rt::spawn(request.send())
        })
        .collect();
    wait_until_held(&app, 2).await;
    let third = &tokens[2];
    let refused = app.redeem(&tenant.key, third, &json!({})).await;
    refused.assert_error(503, "OVERLOADED");
    assert_eq!(refused.header("retry-after"), Some("1"));
    app.post(
        "/api/tokens",
        &tenant.key,
        &json!({"collectionId": tenant.collection_id}),
    )
    .await
    .assert_error(503, "OVERLOADED");
    app.get_token(&tenant.key, third)
        .await
        .assert_error(503, "OVERLOADED");
    // Health and the catalog do not need the shard.
    app.send(app.request(Method::GET, "/health/live"))
        .await
        .assert_status(200);
    app.get("/api/collections", &tenant.key)
        .await
        .assert_status(200);
    drop(held);
    for answer in join_all(waiting).await {
        let response = answer.expect("the task ends").expect("an answer");
        assert_eq!(response.status().as_u16(), 200);
    }
    wait_until_held(&app, 0).await;
    let token = app.token(&tenant.key, third).await;
    assert_eq!(
        token["status"],
        json!("active"),
        "the refused redeem did nothing"
    );
    let ids = app.all_token_ids(&tenant.key, "").await;
    assert_eq!(ids.len(), 3, "the refused create made nothing");
    app.redeem(&tenant.key, third, &json!({}))
        .await
        .assert_status(200);
}

#[test]
fn a_burst_without_a_rate_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("a data dir");
    let mut child = crate::process::tokend_command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit-burst",
            "5",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tokend starts");
    let log = crate::process::Log::default();
    let drained = log.drain(child.stderr.take().expect("stderr"));
    let status = crate::process::wait_with_timeout(&mut child, Duration::from_secs(60))
        .expect("tokend exits");
    drained.join().expect("stderr drained");
    assert_eq!(status.code(), Some(1), "{}", log.text());
    assert!(
        log.text()
            .contains("--rate-limit-burst needs --rate-limit-per-sec"),
        "{}",
        log.text()
    );
    assert!(
        !log.text().contains("generated admin key"),
        "refused before anything is written"
    );
}
