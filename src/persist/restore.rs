//! Rebuilding the engine state at start: the newest snapshot image, then
//! every logged record after it, each applied only to the components that
//! do not include it yet.

use super::image::{CatalogImage, ShardImage, SnapshotImage, FORMAT_VERSION};
use super::record::WalRecord;
use super::section::{self, Remap};
use crate::catalog::{Catalog, CatalogError};
use crate::clock::Millis;
use crate::shard::table::{ChunkBuilder, TableCapture, Tables, TokenTable, KEYS_MAX};
use crate::shard::{ShardCommand, ShardState};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often restore reports progress on large data.
pub const PROGRESS_PERIOD: Duration = Duration::from_secs(2);

/// Why restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot was written by an incompatible version.
    #[error("snapshot format version {found} is not supported (expected {FORMAT_VERSION})")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The snapshot's catalog does not rebuild.
    #[error("snapshot catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// A snapshot token does not rebuild.
    #[error("snapshot token: {0}")]
    Token(String),
    /// A logged record does not decode or apply.
    #[error("WAL record at LSN {lsn}: {reason}")]
    Record {
        /// Its LSN.
        lsn: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Counts reported when restore ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Tokens loaded from the snapshot.
    pub snapshot_tokens: usize,
    /// Logged records applied.
    pub records_applied: usize,
    /// Logged records skipped because the snapshot already included them.
    pub records_skipped: usize,
}

/// Restore in progress.
pub struct Restorer {
    /// The rebuilt catalog.
    catalog: Arc<Catalog>,
    /// The rebuilt shards, for the current shard count.
    shards: Vec<ShardState>,
    /// LSN of the last catalog change in the snapshot.
    catalog_lsn: u64,
    /// Per snapshot shard, the LSN of its last included record.
    shard_lsns: Vec<u64>,
    /// Shard count of the snapshot: logged token commands are attributed to
    /// the shard that owned them when they were logged.
    logged_shard_count: usize,
    /// The last LSN seen.
    last_lsn: u64,
    /// Counters.
    stats: RestoreStats,
}

