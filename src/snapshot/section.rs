//! The binary encoding of one shard's tokens in a snapshot image.
//!
//! MessagePack with serde cost a map or array, strings for ids and an
//! allocation per string for every token; this encoding mirrors the shard's
//! compact slots instead, so a section encodes and decodes with no
//! per-token allocation (only the rare extra parts allocate). Integers are
//! unsigned LEB128 varints unless a width is given; signed deltas are
//! zigzag varints of the wrapping difference (exact for any values).
//!
//! ```text
//! section = names collections keys token*
//! names       = varint count, count × (varint len, UTF-8)   key names (creators, redeemers)
//! collections = varint count, count × 16-byte id
//! keys        = varint count, count × (varint len, UTF-8)   metadata key names
//! token =
//!   16  id
//!   varint collection index, varint creator index
//!   8   created_at_ms (i64 LE)
//!   zigzag active_from_ms − created_at_ms
//!   1   flags: bits 0–1 status (active, redeemed, expired, deleted),
//!       bits 2–3 type (token, card, bank), bit 4 never expires, bit 5 extra follows,
//!       bit 6 held (status bits 0; the extra part's lifecycle has the hold),
//!       bit 7 the extra part holds sealed values (tags 9, 10)
//!   zigzag expires_at_ms − created_at_ms         (absent when it never expires)
//!   varint pair count, per pair:
//!       varint k: k even → key index k/2; k odd → key of (k−1)/2 bytes follows
//!       varint value len, value
//!   extra (when flagged), tagged fields ending with tag 0:
//!       varint tag, varint length, that many bytes; tags:
//!       1 description (UTF-8)        2 data (JSON text)
//!       3 encryption: byte, bit 0 cek and bit 1 kek present, then for each
//!         present key opt-string key, opt-string alg
//!       4 children (16-byte ids)     5 create fingerprint (16 bytes)
//!       6 redemption: opt-string merchant, opt-string idempotency key,
//!         8-byte redeemed_at_ms, varint redeemer (as a metadata key above)
//!       7 deleted_at_ms (8 bytes)
//!       8 lifecycle (holds and voided redemptions): MessagePack with named
//!         fields (rare, so compactness matters less than growing safely)
//!       9 data sealed (in place of 2)
//!      10 encryption sealed (in place of 3): its JSON text sealed
//!       another tag: a field a later build added as optional; skipped
//!   opt-string = varint 0 (none) or varint len+1, UTF-8
//! ```
//!
//! Tokens are written in slot order, which for a shard that only grew is
//! creation order: restore then sorts the list indexes in linear time.
//!
//! With data keys (see [`crate::keyring`]) `data` and `encryption` are
//! written sealed (the [`crate::keyring::seal`] format, bound to the token
//! id), and the token's flags say so: a build that predates sealing refuses
//! the section (an unknown flag) instead of skipping the sealed fields as
//! unknown and losing the data. Plain `data` and `encryption` (tags 2, 3)
//! still read with or without keys.
//!
//! Snapshots of format 1 hold [`Layout::Untagged`] sections: the same,
//! except that the extra part is its fields in the order above, each behind
//! a presence byte, with no tags and no end.

use crate::clock::Millis;
use crate::ids::{CollectionId, TokenId};
use crate::keyring::{Field, Keyring};
use crate::model::metadata::PAIRS_MAX;
use crate::model::token::NEVER;
use crate::model::{
    Encryption, EncryptionKey, Lifecycle, Metadata, Redemption, Status, TokenExtra, TokenType,
};
use crate::shard::table::{
    overflow_meta, pack_inline, read_varint, write_varint, ChunkBuilder, Slot, SlotMillis,
    TableCapture, META_INLINE_BYTES,
};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How a section's extra parts are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Snapshot format 1: fields in a fixed order.
    Untagged,
    /// Snapshot format 2: tagged fields, so one added later is skipped by
    /// builds that do not know it.
    Tagged,
}

/// Flag: the token never expires (no expiry delta follows).
const FLAG_NEVER: u8 = 1 << 4;
/// Flag: an extra part follows.
const FLAG_EXTRA: u8 = 1 << 5;
/// Flag: the token is held (its status bits say active). Builds before
/// holds refuse the section (unknown flag) rather than lose the hold.
const FLAG_HELD: u8 = 1 << 6;
/// Flag: the extra part holds sealed values. Builds before sealing refuse
/// the section (unknown flag) rather than lose the values.
const FLAG_SEALED: u8 = 1 << 7;
// Every bit of the flags byte is now in use: a later per-token flag goes
// into the extra part as a tagged field.

