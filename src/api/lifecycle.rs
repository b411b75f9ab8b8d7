//! Redemption lifecycle routes: holds (place, capture, release), voids,
//! validation (a dry-run redeem) and batch redeem.
//!
//! Each is one engine call decided by the token's shard; this layer only
//! checks bodies, builds the command and renders the answer.

use super::auth::{AccountCaller, Caller};
use super::checked::{decode_json, Checked, CheckedBody};
use super::error::ApiError;
use super::render::TokenJson;
use super::respond::json;
use super::schema;
use super::shapes;
use super::state::AppState;
use super::tokens::{mark_replayed, render, token_id, RedeemBody};
use super::validate::{schemas, whole_number};
use crate::clock::Millis;
use crate::command::{Capture, Hold, Redeem, Release, Void};
use crate::engine::{Changed, EngineError, Redeemed, Rejection};
use crate::ids::{HoldId, TokenId};
use crate::model::{Scope, Status};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /api/tokens/{id}/holds`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HoldBody {
    /// The merchant holding the token; a capture redeems for it.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    merchant_id: Option<String>,
    /// Makes the hold safe to retry while it is live.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// How long it holds (the collection's `holdTtlSecsMax` at most, and
    /// by default).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = schema::hold_ttl_secs)]
    ttl_secs: Option<i64>,
}

impl CheckedBody for HoldBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRedeem)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, true, &schemas().hold)
    }
}

/// The body of capture and release: `{}` (or none).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

impl CheckedBody for EmptyBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRedeem)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, true, &schemas().empty)
    }
}

/// The body of `POST /api/tokens/{id}/redemption/void`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoidBody {
    /// Why (≤ 200 characters), kept with the voided redemption.
    #[schema(schema_with = schema::void_reason)]
    reason: Option<String>,
    /// Makes the void safe to retry.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

impl CheckedBody for VoidBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRedeem)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, true, &schemas().void)
    }
}

/// The body of `POST /api/tokens/{id}/validate`: a redeem's, read with
/// `token:read`.
pub struct ValidateBody(RedeemBody);

impl CheckedBody for ValidateBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRead)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, true, &schemas().redeem).map(ValidateBody)
    }
}

/// One item of a batch redeem.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedemptionItem {
    /// The token.
    #[schema(min_length = 1, max_length = 64)]
    token_id: String,
    /// As for a single redeem.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    merchant_id: Option<String>,
    /// As for a single redeem.
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

/// The body of `POST /api/tokens/redeem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBatchBody {
    /// 1 to 1000 items, independent of each other.
    #[schema(schema_with = schema::redemptions)]
    redemptions: Vec<RedemptionItem>,
}

impl CheckedBody for RedeemBatchBody {
    type Grant = AccountCaller;

    fn authorize(caller: Caller, _: &HttpRequest) -> Result<AccountCaller, ApiError> {
        caller.require(Scope::TokenRedeem)
    }

    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError> {
        decode_json(req, body, false, &schemas().redeem_batch)
    }
}

/// A hold id from the path. One that is not an id names no hold, so it is
/// looked up as the nil id, which no hold has (holds are random v4 ids):
/// the token is still checked first, as for any hold id.
fn hold_id(text: &str) -> HoldId {
    HoldId::parse(text).unwrap_or(HoldId(uuid::Uuid::nil()))
}

/// The 200 (or `created` when new) of a lifecycle change.
fn changed_response(
    state: &AppState,
    changed: &Changed,
    created: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let now = state.engine()?.now();
    let status = if changed.replayed {
        StatusCode::OK
    } else {
        created
    };
    let mut response = json(status, &render(&changed.token, now))?;
    if changed.replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// `POST /api/tokens/{id}/holds`
#[utoipa::path(
    post, path = "/api/tokens/{id}/holds", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    request_body = Option<HoldBody>,
    responses((status = 201, description = "The held token, with `hold`.", body = shapes::TokenShape),
        (status = 200, description = "A replay of an earlier create with the same idempotency key.", body = shapes::TokenShape, headers(("Idempotent-Replayed" = String, description = "`true`.")))),
)]
pub async fn hold(
    state: web::Data<AppState>,
    request: Checked<HoldBody>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let changed = state
        .engine()?
        .hold(Hold {
            account_id: caller.account.id,
            id: token_id(&path)?,
            hold_id: HoldId::random(),
            merchant_id: body.merchant_id,
            idempotency_key: body.idempotency_key,
            ttl_secs: body.ttl_secs,
            held_by: caller.key.name.clone(),
        })
        .await?;
    changed_response(&state, &changed, StatusCode::CREATED)
}

