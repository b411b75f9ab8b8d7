//! `GET /metrics` (no key), read as an operator would: the exposition is parsed
//! into series keyed by metric name and labels, and the tests check how the
//! series move when requests, token changes, snapshots and restarts happen.

use crate::helpers::{id_of, unknown_id, TestApp, ADMIN, DAY, SECOND};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Labels of one series, sorted by name.
type Labels = BTreeMap<String, String>;

/// One scrape, parsed.
struct Scrape {
    /// Sample values by metric name and labels.
    samples: HashMap<(String, Labels), f64>,
    /// Declared type of each metric family (`# TYPE`).
    types: HashMap<String, String>,
}

impl Scrape {
    /// Parses OpenMetrics text, failing on anything malformed: a line that
    /// is not a comment or a sample, a series given twice, a missing `# EOF`.
    fn parse(text: &str) -> Scrape {
        assert_eq!(text.lines().last(), Some("# EOF"), "no EOF marker:\n{text}");
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels, value) = parse_sample(line);
            let duplicate = samples.insert((name, labels), value).is_some();
            assert!(!duplicate, "series given twice: {line}");
        }
        Scrape { samples, types }
    }

    /// The sample `name{labels}`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The sample `name{labels}`, which must be present.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Every series of the metric `name`.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, labels), value)| (labels, *value))
    }

    /// The declared type of the family `name`.
    fn kind(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }
}

/// `name{k="v",…} value` (labels optional, values escaped as in the format).
fn parse_sample(line: &str) -> (String, Labels, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("not a sample: {line}"));
    let name = line[..name_end].to_owned();
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line}"
    );
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        loop {
            let mut key = String::new();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => {
                        closed = true;
                        break;
                    }
                    c => key.push(c),
                }
            }
            if closed {
                rest = &after_brace[chars.next().map_or(after_brace.len(), |(i, _)| i)..];
                break;
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => panic!("bad escape {other:?} in {line}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value in {line}"),
                }
            }
            assert!(labels.insert(key, value).is_none(), "label twice: {line}");
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &after_brace[i + 1..];
                    break;
                }
                other => panic!("expected , or }} after a label, got {other:?}: {line}"),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .and_then(|v| v.split(' ').next())
        .unwrap_or_else(|| panic!("no value: {line}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|e| panic!("bad value {value:?} ({e}): {line}"));
    (name, labels, value)
}

/// `GET /metrics` without a key: checks the answer's status, type and
/// request id, and parses it.
async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("the scrape is answered");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(header("x-request-id").is_some_and(|id| !id.is_empty()));
    let text = response.text().await.expect("the body is read");
    Scrape::parse(&text)
}

const REQUESTS: &str = "tokend_http_requests_total";
const DURATION: &str = "tokend_http_request_duration_seconds";
const REDEEM: &str = "/api/tokens/{id}/redeem";

/// Requests of a route, method and status so far (0 before the first).
fn requests(scrape: &Scrape, route: &str, method: &str, status: &str) -> f64 {
    scrape
        .get(
            REQUESTS,
            &[("route", route), ("method", method), ("status", status)],
        )
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn requests_are_counted_by_route_pattern_method_and_status() {
    let app = crate::helpers::spawn_app().await;
    let tenant = app.tenant().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.create_token_in(&tenant.key, &tenant.collection_id)
                .await,
        );
    }
    let before = scrape(&app).await;

    for id in &ids {
        app.redeem(&tenant.key, id, &json!({}))
            .await
            .assert_status(200);
    }
    app.redeem(&tenant.key, &ids[0], &json!({}))
        .await
        .assert_error(409, "TOKEN_ALREADY_REDEEMED");
    app.redeem(&tenant.key, &unknown_id(), &json!({}))
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
    app.get("/api/no-such-route", &tenant.key)
        .await
        .assert_error(404, "NOT_FOUND");
    app.call(Method::PUT, "/metrics", None, None)
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    let after = scrape(&app).await;

    let delta = |route, method, status| {
        requests(&after, route, method, status) - requests(&before, route, method, status)
    };
    assert_eq!(delta(REDEEM, "POST", "200"), 3.0);
    assert_eq!(delta(REDEEM, "POST", "409"), 1.0);
    assert_eq!(delta(REDEEM, "POST", "404"), 1.0);
    assert_eq!(delta("unmatched", "GET", "404"), 1.0);
    assert_eq!(delta("/metrics", "PUT", "405"), 1.0);
    // The first scrape is counted by the second.
    assert_eq!(delta("/metrics", "GET", "200"), 1.0);
    assert_eq!(delta("/api/tokens", "POST", "201"), 0.0);
    assert_eq!(requests(&after, "/api/tokens", "POST", "201"), 3.0);

    // The histogram counts the same requests, its buckets are cumulative and
    // end with all of them.
    let redeemed = [("route", REDEEM), ("method", "POST"), ("status", "200")];
    assert_eq!(after.kind(DURATION), Some("histogram"));
    assert_eq!(after.kind("tokend_http_requests"), Some("counter"));
    assert_eq!(after.value(&format!("{DURATION}_count"), &redeemed), 3.0);
    assert!(after.value(&format!("{DURATION}_sum"), &redeemed) > 0.0);
    let mut buckets: Vec<(f64, f64)> = after
        .series(&format!("{DURATION}_bucket"))
        .filter(|(labels, _)| {
            labels.get("route").map(String::as_str) == Some(REDEEM)
                && labels.get("status").map(String::as_str) == Some("200")
        })
        .map(|(labels, count)| {
            let le = labels["le"].parse::<f64>().expect("a bound");
            (le, count)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3.0)));

    // Labels are route patterns, never raw paths.
    for (labels, _) in after.series(REQUESTS) {
        let route = labels["route"].as_str();
        assert!(
            route == "unmatched" || tokend::api::metrics::ROUTES.contains(&route),
            "route label {route:?}"
        );
        assert!(!ids.iter().any(|id| route.contains(id.as_str())));
    }
}