/// Tags of the extra part's fields (see the module docs).
mod tag {
    /// Ends the extra part.
    pub const END: u64 = 0;
    /// Free text.
    pub const DESCRIPTION: u64 = 1;
    /// The tokenized value as JSON text.
    pub const DATA: u64 = 2;
    /// Envelope-encryption metadata.
    pub const ENCRYPTION: u64 = 3;
    /// Child token ids.
    pub const CHILDREN: u64 = 4;
    /// Digest of an idempotent create.
    pub const FINGERPRINT: u64 = 5;
    /// How the token was spent.
    pub const REDEMPTION: u64 = 6;
    /// When the token was deleted.
    pub const DELETED_AT: u64 = 7;
    /// Holds and voided redemptions.
    pub const LIFECYCLE: u64 = 8;
    /// The tokenized value, sealed.
    pub const SEALED_DATA: u64 = 9;
    /// Envelope-encryption metadata as JSON, sealed.
    pub const SEALED_ENCRYPTION: u64 = 10;
}

fn status_code(status: Status) -> u8 {
    match status {
        Status::Active | Status::Held => 0,
        Status::Redeemed => 1,
        Status::Expired => 2,
        Status::Deleted => 3,
    }
}

fn kind_code(kind: TokenType) -> u8 {
    match kind {
        TokenType::Token => 0,
        TokenType::Card => 1,
        TokenType::Bank => 2,
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    write_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            write_varint(out, text.len() as u64 + 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// A key name as a reference into the section's name table (`2 × index`),
/// or inline (`2 × length + 1`, then the bytes) when it is not in it.
fn put_name_ref(out: &mut Vec<u8>, name: &str, index: &HashMap<&str, usize>) {
    match index.get(name) {
        Some(&at) => write_varint(out, (at as u64) << 1),
        None => {
            write_varint(out, ((name.len() as u64) << 1) | 1);
            out.extend_from_slice(name.as_bytes());
        }
    }
}

/// Encodes a captured shard, in the [`Layout::Tagged`] layout, sealing
/// token values when `keyring` has keys.
pub fn encode(capture: &TableCapture, keyring: &Keyring) -> Vec<u8> {
    let tables = &capture.tables;
    // About 60 bytes per token with three short metadata pairs.
    let mut out = Vec::with_capacity(capture.len() * 64 + 1024);
    write_varint(&mut out, tables.names.len() as u64);
    for name in tables.names.iter() {
        put_str(&mut out, name);
    }
    write_varint(&mut out, tables.collections.len() as u64);
    for collection in tables.collections.iter() {
        out.extend_from_slice(collection.record.id.0.as_bytes());
    }
    write_varint(&mut out, tables.keys.len() as u64);
    for key in tables.keys.iter() {
        put_str(&mut out, key);
    }
    let name_index: HashMap<&str, usize> = tables
        .names
        .iter()
        .enumerate()
        .map(|(at, name)| (&**name, at))
        .collect();
    let mut field = Vec::new();
    for slot in capture.slots() {
        encode_token(&mut out, slot, &name_index, &mut field, keyring);
    }
    out
}

fn encode_token(
    out: &mut Vec<u8>,
    slot: &Slot,
    name_index: &HashMap<&str, usize>,
    field: &mut Vec<u8>,
    keyring: &Keyring,
) {
    out.extend_from_slice(slot.id.0.as_bytes());
    write_varint(out, u64::from(slot.collection));
    write_varint(out, u64::from(slot.created_by));
    out.extend_from_slice(&slot.created_at_ms().to_le_bytes());
    write_varint(
        out,
        zigzag(slot.active_from_ms().wrapping_sub(slot.created_at_ms())),
    );
    let never = slot.expires_at_ms() == NEVER;
    let extra = slot.extra.as_deref();
    let sealed = keyring.is_on()
        && extra.is_some_and(|extra| extra.data.is_some() || extra.encryption.is_some());
    let flags = status_code(slot.status)
        | (kind_code(slot.kind) << 2)
        | if never { FLAG_NEVER } else { 0 }
        | if extra.is_some() { FLAG_EXTRA } else { 0 }
        | if slot.status == Status::Held {
            FLAG_HELD
        } else {
            0
        }
        | if sealed { FLAG_SEALED } else { 0 };
    out.push(flags);
    if !never {
        write_varint(
            out,
            zigzag(slot.expires_at_ms().wrapping_sub(slot.created_at_ms())),
        );
    }
    encode_metadata(out, slot);
    if let Some(extra) = extra {
        let sealer = Sealer {
            keyring,
            token: slot.id.0.as_bytes(),
        };
        encode_extra(out, extra, name_index, field, &sealer);
    }
}

/// Seals the values of one token's extra part.
struct Sealer<'a> {
    /// The keys (none: values are written plain).
    keyring: &'a Keyring,
    /// The token the values belong to.
    token: &'a [u8; 16],
}

/// The JSON text that is sealed for a token's `encryption`.
fn encryption_json(encryption: &Encryption) -> Vec<u8> {
    // Plain data into a Vec: encoding cannot fail.
    serde_json::to_vec(encryption).unwrap_or_else(|e| panic!("encryption encoding failed: {e}"))
}

fn encode_metadata(out: &mut Vec<u8>, slot: &Slot) {
    match slot.extra().metadata_overflow.as_ref() {
        Some(metadata) if slot.meta_overflows() => {
            let pairs: Vec<(&str, &str)> = metadata.iter().collect();
            write_varint(out, pairs.len() as u64);
            for (key, value) in pairs {
                write_varint(out, ((key.len() as u64) << 1) | 1);
                out.extend_from_slice(key.as_bytes());
                put_str(out, value);
            }
        }
        _ => {
            let count = slot.inline_pairs().count();
            write_varint(out, count as u64);
            for (key, value) in slot.inline_pairs() {
                write_varint(out, u64::from(key) << 1);
                write_varint(out, value.len() as u64);
                out.extend_from_slice(value);
            }
        }
    }
}

/// Writes the extra part's present fields, each tagged, then the end tag.
/// `field` is scratch space for one field's bytes.
fn encode_extra(
    out: &mut Vec<u8>,
    extra: &TokenExtra,
    name_index: &HashMap<&str, usize>,
    field: &mut Vec<u8>,
    sealer: &Sealer<'_>,
) {
    let mut put = |tag: u64, write: &dyn Fn(&mut Vec<u8>)| {
        field.clear();
        write(field);
        write_varint(out, tag);
        write_varint(out, field.len() as u64);
        out.extend_from_slice(field);
    };
    if let Some(description) = extra.description.as_deref() {
        put(tag::DESCRIPTION, &|f| {
            f.extend_from_slice(description.as_bytes())
        });
    }
    let data = extra.data.as_deref().map(|data| data.get().as_bytes());
    let sealed_data = data.and_then(|data| sealer.keyring.seal(Field::Data, sealer.token, data));
    let sealed_encryption = extra.encryption.as_deref().and_then(|encryption| {
        let json = encryption_json(encryption);
        sealer.keyring.seal(Field::Encryption, sealer.token, &json)
    });
    if let Some(sealed) = &sealed_data {
        put(tag::SEALED_DATA, &|f| f.extend_from_slice(sealed));
    } else if let Some(data) = data {
        put(tag::DATA, &|f| f.extend_from_slice(data));
    }
    if let Some(sealed) = &sealed_encryption {
        put(tag::SEALED_ENCRYPTION, &|f| f.extend_from_slice(sealed));
    } else if let Some(encryption) = extra.encryption.as_deref() {
        put(tag::ENCRYPTION, &|f| {
            let keys = [&encryption.cek, &encryption.kek];
            f.push(u8::from(keys[0].is_some()) | (u8::from(keys[1].is_some()) << 1));
            for key in keys.into_iter().flatten() {
                put_opt_str(f, key.key.as_deref());
                put_opt_str(f, key.alg.as_deref());
            }
        });
    }
    if !extra.children.is_empty() {
        put(tag::CHILDREN, &|f| {
            for child in &extra.children {
                f.extend_from_slice(child.0.as_bytes());
            }
        });
    }
    if let Some(fingerprint) = &extra.create_fingerprint {
        put(tag::FINGERPRINT, &|f| f.extend_from_slice(fingerprint));
    }
    if let Some(r) = &extra.redemption {
        put(tag::REDEMPTION, &|f| {
            put_opt_str(f, r.merchant_id.as_deref());
            put_opt_str(f, r.idempotency_key.as_deref());
            f.extend_from_slice(&r.redeemed_at_ms.to_le_bytes());
            // The shard interns every redeemer name into its name table.
            put_name_ref(f, &r.redeemed_by, name_index);
        });
    }
    if let Some(at) = extra.deleted_at_ms {
        put(tag::DELETED_AT, &|f| f.extend_from_slice(&at.to_le_bytes()));
    }
    if let Some(lifecycle) = extra.lifecycle.as_deref() {
        put(tag::LIFECYCLE, &|f| {
            // Plain data into a Vec: encoding cannot fail.
            let written = rmp_serde::encode::write_named(f, lifecycle);
            assert!(written.is_ok(), "lifecycle encoding failed: {written:?}");
        });
    }
    write_varint(out, tag::END);
}

/// Reads a section; every method fails with a message naming what was cut
/// short or wrong.
struct Reader<'a> {
    /// What is left.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| format!("cut short in {what}"))?;
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.bytes(1, what)?[0])
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{what}: flag byte {other}")),
        }
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        read_varint(&mut self.rest).ok_or_else(|| format!("bad varint in {what}"))
    }

    fn len(&mut self, what: &str) -> Result<usize, String> {
        let len = self.varint(what)?;
        usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.rest.len())
            .ok_or_else(|| format!("{what}: length {len} past the end"))
    }

    fn index(&mut self, what: &str) -> Result<usize, String> {
        usize::try_from(self.varint(what)?).map_err(|_| format!("{what}: index too large"))
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        let bytes = self.bytes(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Ok(i64::from_le_bytes(b))
    }

    fn id(&mut self, what: &str) -> Result<Uuid, String> {
        let bytes = self.bytes(16, what)?;
        let mut b = [0u8; 16];
        b.copy_from_slice(bytes);
        Ok(Uuid::from_bytes(b))
    }

    /// A count, then that many 16-byte ids. The count is checked against
    /// the bytes left before anything is allocated, so a damaged count is an
    /// error, not a huge allocation.
    fn ids(&mut self, what: &str) -> Result<Vec<Uuid>, String> {
        let count = self.varint(what)?;
        let count = usize::try_from(count)
            .ok()
            .filter(|c| c.checked_mul(16).is_some_and(|b| b <= self.rest.len()))
            .ok_or_else(|| format!("{what}: count {count} past the end"))?;
        (0..count).map(|_| self.id(what)).collect()
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let len = self.len(what)?;
        utf8(self.bytes(len, what)?, what)
    }

    fn opt_str(&mut self, what: &str) -> Result<Option<&'a str>, String> {
        match self.varint(what)? {
            0 => Ok(None),
            n => {
                let len = usize::try_from(n - 1)
                    .ok()
                    .filter(|len| *len <= self.rest.len())
                    .ok_or_else(|| format!("{what}: length past the end"))?;
                Ok(Some(utf8(self.bytes(len, what)?, what)?))
            }
        }
    }

    /// A name reference (see [`put_name_ref`]): an index into a table of
    /// `count` names, or the name inline.
    fn name_ref(&mut self, what: &str, count: usize) -> Result<NameRef<'a>, String> {
        let k = self.varint(what)?;
        if k & 1 == 0 {
            let at = usize::try_from(k >> 1).map_err(|_| format!("{what}: index too large"))?;
            if at < count {
                Ok(NameRef::Index(at))
            } else {
                Err(format!("{what}: index {at} out of range"))
            }
        } else {
            let len = usize::try_from(k >> 1)
                .ok()
                .filter(|len| *len <= self.rest.len())
                .ok_or_else(|| format!("{what}: length past the end"))?;
            Ok(NameRef::Inline(utf8(self.bytes(len, what)?, what)?))
        }
    }

    /// Fails unless everything was read.
    fn finish(&self, what: &str) -> Result<(), String> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(format!("{what}: {n} bytes left over")),
        }
    }
}

