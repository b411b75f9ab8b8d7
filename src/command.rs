//! The commands that change the engine's state: the shards' token commands
//! and the catalog's commands.
//!
//! They are plain data with no behaviour, so the modules on both sides of
//! the log can share them: the deciders (a shard, the catalog) apply them,
//! and the log records them. A command carries everything its apply needs
//! (ids, the requester; the decision time travels beside it in the log
//! record), so replaying the logged commands in order rebuilds the same
//! state.
//!
//! The log stores them by field name (see [`crate::log::record`]): a field
//! is never renamed, reordered or removed, and a new one is optional, so
//! that every record ever written still decodes.

use crate::clock::Millis;
use crate::ids::{AccountId, CollectionId, HoldId, KeyId, TokenId};
use crate::model::collection::CollectionRecord;
use crate::model::metadata::{self, Metadata};
use crate::model::token::NEVER;
use crate::model::{Account, ApiKey, Encryption, TokenType};
use serde::{Deserialize, Serialize};

/// When a new token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// At this instant.
    At(Millis),
    /// This many seconds after creation.
    InSecs(i64),
    /// The collection's `tokenExpiresAfter`, else never.
    CollectionDefault,
}

impl Expiry {
    /// When a token created at `now` expires: `default_secs` is the
    /// collection's `tokenExpiresAfter` (`None`: none), used only by
    /// [`Expiry::CollectionDefault`]; [`NEVER`] when it does not expire.
    /// The one place an expiry is worked out, for the API's checks and the
    /// shard's decision alike.
    pub fn expires_at_ms(self, now: Millis, default_secs: Option<i64>) -> Millis {
        let after = |secs: i64| now.saturating_add(secs.saturating_mul(1000));
        match self {
            Expiry::At(at) => at,
            Expiry::InSecs(secs) => after(secs),
            Expiry::CollectionDefault => default_secs.map_or(NEVER, after),
        }
    }
}

/// A token to create, fully validated by the API layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewToken {
    /// Random, or derived from the idempotency key.
    pub id: TokenId,
    /// Owner of the collection (checked again at apply).
    pub account_id: AccountId,
    /// The governing collection.
    pub collection_id: CollectionId,
    /// Name of the creating API key.
    pub created_by: String,
    /// Token, card or bank.
    pub kind: TokenType,
    /// Free text.
    pub description: Option<String>,
    /// The data as JSON text (validated JSON).
    pub data: Option<String>,
    /// Envelope-encryption metadata.
    pub encryption: Option<Encryption>,
    /// String pairs.
    #[serde(with = "metadata::as_pairs")]
    pub metadata: Metadata,
    /// Start of validity; creation time when absent.
    pub active_from_ms: Option<Millis>,
    /// End of validity.
    pub expiry: Expiry,
    /// Child token ids (created in the same request).
    pub children: Vec<TokenId>,
    /// Digest of the create request, when it had an idempotency key.
    pub fingerprint: Option<[u8; 16]>,
    /// `data` sealed under a data key. Set only in the log's encoding of a
    /// record (where `data` is then absent) and opened back into `data` when
    /// the record is decoded: the engine never sees it set (see
    /// [`crate::log::record`]).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub sealed_data: Option<Vec<u8>>,
    /// `encryption` as JSON, sealed likewise.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub sealed_encryption: Option<Vec<u8>>,
}

/// Creates tokens, all owned by one shard, all or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Create {
    /// The tokens, in request order.
    pub tokens: Vec<NewToken>,
}

/// Spends a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redeem {
    /// The requester; another account's token is not found.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
    /// The merchant redeeming it.
    pub merchant_id: Option<String>,
    /// Client key that makes a retry a replay.
    pub idempotency_key: Option<String>,
    /// Name of the redeeming API key.
    pub redeemed_by: String,
}

/// Deletes a token, erasing its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delete {
    /// The requester.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
}

/// Reserves a token for a while: nobody else may hold or redeem it until
/// the hold is captured, released or lapses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// The requester.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
    /// The new hold's id (chosen before deciding, so replay reuses it).
    pub hold_id: HoldId,
    /// The merchant holding it.
    pub merchant_id: Option<String>,
    /// Client key that makes a retry a replay.
    pub idempotency_key: Option<String>,
    /// How long it holds; the collection's `holdTtlSecsMax` when absent.
    pub ttl_secs: Option<i64>,
    /// Name of the holding API key.
    pub held_by: String,
}

