//! The snapshot image: the whole engine state, as the payload of a snapshot
//! file.
//!
//! Each component — the catalog and every shard — is captured at its own
//! point in the log and carries the LSN of the last record it includes. On
//! restore a logged record is applied to a component only if its LSN is
//! above that component's, so shards can be captured one after another
//! without stopping the others.
//!
//! Payload layout (format version 2):
//!
//! ```text
//! MessagePack array [format_version, taken_at_ms, shard_count, catalog_lsn,
//!                    catalog, [[shard lsn, token count, section bytes], ...]]
//! shard section 0 | shard section 1 | ...      (raw bytes, lengths as above)
//! ```
//!
//! The header comes first so that the version is always the first element of
//! a MessagePack array, as it was in version 1 (a single MessagePack
//! document): an image of another version is refused with a clear error.
//! Each shard section is the binary token encoding of [`super::section`], so
//! sections decode independently, in parallel, with no per-token allocation.

use crate::catalog::{Catalog, CatalogCommand, CatalogError};
use crate::clock::Millis;
use crate::model::collection::CollectionRecord;
use crate::model::{Account, ApiKey};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the image layout; bumped on any incompatible change. Version 1
/// (one MessagePack document, ids and names as text) is not read: there were
/// no deployed data dirs to migrate.
pub const FORMAT_VERSION: u32 = 2;

/// Why a payload is not a readable image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Written by an incompatible version.
    #[error(
        "snapshot image format version {found} is not supported (this build reads version \
         {FORMAT_VERSION} only; no migration exists)"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// Not a well-formed image.
    #[error("snapshot image is malformed: {0}")]
    Malformed(String),
}

/// Everything needed to rebuild the engine, up to per-component LSNs.
#[derive(Debug)]
pub struct SnapshotImage {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When it was taken (engine clock).
    pub taken_at_ms: Millis,
    /// Shard count when taken: logged token commands are attributed to the
    /// shard that owned them then, whatever the count is at restore.
    pub shard_count: u32,
    /// LSN of the last catalog change included.
    pub catalog_lsn: u64,
    /// Accounts, keys, collections.
    pub catalog: CatalogImage,
    /// One image per shard, index = shard.
    pub shards: Vec<ShardImage>,
}

impl SnapshotImage {
    /// The LSN up to which every component is complete: WAL segments wholly
    /// at or below it are no longer needed once this image is durable.
    pub fn covered_lsn(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lsn)
            .fold(self.catalog_lsn, u64::min)
    }

    /// Number of tokens in the image.
    pub fn token_count(&self) -> usize {
        self.shards.iter().map(|s| s.token_count).sum()
    }

    /// The payload bytes (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>, ImageError> {
        let header = HeaderRef {
            format_version: self.format_version,
            taken_at_ms: self.taken_at_ms,
            shard_count: self.shard_count,
            catalog_lsn: self.catalog_lsn,
            catalog: &self.catalog,
            shards: self
                .shards
                .iter()
                .map(|s| SectionHeader {
                    lsn: s.lsn,
                    tokens: s.token_count as u64,
                    bytes: s.section.len() as u64,
                })
                .collect(),
        };
        let mut out =
            rmp_serde::to_vec(&header).map_err(|e| ImageError::Malformed(e.to_string()))?;
        out.reserve_exact(self.shards.iter().map(|s| s.section.len()).sum());
        for shard in &self.shards {
            out.extend_from_slice(&shard.section);
        }
        Ok(out)
    }

    /// Reads a payload; the shard sections are slices of it (no copy) and
    /// decode later, in parallel, during restore.
    pub fn decode(payload: &Bytes) -> Result<SnapshotImage, ImageError> {
        let found = leading_version(payload)?;
        if found != FORMAT_VERSION {
            return Err(ImageError::Version { found });
        }
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(&payload[..]));
        let header =
            Header::deserialize(&mut de).map_err(|e| ImageError::Malformed(e.to_string()))?;
        let mut at = usize::try_from(de.position())
            .map_err(|_| ImageError::Malformed("header past the end".into()))?;
        let mut shards = Vec::with_capacity(header.shards.len());
        for (i, section) in header.shards.iter().enumerate() {
            let end = usize::try_from(section.bytes)
                .ok()
                .and_then(|len| at.checked_add(len))
                .filter(|end| *end <= payload.len())
                .ok_or_else(|| {
                    ImageError::Malformed(format!("shard section {i} runs past the end"))
                })?;
            let token_count = usize::try_from(section.tokens)
                .map_err(|_| ImageError::Malformed(format!("shard section {i} token count")))?;
            shards.push(ShardImage {
                lsn: section.lsn,
                token_count,
                section: payload.slice(at..end),
            });
            at = end;
        }
        if at != payload.len() {
            return Err(ImageError::Malformed(format!(
                "{} bytes after the last shard section",
                payload.len() - at
            )));
        }
        Ok(SnapshotImage {
            format_version: header.format_version,
            taken_at_ms: header.taken_at_ms,
            shard_count: header.shard_count,
            catalog_lsn: header.catalog_lsn,
            catalog: header.catalog,
            shards,
        })
    }
}

