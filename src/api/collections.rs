//! Collection routes: create, read, list; each needs a collection scope.

use super::auth::{AccountCaller, Caller};
use super::checked::{decode_json, Checked, CheckedBody};
use super::error::{ApiError, ErrorCode};
use super::query::{page, page_params};
use super::render::{CollectionJson, ListJson};
use super::respond::json;
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

/// The body of `POST /api/collections`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCollection {
    /// Display name.
    name: String,
    /// Free text.
    description: Option<String>,
    /// Branding copied onto every token.
    issuer: Option<String>,
    /// Branding: the issuer's logo URL.
    issuer_img: Option<String>,
    /// Branding: the token image URL.
    img: Option<String>,
    /// Branding: the issuer's website.
    issuer_website: Option<String>,
    /// What one token is worth, per currency.
    value: Option<Vec<Money>>,
    /// When non-empty, only these merchants may redeem.
    merchants: Option<Vec<String>>,
    /// Default token lifetime in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    token_expires_after: Option<i64>,
    /// Longest hold on a token, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    hold_ttl_secs_max: Option<i64>,
    /// How long after a redemption it may be voided, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    void_window_secs: Option<i64>,
    /// A JSON Schema that token `data` must satisfy.
    data_schema: Option<Value>,
    /// Must be the account's.
    liveness: Option<Liveness>,
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
        value: body.value.unwrap_or_default(),
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
