//! Conventions shared by every route: health, authentication,
//! scopes, the error body, request ids, body parsing and size limits,
//! unknown routes and methods.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// One authenticated route of the API.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>) -> Route {
    Route {
        method,
        path: path.into(),
        body,
    }
}

/// Every account route with the scope it needs (ids need not exist: the
/// scope is checked first).
fn account_routes(collection_id: &str) -> Vec<(Route, &'static str)> {
    let token = unknown_id();
    let token_body = json!({"collectionId": collection_id});
    vec![
        (
            route(Method::POST, "/api/collections", Some(json!({"name": "c"}))),
            "collection:write",
        ),
        (
            route(Method::GET, "/api/collections", None),
            "collection:read",
        ),
        (
            route(
                Method::GET,
                format!("/api/collections/{collection_id}"),
                None,
            ),
            "collection:read",
        ),
        (
            route(Method::POST, "/api/tokens", Some(token_body.clone())),
            "token:create",
        ),
        (
            route(
                Method::POST,
                "/api/tokens/batch",
                Some(json!({"tokens": [token_body]})),
            ),
            "token:create",
        ),
        (route(Method::GET, "/api/tokens", None), "token:read"),
        (
            route(Method::GET, format!("/api/tokens/{token}"), None),
            "token:read",
        ),
        (
            route(Method::HEAD, format!("/api/tokens/{token}"), None),
            "token:read",
        ),
        (
            route(Method::DELETE, format!("/api/tokens/{token}"), None),
            "token:delete",
        ),
        (
            route(
                Method::POST,
                format!("/api/tokens/{token}/redeem"),
                Some(json!({})),
            ),
            "token:redeem",
        ),
    ]
}

/// Every admin route.
fn admin_routes(account_id: &str, key_id: &str) -> Vec<Route> {
    vec![
        route(
            Method::POST,
            "/api/accounts",
            Some(json!({"name": "n", "liveness": "test"})),
        ),
        route(
            Method::POST,
            format!("/api/accounts/{account_id}/api-keys"),
            Some(json!({"name": "n", "scopes": ["*"]})),
        ),
        route(
            Method::GET,
            format!("/api/accounts/{account_id}/api-keys"),
            None,
        ),
        route(
            Method::DELETE,
            format!("/api/accounts/{account_id}/api-keys/{key_id}"),
            None,
        ),
    ]
}

const ALL_SCOPES: [&str; 6] = [
    "collection:read",
    "collection:write",
    "token:create",
    "token:read",
    "token:redeem",
    "token:delete",
];

/// Sends `route` with `key` in `X-Api-Key`, or in `header` when given.
async fn send_route(app: &TestApp, route: &Route, key: Option<&str>) -> Resp {
    app.call(route.method.clone(), &route.path, key, route.body.as_ref())
        .await
}

/// Asserts an error; HEAD answers carry no body, so only the status is seen.
#[track_caller]
fn assert_route_error(resp: &Resp, method: &Method, status: u16, code: &str) {
    if *method == Method::HEAD {
        resp.assert_status(status);
        assert_eq!(resp.body, Value::Null);
    } else {
        resp.assert_error(status, code);
    }
}

#[actix_web::test]
async fn health_routes_need_no_key() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/ready"] {
        let resp = app.send(app.request(Method::GET, path)).await;
        resp.assert_status(200);
    }
}

#[actix_web::test]
async fn every_route_without_a_key_is_401() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key_id = unknown_id();
    let mut routes: Vec<Route> = account_routes(&tenant.collection_id)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    routes.extend(admin_routes(&tenant.account_id, &key_id));
    for route in &routes {
        let resp = send_route(&app, route, None).await;
        assert_route_error(&resp, &route.method, 401, "UNAUTHENTICATED");
    }
}

#[actix_web::test]
async fn unknown_keys_are_401() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    // Same shape as a real key, with the real key's id but another secret.
    let mut wrong_secret = tenant.key.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'A' { 'B' } else { 'A' });
    let unknown_id_key = format!("tk_{}{}", "0".repeat(32), &tenant.key[35..]);
    for key in [
        "nope",
        "",
        wrong_secret.as_str(),
        unknown_id_key.as_str(),
        "integration-tests-admin-kex",
    ] {
        let resp = app.get("/api/collections", key).await;
        resp.assert_error(401, "UNAUTHENTICATED");
        let resp = app.get("/api/accounts/x/api-keys", key).await;
        resp.assert_error(401, "UNAUTHENTICATED");
    }
}

