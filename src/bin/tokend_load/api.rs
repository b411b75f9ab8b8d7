//! Setup through the tokend API: account, API key, collections, tokens
//! (batch route), snapshot, readiness.

use super::error::{Context, LoadError, Result};
use super::http::Method;
use super::http::{Call, Conn, Reply, Target};
use super::tokens::token_body;
use bytes::Bytes;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Batches in flight at once to each server while creating tokens.
const BATCH_CONCURRENCY: usize = 2;
/// Time limit of one setup request.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);

/// An object with an id.
#[derive(Deserialize)]
struct WithId {
    /// Its id.
    id: String,
}

/// The answer of `POST /api/accounts/{id}/api-keys`.
#[derive(Deserialize)]
struct CreatedKey {
    /// The secret, shown only here.
    key: String,
}

/// The answer of `POST /api/tokens/batch`.
#[derive(Deserialize)]
struct Batch {
    /// The tokens, in request order.
    data: Vec<WithId>,
}

/// The answer of `POST /api/admin/snapshot`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// LSN the snapshot covers.
    pub lsn: u64,
    /// File name in the data dir.
    pub file: String,
    /// Tokens in it.
    pub tokens: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// A `*` key of a new account, and the account's collections.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// An API key with scope `*`.
    pub key: String,
    /// Collection ids.
    pub collections: Vec<String>,
    /// Whether the tokens created for it carry data (`--token-data`).
    pub token_data: bool,
}

/// Sends a setup request with a JSON body and expects `expected`.
async fn call(
    conn: &mut Conn,
    method: Method,
    path: &str,
    body: Option<String>,
    expected: u16,
) -> Result<Reply> {
    let reply = conn
        .send_within(
            Call {
                method,
                path,
                body: body.map(Bytes::from),
            },
            SETUP_TIMEOUT,
        )
        .await
        .context(|| format!("{method} {path}"))?;
    if reply.status != expected {
        // At most 500 characters of the body (cut on a character boundary).
        let text: String = reply.text().chars().take(500).collect();
        return Err(LoadError::new(format!(
            "{method} {path}: expected {expected}, got {}: {text}",
            reply.status
        )));
    }
    Ok(reply)
}

/// Parses a JSON answer.
fn parse<T: for<'de> Deserialize<'de>>(reply: &Reply, what: &str) -> Result<T> {
    serde_json::from_slice(&reply.body).context(|| format!("cannot read the answer of {what}"))
}

/// Creates an account, a `*` key and `collections` collections.
pub async fn create_tenant(
    target: &Target,
    admin_key: &str,
    collections: u32,
    token_data: bool,
) -> Result<Tenant> {
    let mut admin = Conn::new(target, Some(admin_key))?;
    let body = serde_json::json!({"name": "tokend-load", "liveness": "test"}).to_string();
    let reply = call(&mut admin, Method::Post, "/api/accounts", Some(body), 201).await?;
    let account_id = parse::<WithId>(&reply, "POST /api/accounts")?.id;
    let path = format!("/api/accounts/{account_id}/api-keys");
    let body = serde_json::json!({"name": "load", "scopes": ["*"]}).to_string();
    let reply = call(&mut admin, Method::Post, &path, Some(body), 201).await?;
    let key = parse::<CreatedKey>(&reply, &format!("POST {path}"))?.key;
    let mut conn = Conn::new(target, Some(&key))?;
    let mut ids = Vec::with_capacity(collections as usize);
    for i in 0..collections {
        let body = serde_json::json!({
            "name": format!("load-{i}"),
            "issuer": "tokend-load",
            "value": [{"currency": "NZD", "amount": "5.00"}],
        })
        .to_string();
        let reply = call(&mut conn, Method::Post, "/api/collections", Some(body), 201).await?;
        ids.push(parse::<WithId>(&reply, "POST /api/collections")?.id);
    }
    Ok(Tenant {
        key,
        collections: ids,
        token_data,
    })
}