impl Restorer {
    /// Starts from `image` (or from nothing) for `shard_count` shards.
    pub fn new(
        image: Option<SnapshotImage>,
        shard_count: usize,
        retention_ms: i64,
    ) -> Result<Self, RestoreError> {
        let Some(image) = image else {
            return Ok(Self {
                catalog: Arc::new(Catalog::new()),
                shards: (0..shard_count)
                    .map(|_| ShardState::new(retention_ms))
                    .collect(),
                catalog_lsn: 0,
                shard_lsns: Vec::new(),
                logged_shard_count: shard_count,
                last_lsn: 0,
                stats: RestoreStats::default(),
            });
        };
        if image.format_version != FORMAT_VERSION {
            return Err(RestoreError::Version {
                found: image.format_version,
            });
        }
        let covered = image.covered_lsn();
        let catalog = Arc::new(image.catalog.restore()?);
        let shard_lsns: Vec<u64> = image.shards.iter().map(|s| s.lsn).collect();
        let started = Instant::now();
        let shards = load_shards(&image.shards, &catalog, shard_count, retention_ms)?;
        let snapshot_tokens = shards.iter().map(ShardState::len).sum();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            tokens = snapshot_tokens,
            elapsed_ms = (secs * 1000.0) as u64,
            tokens_per_sec = (snapshot_tokens as f64 / secs) as u64,
            "snapshot tokens loaded"
        );
        Ok(Self {
            catalog,
            shards,
            catalog_lsn: image.catalog_lsn,
            logged_shard_count: (image.shard_count as usize).max(1),
            shard_lsns,
            last_lsn: covered,
            stats: RestoreStats {
                snapshot_tokens,
                ..RestoreStats::default()
            },
        })
    }

    /// Applies the logged record `lsn` (records come in LSN order).
    pub fn replay(&mut self, lsn: u64, payload: &[u8]) -> Result<(), RestoreError> {
        debug_assert!(
            lsn > self.last_lsn || self.last_lsn == 0,
            "records in LSN order"
        );
        self.last_lsn = self.last_lsn.max(lsn);
        let record = WalRecord::decode(payload).map_err(|e| RestoreError::Record {
            lsn,
            reason: e.to_string(),
        })?;
        match record {
            WalRecord::Catalog(command) => {
                if lsn <= self.catalog_lsn {
                    self.stats.records_skipped += 1;
                    return Ok(());
                }
                self.catalog
                    .apply(&command)
                    .map_err(|e| RestoreError::Record {
                        lsn,
                        reason: e.to_string(),
                    })?;
            }
            WalRecord::Shard { now_ms, command } => {
                let logged_shard = command_token(&command).shard(self.logged_shard_count);
                let included = self.shard_lsns.get(logged_shard).copied().unwrap_or(0);
                if lsn <= included {
                    self.stats.records_skipped += 1;
                    return Ok(());
                }
                self.apply_shard_command(lsn, command, now_ms);
            }
        }
        self.stats.records_applied += 1;
        Ok(())
    }

    fn apply_shard_command(&mut self, lsn: u64, command: ShardCommand, now_ms: Millis) {
        let count = self.shards.len();
        let parts: Vec<(usize, ShardCommand)> = match command {
            // A create's tokens shared one shard when logged; with another
            // shard count now they may not.
            ShardCommand::Create { tokens } => {
                let mut split: BTreeMap<usize, Vec<_>> = BTreeMap::new();
                for token in tokens {
                    split.entry(token.id.shard(count)).or_default().push(token);
                }
                split
                    .into_iter()
                    .map(|(shard, tokens)| (shard, ShardCommand::Create { tokens }))
                    .collect()
            }
            other => vec![(command_token(&other).shard(count), other)],
        };
        for (shard, part) in parts {
            if let Err(rejection) = self.shards[shard].apply(&part, now_ms, &self.catalog) {
                // Only a configuration change (a shorter tombstone retention)
                // makes a logged command refuse now; the state it would have
                // changed is gone either way.
                tracing::warn!(lsn, %rejection, "logged command no longer applies; skipped");
            }
        }
    }

    /// The LSN of the last record seen (snapshot or log).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Counters so far.
    pub fn stats(&self) -> RestoreStats {
        self.stats
    }

    /// Tokens held so far.
    pub fn token_count(&self) -> usize {
        self.shards.iter().map(ShardState::len).sum()
    }

    /// The rebuilt state.
    pub fn finish(self) -> (Arc<Catalog>, Vec<ShardState>) {
        (self.catalog, self.shards)
    }
}

/// The token a shard command is about (a create's first token: all of a
/// logged create's tokens share one shard).
fn command_token(command: &ShardCommand) -> crate::ids::TokenId {
    match command {
        ShardCommand::Create { tokens } => tokens
            .first()
            .map_or(crate::ids::TokenId(uuid::Uuid::nil()), |t| t.id),
        ShardCommand::Redeem { id, .. } | ShardCommand::Delete { id, .. } => *id,
    }
}

