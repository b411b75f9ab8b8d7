//! The compact token table of one shard.
//!
//! Millions of tokens live in memory, so each is one fixed-size [`Slot`]
//! (80 bytes) in a chunked array instead of a separately allocated struct:
//!
//! - the two times every token has are six bytes each ([`SlotMillis`]);
//! - the collection and the creating key's name are 4-byte indexes into
//!   per-shard tables (a shard sees few distinct ones);
//! - metadata is packed inline ([`META_INLINE_BYTES`] bytes): key names are
//!   interned per shard and stored as small varint indexes, values as
//!   length-prefixed bytes; metadata that does not fit is kept whole in the
//!   token's rarely present extra part;
//! - the rarely present parts (data, redemption, …) are one optional `Arc`;
//! - the id → slot index is a raw hash table of 4-byte slot numbers
//!   (the id itself lives only in the slot).
//!
//! Chunks of [`CHUNK_SLOTS`] slots are shared (`Arc`) and copied on write:
//! a snapshot capture clones only the list of chunk pointers, and the shard
//! copies a chunk the first time it changes a slot in it while a capture
//! still holds it.
//!
//! Readers never see slots: [`TokenTable::view`] materializes a [`Token`]
//! (sharing the collection, the creator name and the extra part).

use crate::clock::Millis;
use crate::ids::{CollectionId, TokenId};
use crate::model::token::{self, NEVER};
use crate::model::{Collection, Metadata, Status, Token, TokenExtra, TokenType};
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Slots per chunk: 160 KiB chunks, small enough that copying one on write
/// costs microseconds, large enough that a capture clones few pointers.
///
/// Above glibc's mmap threshold (128 KiB, held fixed by `crate::malloc`), so
/// each chunk is a mapping of its own, not a piece of the heap of the thread
/// that created it. Shards run on the HTTP workers: long-lived chunks carved
/// from a worker's heap between its short-lived request buffers pinned the
/// freed space around them. With 88 KiB chunks, 3 of 6 runs of creating
/// 1 000 000 tokens in batches grew by 210–240 B per token instead of 120.
/// 2047 slots, not 2048, so that the allocation and glibc's 16-byte header
/// end just under a page boundary (40 pages, 64 bytes spare).
pub const CHUNK_SLOTS: usize = 2047;

const _: () = assert!(
    CHUNK_SLOTS * std::mem::size_of::<Option<Slot>>() >= crate::malloc::MMAP_THRESHOLD_BYTES,
    "a chunk gets a mapping of its own"
);
const _: () = assert!(
    {
        let mapped = CHUNK_SLOTS * std::mem::size_of::<Option<Slot>>() + 16;
        mapped.next_multiple_of(4096) - mapped <= 128
    },
    "a chunk's mapping ends close to a page boundary"
);
/// Bytes of packed metadata stored in the slot itself (with the count byte).
/// Sized so the slot is 80 bytes; three 8-character pairs take 31, three
/// pairs of 9 take 34.
pub const META_INLINE_BYTES: usize = 34;
/// Count byte of a slot whose metadata is in `TokenExtra::metadata_overflow`.
const META_OVERFLOW: u8 = u8::MAX;
/// Most distinct metadata key names a shard interns: clients choose keys
/// freely, so the table is bounded; metadata with a key past the bound is
/// stored whole (overflow) instead.
pub const KEYS_MAX: usize = 65_536;

/// Position of a slot in the table; stable while its token is held.
pub type SlotId = u32;

