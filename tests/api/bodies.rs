//! Hostile request bodies: a token's `data` comes back byte for byte
//! (numbers, key order, whitespace) on every read, replay and restart; a key
//! given twice anywhere in a body is a 400 that changes nothing; and a 422
//! stays small whatever the request: at most 100 entries, the rest counted in
//! `validationErrorsOmitted`, long values and keys quoted in part.

use crate::helpers::*;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;
use tokend::api::edge::limits::HEAD_BYTES_MAX_LIMIT;
use tokend::api::edge::EdgeLimits;

/// `data` texts that parsing into a `Value` and writing it back would
/// change: digits beyond a double, exponents, signs, trailing zeros, key
/// order, whitespace inside and between values, escapes.
const DATA_TEXTS: [&str; 14] = [
    "123456789012345678901234567890",
    "1e-999999",
    "-0",
    "-0.0",
    "1.0",
    "1E+2",
    "0.1e1",
    "18446744073709551616",
    "{\"b\":1,\"a\":2,\"c\":{\"z\":[3,2,1],\"y\":null}}",
    "{ \"b\" : [ 1 ,\n 2 ] ,\t\"a\" : \"x  y\" }",
    "\"caf\\u00e9 \\n  two  spaces \"",
    "[1.50, 2.000, 3e0, -1e-7]",
    "{\"n\": 0.30000000000000000000001, \"m\": {\"\\u0041\": true}}",
    "\"\"",
];

/// A token's `data` as the response wrote it.
#[derive(Deserialize)]
struct DataOf {
    /// The exact text.
    data: Box<RawValue>,
}

/// A list or batch answer's tokens.
#[derive(Deserialize)]
struct Tokens {
    /// The tokens, each with its `data` text.
    data: Vec<DataOf>,
}

/// The `data` text of the token `resp` answers.
#[track_caller]
fn data_of(resp: &Resp) -> String {
    let token: DataOf = serde_json::from_slice(&resp.bytes).expect("a token with data");
    token.data.get().to_owned()
}

/// The `data` texts of the tokens of a list or batch answer.
#[track_caller]
fn data_of_each(resp: &Resp) -> Vec<String> {
    let tokens: Tokens = serde_json::from_slice(&resp.bytes).expect("tokens with data");
    tokens
        .data
        .iter()
        .map(|t| t.data.get().to_owned())
        .collect()
}

/// `POST path` with `key` and `body` sent as it is.
async fn post_text(app: &TestApp, path: &str, key: &str, body: String) -> Resp {
    app.send(
        app.request(Method::POST, path)
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body),
    )
    .await
}

/// A token body in `collection` with `data` written as `data`, and `extra`
/// (`, "field": value` pairs) before it.
fn token_text(collection: &str, extra: &str, data: &str) -> String {
    format!("{{\"collectionId\": \"{collection}\"{extra}, \"data\": {data}}}")
}

#[actix_web::test]
async fn data_comes_back_exactly_as_sent() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let key = &tenant.key;
    for (i, text) in DATA_TEXTS.iter().enumerate() {
        let extra = format!(", \"idempotencyKey\": \"k-{i}\"");
        let body = token_text(c, &extra, text);
        let created = post_text(&app, "/api/tokens", key, body.clone()).await;
        created.assert_status(201);
        assert_eq!(data_of(&created), *text);
        let id = id_of(&created.body);
        assert_eq!(data_of(&app.get_token(key, &id).await), *text);
        let listed = app.list_tokens(key, &format!("id={id}")).await;
        listed.assert_status(200);
        assert_eq!(data_of_each(&listed), [*text]);
        // The same body again is a replay, with the data first sent.
        let replay = post_text(&app, "/api/tokens", key, body).await;
        replay.assert_status(200);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(data_of(&replay), *text);
    }
    // In a batch, and as children.
    let items: Vec<String> = DATA_TEXTS.iter().map(|t| token_text(c, "", t)).collect();
    let batch = format!("{{\"tokens\": [{}]}}", items.join(",\n"));
    let created = post_text(&app, "/api/tokens/batch", key, batch).await;
    created.assert_status(201);
    assert_eq!(data_of_each(&created), DATA_TEXTS);
    let children = format!(", \"children\": [{}]", items.join(", "));
    let parent = post_text(&app, "/api/tokens", key, token_text(c, &children, "7.0")).await;
    parent.assert_status(201);
    assert_eq!(data_of(&parent), "7.0");
    let child_ids: Vec<String> = parent.body["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(child_ids.len(), DATA_TEXTS.len());
    for (id, text) in child_ids.iter().zip(DATA_TEXTS) {
        assert_eq!(data_of(&app.get_token(key, id).await), text);
    }
}

