//! Token routes: create (single, with children, batch), read, HEAD,
//! list, delete, redeem.

use super::auth::{AccountCaller, Caller};
use super::batch::{BatchBody, BatchCreate};
use super::body::{json_text, parse_json, BATCH_BODY_BYTES_MAX};
use super::checked::{decode_json, Checked, CheckedBody};
use super::error::{ApiError, ErrorCode};
use super::plan::{plan_batch, Planner, TokenBody};
use super::problems::Problems;
use super::query::Query;
use super::render::{DataJson, ListJson, TokenJson};
use super::respond::json;
use super::shapes;
use super::state::AppState;
use super::validate::{check, schemas};
use crate::clock::Millis;
use crate::command::Redeem;
use crate::engine::{Created, ListQuery};
use crate::ids::{AccountId, CollectionId, TokenId};
use crate::model::{Scope, Status, Token, TokenType};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

/// Header marking a response that repeats an earlier one.
const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Header of HEAD responses giving the token's status.
const STATUS_HEADER: &str = "X-Token-Status";

/// The body of `POST /api/tokens`, checked against the token schema: the
/// parsed JSON, which the planner checks and fingerprints, and the text, from
/// which it takes `data` exactly as sent.
pub struct CreateBody {
    /// The body parsed.
    value: Value,
    /// The body as sent.
    text: Bytes,
}

impl CheckedBody for CreateBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenCreate)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        let value = parse_json(req, &body, false)?;
        check(&schemas().token, &value)?;
        Ok(CreateBody {
            value,
            text: body.freeze(),
        })
    }
}

/// The body of `POST /api/tokens/batch`, known to be JSON and kept as text:
/// its items are parsed one at a time (see [`BatchBody`]).
pub struct BatchText(Bytes);

impl CheckedBody for BatchText {
    type Grant = AccountCaller;
    const BYTES_MAX: usize = BATCH_BODY_BYTES_MAX;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenCreate)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        json_text(req, body).map(BatchText)
    }
}

/// The body of `POST /api/tokens/{id}/redeem`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemBody {
    /// Where it is redeemed; must be one of the collection's merchants when
    /// it lists any.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub merchant_id: Option<String>,
    /// Makes the redeem safe to retry: the same key answers the same 200.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

impl CheckedBody for RedeemBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRedeem)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        // Every field is optional: an empty body is `{}`.
        decode_json(req, body, true, &schemas().redeem)
    }
}

/// Marks a response as the replay of an earlier one.
pub(super) fn mark_replayed(response: &mut HttpResponse) {
    response.headers_mut().insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
}

pub(super) fn render(token: &Token, now: Millis) -> TokenJson<'_> {
    TokenJson {
        token,
        now,
        children: None,
    }
}

/// `POST /api/tokens`
#[utoipa::path(
    post, path = "/api/tokens", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    request_body = TokenBody,
    responses((status = 201, description = "The token (with its children's ids).", body = shapes::TokenShape),
        (status = 200, description = "A replay of an earlier create with the same idempotency key.", body = shapes::TokenShape, headers(("Idempotent-Replayed" = String, description = "`true`.")))),
)]
pub async fn create(
    state: web::Data<AppState>,
    request: Checked<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let engine = state.engine()?;
    let plan = || {
        let mut planner = Planner::new(&caller, engine);
        let top = planner.plan_top(&body.value, &body.text, "$");
        planner.finish().map(|tokens| (top, tokens))
    };
    // In a cluster, a collection created through another node a moment ago
    // may not be in this node's replica yet: catch up before a 404.
    let (top, tokens) = match plan() {
        Err(e) if e.code == ErrorCode::CollectionNotFound && engine.catalog_replicated() => {
            engine.catalog_catch_up().await?;
            plan()?
        }
        planned => planned?,
    };
    let created = engine.create(caller.account.id, tokens).await?;
    let parent = created.get(top).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "The engine returned fewer tokens than asked for.",
        )
    })?;
    let now = state.engine()?.now();
    match parent {
        Created::New(token) => json(StatusCode::CREATED, &render(token, now)),
        Created::Replayed(token) => {
            let mut response = json(StatusCode::OK, &render(token, now))?;
            mark_replayed(&mut response);
            Ok(response)
        }
    }
}

