//! Rebuilding the engine state at start: the newest snapshot image, then
//! every logged record after it, each applied only to the components that
//! do not include it yet.

use super::image::{CatalogImage, ShardImage, SnapshotImage, TokenRecord, FORMAT_VERSION};
use super::record::WalRecord;
use crate::catalog::{Catalog, CatalogError};
use crate::clock::Millis;
use crate::model::Token;
use crate::shard::{ShardCommand, ShardState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often restore reports progress on large data.
pub const PROGRESS_PERIOD: Duration = Duration::from_secs(2);
/// Tokens between two looks at the clock while loading a snapshot.
const PROGRESS_CHECK_TOKENS: usize = 65_536;

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
        let mut shards: Vec<ShardState> = (0..shard_count)
            .map(|_| ShardState::new(retention_ms))
            .collect();
        let Some(image) = image else {
            return Ok(Self {
                catalog: Arc::new(Catalog::new()),
                shards,
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
        let mut snapshot_tokens = 0;
        let mut shard_lsns = Vec::with_capacity(image.shards.len());
        let started = Instant::now();
        let mut last_report = started;
        for shard in image.shards {
            shard_lsns.push(shard.lsn);
            for record in shard.tokens {
                if snapshot_tokens % PROGRESS_CHECK_TOKENS == 0
                    && last_report.elapsed() >= PROGRESS_PERIOD
                {
                    last_report = Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    tracing::info!(
                        tokens = snapshot_tokens,
                        tokens_per_sec = (snapshot_tokens as f64 / secs) as u64,
                        "loading snapshot tokens"
                    );
                }
                let target = record.id.shard(shard_count);
                let state = &mut shards[target];
                let token = record
                    .into_token(&catalog, |name| state.intern(name))
                    .map_err(RestoreError::Token)?;
                state.restore(token);
                snapshot_tokens += 1;
            }
        }
        for state in &mut shards {
            state.finish_restore();
        }
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

/// A shard's tokens as of one point in the log, taken in one message turn
/// of the shard. Cheap: tokens are shared, and later changes copy on write,
/// so the shard goes on serving while the capture is encoded elsewhere.
pub struct ShardCapture {
    /// LSN of the last record the capture includes.
    pub lsn: u64,
    /// The tokens as they were.
    pub tokens: Vec<Arc<Token>>,
}

impl ShardCapture {
    /// Captures `state`, which includes every record up to `lsn`.
    pub fn of(state: &ShardState, lsn: u64) -> Self {
        Self {
            lsn,
            tokens: state.tokens().map(Arc::clone).collect(),
        }
    }

    /// The storable image (the costly part: run it off the shard).
    pub fn into_image(self) -> ShardImage {
        ShardImage {
            lsn: self.lsn,
            tokens: self
                .tokens
                .iter()
                .map(|t| TokenRecord::from(&**t))
                .collect(),
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
