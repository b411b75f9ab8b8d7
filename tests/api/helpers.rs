//! Starts the application on a free port with a manual clock and offers a
//! client for its HTTP API. Every response that passes through [`TestApp`]
//! is checked for an `X-Request-Id` header that no earlier response of the
//! same app carried.

use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokend::admin_key::AdminKey;
use tokend::app::{AppConfig, Application, StartError};
use tokend::clock::ManualClock;
use tokend::engine::{Engine, EngineConfig};
use tokend::storage::{FsStorage, Storage};
use tokend::store::StoreConfig;
use tokend::wal::WalOptions;

/// The admin key every test app is started with.
pub const ADMIN: &str = "integration-tests-admin-key";
/// The clock's start: 2026-01-17T18:00:00.000Z.
pub const T0: i64 = 1_768_672_800_000;
/// `T0` as the API renders it.
pub const T0_TEXT: &str = "2026-01-17T18:00:00.000Z";
/// One second, in the clock's unit.
pub const SECOND: i64 = 1_000;
/// One day, in the clock's unit.
pub const DAY: i64 = 24 * 3600 * SECOND;
/// The tombstone retention apps start with unless told otherwise (30 days).
pub const RETENTION_DEFAULT_MS: i64 = 30 * DAY;

/// How a test app is shaped.
pub struct TestAppBuilder {
    shards: usize,
    retention_ms: i64,
    data_dir: Option<Arc<tempfile::TempDir>>,
    storage: Option<Arc<dyn Storage>>,
    wal: WalOptions,
}

impl TestAppBuilder {
    /// Number of shard actors.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// How long tombstones stay readable.
    pub fn retention_ms(mut self, retention_ms: i64) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Serves from this data dir (e.g. the one of a stopped app).
    pub fn data_dir(mut self, dir: Arc<tempfile::TempDir>) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Does file I/O through `storage` (fault injection).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// WAL options (limits); fsync stays `always` unless changed here.
    pub fn wal(mut self, wal: WalOptions) -> Self {
        self.wal = wal;
        self
    }

    /// Builds the application and serves it in the background.
    pub async fn spawn(self) -> TestApp {
        match self.try_spawn().await {
            Ok(app) => app,
            Err(e) => panic!("the application builds: {e}"),
        }
    }

    /// Builds the application and serves it in the background, or says why
    /// it does not start.
    pub async fn try_spawn(self) -> Result<TestApp, StartError> {
        let clock = Arc::new(ManualClock::new(T0));
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("a temporary data dir")));
        let application = Application::build(AppConfig {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            engine: EngineConfig {
                shards: self.shards,
                tombstone_retention_ms: self.retention_ms,
                // Only explicit `run_timers()` calls run the timers.
                timer_period: Duration::from_secs(3600),
                store: StoreConfig {
                    data_dir: data_dir.path().to_path_buf(),
                    wal: self.wal,
                    storage: self.storage.unwrap_or_else(|| Arc::new(FsStorage)),
                },
            },
            admin_key: AdminKey::from_key(ADMIN),
            clock: clock.clone(),
            http_workers: 1,
            // Snapshots only when a test asks for one.
            snapshot_interval: Duration::from_secs(24 * 3600),
            snapshot_wal_bytes: u64::MAX,
        })?;
        let address = format!("http://{}", application.addr());
        let engine = application.engine().clone();
        let handle = application.handle();
        let stopped = actix_web::rt::spawn(application.run_until_stopped());
        Ok(TestApp {
            address,
            client: client(),
            clock,
            engine,
            data_dir,
            handle,
            stopped: Mutex::new(Some(stopped)),
            request_ids: Mutex::new(HashSet::new()),
            names: AtomicUsize::new(0),
        })
    }
}

/// An application with the default shape: three shards (an odd split) and a
/// 30-day tombstone retention.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// A client for the test server.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// A running application and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The client requests go through.
    pub client: reqwest::Client,
    /// The engine clock: moves only when a test moves it.
    pub clock: Arc<ManualClock>,
    engine: Engine,
    /// The data dir (removed when the last holder drops it).
    pub data_dir: Arc<tempfile::TempDir>,
    handle: actix_web::dev::ServerHandle,
    stopped: Mutex<Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>>,
    request_ids: Mutex<HashSet<String>>,
    names: AtomicUsize,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The HTTP server stops with the test's runtime; the shard threads
        // are stopped here so no test leaves threads behind.
        self.engine.stop();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

