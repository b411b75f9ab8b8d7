//! Target `snapshot_file`: a data dir holding one snapshot file, restored
//! as `tokend inspect` and a start restore it: the file checked, its image
//! decoded, the catalog rebuilt, the token sections loaded.
//!
//! Input: a mode byte, then bytes.
//!
//! - Bit 0 clear: the bytes are the whole file, named for the LSN in its
//!   header (checksums and all, as found on disk).
//! - Bit 0 set: the next byte is a format version and the rest the
//!   payload; the file is written around it with a valid header (by
//!   [`SnapshotFiles::write`]), so that the fuzzer's changes reach the
//!   image decoder behind the CRCs.
//! - Bit 1: restore for as many shards as the image says (what `tokend
//!   inspect` does); clear: for 1 + bits 2–3 shards (what a start does with
//!   its configured shard count).
//!
//! A snapshot that restores is snapshotted again ([`EngineCapture`]); that
//! one must restore too, to the same tokens, and encode to the same
//! sections.

use crate::snapshot::file::{snapshot_file_name, SnapshotFiles, SNAPSHOT_HEADER_BYTES};
use crate::snapshot::EngineCapture;
use crate::storage::{MemoryStorage, Storage};
use crate::store::restore::{self, Restored};
use crate::wal::WalOptions;
use std::path::Path;
use std::sync::Arc;

/// Largest input worth trying: real snapshots of a few dozen tokens.
pub const INPUT_BYTES_MAX: usize = 16 << 10;

/// Flag: the input is a format version and a payload, not a whole file.
pub const FLAG_PAYLOAD: u8 = 1;
/// Flag: as many shards as the image says.
pub const FLAG_IMAGE_SHARDS: u8 = 2;

/// Where the file is put in memory.
const DIR: &str = "/fuzz/snapshot";

/// LSN of a snapshot written around a fuzzed payload.
const PAYLOAD_LSN: u64 = 7;

/// Offset of the format version in a snapshot file header.
const VERSION_AT: usize = 8;
/// Offset of the header CRC; the bytes before it are covered by it.
const HEADER_CRC_AT: usize = SNAPSHOT_HEADER_BYTES - 4;

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let storage = MemoryStorage::new();
    let dir = Path::new(DIR);
    if mode & FLAG_PAYLOAD == 0 {
        let lsn = rest.get(12..20).map_or(0, |field| {
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(field);
            u64::from_le_bytes(lsn)
        });
        storage.insert(dir.join(snapshot_file_name(lsn)), rest.to_vec());
    } else {
        let Some((&version, payload)) = rest.split_first() else {
            return;
        };
        write(&storage, dir, PAYLOAD_LSN, payload, u32::from(version));
    }
    let shard_count = (mode & FLAG_IMAGE_SHARDS == 0).then_some(usize::from((mode >> 2) & 3) + 1);
    let restored = match restore_dir(&storage, dir, shard_count) {
        Ok(restored) => restored,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let Some(used) = restored.report.snapshot.as_ref() else {
        panic!("a restore succeeded without the snapshot and without a log");
    };
    let lsn = used.lsn;
    let payload = resnapshot(&restored, lsn);
    let again_storage = MemoryStorage::new();
    write(
        &again_storage,
        dir,
        lsn,
        &payload,
        crate::snapshot::FORMAT_VERSION,
    );
    let again = match restore_dir(&again_storage, dir, Some(restored.shards.len())) {
        Ok(again) => again,
        Err(e) => panic!("a snapshot of a restored state does not restore: {e}"),
    };
    let tokens = |r: &Restored| r.shards.iter().map(|s| s.len()).collect::<Vec<_>>();
    assert_eq!(tokens(&again), tokens(&restored), "not the same tokens");
    assert_eq!(
        sections(&again, lsn),
        sections(&restored, lsn),
        "a restored snapshot does not encode the same again"
    );
}

/// Restores the data dir in memory, read-only.
fn restore_dir(
    storage: &MemoryStorage,
    dir: &Path,
    shard_count: Option<usize>,
) -> Result<Restored, String> {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    restore::read(
        &storage,
        dir,
        &WalOptions::default(),
        shard_count,
        super::RETENTION_MS,
    )
    .map_err(|e| e.to_string())
}

/// Writes a snapshot file of `payload` at `lsn`, with a valid header that
/// says `version`.
fn write(storage: &MemoryStorage, dir: &Path, lsn: u64, payload: &[u8], version: u32) {
    let files = SnapshotFiles::new(Arc::new(storage.clone()), dir);
    let written = match files.write(lsn, payload) {
        Ok(written) => written,
        Err(e) => panic!("writing a snapshot to memory failed: {e}"),
    };
    let Some(mut file) = storage.get(&written.file) else {
        panic!("the written snapshot is missing");
    };
    file[VERSION_AT..VERSION_AT + 4].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&file[..HEADER_CRC_AT]);
    file[HEADER_CRC_AT..SNAPSHOT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    storage.insert(written.file, file);
}

/// The payload of a snapshot of `restored`, every component at `lsn`.
fn resnapshot(restored: &Restored, lsn: u64) -> Vec<u8> {
    let image = EngineCapture::at_rest(&restored.catalog, &restored.shards, lsn, 0)
        .into_image(super::no_keys());
    match image.encode() {
        Ok(payload) => payload,
        Err(e) => panic!("a restored state does not encode: {e}"),
    }
}

/// The token sections a snapshot of `restored` holds.
fn sections(restored: &Restored, lsn: u64) -> Vec<bytes::Bytes> {
    EngineCapture::at_rest(&restored.catalog, &restored.shards, lsn, 0)
        .into_image(super::no_keys())
        .shards
        .into_iter()
        .map(|shard| shard.section)
        .collect()
}
