//! Joining a cluster's NATS: connect, check that the servers and the stream
//! can keep an acknowledged write (or that the operator said otherwise for
//! development), create what is missing, and check the cluster's shard
//! count.

use super::names::Names;
use super::{ClusterConfig, ClusterError};
use async_nats::jetstream::{self, kv, stream};
use async_nats::ServerAddr;
use std::time::Duration;

/// The oldest nats-server tokend runs on: older servers let several writers
/// win a conditional append (nats-server issue 4320, seen up to 2.9.x).
pub const SERVER_VERSION_MIN: (u64, u64) = (2, 15);
/// Replicas a stream needs so that losing one server loses nothing.
pub const REPLICAS_SAFE: usize = 3;
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request to NATS may take before it is treated as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the connection to NATS is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// How long setup retries what NATS refuses (leaders being elected).
const SETUP_RETRY_MAX: Duration = Duration::from_secs(30);
/// Messages of one subject are de-duplicated by id within this window.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The handles a node uses.
#[derive(Clone)]
pub struct Jet {
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// The stream of every log.
    pub stream: stream::Stream,
    /// Shard → owner.
    pub owners: kv::Store,
    /// Live nodes.
    pub nodes: kv::Store,
    /// The cluster's names.
    pub names: Names,
}

/// Connects and checks; creates the stream and buckets on first use.
pub async fn connect(config: &ClusterConfig) -> Result<Jet, ClusterError> {
    let names = Names::new(&config.name).map_err(ClusterError::Config)?;
    let addrs = config
        .urls
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| ClusterError::Config(format!("NATS url {url:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(ClusterError::Config("--cluster names no NATS url".into()));
    }
    let client = async_nats::ConnectOptions::new()
        .name(format!("tokend {} {}", config.name, config.node_id))
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // A connection that silently died (a partition drops packets, it
        // sends no reset) is noticed after two unanswered pings, not after
        // the default minutes.
        .ping_interval(PING_INTERVAL)
        .retry_on_initial_connect()
        .connect(addrs)
        .await
        .map_err(|e| ClusterError::Nats(format!("cannot connect to {:?}: {e}", config.urls)))?;
    // The server info arrives with the connection.
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    while client.server_info().version.is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err(ClusterError::Nats("no server info after connecting".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_version(&client.server_info().version, config.allow_unsafe)?;
    let js = jetstream::new(client.clone());
    // Nodes starting together race to create the stream and buckets, and a
    // new stream answers "no responders" until its leader is elected: retry
    // what NATS refuses for a while, but never a refusal of ours.
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match ensure_all(&client, &js, &names, config).await {
            Ok(jet) => return Ok(jet),
            Err(ClusterError::Nats(cause)) if started.elapsed() < SETUP_RETRY_MAX => {
                tracing::info!(%cause, "cluster setup not possible yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn ensure_all(
    client: &async_nats::Client,
    js: &jetstream::Context,
    names: &Names,
    config: &ClusterConfig,
) -> Result<Jet, ClusterError> {
    let stream = ensure_stream(js, names, config).await?;
    let meta = ensure_bucket(js, names.meta_bucket(), config).await?;
    check_shard_count(&meta, config.shards).await?;
    let owners = ensure_bucket(js, names.owners_bucket(), config).await?;
    let nodes = ensure_bucket(js, names.nodes_bucket(), config).await?;
    Ok(Jet {
        client: client.clone(),
        js: js.clone(),
        stream,
        owners,
        nodes,
        names: names.clone(),
    })
}

/// Refuses servers older than [`SERVER_VERSION_MIN`].
pub fn check_version(version: &str, allow_unsafe: bool) -> Result<(), ClusterError> {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    let major = parts.next().flatten();
    let minor = parts.next().flatten();
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= SERVER_VERSION_MIN => Ok(()),
        _ if allow_unsafe => {
            tracing::warn!(version, "nats-server older than 2.15: conditional appends may let two writers win (--cluster-allow-unsafe)");
            Ok(())
        }
        _ => Err(ClusterError::Unsafe(format!(
            "nats-server {version} is older than {}.{}: its conditional appends can let two writers win; run nats-server 2.15 or newer",
            SERVER_VERSION_MIN.0, SERVER_VERSION_MIN.1
        ))),
    }
}

fn check_replicas(what: &str, replicas: usize, config: &ClusterConfig) -> Result<(), ClusterError> {
    if replicas >= REPLICAS_SAFE || config.allow_unsafe {
        return Ok(());
    }
    Err(ClusterError::Unsafe(format!(
        "{what} has {replicas} replica(s): losing one NATS server could lose acknowledged changes; \
         it needs {REPLICAS_SAFE} (or --cluster-allow-unsafe for development)"
    )))
}

async fn ensure_stream(
    js: &jetstream::Context,
    names: &Names,
    config: &ClusterConfig,
) -> Result<stream::Stream, ClusterError> {
    check_replicas("--cluster-replicas", config.replicas, config)?;
    let mut stream = match js.get_stream(names.stream()).await {
        Ok(stream) => stream,
        Err(_) => js
            .create_stream(stream::Config {
                name: names.stream(),
                subjects: vec![names.stream_subjects()],
                num_replicas: config.replicas,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                description: Some("tokend: every shard's log and the catalog's".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                ClusterError::Nats(format!("cannot create stream {}: {e}", names.stream()))
            })?,
    };
    let info = stream
        .info()
        .await
        .map_err(|e| ClusterError::Nats(format!("stream {}: {e}", names.stream())))?;
    let cfg = &info.config;
    check_replicas(
        &format!("stream {}", names.stream()),
        cfg.num_replicas,
        config,
    )?;
    if cfg.storage != stream::StorageType::File && !config.allow_unsafe {
        return Err(ClusterError::Unsafe(format!(
            "stream {} keeps messages in memory: a restart of the NATS servers would lose them",
            names.stream()
        )));
    }
    Ok(stream)
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: String,
    config: &ClusterConfig,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.clone(),
        history: 1,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::Nats(format!("cannot create bucket {bucket}: {e}")))
}

/// The shard count is fixed when the cluster is created: a token's shard is
/// its id modulo the count, so every node must agree on it.
async fn check_shard_count(meta: &kv::Store, shards: u16) -> Result<(), ClusterError> {
    const KEY: &str = "shards";
    match meta.create(KEY, shards.to_string().into()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let stored = meta
                .get(KEY)
                .await
                .map_err(|e| ClusterError::Nats(format!("cluster settings: {e}")))?
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u16>().ok());
            match stored {
                Some(stored) if stored == shards => Ok(()),
                Some(stored) => Err(ClusterError::Config(format!(
                    "this cluster was created with --cluster-shards {stored}; this node was started with {shards}"
                ))),
                None => Err(ClusterError::Nats(
                    "the cluster's shard count is unreadable".into(),
                )),
            }
        }
        Err(e) => Err(ClusterError::Nats(format!("cluster settings: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_15_are_refused_unless_allowed() {
        assert!(check_version("2.15.1", false).is_ok());
        assert!(check_version("2.16.0-beta.1", false).is_ok());
        assert!(check_version("3.0.0", false).is_ok());
        let refused = check_version("2.9.10", false).unwrap_err().to_string();
        assert!(refused.contains("2.9.10"), "{refused}");
        assert!(check_version("garbage", false).is_err());
        assert!(check_version("2.9.10", true).is_ok());
    }
}