/// One token, compactly. Public within the crate for the snapshot codec.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Identity; also decides the owning shard.
    pub id: TokenId,
    /// Creation time; also the list order (with the id). The start of
    /// validity is the same unless the extra part says otherwise.
    pub created_at: SlotMillis,
    /// End of validity (exclusive); [`NEVER`] when it never expires.
    pub expires_at: SlotMillis,
    /// Everything rarely present, shared with the views handed to readers.
    pub extra: Option<Arc<TokenExtra>>,
    /// Index of the governing collection in the shard's collection table.
    pub collection: u32,
    /// Index of the creating key's name in the shard's name table.
    pub created_by: u32,
    /// Stored state; readers judge it with [`Slot::status_at`].
    pub status: Status,
    /// Token, card or bank.
    pub kind: TokenType,
    /// Packed metadata: a count byte (or `META_OVERFLOW`), then per pair
    /// a varint key index, a varint value length and the value bytes.
    pub meta: [u8; META_INLINE_BYTES],
}

// Memory per token is this slot plus the index entry: a field added to every
// token must be argued for here (the rare ones go in the extra part).
const _: () = assert!(std::mem::size_of::<Slot>() == 80, "a slot is 80 bytes");
const _: () = assert!(
    std::mem::size_of::<Option<Slot>>() == std::mem::size_of::<Slot>(),
    "an empty slot costs nothing more"
);

/// A millisecond instant in six bytes instead of eight: a slot holds two, so
/// this saves four of its 80 bytes.
///
/// Every instant a token holds fits in 0 ..= 2^48 − 2 (1970 to year 10889):
/// the API accepts instants up to
/// [`MILLIS_MAX`](crate::timestamp::MILLIS_MAX) (year 9999, under 2^48),
/// lifetimes are bounded (a century) past the clock's now, and [`NEVER`] has
/// the one code left, 2^48 − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMillis([u8; 6]);

impl SlotMillis {
    /// The code of [`NEVER`].
    const NEVER_CODE: u64 = (1 << 48) - 1;

    /// `ms` packed, or `None` when it is outside what a slot can hold (only
    /// a damaged snapshot says so).
    pub fn new(ms: Millis) -> Option<SlotMillis> {
        let code = if ms == NEVER {
            SlotMillis::NEVER_CODE
        } else {
            u64::try_from(ms)
                .ok()
                .filter(|code| *code < SlotMillis::NEVER_CODE)?
        };
        let bytes = code.to_le_bytes();
        Some(SlotMillis([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5],
        ]))
    }

    /// `ms` packed, moved into what a slot can hold: the API's instants,
    /// lifetimes and a clock past 1970 are all inside, so this moves nothing
    /// unless the clock itself is wrong by centuries.
    pub fn clamped(ms: Millis) -> SlotMillis {
        const LAST: Millis = SlotMillis::NEVER_CODE as Millis - 1;
        debug_assert!(
            ms == NEVER || (0..=LAST).contains(&ms),
            "an instant a slot cannot hold: {ms}"
        );
        let inside = if ms == NEVER { ms } else { ms.clamp(0, LAST) };
        SlotMillis::new(inside).unwrap_or(SlotMillis([0; 6]))
    }

    /// The instant.
    pub fn get(self) -> Millis {
        let [a, b, c, d, e, f] = self.0;
        let code = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
        if code == SlotMillis::NEVER_CODE {
            NEVER
        } else {
            // Under 2^48: fits.
            code as Millis
        }
    }
}

impl Slot {
    /// Creation time.
    pub fn created_at_ms(&self) -> Millis {
        self.created_at.get()
    }

    /// End of validity (exclusive); [`NEVER`] when it never expires.
    pub fn expires_at_ms(&self) -> Millis {
        self.expires_at.get()
    }

    /// Start of validity.
    pub fn active_from_ms(&self) -> Millis {
        self.extra
            .as_ref()
            .and_then(|e| e.active_from_ms)
            .unwrap_or_else(|| self.created_at_ms())
    }

    /// See [`Token::status_at`].
    pub fn status_at(&self, now: Millis) -> Status {
        token::status_at(
            self.status,
            self.expires_at_ms(),
            self.extra.as_deref(),
            now,
        )
    }

