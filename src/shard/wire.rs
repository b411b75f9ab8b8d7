//! What one shard is asked and answers, as bytes: the form a request takes
//! when the shard it is for runs on another node of a cluster.
//!
//! A [`ShardRequest`] is one of the messages the engine sends a shard; the
//! owner decides it exactly as a local request, waits until its records are
//! durable, and answers a [`ShardReply`]. Tokens cross as [`TokenWire`]: the
//! collection by id (every node keeps a replica of the catalog) and the
//! rarely present parts as plain fields. The encoding is MessagePack with
//! named fields, so nodes of neighbouring builds understand each other.

use super::outcome::{Changed, Checked, Created, Deleted, Redeemed, Rejection};
use super::state::{ListPage, ListQuery};
use crate::catalog::Catalog;
use crate::clock::Millis;
use crate::command::{Capture, Create, Delete, Hold, Redeem, Release, Void};
use crate::ids::{AccountId, CollectionId, TokenId};
use crate::model::{
    Encryption, Lifecycle, Metadata, Redemption, Status, Token, TokenExtra, TokenType,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A request for the shard that owns a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Create tokens (all of this shard).
    Create(Create),
    /// Redeem a token.
    Redeem(Redeem),
    /// Delete a token.
    Delete(Delete),
    /// Read tokens by id.
    Fetch {
        /// The requester.
        account_id: AccountId,
        /// Ids of this shard.
        ids: Vec<TokenId>,
    },
    /// One page of a list, as this shard sees it.
    List(ListQuery),
    /// Check idempotency keys before a multi-shard create.
    Precheck {
        /// The requester.
        account_id: AccountId,
        /// `(id, request fingerprint)` of each idempotent token.
        items: Vec<(TokenId, [u8; 16])>,
    },
    /// Hold a token.
    Hold(Hold),
    /// Capture a hold.
    Capture(Capture),
    /// Release a hold.
    Release(Release),
    /// Void a redemption.
    Void(Void),
    /// What a redeem would answer (changes nothing).
    Validate(Redeem),
    /// Redeem several tokens of this shard, in order, in one turn.
    RedeemEach(Vec<Redeem>),
}

/// What the owner answered, once every record it depends on is durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardReply {
    /// Created or replayed tokens, in request order.
    Created(Vec<(bool, TokenWire)>),
    /// The token after a redeem, and whether it was a replay.
    Redeemed(Box<TokenWire>, bool),
    /// Whether a delete changed anything.
    Deleted(bool),
    /// Tokens by id, in request order.
    Fetched(Vec<Option<TokenWire>>),
    /// A list page.
    Listed(Vec<TokenWire>),
    /// The precheck passed.
    Checked,
    /// The token after a hold, capture, release or void, and whether it
    /// was a replay.
    Changed(Box<TokenWire>, bool),
    /// A validation: the token, and why a redeem would be refused.
    Validated(Box<TokenWire>, Option<Rejection>),
    /// Each redeem's outcome, in request order.
    RedeemedEach(Vec<Result<(TokenWire, bool), Rejection>>),
    /// The shard refused the command; nothing changed.
    Rejected(Rejection),
}

/// Why a reply does not make sense here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The reply is of another kind than the request.
    #[error("the owner answered a {0} request with another kind of reply")]
    Mismatch(&'static str),
    /// A token names a collection this node's catalog replica does not hold
    /// yet (it is behind the catalog log).
    #[error("collection {0} is not in this node's catalog yet")]
    UnknownCollection(CollectionId),
    /// A token's data is not JSON.
    #[error("token data is not JSON: {0}")]
    Data(String),
}

/// A token in transit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenWire {
    /// Its id.
    pub id: TokenId,
    /// Its collection, looked up in the receiver's catalog.
    pub collection_id: CollectionId,
    /// Name of the creating API key.
    pub created_by: String,
    /// Creation time.
    pub created_at_ms: Millis,
    /// Start of validity.
    pub active_from_ms: Millis,
    /// End of validity.
    pub expires_at_ms: Millis,
    /// Metadata pairs, in order.
    #[serde(with = "crate::model::metadata::as_pairs")]
    pub metadata: Metadata,
    /// Stored status.
    pub status: Status,
    /// Token, card or bank.
    pub kind: TokenType,
    /// Free text.
    pub description: Option<String>,
    /// The tokenized value as JSON text.
    pub data: Option<String>,
    /// Envelope-encryption metadata.
    pub encryption: Option<Encryption>,
    /// Child token ids.
    pub children: Vec<TokenId>,
    /// The create request's digest (idempotency).
    pub create_fingerprint: Option<[u8; 16]>,
    /// How it was spent.
    pub redemption: Option<RedemptionWire>,
    /// When it was deleted.
    pub deleted_at_ms: Option<Millis>,
    /// Holds and voids (absent from builds before them).
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
}

