//! The snapshot image: the whole engine state, as the payload of a snapshot
//! file.
//!
//! Each component — the catalog and every shard — is captured at its own
//! point in the log and carries the LSN of the last record it includes. On
//! restore a logged record is applied to a component only if its LSN is
//! above that component's, so shards can be captured one after another
//! without stopping the others.
//!
//! Payload of format version 2 (this build's):
//!
//! ```text
//! MessagePack map {taken_at_ms, shard_count, catalog_lsn,
//!                  catalog: {accounts, api_keys, collections},
//!                  shards: [{lsn, tokens, bytes}, ...]}        (fields by name)
//! shard section 0 | shard section 1 | ...      (raw bytes, lengths as above)
//! ```
//!
//! The header's fields are named, so a field added later is optional to
//! older images and ignored by older builds. Each shard section is the
//! binary token encoding of [`super::section`], so sections decode
//! independently, in parallel, with no per-token allocation.
//!
//! Format version 1 (written before snapshots had named fields) is read as
//! well: a MessagePack array `[2, taken_at_ms, shard_count, catalog_lsn,
//! catalog, [[lsn, tokens, bytes], ...]]` with positional fields (the `2`
//! was the image's own version then), and untagged sections.

use super::section::Layout;
use crate::catalog::CatalogImage;
use crate::clock::Millis;
use crate::log::Lsn;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The image version inside a format-1 payload: the only one format 1 had.
const LEGACY_IMAGE_VERSION: u32 = 2;

/// Most shards an image may have: the most any mode runs (cluster mode's
/// `--cluster-shards` limit; a single node runs fewer). A restore sizes its
/// shard list, and each section's routing table, by the image's shard
/// count, so the count is checked here rather than trusted.
pub const IMAGE_SHARDS_MAX: u32 = 1024;

/// Why a payload is not a readable image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a format this build reads.
    #[error("snapshot format version {found} is not one this build reads")]
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
    /// When it was taken (engine clock).
    pub taken_at_ms: Millis,
    /// Shard count when taken: logged token commands are attributed to the
    /// shard that owned them then, whatever the count is at restore.
    pub shard_count: u32,
    /// LSN of the last catalog change included.
    pub catalog_lsn: Lsn,
    /// Accounts, keys, collections.
    pub catalog: CatalogImage,
    /// One image per shard, index = shard.
    pub shards: Vec<ShardImage>,
}

/// One shard's tokens.
#[derive(Debug, Clone)]
pub struct ShardImage {
    /// LSN of the last record this shard had applied.
    pub lsn: Lsn,
    /// Tokens in the section (tombstones included).
    pub token_count: usize,
    /// The tokens, encoded by [`super::section`].
    pub section: Bytes,
    /// How the section is laid out (its snapshot's format).
    pub layout: Layout,
}

impl SnapshotImage {
    /// The LSN up to which every component is complete: WAL segments wholly
    /// at or below it are no longer needed once this image is durable.
    pub fn covered_lsn(&self) -> Lsn {
        self.shards
            .iter()
            .map(|s| s.lsn)
            .fold(self.catalog_lsn, Lsn::min)
    }

    /// Number of tokens in the image.
    pub fn token_count(&self) -> usize {
        self.shards.iter().map(|s| s.token_count).sum()
    }

    /// The payload bytes, in this build's format (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>, ImageError> {
        let header = HeaderRef {
            taken_at_ms: self.taken_at_ms,
            shard_count: self.shard_count,
            catalog_lsn: self.catalog_lsn,
            catalog: &self.catalog,
            shards: self
                .shards
                .iter()
                .map(|s| {
                    debug_assert_eq!(s.layout, Layout::Tagged, "sections are written anew");
                    SectionHeader {
                        lsn: s.lsn,
                        tokens: s.token_count as u64,
                        bytes: s.section.len() as u64,
                    }
                })
                .collect(),
        };
        let mut out =
            rmp_serde::to_vec_named(&header).map_err(|e| ImageError::Malformed(e.to_string()))?;
        out.reserve_exact(self.shards.iter().map(|s| s.section.len()).sum());
        for shard in &self.shards {
            out.extend_from_slice(&shard.section);
        }
        Ok(out)
    }

    /// Reads a payload of snapshot format `format_version`; the shard
    /// sections are slices of it (no copy) and decode later, in parallel,
    /// during restore.
    pub fn decode(payload: &Bytes, format_version: u32) -> Result<SnapshotImage, ImageError> {
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(&payload[..]));
        let malformed = |e: rmp_serde::decode::Error| ImageError::Malformed(e.to_string());
        let (header, layout) = match format_version {
            1 => {
                let legacy = LegacyHeader::deserialize(&mut de).map_err(malformed)?;
                if legacy.format_version != LEGACY_IMAGE_VERSION {
                    return Err(ImageError::Malformed(format!(
                        "format 1 snapshot holding image version {}",
                        legacy.format_version
                    )));
                }
                (legacy.header(), Layout::Untagged)
            }
            2 => (
                Header::deserialize(&mut de).map_err(malformed)?,
                Layout::Tagged,
            ),
            found => return Err(ImageError::Version { found }),
        };
        if !(1..=IMAGE_SHARDS_MAX).contains(&header.shard_count) {
            return Err(ImageError::Malformed(format!(
                "shard count {} is not within 1..={IMAGE_SHARDS_MAX}",
                header.shard_count
            )));
        }
        // An image holds one section per shard (see `EngineCapture`).
        if header.shards.len() != header.shard_count as usize {
            return Err(ImageError::Malformed(format!(
                "{} shard sections for a shard count of {}",
                header.shards.len(),
                header.shard_count
            )));
        }
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
                layout,
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
            taken_at_ms: header.taken_at_ms,
            shard_count: header.shard_count,
            catalog_lsn: header.catalog_lsn,
            catalog: header.catalog,
            shards,
        })
    }
}

