//! What the log holds: one [`LogRecord`] per acknowledged change, in a
//! versioned encoding that every later build reads.
//!
//! ```text
//! record = version byte (1), then the record as MessagePack with named fields
//! ```
//!
//! Fields are encoded by name (MessagePack maps), so a build that adds an
//! optional field to a command still reads every record written before it
//! (the field is absent: `None`), and a record written by a build that added
//! such a field still decodes here (the field is ignored). A change that an
//! older reader must not ignore raises [`FORMAT_VERSION`]; a record of a
//! version above it is refused with [`RecordError::Newer`], never guessed at.
//!
//! Records written before records were versioned (version 0) are the same
//! MessagePack values with positional fields and no version byte; they
//! start with a MessagePack map marker, never with a small version number,
//! and decode through the same types (serde reads a struct from an array or
//! a map alike).
//!
//! Catalog changes and shard commands share one log, so a collection is
//! always logged before the tokens that use it.

use crate::clock::Millis;
use crate::command::{CatalogCommand, ShardCommand};
use serde::{Deserialize, Serialize};

/// The record encoding this build writes, and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

/// One logged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogRecord {
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

/// Why logged bytes are not a record this build can apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer build.
    #[error(
        "log record format version {found} is newer than this build reads (version \
         {FORMAT_VERSION}); run a tokend that reads it (nothing was changed)"
    )]
    Newer {
        /// The version found.
        found: u8,
    },
    /// Not a record of any known version.
    #[error("undecodable log record: {0}")]
    Malformed(String),
}

