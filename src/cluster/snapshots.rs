//! Shard snapshots in a cluster: one JetStream object store, one object per
//! snapshot, named by shard and [`Stamp`].
//!
//! The owner of a shard captures it (one message turn of its actor, as on a
//! single node), waits until the records it includes are acknowledged,
//! encodes it in the single node's snapshot image format (the shard's
//! section; the catalog is its own subject, never purged), and puts it. Once the put
//! succeeds it keeps the two newest snapshots of the shard and purges the
//! subject below the older one's stamp: if the newest turns out unreadable,
//! the older one and the messages after it still rebuild the shard. A new
//! owner loads the newest readable snapshot and replays the subject from its
//! stamp ([`super::takeover`]).

use super::names::Names;
use super::replicated_log::{ReplicatedLog, Stamp};
use crate::catalog::{Catalog, CatalogImage};
use crate::clock::Millis;
use crate::engine::Engine;
use crate::keyring::Keyring;
use crate::log::Log;
use crate::shard::ShardState;
use crate::snapshot::capture::EngineCapture;
use crate::snapshot::image::SnapshotImage;
use crate::snapshot::{load, FORMAT_VERSION, FORMAT_VERSION_MIN};
use async_nats::jetstream::{self, object_store, stream};
use futures_util::TryStreamExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Snapshots kept per shard.
const KEPT: usize = 2;

/// A snapshot object's name: `shard-<shard>-<sequence>-<skip>`, numbers
/// zero-padded so names sort as stamps do.
fn object_name(shard: usize, stamp: Stamp) -> String {
    format!("shard-{shard}-{:020}-{:020}", stamp.sequence, stamp.skip)
}

/// The shard and stamp of an object name.
pub fn parse_name(name: &str) -> Option<(usize, Stamp)> {
    let mut parts = name.strip_prefix("shard-")?.split('-');
    let shard = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    let skip = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((shard, Stamp { sequence, skip }))
}

/// A written snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    /// Where it stands.
    pub stamp: Stamp,
    /// Tokens in it.
    pub tokens: usize,
    /// Its size.
    pub bytes: usize,
}

/// The cluster's shard snapshots.
#[derive(Clone)]
pub struct ShardSnapshots {
    /// The object store.
    store: object_store::ObjectStore,
    /// The stream, for purges.
    stream: stream::Stream,
    /// Names.
    names: Names,
    /// Seals token values in the snapshots taken, opens them in those
    /// loaded (and in the records replayed after them).
    keyring: Arc<Keyring>,
}