/// A name read through [`Reader::name_ref`].
enum NameRef<'a> {
    /// The name at this index of the table it was read against.
    Index(usize),
    /// The name itself.
    Inline(&'a str),
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("{what}: not UTF-8"))
}

/// The lookup tables at the head of a section, and the token bytes after.
pub struct SectionTables<'a> {
    /// Key names (creators, redeemers).
    pub names: Vec<&'a str>,
    /// Collections.
    pub collections: Vec<CollectionId>,
    /// Metadata keys.
    pub keys: Vec<&'a str>,
    /// The encoded tokens.
    tokens: &'a [u8],
}

/// Reads the tables at the head of `section`.
pub fn read_tables(section: &[u8]) -> Result<SectionTables<'_>, String> {
    let mut r = Reader { rest: section };
    let count = r.len("name count")?;
    let names = (0..count)
        .map(|_| r.str("name"))
        .collect::<Result<Vec<_>, _>>()?;
    let collections: Vec<CollectionId> = r
        .ids("collection ids")?
        .into_iter()
        .map(CollectionId)
        .collect();
    let count = r.len("key count")?;
    let keys = (0..count)
        .map(|_| r.str("metadata key"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SectionTables {
        names,
        collections,
        keys,
        tokens: r.rest,
    })
}

/// How a section's table indexes map onto the restoring shards' tables.
pub struct Remap<'a> {
    /// Section collection index → shard collection index.
    pub collections: Vec<u32>,
    /// Section name index → shard name index.
    pub names: Vec<u32>,
    /// Section key index → shard key index (`None`: the shard's key table is
    /// full; such metadata is kept whole).
    pub keys: Vec<Option<u32>>,
    /// The section's key names (for metadata kept whole).
    pub key_names: Vec<&'a str>,
    /// The shards' name table (redeemer names are shared from it).
    pub shard_names: Arc<Vec<Arc<str>>>,
}

