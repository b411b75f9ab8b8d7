//! A small HTTP client for the server's API.

use crate::server::{Server, ADMIN_KEY};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Per-request timeout: every request of these tests is bounded in time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client bound to one server's address.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
    admin: String,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the response is an idempotent replay.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts an error status and code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        let resp = self.expect(status);
        assert_eq!(resp.body["code"], json!(code), "body: {}", resp.body);
        resp
    }
}

/// A fresh client (no connection reused across servers).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a client")
}

impl Api {
    /// A client for `server`, with the default admin key.
    pub fn new(server: &Server) -> Self {
        Self::with_admin(server, ADMIN_KEY)
    }

    /// A client for `server` that uses `admin` as the admin key.
    pub fn with_admin(server: &Server, admin: &str) -> Self {
        Self {
            base: server.url(),
            client: client(),
            admin: admin.to_owned(),
        }
    }

    /// The admin key in use.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// Sends a request; `Err` on transport errors (a killed server).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
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
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
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
        Ok(Resp {
            status,
            headers,
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
    ) -> Resp {
        self.try_call(method.clone(), path, key, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} was not answered: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates an account; returns it.
    pub async fn create_account(&self, name: &str) -> Value {
        self.post(
            "/api/accounts",
            &self.admin.clone(),
            &json!({"name": name, "liveness": "test"}),
        )
        .await
        .expect(201)
        .body
    }

    /// Creates an API key; returns it (with the secret `key`).
    pub async fn create_key(&self, account_id: &str, name: &str, scopes: &[&str]) -> Value {
        self.post(
            &format!("/api/accounts/{account_id}/api-keys"),
            &self.admin.clone(),
            &json!({"name": name, "scopes": scopes}),
        )
        .await
        .expect(201)
        .body
    }

    /// The account's keys as the admin lists them.
    pub async fn list_keys(&self, account_id: &str) -> Resp {
        self.get(
            &format!("/api/accounts/{account_id}/api-keys"),
            &self.admin.clone(),
        )
        .await
    }

    /// `POST /api/admin/snapshot`, asserting 200.
    pub async fn snapshot(&self) -> Value {
        self.post("/api/admin/snapshot", &self.admin.clone(), &json!({}))
            .await
            .expect(200)
            .body
    }

    /// `GET /api/tokens/{id}`.
    pub async fn get_token(&self, key: &str, id: &str) -> Resp {
        self.get(&format!("/api/tokens/{id}"), key).await
    }

    /// `POST /api/tokens/{id}/redeem`.
    pub async fn redeem(&self, key: &str, id: &str, body: &Value) -> Resp {
        self.post(&format!("/api/tokens/{id}/redeem"), key, body)
            .await
    }

    /// `DELETE /api/tokens/{id}`.
    pub async fn delete_token(&self, key: &str, id: &str) -> Resp {
        self.delete(&format!("/api/tokens/{id}"), key).await
    }

    /// Every token the key's account has, walking all pages (bounded).
    pub async fn all_tokens(&self, key: &str) -> Vec<Value> {
        let mut tokens = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = "/api/tokens?limit=1000".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let resp = self.get(&path, key).await.expect(200);
            tokens.extend(resp.body["data"].as_array().expect("data").iter().cloned());
            match resp.body["pagination"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return tokens,
            }
        }
        panic!("more than 1000 pages of tokens");
    }
}

/// The `id` of an object.
pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}
