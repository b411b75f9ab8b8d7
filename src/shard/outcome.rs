//! What a shard answers: one outcome type per command, and the one reason
//! type for a refusal.

use crate::clock::Millis;
use crate::model::Token;
use std::sync::Arc;

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

    /// Whether the token is new (a change to log).
    pub fn is_new(&self) -> bool {
        matches!(self, Created::New(_))
    }
}

/// The token after a redeem.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// Its state now.
    pub token: Arc<Token>,
    /// True when this repeats the winning request (nothing changed).
    pub replayed: bool,
}

/// The token after a hold, capture, release or void.
#[derive(Debug, Clone)]
pub struct Changed {
    /// Its state now.
    pub token: Arc<Token>,
    /// True when this repeats an earlier request (nothing changed).
    pub replayed: bool,
}

/// What a redeem would answer now (validation), changing nothing.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The token as it is (`None` when not found: the 404 is the answer).
    pub token: Arc<Token>,
    /// `None` when a redeem would succeed (or replay); else why not.
    pub refusal: Option<Rejection>,
}

/// The token was deleted, now or before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// False when it was already deleted (nothing changed).
    pub changed: bool,
}

/// Why a command was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// A live hold reserves the token.
    #[error("token held until {expires_at_ms}")]
    Held {
        /// When the hold lapses.
        expires_at_ms: Millis,
    },
    /// A hold longer than the collection allows.
    #[error("hold longer than the collection's holdTtlSecsMax {max_secs}")]
    HoldTooLong {
        /// The collection's `holdTtlSecsMax`.
        max_secs: i64,
    },
    /// No such hold on this token (or forgotten).
    #[error("hold not found")]
    HoldNotFound,
    /// The hold was released, lapsed, or (for a release) captured.
    #[error("hold not active")]
    HoldNotActive,
    /// A void of a token that is not redeemed.
    #[error("token not redeemed")]
    NotRedeemed,
    /// A void after `redeemedAt + voidWindowSecs`.
    #[error("void window closed at {closed_at_ms}")]
    VoidWindowClosed {
        /// When it closed.
        closed_at_ms: Millis,
    },
    /// The token was voided as often as it may be.
    #[error("void limit reached")]
    VoidLimitReached,
}