/// The header as written.
#[derive(Serialize)]
struct HeaderRef<'a> {
    /// See [`SnapshotImage::taken_at_ms`].
    taken_at_ms: Millis,
    /// See [`SnapshotImage::shard_count`].
    shard_count: u32,
    /// See [`SnapshotImage::catalog_lsn`].
    catalog_lsn: Lsn,
    /// See [`SnapshotImage::catalog`].
    catalog: &'a CatalogImage,
    /// Where each shard section is.
    shards: Vec<SectionHeader>,
}

/// The header as read.
#[derive(Deserialize)]
struct Header {
    /// See [`SnapshotImage::taken_at_ms`].
    taken_at_ms: Millis,
    /// See [`SnapshotImage::shard_count`].
    shard_count: u32,
    /// See [`SnapshotImage::catalog_lsn`].
    catalog_lsn: Lsn,
    /// See [`SnapshotImage::catalog`].
    catalog: CatalogImage,
    /// Where each shard section is.
    shards: Vec<SectionHeader>,
}

/// The header of format 1, read by position.
#[derive(Deserialize)]
struct LegacyHeader {
    /// The image version of the time: always [`LEGACY_IMAGE_VERSION`].
    format_version: u32,
    /// See [`SnapshotImage::taken_at_ms`].
    taken_at_ms: Millis,
    /// See [`SnapshotImage::shard_count`].
    shard_count: u32,
    /// See [`SnapshotImage::catalog_lsn`].
    catalog_lsn: Lsn,
    /// See [`SnapshotImage::catalog`].
    catalog: CatalogImage,
    /// Where each shard section is.
    shards: Vec<SectionHeader>,
}

impl LegacyHeader {
    fn header(self) -> Header {
        Header {
            taken_at_ms: self.taken_at_ms,
            shard_count: self.shard_count,
            catalog_lsn: self.catalog_lsn,
            catalog: self.catalog,
            shards: self.shards,
        }
    }
}

/// One shard section's place in the payload.
#[derive(Serialize, Deserialize)]
struct SectionHeader {
    /// See [`ShardImage::lsn`].
    lsn: Lsn,
    /// See [`ShardImage::token_count`].
    tokens: u64,
    /// Length of the section in bytes.
    bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> SnapshotImage {
        SnapshotImage {
            taken_at_ms: 1_700_000_000_000,
            shard_count: 2,
            catalog_lsn: 9,
            catalog: CatalogImage::default(),
            shards: vec![
                ShardImage {
                    lsn: 7,
                    token_count: 0,
                    section: Bytes::from_static(b"abc"),
                    layout: Layout::Tagged,
                },
                ShardImage {
                    lsn: 8,
                    token_count: 0,
                    section: Bytes::from_static(b"de"),
                    layout: Layout::Tagged,
                },
            ],
        }
    }

    #[test]
    fn an_image_round_trips_and_reads_its_sections_in_place() {
        let payload = Bytes::from(image().encode().unwrap());
        let back = SnapshotImage::decode(&payload, 2).unwrap();
        assert_eq!(back.covered_lsn(), 7);
        assert_eq!(back.shard_count, 2);
        assert_eq!(&back.shards[0].section[..], b"abc");
        assert_eq!(&back.shards[1].section[..], b"de");
        assert!(SnapshotImage::decode(&payload, 3).is_err());
        let cut = payload.slice(..payload.len() - 1);
        assert!(SnapshotImage::decode(&cut, 2).is_err());
    }

    /// A restore allocates per shard: a shard count the sections do not
    /// match, or beyond any mode's, is refused before anything is sized by
    /// it (found by the `snapshot_file` fuzz target).
    #[test]
    fn a_shard_count_out_of_range_or_unlike_the_sections_is_refused() {
        for shard_count in [0, 1, 3, IMAGE_SHARDS_MAX + 1, u32::MAX] {
            let mut image = image();
            image.shard_count = shard_count;
            let payload = Bytes::from(image.encode().unwrap());
            let error = SnapshotImage::decode(&payload, 2).unwrap_err().to_string();
            assert!(error.contains("shard"), "{shard_count}: {error}");
        }
    }

    #[test]
    fn a_format_1_header_is_read_by_position() {
        let legacy = (
            LEGACY_IMAGE_VERSION,
            5i64,
            1u32,
            3u64,
            CatalogImage::default(),
            vec![(3u64, 0u64, 2u64)],
        );
        let mut payload = rmp_serde::to_vec(&legacy).unwrap();
        payload.extend_from_slice(b"xy");
        let image = SnapshotImage::decode(&Bytes::from(payload), 1).unwrap();
        assert_eq!(image.taken_at_ms, 5);
        assert_eq!(image.shards[0].layout, Layout::Untagged);
        assert_eq!(&image.shards[0].section[..], b"xy");
    }
}