#[actix_web::test]
async fn a_replay_needs_the_same_data_text() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let key = &tenant.key;
    let cases = [
        ("{\"b\":1,\"a\":2}", "{\"a\":2,\"b\":1}"),
        ("1e-999999", "0"),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567891",
        ),
        ("[1, 2]", "[1,2]"),
        ("1.0", "1"),
    ];
    for (i, (first, other)) in cases.iter().enumerate() {
        let extra = format!(", \"idempotencyKey\": \"r-{i}\"");
        let created = post_text(&app, "/api/tokens", key, token_text(c, &extra, first)).await;
        created.assert_status(201);
        let again = post_text(&app, "/api/tokens", key, token_text(c, &extra, other)).await;
        again.assert_error(409, "TOKEN_ALREADY_CREATED");
        // Other fields may still come in another order, with other spacing.
        let reordered = format!(
            "{{ \"data\" : {first},\n \"idempotencyKey\": \"r-{i}\", \"collectionId\": \"{c}\" }}"
        );
        let replay = post_text(&app, "/api/tokens", key, reordered).await;
        replay.assert_status(200);
        assert_eq!(data_of(&replay), *first);
    }
    assert_eq!(app.all_token_ids(key, "").await.len(), cases.len());
}

#[actix_web::test]
async fn data_schema_checks_read_the_numbers_as_doubles() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = &tenant.key;
    let schema = json!({"type": "object", "properties": {"n": {"type": "number", "maximum": 10}}});
    let collection = app
        .create_collection(key, &json!({"name": "numbers", "dataSchema": schema}))
        .await;
    let c = id_of(&collection);
    // Checked as 0, stored as sent.
    let tiny = post_text(
        &app,
        "/api/tokens",
        key,
        token_text(&c, "", "{\"n\": 1e-999999}"),
    )
    .await;
    tiny.assert_status(201);
    assert_eq!(data_of(&tiny), "{\"n\": 1e-999999}");
    // Checked as 1.2345678901234568e29: over the maximum.
    let big = "{\"n\": 123456789012345678901234567890}";
    let resp = post_text(&app, "/api/tokens", key, token_text(&c, "", big)).await;
    resp.assert_invalid(&["$.data.n"]);
    // Beyond the range of a double: not a number this service reads.
    let huge = post_text(
        &app,
        "/api/tokens",
        key,
        token_text(&c, "", "{\"n\": 1e400}"),
    )
    .await;
    huge.assert_error(400, "BAD_REQUEST");
    assert_eq!(app.all_token_ids(key, "").await.len(), 1);
}

/// The files of the running `app`'s data dir, copied into a new one (all
/// but the lock): what a crash would leave.
fn crash_image(app: &TestApp) -> Arc<tempfile::TempDir> {
    let image = tempfile::tempdir().expect("a temporary dir");
    for entry in std::fs::read_dir(app.data_dir.path()).expect("the data dir reads") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        if path.is_file() && name != "LOCK" {
            std::fs::copy(&path, image.path().join(name)).expect("the file copies");
        }
    }
    Arc::new(image)
}

#[actix_web::test]
async fn data_survives_a_restart_from_the_log_and_from_a_snapshot() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = tenant.key.clone();
    let mut ids = Vec::new();
    for text in DATA_TEXTS {
        let created = post_text(
            &app,
            "/api/tokens",
            &key,
            token_text(&tenant.collection_id, "", text),
        )
        .await;
        created.assert_status(201);
        ids.push(id_of(&created.body));
    }
    // From the log alone.
    let image = crash_image(&app);
    drop(app);
    let app = TestApp::builder().data_dir(image).spawn().await;
    for (id, text) in ids.iter().zip(DATA_TEXTS) {
        assert_eq!(data_of(&app.get_token(&key, id).await), text);
    }
    // From a snapshot.
    app.post("/api/admin/snapshot", ADMIN, &json!({}))
        .await
        .assert_status(200);
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    let app = TestApp::builder().data_dir(dir).spawn().await;
    for (id, text) in ids.iter().zip(DATA_TEXTS) {
        assert_eq!(data_of(&app.get_token(&key, id).await), text);
    }
}

