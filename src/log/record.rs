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
//!
//! # Sealed records
//!
//! With data keys (see [`crate::keyring`]) a create's token `data` and
//! `encryption` are sealed on the way out: the record is written as version
//! [`SEALED_VERSION`], each such token carrying `sealed_data` /
//! `sealed_encryption` (MessagePack binary, the [`crate::keyring::seal`]
//! format, bound to the token id) in place of `data` / `encryption`. A record
//! with nothing to seal keeps version [`FORMAT_VERSION`], byte for byte what
//! earlier builds wrote. The version is raised for sealed records so that a
//! build that predates sealing refuses them (a newer version) instead of
//! ignoring the sealed fields and losing the data. Decoding opens the sealed
//! fields back into `data` / `encryption`; a value whose key the keyring
//! lacks, or that the key does not open, fails the decode naming the key id.

use crate::clock::Millis;
use crate::command::{CatalogCommand, Create, NewToken, ShardCommand};
use crate::ids::TokenId;
use crate::keyring::{Field, Keyring, SealError};
use serde::{Deserialize, Serialize};

/// The record encoding this build writes when nothing in the record is
/// sealed.
pub const FORMAT_VERSION: u8 = 1;
/// The record encoding of a record holding sealed values; the newest this
/// build reads.
pub const SEALED_VERSION: u8 = 2;

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
         {SEALED_VERSION}); run a tokend that reads it (nothing was changed)"
    )]
    Newer {
        /// The version found.
        found: u8,
    },
    /// Not a record of any known version.
    #[error("undecodable log record: {0}")]
    Malformed(String),
    /// A sealed value that does not open (the error names the key id).
    #[error("token {token} {field}: {source}")]
    Sealed {
        /// The token whose value it is.
        token: TokenId,
        /// `data` or `encryption`.
        field: &'static str,
        /// Why it does not open.
        source: SealError,
    },
}

impl LogRecord {
    /// Appends the encoding of `self` to `out`, sealing token values when
    /// `keyring` has keys.
    pub fn encode_into(&self, out: &mut Vec<u8>, keyring: &Keyring) {
        let sealed = self.sealed(keyring);
        let (version, record) = match &sealed {
            Some(sealed) => (SEALED_VERSION, sealed),
            None => (FORMAT_VERSION, self),
        };
        out.push(version);
        // Encoding plain data into a Vec cannot fail (no I/O, no maps with
        // non-string keys); the assert documents that invariant.
        let result = rmp_serde::encode::write_named(out, record);
        assert!(result.is_ok(), "log record encoding failed: {result:?}");
    }

    /// The encoding of `self` (see [`LogRecord::encode_into`]).
    pub fn encode(&self, keyring: &Keyring) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out, keyring);
        out
    }

    /// A copy of `self` with its token values sealed; `None` when there is
    /// nothing to seal (no keys, not a create, or no values).
    fn sealed(&self, keyring: &Keyring) -> Option<LogRecord> {
        let LogRecord::Shard {
            now_ms,
            command: ShardCommand::Create(create),
        } = self
        else {
            return None;
        };
        let has_values = create
            .tokens
            .iter()
            .any(|t| t.data.is_some() || t.encryption.is_some());
        if !keyring.is_on() || !has_values {
            return None;
        }
        let tokens = create
            .tokens
            .iter()
            .map(|token| seal_token(token, keyring))
            .collect::<Option<Vec<_>>>()?;
        Some(LogRecord::Shard {
            now_ms: *now_ms,
            command: ShardCommand::Create(Create { tokens }),
        })
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

    /// Decodes a record read back from the log, of this version or an
    /// earlier one, opening sealed values with `keyring`.
    pub fn decode(bytes: &[u8], keyring: &Keyring) -> Result<Self, RecordError> {
        let malformed = |e: rmp_serde::decode::Error| RecordError::Malformed(e.to_string());
        let mut record: LogRecord = match bytes.first() {
            Some(&(FORMAT_VERSION | SEALED_VERSION)) => {
                rmp_serde::from_slice(&bytes[1..]).map_err(malformed)?
            }
            // Version 0: an externally tagged enum, i.e. a one-entry map.
            Some(0x80..=0x8f | 0xde | 0xdf) => rmp_serde::from_slice(bytes).map_err(malformed)?,
            Some(&found @ 3..=0x7f) => return Err(RecordError::Newer { found }),
            Some(other) => {
                return Err(RecordError::Malformed(format!(
                    "starts with byte {other:#04x}, not a record version"
                )))
            }
            None => return Err(RecordError::Malformed("empty".into())),
        };
        if let LogRecord::Shard {
            command: ShardCommand::Create(create),
            ..
        } = &mut record
        {
            for token in &mut create.tokens {
                open_token(token, keyring)?;
            }
        }
        record.check()?;
        Ok(record)
    }
}

/// `token` with its `data` and `encryption` sealed under the keyring's
/// first key; `None` when the keyring has none.
fn seal_token(token: &NewToken, keyring: &Keyring) -> Option<NewToken> {
    let id = token.id.0.as_bytes();
    let sealed_data = match &token.data {
        Some(data) => Some(keyring.seal(Field::Data, id, data.as_bytes())?),
        None => None,
    };
    let sealed_encryption = match &token.encryption {
        Some(encryption) => {
            // Plain data into a Vec: encoding cannot fail.
            let json = serde_json::to_vec(encryption)
                .unwrap_or_else(|e| panic!("encryption encoding failed: {e}"));
            Some(keyring.seal(Field::Encryption, id, &json)?)
        }
        None => None,
    };
    Some(NewToken {
        data: None,
        encryption: None,
        sealed_data,
        sealed_encryption,
        ..token.clone()
    })
}