#[actix_web::test]
async fn bearer_and_x_api_key_both_authenticate() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for key in [tenant.key.as_str(), ADMIN] {
        let path = if key == ADMIN {
            format!("/api/accounts/{}/api-keys", tenant.account_id)
        } else {
            "/api/collections".to_owned()
        };
        let resp = app
            .send(
                app.request(Method::GET, &path)
                    .header("Authorization", format!("Bearer {key}")),
            )
            .await;
        resp.assert_status(200);
        let resp = app
            .send(app.request(Method::GET, &path).header("X-Api-Key", key))
            .await;
        resp.assert_status(200);
        // Another scheme is no key at all.
        let resp = app
            .send(
                app.request(Method::GET, &path)
                    .header("Authorization", format!("Basic {key}")),
            )
            .await;
        resp.assert_error(401, "UNAUTHENTICATED");
    }
}

#[actix_web::test]
async fn a_key_without_the_routes_scope_is_403() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for (route, scope) in account_routes(&tenant.collection_id) {
        let others: Vec<&str> = ALL_SCOPES.iter().copied().filter(|s| *s != scope).collect();
        let key = app.create_key(&tenant.account_id, &others).await;
        let resp = send_route(&app, &route, Some(&key)).await;
        assert_route_error(&resp, &route.method, 403, "PERMISSION_DENIED");
    }
}

/// Each route's success status, reached with a key holding only its scope.
#[actix_web::test]
async fn a_key_with_only_the_routes_scope_is_enough() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let key_for = |scope: &'static str| {
        let app = &app;
        let account = tenant.account_id.clone();
        async move { app.create_key(&account, &[scope]).await }
    };
    let token = json!({"collectionId": c});
    let cases: Vec<(Method, String, Option<Value>, &str, u16)> = vec![
        (
            Method::POST,
            "/api/collections".into(),
            Some(json!({"name": "x"})),
            "collection:write",
            201,
        ),
        (
            Method::GET,
            "/api/collections".into(),
            None,
            "collection:read",
            200,
        ),
        (
            Method::GET,
            format!("/api/collections/{c}"),
            None,
            "collection:read",
            200,
        ),
        (
            Method::POST,
            "/api/tokens".into(),
            Some(token.clone()),
            "token:create",
            201,
        ),
        (
            Method::POST,
            "/api/tokens/batch".into(),
            Some(json!({"tokens": [token]})),
            "token:create",
            201,
        ),
        (Method::GET, "/api/tokens".into(), None, "token:read", 200),
    ];
    for (method, path, body, scope, status) in cases {
        let key = key_for(scope).await;
        let resp = app.call(method, &path, Some(&key), body.as_ref()).await;
        resp.assert_status(status);
    }
    let per_token: Vec<(Method, &str, Option<Value>, &str, u16)> = vec![
        (Method::GET, "", None, "token:read", 200),
        (Method::HEAD, "", None, "token:read", 200),
        (
            Method::POST,
            "/redeem",
            Some(json!({})),
            "token:redeem",
            200,
        ),
        (Method::DELETE, "", None, "token:delete", 204),
    ];
    for (method, suffix, body, scope, status) in per_token {
        let id = app.create_token_in(&tenant.key, c).await;
        let key = key_for(scope).await;
        let resp = app
            .call(
                method,
                &format!("/api/tokens/{id}{suffix}"),
                Some(&key),
                body.as_ref(),
            )
            .await;
        resp.assert_status(status);
    }
}

#[actix_web::test]
async fn the_star_scope_grants_every_route() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let star = app.create_key(&tenant.account_id, &["*"]).await;
    for (route, _) in account_routes(&tenant.collection_id) {
        let resp = send_route(&app, &route, Some(&star)).await;
        assert!(
            ![401, 403].contains(&resp.status.as_u16()),
            "{} {}: {:?}",
            route.method,
            route.path,
            resp
        );
    }
}

