//! Token routes (§5): create (single, with children, batch), read, HEAD,
//! list, delete, redeem.

use super::auth::{AccountCaller, Caller};
use super::batch::{self, BatchBody};
use super::body::{read_json, read_json_text, BATCH_BODY_BYTES_MAX, BODY_BYTES_MAX};
use super::collections::liveness_mismatch;
use super::error::{ApiError, ErrorCode, FieldError};
use super::query::Query;
use super::render::{DataJson, ListJson, TokenJson};
use super::respond::json;
use super::state::AppState;
use super::validate::{decode, schemas, violations, whole_number, DATA_BYTES_MAX};
use crate::clock::Millis;
use crate::command::{Expiry, NewToken, Redeem};
use crate::engine::{Created, Engine, ListQuery};
use crate::ids::{CollectionId, TokenId};
use crate::model::{Encryption, Liveness, Metadata, Scope, Status, Token, TokenType};
use crate::timestamp;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Header marking a response that repeats an earlier one.
const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Header of HEAD responses giving the token's status.
const STATUS_HEADER: &str = "X-Token-Status";

/// The body of `POST /api/tokens` (and each item of a batch), after its
/// schema check: field presence and shapes are already known good.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    /// The collection the token is issued into.
    pub collection_id: Option<String>,
    /// Makes the create safe to retry: the same key answers the same token.
    pub idempotency_key: Option<String>,
    /// `test` or `main`; must match the collection's.
    pub liveness: Option<Liveness>,
    /// `token`, `card` or `bank`.
    #[serde(rename = "type")]
    pub kind: Option<TokenType>,
    /// Free text shown with the token.
    pub description: Option<String>,
    /// The tokenized data, checked against the collection's `dataSchema`.
    pub data: Option<Value>,
    /// String pairs, searchable in lists.
    pub metadata: Option<BTreeMap<String, String>>,
    /// How `data` was encrypted by the caller, if it was.
    pub encryption: Option<Encryption>,
    /// RFC 3339 time from which the token can be redeemed.
    pub active_from: Option<String>,
    /// RFC 3339 expiry; excludes `expiresIn`.
    pub expires_at: Option<String>,
    /// Seconds from now to expiry; excludes `expiresAt`.
    #[serde(default, deserialize_with = "whole_number")]
    pub expires_in: Option<i64>,
    /// Child tokens created with this one.
    pub children: Option<Vec<TokenBody>>,
}

/// The body of `POST /api/tokens/{id}/redeem`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemBody {
    /// Where it is redeemed; must be one of the collection's merchants when
    /// it lists any.
    pub merchant_id: Option<String>,
    /// Makes the redeem safe to retry: the same key answers the same 200.
    pub idempotency_key: Option<String>,
}

/// Turns validated token bodies into engine commands, collecting every
/// problem before giving up, so one response lists them all.
struct Planner<'a> {
    caller: &'a AccountCaller,
    engine: &'a Engine,
    now: Millis,
    tokens: Vec<NewToken>,
    errors: Vec<FieldError>,
    collection_missing: bool,
    liveness_differs: bool,
    idempotency_keys: HashSet<String>,
}