/// [`Redemption`] in transit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedemptionWire {
    /// The merchant.
    pub merchant_id: Option<String>,
    /// The winning request's idempotency key.
    pub idempotency_key: Option<String>,
    /// When.
    pub redeemed_at_ms: Millis,
    /// Name of the redeeming API key.
    pub redeemed_by: String,
}

impl TokenWire {
    /// The token as it leaves its owner.
    pub fn of(token: &Token) -> Self {
        let extra = token.extra();
        Self {
            id: token.id,
            collection_id: token.collection.record.id,
            created_by: token.created_by.to_string(),
            created_at_ms: token.created_at_ms,
            active_from_ms: token.active_from_ms,
            expires_at_ms: token.expires_at_ms,
            metadata: token.metadata.clone(),
            status: token.status,
            kind: token.kind,
            description: extra.description.as_deref().map(str::to_owned),
            data: extra.data.as_deref().map(|d| d.get().to_owned()),
            encryption: extra.encryption.as_deref().cloned(),
            children: extra.children.clone(),
            create_fingerprint: extra.create_fingerprint,
            redemption: extra.redemption.as_ref().map(|r| RedemptionWire {
                merchant_id: r.merchant_id.as_deref().map(str::to_owned),
                idempotency_key: r.idempotency_key.as_deref().map(str::to_owned),
                redeemed_at_ms: r.redeemed_at_ms,
                redeemed_by: r.redeemed_by.to_string(),
            }),
            deleted_at_ms: extra.deleted_at_ms,
            lifecycle: extra.lifecycle.as_deref().cloned(),
        }
    }

    /// The token as the receiver's readers see it.
    pub fn into_token(self, catalog: &Catalog) -> Result<Arc<Token>, WireError> {
        let collection = catalog
            .collection(self.collection_id)
            .ok_or(WireError::UnknownCollection(self.collection_id))?;
        let data = match self.data {
            Some(text) => {
                Some(RawValue::from_string(text).map_err(|e| WireError::Data(e.to_string()))?)
            }
            None => None,
        };
        let extra = TokenExtra {
            description: self.description.map(String::into_boxed_str),
            data,
            encryption: self.encryption.map(Box::new),
            children: self.children,
            create_fingerprint: self.create_fingerprint,
            redemption: self.redemption.map(|r| Redemption {
                merchant_id: r.merchant_id.map(String::into_boxed_str),
                idempotency_key: r.idempotency_key.map(String::into_boxed_str),
                redeemed_at_ms: r.redeemed_at_ms,
                redeemed_by: Arc::from(r.redeemed_by),
            }),
            deleted_at_ms: self.deleted_at_ms,
            metadata_overflow: None,
            active_from_ms: None,
            lifecycle: self.lifecycle.map(Box::new),
        };
        Ok(Arc::new(Token {
            id: self.id,
            collection,
            created_by: Arc::from(self.created_by),
            created_at_ms: self.created_at_ms,
            active_from_ms: self.active_from_ms,
            expires_at_ms: self.expires_at_ms,
            metadata: self.metadata,
            extra: (!extra.is_empty()).then(|| Arc::new(extra)),
            status: self.status,
            kind: self.kind,
        }))
    }
}

/// The tokens of a reply, in order.
pub fn tokens_of(wires: Vec<TokenWire>, catalog: &Catalog) -> Result<Vec<Arc<Token>>, WireError> {
    wires.into_iter().map(|w| w.into_token(catalog)).collect()
}

impl ShardReply {
    /// The reply to a created-tokens outcome.
    pub fn created(created: &[Created]) -> Self {
        ShardReply::Created(
            created
                .iter()
                .map(|c| (c.is_new(), TokenWire::of(c.token())))
                .collect(),
        )
    }

    /// The reply to a list page.
    pub fn listed(page: &ListPage) -> Self {
        ShardReply::Listed(page.tokens.iter().map(|t| TokenWire::of(t)).collect())
    }
}

/// A token command that can be sent to another node: how it becomes a
/// request, and how the reply becomes its outcome again.
pub trait WireCommand: super::TokenCommand {
    /// The request.
    fn request(self) -> ShardRequest;

    /// The outcome from the reply.
    fn outcome(
        reply: ShardReply,
        catalog: &Catalog,
    ) -> Result<Result<Self::Outcome, Rejection>, WireError>;