#[actix_web::test]
async fn account_keys_cannot_use_admin_routes() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = app.create_key_named(&tenant.account_id, "k", &["*"]).await;
    let key_id = id_of(&key);
    for route in admin_routes(&tenant.account_id, &key_id) {
        let resp = send_route(&app, &route, Some(&tenant.key)).await;
        resp.assert_error(403, "PERMISSION_DENIED");
    }
    // Nothing happened: the key still works and is still listed.
    let resp = app
        .get(
            &format!("/api/accounts/{}/api-keys", tenant.account_id),
            ADMIN,
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["data"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn the_admin_key_cannot_use_account_routes() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for (route, _) in account_routes(&tenant.collection_id) {
        let resp = send_route(&app, &route, Some(ADMIN)).await;
        assert_route_error(&resp, &route.method, 403, "PERMISSION_DENIED");
    }
}

#[actix_web::test]
async fn every_response_has_a_unique_request_id() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    // `TestApp::send` asserts each id is new; the same request twice must
    // give two ids, whatever the status.
    for _ in 0..2 {
        app.token(&tenant.key, &id).await;
        app.head_token(&tenant.key, &id).await.assert_status(200);
        app.get_token(&tenant.key, &unknown_id())
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
        app.send(app.request(Method::GET, "/health/live"))
            .await
            .assert_status(200);
        app.send(app.request(Method::GET, "/nowhere"))
            .await
            .assert_error(404, "NOT_FOUND");
    }
    let resp = app.delete_token(&tenant.key, &id).await;
    resp.assert_status(204);
    assert!(resp.header("x-request-id").is_some());
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    for path in [
        "/",
        "/api",
        "/api/token",
        "/api/tokens/x/y/z",
        "/api/tokens/",
    ] {
        app.get(path, &tenant.key)
            .await
            .assert_error(404, "NOT_FOUND");
    }
    let token = unknown_id();
    let cases = [
        (Method::PUT, "/api/tokens".to_owned()),
        (Method::DELETE, "/api/tokens".to_owned()),
        (Method::PATCH, format!("/api/tokens/{token}")),
        (Method::POST, format!("/api/tokens/{token}")),
        (Method::GET, format!("/api/tokens/{token}/redeem")),
        (Method::GET, "/api/tokens/batch".to_owned()),
        (Method::DELETE, "/api/collections".to_owned()),
        (Method::GET, "/api/accounts".to_owned()),
        (Method::POST, "/health/live".to_owned()),
    ];
    for (method, path) in cases {
        let resp = app.call(method, &path, Some(&tenant.key), None).await;
        resp.assert_error(405, "METHOD_NOT_ALLOWED");
    }
}

#[actix_web::test]
async fn malformed_json_and_wrong_content_types_are_400() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let good = json!({"collectionId": tenant.collection_id}).to_string();
    let cases: Vec<(String, &str, String, Option<&str>)> = vec![
        (
            "/api/tokens".into(),
            tenant.key.as_str(),
            "{\"collectionId\":".into(),
            Some("application/json"),
        ),
        (
            "/api/tokens".into(),
            tenant.key.as_str(),
            good.clone(),
            Some("text/plain"),
        ),
        (
            "/api/tokens".into(),
            tenant.key.as_str(),
            good.clone(),
            None,
        ),
        (
            "/api/tokens".into(),
            tenant.key.as_str(),
            "".into(),
            Some("application/json"),
        ),
        (
            "/api/tokens/batch".into(),
            tenant.key.as_str(),
            "{\"tokens\": [}".into(),
            Some("application/json"),
        ),
        (
            "/api/tokens/batch".into(),
            tenant.key.as_str(),
            format!("{{\"tokens\": [{good}]}}"),
            Some("application/x-www-form-urlencoded"),
        ),
        (
            "/api/collections".into(),
            tenant.key.as_str(),
            "{name: \"c\"}".into(),
            Some("application/json"),
        ),
        (
            format!("/api/tokens/{id}/redeem"),
            tenant.key.as_str(),
            "{\"merchantId\": \"m\"".into(),
            Some("application/json"),
        ),
        (
            format!("/api/tokens/{id}/redeem"),
            tenant.key.as_str(),
            "{\"merchantId\": \"m\"}".into(),
            Some("text/plain"),
        ),
        (
            "/api/accounts".into(),
            ADMIN,
            "[1,".into(),
            Some("application/json"),
        ),
        (
            format!("/api/accounts/{}/api-keys", tenant.account_id),
            ADMIN,
            "nope".into(),
            Some("application/json"),
        ),
    ];
    for (path, key, body, content_type) in cases {
        let mut request = app
            .request(Method::POST, &path)
            .header("X-Api-Key", key)
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let resp = app.send(request).await;
        assert_eq!(
            resp.status, 400,
            "{path} {body:?} {content_type:?}: {:?}",
            resp.body
        );
        resp.assert_error(400, "BAD_REQUEST");
    }
    // The JSON content type with parameters, and a +json type, are JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let resp = app
            .send(
                app.request(Method::POST, "/api/tokens")
                    .header("X-Api-Key", &tenant.key)
                    .header("Content-Type", content_type)
                    .body(good.clone()),
            )
            .await;
        resp.assert_status(201);
    }
    // The redeem attempts changed nothing.
    assert_eq!(app.token(&tenant.key, &id).await["status"], "active");
}