/// SHA-256 (truncated) of a body's canonical JSON: serde_json's map keeps keys
/// sorted, so the same fields in another order give the same fingerprint.
fn fingerprint(body: &Value) -> [u8; 16] {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl<'a> Planner<'a> {
    fn new(caller: &'a AccountCaller, engine: &'a Engine) -> Self {
        Self {
            caller,
            engine,
            now: engine.now(),
            tokens: Vec::new(),
            errors: Vec::new(),
            collection_missing: false,
            liveness_differs: false,
            idempotency_keys: HashSet::new(),
        }
    }

    /// Plans a top-level token and its children; returns its index in
    /// `self.tokens`.
    fn plan_top(&mut self, value: Value, path: &str) -> usize {
        let print = fingerprint(&value);
        let child_prints: Vec<[u8; 16]> = value
            .get("children")
            .and_then(Value::as_array)
            .map(|children| children.iter().map(fingerprint).collect())
            .unwrap_or_default();
        let body: TokenBody = match serde_json::from_value(value) {
            Ok(body) => body,
            Err(e) => {
                self.errors.push(FieldError::new(path, e.to_string()));
                return usize::MAX;
            }
        };
        let collection_text = body.collection_id.clone().unwrap_or_default();
        let collection_id = CollectionId::parse(&collection_text);
        let top = self.tokens.len();
        let mut child_ids = Vec::new();
        let parent_id = self.plan_one(&body, collection_id, print, path, None);
        // Children of an idempotent parent get ids derived from the parent's,
        // so a replayed create names the same children instead of new ones.
        let idempotent_parent = parent_id.filter(|_| body.idempotency_key.is_some());
        for (j, child) in body.children.iter().flatten().enumerate() {
            let child_path = format!("{path}.children[{j}]");
            if child
                .collection_id
                .as_ref()
                .is_some_and(|c| *c != collection_text)
            {
                self.errors.push(FieldError::new(
                    format!("{child_path}.collectionId"),
                    "must be the parent's collection",
                ));
            }
            let print = child_prints.get(j).copied().unwrap_or_default();
            let derived = idempotent_parent.map(|parent| TokenId::child_of(parent, j));
            if let Some(id) = self.plan_one(child, collection_id, print, &child_path, derived) {
                child_ids.push(id);
            }
        }
        if let Some(parent) = self.tokens.get_mut(top) {
            parent.children = child_ids;
        }
        top
    }

    /// Plans one token; `None` when it has errors. `derived` is the id of a
    /// child of an idempotent parent, used unless it has its own key.
    fn plan_one(
        &mut self,
        body: &TokenBody,
        collection_id: Option<CollectionId>,
        print: [u8; 16],
        path: &str,
        derived: Option<TokenId>,
    ) -> Option<TokenId> {
        let errors_before = self.errors.len();
        let account = &self.caller.account;
        let collection =
            collection_id.and_then(|id| self.engine.catalog().collection_of(account.id, id));
        if collection.is_none() {
            self.collection_missing = true;
        }
        if body.liveness.is_some_and(|l| l != account.liveness) {
            self.liveness_differs = true;
        }
        if let Some(key) = &body.idempotency_key {
            if !self.idempotency_keys.insert(key.clone()) {
                self.errors.push(FieldError::new(
                    format!("{path}.idempotencyKey"),
                    "is used by another token of this request",
                ));
            }
        }
        let mut time = |field: &str, text: &Option<String>| -> Option<Millis> {
            let text = text.as_ref()?;
            match timestamp::parse(text) {
                Ok(ms) => Some(ms),
                Err(message) => {
                    self.errors
                        .push(FieldError::new(format!("{path}.{field}"), message));
                    None
                }
            }
        };
        let active_from = time("activeFrom", &body.active_from);
        let expires_at = time("expiresAt", &body.expires_at);
        let expiry = match (expires_at, body.expires_in, &body.expires_at) {
            (_, Some(_), Some(_)) => {
                self.errors.push(FieldError::new(
                    format!("{path}.expiresIn"),
                    "cannot be given together with expiresAt",
                ));
                Expiry::CollectionDefault
            }
            (Some(at), None, _) => Expiry::At(at),
            (None, Some(secs), _) => Expiry::InSecs(secs),
            _ => Expiry::CollectionDefault,
        };
        // An explicit expiry must be in the future and after the start; the
        // collection's default is neither checked nor known here.
        if expiry != Expiry::CollectionDefault {
            let end = expiry.expires_at_ms(self.now, None);
            let field = if matches!(expiry, Expiry::At(_)) {
                "expiresAt"
            } else {
                "expiresIn"
            };
            if end <= self.now {
                self.errors.push(FieldError::new(
                    format!("{path}.{field}"),
                    "must be in the future",
                ));
            } else if active_from.is_some_and(|from| end <= from) {
                self.errors.push(FieldError::new(
                    format!("{path}.{field}"),
                    "must be after activeFrom",
                ));
            }
        }
        let data_path = format!("{path}.data");
        let data = match &body.data {
            None | Some(Value::Null) => None,
            Some(value) => {
                let text = value.to_string();
                if text.len() > DATA_BYTES_MAX {
                    self.errors.push(FieldError::new(
                        &data_path,
                        format!("must serialize to at most {DATA_BYTES_MAX} bytes"),
                    ));
                }
                Some(text)
            }
        };
        if let Some(validator) = collection.as_ref().and_then(|c| c.data_validator.as_ref()) {
            let instance = body.data.clone().unwrap_or(Value::Null);
            self.errors
                .extend(violations(validator, &instance, &data_path));
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let collection = collection?;
        let id = match (&body.idempotency_key, derived) {
            (Some(key), _) => TokenId::for_idempotency_key(account.id, key),
            (None, Some(id)) => id,
            (None, None) => TokenId::random(),
        };
        let metadata = body
            .metadata
            .as_ref()
            .map(|m| Metadata::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
            .unwrap_or_default();
        self.tokens.push(NewToken {
            id,
            account_id: account.id,
            collection_id: collection.record.id,
            created_by: self.caller.key.name.clone(),
            kind: body.kind.unwrap_or(TokenType::Token),
            description: body.description.clone(),
            data,
            encryption: body.encryption.clone(),
            metadata,
            active_from_ms: active_from,
            expiry,
            children: Vec::new(),
            fingerprint: (body.idempotency_key.is_some() || derived.is_some()).then_some(print),
        });
        Some(id)
    }

    /// The commands, or the error that refuses the whole request:
    /// 422 first, then 404 for the collection, then 403 for liveness.
    fn finish(self) -> Result<Vec<NewToken>, ApiError> {
        if !self.errors.is_empty() {
            return Err(ApiError::validation(self.errors));
        }
        if self.collection_missing {
            return Err(ApiError::new(
                ErrorCode::CollectionNotFound,
                "No such collection.",
            ));
        }
        if self.liveness_differs {
            return Err(liveness_mismatch(self.caller.account.liveness));
        }
        Ok(self.tokens)
    }
}

/// Marks a response as the replay of an earlier one.
fn mark_replayed(response: &mut HttpResponse) {
    response.headers_mut().insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
}

fn render(token: &Token, now: Millis) -> TokenJson<'_> {
    TokenJson {
        token,
        now,
        children: None,
    }
}

/// Reads a JSON body and checks it against `schema`, listing every problem.
async fn read_valid(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    schema: &jsonschema::Validator,
) -> Result<Value, ApiError> {
    let body = read_json(req, payload, limit, false).await?;
    let errors = violations(schema, &body, "$");
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(body)
}

/// `POST /api/tokens`
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenCreate)?;
    let body = read_valid(&req, payload, BODY_BYTES_MAX, &schemas().token).await?;
    let mut planner = Planner::new(&caller, state.engine()?);
    let top = planner.plan_top(body, "$");
    let tokens = planner.finish()?;
    let created = state.engine()?.create(caller.account.id, tokens).await?;
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
pub async fn create_batch(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenCreate)?;
    let body = read_json_text(&req, payload, BATCH_BODY_BYTES_MAX).await?;
    let batch = BatchBody::split(&body)?;
    let mut planner = Planner::new(&caller, state.engine()?);
    let tops = plan_batch(&mut planner, batch)?;
    let tokens = planner.finish()?;
    let created = state.engine()?.create(caller.account.id, tokens).await?;
    let now = state.engine()?.now();
    let data: Vec<TokenJson<'_>> = tops
        .iter()
        .filter_map(|&top| created.get(top))
        .map(|c| render(c.token(), now))
        .collect();
    json(StatusCode::CREATED, &DataJson { data })
}