    /// See [`Token::tombstone_since`].
    pub fn tombstone_since(&self, now: Millis) -> Option<Millis> {
        token::tombstone_since(
            self.status_at(now),
            self.expires_at_ms(),
            self.extra.as_deref(),
        )
    }

    /// See [`Token::is_purged`].
    pub fn is_purged(&self, now: Millis, retention_ms: i64) -> bool {
        token::is_purged(self.tombstone_since(now), now, retention_ms)
    }

    /// The extra part, or an empty one.
    pub fn extra(&self) -> &TokenExtra {
        static EMPTY: std::sync::OnceLock<TokenExtra> = std::sync::OnceLock::new();
        self.extra
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(TokenExtra::default))
    }

    /// The extra part, allocated on first use (copied first if shared).
    pub fn extra_mut(&mut self) -> &mut TokenExtra {
        Arc::make_mut(self.extra.get_or_insert_with(Default::default))
    }

    /// Frees the tokenized value (on redeem and expiry).
    pub fn free_data(&mut self) {
        token::free_data(&mut self.extra);
    }

    /// Erases every client-supplied value (on delete).
    pub fn erase(&mut self) {
        self.free_data();
        self.meta = [0; META_INLINE_BYTES];
        if self
            .extra
            .as_ref()
            .is_some_and(|e| e.metadata_overflow.is_some())
        {
            self.extra_mut().metadata_overflow = None;
        }
    }

    /// Whether the metadata is held in the extra part instead of inline.
    pub fn meta_overflows(&self) -> bool {
        self.meta[0] == META_OVERFLOW
    }

    /// The inline pairs as `(key index, value)`; empty when they overflow.
    pub fn inline_pairs(&self) -> InlinePairs<'_> {
        let (count, rest) = match self.meta.split_first() {
            Some((&count, rest)) if count != META_OVERFLOW => (count, rest),
            _ => (0, &[][..]),
        };
        InlinePairs { left: count, rest }
    }
}

/// Iterates the inline metadata pairs of a slot.
pub struct InlinePairs<'a> {
    /// Pairs not yet read.
    left: u8,
    /// Bytes not yet read.
    rest: &'a [u8],
}