/// Rebuilds the shards from the image's shard sections: the sections
/// decode in parallel (each token routed to the shard that owns it under
/// `shard_count`, which may differ from the image's), then each shard
/// builds its indexes and timers in parallel.
fn load_shards(
    images: &[ShardImage],
    catalog: &Catalog,
    shard_count: usize,
    retention_ms: i64,
) -> Result<Vec<ShardState>, RestoreError> {
    let sections = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            section::read_tables(&image.section)
                .map_err(|e| RestoreError::Token(format!("shard section {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Every shard starts with the union of the sections' (small) tables, so
    // a section's indexes map the same way whichever shard a token lands in.
    let mut tables = Tables::default();
    let mut maps = Vec::with_capacity(sections.len());
    for (i, section) in sections.iter().enumerate() {
        let collections = section
            .collections
            .iter()
            .map(|id| {
                let collection = catalog.collection(*id).ok_or_else(|| {
                    RestoreError::Token(format!("shard section {i} names unknown collection {id}"))
                })?;
                Ok(tables.collections.intern(&collection))
            })
            .collect::<Result<Vec<_>, RestoreError>>()?;
        let names: Vec<u32> = section
            .names
            .iter()
            .map(|name| tables.names.intern_name(name))
            .collect();
        let keys: Vec<Option<u32>> = section
            .keys
            .iter()
            .map(|key| tables.keys.intern(key, KEYS_MAX))
            .collect();
        maps.push((collections, names, keys));
    }
    let shard_names = tables.names.shared();
    let remaps: Vec<Remap<'_>> = maps
        .into_iter()
        .zip(&sections)
        .map(|((collections, names, keys), section)| Remap {
            collections,
            names,
            keys,
            key_names: section.keys.clone(),
            shard_names: Arc::clone(&shard_names),
        })
        .collect();
    let work: Vec<_> = sections.iter().zip(&remaps).zip(images).collect();
    let decoded = parallel(work, |((section, remap), image)| {
        let mut targets: Vec<ChunkBuilder> =
            (0..shard_count).map(|_| ChunkBuilder::default()).collect();
        section::decode_tokens(section, image.token_count, remap, &mut targets).map(|()| targets)
    });
    let mut per_shard: Vec<Vec<ChunkBuilder>> = (0..shard_count).map(|_| Vec::new()).collect();
    for (i, targets) in decoded.into_iter().enumerate() {
        let targets =
            targets.map_err(|e| RestoreError::Token(format!("shard section {i}: {e}")))?;
        for (shard, built) in targets.into_iter().enumerate() {
            per_shard[shard].push(built);
        }
    }
    let states = parallel(per_shard, |parts| {
        let mut all = ChunkBuilder::default();
        for part in parts {
            all.append(part);
        }
        let table = TokenTable::from_chunks(tables.clone(), all.into_chunks())
            .map_err(|id| RestoreError::Token(format!("token {id} appears twice")))?;
        Ok(ShardState::from_table(table, retention_ms))
    });
    states.into_iter().collect()
}

/// Runs `work` on every item, on up to one thread per core; results in item
/// order.
fn parallel<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.into_iter().map(work).collect();
    }
    let count = items.len();
    let queue = parking_lot::Mutex::new(items.into_iter().enumerate());
    let done = parking_lot::Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().next();
                let Some((at, item)) = next else {
                    break;
                };
                let result = work(item);
                done.lock().push((at, result));
            });
        }
    });
    let mut done = done.into_inner();
    done.sort_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, result)| result).collect()
}

/// A shard's tokens as of one point in the log, taken in one message turn
/// of the shard. Cheap: the shard's slot chunks are shared and copied on
/// write, so the shard goes on serving while the capture is encoded
/// elsewhere.
pub struct ShardCapture {
    /// LSN of the last record the capture includes.
    pub lsn: u64,
    /// The tokens as they were.
    pub table: TableCapture,
}

impl ShardCapture {
    /// Captures `state`, which includes every record up to `lsn`.
    pub fn of(state: &ShardState, lsn: u64) -> Self {
        Self {
            lsn,
            table: state.capture(),
        }
    }

    /// Number of tokens captured.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no token was captured.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The storable image (the costly part: run it off the shard).
    pub fn into_image(self) -> ShardImage {
        ShardImage {
            lsn: self.lsn,
            token_count: self.table.len(),
            section: Bytes::from(section::encode(&self.table)),
        }
    }
}

/// Captures a shard for a snapshot, in one go.
pub fn shard_image(state: &ShardState, lsn: u64) -> ShardImage {
    ShardCapture::of(state, lsn).into_image()
}

/// Captures the catalog for a snapshot.
pub fn catalog_image(catalog: &Catalog) -> CatalogImage {
    catalog.image()
}
