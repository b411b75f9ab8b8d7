//! Reading, listing (paginated by creation time, then id) and deleting
//! tokens.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashSet;

/// `(createdAt, id)`: the list order.
fn position(token: &Value) -> (String, String) {
    (
        token["createdAt"].as_str().unwrap().to_owned(),
        id_of(token),
    )
}

/// Every page of `query` with `limit`, checking each page's envelope.
async fn walk(app: &TestApp, key: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("limit={limit}&{query}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let resp = app.list_tokens(key, &q).await;
        resp.assert_status(200);
        let page = resp.body["data"].as_array().unwrap();
        let pagination = &resp.body["pagination"];
        assert_eq!(pagination["limit"], json!(limit));
        assert!(page.len() <= limit);
        seen.extend(page.iter().cloned());
        match pagination["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(pagination["hasMore"], true);
                assert_eq!(page.len(), limit, "only the last page is short");
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(pagination["hasMore"], false);
                return seen;
            }
        }
    }
}

fn ids(tokens: &[Value]) -> Vec<String> {
    tokens.iter().map(id_of).collect()
}

/// `tokens` sorted in list order.
fn in_list_order(tokens: &[Value]) -> Vec<String> {
    let mut sorted: Vec<&Value> = tokens.iter().collect();
    sorted.sort_by_key(|t| position(t));
    sorted.into_iter().map(id_of).collect()
}

#[actix_web::test]
async fn unknown_tokens_are_404() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let real = app
        .create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let simple = real.replace('-', "");
    for id in [unknown_id(), "nope".to_owned(), simple, format!("{real}x")] {
        app.get_token(&tenant.key, &id)
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
        let head = app.head_token(&tenant.key, &id).await;
        head.assert_status(404);
        assert_eq!(head.header("x-token-status"), None);
        app.delete_token(&tenant.key, &id)
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
        app.redeem(&tenant.key, &id, &json!({}))
            .await
            .assert_error(404, "TOKEN_NOT_FOUND");
    }
    assert_eq!(app.token(&tenant.key, &real).await["status"], "active");
}

#[actix_web::test]
async fn head_gives_the_status_without_a_body() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c = &tenant.collection_id;
    let active = app.create_token_in(&tenant.key, c).await;
    let redeemed = app.create_token_in(&tenant.key, c).await;
    let deleted = app.create_token_in(&tenant.key, c).await;
    let later = id_of(
        &app.create_token(
            &tenant.key,
            &json!({"collectionId": c, "activeFrom": at(DAY)}),
        )
        .await,
    );
    app.redeem(&tenant.key, &redeemed, &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &deleted)
        .await
        .assert_status(204);
    for (id, status, header) in [
        (&active, 200, "active"),
        (&redeemed, 410, "redeemed"),
        (&deleted, 410, "deleted"),
        (&later, 422, "active"),
    ] {
        let resp = app.head_token(&tenant.key, id).await;
        resp.assert_status(status);
        assert_eq!(resp.header("x-token-status"), Some(header), "{id}");
        assert_eq!(resp.body, Value::Null);
    }
    // HEAD reads only: the active token is still redeemable.
    app.redeem(&tenant.key, &active, &json!({}))
        .await
        .assert_status(200);
}

