//! Collections: the redemption rules and branding shared by their tokens.

use crate::clock::Millis;
use crate::ids::{AccountId, CollectionId};
use crate::model::Liveness;
use serde::{Deserialize, Serialize};

/// An amount of money in one currency, kept as the decimal string the client
/// sent (`"5.00"`), so no float ever touches a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// ISO 4217 code, e.g. `NZD`.
    pub currency: String,
    /// Decimal amount, e.g. `5.00`.
    pub amount: String,
}

/// The durable description of a collection: what the WAL and snapshots keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Stable identifier.
    pub id: CollectionId,
    /// Owner; another account's requests never see the collection.
    pub account_id: AccountId,
    /// Display name.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Branding: the issuer's name, copied onto every token.
    pub issuer: Option<String>,
    /// Branding: the issuer's logo URL.
    pub issuer_img: Option<String>,
    /// Branding: the token image URL.
    pub img: Option<String>,
    /// Branding: the issuer's website.
    pub issuer_website: Option<String>,
    /// What one token is worth, per currency.
    pub value: Vec<Money>,
    /// When non-empty, only these merchants may redeem.
    pub merchants: Vec<String>,
    /// Default token lifetime in seconds, counted from creation.
    pub token_expires_after_secs: Option<i64>,
    /// JSON Schema (as JSON text) that token `data` must satisfy.
    pub data_schema: Option<String>,
    /// Always the account's liveness.
    pub liveness: Liveness,
    /// When it was created.
    pub created_at_ms: Millis,
    // The fields below were added after the first on-disk formats, some of
    // which write this record by position (format 1 snapshots, legacy log
    // records): they stay last so such a record, which ends here, still
    // reads, with the defaults.
    /// Longest hold on a token, in seconds (`holdTtlSecsMax`); `None`:
    /// [`HOLD_TTL_SECS_DEFAULT`]. Last and optional: records written
    /// before holds lack it, by name or by position.
    #[serde(default)]
    pub hold_ttl_secs_max: Option<i64>,
    /// How long after a redemption it may be voided, in seconds
    /// (`voidWindowSecs`, 0 forbids voids); `None`:
    /// [`VOID_WINDOW_SECS_DEFAULT`].
    #[serde(default)]
    pub void_window_secs: Option<i64>,
}

/// `holdTtlSecsMax` when a collection does not set it: 15 minutes.
pub const HOLD_TTL_SECS_DEFAULT: i64 = 900;
/// Largest `holdTtlSecsMax`: one day.
pub const HOLD_TTL_SECS_LIMIT: i64 = 86_400;
/// `voidWindowSecs` when a collection does not set it: 90 days.
pub const VOID_WINDOW_SECS_DEFAULT: i64 = 7_776_000;
/// Largest `voidWindowSecs`: 365 days.
pub const VOID_WINDOW_SECS_LIMIT: i64 = 31_536_000;

/// A collection as the engine uses it: the record plus its compiled schema.
pub struct Collection {
    /// The durable part.
    pub record: CollectionRecord,
    /// The `dataSchema` compiled once, at creation or restore, so validating a
    /// token's data costs no schema parsing.
    pub data_validator: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Collection {
    /// Builds the runtime collection, compiling its data schema.
    pub fn from_record(record: CollectionRecord) -> Result<Self, String> {
        let data_validator = match &record.data_schema {
            None => None,
            Some(text) => {
                let schema: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                Some(compile_data_schema(&schema)?)
            }
        };
        Ok(Self {
            record,
            data_validator,
        })
    }

    /// The longest hold on its tokens, in seconds.
    pub fn hold_ttl_secs_max(&self) -> i64 {
        self.record
            .hold_ttl_secs_max
            .unwrap_or(HOLD_TTL_SECS_DEFAULT)
    }

    /// How long after a redemption it may be voided, in seconds.
    pub fn void_window_secs(&self) -> i64 {
        self.record
            .void_window_secs
            .unwrap_or(VOID_WINDOW_SECS_DEFAULT)
    }

    /// Whether `merchant` may redeem tokens of this collection.
    pub fn allows_merchant(&self, merchant: Option<&str>) -> bool {
        if self.record.merchants.is_empty() {
            return true;
        }
        merchant.is_some_and(|m| self.record.merchants.iter().any(|allowed| allowed == m))
    }
}

/// Checks a client-supplied JSON Schema against its meta-schema and compiles
/// it. Remote references cannot be resolved (the engine never reaches out to
/// the network), so a schema that needs them is invalid here.
pub fn compile_data_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("must be a JSON Schema object".to_owned());
    }
    jsonschema::meta::validate(schema).map_err(|e| format!("is not a valid JSON Schema: {e}"))?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("is not a usable JSON Schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CollectionRecord {
        CollectionRecord {
            id: CollectionId::random(),
            account_id: AccountId::random(),
            name: "c".to_owned(),
            description: None,
            issuer: None,
            issuer_img: None,
            img: None,
            issuer_website: None,
            value: Vec::new(),
            merchants: vec!["m-1".to_owned()],
            token_expires_after_secs: Some(60),
            data_schema: None,
            liveness: Liveness::Test,
            created_at_ms: 5,
            hold_ttl_secs_max: Some(30),
            void_window_secs: Some(0),
        }
    }

    #[test]
    fn a_record_written_by_position_before_the_lifecycle_fields_still_reads() {
        let old = record();
        // What builds before holds wrote by position: every field up to
        // `created_at_ms`, nothing after.
        let positional = (
            old.id,
            old.account_id,
            &old.name,
            &old.description,
            &old.issuer,
            &old.issuer_img,
            &old.img,
            &old.issuer_website,
            &old.value,
            &old.merchants,
            old.token_expires_after_secs,
            &old.data_schema,
            old.liveness,
            old.created_at_ms,
        );
        let bytes = rmp_serde::to_vec(&positional).expect("encodes");
        let back: CollectionRecord = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(
            back,
            CollectionRecord {
                hold_ttl_secs_max: None,
                void_window_secs: None,
                ..old
            }
        );
        // This build's records round-trip both ways.
        let now = record();
        for bytes in [
            rmp_serde::to_vec(&now).expect("encodes"),
            rmp_serde::to_vec_named(&now).expect("encodes"),
        ] {
            assert_eq!(
                rmp_serde::from_slice::<CollectionRecord>(&bytes).expect("decodes"),
                now
            );
        }
    }
}