impl ShardSnapshots {
    /// Opens (or creates) the cluster's object store.
    pub async fn open(
        js: &jetstream::Context,
        stream: stream::Stream,
        names: &Names,
        replicas: usize,
        keyring: Arc<Keyring>,
    ) -> Result<Self, String> {
        let bucket = names.snapshots_bucket();
        let store = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some("tokend: shard snapshots".into()),
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create object store {bucket}: {e}"))?,
        };
        Ok(Self {
            store,
            stream,
            names: names.clone(),
            keyring,
        })
    }

    /// The data keys.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The stamps of `shard`'s snapshots, oldest first.
    pub async fn stamps(&self, shard: usize) -> Result<Vec<Stamp>, String> {
        let mut list = self.store.list().await.map_err(|e| e.to_string())?;
        let mut stamps = Vec::new();
        while let Some(info) = list.try_next().await.map_err(|e| e.to_string())? {
            if info.deleted {
                continue;
            }
            if let Some((s, stamp)) = parse_name(&info.name) {
                if s == shard {
                    stamps.push(stamp);
                }
            }
        }
        stamps.sort();
        Ok(stamps)
    }

    /// Snapshots shard `shard`, held here with `log`; keeps the newest two
    /// and purges the subject below the older.
    pub async fn take(
        &self,
        engine: &Engine,
        shard: usize,
        log: &ReplicatedLog,
        taken_at_ms: Millis,
    ) -> Result<Taken, String> {
        let started = Instant::now();
        let capture = engine
            .capture_shard(shard)
            .await
            .ok_or_else(|| format!("shard {shard} is not held here"))?;
        log.durable(capture.lsn)
            .await
            .map_err(|e| format!("shard {shard}: {e}"))?;
        let stamp = log
            .stamp(capture.lsn)
            .ok_or_else(|| format!("shard {shard}: LSN {} is too old to stamp", capture.lsn))?;
        let tokens = capture.len();
        // The catalog has its own subject, which is never purged; a loader
        // resolves the section's collections against its own replica.
        let image = EngineCapture {
            taken_at_ms,
            catalog: CatalogImage::default(),
            catalog_lsn: 0,
            shards: vec![capture],
        };
        // Encoding is the costly part: off the async workers.
        let keyring = Arc::clone(&self.keyring);
        let bytes = tokio::task::spawn_blocking(move || image.into_image(&keyring).encode())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut payload = FORMAT_VERSION.to_le_bytes().to_vec();
        payload.extend_from_slice(&bytes);
        let name = object_name(shard, stamp);
        self.store
            .put(name.as_str(), &mut payload.as_slice())
            .await
            .map_err(|e| format!("put {name}: {e}"))?;
        self.prune(shard).await?;
        tracing::info!(
            shard,
            sequence = stamp.sequence,
            tokens,
            bytes = payload.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shard snapshot written"
        );
        Ok(Taken {
            stamp,
            tokens,
            bytes: payload.len(),
        })
    }

    /// Keeps the newest [`KEPT`] snapshots of `shard`; purges its subject
    /// below the oldest kept.
    async fn prune(&self, shard: usize) -> Result<(), String> {
        let stamps = self.stamps(shard).await?;
        if stamps.len() < KEPT {
            return Ok(());
        }
        let (old, kept) = stamps.split_at(stamps.len() - KEPT);
        for stamp in old {
            let name = object_name(shard, *stamp);
            self.store
                .delete(&name)
                .await
                .map_err(|e| format!("delete {name}: {e}"))?;
        }
        // Message `kept[0].sequence` itself may hold records the older kept
        // snapshot lacks: it stays.
        self.stream
            .purge()
            .filter(self.names.shard_subject(shard))
            .sequence(kept[0].sequence)
            .await
            .map_err(|e| format!("purge of shard {shard}'s subject: {e}"))?;
        Ok(())
    }

    /// The newest readable snapshot of `shard` as a state, and its stamp;
    /// `None` when it has none.
    pub async fn load_newest(
        &self,
        shard: usize,
        catalog: &Catalog,
        retention_ms: i64,
    ) -> Result<Option<(ShardState, Stamp)>, String> {
        let stamps = self.stamps(shard).await?;
        for stamp in stamps.iter().rev() {
            match self.load(shard, *stamp, catalog, retention_ms).await {
                Ok(state) => return Ok(Some((state, *stamp))),
                Err(e) => {
                    tracing::error!(shard, error = %e, "snapshot unreadable; trying an older one")
                }
            }
        }
        if stamps.is_empty() {
            Ok(None)
        } else {
            Err(format!("no snapshot of shard {shard} is readable"))
        }
    }

    async fn load(
        &self,
        shard: usize,
        stamp: Stamp,
        catalog: &Catalog,
        retention_ms: i64,
    ) -> Result<ShardState, String> {
        let name = object_name(shard, stamp);
        let mut object = self
            .store
            .get(&name)
            .await
            .map_err(|e| format!("get {name}: {e}"))?;
        let mut payload = Vec::new();
        // The object store checks the object's digest as it is read.
        object
            .read_to_end(&mut payload)
            .await
            .map_err(|e| format!("read {name}: {e}"))?;
        let (version, image) = payload
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("{name} is cut short"))?;
        let version = u32::from_le_bytes(*version);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "{name} has format version {version}; this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"
            ));
        }
        let image = SnapshotImage::decode(&bytes::Bytes::copy_from_slice(image), version)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut states = load::shard_states(&image.shards, catalog, 1, retention_ms, &self.keyring)
            .map_err(|e| format!("{name}: {e}"))?;
        states.pop().ok_or_else(|| format!("{name} holds no shard"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_sort_as_stamps_and_parse_back() {
        let a = Stamp {
            sequence: 9,
            skip: 3,
        };
        let b = Stamp {
            sequence: 10,
            skip: 0,
        };
        assert!(object_name(1, a) < object_name(1, b));
        assert_eq!(parse_name(&object_name(12, b)), Some((12, b)));
        assert_eq!(parse_name("shard-1-2"), None);
        assert_eq!(parse_name("other"), None);
    }
}
