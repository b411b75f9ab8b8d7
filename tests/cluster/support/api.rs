//! A small HTTP client for one node's API (`/work/shared/api-contract.md`
//! describes the routes): requests with a key, answers read whole as JSON.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Per-request timeout: every request of the suite is bounded in time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer: the status and the body as JSON (`Null` when empty, a JSON
/// string when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Reply {
    /// Asserts the status; returns the reply.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an error status and code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        let reply = self.expect(status);
        assert_eq!(reply.body["code"], json!(code), "body: {}", reply.body);
        reply
    }

    /// The body's `id`.
    #[track_caller]
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
            .to_owned()
    }
}

/// A client for one node, holding the admin key.
#[derive(Clone)]
pub struct Api {
    base: String,
    admin: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for the node at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str, admin_key: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            admin: admin_key.to_owned(),
            client,
        }
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a request with `X-Api-Key: key` (when given); `Err` on
    /// transport errors (a killed or stopped node, a timeout).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status: StatusCode = response.status();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    /// Sends a request that must be answered.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        self.try_call(method.clone(), path, key, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {}{path} was not answered: {e}", self.base))
    }

    /// `POST path` with `key`, sent again (same body, so the same
    /// idempotency key) while the answer is 503 or none comes, as a client
    /// of a cluster would, for up to a minute.
    pub async fn post_retrying(&self, key: &str, path: &str, body: &Value) -> Reply {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .try_call(Method::POST, path, Some(key), Some(body))
                .await
            {
                Ok(reply) if reply.status != 503 => return reply,
                other if std::time::Instant::now() > deadline => {
                    panic!("POST {}{path} still unavailable: {other:?}", self.base)
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// `POST path` with the admin key.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(&self.admin), Some(body))
            .await
    }

    /// `GET path` with the admin key.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.admin), None).await
    }

    /// `POST path` with `key`.
    pub async fn post(&self, key: &str, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// `POST path` with `key`; `Err` when the node does not answer.
    pub async fn try_post(
        &self,
        key: &str,
        path: &str,
        body: &Value,
    ) -> Result<Reply, reqwest::Error> {
        self.try_call(Method::POST, path, Some(key), Some(body))
            .await
    }

    /// `GET path` with `key`.
    pub async fn get(&self, key: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// `DELETE path` with `key`.
    pub async fn delete(&self, key: &str, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates an account (liveness `test`); returns its id.
    pub async fn create_account(&self, name: &str) -> String {
        self.admin_post("/api/accounts", &json!({"name": name, "liveness": "test"}))
            .await
            .expect(201)
            .id()
    }

    /// Creates an API key on the account; returns the secret key.
    pub async fn create_key(&self, account_id: &str, scopes: &[&str]) -> String {
        let reply = self
            .admin_post(
                &format!("/api/accounts/{account_id}/api-keys"),
                &json!({"name": "cluster-tests", "scopes": scopes}),
            )
            .await
            .expect(201);
        reply.body["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key in {}", reply.body))
            .to_owned()
    }

    /// A new account and a key with every scope on it; returns the key.
    pub async fn tenant_key(&self, name: &str) -> String {
        let account = self.create_account(name).await;
        self.create_key(&account, &["*"]).await
    }

    /// Creates a collection; returns its id.
    pub async fn create_collection(&self, key: &str, name: &str) -> String {
        self.post(key, "/api/collections", &json!({"name": name}))
            .await
            .expect(201)
            .id()
    }

    /// Creates a token in the collection; returns its id.
    pub async fn create_token(&self, key: &str, collection_id: &str) -> String {
        self.post(key, "/api/tokens", &json!({"collectionId": collection_id}))
            .await
            .expect(201)
            .id()
    }

    /// `GET /api/tokens/{id}`.
    pub async fn get_token(&self, key: &str, token_id: &str) -> Reply {
        self.get(key, &format!("/api/tokens/{token_id}")).await
    }

    /// `POST /api/tokens/{id}/redeem` with `{}`.
    pub async fn redeem(&self, key: &str, token_id: &str) -> Reply {
        self.post(key, &format!("/api/tokens/{token_id}/redeem"), &json!({}))
            .await
    }
}