/// `body` padded with trailing spaces to exactly `len` bytes.
fn padded(body: &Value, len: usize) -> String {
    let mut text = body.to_string();
    assert!(text.len() <= len);
    text.extend(std::iter::repeat_n(' ', len - text.len()));
    text
}

async fn post_raw(app: &TestApp, path: &str, key: &str, body: String) -> Resp {
    app.send(
        app.request(Method::POST, path)
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body),
    )
    .await
}

const MIB: usize = 1 << 20;

#[actix_web::test]
async fn bodies_over_one_mib_are_413() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = json!({"collectionId": tenant.collection_id});
    let resp = post_raw(&app, "/api/tokens", &tenant.key, padded(&token, MIB)).await;
    resp.assert_status(201);
    let resp = post_raw(&app, "/api/tokens", &tenant.key, padded(&token, MIB + 1)).await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");

    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let path = format!("/api/tokens/{id}/redeem");
    let resp = post_raw(&app, &path, &tenant.key, padded(&json!({}), MIB + 1)).await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.token(&tenant.key, &id).await["status"], "active");

    let collection = json!({"name": "big"});
    let resp = post_raw(
        &app,
        "/api/collections",
        &tenant.key,
        padded(&collection, 2 * MIB),
    )
    .await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    let account = json!({"name": "big", "liveness": "test"});
    let resp = post_raw(&app, "/api/accounts", ADMIN, padded(&account, MIB + 1)).await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");

    // Only the two accepted creates happened.
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 2);
}

#[actix_web::test]
async fn batches_may_be_up_to_sixteen_mib() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    // About 2 MiB of real tokens: 150 tokens with 14 KB of data each.
    let tokens: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "collectionId": tenant.collection_id,
                "data": {"blob": format!("{i:05}{}", "x".repeat(14_000))},
            })
        })
        .collect();
    let body = json!({ "tokens": tokens });
    assert!(body.to_string().len() > 2 * MIB);
    let resp = app.post("/api/tokens/batch", &tenant.key, &body).await;
    resp.assert_status(201);
    let created = resp.body["data"].as_array().unwrap();
    assert_eq!(created.len(), 150);
    assert_eq!(
        created[149]["data"]["blob"].as_str().unwrap()[..5],
        *"00149"
    );

    let small = json!({"tokens": [{"collectionId": tenant.collection_id}]});
    let resp = post_raw(
        &app,
        "/api/tokens/batch",
        &tenant.key,
        padded(&small, 16 * MIB),
    )
    .await;
    resp.assert_status(201);
    let resp = post_raw(
        &app,
        "/api/tokens/batch",
        &tenant.key,
        padded(&small, 16 * MIB + 1),
    )
    .await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    // The single-token route keeps its 1 MiB limit.
    let resp = post_raw(
        &app,
        "/api/tokens",
        &tenant.key,
        padded(&body["tokens"][0], 2 * MIB),
    )
    .await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 151);
}

#[actix_web::test]
async fn unknown_query_parameters_are_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    app.list_tokens(&tenant.key, "colour=red")
        .await
        .assert_invalid(&["$.colour"]);
    app.get(&format!("/api/tokens/{id}?expand=children"), &tenant.key)
        .await
        .assert_invalid(&["$.expand"]);
    app.get("/api/collections?page=2", &tenant.key)
        .await
        .assert_invalid(&["$.page"]);
    app.get(
        &format!("/api/accounts/{}/api-keys?all=true", tenant.account_id),
        ADMIN,
    )
    .await
    .assert_invalid(&["$.all"]);
}

