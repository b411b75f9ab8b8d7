//! Admin routes: accounts and their API keys (§3).

use super::auth::Caller;
use super::body::{read_json, BODY_BYTES_MAX};
use super::error::{ApiError, ErrorCode};
use super::query::{page, page_params};
use super::render::{AccountJson, ApiKeyJson, ListJson};
use super::respond::json;
use super::state::AppState;
use super::validate::{decode, schemas};
use crate::ids::{AccountId, KeyId};
use crate::model::{ApiKey, Liveness, Scopes};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAccount {
    name: String,
    liveness: Liveness,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateApiKey {
    name: String,
    scopes: Vec<String>,
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
pub async fn create_account(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let body = read_json(&req, payload, BODY_BYTES_MAX, false).await?;
    let body: CreateAccount = decode(&schemas().account, body)?;
    let account = state
        .engine()?
        .create_account(body.name, body.liveness)
        .await?;
    json(StatusCode::CREATED, &AccountJson(&account))
}

/// `POST /api/accounts/{accountId}/api-keys`
pub async fn create_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account = account_id(&state, &path)?;
    let body = read_json(&req, payload, BODY_BYTES_MAX, false).await?;
    let body: CreateApiKey = decode(&schemas().api_key, body)?;
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
pub async fn list_api_keys(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
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
pub async fn delete_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let (account, key) = path.into_inner();
    let account = account_id(&state, &account)?;
    let key = KeyId::parse(&key)
        .ok_or_else(|| ApiError::new(ErrorCode::ApiKeyNotFound, "No such API key."))?;
    state.engine()?.delete_api_key(account, key).await?;
    Ok(HttpResponse::NoContent().finish())
}