/// Tokens by status, summed over the shards.
fn tokens(scrape: &Scrape) -> [f64; 4] {
    ["active", "redeemed", "expired", "deleted"]
        .map(|status| scrape.value("tokend_tokens", &[("status", status)]))
}

#[actix_web::test]
async fn token_gauges_follow_create_redeem_delete_expiry_and_purge() {
    let app = crate::helpers::spawn_app().await;
    let first = scrape(&app).await;
    assert_eq!(first.kind("tokend_tokens"), Some("gauge"));
    assert_eq!(tokens(&first), [0.0; 4]);

    let tenant = app.tenant().await;
    let mut plain = Vec::new();
    for _ in 0..4 {
        plain.push(
            app.create_token_in(&tenant.key, &tenant.collection_id)
                .await,
        );
    }
    let expiring = app
        .create_batch(
            &tenant.key,
            (0..3)
                .map(|_| json!({"collectionId": tenant.collection_id, "expiresIn": 60}))
                .collect(),
        )
        .await;
    assert_eq!(tokens(&scrape(&app).await), [7.0, 0.0, 0.0, 0.0]);

    app.redeem(&tenant.key, &plain[0], &json!({"idempotencyKey": "k"}))
        .await
        .assert_status(200);
    // A replay and a refused redeem change nothing.
    app.redeem(&tenant.key, &plain[0], &json!({"idempotencyKey": "k"}))
        .await
        .assert_status(200);
    app.redeem(&tenant.key, &plain[0], &json!({}))
        .await
        .assert_status(409);
    app.delete_token(&tenant.key, &plain[1])
        .await
        .assert_status(204);
    app.delete_token(&tenant.key, &plain[1])
        .await
        .assert_status(204);
    // A redeemed token that is then deleted moves from redeemed to deleted.
    app.redeem(&tenant.key, &plain[2], &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &plain[2])
        .await
        .assert_status(204);
    assert_eq!(tokens(&scrape(&app).await), [4.0, 1.0, 0.0, 2.0]);

    // Expiry: the timers move the three expiring tokens.
    app.advance_ms(61 * SECOND);
    app.run_timers().await;
    assert_eq!(tokens(&scrape(&app).await), [1.0, 1.0, 3.0, 2.0]);
    let expired = app.token(&tenant.key, &id_of(&expiring[0])).await;
    assert_eq!(expired["status"], "expired");

    // Past the 30-day retention every tombstone is purged.
    app.advance_ms(31 * DAY);
    app.run_timers().await;
    assert_eq!(tokens(&scrape(&app).await), [1.0, 0.0, 0.0, 0.0]);
    app.get_token(&tenant.key, &plain[0])
        .await
        .assert_error(404, "TOKEN_NOT_FOUND");
}

