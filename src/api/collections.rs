//! Collection routes: create, read, list; each needs a collection scope.

use super::auth::{AccountCaller, Caller};
use super::checked::{decode_json, Checked, CheckedBody};
use super::error::{ApiError, ErrorCode};
use super::query::{page, page_params};
use super::render::{CollectionJson, ListJson};
use super::respond::json;
use super::schema::{self, reference};
use super::shapes;
use super::state::AppState;
use super::validate::{schemas, whole_number};
use crate::ids::{AccountId, CollectionId};
use crate::model::collection::{compile_data_schema, CollectionRecord};
use crate::model::{Collection, Liveness, Money, Scope};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

/// The body of `POST /api/collections`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCollection {
    /// Display name.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Free text.
    #[schema(nullable = false, max_length = 1000)]
    description: Option<String>,
    /// Branding copied onto every token.
    #[schema(nullable = false, max_length = 200)]
    issuer: Option<String>,
    /// Branding: the issuer's logo URL.
    #[schema(nullable = false, max_length = 2048)]
    issuer_img: Option<String>,
    /// Branding: the token image URL.
    #[schema(nullable = false, max_length = 2048)]
    img: Option<String>,
    /// Branding: the issuer's website.
    #[schema(nullable = false, max_length = 2048)]
    issuer_website: Option<String>,
    /// What one token is worth, per currency.
    #[schema(nullable = false, max_items = 20)]
    value: Option<Vec<MoneyBody>>,
    /// When non-empty, only these merchants may redeem.
    #[schema(schema_with = schema::merchants)]
    merchants: Option<Vec<String>>,
    /// Default token lifetime in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::lifetime_secs)]
    token_expires_after: Option<i64>,
    /// Longest hold on a token, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::hold_ttl_secs)]
    hold_ttl_secs_max: Option<i64>,
    /// How long after a redemption it may be voided, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::void_window_secs)]
    void_window_secs: Option<i64>,
    /// A JSON Schema that token `data` must satisfy.
    #[schema(schema_with = schema::json_schema)]
    data_schema: Option<Value>,
    /// Must be the account's.
    #[schema(schema_with = reference::<Liveness>)]
    liveness: Option<Liveness>,
}

/// One item of a collection's `value`: an amount in one currency, kept as
/// the decimal text sent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// ISO 4217 code, e.g. `NZD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Decimal amount, e.g. `5.00`: up to 15 digits, up to 8 decimals.
    #[schema(pattern = "^(0|[1-9][0-9]{0,14})(\\.[0-9]{1,8})?$")]
    amount: String,
}

impl From<MoneyBody> for Money {
    fn from(body: MoneyBody) -> Self {
        Self {
            currency: body.currency,
            amount: body.amount,
        }
    }
}

impl CheckedBody for CreateCollection {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::CollectionWrite)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, false, &schemas().collection)
    }
}

/// The 403 for a liveness other than the account's.
pub fn liveness_mismatch(account: Liveness) -> ApiError {
    ApiError::new(
        ErrorCode::AccountLivenessMismatch,
        format!("The account is {}; liveness must match.", account.as_str()),
    )
}

/// `POST /api/collections`
#[utoipa::path(
    post, path = "/api/collections", tag = "collections", security(("apiKey" = []), ("bearer" = [])),
    request_body = CreateCollection,
    responses((status = 201, description = "The collection.", body = shapes::CollectionShape)),
)]
pub async fn create(
    state: web::Data<AppState>,
    request: Checked<CreateCollection>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let data_schema = match &body.data_schema {
        None => None,
        Some(schema) => {
            compile_data_schema(schema).map_err(|e| ApiError::invalid("$.dataSchema", e))?;
            Some(schema.to_string())
        }
    };
    let account_liveness = caller.account.liveness;
    if body.liveness.is_some_and(|l| l != account_liveness) {
        return Err(liveness_mismatch(account_liveness));
    }
    let record = CollectionRecord {
        id: CollectionId::random(),
        account_id: caller.account.id,
        name: body.name,
        description: body.description,
        issuer: body.issuer,
        issuer_img: body.issuer_img,
        img: body.img,
        issuer_website: body.issuer_website,
        value: body
            .value
            .map(|items| items.into_iter().map(Money::from).collect())
            .unwrap_or_default(),
        merchants: body.merchants.unwrap_or_default(),
        token_expires_after_secs: body.token_expires_after,
        data_schema,
        hold_ttl_secs_max: body.hold_ttl_secs_max,
        void_window_secs: body.void_window_secs,
        liveness: account_liveness,
        created_at_ms: 0,
    };
    let collection = state.engine()?.create_collection(record).await?;
    json(StatusCode::CREATED, &CollectionJson(&collection))
}

/// `GET /api/collections`
#[utoipa::path(
    get, path = "/api/collections", tag = "collections", security(("apiKey" = []), ("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)."),
        ("cursor" = Option<String>, Query, description = "`pagination.nextCursor` of the previous page."),),
    responses((status = 200, description = "A page of the account's collections.", body = shapes::CollectionListShape)),
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::CollectionRead)?;
    let (limit, after) = page_params(req.query_string())?;
    let account: AccountId = caller.account.id;
    super::accounts::catch_up(&state).await?;
    let mut collections = state.engine()?.catalog().collections_of(account);
    let position = |c: &Arc<Collection>| (c.record.created_at_ms, c.record.id.0);
    collections.sort_by_key(position);
    let (collections, has_more) = page(&collections, position, after, limit);
    let data = collections.iter().map(|c| CollectionJson(c)).collect();
    let last = collections.last().map(position);
    json(StatusCode::OK, &ListJson::page(data, limit, has_more, last))
}

/// `GET /api/collections/{id}`
#[utoipa::path(
    get, path = "/api/collections/{id}", tag = "collections", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The collection.")),
    responses((status = 200, description = "The collection.", body = shapes::CollectionShape)),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::CollectionRead)?;
    super::accounts::catch_up(&state).await?;
    let catalog = state.engine()?.catalog();
    let collection = CollectionId::parse(&path)
        .and_then(|id| catalog.collection_of(caller.account.id, id))
        .ok_or_else(|| ApiError::new(ErrorCode::CollectionNotFound, "No such collection."))?;
    json(StatusCode::OK, &CollectionJson(&collection))
}