/// Decodes the tokens after the tables, laid out as `layout`, into
/// `targets`, each to the shard `id.shard(targets.len())` owns; checks there
/// are exactly `count`. Sealed values open with `keyring`; one that does not
/// fails the decode, naming its key id.
pub fn decode_tokens(
    tables: &SectionTables<'_>,
    layout: Layout,
    count: usize,
    remap: &Remap<'_>,
    targets: &mut [ChunkBuilder],
    keyring: &Keyring,
) -> Result<(), String> {
    let mut r = Reader {
        rest: tables.tokens,
    };
    let mut decoded = 0usize;
    let mut pairs: Vec<(Option<u32>, &str, &str)> = Vec::with_capacity(4);
    while !r.rest.is_empty() {
        let id = TokenId(r.id("token id")?);
        let token = decode_token(&mut r, id, layout, remap, &mut pairs, keyring)
            .map_err(|e| format!("token {id}: {e}"))?;
        targets[id.shard(targets.len())].push(token);
        decoded += 1;
    }
    if decoded != count {
        return Err(format!("{decoded} tokens where the header says {count}"));
    }
    Ok(())
}

/// The fixed part of a token, after its id.
struct Head {
    /// Shard collection index.
    collection: u32,
    /// Shard name index of the creator.
    created_by: u32,
    /// Creation time.
    created_at_ms: Millis,
    /// Start of validity.
    active_from_ms: Millis,
    /// Stored status.
    status: Status,
    /// Token, card or bank.
    kind: TokenType,
    /// End of validity.
    expires_at_ms: Millis,
    /// Whether an extra part follows the metadata.
    has_extra: bool,
}