/// The format version: the first element of the leading MessagePack array
/// (in every version so far).
fn leading_version(payload: &[u8]) -> Result<u32, ImageError> {
    let malformed = || ImageError::Malformed("does not start with a versioned array".into());
    let mut rest = match payload.first() {
        Some(0x90..=0x9f) => &payload[1..],
        Some(0xdc) => payload.get(3..).ok_or_else(malformed)?,
        Some(0xdd) => payload.get(5..).ok_or_else(malformed)?,
        _ => return Err(malformed()),
    };
    let (&marker, tail) = rest.split_first().ok_or_else(malformed)?;
    rest = tail;
    let take = |n: usize| -> Result<u32, ImageError> {
        let bytes = rest.get(..n).ok_or_else(malformed)?;
        Ok(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
    };
    match marker {
        0x00..=0x7f => Ok(u32::from(marker)),
        0xcc => take(1),
        0xcd => take(2),
        0xce => take(4),
        _ => Err(malformed()),
    }
}

/// The header as written.
#[derive(Serialize)]
struct HeaderRef<'a> {
    /// See [`SnapshotImage::format_version`].
    format_version: u32,
    /// See [`SnapshotImage::taken_at_ms`].
    taken_at_ms: Millis,
    /// See [`SnapshotImage::shard_count`].
    shard_count: u32,
    /// See [`SnapshotImage::catalog_lsn`].
    catalog_lsn: u64,
    /// See [`SnapshotImage::catalog`].
    catalog: &'a CatalogImage,
    /// Where each shard section is.
    shards: Vec<SectionHeader>,
}

/// The header as read.
#[derive(Deserialize)]
struct Header {
    /// See [`SnapshotImage::format_version`].
    format_version: u32,
    /// See [`SnapshotImage::taken_at_ms`].
    taken_at_ms: Millis,
    /// See [`SnapshotImage::shard_count`].
    shard_count: u32,
    /// See [`SnapshotImage::catalog_lsn`].
    catalog_lsn: u64,
    /// See [`SnapshotImage::catalog`].
    catalog: CatalogImage,
    /// Where each shard section is.
    shards: Vec<SectionHeader>,
}

/// One shard section's place in the payload.
#[derive(Serialize, Deserialize)]
struct SectionHeader {
    /// See [`ShardImage::lsn`].
    lsn: u64,
    /// See [`ShardImage::token_count`].
    tokens: u64,
    /// Length of the section in bytes.
    bytes: u64,
}

/// The catalog's objects.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CatalogImage {
    /// Every account.
    pub accounts: Vec<Account>,
    /// Every live key (digests only).
    pub api_keys: Vec<ApiKey>,
    /// Every collection.
    pub collections: Vec<CollectionRecord>,
}

impl CatalogImage {
    /// Rebuilds a catalog from the image.
    pub fn restore(self) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::new();
        let commands = self
            .accounts
            .into_iter()
            .map(CatalogCommand::CreateAccount)
            .chain(
                self.collections
                    .into_iter()
                    .map(CatalogCommand::CreateCollection),
            )
            .chain(self.api_keys.into_iter().map(CatalogCommand::CreateApiKey));
        for command in commands {
            catalog.apply(&command)?;
        }
        Ok(catalog)
    }
}

/// One shard's tokens.
#[derive(Debug, Clone, Default)]
pub struct ShardImage {
    /// LSN of the last record this shard had applied.
    pub lsn: u64,
    /// Tokens in the section (tombstones included).
    pub token_count: usize,
    /// The tokens, encoded by [`super::section`].
    pub section: Bytes,
}
