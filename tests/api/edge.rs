//! The connection edge, over raw TCP: errors raised below the application
//! (a garbage request line, a head or body not sent in time, a head over
//! the cap, a connection over a cap) answer in the API's error shape with an
//! `X-Request-Id`; slow clients cannot hold the server.
//!
//! Nothing here asserts on time: the timeouts are set short so the tests
//! end soon, and latencies are printed (`--nocapture`), not checked.

use crate::helpers::*;
use actix_web::rt::net::TcpStream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokend::api::edge::EdgeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any raw exchange may take before the test fails as hung (far
/// past every timeout the tests set).
const HUNG: Duration = Duration::from_secs(60);

/// Short timeouts, so that timing out takes little of the test's time.
fn short_limits() -> EdgeLimits {
    EdgeLimits {
        head_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(1_000),
        keep_alive: Duration::from_millis(500),
        connections_per_client_max: 1_000,
        ..EdgeLimits::default()
    }
}

/// The app's address as `host:port`.
fn address(app: &TestApp) -> String {
    app.url("").trim_start_matches("http://").to_owned()
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an error in the API's shape: status, JSON content type, the
    /// body's fields, and `X-Request-Id` equal to `requestId`.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)));
        assert_eq!(body["status"], json!(status), "{body}");
        assert_eq!(body["code"], json!(code), "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let id = body["requestId"].as_str().expect("a requestId");
        assert!(!id.is_empty());
        assert_eq!(self.header("x-request-id"), Some(id));
        assert!(body.get("validationErrors").is_none());
        body
    }
}

/// Parses the first response in `bytes`.
fn parse_response(bytes: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(bytes);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status in {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    RawResponse {
        status,
        headers,
        body: rest.as_bytes()[..length.min(rest.len())].to_vec(),
    }
}

/// Reads until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(HUNG, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    bytes
}

/// Sends `bytes` on a new connection and reads everything until the server
/// closes it.
async fn exchange(app: &TestApp, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address(app)).await.expect("connects");
    stream.write_all(bytes).await.expect("sends");
    read_to_close(&mut stream).await
}

#[actix_web::test]
async fn a_garbage_request_line_is_a_400_in_the_api_shape() {
    let app = spawn_app().await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let response = parse_response(&exchange(&app, garbage).await);
        response.assert_error(400, "BAD_REQUEST");
    }
    // The server still serves.
    app.get("/health/live", "").await.assert_status(200);
}

#[actix_web::test]
async fn a_head_over_16_kib_is_a_431_and_one_under_it_is_served() {
    let app = spawn_app().await;
    let filler = "x".repeat(17 << 10);
    let request = format!("GET /health/live HTTP/1.1\r\nHost: a\r\nX-Filler: {filler}\r\n\r\n");
    let response = parse_response(&exchange(&app, request.as_bytes()).await);
    let body = response.assert_error(431, "HEADERS_TOO_LARGE");
    assert!(body["message"].as_str().unwrap().contains("16384"));

    // The same 17 KiB split over many headers, and too many headers.
    let many: String = (0..170)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "y".repeat(90)))
        .collect();
    let request = format!("GET /health/live HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    parse_response(&exchange(&app, request.as_bytes()).await)
        .assert_error(431, "HEADERS_TOO_LARGE");

    // 15 KiB of headers is within the cap.
    let filler = "x".repeat(15 << 10);
    let request = format!(
        "GET /health/live HTTP/1.1\r\nHost: a\r\nX-Filler: {filler}\r\nConnection: close\r\n\r\n"
    );
    let response = parse_response(&exchange(&app, request.as_bytes()).await);
    assert_eq!(response.status, 200, "{response:?}");
}

#[actix_web::test]
async fn a_head_not_finished_in_time_is_a_408() {
    let app = TestApp::builder().edge(short_limits()).spawn().await;
    // Part of a head, then nothing.
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let response = parse_response(&read_to_close(&mut stream).await);
    response.assert_error(408, "REQUEST_TIMEOUT");
    // Nothing at all.
    let response = parse_response(&exchange(&app, b"").await);
    response.assert_error(408, "REQUEST_TIMEOUT");
}

#[actix_web::test]
async fn a_body_not_finished_in_time_is_a_408_and_the_connection_closes() {
    let app = TestApp::builder().edge(short_limits()).spawn().await;
    let tenant = app.tenant().await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "POST /api/tokens HTTP/1.1\r\nHost: a\r\nX-Api-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"collectionId\":",
        tenant.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let bytes = read_to_close(&mut stream).await;
    let response = parse_response(&bytes);
    response.assert_error(408, "REQUEST_TIMEOUT");
    assert_eq!(response.header("connection"), Some("close"));
    // Nothing was created.
    let listed = app.get("/api/tokens", &tenant.key).await;
    assert_eq!(listed.body["data"], json!([]));
}