impl LogRecord {
    /// Appends the encoding of `self` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_VERSION);
        // Encoding plain data into a Vec cannot fail (no I/O, no maps with
        // non-string keys); the assert documents that invariant.
        let result = rmp_serde::encode::write_named(out, self);
        assert!(result.is_ok(), "log record encoding failed: {result:?}");
    }

    /// The encoding of `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a record read back from the log, of this version or an
    /// earlier one.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let malformed = |e: rmp_serde::decode::Error| RecordError::Malformed(e.to_string());
        let record: Self = match bytes.first() {
            Some(&FORMAT_VERSION) => rmp_serde::from_slice(&bytes[1..]).map_err(malformed)?,
            // Version 0: an externally tagged enum, i.e. a one-entry map.
            Some(0x80..=0x8f | 0xde | 0xdf) => rmp_serde::from_slice(bytes).map_err(malformed)?,
            Some(&found @ 2..=0x7f) => return Err(RecordError::Newer { found }),
            Some(other) => {
                return Err(RecordError::Malformed(format!(
                    "starts with byte {other:#04x}, not a record version"
                )))
            }
            None => return Err(RecordError::Malformed("empty".into())),
        };
        record.check()?;
        Ok(record)
    }

    /// Checks what the encoding cannot say: a created token's `data` is
    /// JSON text, as the API validated it before logging it. A record with
    /// anything else there was damaged or written by something else, and
    /// applying it would lose the token's data.
    fn check(&self) -> Result<(), RecordError> {
        let LogRecord::Shard {
            command: ShardCommand::Create(create),
            ..
        } = self
        else {
            return Ok(());
        };
        for token in &create.tokens {
            if let Some(data) = &token.data {
                serde_json::from_str::<&serde_json::value::RawValue>(data).map_err(|e| {
                    RecordError::Malformed(format!("token {}: data is not JSON: {e}", token.id))
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Create, Expiry, NewToken, Redeem};
    use crate::ids::{AccountId, CollectionId, TokenId};
    use crate::model::{Metadata, TokenType};

    fn records() -> Vec<LogRecord> {
        vec![
            LogRecord::Shard {
                now_ms: 42,
                command: ShardCommand::Create(Create {
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
                }),
            },
            LogRecord::Shard {
                now_ms: 43,
                command: ShardCommand::Redeem(Redeem {
                    account_id: AccountId::random(),
                    id: TokenId::random(),
                    merchant_id: Some("m".into()),
                    idempotency_key: None,
                    redeemed_by: "k".into(),
                }),
            },
        ]
    }

    #[test]
    fn records_round_trip_with_their_version_first() {
        for record in records() {
            let bytes = record.encode();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(LogRecord::decode(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn unversioned_positional_records_still_decode() {
        for record in records() {
            let legacy = rmp_serde::to_vec(&record).unwrap();
            assert!(matches!(legacy[0], 0x80..=0x8f), "{:#04x}", legacy[0]);
            assert_eq!(LogRecord::decode(&legacy).unwrap(), record);
        }
    }

    /// A build that adds an optional field to a command (here a `hold_id`
    /// on a redeem) writes records this build still reads, and this build's
    /// records, which lack the field, are what that build reads as `None`.
    #[test]
    fn a_field_added_by_a_newer_writer_is_ignored_and_an_absent_optional_field_is_none() {
        #[derive(Serialize)]
        struct NewerRedeem<'a> {
            account_id: AccountId,
            id: TokenId,
            merchant_id: Option<&'a str>,
            idempotency_key: Option<&'a str>,
            redeemed_by: &'a str,
            hold_id: Option<&'a str>,
        }
        #[derive(Serialize)]
        enum NewerCommand<'a> {
            Redeem(NewerRedeem<'a>),
        }
        #[derive(Serialize)]
        enum NewerRecord<'a> {
            Shard {
                now_ms: Millis,
                command: NewerCommand<'a>,
            },
        }
        let (account_id, id) = (AccountId::random(), TokenId::random());
        let mut bytes = vec![FORMAT_VERSION];
        rmp_serde::encode::write_named(
            &mut bytes,
            &NewerRecord::Shard {
                now_ms: 9,
                command: NewerCommand::Redeem(NewerRedeem {
                    account_id,
                    id,
                    merchant_id: Some("m-1"),
                    idempotency_key: None,
                    redeemed_by: "pos",
                    hold_id: Some("h-1"),
                }),
            },
        )
        .unwrap();
        let expected = LogRecord::Shard {
            now_ms: 9,
            command: ShardCommand::Redeem(Redeem {
                account_id,
                id,
                merchant_id: Some("m-1".into()),
                idempotency_key: None,
                redeemed_by: "pos".into(),
            }),
        };
        assert_eq!(LogRecord::decode(&bytes).unwrap(), expected);

        #[derive(Deserialize, Debug, PartialEq)]
        struct NewerRedeemRead {
            redeemed_by: String,
            hold_id: Option<String>,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        enum NewerCommandRead {
            Redeem(NewerRedeemRead),
        }
        #[derive(Deserialize, Debug, PartialEq)]
        enum NewerRecordRead {
            Shard { command: NewerCommandRead },
        }
        let ours = expected.encode();
        let read: NewerRecordRead = rmp_serde::from_slice(&ours[1..]).unwrap();
        assert_eq!(
            read,
            NewerRecordRead::Shard {
                command: NewerCommandRead::Redeem(NewerRedeemRead {
                    redeemed_by: "pos".into(),
                    hold_id: None
                })
            }
        );
    }

    /// Found by the `log_record` fuzz target: such a record reached the
    /// shard, which dropped the data (and panicked in debug builds).
    #[test]
    fn a_create_whose_data_is_not_json_is_malformed() {
        let mut record = records().swap_remove(0);
        let LogRecord::Shard {
            command: ShardCommand::Create(create),
            ..
        } = &mut record
        else {
            panic!("the first record is a create");
        };
        create.tokens[0].data = Some("{\"a\":".into());
        let error = LogRecord::decode(&record.encode()).unwrap_err();
        assert!(error.to_string().contains("data is not JSON"), "{error}");
    }

    #[test]
    fn a_newer_version_is_refused_and_garbage_is_an_error_not_a_panic() {
        let mut bytes = records()[1].encode();
        bytes[0] = 2;
        assert_eq!(
            LogRecord::decode(&bytes),
            Err(RecordError::Newer { found: 2 })
        );
        assert!(LogRecord::decode(&[0xc1, 0xff, 0x00]).is_err());
        assert!(LogRecord::decode(&[FORMAT_VERSION, 0xc1]).is_err());
        assert!(LogRecord::decode(&[]).is_err());
    }
}
