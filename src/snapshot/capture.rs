//! Every component of the engine captured for a snapshot, and the one place
//! the captures become an image.
//!
//! Each owner captures itself: the catalog under its writer lock
//! ([`Catalog::capture_at`]), each shard in one message turn
//! ([`ShardCapture`]). Captures are cheap (shared, copy-on-write); encoding
//! them ([`EngineCapture::into_image`]) is the costly part and runs off the
//! shards.

use super::image::{ShardImage, SnapshotImage};
use super::section::{self, Layout};
use crate::catalog::{Catalog, CatalogImage};
use crate::clock::Millis;
use crate::keyring::Keyring;
use crate::log::Lsn;
use crate::shard::{ShardCapture, ShardState};
use bytes::Bytes;

/// The catalog and every shard, each as of its own LSN.
pub struct EngineCapture {
    /// When it was taken (engine clock).
    pub taken_at_ms: Millis,
    /// The catalog's objects.
    pub catalog: CatalogImage,
    /// LSN of the last catalog change included.
    pub catalog_lsn: Lsn,
    /// One capture per shard, index = shard.
    pub shards: Vec<ShardCapture>,
}

impl EngineCapture {
    /// A state at rest in which every component includes exactly the records
    /// up to `lsn` (a restored data dir: `tokend compact`).
    pub fn at_rest(
        catalog: &Catalog,
        shards: &[ShardState],
        lsn: Lsn,
        taken_at_ms: Millis,
    ) -> Self {
        Self {
            taken_at_ms,
            catalog: catalog.capture(),
            catalog_lsn: lsn,
            shards: shards.iter().map(|s| ShardCapture::of(s, lsn)).collect(),
        }
    }

    /// The newest LSN any component includes: the snapshot may be written
    /// only once the log is durable up to it.
    pub fn newest_lsn(&self) -> Lsn {
        self.shards
            .iter()
            .map(|s| s.lsn)
            .fold(self.catalog_lsn, Lsn::max)
    }

    /// The image, its shard sections encoded, token values sealed when
    /// `keyring` has keys (the costly part: run it off the shards).
    pub fn into_image(self, keyring: &Keyring) -> SnapshotImage {
        SnapshotImage {
            taken_at_ms: self.taken_at_ms,
            shard_count: u32::try_from(self.shards.len()).unwrap_or(u32::MAX),
            catalog_lsn: self.catalog_lsn,
            catalog: self.catalog,
            shards: self
                .shards
                .into_iter()
                .map(|capture| ShardImage {
                    lsn: capture.lsn,
                    token_count: capture.len(),
                    section: Bytes::from(section::encode(&capture.table, keyring)),
                    layout: Layout::Tagged,
                })
                .collect(),
        }
    }
}
