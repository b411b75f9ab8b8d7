//! The request log of the real binary, in both formats, at `RUST_LOG=trace`:
//! one line per request with its id, route pattern, status, latency and
//! account — and no secret anywhere in the log: not the admin key, not an
//! API key, not a token's `data`, `encryption` or metadata values, not a
//! rejected body's contents.

use crate::process::{send_signal, tokend_command, wait_with_timeout, Log};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

/// How long the server may take to start or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// What one request of the session should log.
struct Expected {
    /// The id the request was sent with.
    request_id: String,
    /// The method.
    method: &'static str,
    /// The route pattern.
    route: &'static str,
    /// The status answered.
    status: u16,
    /// The account of the key, when one authenticated.
    account_id: Option<String>,
}

/// A session against one running server that records what each request
/// should log and every secret it used.
struct Session {
    client: reqwest::Client,
    base: String,
    expected: Vec<Expected>,
    secrets: Vec<String>,
    /// Tells apart the ids of the two runs.
    prefix: &'static str,
}

impl Session {
    /// Sends `method path` with `headers` and `body` (raw bytes, as JSON),
    /// under a request id of its own; asserts the status and notes what the
    /// log should say.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        route: &'static str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        status: u16,
        account_id: Option<&str>,
    ) -> Value {
        let request_id = format!("{}-{}", self.prefix, self.expected.len());
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-Request-Id", &request_id);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(
            response.headers().get("x-request-id").unwrap(),
            request_id.as_str()
        );
        let got = response.status().as_u16();
        let text = response.text().await.expect("a body");
        assert_eq!(got, status, "{method} {path}: {text}");
        self.expected.push(Expected {
            request_id,
            method: static_method(&method),
            route,
            status,
            account_id: account_id.map(str::to_owned),
        });
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A secret of the session, remembered to be looked for in the log.
    fn secret(&mut self, text: impl Into<String>) -> String {
        let text = text.into();
        self.secrets.push(text.clone());
        text
    }
}

fn static_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => panic!("unexpected method {method}"),
    }
}

fn json_bytes(value: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).expect("JSON"))
}