#[actix_web::test]
async fn lists_filter_by_collection_status_type_and_id() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let c1 = tenant.collection_id.clone();
    let c2 = id_of(
        &app.create_collection(&tenant.key, &json!({"name": "second"}))
            .await,
    );
    // Nine tokens: each (collection, type) mix, then some redeemed, deleted
    // or expired.
    let mut all = Vec::new();
    for (i, (c, kind)) in [
        (&c1, "token"),
        (&c1, "card"),
        (&c1, "bank"),
        (&c2, "token"),
        (&c2, "card"),
        (&c2, "bank"),
        (&c1, "card"),
        (&c2, "card"),
        (&c1, "token"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"collectionId": c, "type": kind});
        if i == 7 {
            body["expiresIn"] = json!(60);
        }
        all.push(app.create_token(&tenant.key, &body).await);
        if i % 2 == 1 {
            app.advance_ms(1);
        }
    }
    app.redeem(&tenant.key, &id_of(&all[1]), &json!({}))
        .await
        .assert_status(200);
    app.redeem(&tenant.key, &id_of(&all[3]), &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &id_of(&all[5]))
        .await
        .assert_status(204);
    app.advance_ms(60 * SECOND);
    // Current state of each, as GET shows it.
    let mut current = Vec::new();
    for token in &all {
        current.push(app.token(&tenant.key, &id_of(token)).await);
    }
    assert_eq!(current[7]["status"], "expired");

    let pick =
        |indices: &[usize]| -> Vec<Value> { indices.iter().map(|&i| current[i].clone()).collect() };
    let (id0, id4, id8) = (id_of(&all[0]), id_of(&all[4]), id_of(&all[8]));
    let cases: Vec<(String, Vec<usize>)> = vec![
        (String::new(), (0..9).collect()),
        (format!("collectionId={c1}"), vec![0, 1, 2, 6, 8]),
        (
            format!("collectionId={c1}&collectionId={c2}"),
            (0..9).collect(),
        ),
        ("status=active".into(), vec![0, 2, 4, 6, 8]),
        ("status=redeemed".into(), vec![1, 3]),
        ("status=redeemed&status=deleted".into(), vec![1, 3, 5]),
        ("status=expired".into(), vec![7]),
        ("type=card".into(), vec![1, 4, 6, 7]),
        ("type=bank&type=token".into(), vec![0, 2, 3, 5, 8]),
        (format!("id={id8}&id={id0}&id={id4}"), vec![0, 4, 8]),
        (format!("id={id8}&id={}", unknown_id()), vec![8]),
        (
            format!("collectionId={c2}&type=card&status=active"),
            vec![4],
        ),
        (format!("collectionId={c2}&status=active&type=bank"), vec![]),
        (format!("collectionId={}", unknown_id()), vec![]),
    ];
    for (query, expected) in cases {
        let resp = app.list_tokens(&tenant.key, &query).await;
        resp.assert_status(200);
        let data = resp.body["data"].as_array().unwrap();
        let expected = pick(&expected);
        assert_eq!(ids(data), in_list_order(&expected), "{query}");
        // Listed tokens look exactly as GET shows them.
        let mut by_id = expected.clone();
        by_id.sort_by_key(id_of);
        let mut got = data.clone();
        got.sort_by_key(id_of);
        assert_eq!(got, by_id, "{query}");
        assert_eq!(resp.body["pagination"]["hasMore"], false);
        assert_eq!(resp.body["pagination"]["nextCursor"], Value::Null);
    }
}

/// Creates `n` tokens, moving the clock 1 ms after every third, through
/// single and batch creates; returns them.
async fn create_spread(app: &TestApp, tenant: &Tenant, n: usize) -> Vec<Value> {
    let mut created = Vec::new();
    while created.len() < n {
        if created.len() % 2 == 0 {
            let size = 3.min(n - created.len());
            let batch = app
                .create_batch(
                    &tenant.key,
                    vec![json!({"collectionId": tenant.collection_id}); size],
                )
                .await;
            created.extend(batch);
        } else {
            for _ in 0..3.min(n - created.len()) {
                created.push(
                    app.create_token(&tenant.key, &json!({"collectionId": tenant.collection_id}))
                        .await,
                );
            }
        }
        app.advance_ms(1);
    }
    created
}

#[actix_web::test]
async fn pages_cover_every_token_once_in_creation_order() {
    for shards in [1, 2, 3] {
        let app = TestApp::builder().shards(shards).spawn().await;
        let tenant = app.tenant().await;
        let created = create_spread(&app, &tenant, 50).await;
        let expected = in_list_order(&created);
        for limit in [7, 1, 3, 49, 50, 51, 1000] {
            let seen = walk(&app, &tenant.key, "", limit).await;
            assert_eq!(ids(&seen), expected, "{shards} shards, limit {limit}");
        }
        // Filters page the same way.
        let query = format!("collectionId={}&status=active", tenant.collection_id);
        let seen = walk(&app, &tenant.key, &query, 7).await;
        assert_eq!(ids(&seen), expected, "{shards} shards");
    }
}

