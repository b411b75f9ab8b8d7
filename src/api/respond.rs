//! Building JSON responses.

use super::error::{ApiError, ErrorCode};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// `value` as a JSON response with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        tracing::error!(error = %e, "response does not serialize");
        ApiError::new(ErrorCode::Internal, "Internal error.")
    })?;
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body))
}
