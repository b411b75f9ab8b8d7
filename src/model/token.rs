//! Tokens: spend-once objects owned by exactly one shard.
//!
//! Shards hold tokens in compact slots (`shard::table`); a [`Token`] is the
//! view of one that readers get: the collection, the creator's name and the
//! rarely present parts (description, data, encryption, children,
//! redemption, deletion) are shared with the slot, so a view costs one
//! allocation plus the metadata's.

use crate::clock::Millis;
use crate::ids::TokenId;
use crate::model::{Collection, Hold, Lifecycle, Metadata};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// `expires_at_ms` of a token that never expires.
pub const NEVER: Millis = Millis::MAX;

/// The lifecycle state of a token. Only `Active` tokens can be redeemed or
/// held; a `Held` one is reserved until its hold is captured, released or
/// lapses; `Redeemed` is final unless voided; `Expired` and `Deleted` are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Redeemable within `[activeFrom, expiresAt)`.
    Active,
    /// Reserved by a live hold (see [`crate::model::Lifecycle`]).
    Held,
    /// Spent, exactly once.
    Redeemed,
    /// Reached `expiresAt` unspent.
    Expired,
    /// Deleted by its owner; data erased.
    Deleted,
}

impl Status {
    /// Every status, in wire-name order.
    pub const ALL: [Status; 5] = [
        Status::Active,
        Status::Held,
        Status::Redeemed,
        Status::Expired,
        Status::Deleted,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Held => "held",
            Status::Redeemed => "redeemed",
            Status::Expired => "expired",
            Status::Deleted => "deleted",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The kind of value a token stands for (Basis Theory's token types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// A generic token (the default).
    Token,
    /// A payment card.
    Card,
    /// A bank account.
    Bank,
}

impl TokenType {
    /// Every type, in wire-name order.
    pub const ALL: [TokenType; 3] = [TokenType::Token, TokenType::Card, TokenType::Bank];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Token => "token",
            TokenType::Card => "card",
            TokenType::Bank => "bank",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// One key of the envelope that encrypted a token's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EncryptionKey {
    /// The (wrapped) key or a key identifier.
    pub key: Option<String>,
    /// Its algorithm, e.g. `AES` or `RSA`.
    pub alg: Option<String>,
}

/// Envelope-encryption metadata for `data` (Basis Theory's `encryption`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Encryption {
    /// Content encryption key.
    pub cek: Option<EncryptionKey>,
    /// Key encryption key.
    pub kek: Option<EncryptionKey>,
}

/// How and when a token was spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The merchant that redeemed it, if the request named one.
    pub merchant_id: Option<Box<str>>,
    /// The winning request's idempotency key; a repeat of that request (same
    /// key and merchant) is answered as a replay instead of a conflict.
    pub idempotency_key: Option<Box<str>>,
    /// When it was redeemed.
    pub redeemed_at_ms: Millis,
    /// Name of the API key that redeemed it (rendered as a CRN).
    pub redeemed_by: Arc<str>,
}

/// The rarely present parts of a token, shared behind one optional `Arc`:
/// a shard's storage and every copy handed to a reader point at the same
/// allocation, and a change copies it only while a reader still holds it.
#[derive(Debug, Clone, Default)]
pub struct TokenExtra {
    /// Free text, ≤ 1000 characters.
    pub description: Option<Box<str>>,
    /// The tokenized value, as the client's JSON text (rendered verbatim).
    pub data: Option<Box<RawValue>>,
    /// Envelope-encryption metadata for `data`.
    pub encryption: Option<Box<Encryption>>,
    /// Ids of the child tokens created with this one.
    pub children: Vec<TokenId>,
    /// Digest of the create request when it carried an idempotency key: a
    /// retry with the same key must carry the same body to be a replay.
    pub create_fingerprint: Option<[u8; 16]>,
    /// Set while redeemed (a void moves it to the lifecycle's list).
    pub redemption: Option<Redemption>,
    /// Set once deleted.
    pub deleted_at_ms: Option<Millis>,
    /// The metadata, when it does not fit the shard's inline cell (see
    /// `shard::table`): a storage detail; readers use [`Token::metadata`],
    /// which always holds the pairs.
    pub metadata_overflow: Option<Metadata>,
    /// The start of validity when it is not the creation time (the
    /// default): a storage detail of the shard's slots; readers use
    /// [`Token::active_from_ms`].
    pub active_from_ms: Option<Millis>,
    /// Holds and voids, for the few tokens that had any.
    pub lifecycle: Option<Box<Lifecycle>>,
}

impl TokenExtra {
    /// Whether nothing is set (such an extra is not allocated at all).
    pub fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.data.is_none()
            && self.encryption.is_none()
            && self.children.is_empty()
            && self.create_fingerprint.is_none()
            && self.redemption.is_none()
            && self.deleted_at_ms.is_none()
            && self.metadata_overflow.is_none()
            && self.active_from_ms.is_none()
            && self.lifecycle.is_none()
    }

    /// The lifecycle, or an empty one.
    pub fn lifecycle(&self) -> &Lifecycle {
        static EMPTY: std::sync::OnceLock<Lifecycle> = std::sync::OnceLock::new();
        self.lifecycle
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(Lifecycle::default))
    }

    /// The lifecycle, allocated on first use.
    pub fn lifecycle_mut(&mut self) -> &mut Lifecycle {
        self.lifecycle.get_or_insert_with(Default::default)
    }

    /// The hold if it is live at `now`.
    pub fn live_hold(&self, now: Millis) -> Option<&Hold> {
        self.lifecycle.as_deref().and_then(|l| l.live_hold(now))
    }
}