impl<'a> Iterator for InlinePairs<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = read_varint(&mut self.rest)?;
        let len = usize::try_from(read_varint(&mut self.rest)?).ok()?;
        let (value, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some((u32::try_from(key).ok()?, value))
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint from the front of `input`; `None` when it
/// is cut short or longer than 64 bits.
pub fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Packs inline metadata from `(key index, value)` pairs; `None` when it
/// does not fit [`META_INLINE_BYTES`].
pub fn pack_inline<'a>(
    pairs: impl IntoIterator<Item = (u32, &'a [u8])>,
) -> Option<[u8; META_INLINE_BYTES]> {
    let mut buf = Vec::with_capacity(META_INLINE_BYTES);
    buf.push(0u8);
    let mut count = 0u8;
    for (key, value) in pairs {
        count = count.checked_add(1).filter(|c| *c != META_OVERFLOW)?;
        write_varint(&mut buf, u64::from(key));
        write_varint(&mut buf, value.len() as u64);
        buf.extend_from_slice(value);
        if buf.len() > META_INLINE_BYTES {
            return None;
        }
    }
    buf[0] = count;
    let mut meta = [0u8; META_INLINE_BYTES];
    meta[..buf.len()].copy_from_slice(&buf);
    Some(meta)
}

/// An append-only table of shared strings (key names, metadata keys) with a
/// lookup by text. The list is shared with captures and copied on write.
#[derive(Clone, Default)]
pub struct StrTable {
    /// The strings by index.
    list: Arc<Vec<Arc<str>>>,
    /// Index of each string.
    index: HashMap<Arc<str>, u32>,
}

impl StrTable {
    /// The index of `text`, added if new; `None` once `max` strings exist.
    pub fn intern(&mut self, text: &str, max: usize) -> Option<u32> {
        if let Some(&at) = self.index.get(text) {
            return Some(at);
        }
        if self.list.len() >= max {
            return None;
        }
        let at = u32::try_from(self.list.len()).ok()?;
        let shared: Arc<str> = Arc::from(text);
        Arc::make_mut(&mut self.list).push(Arc::clone(&shared));
        self.index.insert(shared, at);
        Some(at)
    }

    /// The index of `text`, added if new, without a bound: for API key
    /// names, which the catalog holds in memory (far fewer than u32::MAX).
    pub fn intern_name(&mut self, text: &str) -> u32 {
        if let Some(&at) = self.index.get(text) {
            return at;
        }
        let at = self.list.len() as u32;
        let shared: Arc<str> = Arc::from(text);
        Arc::make_mut(&mut self.list).push(Arc::clone(&shared));
        self.index.insert(shared, at);
        at
    }

    /// The string at `at`.
    pub fn get(&self, at: u32) -> Option<&Arc<str>> {
        self.list.get(at as usize)
    }

    /// The strings, shared (for captures).
    pub fn shared(&self) -> Arc<Vec<Arc<str>>> {
        Arc::clone(&self.list)
    }
}

/// The collections a shard's tokens name, by index.
#[derive(Clone, Default)]
pub struct CollectionTable {
    /// The collections by index.
    list: Arc<Vec<Arc<Collection>>>,
    /// Index of each collection.
    index: HashMap<CollectionId, u32>,
}

impl CollectionTable {
    /// The index of `collection`, added if new.
    pub fn intern(&mut self, collection: &Arc<Collection>) -> u32 {
        let id = collection.record.id;
        if let Some(&at) = self.index.get(&id) {
            return at;
        }
        // Collections come from the catalog: far fewer than u32::MAX.
        let at = self.list.len() as u32;
        Arc::make_mut(&mut self.list).push(Arc::clone(collection));
        self.index.insert(id, at);
        at
    }

    /// The collection at `at`.
    pub fn get(&self, at: u32) -> Option<&Arc<Collection>> {
        self.list.get(at as usize)
    }

    /// The collections, shared (for captures).
    pub fn shared(&self) -> Arc<Vec<Arc<Collection>>> {
        Arc::clone(&self.list)
    }
}

/// The lookup tables slots index into.
#[derive(Clone, Default)]
pub struct Tables {
    /// Collections.
    pub collections: CollectionTable,
    /// Creator and redeemer key names.
    pub names: StrTable,
    /// Metadata key names.
    pub keys: StrTable,
}

/// A chunk of slots (`None`: a free slot).
type Chunk = Vec<Option<Slot>>;

/// A new chunk after `existing` others. The first grows as it fills (a
/// shard, or a restore part bound for one shard, may hold a handful of
/// tokens: with 256 shards, full first chunks would cost 22 MiB, and a
/// restore re-routing 256 sections to 256 shards 5.8 GiB); later ones are
/// allocated whole, so they never move.
fn new_chunk(existing: usize) -> Chunk {
    if existing == 0 {
        Vec::new()
    } else {
        Vec::with_capacity(CHUNK_SLOTS)
    }
}

/// The tokens of one shard.
pub struct TokenTable {
    /// The slots, in shared chunks of [`CHUNK_SLOTS`] (the last may be
    /// shorter); copied on write while a capture holds one.
    chunks: Vec<Arc<Chunk>>,
    /// Free slots, reused before the table grows.
    free: Vec<SlotId>,
    /// Id → slot, hashed with `hasher`.
    index: HashTable<SlotId>,
    /// Keyed hashing of ids: ids derived from client idempotency keys must
    /// not let a client aim at one bucket, so the seed is random per table.
    /// foldhash rather than SipHash: a 16-byte id hashes in a few
    /// nanoseconds, which a restore does millions of times.
    hasher: foldhash::quality::RandomState,
    /// Occupied slots.
    len: usize,
    /// Collections, names and metadata keys the slots index into.
    tables: Tables,
}

fn slot_in(chunks: &[Arc<Chunk>], at: SlotId) -> Option<&Slot> {
    let at = at as usize;
    chunks
        .get(at / CHUNK_SLOTS)?
        .get(at % CHUNK_SLOTS)?
        .as_ref()
}

impl Default for TokenTable {
    fn default() -> Self {
        Self::with_tables(Tables::default())
    }
}

impl TokenTable {
    /// An empty table over `tables`.
    pub fn with_tables(tables: Tables) -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: Default::default(),
            len: 0,
            tables,
        }
    }

    /// A table of restored slots (chunks full but the last); errs on a
    /// duplicate id.
    pub fn from_chunks(tables: Tables, chunks: Vec<Chunk>) -> Result<Self, TokenId> {
        let mut table = Self::with_tables(tables);
        let count: usize = chunks.iter().map(Vec::len).sum();
        table.index.reserve(count, |_| 0);
        table.chunks = chunks.into_iter().map(Arc::new).collect();
        let Self {
            chunks,
            index,
            hasher,
            free,
            len,
            ..
        } = &mut table;
        for (c, chunk) in chunks.iter().enumerate() {
            for (o, slot) in chunk.iter().enumerate() {
                let at = (c * CHUNK_SLOTS + o) as SlotId;
                let Some(slot) = slot else {
                    free.push(at);
                    continue;
                };
                // One probe finds a duplicate or the place to insert.
                let entry = index.entry(
                    hasher.hash_one(slot.id),
                    |&q| slot_in(chunks, q).is_some_and(|s| s.id == slot.id),
                    |&q| slot_in(chunks, q).map_or(0, |s| hasher.hash_one(s.id)),
                );
                match entry {
                    hashbrown::hash_table::Entry::Occupied(_) => return Err(slot.id),
                    hashbrown::hash_table::Entry::Vacant(vacant) => {
                        vacant.insert(at);
                    }
                }
                *len += 1;
            }
        }
        Ok(table)
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lookup tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The lookup tables, to intern into.
    pub fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The slot holding `id`.
    pub fn find(&self, id: TokenId) -> Option<SlotId> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&q| {
                slot_in(&self.chunks, q).is_some_and(|s| s.id == id)
            })
            .copied()
    }

    /// The slot at `at`.
    pub fn slot(&self, at: SlotId) -> Option<&Slot> {
        slot_in(&self.chunks, at)
    }

    /// The token `id`.
    pub fn get(&self, id: TokenId) -> Option<&Slot> {
        self.find(id).and_then(|at| self.slot(at))
    }

    /// The slot at `at`, to change (its chunk is copied first if shared).
    pub fn slot_mut(&mut self, at: SlotId) -> Option<&mut Slot> {
        let at = at as usize;
        let chunk = self.chunks.get_mut(at / CHUNK_SLOTS)?;
        Arc::make_mut(chunk).get_mut(at % CHUNK_SLOTS)?.as_mut()
    }

    /// Stores a new token (its id must not be held).
    pub fn insert(&mut self, slot: Slot) -> SlotId {
        debug_assert!(self.find(slot.id).is_none(), "ids are unique");
        let id = slot.id;
        let at = match self.free.pop() {
            Some(at) => {
                let at_usize = at as usize;
                let chunk = Arc::make_mut(&mut self.chunks[at_usize / CHUNK_SLOTS]);
                chunk[at_usize % CHUNK_SLOTS] = Some(slot);
                at
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
                    self.chunks.push(Arc::new(new_chunk(self.chunks.len())));
                }
                let c = self.chunks.len() - 1;
                let chunk = Arc::make_mut(&mut self.chunks[c]);
                chunk.push(Some(slot));
                (c * CHUNK_SLOTS + chunk.len() - 1) as SlotId
            }
        };
        let Self {
            chunks,
            index,
            hasher,
            ..
        } = self;
        index.insert_unique(hasher.hash_one(id), at, |&q| {
            slot_in(chunks, q).map_or(0, |s| hasher.hash_one(s.id))
        });
        self.len += 1;
        at
    }

    /// Removes the token `id`, returning it.
    pub fn remove(&mut self, id: TokenId) -> Option<Slot> {
        let hash = self.hasher.hash_one(id);
        let chunks = &self.chunks;
        let entry = self
            .index
            .find_entry(hash, |&q| slot_in(chunks, q).is_some_and(|s| s.id == id))
            .ok()?;
        let (at, _) = entry.remove();
        let at_usize = at as usize;
        let chunk = Arc::make_mut(&mut self.chunks[at_usize / CHUNK_SLOTS]);
        let slot = chunk[at_usize % CHUNK_SLOTS].take();
        self.free.push(at);
        self.len -= 1;
        slot
    }

    /// Every occupied slot with its position.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &Slot)> {
        iter_chunks(&self.chunks)
    }

    /// The metadata of `slot` as a reader sees it.
    pub fn metadata(&self, slot: &Slot) -> Metadata {
        metadata_of(slot, &self.tables.keys.list)
    }

    /// Packs `metadata` for a slot, interning its keys; returns the inline
    /// cell and, when it does not fit, the overflow to keep in the extra part.
    pub fn pack_metadata(&mut self, metadata: &Metadata) -> ([u8; META_INLINE_BYTES], bool) {
        let keys = &mut self.tables.keys;
        let mut indexed = Vec::with_capacity(4);
        for (key, value) in metadata.iter() {
            match keys.intern(key, KEYS_MAX) {
                Some(at) => indexed.push((at, value.as_bytes())),
                None => return overflow_cell(),
            }
        }
        match pack_inline(indexed) {
            Some(meta) => (meta, false),
            None => overflow_cell(),
        }
    }

    /// The token in `slot` as readers see it.
    pub fn view(&self, slot: &Slot) -> Arc<Token> {
        let tables = &self.tables;
        Arc::new(view_of(
            slot,
            &tables.collections.list,
            &tables.names.list,
            &tables.keys.list,
        ))
    }

    /// The tables as a capture shares them.
    fn capture_tables(&self) -> CapturedTables {
        CapturedTables {
            collections: self.tables.collections.shared(),
            names: self.tables.names.shared(),
            keys: self.tables.keys.shared(),
        }
    }

    /// The table as of now, cheaply: chunk and table pointers are shared and
    /// later changes copy on write.
    pub fn capture(&self) -> TableCapture {
        TableCapture {
            chunks: self.chunks.clone(),
            len: self.len,
            tables: self.capture_tables(),
        }
    }
}