fn decode_token<'a>(
    r: &mut Reader<'a>,
    id: TokenId,
    layout: Layout,
    remap: &Remap<'a>,
    pairs: &mut Vec<(Option<u32>, &'a str, &'a str)>,
    keyring: &Keyring,
) -> Result<Slot, String> {
    let head = decode_head(r, remap)?;
    let inline = decode_metadata(r, remap, pairs)?;
    let mut extra = match (head.has_extra, layout) {
        (false, _) => TokenExtra::default(),
        (true, Layout::Tagged) => decode_tagged_extra(r, remap, id, keyring)?,
        (true, Layout::Untagged) => decode_untagged_extra(r, remap)?,
    };
    if head.active_from_ms != head.created_at_ms {
        extra.active_from_ms = Some(head.active_from_ms);
    }
    let has_hold = extra.lifecycle.as_ref().is_some_and(|l| l.hold.is_some());
    if has_hold != (head.status == Status::Held) {
        return Err(format!(
            "token {id}: status {} with{} a hold",
            head.status.as_str(),
            if has_hold { "" } else { "out" }
        ));
    }
    let meta = match inline {
        Some(meta) => meta,
        None => {
            extra.metadata_overflow = Some(Metadata::from_pairs(
                pairs.iter().map(|(_, key, value)| (*key, *value)),
            ));
            overflow_meta()
        }
    };
    let time = |ms: Millis, what: &str| {
        SlotMillis::new(ms).ok_or_else(|| format!("token {id}: {what} {ms} out of range"))
    };
    Ok(Slot {
        id,
        created_at: time(head.created_at_ms, "created_at")?,
        expires_at: time(head.expires_at_ms, "expires_at")?,
        extra: (!extra.is_empty()).then(|| Arc::new(extra)),
        collection: head.collection,
        created_by: head.created_by,
        status: head.status,
        kind: head.kind,
        meta,
    })
}

fn decode_head(r: &mut Reader<'_>, remap: &Remap<'_>) -> Result<Head, String> {
    let collection = r.index("collection index")?;
    let collection = *remap
        .collections
        .get(collection)
        .ok_or_else(|| format!("collection index {collection} out of range"))?;
    let created_by = r.index("creator index")?;
    let created_by = *remap
        .names
        .get(created_by)
        .ok_or_else(|| format!("creator index {created_by} out of range"))?;
    let created_at_ms = r.i64("created_at")?;
    let active_from_ms = created_at_ms.wrapping_add(unzigzag(r.varint("active_from")?));
    let flags = r.byte("flags")?;
    let status = match (flags & 3, flags & FLAG_HELD != 0) {
        (0, false) => Status::Active,
        (0, true) => Status::Held,
        (1, false) => Status::Redeemed,
        (2, false) => Status::Expired,
        (3, false) => Status::Deleted,
        _ => return Err(format!("held flag on a final status (flags {flags:#04x})")),
    };
    let kind = match (flags >> 2) & 3 {
        0 => TokenType::Token,
        1 => TokenType::Card,
        2 => TokenType::Bank,
        _ => return Err("unknown token type".into()),
    };
    let expires_at_ms = if flags & FLAG_NEVER != 0 {
        NEVER
    } else {
        created_at_ms.wrapping_add(unzigzag(r.varint("expires_at")?))
    };
    Ok(Head {
        collection,
        created_by,
        created_at_ms,
        active_from_ms,
        status,
        kind,
        expires_at_ms,
        has_extra: flags & FLAG_EXTRA != 0,
    })
}

