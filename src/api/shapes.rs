//! The documented shapes of response bodies. The handlers render straight
//! from the engine's structs ([`render`](super::render)) without
//! intermediate copies, so these types are what the document says of that
//! output; the HTTP tests and `make test-api` (every response checked
//! against the document) hold the two together.

use super::schema::{self, reference};
use crate::model::{Liveness, TokenType};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A token, as every token route answers it.
#[derive(ToSchema)]
#[schema(as = Token)]
#[serde(rename_all = "camelCase")]
pub struct TokenShape {
    /// The token id.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// Always `token`.
    #[schema(pattern = "^token$")]
    pub category: String,
    /// The collection it was issued into.
    pub collection_id: String,
    /// `token`, `card` or `bank`.
    #[serde(rename = "type")]
    #[schema(schema_with = reference::<TokenType>)]
    pub kind: TokenType,
    /// `active`, `held`, `redeemed`, `expired` or `deleted`, at the time
    /// of the answer.
    #[schema(schema_with = token_status)]
    pub status: String,
    /// The account's.
    #[schema(schema_with = reference::<Liveness>)]
    pub liveness: Liveness,
    /// When it was created.
    #[schema(schema_with = schema::date_time)]
    pub created_at: String,
    /// `crn:<accountId>:api-key:<keyName>` of the key that created it.
    pub created_by: String,
    /// From when it can be redeemed.
    #[schema(schema_with = schema::date_time)]
    pub active_from: String,
    /// When it expires; null for never.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// The tokenized data while the token is active or held; null once
    /// spent, expired or deleted.
    #[schema(schema_with = schema::any, required = true)]
    pub data: Option<Value>,
    /// String pairs.
    pub metadata: BTreeMap<String, String>,
    /// How `data` was encrypted; null when not given, or once spent.
    #[schema(required = true, schema_with = nullable_object)]
    pub encryption: Option<Value>,
    /// Child token ids, or with `?children=true` the child tokens.
    #[schema(schema_with = children)]
    pub children: Vec<Value>,
    /// The collection's branding.
    #[schema(required = true)]
    pub issuer: Option<String>,
    /// The collection's branding.
    #[schema(required = true)]
    pub issuer_img: Option<String>,
    /// The collection's branding.
    #[schema(required = true)]
    pub img: Option<String>,
    /// The collection's branding.
    #[schema(required = true)]
    pub issuer_website: Option<String>,
    /// The collection's value.
    pub value: Vec<MoneyShape>,
    /// Present once redeemed.
    #[schema(nullable = false)]
    pub redemption: Option<RedemptionShape>,
    /// Present while held.
    #[schema(nullable = false)]
    pub hold: Option<HoldShape>,
    /// Redemptions voided so far, oldest first (absent when none).
    #[schema(nullable = false)]
    pub voided_redemptions: Option<Vec<VoidedShape>>,
    /// When it was deleted (absent unless deleted).
    #[schema(nullable = false, format = DateTime)]
    pub deleted_at: Option<String>,
}

/// `status` of a token.
fn token_status() -> utoipa::openapi::schema::Schema {
    let names: Vec<&str> = crate::model::Status::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    schema::one_of(&names)
}

/// An object or null.
fn nullable_object() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .into()
}

/// A token's `children`: ids, or tokens when expanded.
fn children() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::String, Type::Object])),
        )
        .into()
}

/// An amount in one currency.
#[derive(ToSchema)]
#[schema(as = Money)]
pub struct MoneyShape {
    /// ISO 4217 code.
    pub currency: String,
    /// Decimal amount, as sent.
    pub amount: String,
}

/// How and when a token was spent.
#[derive(ToSchema)]
#[schema(as = Redemption)]
#[serde(rename_all = "camelCase")]
pub struct RedemptionShape {
    /// The merchant named by the redeem.
    #[schema(required = true)]
    pub merchant_id: Option<String>,
    /// The redeem's idempotency key.
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// When.
    #[schema(format = DateTime)]
    pub redeemed_at: String,
    /// The CRN of the key that redeemed it.
    pub redeemed_by: String,
    /// The captured hold, when the redemption was a capture.
    #[schema(nullable = false)]
    pub hold_id: Option<String>,
}