/// The overflow marker cell, flagged as overflowing.
fn overflow_cell() -> ([u8; META_INLINE_BYTES], bool) {
    (overflow_meta(), true)
}

/// The inline cell of a slot whose metadata is kept whole in its extra part.
pub fn overflow_meta() -> [u8; META_INLINE_BYTES] {
    let mut meta = [0u8; META_INLINE_BYTES];
    meta[0] = META_OVERFLOW;
    meta
}

fn iter_chunks(chunks: &[Arc<Chunk>]) -> impl Iterator<Item = (SlotId, &Slot)> {
    chunks.iter().enumerate().flat_map(|(c, chunk)| {
        chunk
            .iter()
            .enumerate()
            .filter_map(move |(o, s)| s.as_ref().map(|s| ((c * CHUNK_SLOTS + o) as SlotId, s)))
    })
}

fn metadata_of(slot: &Slot, keys: &[Arc<str>]) -> Metadata {
    if slot.meta_overflows() {
        return slot.extra().metadata_overflow.clone().unwrap_or_default();
    }
    Metadata::from_pairs(slot.inline_pairs().filter_map(|(key, value)| {
        // Only interned keys and valid UTF-8 are ever packed.
        let key = keys.get(key as usize)?;
        Some((&**key, std::str::from_utf8(value).ok()?))
    }))
}

