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
//!       bits 2–3 type (token, card, bank), bit 4 never expires, bit 5 extra follows
//!   zigzag expires_at_ms − created_at_ms         (absent when it never expires)
//!   varint pair count, per pair:
//!       varint k: k even → key index k/2; k odd → key of (k−1)/2 bytes follows
//!       varint value len, value
//!   extra (when flagged): opt-string description, opt-string data (JSON),
//!       encryption (byte 0 none / 1 some, then cek and kek, each
//!       byte 0 none / 1 some, then opt-string key, opt-string alg),
//!       varint child count × 16-byte id, byte 0/1 + 16-byte fingerprint,
//!       redemption (byte 0/1, then opt-string merchant, opt-string
//!       idempotency key, 8-byte redeemed_at_ms, varint redeemer name index),
//!       byte 0/1 + 8-byte deleted_at_ms
//!   opt-string = varint 0 (none) or varint len+1, UTF-8
//! ```
//!
//! Tokens are written in slot order, which for a shard that only grew is
//! creation order: restore then sorts the list indexes in linear time.

use crate::clock::Millis;
use crate::ids::{CollectionId, TokenId};
use crate::model::token::NEVER;
use crate::model::{
    Encryption, EncryptionKey, Metadata, Redemption, Status, TokenExtra, TokenType,
};
use crate::shard::table::{
    pack_inline, read_varint, write_varint, ChunkBuilder, Slot, TableCapture,
};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Flag: the token never expires (no expiry delta follows).
const FLAG_NEVER: u8 = 1 << 4;
/// Flag: an extra part follows.
const FLAG_EXTRA: u8 = 1 << 5;
/// Every flag bit in use.
const FLAGS_KNOWN: u8 = 0x3f;

