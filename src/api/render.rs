//! JSON rendering of the API's objects, straight from the engine's structs
//! (no intermediate copies): field names camelCase, times RFC 3339 with
//! milliseconds.

use super::query::encode_cursor;
use crate::clock::Millis;
use crate::ids::HoldId;
use crate::model::token::NEVER;
use crate::model::{Account, ApiKey, Collection, Status, Token};
use crate::timestamp;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;
use uuid::Uuid;

/// A timestamp as RFC 3339 text.
struct At(Millis);

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; timestamp::RENDERED_BYTES];
        s.serialize_str(timestamp::write(self.0, &mut buf))
    }
}

/// An API key's CRN (`crn:<accountId>:api-key:<keyName>`), written
/// straight into the output rather than built as a string first.
struct Crn<'a>(crate::ids::AccountId, &'a str);

impl std::fmt::Display for Crn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "crn:{}:api-key:{}", self.0, self.1)
    }
}

impl Serialize for Crn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A token as the API shows it at `now`.
pub struct TokenJson<'a> {
    /// The token.
    pub token: &'a Token,
    /// The time status and visibility of data are judged at.
    pub now: Millis,
    /// When `?children=true`: the child tokens to embed instead of their ids
    /// (a child that is gone is left out).
    pub children: Option<&'a [Arc<Token>]>,
}

struct ChildrenJson<'a> {
    ids: &'a [crate::ids::TokenId],
    expanded: Option<&'a [Arc<Token>]>,
    now: Millis,
}

impl Serialize for ChildrenJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.expanded {
            Some(children) => {
                let mut seq = s.serialize_seq(Some(children.len()))?;
                for child in children {
                    seq.serialize_element(&TokenJson {
                        token: child,
                        now: self.now,
                        children: None,
                    })?;
                }
                seq.end()
            }
            None => {
                let mut seq = s.serialize_seq(Some(self.ids.len()))?;
                for id in self.ids {
                    seq.serialize_element(&id.to_string())?;
                }
                seq.end()
            }
        }
    }
}

impl Serialize for TokenJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let token = self.token;
        let collection = &token.collection.record;
        let extra = token.extra();
        let status = token.status_at(self.now);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &token.id)?;
        map.serialize_entry("accountId", &collection.account_id)?;
        map.serialize_entry("category", "token")?;
        map.serialize_entry("collectionId", &collection.id)?;
        map.serialize_entry("type", token.kind.as_str())?;
        map.serialize_entry("status", status.as_str())?;
        map.serialize_entry("liveness", collection.liveness.as_str())?;
        map.serialize_entry("createdAt", &At(token.created_at_ms))?;
        map.serialize_entry("createdBy", &Crn(collection.account_id, &token.created_by))?;
        map.serialize_entry("activeFrom", &At(token.active_from_ms))?;
        map.serialize_entry(
            "expiresAt",
            &(token.expires_at_ms != NEVER).then_some(At(token.expires_at_ms)),
        )?;
        map.serialize_entry("description", &extra.description)?;
        // Data is visible only while the token is unspent (active or held):
        // an expired token's data is gone even before its timer frees it.
        let unspent = matches!(status, Status::Active | Status::Held);
        let data: Option<&RawValue> = unspent.then_some(extra.data.as_deref()).flatten();
        map.serialize_entry("data", &data)?;
        map.serialize_entry("metadata", &token.metadata)?;
        let encryption = unspent.then_some(extra.encryption.as_deref()).flatten();
        map.serialize_entry("encryption", &encryption)?;
        map.serialize_entry(
            "children",
            &ChildrenJson {
                ids: &extra.children,
                expanded: self.children,
                now: self.now,
            },
        )?;
        map.serialize_entry("issuer", &collection.issuer)?;
        map.serialize_entry("issuerImg", &collection.issuer_img)?;
        map.serialize_entry("img", &collection.img)?;
        map.serialize_entry("issuerWebsite", &collection.issuer_website)?;
        map.serialize_entry("value", &collection.value)?;
        let lifecycle = extra.lifecycle.as_deref();
        if let Some(redemption) = &extra.redemption {
            map.serialize_entry(
                "redemption",
                &RedemptionJson {
                    merchant_id: redemption.merchant_id.as_deref(),
                    idempotency_key: redemption.idempotency_key.as_deref(),
                    redeemed_at: At(redemption.redeemed_at_ms),
                    redeemed_by: Crn(collection.account_id, &redemption.redeemed_by),
                    hold_id: lifecycle.and_then(|l| l.captured),
                },
            )?;
        }
        if let Some(hold) = extra.live_hold(self.now).filter(|_| status == Status::Held) {
            map.serialize_entry(
                "hold",
                &HoldJson {
                    id: hold.id,
                    merchant_id: hold.merchant_id.as_deref(),
                    idempotency_key: hold.idempotency_key.as_deref(),
                    held_at: At(hold.held_at_ms),
                    expires_at: At(hold.expires_at_ms),
                    held_by: Crn(collection.account_id, &hold.held_by),
                },
            )?;
        }
        if let Some(voided) = lifecycle.map(|l| &l.voided).filter(|v| !v.is_empty()) {
            let voided: Vec<VoidedJson<'_>> = voided
                .iter()
                .map(|v| VoidedJson {
                    merchant_id: v.merchant_id.as_deref(),
                    idempotency_key: v.idempotency_key.as_deref(),
                    redeemed_at: At(v.redeemed_at_ms),
                    redeemed_by: Crn(collection.account_id, &v.redeemed_by),
                    hold_id: v.hold_id,
                    voided_at: At(v.voided_at_ms),
                    voided_by: Crn(collection.account_id, &v.voided_by),
                    void_reason: v.reason.as_deref(),
                    void_idempotency_key: v.void_idempotency_key.as_deref(),
                })
                .collect();
            map.serialize_entry("voidedRedemptions", &voided)?;
        }
        if let Some(deleted_at_ms) = extra.deleted_at_ms {
            map.serialize_entry("deletedAt", &At(deleted_at_ms))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RedemptionJson<'a> {
    merchant_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    redeemed_at: At,
    redeemed_by: Crn<'a>,
    /// Only on a capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_id: Option<HoldId>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HoldJson<'a> {
    id: HoldId,
    merchant_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    held_at: At,
    expires_at: At,
    held_by: Crn<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VoidedJson<'a> {
    merchant_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    redeemed_at: At,
    redeemed_by: Crn<'a>,
    /// Only when the voided redemption was a capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_id: Option<HoldId>,
    voided_at: At,
    voided_by: Crn<'a>,
    void_reason: Option<&'a str>,
    void_idempotency_key: Option<&'a str>,
}