/// The live hold of a held token.
#[derive(ToSchema)]
#[schema(as = Hold)]
#[serde(rename_all = "camelCase")]
pub struct HoldShape {
    /// The hold id (for capture and release).
    pub id: String,
    /// The merchant holding it.
    #[schema(required = true)]
    pub merchant_id: Option<String>,
    /// The hold's idempotency key.
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// When it was placed.
    #[schema(format = DateTime)]
    pub held_at: String,
    /// When it lapses.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The CRN of the key that placed it.
    pub held_by: String,
}

/// A redemption that was voided.
#[derive(ToSchema)]
#[schema(as = VoidedRedemption)]
#[serde(rename_all = "camelCase")]
pub struct VoidedShape {
    /// As in the redemption.
    #[schema(required = true)]
    pub merchant_id: Option<String>,
    /// As in the redemption.
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// As in the redemption.
    #[schema(format = DateTime)]
    pub redeemed_at: String,
    /// As in the redemption.
    pub redeemed_by: String,
    /// As in the redemption.
    #[schema(nullable = false)]
    pub hold_id: Option<String>,
    /// When it was voided.
    #[schema(format = DateTime)]
    pub voided_at: String,
    /// The CRN of the key that voided it.
    pub voided_by: String,
    /// The void's reason.
    #[schema(required = true)]
    pub void_reason: Option<String>,
    /// The void's idempotency key.
    #[schema(required = true)]
    pub void_idempotency_key: Option<String>,
}

/// A collection.
#[derive(ToSchema)]
#[schema(as = Collection)]
#[serde(rename_all = "camelCase")]
pub struct CollectionShape {
    /// The collection id.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// Branding.
    #[schema(required = true)]
    pub issuer: Option<String>,
    /// Branding.
    #[schema(required = true)]
    pub issuer_img: Option<String>,
    /// Branding.
    #[schema(required = true)]
    pub img: Option<String>,
    /// Branding.
    #[schema(required = true)]
    pub issuer_website: Option<String>,
    /// What one token is worth.
    pub value: Vec<MoneyShape>,
    /// Merchants allowed to redeem (empty: any).
    pub merchants: Vec<String>,
    /// Default token lifetime in seconds.
    #[schema(required = true)]
    pub token_expires_after: Option<i64>,
    /// Longest hold, in seconds.
    pub hold_ttl_secs_max: i64,
    /// Void window, in seconds.
    pub void_window_secs: i64,
    /// The JSON Schema of token `data`.
    #[schema(required = true, schema_with = nullable_schema)]
    pub data_schema: Option<Value>,
    /// The account's.
    #[schema(schema_with = reference::<Liveness>)]
    pub liveness: Liveness,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A JSON Schema (object or boolean) or null.
fn nullable_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![
            Type::Object,
            Type::Boolean,
            Type::Null,
        ]))
        .into()
}

/// An account.
#[derive(ToSchema)]
#[schema(as = Account)]
#[serde(rename_all = "camelCase")]
pub struct AccountShape {
    /// The account id.
    pub id: String,
    /// For operators.
    pub name: String,
    /// Test or main.
    #[schema(schema_with = reference::<Liveness>)]
    pub liveness: Liveness,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// An API key; `key` (the secret) only in the create answer.
#[derive(ToSchema)]
#[schema(as = ApiKey)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyShape {
    /// The key id.
    pub id: String,
    /// The account it acts for.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The key string, shown once.
    #[schema(nullable = false)]
    pub key: Option<String>,
}