fn status_code(status: Status) -> u8 {
    match status {
        Status::Active => 0,
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

fn put_flag(out: &mut Vec<u8>, present: bool) {
    out.push(u8::from(present));
}

/// Encodes a captured shard.
pub fn encode(capture: &TableCapture) -> Vec<u8> {
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
    for slot in capture.slots() {
        encode_token(&mut out, slot, &name_index);
    }
    out
}

fn encode_token(out: &mut Vec<u8>, slot: &Slot, name_index: &HashMap<&str, usize>) {
    out.extend_from_slice(slot.id.0.as_bytes());
    write_varint(out, u64::from(slot.collection));
    write_varint(out, u64::from(slot.created_by));
    out.extend_from_slice(&slot.created_at_ms.to_le_bytes());
    write_varint(
        out,
        zigzag(slot.active_from_ms().wrapping_sub(slot.created_at_ms)),
    );
    let never = slot.expires_at_ms == NEVER;
    let extra = slot.extra.as_deref();
    let flags = status_code(slot.status)
        | (kind_code(slot.kind) << 2)
        | if never { FLAG_NEVER } else { 0 }
        | if extra.is_some() { FLAG_EXTRA } else { 0 };
    out.push(flags);
    if !never {
        write_varint(
            out,
            zigzag(slot.expires_at_ms.wrapping_sub(slot.created_at_ms)),
        );
    }
    match extra.and_then(|e| e.metadata_overflow.as_ref()) {
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
    if let Some(extra) = extra {
        encode_extra(out, extra, name_index);
    }
}

fn encode_extra(out: &mut Vec<u8>, extra: &TokenExtra, name_index: &HashMap<&str, usize>) {
    put_opt_str(out, extra.description.as_deref());
    put_opt_str(out, extra.data.as_deref().map(RawValue::get));
    put_flag(out, extra.encryption.is_some());
    if let Some(encryption) = extra.encryption.as_deref() {
        for key in [&encryption.cek, &encryption.kek] {
            put_flag(out, key.is_some());
            if let Some(key) = key {
                put_opt_str(out, key.key.as_deref());
                put_opt_str(out, key.alg.as_deref());
            }
        }
    }
    write_varint(out, extra.children.len() as u64);
    for child in &extra.children {
        out.extend_from_slice(child.0.as_bytes());
    }
    put_flag(out, extra.create_fingerprint.is_some());
    if let Some(fingerprint) = &extra.create_fingerprint {
        out.extend_from_slice(fingerprint);
    }
    put_flag(out, extra.redemption.is_some());
    if let Some(r) = &extra.redemption {
        put_opt_str(out, r.merchant_id.as_deref());
        put_opt_str(out, r.idempotency_key.as_deref());
        out.extend_from_slice(&r.redeemed_at_ms.to_le_bytes());
        // The shard interns every redeemer name into its name table.
        match name_index.get(&*r.redeemed_by).copied() {
            Some(at) => write_varint(out, (at as u64) << 1),
            None => {
                write_varint(out, ((r.redeemed_by.len() as u64) << 1) | 1);
                out.extend_from_slice(r.redeemed_by.as_bytes());
            }
        }
    }
    put_flag(out, extra.deleted_at_ms.is_some());
    if let Some(at) = extra.deleted_at_ms {
        out.extend_from_slice(&at.to_le_bytes());
    }
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

/// Decodes the tokens after the tables into `targets`, each to the shard
/// `id.shard(targets.len())` owns; checks there are exactly `count`.
pub fn decode_tokens(
    tables: &SectionTables<'_>,
    count: usize,
    remap: &Remap<'_>,
    targets: &mut [ChunkBuilder],
) -> Result<(), String> {
    let mut r = Reader {
        rest: tables.tokens,
    };
    let mut decoded = 0usize;
    let mut pairs: Vec<(Option<u32>, &str, &str)> = Vec::with_capacity(4);
    while !r.rest.is_empty() {
        let id = TokenId(r.id("token id")?);
        let token =
            decode_token(&mut r, id, remap, &mut pairs).map_err(|e| format!("token {id}: {e}"))?;
        targets[id.shard(targets.len())].push(token);
        decoded += 1;
    }
    if decoded != count {
        return Err(format!("{decoded} tokens where the header says {count}"));
    }
    Ok(())
}

fn decode_token<'a>(
    r: &mut Reader<'a>,
    id: TokenId,
    remap: &Remap<'a>,
    pairs: &mut Vec<(Option<u32>, &'a str, &'a str)>,
) -> Result<Slot, String> {
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
    if flags & !FLAGS_KNOWN != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let status = match flags & 3 {
        0 => Status::Active,
        1 => Status::Redeemed,
        2 => Status::Expired,
        _ => Status::Deleted,
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
    pairs.clear();
    let count = r.len("metadata pair count")?;
    if count > crate::model::metadata::PAIRS_MAX {
        return Err(format!("{count} metadata pairs"));
    }
    for _ in 0..count {
        let k = r.varint("metadata key")?;
        let (key, name) = if k & 1 == 0 {
            let at = usize::try_from(k >> 1).map_err(|_| "metadata key index too large")?;
            let name = *remap
                .key_names
                .get(at)
                .ok_or_else(|| format!("metadata key index {at} out of range"))?;
            (remap.keys.get(at).copied().flatten(), name)
        } else {
            let len = usize::try_from(k >> 1)
                .ok()
                .filter(|len| *len <= r.rest.len())
                .ok_or("metadata key length past the end")?;
            (None, utf8(r.bytes(len, "metadata key")?, "metadata key")?)
        };
        pairs.push((key, name, r.str("metadata value")?));
    }
    let inline = if pairs.iter().all(|(key, _, _)| key.is_some()) {
        pack_inline(
            pairs
                .iter()
                .filter_map(|(key, _, value)| Some(((*key)?, value.as_bytes()))),
        )
    } else {
        None
    };
    let mut extra = if flags & FLAG_EXTRA != 0 {
        decode_extra(r, remap)?
    } else {
        TokenExtra::default()
    };
    if active_from_ms != created_at_ms {
        extra.active_from_ms = Some(active_from_ms);
    }
    let meta = match inline {
        Some(meta) => meta,
        None => {
            extra.metadata_overflow = Some(Metadata::from_pairs(
                pairs.iter().map(|(_, key, value)| (*key, *value)),
            ));
            crate::shard::table::overflow_meta()
        }
    };
    Ok(Slot {
        id,
        created_at_ms,
        expires_at_ms,
        extra: (!extra.is_empty()).then(|| Arc::new(extra)),
        collection,
        created_by,
        status,
        kind,
        meta,
    })
}

fn decode_extra(r: &mut Reader<'_>, remap: &Remap<'_>) -> Result<TokenExtra, String> {
    let description = r.opt_str("description")?.map(Box::from);
    let data = match r.opt_str("data")? {
        None => None,
        Some(text) => {
            Some(RawValue::from_string(text.to_owned()).map_err(|e| format!("invalid data: {e}"))?)
        }
    };
    let encryption = if r.flag("encryption")? {
        let mut keys = [None, None];
        for key in &mut keys {
            if r.flag("encryption key")? {
                *key = Some(EncryptionKey {
                    key: r.opt_str("encryption key")?.map(str::to_owned),
                    alg: r.opt_str("encryption alg")?.map(str::to_owned),
                });
            }
        }
        let [cek, kek] = keys;
        Some(Box::new(Encryption { cek, kek }))
    } else {
        None
    };
    let children: Vec<TokenId> = r.ids("child ids")?.into_iter().map(TokenId).collect();
    let create_fingerprint = if r.flag("fingerprint")? {
        let mut f = [0u8; 16];
        f.copy_from_slice(r.bytes(16, "fingerprint")?);
        Some(f)
    } else {
        None
    };
    let redemption = if r.flag("redemption")? {
        let merchant_id = r.opt_str("merchant")?.map(Box::from);
        let idempotency_key = r.opt_str("idempotency key")?.map(Box::from);
        let redeemed_at_ms = r.i64("redeemed_at")?;
        let k = r.varint("redeemer")?;
        let redeemed_by: Arc<str> = if k & 1 == 0 {
            let at = usize::try_from(k >> 1).map_err(|_| "redeemer index too large")?;
            let shard_at = *remap
                .names
                .get(at)
                .ok_or_else(|| format!("redeemer index {at} out of range"))?;
            Arc::clone(
                remap
                    .shard_names
                    .get(shard_at as usize)
                    .ok_or("redeemer name missing")?,
            )
        } else {
            let len = usize::try_from(k >> 1)
                .ok()
                .filter(|len| *len <= r.rest.len())
                .ok_or("redeemer length past the end")?;
            Arc::from(utf8(r.bytes(len, "redeemer")?, "redeemer")?)
        };
        Some(Redemption {
            merchant_id,
            idempotency_key,
            redeemed_at_ms,
            redeemed_by,
        })
    } else {
        None
    };
    let deleted_at_ms: Option<Millis> = if r.flag("deletion")? {
        Some(r.i64("deleted_at")?)
    } else {
        None
    };
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 12345, -98765] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