/// A collection as the API shows it.
pub struct CollectionJson<'a>(pub &'a Collection);

impl Serialize for CollectionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.0.record;
        let data_schema: Option<&RawValue> = c
            .data_schema
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &c.id)?;
        map.serialize_entry("accountId", &c.account_id)?;
        map.serialize_entry("name", &c.name)?;
        map.serialize_entry("description", &c.description)?;
        map.serialize_entry("issuer", &c.issuer)?;
        map.serialize_entry("issuerImg", &c.issuer_img)?;
        map.serialize_entry("img", &c.img)?;
        map.serialize_entry("issuerWebsite", &c.issuer_website)?;
        map.serialize_entry("value", &c.value)?;
        map.serialize_entry("merchants", &c.merchants)?;
        map.serialize_entry("tokenExpiresAfter", &c.token_expires_after_secs)?;
        map.serialize_entry("holdTtlSecsMax", &self.0.hold_ttl_secs_max())?;
        map.serialize_entry("voidWindowSecs", &self.0.void_window_secs())?;
        map.serialize_entry("dataSchema", &data_schema)?;
        map.serialize_entry("liveness", c.liveness.as_str())?;
        map.serialize_entry("createdAt", &At(c.created_at_ms))?;
        map.end()
    }
}

/// An account as the API shows it.
pub struct AccountJson<'a>(pub &'a Account);

impl Serialize for AccountJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("id", &a.id)?;
        map.serialize_entry("name", &a.name)?;
        map.serialize_entry("liveness", a.liveness.as_str())?;
        map.serialize_entry("createdAt", &At(a.created_at_ms))?;
        map.end()
    }
}

/// An API key as the API shows it; `key` only in the create response.
pub struct ApiKeyJson<'a> {
    /// The stored key.
    pub key: &'a ApiKey,
    /// The key string, shown once.
    pub secret: Option<&'a str>,
}

impl Serialize for ApiKeyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = self.key;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &k.id)?;
        map.serialize_entry("accountId", &k.account_id)?;
        map.serialize_entry("name", &k.name)?;
        map.serialize_entry("scopes", &k.scopes.names())?;
        map.serialize_entry("createdAt", &At(k.created_at_ms))?;
        if let Some(secret) = self.secret {
            map.serialize_entry("key", secret)?;
        }
        map.end()
    }
}

/// The batch-create envelope: `{"data": [...]}`, serialized straight from the
/// items (a `serde_json::Value` tree of a 10 000-token batch would take tens
/// of megabytes that the allocator keeps after the request).
#[derive(Serialize)]
pub struct DataJson<T: Serialize> {
    /// The items.
    pub data: Vec<T>,
}

/// The list envelope: `{"data": [...], "pagination": {...}}`.
#[derive(Serialize)]
pub struct ListJson<T: Serialize> {
    /// The page.
    pub data: Vec<T>,
    /// Where it stands.
    pub pagination: PaginationJson,
}

impl<T: Serialize> ListJson<T> {
    /// A page of a list ordered by `(createdAt, id)`: when more follow,
    /// `nextCursor` points just after `last`, the position of the page's last
    /// item.
    pub fn page(data: Vec<T>, limit: usize, has_more: bool, last: Option<(Millis, Uuid)>) -> Self {
        let next_cursor = last
            .filter(|_| has_more)
            .map(|(at, id)| encode_cursor(at, id));
        Self {
            data,
            pagination: PaginationJson {
                limit,
                has_more,
                next_cursor,
            },
        }
    }
}

/// The `pagination` object of a list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaginationJson {
    /// The page size asked for.
    pub limit: usize,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `?cursor=` for the next page (null on the last).
    pub next_cursor: Option<String>,
}
