//! The commands that change a shard's tokens, and what applying one yields.
//!
//! A command is the unit of the write-ahead log: it carries everything
//! `apply` needs (ids, the requester, the decision time travels beside it),
//! so replaying the logged commands in order rebuilds the same state.

use crate::clock::Millis;
use crate::ids::{AccountId, CollectionId, TokenId};
use crate::model::metadata::{self, Metadata};
use crate::model::{Encryption, Token, TokenType};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
}

/// A change to one shard's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// Create tokens (all owned by this shard), all or none.
    Create {
        /// The tokens, in request order.
        tokens: Vec<NewToken>,
    },
    /// Spend a token.
    Redeem {
        /// The requester; another account's token is not found.
        account_id: AccountId,
        /// The token.
        id: TokenId,
        /// The merchant redeeming it.
        merchant_id: Option<String>,
        /// Client key that makes a retry a replay.
        idempotency_key: Option<String>,
        /// Name of the redeeming API key.
        redeemed_by: String,
    },
    /// Delete a token, erasing its data.
    Delete {
        /// The requester.
        account_id: AccountId,
        /// The token.
        id: TokenId,
    },
}

/// The result of one created token.
#[derive(Debug, Clone)]
pub enum Created {
    /// Newly created.
    New(Arc<Token>),
    /// Existed with the same idempotency key and body: the original.
    Replayed(Arc<Token>),
}

impl Created {
    /// The token, new or replayed.
    pub fn token(&self) -> &Token {
        match self {
            Created::New(t) | Created::Replayed(t) => t,
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Tokens created or replayed, in command order.
    Created(Vec<Created>),
    /// The token after redemption.
    Redeemed {
        /// Its state now.
        token: Arc<Token>,
        /// True when this repeats the winning request (nothing changed).
        replayed: bool,
    },
    /// The token was deleted (or already was).
    Deleted {
        /// False when it was already deleted.
        changed: bool,
    },
}

impl Outcome {
    /// Whether the state changed, i.e. whether the command must be logged.
    pub fn changed(&self) -> bool {
        match self {
            Outcome::Created(created) => created.iter().any(|c| matches!(c, Created::New(_))),
            Outcome::Redeemed { replayed, .. } => !replayed,
            Outcome::Deleted { changed } => *changed,
        }
    }
}

/// Why a command was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Unknown, purged, or another account's.
    #[error("token not found")]
    TokenNotFound,
    /// Spent before.
    #[error("token already redeemed at {redeemed_at_ms}")]
    AlreadyRedeemed {
        /// When it was spent.
        redeemed_at_ms: Millis,
    },
    /// Past `expiresAt`.
    #[error("token expired")]
    Expired,
    /// Deleted.
    #[error("token deleted")]
    Deleted,
    /// Before `activeFrom`.
    #[error("token not yet active")]
    NotYetActive {
        /// When it becomes redeemable.
        active_from_ms: Millis,
    },
    /// The collection restricts merchants and this one is not listed.
    #[error("merchant not allowed")]
    MerchantNotAllowed,
    /// An idempotency key was reused with a different body.
    #[error("token already created with this idempotency key and a different body")]
    AlreadyCreated,
    /// The collection does not exist (or is another account's).
    #[error("collection not found")]
    CollectionNotFound,
}