fn view_of(
    slot: &Slot,
    collections: &[Arc<Collection>],
    names: &[Arc<str>],
    keys: &[Arc<str>],
) -> Token {
    Token {
        id: slot.id,
        // Slots only ever index entries of their own tables.
        collection: Arc::clone(&collections[slot.collection as usize]),
        created_by: Arc::clone(&names[slot.created_by as usize]),
        created_at_ms: slot.created_at_ms(),
        active_from_ms: slot.active_from_ms(),
        expires_at_ms: slot.expires_at_ms(),
        metadata: metadata_of(slot, keys),
        extra: slot.extra.clone(),
        status: slot.status,
        kind: slot.kind,
    }
}

/// The lookup tables as a capture holds them.
#[derive(Clone)]
pub struct CapturedTables {
    /// Collections by index.
    pub collections: Arc<Vec<Arc<Collection>>>,
    /// Key names (creators, redeemers) by index.
    pub names: Arc<Vec<Arc<str>>>,
    /// Metadata keys by index.
    pub keys: Arc<Vec<Arc<str>>>,
}

/// A shard's tokens as of one moment (see [`TokenTable::capture`]).
#[derive(Clone)]
pub struct TableCapture {
    /// The chunks, shared.
    chunks: Vec<Arc<Chunk>>,
    /// Occupied slots.
    len: usize,
    /// The tables, shared.
    pub tables: CapturedTables,
}