/// `POST /api/tokens/{id}/holds/{holdId}/capture`
#[utoipa::path(
    post, path = "/api/tokens/{id}/holds/{holdId}/capture", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token."), ("holdId" = String, Path, description = "The hold.")),
    request_body = Option<EmptyBody>,
    responses((status = 200, description = "The redeemed token, `redemption.holdId` set.", body = shapes::TokenShape)),
)]
pub async fn capture(
    state: web::Data<AppState>,
    request: Checked<EmptyBody>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (token, hold) = path.into_inner();
    let changed = state
        .engine()?
        .capture(Capture {
            account_id: request.caller.account.id,
            id: token_id(&token)?,
            hold_id: hold_id(&hold),
            captured_by: request.caller.key.name.clone(),
        })
        .await?;
    changed_response(&state, &changed, StatusCode::OK)
}

/// `POST /api/tokens/{id}/holds/{holdId}/release`
#[utoipa::path(
    post, path = "/api/tokens/{id}/holds/{holdId}/release", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token."), ("holdId" = String, Path, description = "The hold.")),
    request_body = Option<EmptyBody>,
    responses((status = 200, description = "The active token.", body = shapes::TokenShape)),
)]
pub async fn release(
    state: web::Data<AppState>,
    request: Checked<EmptyBody>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (token, hold) = path.into_inner();
    let changed = state
        .engine()?
        .release(Release {
            account_id: request.caller.account.id,
            id: token_id(&token)?,
            hold_id: hold_id(&hold),
        })
        .await?;
    changed_response(&state, &changed, StatusCode::OK)
}

/// `POST /api/tokens/{id}/redemption/void`
#[utoipa::path(
    post, path = "/api/tokens/{id}/redemption/void", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    request_body = Option<VoidBody>,
    responses((status = 200, description = "The active token, its redemption moved to `voidedRedemptions`.", body = shapes::TokenShape)),
)]
pub async fn void(
    state: web::Data<AppState>,
    request: Checked<VoidBody>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let changed = state
        .engine()?
        .void(Void {
            account_id: caller.account.id,
            id: token_id(&path)?,
            reason: body.reason,
            idempotency_key: body.idempotency_key,
            voided_by: caller.key.name.clone(),
        })
        .await?;
    changed_response(&state, &changed, StatusCode::OK)
}

/// The answer of a validation.
#[derive(Serialize)]
struct ValidationJson<'a> {
    /// Whether a redeem with this body would succeed (or replay) now.
    redeemable: bool,
    /// The error code a redeem would get, when it would not.
    code: Option<&'static str>,
    /// For people.
    message: String,
    /// The token as it is.
    token: TokenJson<'a>,
}

