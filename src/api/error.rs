//! The API's one error type and its one mapping to HTTP.
//!
//! Every error body has the same shape —
//! `{"status", "code", "message", "requestId", "validationErrors"?}` — and
//! every code has exactly one status, decided in [`ErrorCode::status`].

use super::edge::{EdgeError, Refusal};
use super::request_id;
use crate::catalog::CatalogError;
use crate::engine::{EngineError, Rejection};
use crate::timestamp;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// Declares [`ErrorCode`] and [`ErrorCode::ALL`] from one list, so that no
/// code can be missing from `ALL` (the OpenAPI document derives each route's
/// error answers from it).
macro_rules! error_codes {
    ($($(#[$doc:meta])* $code:ident,)*) => {
        /// Stable, documented error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $code,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)*];
        }
    };
}

error_codes! {
/// Malformed JSON or wrong content type.
BadRequest,
/// Missing or unknown API key.
Unauthenticated,
/// Known key without the scope.
PermissionDenied,
/// No such route.
NotFound,
/// The route exists, the method does not.
MethodNotAllowed,
/// Body over the limit.
PayloadTooLarge,
/// The request head or body was not received in time.
RequestTimeout,
/// The request head (request line and headers) is over the limit.
HeadersTooLarge,
/// Unknown fields, wrong types, broken limits.
ValidationFailed,
/// Unknown account (admin routes).
AccountNotFound,
/// Unknown API key (admin routes).
ApiKeyNotFound,
/// Unknown or foreign collection.
CollectionNotFound,
/// Unknown, purged or foreign token.
TokenNotFound,
/// Requested liveness differs from the account's.
AccountLivenessMismatch,
/// Idempotency key reused with a different body.
TokenAlreadyCreated,
/// Spent before.
TokenAlreadyRedeemed,
/// Past `expiresAt`.
TokenExpired,
/// Deleted.
TokenDeleted,
/// Before `activeFrom`.
TokenNotYetActive,
/// Merchant not in the collection's list.
MerchantNotAllowed,
/// A live hold reserves the token.
TokenHeld,
/// No such hold on the token.
HoldNotFound,
/// The hold was released, lapsed, or captured.
HoldNotActive,
/// A void of a token that is not redeemed.
TokenNotRedeemed,
/// A void after the collection's void window.
VoidWindowClosed,
/// The token was voided as often as it may be.
VoidLimitReached,
/// A limit of the service was reached.
LimitReached,
/// Restore has not finished, or the engine is stopping.
ServiceUnavailable,
/// The server, or this client, holds its maximum of open connections.
ConnectionLimitReached,
/// The log failed; writes are refused until a restart.
StorageUnavailable,
/// Cluster: the token's shard moved to another node while the request
/// was in flight; whether it took effect is unknown (retry it with the
/// same idempotency key).
ShardMoved,
/// Cluster: no node serves the token's shard at this moment (a takeover
/// is under way); retry after `Retry-After` seconds.
NotReady,
/// A bug.
Internal,}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied
            | ErrorCode::AccountLivenessMismatch
            | ErrorCode::MerchantNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::NotFound
            | ErrorCode::AccountNotFound
            | ErrorCode::ApiKeyNotFound
            | ErrorCode::CollectionNotFound
            | ErrorCode::TokenNotFound
            | ErrorCode::HoldNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::ValidationFailed | ErrorCode::TokenNotYetActive => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::TokenAlreadyCreated
            | ErrorCode::TokenAlreadyRedeemed
            | ErrorCode::TokenHeld
            | ErrorCode::HoldNotActive
            | ErrorCode::TokenNotRedeemed
            | ErrorCode::VoidWindowClosed
            | ErrorCode::VoidLimitReached => StatusCode::CONFLICT,
            ErrorCode::TokenExpired | ErrorCode::TokenDeleted => StatusCode::GONE,
            ErrorCode::LimitReached => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServiceUnavailable
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::StorageUnavailable
            | ErrorCode::ShardMoved
            | ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::AccountNotFound => "ACCOUNT_NOT_FOUND",
            ErrorCode::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            ErrorCode::CollectionNotFound => "COLLECTION_NOT_FOUND",
            ErrorCode::TokenNotFound => "TOKEN_NOT_FOUND",
            ErrorCode::AccountLivenessMismatch => "ACCOUNT_LIVENESS_MISMATCH",
            ErrorCode::TokenAlreadyCreated => "TOKEN_ALREADY_CREATED",
            ErrorCode::TokenAlreadyRedeemed => "TOKEN_ALREADY_REDEEMED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenDeleted => "TOKEN_DELETED",
            ErrorCode::TokenNotYetActive => "TOKEN_NOT_YET_ACTIVE",
            ErrorCode::MerchantNotAllowed => "MERCHANT_NOT_ALLOWED",
            ErrorCode::TokenHeld => "TOKEN_HELD",
            ErrorCode::HoldNotFound => "HOLD_NOT_FOUND",
            ErrorCode::HoldNotActive => "HOLD_NOT_ACTIVE",
            ErrorCode::TokenNotRedeemed => "TOKEN_NOT_REDEEMED",
            ErrorCode::VoidWindowClosed => "VOID_WINDOW_CLOSED",
            ErrorCode::VoidLimitReached => "VOID_LIMIT_REACHED",
            ErrorCode::LimitReached => "LIMIT_REACHED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::ConnectionLimitReached => "CONNECTION_LIMIT_REACHED",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::ShardMoved => "SHARD_MOVED",
            ErrorCode::NotReady => "NOT_READY",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// One problem with a request field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSONPath from the body root (`$.metadata.colour`) or the query
    /// parameter (`$.limit`).
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Decides the status.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// One entry per problem, on 422 only.
    pub validation_errors: Vec<FieldError>,
    /// Seconds for a `Retry-After` header (503s a retry will cure).
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            validation_errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client when to retry.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// A 422 listing every problem.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        debug_assert!(!errors.is_empty());
        let message = match errors.len() {
            1 => "The request has 1 invalid field.".to_owned(),
            n => format!("The request has {n} invalid fields."),
        };
        Self {
            code: ErrorCode::ValidationFailed,
            message,
            validation_errors: errors,
            retry_after_secs: None,
        }
    }

    /// A 422 for one problem.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(path, message)])
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The 404 for tokens, whatever the reason (unknown, foreign, purged).
    pub fn token_not_found() -> Self {
        Self::new(ErrorCode::TokenNotFound, "No such token.")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status: u16,
    code: &'static str,
    message: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_errors: Option<&'a [FieldError]>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_id::current();
        let mut response = HttpResponse::build(self.code.status());
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        if self.code == ErrorCode::RequestTimeout {
            // The rest of the body may never come: the connection cannot
            // carry another request.
            response.insert_header((
                actix_web::http::header::CONNECTION,
                actix_web::http::header::HeaderValue::from_static("close"),
            ));
        }
        response.json(self.body_of(&request_id))
    }
}