#[actix_web::test]
async fn wal_and_snapshot_metrics_record_fsyncs_batches_and_snapshots() {
    // fsync `always`, as the helper starts every app.
    let app = crate::helpers::spawn_app().await;
    let tenant = app.tenant().await;
    let created = 5;
    for _ in 0..created {
        app.create_token_in(&tenant.key, &tenant.collection_id)
            .await;
    }
    let scrape1 = scrape(&app).await;
    assert_eq!(scrape1.value("tokend_ready", &[]), 1.0);
    assert_eq!(
        scrape1.kind("tokend_wal_fsync_duration_seconds"),
        Some("histogram")
    );
    // Every acknowledged write was fsynced: one fsync per batch at least.
    let fsyncs = scrape1.value("tokend_wal_fsync_duration_seconds_count", &[]);
    let batches = scrape1.value("tokend_wal_batch_records_count", &[]);
    assert!(batches >= 1.0, "{batches} batches");
    assert!(fsyncs >= batches, "{fsyncs} fsyncs for {batches} batches");
    assert!(scrape1.value("tokend_wal_fsync_duration_seconds_sum", &[]) > 0.0);
    // Account, key, collection and the tokens: one record each, every record
    // in exactly one batch.
    assert_eq!(
        scrape1.value("tokend_wal_batch_records_sum", &[]),
        f64::from(3 + created)
    );
    assert_eq!(
        scrape1.value("tokend_wal_batch_records_bucket", &[("le", "+Inf")]),
        batches
    );
    assert_eq!(scrape1.value("tokend_wal_batch_bytes_count", &[]), batches);
    assert!(scrape1.value("tokend_wal_batch_bytes_sum", &[]) > 0.0);

    assert_eq!(
        scrape1.value("tokend_snapshot_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(scrape1.value("tokend_snapshot_last_bytes", &[]), 0.0);
    let snapshot = app.post("/api/admin/snapshot", ADMIN, &json!({})).await;
    snapshot.assert_status(200);
    let scrape2 = scrape(&app).await;
    assert_eq!(
        scrape2.value("tokend_snapshot_duration_seconds_count", &[]),
        1.0
    );
    assert!(scrape2.value("tokend_snapshot_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        scrape2.value("tokend_snapshot_last_bytes", &[]),
        snapshot.body["bytes"].as_f64().expect("bytes")
    );
    assert_eq!(
        scrape2.value("tokend_snapshot_last_tokens", &[]),
        f64::from(created)
    );
    assert_eq!(scrape2.value("tokend_snapshot_failures_total", &[]), 0.0);
}

/// The periodic schedule snapshots what changed, and writes nothing while
/// the server is idle (the same state would be written again and again).
#[actix_web::test]
async fn periodic_snapshots_follow_changes_and_stop_while_idle() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let app = TestApp::builder().snapshot_interval(INTERVAL).spawn().await;
    let tenant = app.tenant().await;
    app.create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    let taken = |s: &Scrape| s.value("tokend_snapshot_duration_seconds_count", &[]);
    snapshot_holding(&app, 1.0).await;
    // A snapshot that read the log's position just before the token was
    // created may still be followed by one more: let it pass.
    actix_web::rt::time::sleep(INTERVAL * 2 + INTERVAL / 2).await;
    let settled = taken(&scrape(&app).await);
    actix_web::rt::time::sleep(INTERVAL * 3 + INTERVAL / 2).await;
    assert_eq!(
        taken(&scrape(&app).await),
        settled,
        "no snapshot while nothing changes"
    );

    app.create_token_in(&tenant.key, &tenant.collection_id)
        .await;
    snapshot_holding(&app, 2.0).await;
    assert!(taken(&scrape(&app).await) > settled);
    assert_eq!(
        scrape(&app)
            .await
            .value("tokend_snapshot_failures_total", &[]),
        0.0
    );
}

/// Waits (10 s at most) until the newest snapshot holds `tokens` tokens.
async fn snapshot_holding(app: &TestApp, tokens: f64) {
    for _ in 0..100 {
        let now = scrape(app).await;
        if now.value("tokend_snapshot_last_tokens", &[]) == tokens {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no periodic snapshot of {tokens} tokens within 10 s");
}

#[actix_web::test]
async fn restore_duration_and_token_gauges_are_right_after_a_restart() {
    let app = crate::helpers::TestApp::builder().shards(2).spawn().await;
    let tenant = app.tenant().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_token_in(&tenant.key, &tenant.collection_id)
                .await,
        );
    }
    app.create_token(
        &tenant.key,
        &json!({"collectionId": tenant.collection_id, "expiresIn": 10}),
    )
    .await;
    app.redeem(&tenant.key, &ids[0], &json!({}))
        .await
        .assert_status(200);
    app.redeem(&tenant.key, &ids[1], &json!({}))
        .await
        .assert_status(200);
    app.delete_token(&tenant.key, &ids[2])
        .await
        .assert_status(204);
    app.advance_ms(11 * SECOND);
    app.run_timers().await;
    let before = scrape(&app).await;
    let counts = tokens(&before);
    assert_eq!(counts, [2.0, 2.0, 1.0, 1.0]);
    // This process restored an empty data dir.
    assert_eq!(before.value("tokend_restore_tokens", &[]), 0.0);

    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    // Another shard count: the tokens are routed anew and counted again.
    let app = crate::helpers::TestApp::builder()
        .shards(3)
        .data_dir(dir)
        .spawn()
        .await;
    let after = scrape(&app).await;
    assert_eq!(tokens(&after), counts);
    assert_eq!(after.value("tokend_restore_tokens", &[]), 6.0);
    assert_eq!(after.kind("tokend_restore_duration_seconds"), Some("gauge"));
    assert!(after.value("tokend_restore_duration_seconds", &[]) > 0.0);
    // A fresh registry: nothing from the previous process.
    assert_eq!(
        after.value("tokend_snapshot_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(requests(&after, REDEEM, "POST", "200"), 0.0);
    // And the gauges keep following changes after the restore.
    app.redeem(&tenant.key, &ids[3], &json!({}))
        .await
        .assert_status(200);
    assert_eq!(tokens(&scrape(&app).await), [1.0, 3.0, 1.0, 1.0]);
}

/// Held tokens by the gauge.
fn held(scrape: &Scrape) -> f64 {
    scrape.value("tokend_tokens", &[("status", "held")])
}

#[actix_web::test]
async fn held_tokens_have_a_gauge_that_follows_holds_and_survives_a_restart() {
    let app = crate::helpers::TestApp::builder().shards(2).spawn().await;
    assert_eq!(held(&scrape(&app).await), 0.0);
    let tenant = app.tenant().await;
    let mut ids = Vec::new();
    let mut holds = Vec::new();
    for ttl in [60, 60, 60, 600] {
        let id = app
            .create_token_in(&tenant.key, &tenant.collection_id)
            .await;
        let resp = app
            .post(
                &format!("/api/tokens/{id}/holds"),
                &tenant.key,
                &json!({"ttlSecs": ttl}),
            )
            .await;
        resp.assert_status(201);
        holds.push(resp.body["hold"]["id"].as_str().unwrap().to_owned());
        ids.push(id);
    }
    let scraped = scrape(&app).await;
    assert_eq!(held(&scraped), 4.0);
    assert_eq!(tokens(&scraped), [0.0; 4]);

    // A capture moves one to redeemed, a release one back to active.
    let end =
        |i: usize, action: &str| format!("/api/tokens/{}/holds/{}/{action}", ids[i], holds[i]);
    app.post(&end(0, "capture"), &tenant.key, &json!({}))
        .await
        .assert_status(200);
    app.post(&end(1, "release"), &tenant.key, &json!({}))
        .await
        .assert_status(200);
    let scraped = scrape(&app).await;
    assert_eq!(held(&scraped), 2.0);
    assert_eq!(tokens(&scraped), [1.0, 1.0, 0.0, 0.0]);
    // Requests are counted by route pattern: no token or hold id in a label.
    assert_eq!(
        requests(&scraped, "/api/tokens/{id}/holds", "POST", "201"),
        4.0
    );
    for action in ["capture", "release"] {
        let route = format!("/api/tokens/{{id}}/holds/{{holdId}}/{action}");
        assert_eq!(requests(&scraped, &route, "POST", "200"), 1.0, "{route}");
    }
    for (labels, _) in scraped.series(REQUESTS) {
        let route = &labels["route"];
        assert!(
            !ids.iter()
                .chain(&holds)
                .any(|id| route.contains(id.as_str())),
            "{route}"
        );
    }
    // A void moves the redeemed one back to active.
    app.post(
        &format!("/api/tokens/{}/redemption/void", ids[0]),
        &tenant.key,
        &json!({}),
    )
    .await
    .assert_status(200);
    let scraped = scrape(&app).await;
    assert_eq!(held(&scraped), 2.0);
    assert_eq!(tokens(&scraped), [2.0, 0.0, 0.0, 0.0]);

    // The 60 s hold lapses: the timers move it back to active.
    app.advance_ms(60 * SECOND);
    app.run_timers().await;
    let scraped = scrape(&app).await;
    assert_eq!(held(&scraped), 1.0);
    assert_eq!(tokens(&scraped), [3.0, 0.0, 0.0, 0.0]);

    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    let app = crate::helpers::TestApp::builder()
        .shards(3)
        .data_dir(dir)
        .spawn()
        .await;
    app.clock.set_ms(crate::helpers::T0 + 60 * SECOND);
    let scraped = scrape(&app).await;
    assert_eq!(held(&scraped), 1.0);
    assert_eq!(tokens(&scraped), [3.0, 0.0, 0.0, 0.0]);
}