/// `POST /api/tokens/{id}/validate`
#[utoipa::path(
    post, path = "/api/tokens/{id}/validate", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The token.")),
    request_body = Option<RedeemBody>,
    responses((status = 200, description = "Whether a redeem would succeed now; changes nothing.", body = shapes::ValidationShape)),
)]
pub async fn validate(
    state: web::Data<AppState>,
    request: Checked<ValidateBody>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Checked {
        caller,
        body: ValidateBody(body),
    } = request;
    let checked = state
        .engine()?
        .validate(Redeem {
            account_id: caller.account.id,
            id: token_id(&path)?,
            merchant_id: body.merchant_id,
            idempotency_key: body.idempotency_key,
            redeemed_by: caller.key.name.clone(),
        })
        .await?;
    let now = state.engine()?.now();
    let (code, message) = match checked.refusal {
        Some(refusal) => {
            let error = ApiError::from(refusal);
            (Some(error.code.as_str()), error.message)
        }
        None if checked.token.status_at(now) == Status::Redeemed => (
            None,
            "A redeem would repeat the redemption made with this idempotency key.".to_owned(),
        ),
        None => (None, "A redeem would succeed now.".to_owned()),
    };
    json(
        StatusCode::OK,
        &ValidationJson {
            redeemable: code.is_none(),
            code,
            message,
            token: render(&checked.token, now),
        },
    )
}

/// One item of a batch redeem's answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RedeemedItemJson<'a> {
    /// As sent.
    token_id: &'a str,
    /// The HTTP status a single redeem would get.
    status: u16,
    /// The token, on a 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<TokenJson<'a>>,
    /// Why not, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemErrorJson>,
}

/// The error of one batch item.
#[derive(Serialize)]
struct ItemErrorJson {
    /// The stable code.
    code: &'static str,
    /// For people.
    message: String,
}

/// `POST /api/tokens/redeem`
#[utoipa::path(
    post, path = "/api/tokens/redeem", tag = "lifecycle", security(("apiKey" = []), ("bearer" = [])),
    request_body = RedeemBatchBody,
    responses((status = 200, description = "One answer per redemption, each as a single redeem's.", body = shapes::RedeemBatchShape)),
)]
pub async fn redeem_batch(
    state: web::Data<AppState>,
    request: Checked<RedeemBatchBody>,
) -> Result<HttpResponse, ApiError> {
    let Checked { caller, body } = request;
    let engine = state.engine()?;
    // Items naming no token id are answered here; the rest go to shards.
    let ids: Vec<Option<TokenId>> = body
        .redemptions
        .iter()
        .map(|item| TokenId::parse(&item.token_id))
        .collect();
    let commands: Vec<Redeem> = body
        .redemptions
        .iter()
        .zip(&ids)
        .filter_map(|(item, id)| {
            id.map(|id| Redeem {
                account_id: caller.account.id,
                id,
                merchant_id: item.merchant_id.clone(),
                idempotency_key: item.idempotency_key.clone(),
                redeemed_by: caller.key.name.clone(),
            })
        })
        .collect();
    let mut outcomes = engine.redeem_each(commands).await.into_iter();
    let outcomes: Vec<Result<Redeemed, ApiError>> = ids
        .iter()
        .map(|id| match id {
            None => Err(ApiError::from(Rejection::TokenNotFound)),
            Some(_) => match outcomes.next() {
                Some(Ok(Ok(redeemed))) => Ok(redeemed),
                Some(Ok(Err(rejection))) => Err(ApiError::from(rejection)),
                Some(Err(error)) => Err(ApiError::from(error)),
                None => Err(ApiError::from(EngineError::Unavailable)),
            },
        })
        .collect();
    let now: Millis = engine.now();
    let data: Vec<RedeemedItemJson<'_>> = body
        .redemptions
        .iter()
        .zip(&outcomes)
        .map(|(item, outcome)| item_json(&item.token_id, outcome, now))
        .collect();
    json(StatusCode::OK, &super::render::DataJson { data })
}

fn item_json<'a>(
    token_id: &'a str,
    outcome: &'a Result<Redeemed, ApiError>,
    now: Millis,
) -> RedeemedItemJson<'a> {
    match outcome {
        Ok(redeemed) => RedeemedItemJson {
            token_id,
            status: StatusCode::OK.as_u16(),
            token: Some(render(&redeemed.token, now)),
            error: None,
        },
        Err(error) => RedeemedItemJson {
            token_id,
            status: error.code.status().as_u16(),
            token: None,
            error: Some(ItemErrorJson {
                code: error.code.as_str(),
                message: error.message.clone(),
            }),
        },
    }
}