/// Reads the metadata pairs into `pairs` and packs them inline; `None` when
/// they do not fit the slot (kept whole in the extra part instead).
fn decode_metadata<'a>(
    r: &mut Reader<'a>,
    remap: &Remap<'a>,
    pairs: &mut Vec<(Option<u32>, &'a str, &'a str)>,
) -> Result<Option<[u8; META_INLINE_BYTES]>, String> {
    pairs.clear();
    let count = r.len("metadata pair count")?;
    if count > PAIRS_MAX {
        return Err(format!("{count} metadata pairs"));
    }
    for _ in 0..count {
        let (key, name) = match r.name_ref("metadata key", remap.key_names.len())? {
            NameRef::Index(at) => (remap.keys.get(at).copied().flatten(), remap.key_names[at]),
            NameRef::Inline(name) => (None, name),
        };
        pairs.push((key, name, r.str("metadata value")?));
    }
    if !pairs.iter().all(|(key, _, _)| key.is_some()) {
        return Ok(None);
    }
    Ok(pack_inline(pairs.iter().filter_map(|(key, _, value)| {
        Some(((*key)?, value.as_bytes()))
    })))
}

/// A redeemer name, shared from the restoring shards' name table when the
/// section names it by index.
fn redeemer(name: NameRef<'_>, remap: &Remap<'_>) -> Result<Arc<str>, String> {
    match name {
        NameRef::Inline(name) => Ok(Arc::from(name)),
        NameRef::Index(at) => {
            let shard_at = *remap
                .names
                .get(at)
                .ok_or_else(|| format!("redeemer index {at} out of range"))?;
            remap
                .shard_names
                .get(shard_at as usize)
                .cloned()
                .ok_or_else(|| "redeemer name missing".to_owned())
        }
    }
}

fn data(text: &str) -> Result<Box<RawValue>, String> {
    RawValue::from_string(text.to_owned()).map_err(|e| format!("invalid data: {e}"))
}

fn fingerprint(r: &mut Reader<'_>) -> Result<[u8; 16], String> {
    let mut f = [0u8; 16];
    f.copy_from_slice(r.bytes(16, "fingerprint")?);
    Ok(f)
}

fn redemption(r: &mut Reader<'_>, remap: &Remap<'_>) -> Result<Redemption, String> {
    Ok(Redemption {
        merchant_id: r.opt_str("merchant")?.map(Box::from),
        idempotency_key: r.opt_str("idempotency key")?.map(Box::from),
        redeemed_at_ms: r.i64("redeemed_at")?,
        redeemed_by: redeemer(r.name_ref("redeemer", remap.names.len())?, remap)?,
    })
}

fn encryption_key(r: &mut Reader<'_>) -> Result<EncryptionKey, String> {
    Ok(EncryptionKey {
        key: r.opt_str("encryption key")?.map(str::to_owned),
        alg: r.opt_str("encryption alg")?.map(str::to_owned),
    })
}

/// Opens `token`'s sealed `field`.
fn open(keyring: &Keyring, token: TokenId, field: Field, sealed: &[u8]) -> Result<Vec<u8>, String> {
    keyring
        .open(field, token.0.as_bytes(), sealed)
        .map_err(|e| format!("sealed {}: {e}", field.as_str()))
}

/// The extra part of [`Layout::Tagged`]: tagged fields up to the end tag,
/// sealed ones opened with `keyring`.
fn decode_tagged_extra(
    r: &mut Reader<'_>,
    remap: &Remap<'_>,
    token: TokenId,
    keyring: &Keyring,
) -> Result<TokenExtra, String> {
    let mut extra = TokenExtra::default();
    loop {
        let tag = r.varint("extra field tag")?;
        if tag == tag::END {
            return Ok(extra);
        }
        let len = r.len("extra field length")?;
        let mut f = Reader {
            rest: r.bytes(len, "extra field")?,
        };
        match tag {
            tag::DESCRIPTION => extra.description = Some(Box::from(utf8(f.rest, "description")?)),
            tag::DATA => extra.data = Some(data(utf8(f.rest, "data")?)?),
            tag::ENCRYPTION => {
                let present = f.byte("encryption keys")?;
                if present & !3 != 0 {
                    return Err(format!("encryption keys byte {present:#04x}"));
                }
                let cek = (present & 1 != 0)
                    .then(|| encryption_key(&mut f))
                    .transpose()?;
                let kek = (present & 2 != 0)
                    .then(|| encryption_key(&mut f))
                    .transpose()?;
                extra.encryption = Some(Box::new(Encryption { cek, kek }));
            }
            tag::CHILDREN => {
                if !f.rest.len().is_multiple_of(16) {
                    return Err(format!("child ids of {} bytes", f.rest.len()));
                }
                extra.children = f
                    .rest
                    .chunks_exact(16)
                    .map(|id| Uuid::from_slice(id).map(TokenId))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("child id: {e}"))?;
                f.rest = &[];
            }
            tag::FINGERPRINT => extra.create_fingerprint = Some(fingerprint(&mut f)?),
            tag::REDEMPTION => extra.redemption = Some(redemption(&mut f, remap)?),
            tag::DELETED_AT => extra.deleted_at_ms = Some(f.i64("deleted_at")?),
            tag::LIFECYCLE => {
                let lifecycle: Lifecycle =
                    rmp_serde::from_slice(f.rest).map_err(|e| format!("lifecycle: {e}"))?;
                extra.lifecycle = Some(Box::new(lifecycle));
                f.rest = &[];
            }
            tag::SEALED_DATA => {
                let plain = open(keyring, token, Field::Data, f.rest)?;
                let text = String::from_utf8(plain).map_err(|_| "sealed data: not UTF-8")?;
                extra.data =
                    Some(RawValue::from_string(text).map_err(|e| format!("sealed data: {e}"))?);
                f.rest = &[];
            }
            tag::SEALED_ENCRYPTION => {
                let plain = open(keyring, token, Field::Encryption, f.rest)?;
                let encryption: Encryption = serde_json::from_slice(&plain)
                    .map_err(|e| format!("sealed encryption: {e}"))?;
                extra.encryption = Some(Box::new(encryption));
                f.rest = &[];
            }
            // A field a later build added as optional: this build keeps
            // nothing of it.
            _ => f.rest = &[],
        }
        if matches!(tag, tag::DESCRIPTION | tag::DATA) {
            f.rest = &[];
        }
        f.finish(&format!("extra field {tag}"))?;
    }
}