/// A token as readers see it (materialized from the shard's slot).
#[derive(Debug, Clone)]
pub struct Token {
    /// Identity; also decides the owning shard.
    pub id: TokenId,
    /// Governs redemption rules and branding; shared, immutable, so redeem and
    /// render read it without any lookup or lock.
    pub collection: Arc<Collection>,
    /// Name of the API key that created it (interned per shard).
    pub created_by: Arc<str>,
    /// Creation time; also the list order (with the id).
    pub created_at_ms: Millis,
    /// Start of validity.
    pub active_from_ms: Millis,
    /// End of validity (exclusive); [`NEVER`] when it never expires.
    pub expires_at_ms: Millis,
    /// Non-sensitive string pairs.
    pub metadata: Metadata,
    /// Everything rarely present (shared with the shard's storage).
    pub extra: Option<Arc<TokenExtra>>,
    /// Stored state; expiry may be due but not yet applied by the timer, so
    /// readers use [`Token::status_at`].
    pub status: Status,
    /// Token, card or bank.
    pub kind: TokenType,
}

impl Token {
    /// The status at `now`: an active token past `expiresAt` is expired even
    /// when its timer has not fired yet, and a held one whose hold lapsed is
    /// active (or expired) again.
    pub fn status_at(&self, now: Millis) -> Status {
        status_at(self.status, self.expires_at_ms, self.extra.as_deref(), now)
    }

    /// Since when the token has been a tombstone (final status), if it is one.
    pub fn tombstone_since(&self, now: Millis) -> Option<Millis> {
        tombstone_since(
            self.status_at(now),
            self.expires_at_ms,
            self.extra.as_deref(),
        )
    }

    /// Whether the tombstone outlived its retention: such a token is gone.
    pub fn is_purged(&self, now: Millis, retention_ms: i64) -> bool {
        is_purged(self.tombstone_since(now), now, retention_ms)
    }

    /// The extra part, allocated on first use (copied first if shared).
    pub fn extra_mut(&mut self) -> &mut TokenExtra {
        Arc::make_mut(self.extra.get_or_insert_with(Default::default))
    }

    /// The extra part or an empty one.
    pub fn extra(&self) -> &TokenExtra {
        static EMPTY: std::sync::OnceLock<TokenExtra> = std::sync::OnceLock::new();
        self.extra
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(TokenExtra::default))
    }

    /// Frees the tokenized value (on redeem and expiry): spent tokens keep
    /// only what audit needs.
    pub fn free_data(&mut self) {
        free_data(&mut self.extra);
    }

    /// Erases every client-supplied value (on delete).
    pub fn erase(&mut self) {
        self.free_data();
        self.metadata = Metadata::default();
        if let Some(extra) = self.extra.as_mut() {
            if extra.metadata_overflow.is_some() {
                Arc::make_mut(extra).metadata_overflow = None;
            }
        }
    }
}

/// The status at `now` of a token stored as `status` that ends at
/// `expires_at_ms`, with its extra part: an active token past it is expired
/// even when its timer has not fired yet, and a held token whose hold
/// lapsed is active again (or expired: a hold never outlives its token).
/// Shared by [`Token`] and the shard's compact slots.
pub fn status_at(
    status: Status,
    expires_at_ms: Millis,
    extra: Option<&TokenExtra>,
    now: Millis,
) -> Status {
    let unspent = match status {
        Status::Active => true,
        Status::Held => extra.and_then(|e| e.live_hold(now)).is_none(),
        Status::Redeemed | Status::Expired | Status::Deleted => false,
    };
    if !unspent {
        status
    } else if now >= expires_at_ms {
        Status::Expired
    } else {
        Status::Active
    }
}

/// Since when a token whose status is `status_now` has been a tombstone.
pub fn tombstone_since(
    status_now: Status,
    expires_at_ms: Millis,
    extra: Option<&TokenExtra>,
) -> Option<Millis> {
    match status_now {
        Status::Active | Status::Held => None,
        Status::Expired => Some(expires_at_ms),
        Status::Redeemed => extra
            .and_then(|e| e.redemption.as_ref())
            .map(|r| r.redeemed_at_ms),
        Status::Deleted => extra.and_then(|e| e.deleted_at_ms),
    }
}

/// Whether a tombstone since `since` has outlived `retention_ms` at `now`.
pub fn is_purged(since: Option<Millis>, now: Millis, retention_ms: i64) -> bool {
    since.is_some_and(|since| now >= since.saturating_add(retention_ms))
}

/// Frees the tokenized value held in `extra` (copying it first if shared).
pub fn free_data(extra: &mut Option<Arc<TokenExtra>>) {
    if let Some(shared) = extra.as_mut() {
        if shared.data.is_some() || shared.encryption.is_some() {
            let extra = Arc::make_mut(shared);
            extra.data = None;
            extra.encryption = None;
        }
    }
}