/// Where a list page stands.
#[derive(ToSchema)]
#[schema(as = Pagination)]
#[serde(rename_all = "camelCase")]
pub struct PaginationShape {
    /// The page size asked for.
    pub limit: usize,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `?cursor=` for the next page; null on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of tokens.
#[derive(ToSchema)]
#[schema(as = TokenList)]
pub struct TokenListShape {
    /// The page.
    pub data: Vec<TokenShape>,
    /// Where it stands.
    pub pagination: PaginationShape,
}

/// A page of collections.
#[derive(ToSchema)]
#[schema(as = CollectionList)]
pub struct CollectionListShape {
    /// The page.
    pub data: Vec<CollectionShape>,
    /// Where it stands.
    pub pagination: PaginationShape,
}

/// A page of API keys (without secrets).
#[derive(ToSchema)]
#[schema(as = ApiKeyList)]
pub struct ApiKeyListShape {
    /// The page.
    pub data: Vec<ApiKeyShape>,
    /// Where it stands.
    pub pagination: PaginationShape,
}

/// The tokens a batch created, in request order.
#[derive(ToSchema)]
#[schema(as = TokenBatch)]
pub struct TokenBatchShape {
    /// The top-level tokens.
    pub data: Vec<TokenShape>,
}

/// The answer of a batch redeem: one item per redemption, in order.
#[derive(ToSchema)]
#[schema(as = RedeemBatchAnswer)]
pub struct RedeemBatchShape {
    /// The items.
    pub data: Vec<RedeemedItemShape>,
}

/// One item of a batch redeem's answer.
#[derive(ToSchema)]
#[schema(as = RedeemedItem)]
#[serde(rename_all = "camelCase")]
pub struct RedeemedItemShape {
    /// As sent.
    pub token_id: String,
    /// The status a single redeem would get.
    pub status: u16,
    /// The token, on a 200.
    #[schema(nullable = false)]
    pub token: Option<TokenShape>,
    /// Why not, otherwise.
    #[schema(nullable = false)]
    pub error: Option<ItemErrorShape>,
}

/// The error of one batch item.
#[derive(ToSchema)]
#[schema(as = ItemError)]
pub struct ItemErrorShape {
    /// The stable code.
    pub code: String,
    /// For people.
    pub message: String,
}

/// The answer of a validation (a dry-run redeem).
#[derive(ToSchema)]
#[schema(as = ValidationAnswer)]
pub struct ValidationShape {
    /// Whether a redeem with this body would succeed (or replay) now.
    pub redeemable: bool,
    /// The error code a redeem would get, when it would not.
    #[schema(required = true)]
    pub code: Option<String>,
    /// For people.
    pub message: String,
    /// The token as it is.
    pub token: TokenShape,
}

/// The answer of a snapshot on demand.
#[derive(ToSchema)]
#[schema(as = SnapshotAnswer)]
pub struct SnapshotShape {
    /// The log position it covers.
    pub lsn: u64,
    /// Its file name in the data dir.
    pub file: String,
    /// Tokens in it.
    pub tokens: u64,
    /// Its size.
    pub bytes: u64,
}

/// A health answer.
#[derive(ToSchema)]
#[schema(as = Health)]
pub struct HealthShape {
    /// `live` or `ready`.
    pub status: String,
    /// In cluster mode, the shards this node holds.
    #[schema(nullable = false, schema_with = schema::any)]
    pub cluster: Option<Value>,
}

/// One problem with a request field.
#[derive(ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorShape {
    /// JSONPath from the body root (`$.metadata.colour`), or of the query
    /// parameter (`$.limit`).
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
}

/// Every error's body.
#[derive(ToSchema)]
#[schema(as = Error)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    /// The HTTP status, repeated.
    pub status: u16,
    /// The stable code; one status per code.
    #[schema(schema_with = error_codes)]
    pub code: String,
    /// For people.
    pub message: String,
    /// Equal to the `X-Request-Id` header.
    pub request_id: String,
    /// One entry per problem (422 `VALIDATION_FAILED` only).
    #[schema(nullable = false)]
    pub validation_errors: Option<Vec<FieldErrorShape>>,
    /// Problems left out of `validationErrors` when there were more than
    /// it lists.
    #[schema(nullable = false)]
    pub validation_errors_omitted: Option<u64>,
}

/// Every error code.
fn error_codes() -> utoipa::openapi::schema::Schema {
    let names: Vec<&str> = super::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    schema::one_of(&names)
}