#[actix_web::test]
async fn a_key_given_twice_is_400_on_every_route_and_changes_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let key = tenant.key.as_str();
    let c = &tenant.collection_id;
    let token = app.create_token_in(key, c).await;
    let redeem = format!("/api/tokens/{token}/redeem");
    let keys_path = format!("/api/accounts/{}/api-keys", tenant.account_id);
    let good = format!("{{\"collectionId\": \"{c}\"}}");
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "/api/tokens",
            key,
            format!("{{\"collectionId\": \"{c}\", \"collectionId\": \"{c}\"}}"),
            "$.collectionId",
        ),
        (
            "/api/tokens",
            key,
            format!("{{\"collectionId\": \"{c}\", \"metadata\": {{\"colour\": \"red\", \"colour\": \"blue\"}}}}"),
            "$.metadata.colour",
        ),
        (
            "/api/tokens",
            key,
            token_text(c, "", "{\"a\": [{\"x\": 1, \"\\u0078\": 2}]}"),
            "$.data.a[0].x",
        ),
        (
            "/api/tokens",
            key,
            token_text(c, ", \"children\": [{}, {\"data\": {\"k\": 1, \"k\": 1}}]", "1"),
            "$.children[1].data.k",
        ),
        (
            "/api/tokens/batch",
            key,
            format!("{{\"tokens\": [{good}], \"tokens\": [{good}]}}"),
            "$.tokens",
        ),
        (
            "/api/tokens/batch",
            key,
            format!(
                "{{\"tokens\": [{good}, {{\"collectionId\": \"{c}\", \"metadata\": {{\"k\": \"a\", \"k\": \"b\"}}}}]}}"
            ),
            "$.tokens[1].metadata.k",
        ),
        (
            "/api/tokens/batch",
            key,
            format!("{{\"tokens\": [{good}, {}]}}", token_text(c, "", "{\"d\": {\"e\": 1, \"e\": 2}}")),
            "$.tokens[1].data.d.e",
        ),
        (
            "/api/collections",
            key,
            "{\"name\": \"c\", \"dataSchema\": {\"type\": \"object\", \"type\": \"array\"}}".to_owned(),
            "$.dataSchema.type",
        ),
        (
            &redeem,
            key,
            "{\"merchantId\": \"m\", \"merchantId\": \"n\"}".to_owned(),
            "$.merchantId",
        ),
        (
            "/api/accounts",
            ADMIN,
            "{\"name\": \"a\", \"liveness\": \"test\", \"name\": \"b\"}".to_owned(),
            "$.name",
        ),
        (
            &keys_path,
            ADMIN,
            "{\"name\": \"k\", \"scopes\": [\"*\"], \"scopes\": [\"token:read\"]}".to_owned(),
            "$.scopes",
        ),
    ];
    let collections_before = app.get("/api/collections", key).await.body["data"].clone();
    let keys_before = app.get(&keys_path, ADMIN).await.body["data"].clone();
    for (path, caller, body, duplicate) in cases {
        let resp = post_text(&app, path, caller, body.clone()).await;
        resp.assert_error(400, "BAD_REQUEST");
        let message = resp.body["message"].as_str().expect("a message");
        assert!(
            message.contains(&format!("key {duplicate} twice")),
            "{path} {body}: {message}"
        );
    }
    assert_eq!(
        app.all_token_ids(key, "").await,
        std::slice::from_ref(&token)
    );
    assert_eq!(app.token(key, &token).await["status"], "active");
    assert_eq!(
        app.get("/api/collections", key).await.body["data"],
        collections_before
    );
    assert_eq!(app.get(&keys_path, ADMIN).await.body["data"], keys_before);
}

/// Asserts that `resp` is a 422 listing the first 100 of `total` problems,
/// each entry within its bounds, in fewer than `bytes_max` bytes.
#[track_caller]
fn assert_capped(resp: &Resp, total: usize, bytes_max: usize) {
    resp.assert_error(422, "VALIDATION_FAILED");
    let body = &resp.body;
    let entries = body["validationErrors"].as_array().expect("entries");
    assert_eq!(entries.len(), 100, "{body}");
    assert_eq!(body["validationErrorsOmitted"], json!(total - 100));
    assert_eq!(
        body["message"],
        json!(format!("The request has {total} invalid fields."))
    );
    for entry in entries {
        let path = entry["path"].as_str().expect("a path");
        let message = entry["message"].as_str().expect("a message");
        assert!(path.chars().count() <= 301, "{path}");
        assert!(message.chars().count() <= 401, "{message}");
    }
    assert!(
        resp.bytes.len() < bytes_max,
        "{} bytes: {}",
        resp.bytes.len(),
        &body.to_string()[..1000]
    );
}

#[actix_web::test]
async fn thirty_thousand_unknown_query_parameters_answer_a_small_422() {
    // A 60 KB request line is over the default 16 KiB head limit (a 431 at
    // the connection edge: `edge::`); at the largest limit an operator can
    // set, it reaches the query checks, whose answer stays small.
    let app = TestApp::builder()
        .edge(EdgeLimits {
            head_bytes_max: HEAD_BYTES_MAX_LIMIT,
            connections_per_client_max: EdgeLimits::default().connections_max,
            ..EdgeLimits::default()
        })
        .spawn()
        .await;
    let tenant = app.tenant().await;
    let query = vec!["x"; 30_000].join("&");
    let resp = app.list_tokens(&tenant.key, &query).await;
    assert_capped(&resp, 30_000, 8 * 1024);
    assert_eq!(resp.body["validationErrors"][99]["path"], "$.x");
    // As many bad values of a known parameter.
    let query = vec!["id=x"; 12_000].join("&");
    let resp = app.list_tokens(&tenant.key, &query).await;
    assert_capped(&resp, 12_000, 10 * 1024);
    assert_eq!(resp.body["validationErrors"][0]["path"], "$.id");
    // A long name is quoted in part.
    let long = "n".repeat(10_000);
    let resp = app.list_tokens(&tenant.key, &format!("{long}=1")).await;
    resp.assert_error(422, "VALIDATION_FAILED");
    assert!(resp.body.get("validationErrorsOmitted").is_none());
    assert_eq!(
        resp.body["validationErrors"][0]["path"],
        json!(format!("$['{}…']", "n".repeat(200)))
    );
}

