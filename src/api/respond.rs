//! Building JSON responses.

use super::error::{ApiError, ErrorCode};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde::Serialize;
use std::cell::RefCell;

/// A render buffer bigger than this after a response is freed rather than
/// kept for the next one, so that one huge answer (a batch of thousands of
/// tokens) does not pin its memory on the worker for good.
const RENDER_BUFFER_BYTES_MAX: usize = 64 << 10;

thread_local! {
    /// Each worker thread renders into one buffer it keeps, and the body is
    /// copied out at its exact size: one allocation per response instead of
    /// a growing vector's several.
    static RENDER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4 << 10));
}

/// `value` as a JSON response with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let body = RENDER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        let rendered = serde_json::to_writer(&mut *buffer, value);
        let body = rendered.map(|()| Bytes::copy_from_slice(&buffer));
        if buffer.capacity() > RENDER_BUFFER_BYTES_MAX {
            *buffer = Vec::with_capacity(4 << 10);
        }
        body
    });
    let body = body.map_err(|e| {
        tracing::error!(error = %e, "response does not serialize");
        ApiError::new(ErrorCode::Internal, "Internal error.")
    })?;
    Ok(HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body))
}
