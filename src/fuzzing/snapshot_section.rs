//! Target `snapshot_section`: one shard's token section decoded into shard
//! states, as a restore loads a snapshot, then re-encoded.
//!
//! Input: a byte whose bit 0 chooses the layout (0 tagged, as snapshot
//! format 2 writes it; 1 untagged, format 1) and whose bits 1–3 are the
//! shard count less one; 4 bytes, little endian, of token count (the
//! image header's); then the section. The catalog the section is loaded
//! against holds a collection for every id the section's table names, so
//! that its tokens get decoded rather than refused for an unknown
//! collection.
//!
//! A section that loads must hold the counted tokens, and each resulting
//! shard's section (as a snapshot would write it) must load again and
//! encode to the same bytes.

use crate::catalog::Catalog;
use crate::command::CatalogCommand;
use crate::ids::{AccountId, CollectionId};
use crate::model::collection::CollectionRecord;
use crate::model::{Account, Liveness};
use crate::shard::ShardState;
use crate::snapshot::image::ShardImage;
use crate::snapshot::load;
use crate::snapshot::section::{self, Layout};
use bytes::Bytes;
use uuid::Uuid;

/// Largest input worth trying: a section of a few dozen real tokens.
pub const INPUT_BYTES_MAX: usize = 16 << 10;

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Some((count, bytes)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let layout = if choice & 1 == 0 {
        Layout::Tagged
    } else {
        Layout::Untagged
    };
    let shard_count = usize::from((choice >> 1) & 7) + 1;
    let token_count = u32::from_le_bytes(*count) as usize;
    let Ok(tables) = section::read_tables(bytes) else {
        return;
    };
    let catalog = catalog_for(&tables.collections);
    let image = ShardImage {
        lsn: 1,
        token_count,
        section: Bytes::copy_from_slice(bytes),
        layout,
    };
    let states = match load::shard_states(
        &[image],
        &catalog,
        shard_count,
        super::RETENTION_MS,
        super::no_keys(),
    ) {
        Ok(states) => states,
        Err(reason) => {
            assert!(!reason.is_empty());
            return;
        }
    };
    assert_eq!(states.len(), shard_count);
    let loaded: usize = states.iter().map(ShardState::len).sum();
    assert_eq!(loaded, token_count, "not the counted tokens");
    for state in &states {
        let encoded = section::encode(&state.capture(), super::no_keys());
        let image = ShardImage {
            lsn: 1,
            token_count: state.len(),
            section: Bytes::from(encoded.clone()),
            layout: Layout::Tagged,
        };
        let again = match load::shard_states(
            &[image],
            &catalog,
            1,
            super::RETENTION_MS,
            super::no_keys(),
        ) {
            Ok(again) => again,
            Err(reason) => panic!("a section this build encoded does not load: {reason}"),
        };
        assert_eq!(
            section::encode(&again[0].capture(), super::no_keys()),
            encoded,
            "a loaded section does not encode the same again"
        );
    }
}

/// A catalog with one account owning a collection of each id.
pub(crate) fn catalog_for(collections: &[CollectionId]) -> Catalog {
    let catalog = Catalog::new();
    let account_id = AccountId(Uuid::from_u128(1));
    let account = Account {
        id: account_id,
        name: "fuzz".into(),
        liveness: Liveness::Test,
        created_at_ms: 0,
    };
    let created = catalog.apply(&CatalogCommand::CreateAccount(account));
    assert!(created.is_ok(), "a new account is refused: {created:?}");
    for id in collections {
        let record = CollectionRecord {
            id: *id,
            account_id,
            name: "fuzz".into(),
            description: None,
            issuer: None,
            issuer_img: None,
            img: None,
            issuer_website: None,
            value: Vec::new(),
            merchants: Vec::new(),
            token_expires_after_secs: None,
            data_schema: None,
            liveness: Liveness::Test,
            created_at_ms: 0,
            hold_ttl_secs_max: None,
            void_window_secs: None,
        };
        // A section naming a collection twice: the second is refused, the
        // first serves both.
        let _ = catalog.apply(&CatalogCommand::CreateCollection(Box::new(record)));
    }
    catalog
}