/// Creates `n` tokens through `POST /api/tokens/batch` (chunks of at most
/// `batch_size`, two in flight), spread round-robin over the tenant's collections,
/// each with three 8-character metadata pairs. Returns their ids in order and
/// prints progress on stderr.
pub async fn create_tokens(
    target: &Target,
    tenant: &Tenant,
    n: u64,
    batch_size: u64,
) -> Result<Vec<String>> {
    create_tokens_on(std::slice::from_ref(target), tenant, n, batch_size).await
}

/// [`create_tokens`] through several servers (the nodes of a cluster): two
/// requests in flight to each.
pub async fn create_tokens_on(
    targets: &[Target],
    tenant: &Tenant,
    n: u64,
    batch_size: u64,
) -> Result<Vec<String>> {
    let started = Instant::now();
    let batch_size = batch_size.max(1);
    let chunks: Vec<(u64, u64)> = (0..n.div_ceil(batch_size))
        .map(|c| (c * batch_size, ((c + 1) * batch_size).min(n)))
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks = std::sync::Arc::new(chunks);
    let collections = std::sync::Arc::new(tenant.collections.clone());
    let token_data = tenant.token_data;
    let mut workers = Vec::new();
    for w in 0..BATCH_CONCURRENCY * targets.len() {
        let mut conn = Conn::new(&targets[w % targets.len()], Some(&tenant.key))?;
        let (next, chunks, collections) = (next.clone(), chunks.clone(), collections.clone());
        workers.push(tokio::spawn(async move {
            let mut done: Vec<(usize, Vec<String>)> = Vec::new();
            loop {
                let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(from, to)) = chunks.get(c) else {
                    break;
                };
                let mut body = String::with_capacity(((to - from) * 140) as usize + 16);
                body.push_str(r#"{"tokens":["#);
                for i in from..to {
                    if i > from {
                        body.push(',');
                    }
                    let collection = &collections[(i % collections.len() as u64) as usize];
                    token_body(&mut body, collection, i, token_data);
                }
                body.push_str("]}");
                let reply = call(
                    &mut conn,
                    Method::Post,
                    "/api/tokens/batch",
                    Some(body),
                    201,
                )
                .await?;
                let batch: Batch = parse(&reply, "POST /api/tokens/batch")?;
                if batch.data.len() as u64 != to - from {
                    return Err(LoadError::new(format!(
                        "POST /api/tokens/batch: asked for {} tokens, got {}",
                        to - from,
                        batch.data.len()
                    )));
                }
                if c % 10 == 9 {
                    let made = ((c as u64 + 1) * batch_size).min(n);
                    eprintln!(
                        "setup: {made}/{n} tokens ({:.0}/s)",
                        made as f64 / started.elapsed().as_secs_f64()
                    );
                }
                done.push((c, batch.data.into_iter().map(|t| t.id).collect()));
            }
            Ok::<_, LoadError>(done)
        }));
    }
    let mut parts = Vec::new();
    for worker in workers {
        parts.extend(
            worker
                .await
                .context(|| "a token creation task failed".to_owned())??,
        );
    }
    parts.sort_by_key(|(c, _)| *c);
    Ok(parts.into_iter().flat_map(|(_, ids)| ids).collect())
}

/// `POST /api/admin/snapshot`.
pub async fn snapshot(target: &Target, admin_key: &str) -> Result<SnapshotInfo> {
    let mut admin = Conn::new(target, Some(admin_key))?;
    let reply = call(&mut admin, Method::Post, "/api/admin/snapshot", None, 200).await?;
    parse(&reply, "POST /api/admin/snapshot")
}

/// Polls `GET /health/ready` until it answers 200, for at most `limit`.
pub async fn wait_ready(target: &Target, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let mut conn = Conn::new(target, None)?;
    loop {
        let call = Call {
            method: Method::Get,
            path: "/health/ready",
            body: None,
        };
        if let Ok(reply) = conn.send_within(call, Duration::from_secs(5)).await {
            if reply.status == 200 {
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            return Err(LoadError::new(format!(
                "{} did not become ready within {} s",
                target.url(),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
