//! Authentication and scopes.
//!
//! A request presents a key in `X-Api-Key` or `Authorization: Bearer`. The
//! admin key manages accounts and keys; an account key acts for its account
//! within its scopes. Missing or unknown → 401; known without the scope → 403.
//! Two different keys in one request (both headers, or either header twice)
//! → 400: the server never picks one of them for the client. An account key
//! is then counted against its rate limit (429 past it, see
//! [`super::rate_limit`]), and the caller is noted for the request log.

use super::access_log::LoggedCaller;
use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::model::api_key;
use crate::model::{Account, ApiKey, Scope};
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{Either, LocalBoxFuture};
use std::future::{ready, Ready};
use std::sync::Arc;

/// Longest key string considered; longer headers are not keys.
const KEY_CHARS_MAX: usize = 512;

/// Who is calling.
pub enum Caller {
    /// The holder of the admin key.
    Admin,
    /// An account key.
    Account(AccountCaller),
}

/// An authenticated account key.
#[derive(Clone)]
pub struct AccountCaller {
    /// The account the key acts for.
    pub account: Arc<Account>,
    /// The key itself (name and scopes).
    pub key: Arc<ApiKey>,
}

impl Caller {
    /// The account caller, if the key grants `scope`.
    pub fn require(self, scope: Scope) -> Result<AccountCaller, ApiError> {
        match self {
            Caller::Account(caller) if caller.key.scopes.grants(scope) => Ok(caller),
            _ => Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("The API key lacks the {} scope.", scope.as_str()),
            )),
        }
    }

    /// Ok only for the admin key.
    pub fn require_admin(self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Account(_) => Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "This route needs the admin key.",
            )),
        }
    }
}

/// The key a request presents: `Ok(None)` for none (or one that is not
/// text), 400 when it presents two different ones.
fn presented_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let headers = req.headers();
    let api_keys = headers
        .get_all("x-api-key")
        .map(|value| value.to_str().ok().map(str::trim));
    // Only `Bearer` carries a key; other schemes are not credentials here.
    let bearers = headers.get_all(AUTHORIZATION).filter_map(|value| {
        let (scheme, key) = value.to_str().ok()?.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| Some(key.trim()))
    });
    let mut presented: Option<Option<&str>> = None;
    for candidate in api_keys.chain(bearers) {
        match presented {
            None => presented = Some(candidate),
            Some(first) if first == candidate => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "The request carries two different credentials (X-Api-Key and \
                     Authorization: Bearer, or one of them twice); send one key.",
                ))
            }
        }
    }
    Ok(presented.flatten())
}

/// Who presents the request's key, counted against its rate limit: 401 for
/// none or an unknown one, 400 for two different ones, 429 past the limit.
pub fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let caller = identify(req)?;
    if let Caller::Account(account) = &caller {
        if let Some(limit) = &AppState::of(req)?.rate_limit {
            limit.check(account.key.id)?;
        }
    }
    Ok(caller)
}

/// Who presents the request's key, not counted against any limit (a request
/// authenticated again after a catalog catch-up was counted already).
pub fn identify(req: &HttpRequest) -> Result<Caller, ApiError> {
    let unauthenticated =
        || ApiError::new(ErrorCode::Unauthenticated, "A valid API key is required.");
    let key = presented_key(req)?
        .filter(|k| !k.is_empty() && k.len() <= KEY_CHARS_MAX)
        .ok_or_else(unauthenticated)?;
    let state = AppState::of(req)?;
    if let Some((key_id, secret)) = api_key::split_key(key) {
        let catalog = state.engine()?.catalog();
        let record = catalog
            .api_key(key_id)
            .filter(|record| record.secret_matches(secret))
            .ok_or_else(unauthenticated)?;
        let account = catalog
            .account(record.account_id)
            .ok_or_else(unauthenticated)?;
        req.extensions_mut().insert(LoggedCaller::Account {
            account_id: account.id,
            key_id: record.id,
        });
        return Ok(Caller::Account(AccountCaller {
            account,
            key: record,
        }));
    }
    if state.admin_key.matches(key) {
        req.extensions_mut().insert(LoggedCaller::Admin);
        return Ok(Caller::Admin);
    }
    Err(unauthenticated())
}

/// An authentication: decided at once, or after a catalog catch-up.
pub type Authenticating =
    Either<Ready<Result<Caller, ApiError>>, LocalBoxFuture<'static, Result<Caller, ApiError>>>;

/// [`authenticate`], and in a cluster, when an account key is unknown, once
/// more after the catalog replica caught up: a key created through another
/// node a moment ago is not refused.
pub fn authenticate_fresh(req: &HttpRequest) -> Authenticating {
    let first = authenticate(req);
    // Looked at only on a refusal: the accepted request pays nothing more.
    let worth_catching_up = || {
        presented_key(req).is_ok_and(|key| key.is_some_and(|k| api_key::split_key(k).is_some()))
            && AppState::of(req)
                .and_then(|state| state.engine())
                .is_ok_and(|engine| engine.catalog_replicated())
    };
    match first {
        Err(e) if e.code == ErrorCode::Unauthenticated && worth_catching_up() => {
            let req = req.clone();
            Either::Right(Box::pin(async move {
                let state = AppState::of(&req)?;
                state.engine()?.catalog_catch_up().await?;
                authenticate(&req)
            }))
        }
        first => Either::Left(ready(first)),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Authenticating;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate_fresh(req)
    }
}
