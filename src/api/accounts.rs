//! Admin routes: accounts and their API keys, for the admin key only.

use super::auth::Caller;
use super::checked::{decode_json, Checked, CheckedBody};
use super::error::{ApiError, ErrorCode};
use super::query::{page, page_params};
use super::render::{AccountJson, ApiKeyJson, ListJson};
use super::respond::json;
use super::schema::{self, reference};
use super::shapes;
use super::state::AppState;
use super::validate::schemas;
use crate::ids::{AccountId, KeyId};
use crate::model::{ApiKey, Liveness, Scopes};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// The body of `POST /api/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccount {
    /// For operators.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Test or main.
    #[schema(schema_with = reference::<Liveness>)]
    liveness: Liveness,
}

impl CheckedBody for CreateAccount {
    type Grant = ();

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<(), ApiError> {
        caller.require_admin()
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, false, &schemas().account)
    }
}

/// The body of `POST /api/accounts/{accountId}/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKey {
    /// Shown in `createdBy` of what the key creates.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Scope names; the schema lists exactly the known ones.
    #[schema(schema_with = schema::scopes)]
    scopes: Vec<String>,
}

impl CheckedBody for CreateApiKey {
    /// The account the key is for: an unknown one is a 404 before the body
    /// is read.
    type Grant = AccountId;

    fn authorize(caller: Caller, req: &HttpRequest) -> Result<AccountId, ApiError> {
        caller.require_admin()?;
        let state = AppState::of(req)?;
        account_id(state, req.match_info().get("accountId").unwrap_or_default())
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, false, &schemas().api_key)
    }
}

/// In a cluster, lets this node's catalog replica catch up first, so that
/// an admin sees what was just created through another node.
pub async fn catch_up(state: &AppState) -> Result<(), ApiError> {
    let engine = state.engine()?;
    if engine.catalog_replicated() {
        engine.catalog_catch_up().await?;
    }
    Ok(())
}

fn account_not_found() -> ApiError {
    ApiError::new(ErrorCode::AccountNotFound, "No such account.")
}

fn account_id(state: &AppState, text: &str) -> Result<AccountId, ApiError> {
    let catalog = state.engine()?.catalog();
    AccountId::parse(text)
        .filter(|id| catalog.account(*id).is_some())
        .ok_or_else(account_not_found)
}

/// `POST /api/accounts`
#[utoipa::path(
    post, path = "/api/accounts", tag = "accounts", security(("adminKey" = []), ("adminBearer" = [])),
    request_body = CreateAccount,
    responses((status = 201, description = "The account.", body = shapes::AccountShape)),
)]
pub async fn create_account(
    state: web::Data<AppState>,
    request: Checked<CreateAccount>,
) -> Result<HttpResponse, ApiError> {
    let body = request.body;
    let account = state
        .engine()?
        .create_account(body.name, body.liveness)
        .await?;
    json(StatusCode::CREATED, &AccountJson(&account))
}

/// `POST /api/accounts/{accountId}/api-keys`
#[utoipa::path(
    post, path = "/api/accounts/{accountId}/api-keys", tag = "accounts", security(("adminKey" = []), ("adminBearer" = [])),
    params(("accountId" = String, Path, description = "The account.")),
    request_body = CreateApiKey,
    responses((status = 201, description = "The key, with its secret `key` shown this once.", body = shapes::ApiKeyShape)),
)]
pub async fn create_api_key(
    state: web::Data<AppState>,
    request: Checked<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let (account, body) = (request.caller, request.body);
    let mut scopes = Scopes::default();
    for name in &body.scopes {
        // The schema lists exactly the known scopes.
        let known = scopes.insert_named(name);
        debug_assert!(known);
    }
    let (key, secret) = state
        .engine()?
        .create_api_key(account, body.name, scopes)
        .await?;
    json(
        StatusCode::CREATED,
        &ApiKeyJson {
            key: &key,
            secret: Some(&secret),
        },
    )
}

/// `GET /api/accounts/{accountId}/api-keys`
#[utoipa::path(
    get, path = "/api/accounts/{accountId}/api-keys", tag = "accounts", security(("adminKey" = []), ("adminBearer" = [])),
    params(("accountId" = String, Path, description = "The account."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)."),
        ("cursor" = Option<String>, Query, description = "`pagination.nextCursor` of the previous page."),),
    responses((status = 200, description = "A page of the account's keys (no secrets).", body = shapes::ApiKeyListShape)),
)]
pub async fn list_api_keys(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    catch_up(&state).await?;
    let account = account_id(&state, &path)?;
    let (limit, after) = page_params(req.query_string())?;
    let mut keys = state.engine()?.catalog().api_keys_of(account);
    let position = |k: &Arc<ApiKey>| (k.created_at_ms, k.id.0);
    keys.sort_by_key(position);
    let (keys, has_more) = page(&keys, position, after, limit);
    let data = keys
        .iter()
        .map(|key| ApiKeyJson { key, secret: None })
        .collect();
    let last = keys.last().map(position);
    json(StatusCode::OK, &ListJson::page(data, limit, has_more, last))
}

/// `DELETE /api/accounts/{accountId}/api-keys/{keyId}`
#[utoipa::path(
    delete, path = "/api/accounts/{accountId}/api-keys/{keyId}", tag = "accounts", security(("adminKey" = []), ("adminBearer" = [])),
    params(("accountId" = String, Path, description = "The account."),
        ("keyId" = String, Path, description = "The key.")),
    responses((status = 204, description = "Deleted; the key stops working at once.")),
)]
pub async fn delete_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let (account, key) = path.into_inner();
    catch_up(&state).await?;
    let account = account_id(&state, &account)?;
    let key = KeyId::parse(&key)
        .ok_or_else(|| ApiError::new(ErrorCode::ApiKeyNotFound, "No such API key."))?;
    state.engine()?.delete_api_key(account, key).await?;
    Ok(HttpResponse::NoContent().finish())
}