impl TableCapture {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tokens.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        iter_chunks(&self.chunks).map(|(_, s)| s)
    }

    /// The tokens as readers see them.
    pub fn views(&self) -> impl Iterator<Item = Token> + '_ {
        let t = &self.tables;
        self.slots()
            .map(|s| view_of(s, &t.collections, &t.names, &t.keys))
    }
}

/// Builds restored chunks: slots are pushed in order, chunks are filled up
/// to [`CHUNK_SLOTS`].
#[derive(Default)]
pub struct ChunkBuilder {
    /// Full chunks and the one being filled (last).
    chunks: Vec<Chunk>,
}

impl ChunkBuilder {
    /// Appends a slot.
    pub fn push(&mut self, slot: Slot) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(new_chunk(self.chunks.len()));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(Some(slot));
        }
    }

    /// Appends everything `other` holds.
    pub fn append(&mut self, other: ChunkBuilder) {
        let aligned = self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS);
        if aligned {
            self.chunks.extend(other.chunks);
        } else {
            for slot in other.chunks.into_iter().flatten().flatten() {
                self.push(slot);
            }
        }
    }

    /// The chunks.
    pub fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }
}

/// A slot for a never-expiring active token with no metadata (tests).
#[cfg(test)]
pub(crate) fn plain_slot(id: TokenId) -> Slot {
    Slot {
        id,
        created_at: SlotMillis::clamped(0),
        expires_at: SlotMillis::clamped(NEVER),
        extra: None,
        collection: 0,
        created_by: 0,
        status: Status::Active,
        kind: TokenType::Token,
        meta: [0; META_INLINE_BYTES],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Option<Slot>>(), 80);
    }

    #[test]
    fn slot_times_hold_every_instant_a_token_can_have_and_refuse_the_rest() {
        let last = (1i64 << 48) - 2;
        for ms in [
            0,
            1,
            1_768_672_823_004,
            crate::timestamp::MILLIS_MAX,
            last,
            NEVER,
        ] {
            assert_eq!(SlotMillis::new(ms).map(SlotMillis::get), Some(ms), "{ms}");
            assert_eq!(SlotMillis::clamped(ms).get(), ms, "{ms}");
        }
        for ms in [-1, last + 1, NEVER - 1, Millis::MIN] {
            assert_eq!(SlotMillis::new(ms), None, "{ms}");
        }
        assert_ne!(SlotMillis::new(last), SlotMillis::new(NEVER));
    }

    #[test]
    fn varints_round_trip_and_reject_truncation() {
        for value in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, value);
            let mut input = &buf[..];
            assert_eq!(read_varint(&mut input), Some(value));
            assert!(input.is_empty());
            let mut cut = &buf[..buf.len() - 1];
            assert_eq!(read_varint(&mut cut), None);
        }
    }

    #[test]
    fn metadata_packs_inline_or_overflows() {
        let mut table = TokenTable::default();
        let small = Metadata::from_pairs([("order-id", "A1234567"), ("a", "ü")]);
        let (meta, overflow) = table.pack_metadata(&small);
        assert!(!overflow);
        let mut slot = plain_slot(TokenId::random());
        slot.meta = meta;
        assert_eq!(table.metadata(&slot), small);
        let big = Metadata::from_pairs([("k", "x".repeat(40).as_str())]);
        assert!(table.pack_metadata(&big).1, "40 bytes do not fit inline");
    }

    #[test]
    fn restored_chunks_index_every_slot_and_refuse_an_id_repeated_across_chunks() {
        let ids: Vec<TokenId> = (0..2 * CHUNK_SLOTS + 5)
            .map(|_| TokenId::random())
            .collect();
        let mut slots: Vec<Option<Slot>> = ids.iter().map(|id| Some(plain_slot(*id))).collect();
        // A freed slot in the middle is kept free.
        slots[7] = None;
        let chunks: Vec<Chunk> = slots.chunks(CHUNK_SLOTS).map(<[_]>::to_vec).collect();
        let table = TokenTable::from_chunks(Tables::default(), chunks.clone()).unwrap();
        assert_eq!(table.len(), ids.len() - 1);
        assert!(table.get(ids[7]).is_none());
        for (at, id) in ids.iter().enumerate().filter(|(at, _)| *at != 7) {
            assert_eq!(table.find(*id), Some(at as SlotId));
        }
        let mut repeated = chunks;
        repeated[2].push(Some(plain_slot(ids[CHUNK_SLOTS + 3])));
        let refused = TokenTable::from_chunks(Tables::default(), repeated).err();
        assert_eq!(refused, Some(ids[CHUNK_SLOTS + 3]));
    }

    #[test]
    fn slots_are_reused_and_found_by_id() {
        let mut table = TokenTable::default();
        let ids: Vec<TokenId> = (0..3000).map(|_| TokenId::random()).collect();
        for id in &ids {
            table.insert(plain_slot(*id));
        }
        assert_eq!(table.len(), 3000);
        let gone = table.find(ids[5]).unwrap();
        assert_eq!(table.remove(ids[5]).unwrap().id, ids[5]);
        assert!(table.get(ids[5]).is_none());
        let fresh = TokenId::random();
        assert_eq!(table.insert(plain_slot(fresh)), gone, "freed slot reused");
        for id in ids.iter().filter(|id| **id != ids[5]) {
            assert_eq!(table.get(*id).map(|s| s.id), Some(*id));
        }
    }

    #[test]
    fn a_capture_does_not_see_later_changes() {
        let mut table = TokenTable::default();
        let id = TokenId::random();
        let at = table.insert(plain_slot(id));
        let capture = table.capture();
        table.slot_mut(at).unwrap().status = Status::Redeemed;
        table.insert(plain_slot(TokenId::random()));
        assert_eq!(capture.len(), 1);
        assert_eq!(capture.slots().next().unwrap().status, Status::Active);
        assert_eq!(table.get(id).unwrap().status, Status::Redeemed);
    }

    #[test]
    fn restored_chunks_reject_duplicate_ids() {
        let id = TokenId::random();
        let mut builder = ChunkBuilder::default();
        builder.push(plain_slot(id));
        builder.push(plain_slot(id));
        assert_eq!(
            TokenTable::from_chunks(Tables::default(), builder.into_chunks()).err(),
            Some(id)
        );
    }
}