#[actix_web::test]
async fn a_batch_of_twenty_thousand_bad_tokens_answers_a_small_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let items = vec!["{\"collectionId\": 5}"; 20_000].join(",");
    let resp = post_text(
        &app,
        "/api/tokens/batch",
        &tenant.key,
        format!("{{\"tokens\": [{items}]}}"),
    )
    .await;
    // One problem per token, then the list's length.
    assert_capped(&resp, 20_001, 16 * 1024);
    let entries = resp.body["validationErrors"].as_array().expect("entries");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["path"], json!(format!("$.tokens[{i}].collectionId")));
        assert_eq!(entry["message"], "5 is not of type \"string\"");
    }
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn a_sixteen_mib_batch_of_long_bad_values_answers_a_small_422() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let long = "x".repeat(1_500);
    let item = format!("{{\"collectionId\": \"{c}\", \"description\": \"{long}\", \"colour\": 1}}");
    let body = format!("{{\"tokens\": [{}]}}", vec![item; 10_000].join(","));
    assert!(
        body.len() > 15 << 20 && body.len() <= 16 << 20,
        "{}",
        body.len()
    );
    let resp = post_text(&app, "/api/tokens/batch", &tenant.key, body).await;
    assert_capped(&resp, 20_000, 48 * 1024);
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn long_values_and_keys_are_quoted_in_part() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let long = "x".repeat(10_000);
    let resp = app
        .post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": c, "description": long}),
        )
        .await;
    resp.assert_invalid(&["$.description"]);
    let shown = "x".repeat(199);
    assert_eq!(
        resp.body["validationErrors"][0]["message"],
        json!(format!("\"{shown}… is longer than 1000 characters"))
    );
    // A 100 000-character metadata key: its path and message quote 200.
    let long_key = "k".repeat(100_000);
    let resp = app
        .post(
            "/api/tokens",
            &tenant.key,
            &json!({"collectionId": c, "metadata": {long_key: "v"}}),
        )
        .await;
    resp.assert_error(422, "VALIDATION_FAILED");
    let cut_key = format!("{}…", "k".repeat(200));
    let entries = resp.body["validationErrors"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{}", resp.body);
    assert_eq!(
        entries[0]["path"],
        json!(format!("$.metadata['{cut_key}']"))
    );
    let message = entries[0]["message"].as_str().expect("a message");
    assert!(message.chars().count() < 300, "{message}");
    assert!(resp.bytes.len() < 2048, "{}", resp.bytes.len());
    assert!(app.all_token_ids(&tenant.key, "").await.is_empty());
}

#[actix_web::test]
async fn a_batch_with_many_unknown_fields_lists_the_first_in_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let names: Vec<String> = (0..150).rev().map(|i| format!("f{i:03}")).collect();
    let fields: Vec<String> = names.iter().map(|n| format!("\"{n}\": 1")).collect();
    let body = format!("{{{}}}", fields.join(", "));
    let resp = post_text(&app, "/api/tokens/batch", &tenant.key, body).await;
    // 150 unknown fields, then the missing list.
    assert_capped(&resp, 151, 8 * 1024);
    let expected: Vec<String> = (0..100).map(|i| format!("$.f{i:03}")).collect();
    assert_eq!(resp.validation_paths(), expected);
}

#[actix_web::test]
async fn the_data_limit_counts_the_bytes_sent() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    // 16 KiB with its whitespace: kept as it is.
    let fits = format!("[{}1]", " ".repeat(16 * 1024 - 3));
    let resp = post_text(&app, "/api/tokens", &tenant.key, token_text(c, "", &fits)).await;
    resp.assert_status(201);
    assert_eq!(data_of(&resp), fits);
    // One space more is over, though `[1]` is three bytes.
    let over = format!("[{}1]", " ".repeat(16 * 1024 - 2));
    let resp = post_text(&app, "/api/tokens", &tenant.key, token_text(c, "", &over)).await;
    resp.assert_invalid(&["$.data"]);
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 1);
}