/// Opens `token`'s sealed values back into `data` and `encryption`.
fn open_token(token: &mut NewToken, keyring: &Keyring) -> Result<(), RecordError> {
    let id = token.id;
    let failed = |field: Field, source: SealError| RecordError::Sealed {
        token: id,
        field: field.as_str(),
        source,
    };
    let malformed = |field: Field, why: String| {
        RecordError::Malformed(format!("token {id} sealed {}: {why}", field.as_str()))
    };
    if let Some(sealed) = token.sealed_data.take() {
        if token.data.is_some() {
            return Err(malformed(Field::Data, "beside a plain value".into()));
        }
        let plain = keyring
            .open(Field::Data, id.0.as_bytes(), &sealed)
            .map_err(|e| failed(Field::Data, e))?;
        let text = String::from_utf8(plain).map_err(|e| malformed(Field::Data, e.to_string()))?;
        token.data = Some(text);
    }
    if let Some(sealed) = token.sealed_encryption.take() {
        if token.encryption.is_some() {
            return Err(malformed(Field::Encryption, "beside a plain value".into()));
        }
        let plain = keyring
            .open(Field::Encryption, id.0.as_bytes(), &sealed)
            .map_err(|e| failed(Field::Encryption, e))?;
        let encryption = serde_json::from_slice(&plain)
            .map_err(|e| malformed(Field::Encryption, e.to_string()))?;
        token.encryption = Some(encryption);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Create, Expiry, NewToken, Redeem};
    use crate::ids::{AccountId, CollectionId, TokenId};
    use crate::model::{Encryption, EncryptionKey, Metadata, TokenType};

    const KEY_1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_1_OTHER_BYTES: &str = "k1:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

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
                        sealed_data: None,
                        sealed_encryption: None,
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
            let bytes = record.encode(&Keyring::off());
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(LogRecord::decode(&bytes, &Keyring::off()).unwrap(), record);
        }
    }

    #[test]
    fn unversioned_positional_records_still_decode() {
        for record in records() {
            let legacy = rmp_serde::to_vec(&record).unwrap();
            assert!(matches!(legacy[0], 0x80..=0x8f), "{:#04x}", legacy[0]);
            assert_eq!(LogRecord::decode(&legacy, &Keyring::off()).unwrap(), record);
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
        assert_eq!(
            LogRecord::decode(&bytes, &Keyring::off()).unwrap(),
            expected
        );

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
        let ours = expected.encode(&Keyring::off());
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
        // In the clear, and sealed (the check runs on the opened value).
        let sealing = Keyring::parse("k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        for keyring in [Keyring::off(), sealing] {
            let error = LogRecord::decode(&record.encode(&keyring), &keyring).unwrap_err();
            assert!(error.to_string().contains("data is not JSON"), "{error}");
        }
    }

    #[test]
    fn a_newer_version_is_refused_and_garbage_is_an_error_not_a_panic() {
        let mut bytes = records()[1].encode(&Keyring::off());
        bytes[0] = 3;
        assert_eq!(
            LogRecord::decode(&bytes, &Keyring::off()),
            Err(RecordError::Newer { found: 3 })
        );
        assert!(LogRecord::decode(&[0xc1, 0xff, 0x00], &Keyring::off()).is_err());
        assert!(LogRecord::decode(&[FORMAT_VERSION, 0xc1], &Keyring::off()).is_err());
        assert!(LogRecord::decode(&[], &Keyring::off()).is_err());
    }

    /// The first record with `encryption` set too.
    fn with_values() -> LogRecord {
        let mut record = records().remove(0);
        if let LogRecord::Shard {
            command: ShardCommand::Create(create),
            ..
        } = &mut record
        {
            create.tokens[0].encryption = Some(Encryption {
                cek: Some(EncryptionKey {
                    key: Some("wrapped-cek".into()),
                    alg: Some("AES".into()),
                }),
                kek: None,
            });
        }
        record
    }

    #[test]
    fn with_keys_values_are_sealed_and_open_back_while_other_records_stay_plain() {
        let keyring = Keyring::parse(KEY_1).unwrap();
        let record = with_values();
        let bytes = record.encode(&keyring);
        assert_eq!(bytes[0], SEALED_VERSION);
        for plain in [&b"{\"a\":[1,2"[..], b"wrapped-cek"] {
            assert!(!bytes.windows(plain.len()).any(|w| w == plain));
        }
        assert_eq!(LogRecord::decode(&bytes, &keyring).unwrap(), record);
        assert_eq!(keyring.opened_counts(), [("k1", 2)]);
        let redeem = records().remove(1);
        assert_eq!(redeem.encode(&keyring), redeem.encode(&Keyring::off()));
        let plain = record.encode(&Keyring::off());
        assert_eq!(plain[0], FORMAT_VERSION);
        assert_eq!(LogRecord::decode(&plain, &keyring).unwrap(), record);
    }

    #[test]
    fn a_sealed_record_without_its_key_fails_naming_the_key_id() {
        let bytes = with_values().encode(&Keyring::parse(KEY_1).unwrap());
        for keyring in [
            Keyring::off(),
            Keyring::parse("k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap(),
            Keyring::parse(KEY_1_OTHER_BYTES).unwrap(),
        ] {
            let err = LogRecord::decode(&bytes, &keyring).unwrap_err();
            assert!(
                matches!(err, RecordError::Sealed { field: "data", .. }),
                "{err}"
            );
            assert!(err.to_string().contains("\"k1\""), "{err}");
        }
    }
}