#[actix_web::test]
async fn list_limits_are_validated() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let lists = [
        "/api/tokens".to_owned(),
        "/api/collections".to_owned(),
        format!("/api/accounts/{}/api-keys", tenant.account_id),
    ];
    for path in &lists {
        let key = if path.starts_with("/api/accounts") {
            ADMIN
        } else {
            tenant.key.as_str()
        };
        for bad in ["0", "1001", "-1", "ten", ""] {
            app.get(&format!("{path}?limit={bad}"), key)
                .await
                .assert_invalid(&["$.limit"]);
        }
        app.get(&format!("{path}?cursor=garbage"), key)
            .await
            .assert_invalid(&["$.cursor"]);
        for good in ["1", "1000"] {
            let resp = app.get(&format!("{path}?limit={good}"), key).await;
            resp.assert_status(200);
            assert_eq!(
                resp.body["pagination"]["limit"],
                json!(good.parse::<u64>().unwrap())
            );
        }
        let resp = app.get(path, key).await;
        resp.assert_status(200);
        assert_eq!(resp.body["pagination"]["limit"], 100);
    }
    // Several problems at once: one entry each.
    app.list_tokens(
        &tenant.key,
        "limit=0&status=gone&type=coin&id=nope&collectionId=x",
    )
    .await
    .assert_invalid(&["$.limit", "$.status", "$.type", "$.id", "$.collectionId"]);
}

/// Every route with a body refuses a request for the first thing wrong with
/// it, in one order: no key (401), no right to the route (403, or 404 for an
/// admin route's unknown account), a body over the limit (413), not JSON or
/// a key given twice (400), against the schema (422).
#[actix_web::test]
async fn routes_with_a_body_refuse_in_one_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let reader = app.create_key(&tenant.account_id, &["token:read"]).await;
    let token = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let unknown_account = format!("/api/accounts/{}/api-keys", unknown_id());
    let known_account = format!("/api/accounts/{}/api-keys", tenant.account_id);
    let redeem = format!("/api/tokens/{token}/redeem");
    // (path, a key that may use it, one that may not, the body limit)
    let routes: [(&str, &str, &str, usize); 6] = [
        ("/api/accounts", ADMIN, &tenant.key, MIB),
        (&known_account, ADMIN, &tenant.key, MIB),
        ("/api/collections", &tenant.key, &reader, MIB),
        ("/api/tokens", &tenant.key, &reader, MIB),
        ("/api/tokens/batch", &tenant.key, &reader, 16 * MIB),
        (&redeem, &tenant.key, &reader, MIB),
    ];
    let invalid = padded(&json!({"unknownField": 1}), 64);
    let malformed = "{\"unknownField\": ".to_owned();
    let repeated = "{\"unknownField\": 1, \"unknownField\": 2}".to_owned();
    let too_large = padded(&json!({"unknownField": 1}), 16 * MIB + 1);
    for (path, allowed, denied, limit) in routes {
        let over = if limit == MIB {
            padded(&json!({"unknownField": 1}), MIB + 1)
        } else {
            too_large.clone()
        };
        let resp = app
            .send(
                app.request(Method::POST, path)
                    .header("Content-Type", "application/json")
                    .body(over.clone()),
            )
            .await;
        resp.assert_error(401, "UNAUTHENTICATED");
        let resp = post_raw(&app, path, denied, over.clone()).await;
        resp.assert_error(403, "PERMISSION_DENIED");
        let resp = post_raw(&app, path, allowed, over).await;
        resp.assert_error(413, "PAYLOAD_TOO_LARGE");
        let resp = post_raw(&app, path, allowed, malformed.clone()).await;
        resp.assert_error(400, "BAD_REQUEST");
        // A key given twice is refused before the schema check, in the
        // same words on every route.
        let resp = post_raw(&app, path, allowed, repeated.clone()).await;
        resp.assert_error(400, "BAD_REQUEST");
        assert_eq!(
            resp.body["message"],
            "The body has the key $.unknownField twice (line 1, column 34); \
             every key of an object must be unique."
        );
        let resp = post_raw(&app, path, allowed, invalid.clone()).await;
        resp.assert_error(422, "VALIDATION_FAILED");
    }
    let resp = post_raw(&app, &unknown_account, ADMIN, too_large).await;
    resp.assert_error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(app.token(&tenant.key, &token).await["status"], "active");
}