/// Redeems a held token for its hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    /// The requester.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
    /// The hold to capture.
    pub hold_id: HoldId,
    /// Name of the capturing API key (the redemption's `redeemedBy`).
    pub captured_by: String,
}

/// Lets a held token go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The requester.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
    /// The hold to release.
    pub hold_id: HoldId,
}

/// Undoes a token's redemption (a refund): the token can be redeemed again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Void {
    /// The requester.
    pub account_id: AccountId,
    /// The token.
    pub id: TokenId,
    /// Why, ≤ 200 characters.
    pub reason: Option<String>,
    /// Client key that makes a retry a replay.
    pub idempotency_key: Option<String>,
    /// Name of the voiding API key.
    pub voided_by: String,
}

/// A change to one shard's tokens, as logged. Variants are only ever
/// added: every record ever written still decodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// See [`Create`].
    Create(Create),
    /// See [`Redeem`].
    Redeem(Redeem),
    /// See [`Delete`].
    Delete(Delete),
    /// See [`Hold`].
    Hold(Hold),
    /// See [`Capture`].
    Capture(Capture),
    /// See [`Release`].
    Release(Release),
    /// See [`Void`].
    Void(Void),
}

impl ShardCommand {
    /// The token that decides which shard applies the command (a create's
    /// first: all of a logged create's tokens shared one shard); `None` for
    /// a create of nothing, which changes nothing anywhere.
    pub fn token_id(&self) -> Option<TokenId> {
        match self {
            ShardCommand::Create(create) => create.tokens.first().map(|t| t.id),
            ShardCommand::Redeem(redeem) => Some(redeem.id),
            ShardCommand::Delete(delete) => Some(delete.id),
            ShardCommand::Hold(c) => Some(c.id),
            ShardCommand::Capture(c) => Some(c.id),
            ShardCommand::Release(c) => Some(c.id),
            ShardCommand::Void(c) => Some(c.id),
        }
    }
}

impl From<Create> for ShardCommand {
    fn from(command: Create) -> Self {
        ShardCommand::Create(command)
    }
}

impl From<Redeem> for ShardCommand {
    fn from(command: Redeem) -> Self {
        ShardCommand::Redeem(command)
    }
}

impl From<Delete> for ShardCommand {
    fn from(command: Delete) -> Self {
        ShardCommand::Delete(command)
    }
}

impl From<Hold> for ShardCommand {
    fn from(command: Hold) -> Self {
        ShardCommand::Hold(command)
    }
}

impl From<Capture> for ShardCommand {
    fn from(command: Capture) -> Self {
        ShardCommand::Capture(command)
    }
}

impl From<Release> for ShardCommand {
    fn from(command: Release) -> Self {
        ShardCommand::Release(command)
    }
}

impl From<Void> for ShardCommand {
    fn from(command: Void) -> Self {
        ShardCommand::Void(command)
    }
}

/// A change to the catalog, as logged and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// A new account.
    CreateAccount(Account),
    /// A new API key (digest only, never the secret).
    CreateApiKey(ApiKey),
    /// Revokes a key at once.
    DeleteApiKey {
        /// The key's account (a key of another account is not found).
        account_id: AccountId,
        /// The key to revoke.
        key_id: KeyId,
    },
    /// A new collection.
    CreateCollection(Box<CollectionRecord>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_worked_out_from_the_decision_time() {
        let now = 1_000_000;
        assert_eq!(Expiry::At(5).expires_at_ms(now, Some(60)), 5);
        assert_eq!(Expiry::InSecs(2).expires_at_ms(now, Some(60)), now + 2_000);
        assert_eq!(
            Expiry::CollectionDefault.expires_at_ms(now, Some(60)),
            now + 60_000
        );
        assert_eq!(Expiry::CollectionDefault.expires_at_ms(now, None), NEVER);
        assert_eq!(
            Expiry::InSecs(i64::MAX).expires_at_ms(now, None),
            Millis::MAX
        );
    }
}
