//! The snapshot image: the whole engine state as one MessagePack document.
//!
//! Each component — the catalog and every shard — is captured at its own
//! point in the log and carries the LSN of the last record it includes. On
//! restore a logged record is applied to a component only if its LSN is
//! above that component's, so shards can be captured one after another
//! without stopping the others.

use crate::catalog::{Catalog, CatalogCommand, CatalogError};
use crate::clock::Millis;
use crate::ids::{CollectionId, TokenId};
use crate::model::collection::CollectionRecord;
use crate::model::metadata;
use crate::model::{
    Account, ApiKey, Encryption, Metadata, Redemption, Status, Token, TokenExtra, TokenType,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// Version of the image layout; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Everything needed to rebuild the engine, up to per-component LSNs.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When it was taken (engine clock).
    pub taken_at_ms: Millis,
    /// Shard count when taken: logged token commands are attributed to the
    /// shard that owned them then, whatever the count is at restore.
    pub shard_count: u32,
    /// LSN of the last catalog change included.
    pub catalog_lsn: u64,
    /// Accounts, keys, collections.
    pub catalog: CatalogImage,
    /// One image per shard, index = shard.
    pub shards: Vec<ShardImage>,
}

impl SnapshotImage {
    /// The LSN up to which every component is complete: WAL segments wholly
    /// at or below it are no longer needed once this image is durable.
    pub fn covered_lsn(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lsn)
            .fold(self.catalog_lsn, u64::min)
    }

    /// Number of tokens in the image.
    pub fn token_count(&self) -> usize {
        self.shards.iter().map(|s| s.tokens.len()).sum()
    }
}

/// The catalog's objects.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CatalogImage {
    /// Every account.
    pub accounts: Vec<Account>,
    /// Every live key (digests only).
    pub api_keys: Vec<ApiKey>,
    /// Every collection.
    pub collections: Vec<CollectionRecord>,
}

impl CatalogImage {
    /// Rebuilds a catalog from the image.
    pub fn restore(self) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::new();
        let commands = self
            .accounts
            .into_iter()
            .map(CatalogCommand::CreateAccount)
            .chain(
                self.collections
                    .into_iter()
                    .map(CatalogCommand::CreateCollection),
            )
            .chain(self.api_keys.into_iter().map(CatalogCommand::CreateApiKey));
        for command in commands {
            catalog.apply(&command)?;
        }
        Ok(catalog)
    }
}

/// One shard's tokens.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShardImage {
    /// LSN of the last record this shard had applied.
    pub lsn: u64,
    /// Every token held, tombstones included.
    pub tokens: Vec<TokenRecord>,
}

/// How a redemption is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionRecord {
    /// See [`Redemption::merchant_id`].
    pub merchant_id: Option<String>,
    /// See [`Redemption::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// See [`Redemption::redeemed_at_ms`].
    pub redeemed_at_ms: Millis,
    /// See [`Redemption::redeemed_by`].
    pub redeemed_by: String,
}

/// How a token is stored: the same facts as [`Token`], with the collection by
/// id and the data as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// See [`Token::id`].
    pub id: TokenId,
    /// The governing collection.
    pub collection_id: CollectionId,
    /// See [`Token::created_by`].
    pub created_by: String,
    /// See [`Token::created_at_ms`].
    pub created_at_ms: Millis,
    /// See [`Token::active_from_ms`].
    pub active_from_ms: Millis,
    /// See [`Token::expires_at_ms`].
    pub expires_at_ms: Millis,
    /// See [`Token::status`].
    pub status: Status,
    /// See [`Token::kind`].
    pub kind: TokenType,
    /// See [`Token::metadata`].
    #[serde(with = "metadata::as_pairs")]
    pub metadata: Metadata,
    /// See [`TokenExtra::description`].
    pub description: Option<String>,
    /// See [`TokenExtra::data`], as JSON text.
    pub data: Option<String>,
    /// See [`TokenExtra::encryption`].
    pub encryption: Option<Encryption>,
    /// See [`TokenExtra::children`].
    pub children: Vec<TokenId>,
    /// See [`TokenExtra::create_fingerprint`].
    pub create_fingerprint: Option<[u8; 16]>,
    /// See [`TokenExtra::redemption`].
    pub redemption: Option<RedemptionRecord>,
    /// See [`TokenExtra::deleted_at_ms`].
    pub deleted_at_ms: Option<Millis>,
}

impl From<&Token> for TokenRecord {
    fn from(token: &Token) -> Self {
        let extra = token.extra();
        Self {
            id: token.id,
            collection_id: token.collection.record.id,
            created_by: token.created_by.to_string(),
            created_at_ms: token.created_at_ms,
            active_from_ms: token.active_from_ms,
            expires_at_ms: token.expires_at_ms,
            status: token.status,
            kind: token.kind,
            metadata: token.metadata.clone(),
            description: extra.description.as_deref().map(str::to_owned),
            data: extra.data.as_ref().map(|d| d.get().to_owned()),
            encryption: extra.encryption.as_deref().cloned(),
            children: extra.children.clone(),
            create_fingerprint: extra.create_fingerprint,
            redemption: extra.redemption.as_ref().map(|r| RedemptionRecord {
                merchant_id: r.merchant_id.as_deref().map(str::to_owned),
                idempotency_key: r.idempotency_key.as_deref().map(str::to_owned),
                redeemed_at_ms: r.redeemed_at_ms,
                redeemed_by: r.redeemed_by.to_string(),
            }),
            deleted_at_ms: extra.deleted_at_ms,
        }
    }
}

impl TokenRecord {
    /// Rebuilds the token; `intern` shares creator names between tokens.
    pub fn into_token(
        self,
        catalog: &Catalog,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Result<Token, String> {
        let collection = catalog.collection(self.collection_id).ok_or_else(|| {
            format!(
                "token {} names unknown collection {}",
                self.id, self.collection_id
            )
        })?;
        let data = match self.data {
            None => None,
            Some(text) => Some(
                RawValue::from_string(text)
                    .map_err(|e| format!("token {} has invalid data: {e}", self.id))?,
            ),
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
                redeemed_by: intern(&r.redeemed_by),
            }),
            deleted_at_ms: self.deleted_at_ms,
        };
        Ok(Token {
            id: self.id,
            collection,
            created_by: intern(&self.created_by),
            created_at_ms: self.created_at_ms,
            active_from_ms: self.active_from_ms,
            expires_at_ms: self.expires_at_ms,
            metadata: self.metadata,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
            status: self.status,
            kind: self.kind,
        })
    }
}