#[actix_web::test]
async fn tokens_added_while_paging_do_not_disturb_the_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let created = create_spread(&app, &tenant, 50).await;
    let originals: HashSet<String> = created.iter().map(id_of).collect();

    let mut seen: Vec<Value> = Vec::new();
    let mut added_later: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "limit=7".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let resp = app.list_tokens(&tenant.key, &q).await;
        resp.assert_status(200);
        seen.extend(resp.body["data"].as_array().unwrap().iter().cloned());
        pages += 1;
        if pages <= 4 {
            // Some at the very instant of the last page, some later.
            for _ in 0..2 {
                app.create_token_in(&tenant.key, &tenant.collection_id)
                    .await;
            }
            app.advance_ms(1);
            for _ in 0..2 {
                added_later.push(
                    app.create_token_in(&tenant.key, &tenant.collection_id)
                        .await,
                );
            }
        }
        match resp.body["pagination"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Strictly increasing in list order: nothing repeated, nothing reordered.
    let positions: Vec<(String, String)> = seen.iter().map(position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let seen_ids: Vec<String> = ids(&seen);
    for id in &originals {
        assert_eq!(seen_ids.iter().filter(|s| *s == id).count(), 1);
    }
    // Everything created after the clock moved is seen, after the originals.
    let last_original = seen_ids
        .iter()
        .rposition(|id| originals.contains(id))
        .unwrap();
    for id in &added_later {
        let at = seen_ids.iter().position(|s| s == id).expect("seen");
        assert!(at > last_original);
    }
    assert_eq!(app.all_token_ids(&tenant.key, "").await.len(), 50 + 16);
}

#[actix_web::test]
async fn deleting_erases_the_tokens_data_and_keeps_a_reference() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let token = app
        .create_token(
            &tenant.key,
            &json!({
                "collectionId": tenant.collection_id,
                "data": {"secret": "s3cr3t"},
                "metadata": {"colour": "red"},
                "encryption": {"cek": {"key": "k", "alg": "AES"}, "kek": {"key": "k2", "alg": "RSA"}},
            }),
        )
        .await;
    let id = id_of(&token);
    app.advance_ms(1234);
    let resp = app.delete_token(&tenant.key, &id).await;
    resp.assert_status(204);
    assert_eq!(resp.body, Value::Null);

    let deleted = app.token(&tenant.key, &id).await;
    assert_token_fields(&deleted, &["deletedAt"]);
    assert_eq!(deleted["status"], "deleted");
    assert_eq!(deleted["deletedAt"], at(1234));
    assert_eq!(deleted["data"], Value::Null);
    assert_eq!(deleted["metadata"], json!({}));
    assert_eq!(deleted["encryption"], Value::Null);
    assert!(!deleted.to_string().contains("s3cr3t"));
    for field in [
        "id",
        "accountId",
        "collectionId",
        "createdAt",
        "createdBy",
        "activeFrom",
        "expiresAt",
    ] {
        assert_eq!(deleted[field], token[field], "{field}");
    }

    // Again: 204, and nothing moves.
    app.advance_ms(1000);
    app.delete_token(&tenant.key, &id).await.assert_status(204);
    assert_eq!(app.token(&tenant.key, &id).await, deleted);

    app.redeem(&tenant.key, &id, &json!({}))
        .await
        .assert_error(410, "TOKEN_DELETED");
    let head = app.head_token(&tenant.key, &id).await;
    head.assert_status(410);
    assert_eq!(head.header("x-token-status"), Some("deleted"));
    let listed = app.list_tokens(&tenant.key, "status=deleted").await;
    assert_eq!(listed.body["data"], json!([deleted]));
    let listed = app.list_tokens(&tenant.key, "status=active").await;
    assert_eq!(listed.body["data"], json!([]));
}

#[actix_web::test]
async fn a_redeemed_token_can_be_deleted() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let id = app
        .create_token(
            &tenant.key,
            &json!({"collectionId": tenant.collection_id, "metadata": {"k": "v"}}),
        )
        .await;
    let id = id_of(&id);
    app.redeem(&tenant.key, &id, &json!({"merchantId": "m"}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &id).await.assert_status(204);
    let token = app.token(&tenant.key, &id).await;
    assert_eq!(token["status"], "deleted");
    assert_eq!(token["metadata"], json!({}));
    app.redeem(&tenant.key, &id, &json!({"merchantId": "m"}))
        .await
        .assert_error(410, "TOKEN_DELETED");
}