#[actix_web::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = TestApp::builder().edge(short_limits()).spawn().await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The answer, then the close once the connection idles: read_to_close
    // returns only when the server closes it.
    let response = parse_response(&read_to_close(&mut stream).await);
    assert_eq!(response.status, 200);
    assert!(response.header("x-request-id").is_some());
}

#[actix_web::test]
async fn pipelined_and_chunked_requests_are_served_in_order() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let body = format!("{{\"collectionId\": \"{}\"}}", tenant.collection_id);
    let (first, second) = body.split_at(7);
    let request = format!(
        "POST /api/tokens HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\nX-Trailer: t\r\n\r\n\
         POST /api/tokens HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        first.len(),
        second.len(),
        body.len(),
        key = tenant.key,
    );
    let bytes = exchange(&app, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&bytes);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["201", "201", "200"], "{text}");
    let listed = app.get("/api/tokens", &tenant.key).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(2));
}

#[actix_web::test]
async fn a_client_over_its_connection_cap_is_refused_with_a_503() {
    let app = TestApp::builder()
        .edge(EdgeLimits {
            connections_per_client_max: 4,
            ..EdgeLimits::default()
        })
        .spawn()
        .await;
    // Four connections held open, each with a request answered (so each is
    // known to be admitted).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let refused =
        parse_response(&exchange(&app, b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n").await);
    refused.assert_error(503, "CONNECTION_LIMIT_REACHED");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // An HTTP client reads it as the answer to its request.
    app.get("/health/live", "")
        .await
        .assert_error(503, "CONNECTION_LIMIT_REACHED");

    // Closing one gives its place back (once the server has seen it close).
    drop(held.pop());
    let request = b"GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut attempts = 0;
    loop {
        let response = parse_response(&exchange(&app, request).await);
        if response.status == 200 {
            break;
        }
        response.assert_error(503, "CONNECTION_LIMIT_REACHED");
        attempts += 1;
        assert!(
            attempts < 1_000,
            "the closed connection's place never came back"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One stalled client: a valid key, a head, part of a body, then nothing.
/// Returns what the server sent before it closed the connection.
async fn stall(address: String, key: String, collection_id: String) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let body = format!("{{\"collectionId\": \"{collection_id}\"}}");
    let head = format!(
        "POST /api/tokens HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    stream.write_all(head.as_bytes()).await.expect("sends");
    read_to_close(&mut stream).await
}

/// Creates and redeems `count` tokens one request at a time; returns their
/// ids and each request's latency.
async fn redeem_some(app: &TestApp, tenant: &Tenant, count: usize) -> (Vec<String>, Vec<Duration>) {
    let mut ids = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let id = app
            .create_token_in(&tenant.key, &tenant.collection_id)
            .await;
        latencies.push(started.elapsed());
        let started = Instant::now();
        app.redeem(&tenant.key, &id, &json!({}))
            .await
            .assert_status(200);
        latencies.push(started.elapsed());
        ids.push(id);
    }
    (ids, latencies)
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

#[actix_web::test]
async fn slow_loris_clients_get_408s_while_normal_requests_are_served() {
    const STALLED: usize = 200;
    const NORMAL: usize = 100;
    let app = TestApp::builder()
        .edge(EdgeLimits {
            body_timeout: Duration::from_millis(2_000),
            connections_per_client_max: 1_000,
            ..EdgeLimits::default()
        })
        .spawn()
        .await;
    let tenant = app.tenant().await;
    let (mut redeemed, alone) = redeem_some(&app, &tenant, NORMAL).await;

    let stalled: Vec<_> = (0..STALLED)
        .map(|_| {
            actix_web::rt::spawn(stall(
                address(&app),
                tenant.key.clone(),
                tenant.collection_id.clone(),
            ))
        })
        .collect();
    let (ids, beside) = redeem_some(&app, &tenant, NORMAL).await;
    redeemed.extend(ids);
    println!("normal requests alone:            {}", summary(alone));
    println!(
        "normal requests beside {STALLED} stalled: {}",
        summary(beside)
    );

    for answer in stalled {
        let bytes = answer.await.expect("the stalled client ran");
        parse_response(&bytes).assert_error(408, "REQUEST_TIMEOUT");
    }
    // The stalled creates made nothing; every acknowledged redeem survives
    // a restart.
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean stop");
    let app = TestApp::builder().data_dir(dir).spawn().await;
    let listed = app.all_token_ids(&tenant.key, "").await;
    assert_eq!(listed.len(), redeemed.len());
    for id in &redeemed {
        assert_eq!(app.token(&tenant.key, id).await["status"], "redeemed");
    }
}

#[actix_web::test]
async fn a_connection_over_the_total_cap_is_refused_with_a_503() {
    let app = TestApp::builder()
        .edge(EdgeLimits {
            connections_max: 2,
            ..EdgeLimits::default()
        })
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let refused =
        parse_response(&exchange(&app, b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n").await);
    let body = refused.assert_error(503, "CONNECTION_LIMIT_REACHED");
    assert!(
        body["message"].as_str().unwrap().contains("server"),
        "{body}"
    );
}