/// `POST /api/tokens/batch`
#[utoipa::path(
    post, path = "/api/tokens/batch", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    request_body = BatchCreate,
    responses((status = 201, description = "The tokens, in request order: all or none.", body = shapes::TokenBatchShape)),
)]
pub async fn create_batch(
    state: web::Data<AppState>,
    request: Checked<BatchText>,
) -> Result<HttpResponse, ApiError> {
    let Checked {
        caller,
        body: BatchText(body),
    } = request;
    let engine = state.engine()?;
    let plan = || {
        let batch = BatchBody::split(&body)?;
        let mut planner = Planner::new(&caller, engine);
        let tops = plan_batch(&mut planner, batch)?;
        planner.finish().map(|tokens| (tops, tokens))
    };
    // As for one token: catch a cluster node's catalog up before a 404.
    let (tops, tokens) = match plan() {
        Err(e) if e.code == ErrorCode::CollectionNotFound && engine.catalog_replicated() => {
            engine.catalog_catch_up().await?;
            plan()?
        }
        planned => planned?,
    };
    let created = engine.create(caller.account.id, tokens).await?;
    let now = state.engine()?.now();
    let data: Vec<TokenJson<'_>> = tops
        .iter()
        .filter_map(|&top| created.get(top))
        .map(|c| render(c.token(), now))
        .collect();
    json(StatusCode::CREATED, &DataJson { data })
}

pub(super) fn token_id(text: &str) -> Result<TokenId, ApiError> {
    TokenId::parse(text).ok_or_else(ApiError::token_not_found)
}

/// One token as the caller sees it; 404 when unknown, purged or foreign.
async fn fetch_token(
    state: &AppState,
    caller: &AccountCaller,
    id: TokenId,
) -> Result<Arc<Token>, ApiError> {
    state
        .engine()?
        .fetch(caller.account.id, &[id])
        .await?
        .pop()
        .flatten()
        .ok_or_else(ApiError::token_not_found)
}

/// The children of each token, fetched in one round per shard.
async fn children_of(
    state: &AppState,
    caller: &AccountCaller,
    tokens: &[Arc<Token>],
) -> Result<Vec<Vec<Arc<Token>>>, ApiError> {
    let ids: Vec<TokenId> = tokens
        .iter()
        .flat_map(|t| t.extra().children.iter().copied())
        .collect();
    if ids.is_empty() {
        return Ok(vec![Vec::new(); tokens.len()]);
    }
    let mut found = state
        .engine()?
        .fetch(caller.account.id, &ids)
        .await?
        .into_iter();
    Ok(tokens
        .iter()
        .map(|t| {
            (&mut found)
                .take(t.extra().children.len())
                .flatten()
                .collect()
        })
        .collect())
}

/// `GET /api/tokens/{id}`
#[utoipa::path(
    get, path = "/api/tokens/{id}", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token."),
        ("children" = Option<bool>, Query, description = "`true` embeds the child tokens instead of their ids.")),
    responses((status = 200, description = "The token.", body = shapes::TokenShape)),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRead)?;
    let query = Query::parse(req.query_string(), &["children"])?;
    let mut errors = Problems::new();
    let expand = query.flag("children", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let id = token_id(&path)?;
    let token = fetch_token(&state, &caller, id).await?;
    let now = state.engine()?.now();
    if expand {
        let children = children_of(&state, &caller, std::slice::from_ref(&token)).await?;
        let children = children.first().map(Vec::as_slice);
        return json(
            StatusCode::OK,
            &TokenJson {
                token: &token,
                now,
                children,
            },
        );
    }
    json(StatusCode::OK, &render(&token, now))
}

/// `HEAD /api/tokens/{id}`: 200 when redeemable now, 409 while held, 410
/// when spent, expired or deleted, 422 before `activeFrom`, 404 when
/// unknown.
#[utoipa::path(
    head, path = "/api/tokens/{id}", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    responses((status = 200, description = "Redeemable now.", headers(("X-Token-Status" = String, description = "The token's status."))),
        (status = 409, description = "Held.", headers(("X-Token-Status" = String, description = "The token's status."))),
        (status = 410, description = "Redeemed, expired or deleted.", headers(("X-Token-Status" = String, description = "The token's status."))),
        (status = 422, description = "Not active yet.", headers(("X-Token-Status" = String, description = "The token's status."))),
        (status = 404, description = "Unknown (no body).")),
)]
pub async fn head(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRead)?;
    let id = token_id(&path)?;
    let token = fetch_token(&state, &caller, id).await?;
    let now = state.engine()?.now();
    let status = token.status_at(now);
    let code = match status {
        Status::Active if now < token.active_from_ms => StatusCode::UNPROCESSABLE_ENTITY,
        Status::Active => StatusCode::OK,
        Status::Held => StatusCode::CONFLICT,
        Status::Redeemed | Status::Expired | Status::Deleted => StatusCode::GONE,
    };
    Ok(HttpResponse::build(code)
        .insert_header((STATUS_HEADER, status.as_str()))
        .finish())
}