/// Checks every item of `batch` against the token schema and plans it,
/// returning each item's index in the planned tokens. An item is a `Value`
/// only for its own check and plan, so one item's tree is alive at a time.
///
/// Every item is checked, so that one 422 lists the problems of all of them
/// (and of the top level, after theirs). Those problems are answered instead
/// of anything planning would find, as for a single token, so planning stops
/// at the first of them.
fn plan_batch(planner: &mut Planner<'_>, batch: BatchBody<'_>) -> Result<Vec<usize>, ApiError> {
    let mut problems = Vec::new();
    let mut tops = Vec::with_capacity(batch.items.len());
    for (i, raw) in batch.items.iter().enumerate() {
        let path = format!("$.tokens[{i}]");
        let item = batch::value(raw)?;
        let item_problems = violations(&schemas().token, &item, &path);
        if item_problems.is_empty() && problems.is_empty() && batch.errors.is_empty() {
            tops.push(planner.plan_top(item, &path));
        }
        problems.extend(item_problems);
    }
    problems.extend(batch.errors);
    if problems.is_empty() {
        Ok(tops)
    } else {
        Err(ApiError::validation(problems))
    }
}

fn token_id(text: &str) -> Result<TokenId, ApiError> {
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
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRead)?;
    let query = Query::parse(req.query_string(), &["children"])?;
    let mut errors = Vec::new();
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

/// `HEAD /api/tokens/{id}`: 200 when redeemable now, 410 when spent,
/// expired or deleted, 422 before `activeFrom`, 404 when unknown.
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
        Status::Redeemed | Status::Expired | Status::Deleted => StatusCode::GONE,
    };
    Ok(HttpResponse::build(code)
        .insert_header((STATUS_HEADER, status.as_str()))
        .finish())
}

/// `GET /api/tokens`
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRead)?;
    let query = Query::parse(
        req.query_string(),
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
    let mut errors = Vec::new();
    let collection_ids = query.parsed(
        "collectionId",
        CollectionId::parse,
        "a collection id",
        &mut errors,
    );
    let statuses = query.parsed(
        "status",
        Status::parse,
        "one of active, redeemed, expired, deleted",
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
    let page = state
        .engine()?
        .list(ListQuery {
            account_id: caller.account.id,
            collection_ids,
            statuses,
            types,
            ids,
            after,
            limit,
        })
        .await?;
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

/// `DELETE /api/tokens/{id}`
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
pub async fn redeem(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.require(Scope::TokenRedeem)?;
    let body = read_json(&req, payload, BODY_BYTES_MAX, true).await?;
    let body: RedeemBody = decode(&schemas().redeem, body)?;
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
