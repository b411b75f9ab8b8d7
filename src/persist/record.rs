//! What the write-ahead log holds: one [`WalRecord`] per acknowledged change,
//! MessagePack-encoded. Catalog changes and shard commands share one log, so
//! a collection is always logged before the tokens that use it.

use crate::catalog::CatalogCommand;
use crate::clock::Millis;
use crate::shard::ShardCommand;
use serde::{Deserialize, Serialize};

/// One logged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalRecord {
    /// An account, key or collection change.
    Catalog(CatalogCommand),
    /// A token change, with the time the shard decided it at: replay applies
    /// it at the same time, so it reaches the same decision.
    Shard {
        /// The decision time.
        now_ms: Millis,
        /// The command.
        command: ShardCommand,
    },
}

/// Why a logged record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable WAL record: {0}")]
pub struct DecodeError(#[from] rmp_serde::decode::Error);

impl WalRecord {
    /// Appends the encoding of `self` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Encoding plain data into a Vec cannot fail (no I/O, no maps with
        // non-string keys); the assert documents that invariant.
        let result = rmp_serde::encode::write(out, self);
        assert!(result.is_ok(), "WAL record encoding failed: {result:?}");
    }

    /// The encoding of `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a record read back from the log.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, CollectionId, TokenId};
    use crate::model::{Metadata, TokenType};
    use crate::shard::{Expiry, NewToken};

    #[test]
    fn records_round_trip() {
        let records = vec![
            WalRecord::Shard {
                now_ms: 42,
                command: ShardCommand::Create {
                    tokens: vec![NewToken {
                        id: TokenId::random(),
                        account_id: AccountId::random(),
                        collection_id: CollectionId::random(),
                        created_by: "issuer".into(),
                        kind: TokenType::Card,
                        description: Some("d".into()),
                        data: Some(r#"{"a":[1,2,{"b":null}]}"#.into()),
                        encryption: None,
                        metadata: Metadata::from_pairs([("k", "v")]),
                        active_from_ms: Some(7),
                        expiry: Expiry::InSecs(60),
                        children: vec![TokenId::random()],
                        fingerprint: Some([3; 16]),
                    }],
                },
            },
            WalRecord::Shard {
                now_ms: 43,
                command: ShardCommand::Redeem {
                    account_id: AccountId::random(),
                    id: TokenId::random(),
                    merchant_id: Some("m".into()),
                    idempotency_key: None,
                    redeemed_by: "k".into(),
                },
            },
        ];
        for record in records {
            assert_eq!(WalRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(WalRecord::decode(&[0xc1, 0xff, 0x00]).is_err());
        assert!(WalRecord::decode(&[]).is_err());
    }
}