/// `GET /api/tokens`
#[utoipa::path(
    get, path = "/api/tokens", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    params(("collectionId" = Option<Vec<String>>, Query, explode = true, description = "Only these collections (repeatable)."),
        ("status" = Option<Vec<String>>, Query, explode = true, description = "Only these statuses: active, held, redeemed, expired, deleted (repeatable)."),
        ("type" = Option<Vec<String>>, Query, explode = true, description = "Only these types: token, card, bank (repeatable)."),
        ("id" = Option<Vec<String>>, Query, explode = true, description = "Only these tokens (repeatable)."),
        ("children" = Option<bool>, Query, description = "`true` embeds the child tokens."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)."),
        ("cursor" = Option<String>, Query, description = "`pagination.nextCursor` of the previous page."),),
    responses((status = 200, description = "A page of the account's tokens.", body = shapes::TokenListShape)),
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRead)?;
    let (query, expand) = list_query(caller.account.id, req.query_string())?;
    let limit = query.limit;
    let page = state.engine()?.list(query).await?;
    let now = state.engine()?.now();
    let children = if expand {
        children_of(&state, &caller, &page.tokens).await?
    } else {
        Vec::new()
    };
    let data = page
        .tokens
        .iter()
        .enumerate()
        .map(|(i, token)| TokenJson {
            token,
            now,
            children: expand.then(|| children.get(i).map(Vec::as_slice).unwrap_or_default()),
        })
        .collect();
    let last = page.tokens.last().map(|t| (t.created_at_ms, t.id.0));
    json(
        StatusCode::OK,
        &ListJson::page(data, limit, page.has_more, last),
    )
}

/// The filters and page of `account`'s list request, from its query string,
/// and whether children are expanded; a 422 listing every bad parameter.
fn list_query(account: AccountId, text: &str) -> Result<(ListQuery, bool), ApiError> {
    let query = Query::parse(
        text,
        &[
            "collectionId",
            "status",
            "type",
            "id",
            "children",
            "limit",
            "cursor",
        ],
    )?;
    let mut errors = Problems::new();
    let collection_ids = query.parsed(
        "collectionId",
        CollectionId::parse,
        "a collection id",
        &mut errors,
    );
    let statuses = query.parsed(
        "status",
        Status::parse,
        "one of active, held, redeemed, expired, deleted",
        &mut errors,
    );
    let types = query.parsed(
        "type",
        TokenType::parse,
        "one of token, card, bank",
        &mut errors,
    );
    let ids = query.parsed("id", TokenId::parse, "a token id", &mut errors);
    let expand = query.flag("children", &mut errors);
    let limit = query.limit(&mut errors);
    let after = query.cursor(&mut errors).map(|(at, id)| (at, TokenId(id)));
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let query = ListQuery {
        account_id: account,
        collection_ids,
        statuses,
        types,
        ids,
        after,
        limit,
    };
    Ok((query, expand))
}

/// `DELETE /api/tokens/{id}`
#[utoipa::path(
    delete, path = "/api/tokens/{id}", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    responses((status = 204, description = "Deleted (again: 204); data, metadata and encryption erased.")),
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenDelete)?;
    let id = token_id(&path)?;
    state.engine()?.delete(caller.account.id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/tokens/{id}/redeem`
#[utoipa::path(
    post, path = "/api/tokens/{id}/redeem", tag = "tokens", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    request_body = Option<RedeemBody>,
    responses((status = 200, description = "The redeemed token (`Idempotent-Replayed: true` on a replay).", body = shapes::TokenShape)),
)]
pub async fn redeem(
    state: web::Data<AppState>,
    request: Checked<RedeemBody>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let id = token_id(&path)?;
    let redeemed = state
        .engine()?
        .redeem(Redeem {
            account_id: caller.account.id,
            id,
            merchant_id: body.merchant_id,
            idempotency_key: body.idempotency_key,
            redeemed_by: caller.key.name.clone(),
        })
        .await?;
    let now = state.engine()?.now();
    let mut response = json(StatusCode::OK, &render(&redeemed.token, now))?;
    if redeemed.replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malloc::THREAD_CACHE_BYTES_MAX;
    use std::future::Future;

    /// The size of the future `handler` returns.
    fn future_bytes<F, A, B, C, Fut>(_handler: F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }

    /// actix-web boxes each request's handler future together with its
    /// extractors' (one allocation per request). When that box passed glibc's
    /// thread cache, every redeem took malloc's slow path, consolidating the
    /// freed small chunks first: about 3% of the HTTP worker's CPU. The
    /// engine's layers hold only what they await to keep it small (1 168 bytes
    /// before, 552 after); this leaves the extractors' future and the request
    /// parts the rest of the cache's size.
    #[test]
    fn a_redeem_future_fits_the_allocators_thread_cache() {
        let bytes = future_bytes(redeem);
        assert!(
            bytes <= THREAD_CACHE_BYTES_MAX * 3 / 4,
            "the redeem handler's future is {bytes} bytes"
        );
    }
}
