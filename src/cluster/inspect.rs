//! `tokend inspect --cluster …`: what a cluster holds, read without
//! changing anything: the stream and its subjects, the shard map, the live
//! nodes, the snapshot stamps.

use super::catalog_log::last_subject_sequence;
use super::names::Names;
use super::ownership::OwnerValue;
use super::replicated_log::Stamp;
use super::setup::{Jet, REQUEST_TIMEOUT};
use super::snapshots::parse_name;
use async_nats::jetstream;
use async_nats::ServerAddr;
use futures_util::TryStreamExt;
use std::collections::BTreeMap;
use std::io::Write;

/// Prints the cluster `name` on the NATS servers `urls` to `out`.
pub async fn inspect(urls: &[String], name: &str, out: &mut dyn Write) -> Result<(), String> {
    let names = Names::new(name)?;
    let addrs = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| format!("NATS url {u:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .name("tokend inspect")
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(addrs)
        .await
        .map_err(|e| format!("cannot connect to {urls:?}: {e}"))?;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(names.stream()).await.map_err(|e| {
        format!(
            "no stream {} (is the cluster name right?): {e}",
            names.stream()
        )
    })?;
    let owners = js
        .get_key_value(names.owners_bucket())
        .await
        .map_err(|e| format!("bucket {}: {e}", names.owners_bucket()))?;
    let nodes = js
        .get_key_value(names.nodes_bucket())
        .await
        .map_err(|e| format!("bucket {}: {e}", names.nodes_bucket()))?;
    let meta = js
        .get_key_value(names.meta_bucket())
        .await
        .map_err(|e| format!("bucket {}: {e}", names.meta_bucket()))?;
    let shards: usize = meta
        .get("shards")
        .await
        .map_err(|e| format!("cluster settings: {e}"))?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .ok_or("the cluster's shard count is unreadable")?;
    let info = stream.info().await.map_err(|e| e.to_string())?.clone();
    let w = |e: std::io::Error| e.to_string();
    writeln!(
        out,
        "cluster {name}: {shards} shards, NATS {}",
        client.server_info().version
    )
    .map_err(w)?;
    writeln!(
        out,
        "stream {}: {} messages, {} bytes, sequences {}..={}, {} replicas, {:?} storage",
        info.config.name,
        info.state.messages,
        info.state.bytes,
        info.state.first_sequence,
        info.state.last_sequence,
        info.config.num_replicas,
        info.config.storage,
    )
    .map_err(w)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut subjects = stream
        .info_with_subjects(names.stream_subjects())
        .await
        .map_err(|e| e.to_string())?;
    while let Some((subject, count)) = subjects.try_next().await.map_err(|e| e.to_string())? {
        counts.insert(subject, count as u64);
    }
    let jet = Jet {
        client: client.clone(),
        js: js.clone(),
        stream: stream.clone(),
        owners: owners.clone(),
        nodes: nodes.clone(),
        names: names.clone(),
    };
    let catalog = names.catalog_subject();
    writeln!(
        out,
        "catalog: {} messages, last sequence {}",
        counts.get(&catalog).copied().unwrap_or(0),
        last_subject_sequence(&jet, &catalog).await?
    )
    .map_err(w)?;
    let mut live = Vec::new();
    let mut keys = nodes.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.try_next().await.map_err(|e| e.to_string())? {
        live.push(key);
    }
    live.sort();
    writeln!(out, "nodes (last heartbeat present): {}", live.join(", ")).map_err(w)?;
    // Snapshot stamps per shard: `sequence+records` of the message each
    // covers up to, oldest first.
    let mut stamps: BTreeMap<usize, Vec<Stamp>> = BTreeMap::new();
    if let Ok(store) = js.get_object_store(names.snapshots_bucket()).await {
        let mut list = store.list().await.map_err(|e| e.to_string())?;
        while let Some(info) = list.try_next().await.map_err(|e| e.to_string())? {
            if let Some((shard, stamp)) = parse_name(&info.name).filter(|_| !info.deleted) {
                stamps.entry(shard).or_default().push(stamp);
            }
        }
    }
    writeln!(
        out,
        "shard  owner            epoch  messages  last sequence  snapshots (sequence+records)"
    )
    .map_err(w)?;
    for shard in 0..shards {
        let entry = owners
            .entry(Names::owner_key(shard))
            .await
            .map_err(|e| e.to_string())?;
        let owner = entry.and_then(|e| serde_json::from_slice::<OwnerValue>(&e.value).ok());
        let (node, epoch) = match &owner {
            Some(v) if v.node.is_empty() => ("(released)".to_owned(), v.epoch),
            Some(v) => (v.node.clone(), v.epoch),
            None => ("(never claimed)".to_owned(), 0),
        };
        let subject = names.shard_subject(shard);
        let mut snapshots = stamps.remove(&shard).unwrap_or_default();
        snapshots.sort();
        let snapshots: Vec<String> = snapshots
            .iter()
            .map(|s| format!("{}+{}", s.sequence, s.skip))
            .collect();
        writeln!(
            out,
            "{shard:>5}  {node:<16} {epoch:>5}  {:>8}  {:>13}  {}",
            counts.get(&subject).copied().unwrap_or(0),
            last_subject_sequence(&jet, &subject).await?,
            if snapshots.is_empty() {
                "none".to_owned()
            } else {
                snapshots.join(" ")
            }
        )
        .map_err(w)?;
    }
    Ok(())
}