/// A realistic session: an account, keys, a collection, tokens with data,
/// encryption keys and metadata, reads, a redeem, a delete, and refusals
/// (401, 403, 400, 422, 404, 409).
async fn session(session: &mut Session, admin: &str) {
    let admin_header = [("X-Api-Key", admin)];
    let account = session
        .call(
            Method::POST,
            "/api/accounts",
            "/api/accounts",
            &admin_header,
            json_bytes(&json!({"name": "Log Cafe", "liveness": "test"})),
            201,
            None,
        )
        .await;
    let account_id = account["id"].as_str().unwrap().to_owned();
    let account = Some(account_id.as_str());
    let keys_path = format!("/api/accounts/{account_id}/api-keys");
    let keys_route = "/api/accounts/{accountId}/api-keys";
    let mut keys = Vec::new();
    for scopes in [json!(["*"]), json!(["token:read"])] {
        let created = session
            .call(
                Method::POST,
                &keys_path,
                keys_route,
                &admin_header,
                json_bytes(&json!({"name": format!("k{}", keys.len()), "scopes": scopes})),
                201,
                None,
            )
            .await;
        let key = created["key"].as_str().unwrap().to_owned();
        keys.push(session.secret(key));
    }
    let (key, reader) = (keys[0].clone(), keys[1].clone());
    let bearer = format!("Bearer {key}");
    let with_key = [("X-Api-Key", key.as_str())];
    let with_bearer = [("Authorization", bearer.as_str())];
    session
        .call(
            Method::GET,
            &keys_path,
            keys_route,
            &admin_header,
            None,
            200,
            None,
        )
        .await;
    let collection = session
        .call(
            Method::POST,
            "/api/collections",
            "/api/collections",
            &with_bearer,
            json_bytes(&json!({"name": "Gift", "merchants": ["m-1"]})),
            201,
            account,
        )
        .await;
    let collection_id = collection["id"].as_str().unwrap().to_owned();
    let data = session.secret("card-4111-1111-1111-1111-in-data");
    let meta = session.secret("meta-value-only-for-the-owner");
    let cek = session.secret("cek-wrapped-key-material-0001");
    let kek = session.secret("kek-key-encryption-key-0002");
    let token = session
        .call(
            Method::POST,
            "/api/tokens",
            "/api/tokens",
            &with_key,
            json_bytes(&json!({
                "collectionId": collection_id,
                "data": {"pan": data},
                "metadata": {"note": meta},
                "encryption": {"cek": {"key": cek, "alg": "AES"}, "kek": {"key": kek, "alg": "RSA"}},
            })),
            201,
            account,
        )
        .await;
    let token_id = token["id"].as_str().unwrap().to_owned();
    let batch_data = session.secret("batch-data-secret-in-a-batch");
    let batch_meta = session.secret("batch-meta-secret-in-a-batch");
    session
        .call(
            Method::POST,
            "/api/tokens/batch",
            "/api/tokens/batch",
            &with_key,
            json_bytes(&json!({"tokens": [
                {"collectionId": collection_id, "data": batch_data, "metadata": {"m": batch_meta}},
                {"collectionId": collection_id},
            ]})),
            201,
            account,
        )
        .await;
    let token_path = format!("/api/tokens/{token_id}");
    session
        .call(
            Method::GET,
            &token_path,
            "/api/tokens/{id}",
            &[("X-Api-Key", reader.as_str())],
            None,
            200,
            account,
        )
        .await;
    session
        .call(
            Method::GET,
            "/api/tokens?status=active",
            "/api/tokens",
            &with_key,
            None,
            200,
            account,
        )
        .await;
    let idempotency = session.secret("pos-till-7-sale-secret-88");
    let redeem_path = format!("/api/tokens/{token_id}/redeem");
    let redeem_route = "/api/tokens/{id}/redeem";
    session
        .call(
            Method::POST,
            &redeem_path,
            redeem_route,
            &with_key,
            json_bytes(&json!({"merchantId": "m-1", "idempotencyKey": idempotency})),
            200,
            account,
        )
        .await;
    session
        .call(
            Method::POST,
            &redeem_path,
            redeem_route,
            &with_key,
            json_bytes(&json!({"merchantId": "m-1"})),
            409,
            account,
        )
        .await;
    // Refusals. A wrong secret of a real key id; an unknown admin key.
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let wrong = session.secret(wrong);
    session
        .call(
            Method::GET,
            &token_path,
            "/api/tokens/{id}",
            &[("X-Api-Key", wrong.as_str())],
            None,
            401,
            None,
        )
        .await;
    let wrong_admin = session.secret("tkadmin_not-the-admin-key-secret");
    session
        .call(
            Method::POST,
            "/api/accounts",
            "/api/accounts",
            &[("Authorization", &format!("Bearer {wrong_admin}"))],
            json_bytes(&json!({"name": "x", "liveness": "test"})),
            401,
            None,
        )
        .await;
    let refused_data = session.secret("data-of-a-refused-create");
    session
        .call(
            Method::POST,
            "/api/tokens",
            "/api/tokens",
            &[("X-Api-Key", reader.as_str())],
            json_bytes(&json!({"collectionId": collection_id, "data": refused_data})),
            403,
            account,
        )
        .await;
    let long_meta = session.secret(format!("too-long-metadata-value-{}", "z".repeat(80)));
    let invalid_data = session.secret("data-beside-an-invalid-field");
    session
        .call(
            Method::POST,
            "/api/tokens",
            "/api/tokens",
            &with_key,
            json_bytes(&json!({
                "collectionId": collection_id,
                "data": invalid_data,
                "metadata": {"long": long_meta},
                "expiresAt": "not-a-date",
            })),
            422,
            account,
        )
        .await;
    let malformed = session.secret("malformed-json-secret");
    session
        .call(
            Method::POST,
            "/api/tokens",
            "/api/tokens",
            &with_key,
            Some(format!("{{\"data\": \"{malformed}\"").into_bytes()),
            400,
            account,
        )
        .await;
    session
        .call(
            Method::GET,
            "/api/tokens",
            "/api/tokens",
            &[
                ("X-Api-Key", key.as_str()),
                ("Authorization", &format!("Bearer {reader}")),
            ],
            None,
            400,
            None,
        )
        .await;
    session
        .call(
            Method::DELETE,
            &token_path,
            "/api/tokens/{id}",
            &with_key,
            None,
            204,
            account,
        )
        .await;
    session
        .call(
            Method::GET,
            "/no/such/route",
            "unmatched",
            &with_key,
            None,
            404,
            None,
        )
        .await;
    session
        .call(
            Method::GET,
            "/health/ready",
            "/health/ready",
            &[],
            None,
            200,
            None,
        )
        .await;
}