impl ApiError {
    /// The JSON error body, for a response rendered outside actix-web (the
    /// connection edge's).
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        // Plain strings and numbers always serialize.
        serde_json::to_vec(&self.body_of(request_id)).unwrap_or_default()
    }

    fn body_of<'a>(&'a self, request_id: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            status: self.code.status().as_u16(),
            code: self.code.as_str(),
            message: &self.message,
            request_id,
            validation_errors: (self.code == ErrorCode::ValidationFailed)
                .then_some(self.validation_errors.as_slice()),
        }
    }
}

impl From<EdgeError> for ApiError {
    fn from(error: EdgeError) -> Self {
        match error {
            EdgeError::Malformed(why) => {
                ApiError::bad_request(format!("The request is malformed: {why}."))
            }
            EdgeError::HeadTooLarge { limit } => ApiError::new(
                ErrorCode::HeadersTooLarge,
                format!("The request line and headers are larger than {limit} bytes."),
            ),
            EdgeError::HeadTimeout { after_ms } => ApiError::new(
                ErrorCode::RequestTimeout,
                format!("The request line and headers were not received within {after_ms} ms."),
            ),
            EdgeError::Refused(refusal) => {
                let message = match refusal {
                    Refusal::Total(max) => {
                        format!("The server holds its maximum of {max} connections.")
                    }
                    Refusal::PerClient(max) => {
                        format!("This client address holds its maximum of {max} connections.")
                    }
                };
                ApiError::new(ErrorCode::ConnectionLimitReached, message).retry_after(1)
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::TokenNotFound => ApiError::token_not_found(),
            Rejection::AlreadyRedeemed { redeemed_at_ms } => ApiError::new(
                ErrorCode::TokenAlreadyRedeemed,
                format!(
                    "The token was already redeemed at {}.",
                    timestamp::format(redeemed_at_ms)
                ),
            ),
            Rejection::Expired => ApiError::new(ErrorCode::TokenExpired, "The token has expired."),
            Rejection::Deleted => ApiError::new(ErrorCode::TokenDeleted, "The token was deleted."),
            Rejection::NotYetActive { active_from_ms } => ApiError::new(
                ErrorCode::TokenNotYetActive,
                format!(
                    "The token cannot be redeemed before {}.",
                    timestamp::format(active_from_ms)
                ),
            ),
            Rejection::MerchantNotAllowed => ApiError::new(
                ErrorCode::MerchantNotAllowed,
                "The collection does not allow this merchant to redeem its tokens.",
            ),
            Rejection::AlreadyCreated => ApiError::new(
                ErrorCode::TokenAlreadyCreated,
                "A token was already created with this idempotency key and a different body.",
            ),
            Rejection::CollectionNotFound => {
                ApiError::new(ErrorCode::CollectionNotFound, "No such collection.")
            }
            Rejection::Held { expires_at_ms } => ApiError::new(
                ErrorCode::TokenHeld,
                format!(
                    "The token is held until {}.",
                    timestamp::format(expires_at_ms)
                ),
            ),
            Rejection::HoldTooLong { max_secs } => ApiError::invalid(
                "$.ttlSecs",
                format!("must be at most the collection's holdTtlSecsMax ({max_secs})"),
            ),
            Rejection::HoldNotFound => {
                ApiError::new(ErrorCode::HoldNotFound, "No such hold on this token.")
            }
            Rejection::HoldNotActive => ApiError::new(
                ErrorCode::HoldNotActive,
                "The hold is no longer active (released, expired or captured).",
            ),
            Rejection::NotRedeemed => {
                ApiError::new(ErrorCode::TokenNotRedeemed, "The token is not redeemed.")
            }
            Rejection::VoidWindowClosed { closed_at_ms } => ApiError::new(
                ErrorCode::VoidWindowClosed,
                format!(
                    "The redemption could be voided until {}.",
                    timestamp::format(closed_at_ms)
                ),
            ),
            Rejection::VoidLimitReached => ApiError::new(
                ErrorCode::VoidLimitReached,
                format!(
                    "The token was voided {} times, the most it may be.",
                    crate::model::lifecycle::VOIDS_MAX
                ),
            ),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rejected(rejection) => rejection.into(),
            EngineError::Catalog(CatalogError::AccountNotFound) => {
                ApiError::new(ErrorCode::AccountNotFound, "No such account.")
            }
            EngineError::Catalog(CatalogError::ApiKeyNotFound) => {
                ApiError::new(ErrorCode::ApiKeyNotFound, "No such API key.")
            }
            EngineError::Catalog(CatalogError::LimitReached(what)) => {
                ApiError::new(ErrorCode::LimitReached, format!("Too many {what}."))
            }
            EngineError::Catalog(
                e @ (CatalogError::DuplicateId | CatalogError::InvalidCollection(_)),
            ) => {
                tracing::error!(error = %e, "catalog invariant broken");
                ApiError::new(ErrorCode::Internal, "Internal error.")
            }
            EngineError::Unavailable => ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The service is shutting down.",
            ),
            EngineError::Storage(cause) => {
                tracing::error!(%cause, "write refused: storage unavailable");
                ApiError::new(
                    ErrorCode::StorageUnavailable,
                    "Storage is unavailable; the change was not made durable.",
                )
            }
            EngineError::Entropy => ApiError::new(ErrorCode::Internal, "No randomness available."),
            EngineError::ShardMoved => ApiError::new(
                ErrorCode::ShardMoved,
                "The token's shard moved to another node during the request; \
                 retry it (with the same idempotency key).",
            )
            .retry_after(1),
            EngineError::NotReady {
                reason,
                retry_after_secs,
            } => ApiError::new(ErrorCode::NotReady, format!("Not available yet: {reason}."))
                .retry_after(retry_after_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name_and_an_error_status() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "two codes share a name");
        for code in ErrorCode::ALL {
            let status = code.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{} has status {status}",
                code.as_str()
            );
        }
    }
}
