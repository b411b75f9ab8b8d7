//! An image's token sections back into shard states: the sections decode in
//! parallel, each token routed to the shard that owns it under the current
//! shard count (which may differ from the image's), then each shard builds
//! its indexes and timers in parallel.

use super::image::ShardImage;
use super::section::{self, Remap, SectionTables};
use crate::catalog::Catalog;
use crate::keyring::Keyring;
use crate::shard::table::{ChunkBuilder, Tables, TokenTable, KEYS_MAX};
use crate::shard::ShardState;
use std::sync::Arc;

/// Rebuilds `shard_count` shards from the image's shard sections, opening
/// sealed values with `keyring`; an error names the section or token that
/// does not rebuild (and the key id of a value that does not open).
pub fn shard_states(
    images: &[ShardImage],
    catalog: &Catalog,
    shard_count: usize,
    retention_ms: i64,
    keyring: &Keyring,
) -> Result<Vec<ShardState>, String> {
    let sections = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            section::read_tables(&image.section).map_err(|e| format!("shard section {i}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (tables, remaps) = union_tables(&sections, catalog)?;
    let work: Vec<_> = sections.iter().zip(&remaps).zip(images).collect();
    let decoded = parallel(work, |((section, remap), image)| {
        let mut targets: Vec<ChunkBuilder> =
            (0..shard_count).map(|_| ChunkBuilder::default()).collect();
        section::decode_tokens(
            section,
            image.layout,
            image.token_count,
            remap,
            &mut targets,
            keyring,
        )
        .map(|()| targets)
    });
    let mut per_shard: Vec<Vec<ChunkBuilder>> = (0..shard_count).map(|_| Vec::new()).collect();
    for (i, targets) in decoded.into_iter().enumerate() {
        let targets = targets.map_err(|e| format!("shard section {i}: {e}"))?;
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
            .map_err(|id| format!("token {id} appears twice"))?;
        Ok(ShardState::from_table(table, retention_ms))
    });
    states.into_iter().collect()
}

/// The tables every restored shard starts with: the union of the sections'
/// (small) tables, so that a section's indexes map the same way whichever
/// shard a token lands in; and how each section's indexes map onto it.
fn union_tables<'a>(
    sections: &[SectionTables<'a>],
    catalog: &Catalog,
) -> Result<(Tables, Vec<Remap<'a>>), String> {
    let mut tables = Tables::default();
    let mut maps = Vec::with_capacity(sections.len());
    for (i, section) in sections.iter().enumerate() {
        let collections = section
            .collections
            .iter()
            .map(|id| {
                let collection = catalog
                    .collection(*id)
                    .ok_or_else(|| format!("shard section {i} names unknown collection {id}"))?;
                Ok(tables.collections.intern(&collection))
            })
            .collect::<Result<Vec<_>, String>>()?;
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
    let remaps = maps
        .into_iter()
        .zip(sections)
        .map(|((collections, names, keys), section)| Remap {
            collections,
            names,
            keys,
            key_names: section.keys.clone(),
            shard_names: Arc::clone(&shard_names),
        })
        .collect();
    Ok((tables, remaps))
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