    /// The reply to an outcome.
    fn reply(outcome: &Result<Self::Outcome, Rejection>) -> ShardReply;
}

impl WireCommand for Create {
    fn request(self) -> ShardRequest {
        ShardRequest::Create(self)
    }

    fn outcome(
        reply: ShardReply,
        catalog: &Catalog,
    ) -> Result<Result<Vec<Created>, Rejection>, WireError> {
        match reply {
            ShardReply::Created(created) => Ok(Ok(created
                .into_iter()
                .map(|(new, wire)| {
                    let token = wire.into_token(catalog)?;
                    Ok(if new {
                        Created::New(token)
                    } else {
                        Created::Replayed(token)
                    })
                })
                .collect::<Result<_, WireError>>()?)),
            ShardReply::Rejected(rejection) => Ok(Err(rejection)),
            _ => Err(WireError::Mismatch("create")),
        }
    }

    fn reply(outcome: &Result<Vec<Created>, Rejection>) -> ShardReply {
        match outcome {
            Ok(created) => ShardReply::created(created),
            Err(rejection) => ShardReply::Rejected(rejection.clone()),
        }
    }
}

impl WireCommand for Redeem {
    fn request(self) -> ShardRequest {
        ShardRequest::Redeem(self)
    }

    fn outcome(
        reply: ShardReply,
        catalog: &Catalog,
    ) -> Result<Result<Redeemed, Rejection>, WireError> {
        match reply {
            ShardReply::Redeemed(wire, replayed) => Ok(Ok(Redeemed {
                token: wire.into_token(catalog)?,
                replayed,
            })),
            ShardReply::Rejected(rejection) => Ok(Err(rejection)),
            _ => Err(WireError::Mismatch("redeem")),
        }
    }

    fn reply(outcome: &Result<Redeemed, Rejection>) -> ShardReply {
        match outcome {
            Ok(redeemed) => {
                ShardReply::Redeemed(Box::new(TokenWire::of(&redeemed.token)), redeemed.replayed)
            }
            Err(rejection) => ShardReply::Rejected(rejection.clone()),
        }
    }
}

impl WireCommand for Delete {
    fn request(self) -> ShardRequest {
        ShardRequest::Delete(self)
    }

    fn outcome(reply: ShardReply, _: &Catalog) -> Result<Result<Deleted, Rejection>, WireError> {
        match reply {
            ShardReply::Deleted(changed) => Ok(Ok(Deleted { changed })),
            ShardReply::Rejected(rejection) => Ok(Err(rejection)),
            _ => Err(WireError::Mismatch("delete")),
        }
    }

    fn reply(outcome: &Result<Deleted, Rejection>) -> ShardReply {
        match outcome {
            Ok(deleted) => ShardReply::Deleted(deleted.changed),
            Err(rejection) => ShardReply::Rejected(rejection.clone()),
        }
    }
}

/// Implements [`WireCommand`] for a lifecycle command answering [`Changed`].
macro_rules! lifecycle_wire {
    ($command:ident, $name:literal) => {
        impl WireCommand for $command {
            fn request(self) -> ShardRequest {
                ShardRequest::$command(self)
            }

            fn outcome(
                reply: ShardReply,
                catalog: &Catalog,
            ) -> Result<Result<Changed, Rejection>, WireError> {
                match reply {
                    ShardReply::Changed(wire, replayed) => Ok(Ok(Changed {
                        token: wire.into_token(catalog)?,
                        replayed,
                    })),
                    ShardReply::Rejected(rejection) => Ok(Err(rejection)),
                    _ => Err(WireError::Mismatch($name)),
                }
            }

            fn reply(outcome: &Result<Changed, Rejection>) -> ShardReply {
                match outcome {
                    Ok(changed) => ShardReply::Changed(
                        Box::new(TokenWire::of(&changed.token)),
                        changed.replayed,
                    ),
                    Err(rejection) => ShardReply::Rejected(rejection.clone()),
                }
            }
        }
    };
}

lifecycle_wire!(Hold, "hold");
lifecycle_wire!(Capture, "capture");
lifecycle_wire!(Release, "release");
lifecycle_wire!(Void, "void");

impl ShardReply {
    /// The reply to a validation.
    pub fn validated(outcome: &Result<Checked, Rejection>) -> Self {
        match outcome {
            Ok(checked) => ShardReply::Validated(
                Box::new(TokenWire::of(&checked.token)),
                checked.refusal.clone(),
            ),
            Err(rejection) => ShardReply::Rejected(rejection.clone()),
        }
    }

