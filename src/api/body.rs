//! Reading request bodies: content type, size limits, JSON syntax.
//!
//! Bodies are read here rather than by actix's extractors so that every
//! failure answers in the API's error format: 413 over the limit, 400 for a
//! wrong content type or malformed JSON.

use super::error::{ApiError, ErrorCode};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value;

/// Body limit of ordinary routes (1 MiB).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Body limit of the batch route (16 MiB).
pub const BATCH_BODY_BYTES_MAX: usize = 16 << 20;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The body is larger than {} bytes.", limit),
    )
}

/// Reads the body as JSON. An empty body is `{}` when `empty_is_object`
/// (routes whose fields are all optional), else malformed.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    empty_is_object: bool,
) -> Result<Value, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.map_or(0, |len| len as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("Could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) && empty_is_object {
        return Ok(Value::Object(Default::default()));
    }
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
        });
    if !is_json {
        return Err(ApiError::bad_request(
            "The body must be JSON with Content-Type: application/json.",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))
}
