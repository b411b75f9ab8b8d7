//! One message of a replicated log: a batch of log records (one group
//! commit), or the marker a new owner appends when it takes a shard over.
//!
//! `[version u8][kind u8][body]`; a batch body is frames of
//! `[length u32 LE][record]`, each record a [`LogRecord`] in its own
//! versioned encoding; a claim body is MessagePack of [`Claim`].

use crate::keyring::Keyring;
use crate::log::record::RecordError;
use crate::log::LogRecord;
use serde::{Deserialize, Serialize};

/// The version this build writes; a newer one is refused, not guessed at.
pub const FORMAT_VERSION: u8 = 1;
/// A batch of records.
const KIND_BATCH: u8 = 0;
/// A takeover marker.
const KIND_CLAIM: u8 = 1;
/// Largest message tokend sends: NATS refuses payloads over its
/// `max_payload` (1 MiB by default).
pub const MESSAGE_BYTES_MAX: usize = 900 * 1024;

/// Who took a shard over, and in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The new owner.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
}

/// A decoded message.
#[derive(Debug)]
pub enum LogMessage {
    /// Records, in order.
    Batch(Vec<LogRecord>),
    /// A takeover.
    Claim(Claim),
}

/// Why a message does not decode.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Written by a newer build.
    #[error("log message format {0} is newer than this build reads ({FORMAT_VERSION})")]
    Newer(u8),
    /// Cut short or of an unknown kind.
    #[error("malformed log message: {0}")]
    Malformed(String),
    /// A record inside does not decode.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The header of a batch; frames follow ([`push_frame`]).
pub fn batch_header() -> Vec<u8> {
    vec![FORMAT_VERSION, KIND_BATCH]
}

/// Appends one encoded record as a frame.
pub fn push_frame(out: &mut Vec<u8>, record: &[u8]) {
    let length = u32::try_from(record.len()).expect("records are far below 4 GiB");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(record);
}

/// A claim message.
pub fn claim(claim: &Claim) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, KIND_CLAIM];
    // Serializing a struct of a string and an integer cannot fail.
    out.extend(rmp_serde::to_vec_named(claim).unwrap_or_default());
    out
}

/// Decodes a message.
pub fn decode(bytes: &[u8], keyring: &Keyring) -> Result<LogMessage, MessageError> {
    let [version, kind, body @ ..] = bytes else {
        return Err(MessageError::Malformed("shorter than its header".into()));
    };
    if *version > FORMAT_VERSION {
        return Err(MessageError::Newer(*version));
    }
    match *kind {
        KIND_BATCH => {
            let mut records = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (length, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| MessageError::Malformed("frame length cut short".into()))?;
                let length = u32::from_le_bytes(*length) as usize;
                if tail.len() < length {
                    return Err(MessageError::Malformed("frame cut short".into()));
                }
                let (record, next) = tail.split_at(length);
                records.push(LogRecord::decode(record, keyring)?);
                rest = next;
            }
            Ok(LogMessage::Batch(records))
        }
        KIND_CLAIM => rmp_serde::from_slice(body)
            .map(LogMessage::Claim)
            .map_err(|e| MessageError::Malformed(format!("claim: {e}"))),
        other => Err(MessageError::Malformed(format!("unknown kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Delete, ShardCommand};
    use crate::ids::{AccountId, TokenId};

    #[test]
    fn a_batch_and_a_claim_round_trip_and_damage_is_an_error() {
        let record = LogRecord::Shard {
            now_ms: 42,
            command: ShardCommand::Delete(Delete {
                account_id: AccountId::random(),
                id: TokenId::random(),
            }),
        };
        let mut batch = batch_header();
        push_frame(&mut batch, &record.encode(&Keyring::off()));
        push_frame(&mut batch, &record.encode(&Keyring::off()));
        match decode(&batch, &Keyring::off()).unwrap() {
            LogMessage::Batch(records) => assert_eq!(records, vec![record.clone(), record]),
            other => panic!("{other:?}"),
        }
        assert!(decode(&batch[..batch.len() - 1], &Keyring::off()).is_err());
        let marker = Claim {
            node: "n1".into(),
            epoch: 7,
        };
        match decode(&claim(&marker), &Keyring::off()).unwrap() {
            LogMessage::Claim(decoded) => assert_eq!(decoded, marker),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&[9, 0], &Keyring::off()),
            Err(MessageError::Newer(9))
        ));
        assert!(decode(&[1], &Keyring::off()).is_err());
        assert!(decode(&[1, 5], &Keyring::off()).is_err());
    }
}