/// The request events of a log, by request id: the fields as text.
fn request_events(log: &str, json_lines: bool) -> HashMap<String, HashMap<String, String>> {
    let mut events = HashMap::new();
    for line in log.lines().filter(|l| l.contains("tokend::access")) {
        let fields: HashMap<String, String> = if json_lines {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert_eq!(value["target"], json!("tokend::access"), "{line}");
            assert_eq!(value["message"], json!("request"), "{line}");
            assert!(value["timestamp"].is_string() && value["level"].is_string());
            value
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect()
        } else {
            let (_, rest) = line.split_once("tokend::access: request ").expect(line);
            rest.split(' ')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect()
        };
        let id = fields.get("request_id").cloned().expect(line);
        assert!(
            events.insert(id.clone(), fields).is_none(),
            "two lines for request {id}"
        );
    }
    events
}

/// Runs the session against the binary with `--log-format format`, stops it,
/// and checks its log.
async fn run(format: &str, prefix: &'static str) {
    let dir = tempfile::tempdir().expect("a data dir");
    let admin = format!("tkadmin_log-test-admin-secret-{prefix}");
    let mut child = tokend_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--log-format", format])
        .env("TOKEND_ADMIN_KEY", &admin)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tokend starts");
    let log = Log::default();
    let drained = log.drain(child.stderr.take().expect("stderr"));
    let ready = log
        .wait_for_line("tokend ready", PROCESS_TIMEOUT)
        .unwrap_or_else(|| panic!("no ready line:\n{}", log.text()));
    let addr = if format == "json" {
        let value: Value = serde_json::from_str(&ready).expect("a JSON line");
        value["addr"].as_str().expect("addr").to_owned()
    } else {
        crate::process::field(&ready, "addr")
            .expect("addr")
            .to_owned()
    };
    let mut run = Session {
        client: crate::helpers::client(),
        base: format!("http://{addr}"),
        expected: Vec::new(),
        secrets: vec![admin.clone()],
        prefix,
    };
    session(&mut run, &admin).await;
    send_signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(&mut child, PROCESS_TIMEOUT).expect("tokend stops");
    assert!(status.success(), "tokend exits 0: {status}");
    drained.join().expect("stderr drained");
    let text = log.text();
    for secret in &run.secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the log holds the secret {secret:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "{format}: {} secrets absent from {} log lines ({} bytes)",
        run.secrets.len(),
        text.lines().count(),
        text.len()
    );
    let events = request_events(&text, format == "json");
    assert_eq!(
        events.len(),
        run.expected.len(),
        "one request line per request"
    );
    for expected in &run.expected {
        let fields = events
            .get(&expected.request_id)
            .unwrap_or_else(|| panic!("no line for {}", expected.request_id));
        let get = |name: &str| fields.get(name).map(String::as_str);
        assert_eq!(get("method"), Some(expected.method), "{fields:?}");
        assert_eq!(get("route"), Some(expected.route), "{fields:?}");
        assert_eq!(get("status"), Some(expected.status.to_string().as_str()));
        assert!(get("latency_us").is_some_and(|v| v.parse::<u64>().is_ok()));
        assert_eq!(
            get("account_id"),
            expected.account_id.as_deref(),
            "{fields:?}"
        );
    }
    if format == "json" {
        for line in text.lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("every line is JSON ({e}): {line}"));
        }
    }
}

#[actix_web::test]
async fn text_request_log_has_a_line_per_request_and_no_secret() {
    run("text", "text").await;
}

#[actix_web::test]
async fn json_request_log_has_a_line_per_request_and_no_secret() {
    run("json", "json").await;
}

#[test]
fn a_generated_admin_key_is_shown_once_as_a_json_line_in_json_mode() {
    let dir = tempfile::tempdir().expect("a data dir");
    let mut child = tokend_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tokend starts");
    let log = Log::default();
    let drained = log.drain(child.stderr.take().expect("stderr"));
    let ready = log
        .wait_for_line("tokend ready", PROCESS_TIMEOUT)
        .unwrap_or_else(|| panic!("no ready line:\n{}", log.text()));
    let ready: Value = serde_json::from_str(&ready).expect("a JSON line");
    let addr = ready["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("an address");
    // Answered: the server runs, its signal handlers too.
    let (status, _) = crate::net::http_get(addr, "/health/live").expect("an answer");
    assert_eq!(status, 200);
    send_signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(&mut child, PROCESS_TIMEOUT).expect("tokend stops");
    assert!(status.success(), "{status}: {}", log.text());
    drained.join().expect("stderr drained");
    let lines: Vec<Value> = log
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let shown: Vec<&Value> = lines
        .iter()
        .filter(|l| l["admin_key"].is_string())
        .collect();
    assert_eq!(shown.len(), 1, "shown once");
    assert!(shown[0]["admin_key"]
        .as_str()
        .unwrap()
        .starts_with("tkadmin_"));
    assert!(shown[0]["timestamp"].is_string() && shown[0]["level"] == json!("WARN"));
}