    /// The validation in this reply.
    pub fn into_validated(
        self,
        catalog: &Catalog,
    ) -> Result<Result<Checked, Rejection>, WireError> {
        match self {
            ShardReply::Validated(wire, refusal) => Ok(Ok(Checked {
                token: wire.into_token(catalog)?,
                refusal,
            })),
            ShardReply::Rejected(rejection) => Ok(Err(rejection)),
            _ => Err(WireError::Mismatch("validate")),
        }
    }

    /// The reply to several redeems.
    pub fn redeemed_each(outcomes: &[Result<Redeemed, Rejection>]) -> Self {
        ShardReply::RedeemedEach(
            outcomes
                .iter()
                .map(|o| match o {
                    Ok(r) => Ok((TokenWire::of(&r.token), r.replayed)),
                    Err(rejection) => Err(rejection.clone()),
                })
                .collect(),
        )
    }

    /// The redeems in this reply.
    pub fn into_redeemed_each(
        self,
        catalog: &Catalog,
    ) -> Result<Vec<Result<Redeemed, Rejection>>, WireError> {
        match self {
            ShardReply::RedeemedEach(outcomes) => outcomes
                .into_iter()
                .map(|o| match o {
                    Ok((wire, replayed)) => Ok(Ok(Redeemed {
                        token: wire.into_token(catalog)?,
                        replayed,
                    })),
                    Err(rejection) => Ok(Err(rejection)),
                })
                .collect(),
            _ => Err(WireError::Mismatch("redeem each")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CatalogCommand, Expiry, NewToken};
    use crate::model::collection::CollectionRecord;
    use crate::model::{Account, Liveness};
    use crate::shard::state::ShardState;

    const NOW_MS: Millis = 1_768_672_800_000;

    /// A catalog with one account and one collection.
    fn catalog() -> (Catalog, AccountId, CollectionId) {
        let catalog = Catalog::new();
        let account = AccountId::random();
        let collection = CollectionId::random();
        let commands = [
            CatalogCommand::CreateAccount(Account {
                id: account,
                name: "a".into(),
                liveness: Liveness::Test,
                created_at_ms: NOW_MS,
            }),
            CatalogCommand::CreateCollection(Box::new(CollectionRecord {
                id: collection,
                account_id: account,
                name: "c".into(),
                description: None,
                issuer: None,
                issuer_img: None,
                img: None,
                issuer_website: None,
                value: vec![],
                merchants: vec![],
                token_expires_after_secs: None,
                data_schema: None,
                hold_ttl_secs_max: None,
                void_window_secs: None,
                liveness: Liveness::Test,
                created_at_ms: NOW_MS,
            })),
        ];
        for command in commands {
            catalog
                .execute(command, |_| ())
                .expect("the catalog accepts");
        }
        (catalog, account, collection)
    }

    #[test]
    fn data_crosses_the_wire_byte_for_byte() {
        let (catalog, account, collection) = catalog();
        let mut state = ShardState::new(0);
        for text in [
            "123456789012345678901234567890",
            "1e-999999",
            "-0",
            "{ \"b\" : [1.50, 2e0] ,\n\"a\": \"\\u00e9  x\" }",
        ] {
            let new = NewToken {
                id: TokenId::random(),
                account_id: account,
                collection_id: collection,
                created_by: "k".into(),
                kind: TokenType::Token,
                description: None,
                data: Some(text.to_owned()),
                encryption: None,
                metadata: Metadata::default(),
                active_from_ms: None,
                expiry: Expiry::CollectionDefault,
                children: vec![],
                fingerprint: None,
                sealed_data: None,
                sealed_encryption: None,
            };
            // The request to the owner, and its reply, as bytes.
            let request = ShardRequest::Create(Create { tokens: vec![new] });
            let bytes = rmp_serde::to_vec_named(&request).expect("the request encodes");
            let ShardRequest::Create(create) =
                rmp_serde::from_slice(&bytes).expect("the request decodes")
            else {
                panic!("a create request");
            };
            let created = state
                .execute(&create, NOW_MS, &catalog)
                .expect("the create applies");
            let reply = ShardReply::created(&created);
            let bytes = rmp_serde::to_vec_named(&reply).expect("the reply encodes");
            let ShardReply::Created(mut tokens) =
                rmp_serde::from_slice(&bytes).expect("the reply decodes")
            else {
                panic!("a created reply");
            };
            let (_, wire) = tokens.pop().expect("one token");
            let token = wire.into_token(&catalog).expect("the token is known");
            let data = token.extra().data.as_deref().map(RawValue::get);
            assert_eq!(data, Some(text));
        }
    }
}