/// The extra part of [`Layout::Untagged`] (snapshot format 1).
fn decode_untagged_extra(r: &mut Reader<'_>, remap: &Remap<'_>) -> Result<TokenExtra, String> {
    let description = r.opt_str("description")?.map(Box::from);
    let data = r.opt_str("data")?.map(data).transpose()?;
    let encryption = if r.flag("encryption")? {
        let cek = r
            .flag("encryption key")?
            .then(|| encryption_key(r))
            .transpose()?;
        let kek = r
            .flag("encryption key")?
            .then(|| encryption_key(r))
            .transpose()?;
        Some(Box::new(Encryption { cek, kek }))
    } else {
        None
    };
    let children: Vec<TokenId> = r.ids("child ids")?.into_iter().map(TokenId).collect();
    let create_fingerprint = r.flag("fingerprint")?.then(|| fingerprint(r)).transpose()?;
    let redemption = r
        .flag("redemption")?
        .then(|| redemption(r, remap))
        .transpose()?;
    let deleted_at_ms = r
        .flag("deletion")?
        .then(|| r.i64("deleted_at"))
        .transpose()?;
    Ok(TokenExtra {
        description,
        data,
        encryption,
        children,
        create_fingerprint,
        redemption,
        deleted_at_ms,
        metadata_overflow: None,
        active_from_ms: None,
        lifecycle: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::table::plain_slot;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 12345, -98765] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    fn remap() -> Remap<'static> {
        Remap {
            collections: vec![0],
            names: vec![0],
            keys: vec![],
            key_names: vec![],
            shard_names: Arc::new(vec![Arc::from("issuer")]),
        }
    }

    /// A token encoded with `created_at_ms` and `expires_at_ms`, its id
    /// left off (the section reads it before the token).
    fn encoded_token(created_at_ms: Millis, expires_at_ms: Millis) -> Vec<u8> {
        let slot = Slot {
            created_at: SlotMillis::clamped(created_at_ms),
            expires_at: SlotMillis::clamped(expires_at_ms),
            ..plain_slot(TokenId::random())
        };
        let mut out = Vec::new();
        let index: HashMap<&str, usize> = [("issuer", 0)].into();
        encode_token(&mut out, &slot, &index, &mut Vec::new(), &Keyring::off());
        out.split_off(16)
    }

    fn decode(bytes: &[u8]) -> Result<Slot, String> {
        decode_token(
            &mut Reader { rest: bytes },
            TokenId::random(),
            Layout::Tagged,
            &remap(),
            &mut Vec::new(),
            &Keyring::off(),
        )
    }

    #[test]
    fn a_token_whose_times_a_slot_cannot_hold_is_refused_as_damaged() {
        let last = (1i64 << 48) - 2;
        for (created, expires) in [(0, NEVER), (5, 10), (last - 10, last)] {
            let back = decode(&encoded_token(created, expires)).expect("in range");
            assert_eq!(
                (back.created_at_ms(), back.expires_at_ms()),
                (created, expires)
            );
        }
        // The creation time is the 8 bytes after the two 1-byte indexes.
        let with_created = |mut bytes: Vec<u8>, created: i64| {
            bytes[2..10].copy_from_slice(&created.to_le_bytes());
            bytes
        };
        for created in [-1, last + 1, i64::MIN] {
            let error = decode(&with_created(encoded_token(0, NEVER), created))
                .expect_err("a creation time out of range");
            assert!(error.contains("created_at"), "{error}");
        }
        // In range itself, but its expiry (stored as a delta) is not.
        let error =
            decode(&with_created(encoded_token(5, 10), last)).expect_err("an expiry out of range");
        assert!(error.contains("expires_at"), "{error}");
    }

    #[test]
    fn tagged_extras_round_trip_and_an_unknown_field_is_skipped() {
        let extra = TokenExtra {
            description: Some("d".into()),
            data: Some(RawValue::from_string("{\"a\":1}".into()).unwrap()),
            encryption: Some(Box::new(Encryption {
                cek: None,
                kek: Some(EncryptionKey {
                    key: Some("k".into()),
                    alg: None,
                }),
            })),
            children: vec![TokenId::random(), TokenId::random()],
            create_fingerprint: Some([7; 16]),
            redemption: Some(Redemption {
                merchant_id: Some("m".into()),
                idempotency_key: None,
                redeemed_at_ms: -5,
                redeemed_by: Arc::from("issuer"),
            }),
            deleted_at_ms: Some(9),
            metadata_overflow: None,
            active_from_ms: None,
            lifecycle: Some(Box::new(Lifecycle {
                hold: None,
                captured: Some(crate::ids::HoldId::random()),
                ended_holds: vec![crate::model::EndedHold {
                    id: crate::ids::HoldId::random(),
                    end: crate::model::HoldEnd::Captured,
                    ended_at_ms: 3,
                }],
                voided: vec![crate::model::VoidedRedemption {
                    merchant_id: Some("m".into()),
                    idempotency_key: Some("k".into()),
                    redeemed_at_ms: 1,
                    redeemed_by: "issuer".into(),
                    hold_id: None,
                    voided_at_ms: 2,
                    voided_by: "refunds".into(),
                    reason: Some("returned".into()),
                    void_idempotency_key: None,
                }],
            })),
        };
        let index: HashMap<&str, usize> = [("issuer", 0)].into();
        let mut out = Vec::new();
        let sealer = Sealer {
            keyring: &Keyring::off(),
            token: &[0; 16],
        };
        encode_extra(&mut out, &extra, &index, &mut Vec::new(), &sealer);
        // A newer build's optional field (tag 99) before the end tag.
        let end = out.pop();
        assert_eq!(end, Some(0));
        out.extend_from_slice(&[99, 3, 1, 2, 3, 0]);
        let back = decode_tagged_extra(
            &mut Reader { rest: &out },
            &remap(),
            TokenId::random(),
            &Keyring::off(),
        )
        .unwrap();
        assert_eq!(back.description, extra.description);
        assert_eq!(back.data.as_ref().map(|d| d.get()), Some("{\"a\":1}"));
        assert_eq!(back.encryption, extra.encryption);
        assert_eq!(back.children, extra.children);
        assert_eq!(back.create_fingerprint, extra.create_fingerprint);
        assert_eq!(back.redemption, extra.redemption);
        assert_eq!(back.deleted_at_ms, extra.deleted_at_ms);
        assert_eq!(back.lifecycle, extra.lifecycle);
        for cut in 0..out.len() {
            assert!(
                decode_tagged_extra(
                    &mut Reader { rest: &out[..cut] },
                    &remap(),
                    TokenId::random(),
                    &Keyring::off()
                )
                .is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn with_keys_data_and_encryption_are_sealed_and_open_only_for_their_token() {
        let keyring = Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let token = TokenId::random();
        let extra = TokenExtra {
            data: Some(RawValue::from_string(r#"{"pan":"4111 1111"}"#.into()).unwrap()),
            encryption: Some(Box::new(Encryption {
                cek: Some(EncryptionKey {
                    key: Some("wrapped-cek".into()),
                    alg: Some("AES".into()),
                }),
                kek: None,
            })),
            ..TokenExtra::default()
        };
        let mut out = Vec::new();
        let sealer = Sealer {
            keyring: &keyring,
            token: token.0.as_bytes(),
        };
        encode_extra(&mut out, &extra, &HashMap::new(), &mut Vec::new(), &sealer);
        for plain in [&b"4111 1111"[..], b"wrapped-cek"] {
            assert!(!out.windows(plain.len()).any(|w| w == plain));
        }
        assert_eq!(out.first(), Some(&(tag::SEALED_DATA as u8)));
        let back =
            decode_tagged_extra(&mut Reader { rest: &out }, &remap(), token, &keyring).unwrap();
        assert_eq!(
            back.data.as_ref().map(|d| d.get()),
            Some(r#"{"pan":"4111 1111"}"#)
        );
        assert_eq!(back.encryption, extra.encryption);
        let err = decode_tagged_extra(&mut Reader { rest: &out }, &remap(), token, &Keyring::off())
            .err()
            .unwrap();
        assert!(
            err.contains("sealed data") && err.contains("\"k1\""),
            "{err}"
        );
        let other = TokenId::random();
        let err = decode_tagged_extra(&mut Reader { rest: &out }, &remap(), other, &keyring)
            .err()
            .unwrap();
        assert!(err.contains("does not open"), "{err}");
    }
}