/// An account with a key granting every scope and one collection.
pub struct Tenant {
    /// The account's id.
    pub account_id: String,
    /// The account's liveness.
    pub liveness: String,
    /// A key with the `*` scope.
    pub key: String,
    /// That key's name.
    pub key_name: String,
    /// A collection without rules or branding.
    pub collection_id: String,
}

impl TestApp {
    /// A builder for an app of another shape.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            shards: 3,
            retention_ms: RETENTION_DEFAULT_MS,
            data_dir: None,
            storage: None,
            // fsync `always`, as in production.
            wal: WalOptions::default(),
        }
    }

    /// The engine, to run timers.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops gracefully as on SIGTERM (finish requests, flush the log, final
    /// snapshot); returns how the shutdown went and the data dir.
    pub async fn stop(self) -> (std::io::Result<()>, Arc<tempfile::TempDir>) {
        self.handle.stop(true).await;
        let stopped = self.stopped.lock().take();
        let result = match stopped {
            Some(task) => task.await.expect("the server task ends"),
            None => Ok(()),
        };
        (result, Arc::clone(&self.data_dir))
    }

    /// Runs every shard's expiry and purge timers now.
    pub async fn run_timers(&self) {
        self.engine().run_timers().await.expect("timers run");
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.clock.advance_ms(ms);
    }

    /// A name no other call on this app returned.
    pub fn unique_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.names.fetch_add(1, Ordering::Relaxed))
    }

    /// A request to `path` (absolute path on the server).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    /// Sends a request and reads the response, checking its `X-Request-Id`.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body is read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let resp = Resp {
            status,
            headers,
            body,
        };
        self.check_request_id(&resp);
        resp
    }

    fn check_request_id(&self, resp: &Resp) {
        let id = resp
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id on {resp:?}"))
            .to_owned();
        assert!(!id.is_empty(), "empty X-Request-Id");
        assert!(
            self.request_ids.lock().insert(id.clone()),
            "X-Request-Id {id} was already used by an earlier response"
        );
    }

    /// `method path` with `key` (none when `None`) and a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut request = self.request(method, path);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET path` with `key`.
    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// `POST path` with `key` and a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// `DELETE path` with `key`.
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// `HEAD path` with `key`.
    pub async fn head(&self, path: &str, key: &str) -> Resp {
        self.call(Method::HEAD, path, Some(key), None).await
    }

    /// Creates an account with the admin key; returns its JSON.
    pub async fn create_account(&self, liveness: &str) -> Value {
        let name = self.unique_name("account");
        let resp = self
            .post(
                "/api/accounts",
                ADMIN,
                &json!({"name": name, "liveness": liveness}),
            )
            .await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates an API key with the admin key; returns its JSON (with `key`).
    pub async fn create_key_named(&self, account_id: &str, name: &str, scopes: &[&str]) -> Value {
        let resp = self
            .post(
                &format!("/api/accounts/{account_id}/api-keys"),
                ADMIN,
                &json!({"name": name, "scopes": scopes}),
            )
            .await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates an API key; returns the key string.
    pub async fn create_key(&self, account_id: &str, scopes: &[&str]) -> String {
        let name = self.unique_name("key");
        let key = self.create_key_named(account_id, &name, scopes).await;
        key["key"].as_str().expect("the key string").to_owned()
    }

    /// Creates a collection; asserts 201 and returns it.
    pub async fn create_collection(&self, key: &str, body: &Value) -> Value {
        let resp = self.post("/api/collections", key, body).await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates a token; asserts 201 and returns it.
    pub async fn create_token(&self, key: &str, body: &Value) -> Value {
        let resp = self.post("/api/tokens", key, body).await;
        resp.assert_status(201);
        resp.body
    }

    /// Creates a token in `collection_id` with nothing else set; returns its id.
    pub async fn create_token_in(&self, key: &str, collection_id: &str) -> String {
        let token = self
            .create_token(key, &json!({"collectionId": collection_id}))
            .await;
        id_of(&token)
    }

    /// Creates tokens in one batch; asserts 201 and returns them.
    pub async fn create_batch(&self, key: &str, tokens: Vec<Value>) -> Vec<Value> {
        let resp = self
            .post("/api/tokens/batch", key, &json!({ "tokens": tokens }))
            .await;
        resp.assert_status(201);
        resp.body["data"].as_array().expect("data").clone()
    }

    /// `POST /api/tokens/{id}/redeem`.
    pub async fn redeem(&self, key: &str, id: &str, body: &Value) -> Resp {
        self.post(&format!("/api/tokens/{id}/redeem"), key, body)
            .await
    }

    /// `GET /api/tokens/{id}`.
    pub async fn get_token(&self, key: &str, id: &str) -> Resp {
        self.get(&format!("/api/tokens/{id}"), key).await
    }

    /// `GET /api/tokens/{id}`, asserting 200; returns the token.
    pub async fn token(&self, key: &str, id: &str) -> Value {
        let resp = self.get_token(key, id).await;
        resp.assert_status(200);
        resp.body
    }

    /// `HEAD /api/tokens/{id}`.
    pub async fn head_token(&self, key: &str, id: &str) -> Resp {
        self.head(&format!("/api/tokens/{id}"), key).await
    }

    /// `DELETE /api/tokens/{id}`.
    pub async fn delete_token(&self, key: &str, id: &str) -> Resp {
        self.delete(&format!("/api/tokens/{id}"), key).await
    }

    /// `GET /api/tokens?{query}`.
    pub async fn list_tokens(&self, key: &str, query: &str) -> Resp {
        self.get(&format!("/api/tokens?{query}"), key).await
    }

    /// The ids of every token `key` lists with `query`, walking all pages.
    pub async fn all_token_ids(&self, key: &str, query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit=1000&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let resp = self.list_tokens(key, &q).await;
            resp.assert_status(200);
            ids.extend(resp.body["data"].as_array().unwrap().iter().map(id_of));
            match resp.body["pagination"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
    }

    /// An account of `liveness` with a `*` key and a plain collection.
    pub async fn tenant_of(&self, liveness: &str) -> Tenant {
        let account = self.create_account(liveness).await;
        let account_id = account["id"].as_str().unwrap().to_owned();
        let key_name = self.unique_name("all-scopes");
        let key = self.create_key_named(&account_id, &key_name, &["*"]).await;
        let key = key["key"].as_str().unwrap().to_owned();
        let collection = self
            .create_collection(&key, &json!({"name": "plain"}))
            .await;
        Tenant {
            account_id,
            liveness: liveness.to_owned(),
            key,
            key_name,
            collection_id: id_of(&collection),
        }
    }

    /// A `test` tenant.
    pub async fn tenant(&self) -> Tenant {
        self.tenant_of("test").await
    }
}

/// The `id` of an object.
pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// A well-formed id that no object has.
pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// `T0 + ms` as the API renders it.
pub fn at(ms_after_t0: i64) -> String {
    tokend::timestamp::format(T0 + ms_after_t0)
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an error response in the API's format with `status` and
    /// `code`: every field present, `requestId` equal to the header, and
    /// `validationErrors` exactly on 422 `VALIDATION_FAILED`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        let body = &self.body;
        assert_eq!(body["status"], json!(status), "body: {body}");
        assert_eq!(body["code"], json!(code), "body: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {body}"
        );
        let request_id = body["requestId"].as_str().expect("requestId");
        assert_eq!(Some(request_id), self.header("x-request-id"));
        let has_errors = body.get("validationErrors").is_some();
        assert_eq!(
            has_errors,
            code == "VALIDATION_FAILED",
            "validationErrors only on 422: {body}"
        );
        if has_errors {
            let errors = body["validationErrors"].as_array().expect("an array");
            assert!(!errors.is_empty(), "no validation errors: {body}");
            for error in errors {
                assert!(error["path"].as_str().is_some_and(|p| p.starts_with('$')));
                assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
        self
    }

    /// Asserts a 422 `VALIDATION_FAILED` whose entries name exactly `paths`
    /// (in any order, one entry each).
    #[track_caller]
    pub fn assert_invalid(&self, paths: &[&str]) -> &Self {
        self.assert_error(422, "VALIDATION_FAILED");
        let mut got = self.validation_paths();
        got.sort();
        let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "body: {}", self.body);
        self
    }

    /// The `path` of every validation error.
    pub fn validation_paths(&self) -> Vec<String> {
        self.body["validationErrors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The fields every token has; `redemption` and `deletedAt` are added
/// once set.
pub const TOKEN_FIELDS: [&str; 21] = [
    "id",
    "accountId",
    "category",
    "collectionId",
    "type",
    "status",
    "liveness",
    "createdAt",
    "createdBy",
    "activeFrom",
    "expiresAt",
    "description",
    "data",
    "metadata",
    "encryption",
    "children",
    "issuer",
    "issuerImg",
    "img",
    "issuerWebsite",
    "value",
];

/// Asserts `token` has exactly the token fields plus `extra`.
#[track_caller]
pub fn assert_token_fields(token: &Value, extra: &[&str]) {
    let mut got: Vec<&str> = token
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {token}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = TOKEN_FIELDS.iter().chain(extra).copied().collect();
    want.sort_unstable();
    assert_eq!(got, want, "token: {token}");
}
